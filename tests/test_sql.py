"""Statement identity: pglast fingerprints for PostgreSQL, a scanner for the rest."""

from __future__ import annotations

import gc
import tracemalloc

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from statement_kinds import CANARIES, NUMBERS, statements

from exporter import sql as sql_module
from exporter.bounded import size_of
from exporter.inprocess_settings import InstrumentationSettings
from exporter.sql import identify, mask_literals, without_trailing_comment


@pytest.mark.parametrize(
    ("sql", "operation", "table"),
    [
        ("SELECT 1", "SELECT", None),
        ("select owner from accounts where id = %(id)s", "SELECT", "accounts"),
        ("SELECT a, (SELECT max(x) FROM b) FROM public.users JOIN c ON true", "SELECT", "users"),
        ("SELECT * FROM (SELECT * FROM inner_t) sub", "SELECT", "inner_t"),
        ("(SELECT 1 FROM t) UNION (SELECT 2 FROM u)", "SELECT", "t"),
        ('INSERT INTO s."Users" (a) VALUES ($1) RETURNING id', "INSERT", "Users"),
        ("UPDATE ONLY balances SET amount = 1", "UPDATE", "balances"),
        ("DELETE FROM ledger_entries WHERE id = %s", "DELETE", "ledger_entries"),
        ("WITH x AS (SELECT * FROM a) UPDATE b SET c = 1 FROM x", "UPDATE", "b"),
        ("BEGIN", "BEGIN", None),
        ("SET search_path TO app", "SET", None),
        ("garbage ((", "OTHER", None),
        ("", "OTHER", None),
    ],
)
def test_operation_and_primary_table(sql: str, operation: str, table: str | None) -> None:
    identity = identify(sql)
    assert (identity.operation, identity.table) == (operation, table)


def test_literals_and_placeholders_share_a_fingerprint() -> None:
    literal = identify("SELECT owner FROM accounts WHERE id = 42 AND name = 'alice'")
    pyformat = identify("SELECT owner FROM accounts WHERE id = %(id)s AND name = %(n)s")
    dollar = identify("select owner from accounts where id = $1 and name = $2")
    assert literal.fingerprint == pyformat.fingerprint == dollar.fingerprint
    assert len(literal.fingerprint) == 16
    assert identify("SELECT owner FROM accounts WHERE id = 1 OR 2 = 2").fingerprint != (
        literal.fingerprint
    )


def test_normalized_text_masks_every_literal() -> None:
    identity = identify("SELECT * FROM users WHERE email = 'ceo@example.com' AND pin = 1234")
    assert identity.normalized == "SELECT * FROM users WHERE email = $1 AND pin = $2"
    assert "ceo@example.com" not in identity.normalized


@given(canary=CANARIES, number=NUMBERS)
def test_no_literal_survives_in_any_statement_kind(canary: str, number: int) -> None:
    for sql in statements(canary, number):
        for postgresql in (True, False):
            normalized = identify(sql, postgresql).normalized
            assert canary not in normalized, sql
            assert str(number) not in normalized, sql


@given(canaries=st.tuples(CANARIES, CANARIES), numbers=st.tuples(NUMBERS, NUMBERS))
def test_statements_differing_only_in_literals_share_a_fingerprint(
    canaries: tuple[str, str], numbers: tuple[int, int]
) -> None:
    assume("\\" not in "".join(canaries))  # a backslash may end an E'...' string early
    first, second = (statements(c, n) for c, n in zip(canaries, numbers, strict=True))
    for one, other in zip(first, second, strict=True):
        assert identify(one).fingerprint == identify(other).fingerprint, one
        assert identify(one).normalized == identify(other).normalized, one


def test_utility_statements_have_their_literals_masked() -> None:
    assert identify("COMMENT ON TABLE t IS 'secret'").normalized == "COMMENT ON TABLE t IS $1"
    assert identify("CREATE TABLE t (a text DEFAULT 'x', n int CHECK (n > 5))").normalized == (
        "CREATE TABLE t (a text DEFAULT $1, n int CHECK (n > $2))"
    )
    # After the placeholders libpg_query numbered, in order of appearance.
    assert identify("PREPARE p AS SELECT $1, 'x' FROM t WHERE n = 5").normalized == (
        "PREPARE p AS SELECT $1, $2 FROM t WHERE n = $3"
    )
    # A password is not in the fingerprint either, which would let one test guesses against it.
    assert identify("CREATE ROLE r PASSWORD 'hunter2'").fingerprint == (
        identify("CREATE ROLE r PASSWORD 'correct horse'").fingerprint
    )


def test_queries_keep_their_type_modifiers_and_positions() -> None:
    # What libpg_query leaves in a query is structure, not data: EXPLAIN needs it as it is.
    sql = "SELECT a::varchar(10), 'x' FROM t GROUP BY 1 ORDER BY 2 LIMIT 5"
    identity = identify(sql)
    assert identity.normalized == "SELECT a::varchar(10), $1 FROM t GROUP BY 1 ORDER BY 2 LIMIT $2"
    assert identity.fingerprint == identify(sql.replace("'x'", "'y'")).fingerprint


@pytest.mark.parametrize(
    ("sql", "masked"),
    [
        ("a = 'it''s' AND b = E'it\\'s' AND c = 1.5e3", "a = ? AND b = ? AND c = ?"),
        ("x = $1 AND y = $tag$body$tag$ AND z = $$b$$", "x = $1 AND y = ? AND z = ?"),
        ("U&'x' B'1' X'ff' .5 0x1F 1_000 a1", "? ? ? ? ? ? a1"),
        ("'it\\'s secret' AND 'no end", "?"),  # both readings of the backslash masked
        ("-- it's a comment\n\"it's\" = `it's`", "-- it's a comment\n\"it's\" = `it's`"),
    ],
)
def test_the_scanner_free_masking_leaves_no_literal(sql: str, masked: str) -> None:
    assert mask_literals(sql) == masked


def test_percent_signs_survive_placeholder_translation() -> None:
    identity = identify("SELECT 100 %% 7, %s FROM t")
    assert (identity.operation, identity.table) == ("SELECT", "t")


def test_other_dialects_and_unparsable_sql_use_the_fallback() -> None:
    mysql = identify("SELECT `x` FROM `shop`.`orders` WHERE id = 7 AND note = 'hi'", False)
    assert (mysql.operation, mysql.table) == ("SELECT", "orders")
    assert mysql.normalized == "SELECT `x` FROM `shop`.`orders` WHERE id = ? AND note = ?"
    assert (
        mysql.fingerprint
        == identify(
            "select `x` from `shop`.`orders` where id = 8 and note = 'x'", False
        ).fingerprint
    )

    broken = identify("SELEC secret_col FROM t WHERE v = 'topsecret'")
    assert broken.operation == "OTHER"
    assert "topsecret" not in broken.normalized
    assert len(broken.fingerprint) == 16


@pytest.mark.parametrize(
    "sql", ["\x00\x01", "SELECT '\udcff'", "'" * 1001, "(" * 5000, "SELECT 1;" * 100]
)
def test_identify_never_raises(sql: str) -> None:
    identity = identify(sql)
    assert identity.operation in {"SELECT", "OTHER"}


def test_identities_are_cached() -> None:
    sql = "SELECT id FROM cache_probe WHERE id = $1"
    assert identify(sql) is identify(sql)


@pytest.mark.parametrize("operands", [500, 5_000, 200_000])
@pytest.mark.parametrize("operator", ["+", "||"])
def test_deep_statements_keep_their_identity(operands: int, operator: str) -> None:
    # Deeper than Python's JSON decoder (500, 5,000) or than libpg_query's own limit (200,000,
    # beyond max_statement_length: identified from its prefix, which does not reach FROM).
    sql = f"SELECT {operator.join(['1'] * operands)} FROM ledger_entries"
    identity = identify(sql)
    truncated = len(sql) > InstrumentationSettings().max_statement_length
    assert identity.truncated == truncated
    expected = ("SELECT", None if truncated else "ledger_entries")
    assert (identity.operation, identity.table) == expected
    assert len(identity.fingerprint) == 16
    assert identify(sql.replace("1", "2")).fingerprint == identity.fingerprint


TRACEPARENT = "/*traceparent='00-{}-00f067aa0ba902b7-01'*/"


@pytest.mark.parametrize("postgresql", [True, False])
def test_a_trailing_comment_does_not_change_the_identity(postgresql: bool) -> None:
    sql = "SELECT owner FROM accounts WHERE id = %(id)s"
    plain = identify(sql, postgresql)
    for trace in ("4bf92f3577b34da6a3ce929d0e0e4736", "0af7651916cd43dd8448eb211c80319c"):
        assert identify(f"{sql} {TRACEPARENT.format(trace)}", postgresql) is plain


def test_only_the_last_comment_is_stripped() -> None:
    assert without_trailing_comment("SELECT 1 /* a */ /* b */") == "SELECT 1 /* a */"


@pytest.mark.parametrize(
    "sql",
    [
        "/* only a comment */",
        "SELECT 1 /* outer /* nested */ still outer */",
        "SELECT '/*' AS x",
        "SELECT 1 -- line comment",
    ],
)
def test_statements_without_a_trailing_block_comment_are_kept(sql: str) -> None:
    assert without_trailing_comment(sql) is sql


@given(
    sql=st.text(max_size=200),
    comment=st.text(alphabet=st.characters(blacklist_characters="/*"), max_size=80),
)
def test_any_appended_comment_is_stripped(sql: str, comment: str) -> None:
    assert without_trailing_comment(f"{sql} /*{comment}*/") == sql.rstrip()
    # OpenTelemetry's commenter puts the comment before a final semicolon.
    assert without_trailing_comment(f"{sql} /*{comment}*/;") == f"{sql.rstrip()};"
    identify(f"{sql} /*{comment}*/")  # never raises


def test_a_comment_before_the_final_semicolon_shares_the_fingerprint() -> None:
    plain = identify("SELECT * FROM accounts WHERE id = 1;")
    commented = identify("SELECT * FROM accounts WHERE id = 1 /*traceparent='00-ab-cd-01'*/;")
    assert commented == plain


# -- statements over max_statement_length: identified from their prefix, never kept ---------

LIMIT = InstrumentationSettings().max_statement_length
BUDGET = InstrumentationSettings().statement_cache_max_bytes


def etl_insert(batch: int, rows: int = 200_000) -> str:
    """An ETL job's statement with its values inlined: ~5 MB, different for every batch."""
    values = ",".join(f"({batch * rows + i}, 'secret-{batch:04d}-{i:07d}')" for i in range(rows))
    return f"INSERT INTO etl_rows (id, note) VALUES {values}"


def test_a_statement_over_the_limit_is_identified_from_its_prefix() -> None:
    sql = etl_insert(0)
    identity = identify(sql)
    assert identity.truncated
    assert identity.full_length == len(sql)
    assert (identity.operation, identity.table) == ("INSERT", "etl_rows")
    assert identity.normalized.endswith(f"...[truncated: {len(sql)} characters in all]")
    assert len(identity.normalized) < LIMIT + 100
    assert "secret" not in identity.normalized
    # The next batch has other values of the same shape: the same fingerprint.
    assert identify(etl_insert(1)).fingerprint == identity.fingerprint
    assert identify("INSERT INTO etl_rows (id, note) VALUES (1, 'a')").truncated is False


def test_a_literal_cut_by_the_prefix_is_masked_in_little_memory() -> None:
    statement = f"SELECT length('{'secret' * LIMIT}')"
    tracemalloc.start()
    try:
        identity = identify(statement)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert identity.truncated
    assert identity.normalized.startswith("SELECT length(?...[truncated: ")
    assert "secret" not in identity.normalized
    assert peak < 2**20  # a prefix or two, not a regex backtracking stack (8 MiB)


def test_long_statements_are_not_kept_by_the_identity_cache() -> None:
    statements = [etl_insert(batch, rows=100_000) for batch in range(20)]  # 60 MB
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for statement in statements:
            identify(statement)
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < 2 * 2**20  # at most the identities of 20 prefixes
    assert all(
        len(key) <= LIMIT for (key, _), _ in sql_module._identities.items() if isinstance(key, str)
    )


def test_the_identity_cache_stays_within_its_byte_budget() -> None:
    # 1,500 distinct 4 KiB statements: 12 MB of text and normalised text without a budget.
    columns = ", ".join(f"column_number_{i}" for i in range(250))
    for i in range(1_500):
        identify(f"SELECT {columns} FROM wide_{i} WHERE id = {i}")
    assert 0 < sql_module._identities.bytes <= BUDGET
    assert size_of(list(sql_module._identities.items())) <= BUDGET

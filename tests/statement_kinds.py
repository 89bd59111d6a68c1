"""Every kind of statement that can carry a literal, with a canary value to put in it.

`{s}` is a string literal's content, `{n}` a number. Each template runs against a database with
`CREATE TABLE t (a text, n int)`; a statement that fails there (a missing role or server) is
recorded all the same, with its SQLSTATE.
"""

from __future__ import annotations

from hypothesis import strategies as st

STATEMENT_KINDS = [
    # Statements libpg_query's normalize() masks whole.
    "SELECT '{s}' AS a, {n} AS n",
    "INSERT INTO t VALUES ('{s}', {n})",
    "UPDATE t SET a = '{s}' WHERE n = {n}",
    "DELETE FROM t WHERE a = E'{s}'",
    "SET application_name = '{s}'",
    "CREATE ROLE probe_role PASSWORD '{s}'",
    "ALTER ROLE no_such_role PASSWORD '{s}'",
    "CREATE USER MAPPING FOR current_user SERVER no_such_server OPTIONS (password '{s}')",
    "NOTIFY channel, '{s}'",
    "EXPLAIN SELECT * FROM t WHERE a = '{s}'",
    # Statements it leaves as written.
    "COMMENT ON TABLE t IS '{s}'",
    "COMMENT ON COLUMN t.a IS $tag${s}$tag$",
    "COPY t FROM '/nonexistent/{s}'",
    "COPY (SELECT '{s}', {n}) TO '/nonexistent/out'",
    "PREPARE probe_plan AS SELECT * FROM t WHERE a = '{s}' OR n = {n}",
    "EXECUTE no_such_plan('{s}', {n})",
    "CREATE VIEW probe_view AS SELECT '{s}' AS a, {n} AS n",
    "CREATE TABLE probe_table (a text DEFAULT '{s}', n int CHECK (n > {n}))",
    "CREATE TABLE probe_copy AS SELECT '{s}' AS a",
    "ALTER TABLE t ALTER COLUMN a SET DEFAULT '{s}'",
    "ALTER TABLE t ADD CONSTRAINT probe_check CHECK (a <> '{s}' AND n <> {n})",
    "CREATE INDEX ON t (a) WHERE a > '{s}'",
    "CREATE FUNCTION probe_f() RETURNS text AS $$ SELECT '{s}' || {n} $$ LANGUAGE sql",
    "DO $body$ BEGIN PERFORM '{s}'; END $body$",
    "CREATE DOMAIN probe_domain AS int CHECK (VALUE > {n})",
    "CREATE SERVER probe_server FOREIGN DATA WRAPPER no_such_fdw OPTIONS (host '{s}')",
    "ALTER DATABASE no_such_database SET search_path = '{s}'",
    "CREATE POLICY probe_policy ON t USING (a = '{s}')",
    "SELECT 1; COMMENT ON TABLE t IS '{s}'",
    # Statements PostgreSQL rejects: the scanner-free masking.
    "SELEC '{s}', {n}",
    "SELECT '{s}",
]

# Literal content: no quote or dollar (which would end it), no `%` (a DBAPI placeholder), no
# colon (a SQLAlchemy bind parameter); Unicode, spaces and backslashes welcome.
_CONTENT = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="'$%:"),
    min_size=4,
    max_size=20,
)
CANARIES = _CONTENT.map(lambda text: f"canary{text}")
# Big enough to appear nowhere by chance (not in a duration, a timestamp or a count).
NUMBERS = st.integers(min_value=10**11, max_value=10**12)


def statements(canary: str, number: int) -> list[str]:
    return [kind.format(s=canary, n=number) for kind in STATEMENT_KINDS]

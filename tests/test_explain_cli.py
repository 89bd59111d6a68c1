"""`db-exporter explain` against the real PostgreSQL: the plan and its findings for SQL given as
an argument, in a file or on stdin, always rolled back; every mistake one line, exit 2, with
nothing changed."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from plan_tables import ITEMS_ROWS, items_checksum, table_exists
from sqlalchemy import Engine
from sqlalchemy.engine import URL
from subprocesses import assert_one_line_error, databases_config, run_cli

from exporter.cli import MAX_SQL_BYTES

SEQ_SCAN = "SELECT * FROM items WHERE k = 5"
Capture = pytest.CaptureFixture[str]


def dsn(url: URL) -> str:
    return url.render_as_string(hide_password=False)


@pytest.fixture
def on_plan_database(monkeypatch: pytest.MonkeyPatch, plan_engine: Engine) -> Engine:
    """DATABASE_URL names the database of tests/plan_tables.py, as a user's environment would."""
    monkeypatch.setenv("DATABASE_URL", dsn(plan_engine.url))
    monkeypatch.delenv("DATA_SOURCE_NAME", raising=False)
    return plan_engine


@pytest.fixture
def stdin(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Callable[[str], None]]:
    """`stdin(text)`: the command's stdin is a real file holding `text`, as a shell's `<`
    gives it (the command reads its file descriptor)."""
    with ExitStack() as files:

        def give(text: str) -> None:
            path = tmp_path / "stdin.sql"
            path.write_text(text)
            monkeypatch.setattr("sys.stdin", files.enter_context(path.open()))

        yield give


def explain(capsys: Capture, *argv: str) -> tuple[int, str, str]:
    return run_cli(capsys, "explain", *argv)


def test_an_update_explained_with_analyze_runs_and_changes_nothing(
    capsys: Capture, on_plan_database: Engine
) -> None:
    before = items_checksum(on_plan_database)
    code, out, err = explain(capsys, "UPDATE items SET k = k + 1 WHERE k2 < 50")
    assert (code, err) == (0, "")
    assert out.startswith("Update on items")
    assert f"(actual rows={ITEMS_ROWS // 2} loops=1)" in out  # it ran
    assert "Execution: " in out
    assert items_checksum(on_plan_database) == before


def test_the_plan_shows_its_findings_from_an_argument_a_file_or_stdin(
    capsys: Capture, stdin: Callable[[str], None], on_plan_database: Engine, tmp_path: Path
) -> None:
    query = tmp_path / "query.sql"
    query.write_text(f"-- open items\n{SEQ_SCAN};\n")
    stdin(SEQ_SCAN)
    outputs = [explain(capsys, *source) for source in ([SEQ_SCAN], ["--file", str(query)], ["-"])]
    for code, out, err in outputs:
        assert (code, err) == (0, "")
        assert out.startswith("Seq Scan on items")
        assert "Filter: (k = 5)" in out
        assert f"sequential scan of items (~{ITEMS_ROWS} rows) with Filter (k = 5)" in out


def test_without_analyze_it_is_only_planned(capsys: Capture, on_plan_database: Engine) -> None:
    before = items_checksum(on_plan_database)
    code, out, err = explain(capsys, "--no-analyze", "DELETE FROM items")
    assert (code, err) == (0, "")
    assert out.startswith("Delete on items")
    assert "actual rows" not in out
    assert "Execution: " not in out
    assert items_checksum(on_plan_database) == before


def test_json_is_postgresqls_plan_with_the_findings(
    capsys: Capture, on_plan_database: Engine
) -> None:
    code, out, err = explain(capsys, "--json", SEQ_SCAN)
    assert (code, err) == (0, "")
    shown = json.loads(out)
    assert shown["plan"][0]["Plan"]["Node Type"] == "Seq Scan"
    assert shown["plan"][0]["Plan"]["Actual Rows"] == ITEMS_ROWS // 100
    assert [finding["kind"] for finding in shown["findings"]] == ["seq_scan"]
    assert "sequential scan of items" in shown["findings"][0]["message"]


def test_the_sql_goes_as_written_colons_included(capsys: Capture, on_plan_database: Engine) -> None:
    code, out, err = explain(capsys, "SELECT id FROM items WHERE s <> 'a :b' AND k = 5::int")
    assert (code, err) == (0, "")
    assert "Filter: ((s <> 'a :b'::text) AND (k = 5))" in out


def test_it_runs_on_the_exporters_own_connection_with_its_timeouts(
    capsys: Capture, on_plan_database: Engine
) -> None:
    # A Result whose one-time filter holds returns its row: the settings were those.
    own = (
        "SELECT 1 WHERE current_setting('application_name') = 'db-exporter'"
        " AND current_setting('statement_timeout') = '1500ms'"
        " AND current_setting('lock_timeout') = '1500ms'"
    )
    code, out, err = explain(capsys, "--timeout", "1.5", own)
    assert (code, err) == (0, "")
    assert out.startswith("Result")
    assert "(actual rows=1 loops=1)" in out.splitlines()[0]


def test_ddl_is_refused_with_analyze_unless_allowed(
    capsys: Capture, on_plan_database: Engine
) -> None:
    ddl = "CREATE TABLE items_copy AS SELECT * FROM items"
    code, _, err = explain(capsys, ddl)
    assert_one_line_error(code, err, "CREATE with ANALYZE", "--allow-ddl", "--no-analyze")
    for flag in ("--allow-ddl", "--no-analyze"):
        code, out, err = explain(capsys, flag, ddl)
        assert (code, err) == (0, "")
        assert out.startswith("Seq Scan on items")
    assert not table_exists(on_plan_database, "items_copy")  # rolled back, or never run


@pytest.mark.parametrize(
    ("sql", "fragments"),
    [
        ("UPDATE items SET k = k / 0", ["database main: ", "division by zero", "22012"]),
        ("SELECT * FROM nowhere", ['relation "nowhere" does not exist', "42P01"]),
        ("SELECT 1; SELECT 2", ["cannot insert multiple commands"]),
    ],
)
def test_a_statement_that_fails_is_its_error_in_one_line_and_changes_nothing(
    capsys: Capture, on_plan_database: Engine, sql: str, fragments: list[str]
) -> None:
    before = items_checksum(on_plan_database)
    code, out, err = explain(capsys, sql)
    assert_one_line_error(code, err, *fragments)
    assert out == ""
    assert items_checksum(on_plan_database) == before


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        ([], ["explain needs the statement: SQL, --file PATH, or - for stdin"]),
        (["  \n "], ["the SQL argument: no SQL in it"]),
        (["-"], ["stdin: no SQL in it"]),
    ],
)
def test_a_missing_or_empty_statement_is_one_line(
    capsys: Capture,
    stdin: Callable[[str], None],
    on_plan_database: Engine,
    argv: list[str],
    fragments: list[str],
) -> None:
    stdin(" \n\n")
    code, _, err = explain(capsys, *argv)
    assert_one_line_error(code, err, *fragments)


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["--timeout", "0", "SELECT 1"], ["--timeout", "expected seconds from 0 to 2147483"]),
        (["--file", "q.sql", "SELECT 1"], ["argument SQL: not allowed with argument --file"]),
    ],
)
def test_a_bad_flag_is_one_line(capsys: Capture, argv: list[str], fragments: list[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        explain(capsys, *argv)
    assert stop.value.code == 2
    assert_one_line_error(2, capsys.readouterr().err, *fragments)


def test_an_unreadable_file_is_one_line(
    capsys: Capture, on_plan_database: Engine, tmp_path: Path
) -> None:
    latin1 = tmp_path / "latin1.sql"
    latin1.write_bytes("SELECT 'café'".encode("latin-1"))
    blank = tmp_path / "blank.sql"
    blank.write_text("\n\n")
    huge = tmp_path / "huge.sql"
    huge.write_text(f"SELECT 1 -- {'x' * MAX_SQL_BYTES}")
    for path, fragment in (
        (tmp_path / "missing.sql", "No such file or directory"),
        (tmp_path, "Is a directory"),
        (latin1, "not UTF-8 text"),
        (blank, "no SQL in it"),
        (huge, "longer than 1,048,576 bytes"),
    ):
        code, _, err = explain(capsys, "--file", str(path))
        assert_one_line_error(code, err, f"{path}: {fragment}")


def test_the_database_is_chosen_by_name_among_several(
    capsys: Capture, plan_engine: Engine, database_url: URL, tmp_path: Path
) -> None:
    config = databases_config(
        tmp_path, ("other", dsn(database_url)), ("plans", dsn(plan_engine.url))
    )
    code, out, err = explain(capsys, "--config", config, "--database", "plans", SEQ_SCAN)
    assert (code, err) == (0, "")
    assert out.startswith("Seq Scan on items")
    code, _, err = explain(capsys, "--config", config, SEQ_SCAN)
    assert_one_line_error(
        code, err, f"explain: {config} configures other, plans: choose one with --database"
    )
    code, _, err = explain(capsys, "--config", config, "--database", "nope", SEQ_SCAN)
    assert_one_line_error(
        code, err, f"explain: {config}: no database named 'nope' (configured: other, plans)"
    )


def test_no_database_configured_is_one_line(
    capsys: Capture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("DATA_SOURCE_NAME", raising=False)
    code, _, err = explain(capsys, SEQ_SCAN)
    assert_one_line_error(code, err, "set DATABASE_URL")
    config = databases_config(tmp_path)
    code, _, err = explain(capsys, "--config", config, SEQ_SCAN)
    assert_one_line_error(code, err, f"explain: {config}: no database configured")


def test_a_database_that_does_not_answer_is_one_line_without_its_password(
    capsys: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:s3cret-pw@127.0.0.1:1/app")
    code, _, err = explain(capsys, "--timeout", "5", SEQ_SCAN)
    assert_one_line_error(code, err, "database main: ", "127.0.0.1")
    assert "s3cret-pw" not in err

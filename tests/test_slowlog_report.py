"""`db-exporter slowlog`: a slow-query log read back as ranked tables (or JSON), on logs written
by the real slow-query log and on logs that are not all well-formed records."""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import source_lines
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL
from subprocesses import assert_one_line_error, run_cli, run_exporter

from exporter import Metrics, instrument, uninstrument
from exporter.dsn import sync_url
from exporter.settings import SlowQuerySettings
from exporter.slowlog import SlowQueryLog, context, report

RECORD = {
    "time": "2026-11-24T03:00:00.000+00:00",
    "kind": "slow_query",
    "database": "main",
    "fingerprint": "f1",
    "operation": "SELECT",
    "table": "authors",
    "sql": "SELECT * FROM authors",
    "duration_ms": 120.5,
    "call_site": {"file": "app/views.py", "line": 42, "function": "index"},
}
N_PLUS_ONE = RECORD | {
    "kind": "n_plus_one",
    "fingerprint": "n1",
    "table": "books",
    "sql": "SELECT * FROM books WHERE author_id = $1",
    "duration_ms": 0.4,
    "call_site": {"file": "app/authors.py", "line": 7, "function": "books_of"},
    "context": {"route": "/authors"},
    "repeats": 10,
}


def write_log(path: Path, lines: list[dict[str, Any] | str]) -> Path:
    """A log of `lines`: records as JSON, strings as they are."""
    path.write_text("".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines))
    return path


def read_lines(lines: list[dict[str, Any] | str], **window: Any) -> report.Report:
    data = "".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines)
    return report.read(report.lines_of(io.BytesIO(data.encode())), report.Window(**window))


def slowlog(
    capsys: pytest.CaptureFixture[str], log: Path, *flags: str
) -> tuple[int, list[str], str]:
    code, out, err = run_cli(capsys, "slowlog", str(log), *flags)
    return code, out.splitlines(), err


# -- from the real slow-query log --------------------------------------------------------------


@pytest.fixture
def logged(fresh_database: URL, metrics: Metrics, tmp_path: Path) -> Path:
    """A file the slow-query log wrote: one slow statement and an N+1 in three requests."""
    settings = SlowQuerySettings(
        threshold_ms=100, stdout=False, file=str(tmp_path / "slow.jsonl"), n_plus_one_threshold=3
    )
    log = SlowQueryLog(settings, metrics)
    engine = create_engine(sync_url(fresh_database))
    instrument(engine, metrics=metrics, slow_log=log)
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_sleep(0.15)"))
        for request in range(3):
            with context(route="/authors", request_id=str(request)):
                for author in range(4):
                    conn.execute(text("SELECT :author AS books"), {"author": author})  # n+1 here
    log.flush()
    uninstrument(engine)
    engine.dispose()
    log.close()
    return tmp_path / "slow.jsonl"


def test_n_plus_one_has_its_own_table_with_call_site_requests_and_route(
    capsys: pytest.CaptureFixture[str], logged: Path
) -> None:
    code, out, err = slowlog(capsys, logged, "--top", "1")
    assert (code, err) == (0, "")
    start = out.index("N+1: the same SELECT repeated within one request, most requests first")
    (row,) = [line for line in out[start:] if "/authors" in line]
    site = f"{source_lines.shown_path(__file__)}:{source_lines.line_of(__file__, 'n+1 here')}"
    assert row.split()[:2] == ["3", "3"]  # three requests, each with (at least) 3 repeats
    assert site[-40:] in row
    slow = out[: start - 1]
    assert "SELECT pg_sleep($1)" in slow[3]
    assert slow[-1] == "1 of 1 fingerprints"


def test_json_is_the_same_report(capsys: pytest.CaptureFixture[str], logged: Path) -> None:
    code, out, err = slowlog(capsys, logged, "--json")
    assert (code, err) == (0, "")
    found = json.loads("\n".join(out))
    (slow,) = found["slow_statements"]
    assert (slow["count"], slow["database"], slow["p95_exact"]) == (1, "main", True)
    assert slow["p95_ms"] == slow["max_ms"] == slow["total_ms"] >= 150
    assert slow["slowest_call_site"]["file"] == source_lines.shown_path(__file__)
    (n_plus_one,) = found["n_plus_one"]
    assert (n_plus_one["requests"], n_plus_one["repeats"]) == (3, 3)
    assert n_plus_one["routes"] == ["/authors"]
    assert n_plus_one["call_site"]["line"] == source_lines.line_of(__file__, "n+1 here")
    assert (found["lines"], found["lines_skipped"], found["records_left_out"]) == (4, 0, 0)


# -- ranking and figures ---------------------------------------------------------------------


def test_top_does_not_hide_n_plus_one_behind_slow_statements(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    slow = [RECORD | {"fingerprint": f"s{i}"} for i in range(10)]
    log = write_log(tmp_path / "slow.jsonl", [*slow, N_PLUS_ONE, N_PLUS_ONE])
    code, out, _ = slowlog(capsys, log, "--top", "5")
    assert code == 0
    assert "5 of 10 fingerprints" in out
    (row,) = [line for line in out if "app/authors.py:7" in line]
    assert row.split()[:2] == ["2", "10"]
    assert "/authors" in row


def test_n_plus_one_ranks_by_requests_then_repeats() -> None:
    found = read_lines(
        [N_PLUS_ONE | {"fingerprint": "few", "repeats": 50}]
        + [N_PLUS_ONE | {"fingerprint": "many"}] * 3
        + [N_PLUS_ONE | {"fingerprint": "many", "call_site": None}]  # another call site: own row
        + [N_PLUS_ONE | {"fingerprint": "few", "context": {"route": f"/r{i}"}} for i in range(5)]
    )
    ranked = [(r.fingerprint, r.requests, r.repeats, r.routes) for r in found.ranked_n_plus_one()]
    assert ranked == [
        ("few", 6, 50, ["/authors", "/r0", "/r1"]),  # routes kept: report.ROUTES_KEPT
        ("many", 3, 10, ["/authors"]),
        ("many", 1, 10, ["/authors"]),
    ]


def test_p95_beside_max_is_exact_up_to_the_bound() -> None:
    durations = [float(d) for d in range(1, 101)]
    found = read_lines([RECORD | {"duration_ms": d} for d in reversed(durations)])
    (row,) = found.ranked_slow()
    assert (row.latencies.quantile(0.95), row.latencies.max) == (95.0, 100.0)
    assert row.latencies.total == sum(durations)
    assert row.slowest_call_site == RECORD["call_site"]


def test_slow_statements_are_kept_per_database(capsys: pytest.CaptureFixture[str]) -> None:
    found = read_lines([RECORD, RECORD | {"database": "replica", "duration_ms": 1.0}])
    assert [(r.database, r.latencies.count) for r in found.ranked_slow()] == [
        ("main", 1),
        ("replica", 1),
    ]


# -- --since, --until, --database ------------------------------------------------------------


def at(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


def test_since_until_and_database_choose_the_records(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    log = write_log(
        tmp_path / "slow.jsonl",
        [
            RECORD | {"fingerprint": "old", "time": at(now - timedelta(hours=3))},
            RECORD | {"fingerprint": "recent", "time": at(now - timedelta(minutes=20))},
            RECORD | {"fingerprint": "other-db", "time": at(now), "database": "replica"},
            {k: v for k, v in RECORD.items() if k != "time"} | {"fingerprint": "no-time"},
        ],
    )

    def fingerprints(*flags: str) -> list[str]:
        code, out, _ = slowlog(capsys, log, "--json", *flags)
        assert code == 0
        return [row["fingerprint"] for row in json.loads("\n".join(out))["slow_statements"]]

    assert sorted(fingerprints()) == ["no-time", "old", "other-db", "recent"]
    assert sorted(fingerprints("--since", "1h")) == ["other-db", "recent"]
    assert fingerprints("--since", "2h", "--until", "10m") == ["recent"]
    assert fingerprints("--until", at(now - timedelta(hours=1))) == ["old"]
    assert fingerprints("--since", "1d", "--database", "main") == ["old", "recent"]
    _, out, _ = slowlog(capsys, log, "--since", "1h", "--database", "main")
    assert out[-1] == "3 records outside --since/--until/--database were left out"


def test_since_and_until_read_iso_times_and_ages() -> None:
    now = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)
    assert report.since_or_until("15m", now) == now - timedelta(minutes=15)
    assert report.since_or_until("2h", now) == now - timedelta(hours=2)
    assert report.since_or_until("7d", now) == now - timedelta(days=7)
    assert report.since_or_until("2026-11-24T03:00", now) == now  # UTC unless a zone is given
    assert report.since_or_until("2026-11-24T04:00+01:00", now) == now


@pytest.mark.parametrize(
    ("flags", "culprit"),
    [
        (["--top", "0"], "--top"),
        (["--top", "-1"], "'-1'"),
        (["--top", "five"], "'five'"),
        (["--since", "yesterday"], "'yesterday'"),
        (["--until", "15 minutes"], "'15 minutes'"),
        (["--since", "1h", "--until", "2h"], "is not before --until"),
    ],
)
def test_bad_flags_are_one_line_and_exit_2(tmp_path: Path, flags: list[str], culprit: str) -> None:
    log = write_log(tmp_path / "slow.jsonl", [RECORD])
    result = run_exporter("slowlog", str(log), *flags)
    assert result.stdout == ""
    assert_one_line_error(result.returncode, result.stderr, culprit)


# -- bad input ---------------------------------------------------------------------------------


def test_records_of_an_older_version_and_with_missing_fields_are_shown() -> None:
    found = read_lines(
        [
            {"kind": "slow_query", "fingerprint": "bare"},  # nothing else
            {k: v for k, v in RECORD.items() if k not in {"time", "database", "call_site"}},
            {"kind": "n_plus_one", "fingerprint": "n"},
        ]
    )
    assert found.skipped == 0
    text = report.render(found)
    assert "bare " in text
    assert "SELECT authors" in text
    (n_plus_one,) = found.ranked_n_plus_one()
    assert (n_plus_one.requests, n_plus_one.repeats, n_plus_one.call_site) == (1, 0, None)


def test_ten_megabytes_of_sql_are_read_and_cut(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    huge = "SELECT " + "x, " * 3_500_000 + "1"
    log = write_log(tmp_path / "slow.jsonl", [RECORD | {"sql": huge}, RECORD])
    code, out, err = slowlog(capsys, log, "--json")
    assert (code, err) == (0, "")
    (row,) = json.loads("\n".join(out))["slow_statements"]
    assert row["count"] == 2
    assert row["sql"] == huge[: report.SQL_KEPT] + "...[cut]"


def test_lines_longer_than_the_bound_are_cut_and_skipped() -> None:
    long_line = json.dumps(RECORD | {"sql": "x" * 500})
    data = f"{long_line}\n{json.dumps(RECORD)}\n{long_line}".encode()
    lines = list(report.lines_of(io.BytesIO(data), max_bytes=400))
    assert [len(line) for line in lines] == [400, len(json.dumps(RECORD)) + 1, 400]
    found = report.read(lines)
    assert (found.records, found.skipped) == (1, 2)


def test_an_empty_log_is_no_records_and_exit_0(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for content in ["", "\n\n  \n"]:
        (tmp_path / "empty.jsonl").write_text(content)
        assert slowlog(capsys, tmp_path / "empty.jsonl") == (0, ["no slow-query records found"], "")


def test_a_log_of_garbage_is_exit_1_with_the_count(tmp_path: Path) -> None:
    log = write_log(tmp_path / "garbage.jsonl", ["INFO starting", "{", "[1, 2]", "\udcff"[:0]])
    log.write_bytes(log.read_bytes() + b"\xff\xfe not UTF-8\n")
    result = run_exporter("slowlog", str(log))
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        f"db-exporter: error: {log}: none of its 4 lines is a slow-query record\n"
    )


def test_the_command_skips_and_counts_records_with_wrong_types(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    mistyped: list[dict[str, Any]] = [
        {"duration_ms": None},
        {"duration_ms": -5},
        {"call_site": "app/views.py:42"},
        {"fingerprint": ["f1"]},
        {"sql": 7},
        {"time": "yesterday"},
        {"repeats": "10"},
    ]
    lines: list[dict[str, Any] | str] = [RECORD] + [RECORD | change for change in mistyped]
    lines += [
        '{"kind": "slow_query", "fingerprint": "f1", "duration_ms": 1e999}',  # infinity
        "[" * 100_000,  # deeper than the JSON parser goes
    ]
    code, out, err = slowlog(capsys, write_log(tmp_path / "slow.jsonl", lines))
    assert (code, err) == (0, "")
    assert "app/views.py:42" in out[3]
    assert out[-2:] == [
        "1 of 1 fingerprints",
        "9 lines were not slow-query records and were skipped",
    ]


def test_progress_shows_on_a_terminal_only(tmp_path: Path) -> None:
    padding = "x" * 1000
    records = [RECORD | {"fingerprint": f"f{i % 50}", "padding": padding} for i in range(6000)]
    log = write_log(tmp_path / "slow.jsonl", records)  # past report.PROGRESS_EVERY
    terminal, other_end = pty.openpty()
    command = [sys.executable, "-m", "exporter", "slowlog", str(log)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=other_end) as process:
        os.close(other_end)
        out, _ = process.communicate(timeout=60)
    shown = b""
    while True:
        try:
            chunk = os.read(terminal, 4096)
        except OSError:  # the other end closed: all read
            break
        if not chunk:
            break
        shown += chunk
    os.close(terminal)
    assert process.returncode == 0
    size = f"{log.stat().st_size / 1024**2:.0f} MB"
    assert f"\rreading {log}: 4 MB of {size} (".encode() in shown
    assert shown.endswith(b"\r\x1b[K")  # cleared before the report
    assert out.decode().splitlines()[-1] == "20 of 50 fingerprints"
    piped = run_exporter("slowlog", str(log))
    assert (piped.returncode, piped.stderr) == (0, "")


# -- any line at all ---------------------------------------------------------------------------

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _time(value: Any) -> bool:
    try:
        report.moment(value)
    except (TypeError, ValueError):
        return False
    return True


# What each field the report reads must be; anything else makes the line one to skip.
FITS = {
    "kind": lambda v: isinstance(v, str),
    "fingerprint": lambda v: isinstance(v, str),
    "operation": lambda v: isinstance(v, str),
    "sql": lambda v: isinstance(v, str),
    "table": lambda v: v is None or isinstance(v, str),
    "database": lambda v: v is None or isinstance(v, str),
    "time": lambda v: v is None or _time(v),
    "duration_ms": lambda v: (_whole(v) or isinstance(v, float)) and v >= 0,
    "call_site": lambda v: (
        v is None
        or (
            isinstance(v, dict)
            and isinstance(v.get("file"), str)
            and _whole(v.get("line"))
            and isinstance(v.get("function", ""), str)
        )
    ),
    "context": lambda v: v is None or isinstance(v, dict),
    "repeats": lambda v: v is None or _whole(v),
}

RECORDS = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(["slow_query", "n_plus_one"]),
        "fingerprint": st.sampled_from(["f1", "f2", "f3"]),
    },
    optional={
        "time": st.none() | st.datetimes().map(datetime.isoformat),
        "database": st.none() | st.sampled_from(["main", "replica"]),
        "operation": st.text(max_size=8),
        "table": st.none() | st.text(max_size=8),
        "sql": st.text(max_size=20),
        "duration_ms": st.floats(0, 1e6) | st.integers(0, 10**6),
        "call_site": st.none()
        | st.fixed_dictionaries({"file": st.text(max_size=8), "line": st.integers(0, 10**6)}),
        "context": st.none() | st.dictionaries(st.text(max_size=6), JSON, max_size=3),
        "repeats": st.none() | st.integers(0, 10**6),
        "other": JSON,
    },
)


@st.composite
def mistyped(draw: st.DrawFn) -> dict[str, Any]:
    field = draw(st.sampled_from(sorted(FITS)))
    value = draw(JSON.filter(lambda v: not FITS[field](v)))
    return draw(RECORDS) | {field: value}


# (line, is a record): records, records with one field mistyped, and lines of other shapes.
LINES = st.one_of(
    RECORDS.map(lambda r: (json.dumps(r), True)),
    mistyped().map(lambda r: (json.dumps(r), False)),
    JSON.filter(lambda v: not isinstance(v, dict)).map(lambda v: (json.dumps(v), False)),
    st.text(min_size=1, max_size=30).map(lambda t: ("INFO " + t, False)),
    st.binary(min_size=1, max_size=30).map(lambda b: (b"\xff" + b, False)),
)


WINDOWS = st.builds(
    report.Window,
    since=st.none() | st.datetimes(timezones=st.just(UTC)),
    database=st.none() | st.just("main"),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(LINES, max_size=12), WINDOWS)
def test_lines_of_any_shape_are_read_or_skipped_and_counted(
    lines: list[tuple[str | bytes, bool]], window: report.Window
) -> None:
    found = report.read((line for line, _ in lines), window)
    records = [json.loads(line) for line, is_record in lines if is_record]
    assert found.skipped == sum(not is_record for _, is_record in lines)
    slow = sum(row.latencies.count for row in found.slow.values())
    n_plus_one = sum(row.requests for row in found.n_plus_one.values())
    assert slow + n_plus_one + found.left_out == len(records)
    if window == report.Window():
        assert found.left_out == 0
        assert slow == sum(r["kind"] != "n_plus_one" for r in records)
    json.dumps(report.as_json(found))
    assert report.render(found).count("\n") >= min(len(found.slow), report.TOP)

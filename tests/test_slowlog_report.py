"""`db-exporter slowlog` on logs that are not all well-formed records: every other line,
whatever its shape, is skipped and counted, never a crash."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from subprocesses import run_exporter

from exporter.slowlog import report

RECORD = {
    "kind": "slow_query",
    "fingerprint": "f1",
    "operation": "SELECT",
    "table": "authors",
    "sql": "SELECT * FROM authors",
    "duration_ms": 120.5,
    "call_site": {"file": "app/views.py", "line": 42, "function": "index"},
}


def test_the_command_skips_and_counts_records_with_wrong_types(tmp_path: Path) -> None:
    mistyped: list[dict[str, Any]] = [
        {"duration_ms": None},
        {"call_site": "app/views.py:42"},
        {"fingerprint": ["f1"]},
        {"sql": 7},
    ]
    lines = [json.dumps(RECORD)] + [json.dumps(RECORD | change) for change in mistyped]
    lines += [
        '{"kind": "slow_query", "fingerprint": "f1", "duration_ms": 1e999}',  # infinity
        "[" * 100_000,  # deeper than the JSON parser goes
    ]
    log = tmp_path / "slow.jsonl"
    log.write_text("\n".join(lines) + "\n")
    result = run_exporter("slowlog", str(log))
    assert (result.returncode, result.stderr) == (0, "")
    out = result.stdout.splitlines()
    assert "app/views.py:42" in out[2]
    assert out[-2:] == [
        "1 of 1 fingerprints, costliest first",
        "6 lines were not slow-query records and were skipped",
    ]


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


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# What each field the report reads must be; anything else makes the line one to skip.
FITS = {
    "kind": lambda v: isinstance(v, str),
    "fingerprint": lambda v: isinstance(v, str),
    "operation": lambda v: isinstance(v, str),
    "sql": lambda v: isinstance(v, str),
    "table": lambda v: v is None or isinstance(v, str),
    "duration_ms": _number,
    "call_site": lambda v: (
        v is None
        or (isinstance(v, dict) and isinstance(v.get("file"), str) and _whole(v.get("line")))
    ),
}

RECORDS = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(["slow_query", "n_plus_one"]),
        "fingerprint": st.sampled_from(["f1", "f2", "f3"]),
    },
    optional={
        "operation": st.text(max_size=8),
        "table": st.none() | st.text(max_size=8),
        "sql": st.text(max_size=20),
        "duration_ms": st.floats(0, 1e6) | st.integers(0, 10**6),
        "call_site": st.none()
        | st.fixed_dictionaries({"file": st.text(max_size=8), "line": st.integers(0, 10**6)}),
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
)


@settings(max_examples=150, deadline=None)
@given(st.lists(LINES, max_size=12))
def test_lines_of_any_shape_are_read_or_skipped_and_counted(lines: list[tuple[str, bool]]) -> None:
    rows, skipped = report.read(line for line, _ in lines)
    records = [json.loads(line) for line, is_record in lines if is_record]
    assert skipped == sum(not is_record for _, is_record in lines)
    assert sorted(row.fingerprint for row in rows) == sorted({r["fingerprint"] for r in records})
    slow = [r for r in records if r["kind"] != "n_plus_one"]
    assert sum(len(row.durations) for row in rows) == len(slow)
    assert sum(row.n_plus_one for row in rows) == len(records) - len(slow)
    assert report.render(rows, skipped).count("\n") >= min(len(rows), report.TOP)

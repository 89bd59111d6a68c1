"""`db-exporter test-report compare BASE HEAD`: the pytest plugin's JSON reports
(exporter/integrations/pytest_report.py) read, compared, and refused with one line when they
are not reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from subprocesses import assert_one_line_error, run_cli

from exporter.integrations.pytest_report import QueryReport, RecordedTest, write


def report_file(path: Path, statements: dict[str, int]) -> str:
    tests = {name: RecordedTest(statements=n, seconds=0.001 * n) for name, n in statements.items()}
    write(QueryReport(tests=tests), path)
    return str(path)


def test_the_tests_that_grew_are_listed_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = report_file(
        tmp_path / "base.json", {"t::same": 3, "t::grew": 2, "t::more": 1, "t::less": 9}
    )
    head = report_file(
        tmp_path / "head.json",
        {"t::same": 3, "t::grew": 5, "t::more": 2, "t::less": 4, "t::new": 7},
    )
    code, out, err = run_cli(capsys, "test-report", "compare", base, head)
    assert (code, err) == (1, "")
    assert out.splitlines() == [
        f"2 of 4 tests run more statements than in {base}:",
        "  +3  2 -> 5  t::grew",
        "  +1  1 -> 2  t::more",
    ]


def test_nothing_grew_is_exit_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = report_file(tmp_path / "base.json", {"t::a": 3, "t::b": 2})
    head = report_file(tmp_path / "head.json", {"t::a": 3, "t::b": 1})
    code, out, err = run_cli(capsys, "test-report", "compare", base, head)
    assert (code, err) == (0, "")
    assert out == f"no test runs more statements than in {base} (2 tests in both)\n"


BAD = {
    "missing.json": None,
    "empty.json": "",
    "not-json.json": "{",
    "list.json": "[]",
    "negative.json": json.dumps({"tests": {"t": {"statements": -1, "seconds": 0}}}),
    "string-count.json": json.dumps({"tests": {"t": {"statements": "3", "seconds": 0}}}),
    "other-format.json": json.dumps({"format": "junit"}),
    "unknown-key.json": json.dumps({"tests": {}, "extra": 1}),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_file_that_is_not_a_report_is_one_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    good = report_file(tmp_path / "good.json", {"t::a": 1})
    bad = tmp_path / name
    if BAD[name] is not None:
        bad.write_text(str(BAD[name]))
    for base, head in ((str(bad), good), (good, str(bad))):
        code, out, err = run_cli(capsys, "test-report", "compare", base, head)
        assert_one_line_error(code, err, str(bad))
        assert out == ""
    assert (
        Path(good).read_text()
        == Path(report_file(tmp_path / "again.json", {"t::a": 1})).read_text()
    )


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
TESTS = st.dictionaries(
    st.text(max_size=12),
    st.fixed_dictionaries(
        {"statements": st.integers(-2, 50), "seconds": st.floats(-1, 10) | st.integers(0, 3)},
        optional={"n_plus_one": JSON, "odd": JSON},
    ),
    max_size=4,
)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(head=st.one_of(JSON, st.fixed_dictionaries({"tests": TESTS}), st.binary(max_size=40)))
def test_any_input_is_a_comparison_or_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], head: object
) -> None:
    base = report_file(tmp_path / "base.json", {"": 0, "a": 1})
    path = tmp_path / "head.json"
    path.write_bytes(head if isinstance(head, bytes) else json.dumps(head).encode())
    code, out, err = run_cli(capsys, "test-report", "compare", base, str(path))
    if code == 2:
        assert_one_line_error(code, err, str(path))
    else:
        assert err == ""
        assert code == (
            1 if "more statements than" in out.splitlines()[0] and "no test" not in out else 0
        )

"""The pytest plugin once enabled (exporter.integrations.pytest_plugin registers it): counts each
test's statements through a `Recorder` shown every instrumented statement, holds tests to their
budgets (`@pytest.mark.db_queries(max=N)`, the `db_queries` fixture) and, when asked, fails
tests with an N+1 finding; reports per test in the terminal and in a JSON file, merging the
reports of pytest-xdist workers on the controller.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from exporter.instrumentation.queries import StatementObserver, observe_statements
from exporter.integrations import pytest_report
from exporter.integrations.pytest_plugin import SESSION, setting
from exporter.integrations.pytest_report import Finding, FingerprintEntry, QueryReport, RecordedTest
from exporter.integrations.query_recorder import Block, Limits, RecordedQueries, Recorder, listing

NO_STATEMENTS = (
    "db-queries: warning: no statement of an instrumented engine ran in a test, so nothing was "
    "counted: call exporter.instrument(engine) where the application creates its engine, or in "
    "a conftest.py fixture"
)


def whole_number(value: object, minimum: int) -> int | None:
    """`value` when it is an int of at least `minimum`, else None (a bool is refused, though
    Python counts it an int)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        return None
    return value


def whole_number_text(text: object, minimum: int) -> int | None:
    """An ini or flag value: decimal digits (at most 18) of a number of at least `minimum`."""
    digits = text.strip() if isinstance(text, str) else ""
    if not (digits.isdecimal() and digits.isascii() and len(digits) < 19):
        return None
    return whole_number(int(digits), minimum)


def _number_setting(config: pytest.Config, name: str, minimum: int, default: int) -> int:
    raw = setting(config, name)
    if raw in (None, ""):
        return default
    value = whole_number_text(raw, minimum)
    if value is None:
        raise pytest.UsageError(
            f"{name}: expected a whole number of at least {minimum}, got {raw!r}"
        )
    return value


def limits_of(config: pytest.Config) -> Limits:
    default = Limits()
    return Limits(
        n_plus_one_threshold=_number_setting(
            config, "db_queries_n_plus_one_threshold", 2, default.n_plus_one_threshold
        ),
        max_fingerprints=_number_setting(
            config, "db_queries_max_fingerprints", 1, default.max_fingerprints
        ),
        max_sql_length=_number_setting(
            config, "db_queries_max_sql_length", 1, default.max_sql_length
        ),
    )


def budget_of(item: pytest.Item) -> int | None:
    """The test's `@pytest.mark.db_queries(max=N)`, or None; a UsageError naming the test when
    the marker is malformed."""
    marker = item.get_closest_marker("db_queries")
    if marker is None:
        return None
    shown = f"{item.nodeid}: @pytest.mark.db_queries"
    if marker.args or set(marker.kwargs) != {"max"}:
        raise pytest.UsageError(f"{shown} takes one argument, max=N (a whole number)")
    value = whole_number(marker.kwargs["max"], 0)
    if value is None:
        raise pytest.UsageError(
            f"{shown}(max={marker.kwargs['max']!r}): max must be a whole number of at least 0"
        )
    return value


def allowed_of(item: pytest.Item) -> frozenset[str] | None:
    """What the test's `@pytest.mark.allow_n_plus_one(...)` allows: tables and fingerprints,
    empty for all of them; None without the marker."""
    marker = item.get_closest_marker("allow_n_plus_one")
    if marker is None:
        return None
    if set(marker.kwargs) - {"reason"} or not all(
        isinstance(arg, str) and arg.strip() for arg in marker.args
    ):
        raise pytest.UsageError(
            f"{item.nodeid}: @pytest.mark.allow_n_plus_one takes table names or fingerprints "
            f"(non-empty strings) and an optional reason=, got {marker.args!r} {marker.kwargs!r}"
        )
    return frozenset(marker.args)


def _allows(allowed: frozenset[str] | None, finding: Finding) -> bool:
    if allowed is None:
        return False
    return not allowed or finding.table in allowed or finding.fingerprint in allowed


class Budget:
    """The `db_queries` fixture: `with db_queries(max=3): ...`; `.count` so far in the test."""

    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder

    def __call__(self, max: int | None = None) -> Block:
        if max is not None and whole_number(max, 0) is None:
            raise ValueError(f"db_queries(max={max!r}): max must be a whole number of at least 0")
        return Block(self._recorder, max)

    @property
    def count(self) -> int:
        """Statements the test has run so far."""
        test = self._recorder.current
        return test.statements if test is not None else 0


class QuerySession:
    """The enabled plugin's hooks, registered for one pytest session (a session run inside
    another, as pytester does, has its own and puts the outer one's observer back)."""

    def __init__(self, config: pytest.Config) -> None:
        self._config = config
        self.limits = limits_of(config)
        self._fail_on_n_plus_one = bool(setting(config, "db_queries_fail_on_n_plus_one"))
        path = setting(config, "db_queries_report")
        self._report_path = (config.invocation_params.dir / str(path)) if path else None
        self._worker = hasattr(config, "workerinput")  # a pytest-xdist worker
        self.recorder = Recorder(self.limits, str(config.rootpath))
        self.report = QueryReport()
        self._previous: StatementObserver | None = observe_statements(self.recorder)

    def budget(self) -> Budget:
        return Budget(self.recorder)

    def pytest_unconfigure(self) -> None:
        observe_statements(self._previous)

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        """Malformed markers stop the run before any test, naming the test."""
        for item in items:
            budget_of(item)
            allowed_of(item)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, Any, Any]:
        self.recorder.start()
        try:
            result = yield
        finally:
            queries = self.recorder.stop()
            entry = self._record(item, queries)
        problems = self._problems(item, queries, entry)
        if problems:
            pytest.fail("\n".join(problems), pytrace=False)
        return result

    def _record(self, item: pytest.Item, queries: RecordedQueries) -> RecordedTest:
        allowed = allowed_of(item)
        findings = []
        for found in queries.n_plus_one:
            finding = Finding(
                fingerprint=found.fingerprint,
                sql=found.sql,
                table=found.table,
                repeats=found.repeats,
                call_site=found.call_site,
                route=found.route,
            )
            finding.allowed = _allows(allowed, finding)
            findings.append(finding)
        entry = RecordedTest(
            statements=queries.statements,
            seconds=queries.seconds,
            n_plus_one=findings,
            n_plus_one_omitted=queries.n_plus_one_omitted,
        )
        self.report.tests[item.nodeid] = entry
        for fingerprint, seen in queries.fingerprints.items():
            used = FingerprintEntry(sql=seen.sql, statements=seen.statements, seconds=seen.seconds)
            self.report.add_fingerprint(fingerprint, used, self.limits.max_fingerprints)
        return entry

    def _problems(
        self, item: pytest.Item, queries: RecordedQueries, entry: RecordedTest
    ) -> list[str]:
        problems = []
        budget = budget_of(item)
        if budget is not None and queries.statements > budget:
            problems.append(
                f"db_queries(max={budget}): the test ran {queries.statements} statements "
                f"({queries.seconds * 1000:.1f} ms in the database):\n"
                f"{listing(queries.fingerprints)}"
            )
        if self._fail_on_n_plus_one:
            for finding, found in zip(entry.n_plus_one, queries.n_plus_one, strict=True):
                if not finding.allowed:
                    problems.append(
                        f"N+1: {found.describe()}\n  load it with the parent (selectinload, "
                        f"joinedload), or mark a known one "
                        f"@pytest.mark.allow_n_plus_one({finding.table or finding.fingerprint!r})"
                    )
        return problems

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """pytest-xdist, on the controller: a worker's report joins the session's."""
        data = getattr(node, "workeroutput", {}).get(SESSION)
        if data is not None:
            worker = QueryReport.model_validate_json(data)
            self.report.merge(worker, self.limits.max_fingerprints)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if exitstatus in (pytest.ExitCode.USAGE_ERROR, pytest.ExitCode.INTERNAL_ERROR):
            return  # no test ran: the last report stays as it was
        if self._worker:
            workeroutput: dict[str, Any] = self._config.workeroutput  # type: ignore[attr-defined]
            workeroutput[SESSION] = self.report.model_dump_json()
        elif self._report_path is not None:
            pytest_report.write(self.report, Path(self._report_path))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self._worker:
            return
        if self.report.statements == 0:
            terminalreporter.write_line(NO_STATEMENTS, yellow=True)
            return
        terminalreporter.write_sep("=", "db-queries")
        for line in pytest_report.summary(self.report):
            terminalreporter.write_line(line)
        if self._report_path is not None:
            terminalreporter.write_line(f"report: {self._report_path}")

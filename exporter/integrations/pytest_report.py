"""The pytest plugin's report: per test, its statements, database time and N+1 findings; per
fingerprint, its statements and time over the session. Written as JSON for CI
(`--db-queries-report`), merged across pytest-xdist workers, shown as the terminal summary, and
compared between two runs by `db-exporter test-report compare BASE HEAD`.

Needs no pytest: the command reads reports on any machine.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from exporter.errors import UserError

FORMAT: Literal["db-exporter-test-report"] = "db-exporter-test-report"
# A report larger than this is refused by the reader (a suite of 100,000 tests writes ~30 MB).
MAX_REPORT_BYTES = 256 << 20
TOP = 10  # rows per table of the terminal summary


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=False)


class Finding(_Strict):
    """One N+1 finding (exporter.integrations.query_recorder.Repeated)."""

    fingerprint: str
    sql: str
    table: str | None
    repeats: int = Field(ge=2)
    call_site: str | None
    route: str | None
    allowed: bool = False  # by the test's allow_n_plus_one marker


class RecordedTest(_Strict):
    statements: int = Field(ge=0)
    seconds: float = Field(ge=0)
    n_plus_one: list[Finding] = []
    n_plus_one_omitted: int = Field(default=0, ge=0)


class FingerprintEntry(_Strict):
    sql: str
    statements: int = Field(ge=0)
    seconds: float = Field(ge=0)


class QueryReport(_Strict):
    format: Literal["db-exporter-test-report"] = FORMAT
    version: Literal[1] = 1
    tests: dict[str, RecordedTest] = {}
    fingerprints: dict[str, FingerprintEntry] = {}
    # Statements of fingerprints past the session's max_fingerprints: counted, not itemised.
    statements_not_itemised: int = Field(default=0, ge=0)

    def add_fingerprint(self, fingerprint: str, entry: FingerprintEntry, limit: int) -> None:
        known = self.fingerprints.get(fingerprint)
        if known is not None:
            known.statements += entry.statements
            known.seconds += entry.seconds
        elif len(self.fingerprints) < limit:
            self.fingerprints[fingerprint] = entry.model_copy()
        else:
            self.statements_not_itemised += entry.statements

    def merge(self, other: QueryReport, max_fingerprints: int) -> None:
        """Adds another worker's report to this one."""
        self.tests.update(other.tests)
        for fingerprint, entry in other.fingerprints.items():
            self.add_fingerprint(fingerprint, entry, max_fingerprints)
        self.statements_not_itemised += other.statements_not_itemised

    @property
    def statements(self) -> int:
        return sum(test.statements for test in self.tests.values())

    @property
    def seconds(self) -> float:
        return sum(test.seconds for test in self.tests.values())


def read(path: str) -> QueryReport:
    """A report file, or a UserError naming the file and what is wrong with it."""
    try:
        with open(path, "rb") as stream:
            data = stream.read(MAX_REPORT_BYTES + 1)
    except OSError as exc:
        raise UserError(f"{path}: {exc.strerror or exc}") from None
    if len(data) > MAX_REPORT_BYTES:
        raise UserError(f"{path}: larger than {MAX_REPORT_BYTES:,} bytes")
    try:
        return QueryReport.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the file"
        raise UserError(
            f"{path}: not a db-exporter test report ({where}: {first['msg']})"
        ) from None


def write(report: QueryReport, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report.model_dump_json(indent=1) + "\n")


def grown(base: QueryReport, head: QueryReport) -> list[tuple[str, int, int]]:
    """(test, statements in base, in head) for each test in both that runs more statements in
    head, the largest growth first."""
    found = [
        (name, base.tests[name].statements, test.statements)
        for name, test in head.tests.items()
        if name in base.tests and test.statements > base.tests[name].statements
    ]
    return sorted(found, key=lambda row: (row[1] - row[2], row[0]))


def comparison(base_name: str, base: QueryReport, head: QueryReport) -> tuple[list[str], bool]:
    """What `test-report compare` prints, and whether some test grew."""
    rows = grown(base, head)
    both = sum(1 for name in head.tests if name in base.tests)
    if not rows:
        return [f"no test runs more statements than in {base_name} ({both} tests in both)"], False
    lines = [f"{len(rows)} of {both} tests run more statements than in {base_name}:"]
    lines += [f"  {after - before:+d}  {before} -> {after}  {name}" for name, before, after in rows]
    return lines, True


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def summary(report: QueryReport, top: int = TOP) -> list[str]:
    """The terminal summary: totals, the tests with the most statements, the N+1 findings and
    the fingerprints with the most database time."""
    tests = report.tests
    lines = [
        f"{report.statements} statements in {len(tests)} tests, "
        f"{_ms(report.seconds)} in the database"
    ]
    busiest = sorted(tests.items(), key=lambda item: (-item[1].statements, item[0]))[:top]
    busiest = [(name, test) for name, test in busiest if test.statements]
    if busiest:
        lines.append("most statements:")
        lines += [f"  {t.statements:>6}  {_ms(t.seconds):>10}  {name}" for name, t in busiest]
    findings = list(_findings(tests.items()))
    if findings:
        lines.append("N+1 (the same SELECT repeated within a test or a request):")
        for name, finding in findings[:top]:
            allowed = " [allowed]" if finding.allowed else ""
            lines.append(f"  {name}{allowed}")
            within = f"request {finding.route}" if finding.route else "test"
            where = f" at {finding.call_site}" if finding.call_site else ""
            lines.append(f"    {finding.repeats}x in one {within}{where}: {finding.sql}")
        if len(findings) > top:
            lines.append(f"  ... and {len(findings) - top} more in the JSON report")
    slowest = sorted(report.fingerprints.values(), key=lambda f: -f.seconds)[:top]
    if slowest:
        lines.append("slowest statements (total database time):")
        lines += [f"  {_ms(f.seconds):>10}  {f.statements:>6}x  {f.sql}" for f in slowest]
    return lines


def _findings(tests: Iterable[tuple[str, RecordedTest]]) -> Iterable[tuple[str, Finding]]:
    for name, test in sorted(tests):
        for finding in test.n_plus_one:
            yield name, finding

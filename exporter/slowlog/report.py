"""`db-exporter slowlog [FILE|-]`: a slow-query log read back as two ranked tables, so a log
taken from production can be read without other tools.

- Slow statements per database and fingerprint, by total time: count, p95, max and the call
  site of the slowest run.
- N+1 warnings per database, fingerprint and call site, by the number of requests (contexts)
  that showed them.

Lines that are not records (other log output interleaved on stdout, records whose fields have
the wrong type, lines cut at `MAX_LINE_BYTES`) are skipped and counted. Memory is bounded
whatever the log's size: lines are read up to `MAX_LINE_BYTES`, at most `MAX_ROWS` rows per
table are kept (records of later fingerprints are counted, not ranked), and each row holds a
few kilobytes (see quantiles.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import IO, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from exporter.slowlog.quantiles import EXACT, RELATIVE_ERROR, Latencies

TOP = 20
MAX_LINE_BYTES = 16 * 1024 * 1024  # a record with 10 MB of SQL still reads
MAX_ROWS = 10_000  # per table
SQL_KEPT = 2000  # characters of a statement's SQL kept per row
TEXT_KEPT = 300  # characters of a call site's file, a function or a route
ROUTES_KEPT = 3  # distinct routes kept per N+1 row
PROGRESS_EVERY = 4 * 1024 * 1024  # bytes between two calls of `on_progress`


class _Checked(BaseModel):
    # Strict: a null duration or a string call site is a line to skip, not a value to coerce.
    model_config = ConfigDict(strict=True, allow_inf_nan=False)


class _CallSite(_Checked):
    file: str
    line: int
    function: str = ""


class _Record(_Checked):
    """The fields the report reads, with defaults for records of older versions; the rest of
    a record is not read."""

    kind: str
    fingerprint: str
    time: str | None = None
    database: str | None = None
    operation: str = "?"
    table: str | None = None
    sql: str = ""
    duration_ms: float = Field(default=0.0, ge=0)
    call_site: _CallSite | None = None
    context: dict[str, Any] | None = None
    repeats: int | None = None


def moment(text: str) -> datetime:
    """An ISO 8601 time; without a zone, UTC. Raises ValueError."""
    found = datetime.fromisoformat(text)
    return found if found.tzinfo else found.replace(tzinfo=UTC)


_AGE = re.compile(r"(\d{1,9})([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def since_or_until(text: str, now: datetime | None = None) -> datetime:
    """`--since` / `--until`: an ISO time, or an age before `now` (`90s`, `15m`, `2h`, `7d`).
    Raises ValueError with the accepted forms."""
    age = _AGE.fullmatch(text.strip())
    if age is not None:
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[age[2]]: int(age[1])})
    try:
        return moment(text)
    except ValueError:
        raise ValueError(
            f"expected an ISO time (2026-11-24T03:00, UTC unless a zone is given) or an age "
            f"(90s, 15m, 2h, 7d), got {text!r}"
        ) from None


@dataclass(frozen=True)
class Window:
    """Which records count: from `since` (inclusive) to `until` (exclusive), of `database`.
    A record without a time is outside any window that has a bound."""

    since: datetime | None = None
    until: datetime | None = None
    database: str | None = None

    def admits(self, at: datetime | None, database: str | None) -> bool:
        if self.database is not None and database != self.database:
            return False
        if self.since is None and self.until is None:
            return True
        if at is None:
            return False
        return (self.since is None or at >= self.since) and (self.until is None or at < self.until)


def _cut(text: str, kept: int) -> str:
    return text if len(text) <= kept else text[:kept] + "...[cut]"


def _site(site: _CallSite | None) -> dict[str, Any] | None:
    if site is None:
        return None
    return {
        "file": _cut(site.file, TEXT_KEPT),
        "line": site.line,
        "function": _cut(site.function, TEXT_KEPT),
    }


def _identity(record: _Record) -> tuple[str | None, str, str, str | None, str]:
    sql = _cut(record.sql, SQL_KEPT)
    return record.database, record.fingerprint, record.operation, record.table, sql


@dataclass
class _Seen:
    """What both tables keep of a fingerprint, and when it was seen."""

    database: str | None
    fingerprint: str
    operation: str
    table: str | None
    sql: str
    first_seen: datetime | None = None
    last_seen: datetime | None = None

    def seen(self, at: datetime | None) -> None:
        if at is not None:
            self.first_seen = at if self.first_seen is None else min(self.first_seen, at)
            self.last_seen = at if self.last_seen is None else max(self.last_seen, at)

    def as_dict(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "fingerprint": self.fingerprint,
            "operation": self.operation,
            "table": self.table,
            "sql": self.sql,
            "first_seen": self.first_seen.isoformat() if self.first_seen else None,
            "last_seen": self.last_seen.isoformat() if self.last_seen else None,
        }


@dataclass
class SlowRow(_Seen):
    latencies: Latencies = field(default_factory=Latencies)
    slowest_call_site: dict[str, Any] | None = None

    def add(self, record: _Record) -> None:
        if record.duration_ms >= self.latencies.max:
            self.slowest_call_site = _site(record.call_site)
        self.latencies.add(record.duration_ms)

    def as_dict(self) -> dict[str, Any]:
        latencies = self.latencies
        return super().as_dict() | {
            "count": latencies.count,
            "total_ms": round(latencies.total, 3),
            "p95_ms": round(latencies.quantile(0.95), 3),
            "p95_exact": latencies.exact,
            "max_ms": round(latencies.max, 3),
            "slowest_call_site": self.slowest_call_site,
        }


@dataclass
class NPlusOneRow(_Seen):
    call_site: dict[str, Any] | None = None
    requests: int = 0  # one record per context (request, task) and fingerprint
    repeats: int = 0  # the largest count a record gives: executions within one context
    routes: list[str] = field(default_factory=list)

    def add(self, record: _Record) -> None:
        self.requests += 1
        self.repeats = max(self.repeats, record.repeats or 0)
        route = (record.context or {}).get("route")
        if isinstance(route, str) and len(self.routes) < ROUTES_KEPT:
            route = _cut(route, TEXT_KEPT)
            if route not in self.routes:
                self.routes.append(route)

    def as_dict(self) -> dict[str, Any]:
        return super().as_dict() | {
            "call_site": self.call_site,
            "requests": self.requests,
            "repeats": self.repeats,
            "routes": self.routes,
        }


@dataclass
class Report:
    window: Window = field(default_factory=Window)
    slow: dict[tuple[str | None, str], SlowRow] = field(default_factory=dict)
    n_plus_one: dict[tuple[str | None, str, str], NPlusOneRow] = field(default_factory=dict)
    lines: int = 0  # lines that are not blank
    skipped: int = 0  # of those, not records
    left_out: int = 0  # records outside the window or of another database
    not_ranked: int = 0  # records of fingerprints beyond MAX_ROWS

    @property
    def records(self) -> int:
        return self.lines - self.skipped

    def add(self, record: _Record, at: datetime | None) -> None:
        row = (
            self._n_plus_one_row(record) if record.kind == "n_plus_one" else self._slow_row(record)
        )
        if row is None:
            self.not_ranked += 1
            return
        row.seen(at)
        row.add(record)

    def _slow_row(self, record: _Record) -> SlowRow | None:
        key = (record.database, record.fingerprint)
        row = self.slow.get(key)
        if row is None and len(self.slow) < MAX_ROWS:
            row = self.slow[key] = SlowRow(*_identity(record))
        return row

    def _n_plus_one_row(self, record: _Record) -> NPlusOneRow | None:
        site = _site(record.call_site)
        key = (record.database, record.fingerprint, _where(site))
        row = self.n_plus_one.get(key)
        if row is None and len(self.n_plus_one) < MAX_ROWS:
            row = self.n_plus_one[key] = NPlusOneRow(*_identity(record), call_site=site)
        return row

    def ranked_slow(self) -> list[SlowRow]:
        return sorted(self.slow.values(), key=lambda r: r.latencies.total, reverse=True)

    def ranked_n_plus_one(self) -> list[NPlusOneRow]:
        return sorted(self.n_plus_one.values(), key=lambda r: (r.requests, r.repeats), reverse=True)


def lines_of(stream: IO[bytes], max_bytes: int = MAX_LINE_BYTES) -> Iterator[bytes]:
    """Each line of `stream`, cut at `max_bytes` (the rest of a longer line is read and
    dropped, so the cut line, no longer JSON, is skipped like any other garbage)."""
    while line := stream.readline(max_bytes):
        if len(line) == max_bytes and not line.endswith(b"\n"):
            while (rest := stream.readline(max_bytes)) and not rest.endswith(b"\n"):
                pass
        yield line


def read(
    lines: Iterable[bytes | str],
    window: Window | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> Report:
    """The report of the records among `lines`; `on_progress(bytes read)` now and then."""
    report = Report(window or Window())
    admits = report.window.admits
    done = reported = 0
    for line in lines:
        if on_progress is not None:
            done += len(line)
            if done - reported >= PROGRESS_EVERY:
                on_progress(reported := done)
        if not line.strip():
            continue
        report.lines += 1
        try:
            record = _Record.model_validate_json(line)
            at = moment(record.time) if record.time is not None else None
        # Not JSON (or nested past the parser's depth, or not UTF-8), not a record, a field
        # mistyped, or a time that is not one.
        except (ValidationError, ValueError):
            report.skipped += 1
            continue
        if admits(at, record.database):
            report.add(record, at)
        else:
            report.left_out += 1
    return report


# -- output --------------------------------------------------------------------------------


def as_json(report: Report, top: int = TOP) -> dict[str, Any]:
    window = report.window
    return {
        "window": {
            "since": window.since.isoformat() if window.since else None,
            "until": window.until.isoformat() if window.until else None,
            "database": window.database,
        },
        "slow_statements": [row.as_dict() for row in report.ranked_slow()[:top]],
        "slow_fingerprints": len(report.slow),
        "n_plus_one": [row.as_dict() for row in report.ranked_n_plus_one()[:top]],
        "n_plus_one_rows": len(report.n_plus_one),
        "lines": report.lines,
        "lines_skipped": report.skipped,
        "records_left_out": report.left_out,
        "records_not_ranked": report.not_ranked,
    }


def _where(site: dict[str, Any] | None) -> str:
    return f"{site['file']}:{site['line']}" if site else "-"


def _statement(row: _Seen) -> str:
    return f"{row.operation} {row.table or ''}".strip()[:24]


def _sql(row: _Seen) -> str:
    return " ".join(row.sql.split())[:80]


def _slow_table(rows: list[SlowRow], top: int) -> list[str]:
    header = (
        f"{'total ms':>10} {'count':>6} {'p95 ms':>9} {'max ms':>9}  {'fingerprint':<16}  "
        f"{'database':<10} {'statement':<24} {'call site (slowest)':<40} sql"
    )
    lines = ["Slow statements, costliest first", header, "-" * len(header)]
    for row in rows[:top]:
        latencies = row.latencies
        p95 = f"{latencies.quantile(0.95):.1f}" + ("" if latencies.exact else "~")
        lines.append(
            f"{latencies.total:>10.1f} {latencies.count:>6} {p95:>9} {latencies.max:>9.1f}  "
            f"{row.fingerprint[:16]:<16}  {(row.database or '-')[:10]:<10} {_statement(row):<24} "
            f"{_where(row.slowest_call_site)[-40:]:<40} {_sql(row)}"
        )
    lines.append(f"{min(top, len(rows))} of {len(rows)} fingerprints")
    return lines


def _n_plus_one_table(rows: list[NPlusOneRow], top: int) -> list[str]:
    header = (
        f"{'requests':>8} {'repeats':>7}  {'fingerprint':<16}  {'database':<10} "
        f"{'statement':<24} {'call site':<40} {'routes':<24} sql"
    )
    lines = ["N+1: the same SELECT repeated within one request, most requests first", header]
    lines.append("-" * len(header))
    for row in rows[:top]:
        routes = ", ".join(row.routes) or "-"
        lines.append(
            f"{row.requests:>8} {row.repeats:>7}  {row.fingerprint[:16]:<16}  "
            f"{(row.database or '-')[:10]:<10} {_statement(row):<24} "
            f"{_where(row.call_site)[-40:]:<40} {routes[:24]:<24} {_sql(row)}"
        )
    lines.append(f"{min(top, len(rows))} of {len(rows)} fingerprints and call sites")
    return lines


def render(report: Report, top: int = TOP) -> str:
    lines: list[str] = []
    if report.slow:
        lines += _slow_table(report.ranked_slow(), top)
    if report.n_plus_one:
        lines += [""] * bool(lines) + _n_plus_one_table(report.ranked_n_plus_one(), top)
    if not lines:
        lines.append("no slow-query records found")
    if report.slow and any(not row.latencies.exact for row in report.slow.values()):
        lines.append(
            f"~ p95 of a fingerprint with more than {EXACT} runs: within "
            f"{RELATIVE_ERROR:.0%} of the exact figure"
        )
    notes = [
        (report.left_out, "records outside --since/--until/--database were left out"),
        (
            report.not_ranked,
            f"records of fingerprints beyond the first {MAX_ROWS:,} were not ranked",
        ),
        (report.skipped, "lines were not slow-query records and were skipped"),
    ]
    lines += [f"{count} {what}" for count, what in notes if count]
    return "\n".join(lines)

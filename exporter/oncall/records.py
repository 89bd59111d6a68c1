"""The slow-query log's records in the page's window, per fingerprint: slow statements with
their latencies, first and last seen, points for the chart and the slowest record; N+1
warnings per fingerprint and call site.

Records are read as they are found, whatever their shape: a record of an older version, one
handed over by another process or one missing fields is shown with what it has (`-` for the
rest), never an error.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import repeat
from operator import is_, itemgetter
from typing import Any, NamedTuple

ROUTES_KEPT = 3  # distinct routes shown per N+1 row


def text(record: Mapping[str, Any], key: str) -> str | None:
    value = record.get(key)
    return value if isinstance(value, str) else None


def number(record: Mapping[str, Any], key: str) -> float | None:
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def unix_time(record: Mapping[str, Any]) -> float | None:
    """The record's `time` (ISO 8601; UTC when it names no zone) as Unix seconds."""
    raw = text(record, "time")
    if raw is None or len(raw) > 64:
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def route(record: Mapping[str, Any]) -> str | None:
    context = record.get("context")
    return text(context, "route") if isinstance(context, Mapping) else None


@dataclass
class _Fingerprint:
    database: str
    fingerprint: str
    operation: str
    table: str | None
    sql: str
    first: float | None = None  # Unix seconds
    last: float | None = None


@dataclass
class SlowStatement(_Fingerprint):
    durations: list[float] = field(default_factory=list)  # ms, sorted
    points: list[tuple[float, float]] = field(default_factory=list)  # (Unix time, ms)
    worst: Mapping[str, Any] = field(default_factory=dict)  # the slowest record

    @property
    def count(self) -> int:
        return len(self.durations)

    @property
    def total_ms(self) -> float:
        return math.fsum(self.durations)

    @property
    def max_ms(self) -> float:
        return self.durations[-1] if self.durations else 0.0

    def quantile(self, q: float) -> float:
        """The smallest duration with at least `q` of the runs at or below it (nearest rank,
        as `exporter.slowlog.quantiles` reads its exact samples)."""
        if not self.durations:
            return 0.0
        return self.durations[max(1, math.ceil(q * len(self.durations))) - 1]


@dataclass
class NPlusOne(_Fingerprint):
    call_site: Any = None  # as the record has it
    requests: int = 0  # records: one per request (or task) that repeated the statement
    repeats: int = 0  # the largest repeat count a record gives
    routes: list[str] = field(default_factory=list)


class Read(NamedTuple):
    """What ranking reads of one record."""

    record: Mapping[str, Any]
    at: float | None  # Unix seconds
    key: tuple[str, ...]  # (database, fingerprint), and the call site for N+1
    measure: float  # a slow statement's duration (ms); an N+1 warning's repeat count
    n_plus_one: bool
    route: str | None  # of an N+1 warning


# A fingerprint's (or N+1 row's) records in the window: [measure, reads], where the measure
# ranks it beside the number of reads: a slow statement's total time, an N+1 row's largest
# repeat count. Plain lists: there is one per fingerprint, made anew for every page.
Group = list[Any]
_MEASURE = itemgetter(0)


@dataclass
class Window:
    slow: list[Group]  # costliest (total time) first
    n_plus_one: list[Group]  # most requests first, then the largest repeat count
    records: int  # records in the window, slow or N+1
    slow_records: int
    unreadable: int  # entries that were not records at all

    def statements(self, top: int) -> list[SlowStatement]:
        """The `top` costliest fingerprints, read in full."""
        return [slow_statement(reads) for _, reads in self.slow[:top]]

    def warnings(self, top: int) -> list[NPlusOne]:
        """The `top` N+1 rows, read in full."""
        return [n_plus_one(reads) for _, reads in self.n_plus_one[:top]]

    oldest: float | None  # the time of the oldest slow record in the window


def _identity(record: Mapping[str, Any]) -> tuple[str, str, str, str | None, str]:
    return (
        text(record, "database") or "-",
        text(record, "fingerprint") or "-",
        text(record, "operation") or "?",
        text(record, "table"),
        text(record, "sql") or "",
    )


def _site_key(site: Any) -> str:
    if isinstance(site, Mapping):
        return f"{site.get('file')}:{site.get('line')}"
    return "-"


def read(record: Mapping[str, Any]) -> Read:
    database, fingerprint = _identity(record)[:2]
    if record.get("kind") == "n_plus_one":
        where = _site_key(record.get("call_site"))
        repeats = int(number(record, "repeats") or 0)
        key = (database, fingerprint, where)
        return Read(record, unix_time(record), key, repeats, True, route(record))
    ms = max(0.0, number(record, "duration_ms") or 0.0)
    return Read(record, unix_time(record), (database, fingerprint), ms, False, None)


def slow_statement(reads: list[Read]) -> SlowStatement:
    """One fingerprint's records (oldest first) as the page shows them."""
    statement = SlowStatement(*_identity(reads[-1].record))
    measures = [r[3] for r in reads]
    statement.durations = sorted(measures)
    slowest = statement.durations[-1]
    statement.worst = next(r.record for r in reversed(reads) if r.measure == slowest)
    statement.points = [(r[1], r[3]) for r in reads if r[1] is not None]
    _first_and_last(statement, reads)
    return statement


def _first_and_last(fingerprint: _Fingerprint, reads: list[Read]) -> None:
    times = [r[1] for r in reads if r[1] is not None]
    if times:
        fingerprint.first, fingerprint.last = min(times), max(times)


def n_plus_one(reads: list[Read]) -> NPlusOne:
    latest = reads[-1].record
    warning = NPlusOne(*_identity(latest), call_site=latest.get("call_site"))
    _first_and_last(warning, reads)
    warning.requests = len(reads)
    warning.repeats = int(max(r[3] for r in reads))
    routes = warning.routes
    for r in reversed(reads):  # the latest routes
        if r.route is not None and r.route not in routes:
            routes.append(r.route)
            if len(routes) == ROUTES_KEPT:
                break
    return warning


def _still_held(old: list[Any], records: list[Any]) -> int:
    """How many of `old` (a run at its end) begin `records`, found by identity (two records
    can be equal)."""
    if not old or not records:
        return 0
    try:
        first = list(map(is_, old, repeat(records[0]))).index(True)
    except ValueError:
        return 0
    kept = len(old) - first
    if kept > len(records) or records[kept - 1] is not old[-1]:
        return 0
    return kept


class Reader:
    """Ranks records into a `Window`. What it reads of each record is kept while the record is
    in the ring buffer (at most its records, in the same order), so a page rendered again reads
    only the records that arrived since: the ring only appends at one end and forgets at the
    other, so the last snapshot's records still held are one run at its end."""

    def __init__(self) -> None:
        self._records: list[Any] = []  # the last snapshot
        self._reads: list[Read | None] = []  # what was read of each (None: not a record)
        self._lock = threading.Lock()  # pages render in worker threads, maybe two at once

    def _read_all(self, records: list[Any]) -> list[Read | None]:
        with self._lock:
            old, reads = self._records, self._reads
            kept = _still_held(old, records)
            fresh = reads[len(reads) - kept :] if kept else []
            fresh += [read(r) if isinstance(r, Mapping) else None for r in records[kept:]]
            self._records, self._reads = records, fresh
            return fresh

    def gather(self, records: list[Any], since: float | None) -> Window:
        """`records` (oldest first, as the ring holds them) from `since` (Unix seconds; None:
        all, records without a time included)."""
        # key -> [measure, reads]: plain lists, and locals bound once, as this loop runs for
        # every record kept
        slow: dict[tuple[str, ...], Group] = {}
        warnings: dict[tuple[str, ...], Group] = {}
        slow_get, warnings_get = slow.get, warnings.get
        unreadable = slow_records = warning_records = 0
        oldest = math.inf
        for found in self._read_all(records):
            if found is None:
                unreadable += 1
                continue
            _, at, key, measure, is_n_plus_one, _ = found
            if since is not None and (at is None or at < since):
                continue
            if is_n_plus_one:
                warning_records += 1
                group = warnings_get(key)
                if group is None:
                    warnings[key] = [measure, [found]]
                else:
                    group[0] = max(group[0], measure)
                    group[1].append(found)
                continue
            slow_records += 1
            if at is not None and at < oldest:
                oldest = at
            group = slow_get(key)
            if group is None:
                slow[key] = [measure, [found]]
            else:
                group[0] += measure
                group[1].append(found)
        kept = slow_records + warning_records
        return Window(
            sorted(slow.values(), key=_MEASURE, reverse=True),
            sorted(warnings.values(), key=_requests, reverse=True),
            kept,
            slow_records,
            unreadable,
            oldest if oldest < math.inf else None,
        )


def _requests(group: Group) -> tuple[int, float]:
    return len(group[1]), group[0]

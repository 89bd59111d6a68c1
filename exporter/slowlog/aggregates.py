"""Per-fingerprint aggregates: how often, how long in total and at worst, the worst sample."""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from exporter.bounded import size_of
from exporter.slowlog.quantiles import Latencies
from exporter.slowlog.rate import Skipped


class PlanHeld(NamedTuple):
    raw: Any  # EXPLAIN (FORMAT JSON) output, or None
    summary: str | None
    sizes: dict[str, float]  # relation -> rows, for the findings
    bytes: int  # what the aggregate counts for it


@dataclass
class Aggregate:
    fingerprint: str
    database: str
    operation: str
    table: str | None
    sql: str
    count: int = 0
    total_seconds: float = 0.0
    max_seconds: float = 0.0
    last_seen: str = ""
    worst: dict[str, Any] | None = None
    plan: Any = None
    plan_summary: str | None = None
    # The durations of the statements that got a record, for p95 (bounded: quantiles.py).
    latencies: Latencies = field(default_factory=Latencies, repr=False)
    # The planned relations' row counts (pg_class.reltuples) the plan's findings were read with.
    plan_sizes: dict[str, float] | None = None
    # Bytes held (as exporter.bounded.size_of counts them): the aggregate itself, its worst
    # record, its plan.
    own_size: int = field(default=0, repr=False)
    worst_size: int = field(default=0, repr=False)
    plan_size: int = field(default=0, repr=False)

    @property
    def size(self) -> int:
        return self.own_size + self.worst_size + self.plan_size

    def as_dict(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "database": self.database,
            "operation": self.operation,
            "table": self.table,
            "sql": self.sql,
            "count": self.count,
            "total_ms": round(self.total_seconds * 1000, 3),
            "mean_ms": round(self.total_seconds * 1000 / self.count, 3) if self.count else 0.0,
            "max_ms": round(self.max_seconds * 1000, 3),
            # Over the statements with a record (the record rate leaves some without).
            "p95_ms": round(self.latencies.quantile(0.95), 3),
            "last_seen": self.last_seen,
            "worst": self.worst,
            "plan_summary": self.plan_summary,
            "plan": self.plan,
        }


class Aggregates:
    """Bounded: beyond `limit` fingerprints or `max_bytes` (with their worst records and plans)
    the least recently seen ones are forgotten."""

    def __init__(self, limit: int, max_bytes: int) -> None:
        self._limit, self._max_bytes = limit, max_bytes
        self._by_key: OrderedDict[tuple[str, str], Aggregate] = OrderedDict()
        self.bytes = 0
        self._lock = threading.Lock()

    def resize(self, limit: int, max_bytes: int) -> None:
        """Keep at most `limit` fingerprints and `max_bytes` from now on (forgetting the least
        recent)."""
        with self._lock:
            self._limit, self._max_bytes = limit, max_bytes
            self._trim()

    def _trim(self) -> None:
        by_key = self._by_key
        while by_key and (len(by_key) > self._limit or self.bytes > self._max_bytes):
            self.bytes -= by_key.popitem(last=False)[1].size

    def add(self, record: dict[str, Any], size: int) -> None:
        """`record` as written, `size` its bytes (size_of)."""
        seconds = record["duration_ms"] / 1000
        fields = (record["fingerprint"], record["database"], record["operation"], record["table"])
        with self._lock:
            found = self._found(*fields, record["sql"])
            stored = found.latencies.stored_bytes
            found.latencies.add(record["duration_ms"])
            grown = found.latencies.stored_bytes - stored
            found.own_size += grown
            self.bytes += grown
            found.count += 1
            found.total_seconds += seconds
            # Records merged from several processes come out of order: the latest time wins.
            found.last_seen = max(found.last_seen, record["time"])
            if seconds >= found.max_seconds:
                found.max_seconds = seconds
                found.worst = record
                self.bytes += size - found.worst_size
                found.worst_size = size
            self._trim()

    def add_skipped(self, skipped: Skipped, sql: str) -> None:
        """Slow statements that got no record (the rate limit): counted all the same."""
        identity = skipped.identity
        with self._lock:
            found = self._found(
                identity.fingerprint, skipped.database, identity.operation, identity.table, sql
            )
            found.count += skipped.count
            found.total_seconds += skipped.seconds
            found.max_seconds = max(found.max_seconds, skipped.max_seconds)
            self._trim()

    def _found(
        self, fingerprint: str, database: str, operation: str, table: str | None, sql: str
    ) -> Aggregate:
        """The fingerprint's aggregate, made the most recent (the lock held); `_trim()` after
        adding to it keeps the bounds."""
        key = (database, fingerprint)
        found = self._by_key.get(key)
        if found is None:
            found = self._by_key[key] = Aggregate(fingerprint, database, operation, table, sql)
            found.own_size = sys.getsizeof(found) + size_of(vars(found))
            self.bytes += found.own_size
        self._by_key.move_to_end(key)
        return found

    def set_plan(
        self,
        database: str,
        fingerprint: str,
        plan: Any,
        summary: str,
        sizes: dict[str, float] | None = None,
    ) -> None:
        """A plan larger than the whole budget is not kept; its summary is. `sizes`: the
        relations' row counts its findings were read with."""
        size = size_of(plan) + size_of(sizes)
        with self._lock:
            found = self._by_key.get((database, fingerprint))
            if found is None:
                return
            if found.size - found.plan_size + size > self._max_bytes:
                plan, sizes, size = None, None, 0
            found.plan, found.plan_summary, found.plan_sizes = plan, summary, sizes
            self.bytes += size - found.plan_size
            found.plan_size = size
            self._trim()

    def plan_of(self, database: str, fingerprint: str) -> PlanHeld | None:
        """The fingerprint's plan as held (None when it has no aggregate)."""
        with self._lock:
            found = self._by_key.get((database, fingerprint))
            if found is None:
                return None
            return PlanHeld(found.plan, found.plan_summary, found.plan_sizes or {}, found.plan_size)

    def ranked(self, database: str | None = None) -> list[dict[str, Any]]:
        """By total time spent, the costliest first."""
        with self._lock:
            rows = [a.as_dict() for a in self._by_key.values()]
        if database is not None:
            rows = [r for r in rows if r["database"] == database]
        return sorted(rows, key=lambda r: r["total_ms"], reverse=True)

"""Per-fingerprint aggregates: how often, how long in total and at worst, the worst sample."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from exporter.slowlog.rate import Skipped


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
            "last_seen": self.last_seen,
            "worst": self.worst,
            "plan_summary": self.plan_summary,
            "plan": self.plan,
        }


class Aggregates:
    """Bounded: beyond `limit` fingerprints the least recently seen one is forgotten."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._by_key: OrderedDict[tuple[str, str], Aggregate] = OrderedDict()
        self._lock = threading.Lock()

    def resize(self, limit: int) -> None:
        """Keep at most `limit` fingerprints from now on (forgetting the least recent)."""
        with self._lock:
            self._limit = limit
            while len(self._by_key) > limit:
                self._by_key.popitem(last=False)

    def add(self, record: dict[str, Any]) -> None:
        seconds = record["duration_ms"] / 1000
        fields = (record["fingerprint"], record["database"], record["operation"], record["table"])
        with self._lock:
            found = self._found(*fields, record["sql"])
            found.count += 1
            found.total_seconds += seconds
            found.last_seen = record["time"]
            if seconds >= found.max_seconds:
                found.max_seconds = seconds
                found.worst = record

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

    def _found(
        self, fingerprint: str, database: str, operation: str, table: str | None, sql: str
    ) -> Aggregate:
        """The fingerprint's aggregate, made the most recent (the lock held)."""
        key = (database, fingerprint)
        found = self._by_key.get(key)
        if found is None:
            found = self._by_key[key] = Aggregate(fingerprint, database, operation, table, sql)
            while len(self._by_key) > self._limit:
                self._by_key.popitem(last=False)
        self._by_key.move_to_end(key)
        return found

    def set_plan(self, database: str, fingerprint: str, plan: Any, summary: str) -> None:
        with self._lock:
            found = self._by_key.get((database, fingerprint))
            if found is not None:
                found.plan, found.plan_summary = plan, summary

    def ranked(self, database: str | None = None) -> list[dict[str, Any]]:
        """By total time spent, the costliest first."""
        with self._lock:
            rows = [a.as_dict() for a in self._by_key.values()]
        if database is not None:
            rows = [r for r in rows if r["database"] == database]
        return sorted(rows, key=lambda r: r["total_ms"], reverse=True)

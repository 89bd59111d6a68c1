"""N+1 findings: the `n_plus_one` records merged by database, fingerprint and call site, so
that the same loop seen in many requests (and, on the sidecar, in many workers) is one row."""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from typing import Any

from exporter.bounded import size_of

ROUTES_KEPT = 3  # distinct routes kept per finding
PIDS_KEPT = 8  # distinct worker pids kept per finding
_TEXT_KEPT = 300  # characters of a route


def _where(site: Any) -> str:
    if isinstance(site, dict):
        return f"{site.get('file')}:{site.get('line')}"
    return "unknown"


class NPlusOneFindings:
    """Bounded: beyond `limit` findings or `max_bytes` the least recently seen are forgotten."""

    def __init__(self, limit: int, max_bytes: int) -> None:
        self._limit, self._max_bytes = limit, max_bytes
        self._rows: OrderedDict[tuple[str, str, str], tuple[dict[str, Any], int]] = OrderedDict()
        self.bytes = 0
        self._lock = threading.Lock()

    def resize(self, limit: int, max_bytes: int) -> None:
        with self._lock:
            self._limit, self._max_bytes = limit, max_bytes
            self._trim()

    def _trim(self) -> None:
        while self._rows and (len(self._rows) > self._limit or self.bytes > self._max_bytes):
            self.bytes -= self._rows.popitem(last=False)[1][1]

    def add(self, record: dict[str, Any]) -> None:
        """An `n_plus_one` record as written (with `pid` when a worker handed it over)."""
        key = (record["database"], record["fingerprint"], _where(record.get("call_site")))
        route = (record.get("context") or {}).get("route")
        pid = record.get("pid")
        with self._lock:
            found = self._rows.get(key)
            if found is None:
                row: dict[str, Any] = {
                    "database": record["database"],
                    "fingerprint": record["fingerprint"],
                    "operation": record.get("operation"),
                    "table": record.get("table"),
                    "sql": record.get("sql"),
                    "call_site": record.get("call_site"),
                    "requests": 0,
                    "repeats": 0,
                    "routes": [],
                    "pids": [],
                    "last_seen": "",
                }
                # Its size once full: the lists grow to their bounds at most.
                size = sys.getsizeof(row) + size_of(row) + (ROUTES_KEPT + PIDS_KEPT) * 64
                self.bytes += size
                found = self._rows[key] = (row, size)
            self._rows.move_to_end(key)
            row = found[0]
            row["requests"] += 1
            row["repeats"] = max(row["repeats"], record.get("repeats") or 0)
            row["last_seen"] = max(row["last_seen"], record["time"])
            if isinstance(route, str) and len(row["routes"]) < ROUTES_KEPT:
                route = route[:_TEXT_KEPT]
                if route not in row["routes"]:
                    row["routes"].append(route)
            if isinstance(pid, int) and pid not in row["pids"] and len(row["pids"]) < PIDS_KEPT:
                row["pids"].append(pid)
            self._trim()

    def ranked(self, database: str | None = None) -> list[dict[str, Any]]:
        """Most requests first, then most repeats in one."""
        with self._lock:
            rows = [dict(row, routes=list(row["routes"]), pids=list(row["pids"]))
                    for row, _ in self._rows.values()]  # fmt: skip
        if database is not None:
            rows = [r for r in rows if r["database"] == database]
        return sorted(rows, key=lambda r: (r["requests"], r["repeats"]), reverse=True)

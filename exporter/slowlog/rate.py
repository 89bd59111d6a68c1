"""At most `records_per_second` slow-query records per fingerprint each second.

In an incident storm (the database degraded, every statement slow) building and writing one
record per statement would cost the application about as much as its statements do. Beyond the
limit a slow statement is still counted (`slow_queries_total`), its time still goes into its
fingerprint's aggregate, and the record not built is counted in
`slow_query_log_rate_limited_total`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from time import monotonic

from exporter.sql import QueryIdentity


@dataclass(slots=True)
class Skipped:
    """Slow statements of one fingerprint that got no record, not yet in its aggregate."""

    database: str
    identity: QueryIdentity
    count: int = 0
    seconds: float = 0.0
    max_seconds: float = 0.0


@dataclass(slots=True)
class _Window:
    skipped: Skipped
    second: int = 0
    records: int = 0


# Fingerprints whose window is kept (those slow in the last second). Past it a new fingerprint
# gets its record unlimited: the queue's bounds still hold, and the windows never grow further.
MAX_WINDOWS = 10_000


class RecordRate:
    def __init__(self, per_second: int) -> None:
        self.per_second = per_second  # 0: no limit
        self._windows: dict[tuple[str, str], _Window] = {}
        self._lock = threading.Lock()

    def admit(self, database: str, identity: QueryIdentity, seconds: float) -> bool:
        """Whether this slow statement gets a record (on the query path: O(1), no I/O)."""
        if not self.per_second:
            return True
        second = int(monotonic())
        key = (database, identity.fingerprint)
        self._lock.acquire()  # not `with`: looking up __enter__/__exit__ costs more than this
        try:
            window = self._windows.get(key)
            if window is None:
                if len(self._windows) >= MAX_WINDOWS:
                    return True
                window = self._windows[key] = _Window(Skipped(database, identity))
            if window.second != second:
                window.second, window.records = second, 0
            if window.records < self.per_second:
                window.records += 1
                return True
            skipped = window.skipped
            skipped.count += 1
            skipped.seconds += seconds
            if seconds > skipped.max_seconds:
                skipped.max_seconds = seconds
            return False
        finally:
            self._lock.release()

    def take_skipped(self) -> list[Skipped]:
        """What was skipped since the last call; forgets fingerprints idle for a second, so
        the windows kept are those of the last second."""
        second = int(monotonic())
        with self._lock:
            taken = [w.skipped for w in self._windows.values() if w.skipped.count]
            self._windows = {
                key: _Window(Skipped(w.skipped.database, w.skipped.identity), w.second, w.records)
                for key, w in self._windows.items()
                if w.second >= second - 1
            }
        return taken

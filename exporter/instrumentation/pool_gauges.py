"""Pool occupancy read from the instrumented engines' pools at scrape time."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.engine import Engine
from sqlalchemy.pool import QueuePool


class PoolGauges(Collector):
    """Pool occupancy read from the instrumented engines' pools at scrape time.

    Reading `QueuePool` counters is exact and costs the query path nothing; engines are held
    weakly, so a garbage-collected engine simply stops being reported. (Checked-out
    connections are counted by events instead, which works for every pool class.)
    """

    def __init__(self) -> None:
        self._engines: weakref.WeakKeyDictionary[Engine, str] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def add(self, engine: Engine, database: str) -> None:
        with self._lock:
            self._engines[engine] = database

    def remove(self, engine: Engine) -> None:
        with self._lock:
            self._engines.pop(engine, None)

    def _pool_stats(self) -> Iterable[tuple[str, int, int, int, int]]:
        with self._lock:
            engines = list(self._engines.items())
        for engine, database in engines:
            pool = engine.pool  # read each time: Engine.dispose() swaps in a new pool
            # Only QueuePool and its async variant keep these counters; other pools are skipped.
            if not isinstance(pool, QueuePool):
                continue
            max_overflow = int(getattr(pool, "_max_overflow", 0))  # no public accessor
            yield database, pool.checkedin(), pool.size(), max_overflow, max(pool.overflow(), 0)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = [
            GaugeMetricFamily(
                "db_connections_idle",
                "Open connections waiting in the application's pool right now.",
                labels=["database"],
            ),
            GaugeMetricFamily(
                "db_pool_size",
                "Connections the pool keeps open (pool_size).",
                labels=["database"],
            ),
            GaugeMetricFamily(
                "db_pool_max_overflow",
                "Connections the pool may open beyond pool_size (max_overflow; -1: unlimited).",
                labels=["database"],
            ),
            GaugeMetricFamily(
                "db_pool_overflow_connections",
                "Connections open beyond pool_size right now (never below 0).",
                labels=["database"],
            ),
        ]
        totals: dict[str, list[int]] = {}
        for database, *values in self._pool_stats():
            sums = totals.setdefault(database, [0] * len(families))
            for i, value in enumerate(values):
                sums[i] += value
        for database, values in sorted(totals.items()):
            for family, value in zip(families, values, strict=True):
                family.add_metric([database], value)
        yield from families

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())

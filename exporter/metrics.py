"""Every metric family db-exporter emits, defined once: name, unit, help text and labels.

Dashboards and alert rules depend on these names (see DESIGN.md); never rename one without a
migration note. prometheus_client appends `_total` to counter names on exposition.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Iterator
from importlib.metadata import PackageNotFoundError, version

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.engine import Engine
from sqlalchemy.pool import QueuePool

# Statement latencies span sub-millisecond point reads to multi-second reports.
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


def package_version() -> str:
    try:
        return version("db-exporter")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


class PoolGauges(Collector):
    """Pool occupancy read from the instrumented engines' pools at scrape time.

    Reading `QueuePool` counters is exact and costs the query path nothing; engines are held
    weakly, so a garbage-collected engine simply stops being reported.
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
            yield database, pool.checkedout(), pool.checkedin(), pool.size(), max_overflow

    def collect(self) -> Iterator[GaugeMetricFamily]:
        active = GaugeMetricFamily(
            "db_connections_active",
            "Connections checked out of the application's pool right now.",
            labels=["database"],
        )
        idle = GaugeMetricFamily(
            "db_connections_idle",
            "Open connections waiting in the application's pool right now.",
            labels=["database"],
        )
        size = GaugeMetricFamily(
            "db_pool_size",
            "Connections the pool keeps open (pool_size).",
            labels=["database"],
        )
        max_overflow = GaugeMetricFamily(
            "db_pool_max_overflow",
            "Connections the pool may open beyond pool_size (max_overflow; -1 means unlimited).",
            labels=["database"],
        )
        totals: dict[str, list[int]] = {}
        for database, *values in self._pool_stats():
            sums = totals.setdefault(database, [0, 0, 0, 0])
            for i, value in enumerate(values):
                sums[i] += value
        for database, (n_active, n_idle, n_size, n_max_overflow) in sorted(totals.items()):
            active.add_metric([database], n_active)
            idle.add_metric([database], n_idle)
            size.add_metric([database], n_size)
            max_overflow.add_metric([database], n_max_overflow)
        yield from (active, idle, size, max_overflow)

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())


class Metrics:
    """The metric families, registered on one registry (a fresh one per test, the global one
    in production so an application that already exposes prometheus_client sees them too)."""

    def __init__(
        self,
        registry: CollectorRegistry = REGISTRY,
        buckets: Iterable[float] = DEFAULT_BUCKETS,
    ) -> None:
        self.registry = registry
        self.query_duration = Histogram(
            "query_duration_seconds",
            "Wall time of each SQL statement, measured around the DBAPI cursor execute.",
            ["database", "operation", "table", "status"],
            buckets=tuple(buckets),
            registry=registry,
        )
        self.pool_overflow = Counter(
            "db_pool_overflow",
            "Connections the pool opened beyond pool_size (overflow events).",
            ["database"],
            registry=registry,
        )
        self.instrumentation_errors = Counter(
            "exporter_instrumentation_errors",
            "Internal failures inside db-exporter's event listeners, by hook. "
            "The application's statement was not affected.",
            ["kind"],
            registry=registry,
        )
        self.db_up = Gauge(
            "db_up",
            "1 when the database answered the exporter's last check, else 0.",
            ["database"],
            registry=registry,
        )
        self.build_info = Gauge(
            "exporter_build_info",
            "Always 1; the labels name the running db-exporter version.",
            ["version"],
            registry=registry,
        )
        self.build_info.labels(package_version()).set(1)
        self.pools = PoolGauges()
        registry.register(self.pools)


_default: Metrics | None = None
_default_lock = threading.Lock()


def default_metrics() -> Metrics:
    """The process-wide metrics on prometheus_client's global registry, created on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Metrics()
        return _default

"""Every metric family db-exporter emits, defined once: name, unit, help text and labels.

Dashboards and alert rules depend on these names (see DESIGN.md); never rename one without a
migration note. prometheus_client appends `_total` to counter names on exposition.

Multiple worker processes: when PROMETHEUS_MULTIPROC_DIR is set (before prometheus_client is
imported), values live in files that one scrape sums over every worker; the gauges below say
how (`multiprocess_mode`). Series read from pools at scrape time (PoolGauges) are per process
and are not part of that sum.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
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
# Waiting for a pooled connection is ~free when one is idle and seconds when the pool is full.
POOL_WAIT_BUCKETS: tuple[float, ...] = (
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
# How long a connection stays checked out: a request's worth up to a long batch job.
POOL_USE_BUCKETS: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0,
)  # fmt: skip
OTHER = "other"


def package_version() -> str:
    try:
        return version("db-exporter")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


@dataclass
class LabelLimits:
    """The most label sets one metric may have; further ones are folded into `table="other"`
    and counted in `exporter_label_overflow_total{metric}`."""

    default: int = 2000
    per_metric: Mapping[str, int] = field(default_factory=dict)

    def cap(self, metric: str) -> int:
        return self.per_metric.get(metric, self.default)


class LabelBudget:
    """Admits label sets for one metric until its cap, then answers with the overflow set.

    Called only when a statement is seen for the first time, never per query.
    """

    def __init__(self, metric: str, metrics: Metrics) -> None:
        self._metric = metric
        self._metrics = metrics
        self._admitted: set[tuple[str, ...]] = set()
        self._lock = threading.Lock()

    def admit(self, labels: tuple[str, ...], table_index: int) -> tuple[str, ...]:
        with self._lock:
            if labels in self._admitted:
                return labels
            if len(self._admitted) < self._metrics.limits.cap(self._metric):
                self._admitted.add(labels)
                return labels
        self._metrics.label_overflow.labels(self._metric).inc()
        folded = (*labels[:table_index], OTHER, *labels[table_index + 1 :])
        with self._lock:
            self._admitted.add(folded)  # the overflow set itself is always allowed
        return folded


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


class Metrics:
    """The metric families, registered on one registry (a fresh one per test, the global one
    in production so an application that already exposes prometheus_client sees them too)."""

    def __init__(
        self,
        registry: CollectorRegistry = REGISTRY,
        buckets: Iterable[float] = DEFAULT_BUCKETS,
        limits: LabelLimits | None = None,
    ) -> None:
        self.registry = registry
        self.limits = limits or LabelLimits()
        database = ["database"]

        # Statements
        self.query_duration = Histogram(
            "query_duration_seconds",
            "Wall time of each SQL statement, measured around the DBAPI cursor execute.",
            ["database", "operation", "table", "status"],
            buckets=tuple(buckets),
            registry=registry,
        )
        self.query_errors = Counter(
            "query_errors",
            "Statements that failed, by the class (first two characters) of their SQLSTATE.",
            ["database", "operation", "sqlstate_class"],
            registry=registry,
        )
        self.query_rows = Counter(
            "query_rows",
            "Rows returned or affected by statements, as the driver reports them "
            "(parameter sets for executemany).",
            ["database", "operation", "table"],
            registry=registry,
        )

        # Connection pool
        self.connections_active = Gauge(
            "db_connections_active",
            "Connections checked out of the application's pool right now.",
            database,
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.pool_overflow = Counter(
            "db_pool_overflow",
            "Connections the pool opened beyond pool_size (overflow events).",
            database,
            registry=registry,
        )
        self.pool_overflow_discarded = Counter(
            "db_pool_overflow_discarded",
            "Overflow connections closed on return because the pool was full.",
            database,
            registry=registry,
        )
        self.pool_checkout_wait = Histogram(
            "db_pool_checkout_wait_seconds",
            "Time to obtain a connection from the pool (waiting, connecting and pre-ping).",
            database,
            buckets=POOL_WAIT_BUCKETS,
            registry=registry,
        )
        self.pool_timeouts = Counter(
            "db_pool_timeouts",
            "Checkouts that gave up after pool_timeout because no connection became free.",
            database,
            registry=registry,
        )
        self.connections_created = Counter(
            "db_connections_created",
            "Database connections the pool opened.",
            database,
            registry=registry,
        )
        self.connections_closed = Counter(
            "db_connections_closed",
            "Database connections the pool closed (recycled, discarded, invalidated, disposed).",
            database,
            registry=registry,
        )
        self.connections_invalidated = Counter(
            "db_connections_invalidated",
            "Connections invalidated after an error that made them unusable (e.g. disconnects).",
            database,
            registry=registry,
        )
        self.connection_create_time = Histogram(
            "db_connection_create_seconds",
            "Time to open a new database connection.",
            database,
            buckets=POOL_WAIT_BUCKETS,
            registry=registry,
        )
        self.connection_use_time = Histogram(
            "db_connection_use_seconds",
            "Time between a connection's checkout and its return to the pool.",
            database,
            buckets=POOL_USE_BUCKETS,
            registry=registry,
        )

        # The exporter itself
        self.instrumentation_errors = Counter(
            "exporter_instrumentation_errors",
            "Internal failures inside db-exporter's event listeners, by hook. "
            "The application's statement was not affected.",
            ["kind"],
            registry=registry,
        )
        self.label_overflow = Counter(
            "exporter_label_overflow",
            'New label sets folded into table="other" because the metric reached its cap.',
            ["metric"],
            registry=registry,
        )
        self.db_up = Gauge(
            "db_up",
            "1 when the database answered the exporter's last check, else 0.",
            database,
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.build_info = Gauge(
            "exporter_build_info",
            "Always 1; the labels name the running db-exporter version.",
            ["version"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.build_info.labels(package_version()).set(1)
        self.pools = PoolGauges()
        registry.register(self.pools)
        self._budgets: dict[str, LabelBudget] = {}
        self._budgets_lock = threading.Lock()
        # Collector runner
        self.collector_duration = Gauge(
            "exporter_collector_duration_seconds",
            "Wall time of the collector's last run against the database.",
            ["collector", "database"],
            registry=registry,
        )
        self.collector_success = Gauge(
            "exporter_collector_success",
            "1 when the collector's last run succeeded, else 0.",
            ["collector", "database"],
            registry=registry,
        )
        self.collector_last_success = Gauge(
            "exporter_collector_last_success_timestamp_seconds",
            "Unix time of the collector's last successful run (0 before the first one).",
            ["collector", "database"],
            registry=registry,
        )

    def budget(self, metric: str) -> LabelBudget:
        """The label-set budget of one metric, shared by every engine using these metrics."""
        with self._budgets_lock:
            budget = self._budgets.get(metric)
            if budget is None:
                budget = self._budgets[metric] = LabelBudget(metric, self)
            return budget


_default: Metrics | None = None
_default_lock = threading.Lock()


def default_metrics() -> Metrics:
    """The process-wide metrics on prometheus_client's global registry, created on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Metrics()
        return _default

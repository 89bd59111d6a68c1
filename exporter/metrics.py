"""Every metric family db-exporter emits, defined once: name, unit, help text and labels.

Dashboards and alert rules depend on these names (see DESIGN.md); never rename one without a
migration note. prometheus_client appends `_total` to counter names on exposition.

Multiple worker processes: when PROMETHEUS_MULTIPROC_DIR is set (before prometheus_client is
imported), values live in files that one scrape sums over every worker; the gauges below say
how (`multiprocess_mode`). Series read from pools at scrape time (PoolGauges) are per process
and are not part of that sum.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Protocol

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar
from prometheus_client.utils import floatToGoString
from prometheus_client.values import ValueClass
from sqlalchemy.engine import Engine
from sqlalchemy.pool import QueuePool

from exporter.inprocess_settings import InstrumentationSettings

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
    and counted in `exporter_label_overflow_total{metric}`. From the config:
    `LabelLimits(s.instrumentation.max_label_sets, s.instrumentation.max_label_sets_per_metric)`.
    """

    default: int = 2000
    per_metric: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: InstrumentationSettings) -> LabelLimits:
        return cls(settings.max_label_sets, dict(settings.max_label_sets_per_metric))

    def cap(self, metric: str) -> int:
        return self.per_metric.get(metric, self.default)


StatementLabels = tuple[str, str, str, str]  # database, operation, table, status


class LabelBudget:
    """Admits label sets for one metric until its cap, then answers with the overflow set
    (the same labels with table="other").

    Called only when a statement is seen for the first time, never per query.
    """

    def __init__(self, metric: str, metrics: Metrics) -> None:
        self._metric = metric
        self._metrics = metrics
        self._admitted: set[StatementLabels] = set()
        self._lock = threading.Lock()

    def admit(self, labels: StatementLabels) -> StatementLabels:
        with self._lock:
            if labels in self._admitted:
                return labels
            if len(self._admitted) < self._metrics.limits.cap(self._metric):
                self._admitted.add(labels)
                return labels
        self._metrics.label_overflow.labels(self._metric).inc()
        folded = (labels[0], labels[1], OTHER, labels[3])
        with self._lock:
            self._admitted.add(folded)  # the overflow set itself is always allowed
        return folded


QUERY_DURATION_HELP = "Wall time of each SQL statement, measured around the DBAPI cursor execute."
QUERY_ROWS_HELP = (
    "Rows returned or affected by statements, as the driver reports them "
    "(parameter sets for executemany)."
)
# Set when PROMETHEUS_MULTIPROC_DIR was set as prometheus_client was imported: values must then
# live in its files, so every series uses prometheus_client's own metric objects.
MULTIPROCESS: bool = bool(getattr(ValueClass, "_multiprocess", False))


ExemplarSource = Callable[[], "dict[str, str] | None"]
# A bucket keeps one exemplar; looking up the current trace for every statement would be
# wasted work (and is the dearest step in an async engine), so each bucket asks at most this
# often.
EXEMPLAR_INTERVAL_SECONDS = 1.0


class StatementSeries(Protocol):
    """Where one label set's statements are recorded."""

    def record(self, seconds: float, rows: int, exemplar: ExemplarSource, ended: float) -> None:
        """`ended`: when the statement ended, as a perf_counter() reading (it paces the
        trace lookups; the caller has one at hand, a wall-clock reading would cost more)."""


class LeanSeries:
    """One label set of `query_duration_seconds` (+ its rows) under a single lock.

    prometheus_client's Histogram.observe takes two locks and walks the buckets in Python;
    measured in a real statement loop that is ~2 us of the ~3 us budget. Here one bisect and
    one lock do it; `StatementFamilies` renders the series at scrape time.
    """

    __slots__ = ("_bounds", "_counts", "_due", "_exemplars", "_lock", "rows", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self._counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self._exemplars: list[Exemplar | None] = [None] * (len(bounds) + 1)
        # When each bucket next looks for a trace, on the perf_counter() clock.
        self._due = [-math.inf] * (len(bounds) + 1)
        self._lock = threading.Lock()
        self.sum = 0.0
        self.rows = 0

    def record(self, seconds: float, rows: int, exemplar: ExemplarSource, ended: float) -> None:
        i = bisect_left(self._bounds, seconds)  # the first bucket with seconds <= bound
        lock = self._lock
        # Not `with lock`: looking up and calling __enter__/__exit__ costs ~2.5x as much.
        lock.acquire()
        try:
            self._counts[i] += 1
            self.sum += seconds
            if rows > 0:
                self.rows += rows
        finally:
            lock.release()
        if ended >= self._due[i]:
            self._due[i] = ended + EXEMPLAR_INTERVAL_SECONDS
            labels = exemplar()
            if labels is not None:
                self._exemplars[i] = Exemplar(labels, seconds, time.time())

    def buckets(self) -> list[tuple[str, float] | tuple[str, float, Exemplar]]:
        with self._lock:
            counts = list(self._counts)
        result: list[tuple[str, float] | tuple[str, float, Exemplar]] = []
        cumulative = 0
        bounds = [*(floatToGoString(b) for b in self._bounds), "+Inf"]  # type: ignore[no-untyped-call]
        for bound, count, exemplar in zip(bounds, counts, self._exemplars, strict=True):
            cumulative += count
            result.append((bound, cumulative, exemplar) if exemplar else (bound, cumulative))
        return result


class PrometheusSeries:
    """The same interface over prometheus_client objects, for multi-process mode."""

    def __init__(self, histogram: Histogram, rows: Counter) -> None:
        self._histogram = histogram
        self._rows = rows

    def record(self, seconds: float, rows: int, exemplar: ExemplarSource, ended: float) -> None:
        self._histogram.observe(seconds)  # multi-process values cannot hold exemplars
        if rows > 0:
            self._rows.inc(rows)


class StatementFamilies(Collector):
    """Renders every LeanSeries as `query_duration_seconds` and `query_rows_total`."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self._series: dict[StatementLabels, LeanSeries] = {}
        self._lock = threading.Lock()

    def series(self, labels: StatementLabels) -> LeanSeries:
        with self._lock:
            found = self._series.get(labels)
            if found is None:
                found = self._series[labels] = LeanSeries(self._bounds)
            return found

    def collect(self) -> Iterator[Metric]:
        duration = HistogramMetricFamily(
            "query_duration_seconds",
            QUERY_DURATION_HELP,
            labels=["database", "operation", "table", "status"],
        )
        rows = CounterMetricFamily(
            "query_rows", QUERY_ROWS_HELP, labels=["database", "operation", "table"]
        )
        with self._lock:
            series = sorted(self._series.items())
        row_totals: dict[tuple[str, str, str], int] = {}
        for labels, one in series:
            duration.add_metric(list(labels), one.buckets(), one.sum)
            key = labels[:3]
            row_totals[key] = row_totals.get(key, 0) + one.rows
        for key, total in row_totals.items():
            rows.add_metric(list(key), total)
        yield duration
        yield rows

    def describe(self) -> Iterator[Metric]:
        return iter(())


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
        self.query_errors = Counter(
            "query_errors",
            "Statements that failed, by the class (first two characters) of their SQLSTATE.",
            ["database", "operation", "sqlstate_class"],
            registry=registry,
        )
        self._bounds = tuple(sorted(buckets))
        self._statements: StatementFamilies | None = None
        if MULTIPROCESS:
            self.query_duration = Histogram(
                "query_duration_seconds",
                QUERY_DURATION_HELP,
                ["database", "operation", "table", "status"],
                buckets=self._bounds,
                registry=registry,
            )
            self.query_rows = Counter(
                "query_rows", QUERY_ROWS_HELP, ["database", "operation", "table"], registry=registry
            )
        else:
            self._statements = StatementFamilies(self._bounds)
            registry.register(self._statements)

        # The slow-query log
        self.slow_queries = Counter(
            "slow_queries",
            "Statements at or above the slow-query threshold.",
            ["database", "operation", "table"],
            registry=registry,
        )
        self.slow_query_log_dropped = Counter(
            "slow_query_log_dropped",
            "Slow-query records dropped because the writer's queue was full.",
            registry=registry,
        )
        self.n_plus_one = Counter(
            "db_n_plus_one",
            "N+1 warnings: the same statement repeated within one request or task.",
            ["database", "table"],
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
        self.collector_leader = Gauge(
            "exporter_collector_leader",
            "1 when this exporter runs the database's database-wide collectors (it holds the "
            "election lock, or election is off), 0 when another exporter does.",
            database,
            registry=registry,
            multiprocess_mode="livemax",
        )

    def statement_series(self, labels: StatementLabels) -> StatementSeries:
        """The series of one (database, operation, table, status) label set."""
        if self._statements is not None:
            return self._statements.series(labels)
        return PrometheusSeries(
            self.query_duration.labels(*labels), self.query_rows.labels(*labels[:3])
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

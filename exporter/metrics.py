"""Every metric family db-exporter emits, defined once: name, unit, help text and labels.

Dashboards and alert rules depend on these names (see DESIGN.md); never rename one without a
migration note. prometheus_client appends `_total` to counter names on exposition.

Multiple worker processes: when PROMETHEUS_MULTIPROC_DIR is set (before prometheus_client is
imported), values live in files that one scrape sums over every worker; the gauges below say
how (`multiprocess_mode`). Series read from pools at scrape time (PoolGauges) are per process
and are not part of that sum.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.values import ValueClass

# The recording machinery lives with the query path that uses it (exporter/instrumentation/).
from exporter.instrumentation.budget import LabelBudget, LabelLimits, StatementLabels
from exporter.instrumentation.pool_gauges import PoolGauges
from exporter.instrumentation.series import (
    Family,
    PrometheusSeries,
    StatementFamilies,
    StatementSeries,
)

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
# Statements per request: none (a route that needs no database) up to an N+1 gone wild.
REQUEST_STATEMENT_BUCKETS: tuple[float, ...] = (
    0, 1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000,
)  # fmt: skip


def package_version() -> str:
    try:
        return version("db-exporter")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


# Recorded by the query path into lean series (or prometheus_client's in multi-process mode).
QUERY_DURATION = Family(
    "query_duration_seconds",
    "Wall time of each SQL statement, measured around the DBAPI cursor execute.",
    ("database", "operation", "table", "status"),
)
QUERY_ROWS = Family(
    "query_rows",
    "Rows returned or affected by statements, as the driver reports them "
    "(parameter sets for executemany).",
    ("database", "operation", "table"),
)
QUERY_ERRORS = Family(
    "query_errors",
    "Statements that failed, by the class (first two characters) of their SQLSTATE.",
    ("database", "operation", "sqlstate_class"),
)
SLOW_QUERIES = Family(
    "slow_queries",
    "Statements at or above the slow-query threshold.",
    ("database", "operation", "table"),
)
N_PLUS_ONE = Family(
    "db_n_plus_one",
    "N+1 warnings: the same statement repeated within one request or task.",
    ("database", "table"),
)
# Recorded once per request by the web-framework middlewares (exporter/integrations/).
REQUEST_STATEMENTS = Family(
    "db_request_statements",
    "Statements each request ran, by route template (every database, failed ones included).",
    ("route",),
)
REQUEST_DURATION = Family(
    "db_request_duration_seconds",
    "Wall time each request spent in statements (the sum of their query_duration_seconds), "
    "by route template.",
    ("route",),
)
# The labels of every capped metric (exporter/inprocess_settings.py: CAPPED_METRICS), by the
# name it is exposed and capped under.
CAPPED_LABELS: dict[str, tuple[str, ...]] = {
    "query_duration_seconds": QUERY_DURATION.labels,
    "query_errors_total": QUERY_ERRORS.labels,
    "slow_queries_total": SLOW_QUERIES.labels,
    "db_n_plus_one_total": N_PLUS_ONE.labels,
    "db_request_statements": REQUEST_STATEMENTS.labels,
    "db_request_duration_seconds": REQUEST_DURATION.labels,
}
# Set when PROMETHEUS_MULTIPROC_DIR was set as prometheus_client was imported: values must then
# live in its files, so every series uses prometheus_client's own metric objects.
MULTIPROCESS: bool = bool(getattr(ValueClass, "_multiprocess", False))


def _hold_alive_lock() -> None:
    """Tell the scraping side that this process's files are live (exporter.multiprocess)."""
    from exporter.multiprocess import hold_alive_lock

    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    try:
        if directory:
            hold_alive_lock(directory)
    except OSError as exc:  # its files are then never folded; the application goes on
        logging.getLogger("exporter.multiprocess").warning(
            "multi-process mode: cannot mark this process alive: %s", exc
        )


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
        if MULTIPROCESS:
            _hold_alive_lock()
        database = ["database"]

        # Statements
        e = QUERY_ERRORS
        self.query_errors = Counter(e.name, e.help, e.labels, registry=registry)
        self._bounds = tuple(sorted(buckets))
        self._statements: StatementFamilies | None = None
        if MULTIPROCESS:
            d, r = QUERY_DURATION, QUERY_ROWS
            self.query_duration = Histogram(
                d.name, d.help, d.labels, buckets=self._bounds, registry=registry
            )
            self.query_rows = Counter(r.name, r.help, r.labels, registry=registry)
        else:
            self._statements = StatementFamilies(self._bounds, QUERY_DURATION, QUERY_ROWS)
            registry.register(self._statements)

        # The slow-query log
        s = SLOW_QUERIES
        self.slow_queries = Counter(s.name, s.help, s.labels, registry=registry)
        self.slow_query_log_dropped = Counter(
            "slow_query_log_dropped",
            "Slow-query records dropped because the writer's queue was full.",
            registry=registry,
        )
        self.slow_query_log_rate_limited = Counter(
            "slow_query_log_rate_limited",
            "Slow statements that got no slow-query record because their fingerprint had "
            "records_per_second records already (still counted in slow_queries_total).",
            registry=registry,
        )
        self.slow_query_handover_dropped = Counter(
            "slow_query_handover_dropped",
            "Slow-query records a worker could not hand over to the sidecar (the hand-over "
            "directory full or not writable, or a record larger than a segment).",
            registry=registry,
        )
        self.slow_query_handover_skipped = Counter(
            "slow_query_handover_skipped",
            "Lines of workers' hand-over files the sidecar skipped: corrupt (not a record) or "
            "torn (a line cut short by a worker that ended while writing it).",
            ("reason",),
            registry=registry,
        )
        n = N_PLUS_ONE
        self.n_plus_one = Counter(n.name, n.help, n.labels, registry=registry)

        # Requests (with a web-framework middleware)
        r = REQUEST_STATEMENTS
        self.request_statements = Histogram(
            r.name, r.help, r.labels, buckets=REQUEST_STATEMENT_BUCKETS, registry=registry
        )
        r = REQUEST_DURATION
        self.request_duration = Histogram(
            r.name, r.help, r.labels, buckets=self._bounds, registry=registry
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
            "Label sets folded into other (table, sqlstate_class or route) because the metric "
            "reached its cap, each counted once.",
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
                budget = self._budgets[metric] = LabelBudget(metric, CAPPED_LABELS[metric], self)
            return budget


_default: Metrics | None = None
_default_lock = threading.Lock()


def default_metrics() -> Metrics:
    """The process-wide metrics on prometheus_client's global registry, created on first use."""
    global _default
    if _default is not None:  # set once and never replaced: read without the lock
        return _default
    with _default_lock:
        if _default is None:
            _default = Metrics()
        return _default

#!/usr/bin/env python3
"""Writes the Grafana dashboards in this folder: `python3 dashboards/build.py`.

The dashboards are data, and every panel needs the same things (the datasource variable, a
unit, a description, a place on the grid), so they are written from the short definitions
below rather than edited by hand. `tests/test_dashboards.py` fails when a JSON file differs
from what this script writes, so edit here and run it again.

Every expression uses only series that db-exporter emits (README, "Metrics"), filters on the
`job`, `instance` and `database` variables, applies `rate()`/`increase()` only to counters and
`histogram_quantile()` only to `rate()`s of `_bucket` series summed by `le`. The end-to-end test
(`tests/test_stack_e2e.py`) evaluates each of them against a real Prometheus scraping the demo
and requires data from every one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SCHEMA_VERSION = 39  # Grafana 10.3 to 11.x; later versions migrate it on load
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

# Label filters. Every series of a configured database, application-side and server-side,
# carries `database` (the config's logical name), so panels select and join on it; the `pg_*`
# series also carry `datname`, the database's real name on the server.
APP = 'job=~"$job", instance=~"$instance", database=~"$database"'
PG = APP
PROC = 'job=~"$job", instance=~"$instance"'
RATE = "$__rate_interval"
# Collectors sample every 30-60 s: a shorter rate window shows steps, not rates.
COLLECTOR_INTERVAL = "2m"


@dataclass
class Target:
    expr: str
    legend: str = ""
    instant: bool = False
    table: bool = False


@dataclass
class Panel:
    title: str
    description: str
    targets: list[Target]
    kind: str = "timeseries"
    unit: str = "short"
    width: int = 12
    height: int = 8
    interval: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    mappings: list[dict[str, Any]] = field(default_factory=list)
    thresholds: list[tuple[float | None, str]] | None = None
    overrides: list[dict[str, Any]] = field(default_factory=list)
    # Titles of panels of the same dashboard this one links to (Grafana's panel links).
    see_also: list[str] = field(default_factory=list)
    transformations: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Dashboard:
    uid: str
    title: str
    description: str
    file: str
    database_query: str
    panels: list[Panel]
    tags: list[str] = field(default_factory=lambda: ["db-exporter", "postgresql", "sqlalchemy"])


UP_DOWN = [
    {
        "type": "value",
        "options": {
            "0": {"text": "down", "color": "red", "index": 0},
            "1": {"text": "up", "color": "green", "index": 1},
        },
    }
]


def quantile(q: float, metric: str, by: str, selector: str = APP) -> str:
    return (
        f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket{{{selector}}}[{RATE}])))"
    )


OVERVIEW = Dashboard(
    uid="db-exporter-overview",
    title="db-exporter / Overview",
    description="Statement throughput, latency, errors and slow queries of SQLAlchemy "
    "applications instrumented by db-exporter, with database and collector health.",
    file="overview.json",
    database_query=f'label_values({{__name__=~"db_up|query_duration_seconds_count", {PROC}}}, '
    "database)",
    panels=[
        Panel(
            "Database up",
            "1 when the database answered the exporter's last check (db_up). Down means the "
            "exporter cannot connect or run SELECT 1 within check_timeout_seconds.",
            [Target(f"min by (database) (db_up{{{APP}}})", "{{database}}")],
            kind="stat",
            unit="none",
            width=4,
            height=4,
            mappings=UP_DOWN,
            thresholds=[(None, "red"), (1, "green")],
        ),
        Panel(
            "Failing collectors",
            "Database-side collectors whose last run failed (exporter_collector_success 0), per "
            "database. 0 is healthy; see the Collector health panels below for which one.",
            [
                Target(
                    f"sum by (database) (1 - exporter_collector_success{{{APP}}})",
                    "{{database}}",
                )
            ],
            kind="stat",
            unit="none",
            width=4,
            height=4,
            thresholds=[(None, "green"), (1, "red")],
        ),
        Panel(
            "Statements per second",
            "Statements executed per second through the instrumented engines (all operations, "
            "tables and statuses).",
            [Target(f"sum(rate(query_duration_seconds_count{{{APP}}}[{RATE}]))", "statements")],
            kind="stat",
            unit="ops",
            width=4,
            height=4,
        ),
        Panel(
            "Statement p95",
            "95th percentile of statement wall time over every operation and table. The alert "
            "fires when one operation and table stays above 100 ms.",
            [Target(quantile(0.95, "query_duration_seconds", "database"), "{{database}}")],
            kind="stat",
            unit="s",
            width=4,
            height=4,
            thresholds=[(None, "green"), (0.1, "orange"), (0.5, "red")],
        ),
        Panel(
            "Failed statements",
            'Share of statements that failed (status="error"). The SQLSTATE classes are in '
            '"Errors by SQLSTATE class".',
            [
                Target(
                    f'sum by (database) (rate(query_duration_seconds_count{{{APP}, status="error"}}'
                    f"[{RATE}])) / sum by (database) "
                    f"(rate(query_duration_seconds_count{{{APP}}}[{RATE}]))",
                    "{{database}}",
                )
            ],
            kind="stat",
            unit="percentunit",
            width=4,
            height=4,
            thresholds=[(None, "green"), (0.01, "orange"), (0.05, "red")],
        ),
        Panel(
            "Slow queries per second",
            "Statements at or above the slow-query threshold (slowlog threshold_ms, 100 ms by "
            "default) per second. The Slow queries dashboard breaks them down.",
            [Target(f"sum(rate(slow_queries_total{{{APP}}}[{RATE}]))", "slow")],
            kind="stat",
            unit="ops",
            width=4,
            height=4,
        ),
        Panel(
            "Throughput by operation and table",
            "Statements per second by operation (first SQL keyword) and primary table. A new "
            "line or a step usually follows a deploy or a new job.",
            [
                Target(
                    "sum by (database, operation, table) "
                    f"(rate(query_duration_seconds_count{{{APP}}}[{RATE}]))",
                    "{{operation}} {{table}} ({{database}})",
                )
            ],
            unit="ops",
        ),
        Panel(
            "Errors by SQLSTATE class",
            "Failed statements per second by SQLSTATE class: 23 integrity (unique, foreign key, "
            "check), 40 rollback (deadlock, serialization), 57 cancelled (statement_timeout), "
            "08 connection, 53 resources, 42 syntax or missing object.",
            [
                Target(
                    "sum by (database, operation, sqlstate_class) "
                    f"(rate(query_errors_total{{{APP}}}[{RATE}]))",
                    "class {{sqlstate_class}} {{operation}} ({{database}})",
                )
            ],
            unit="ops",
        ),
        *(
            Panel(
                f"Latency p{label} by operation and table",
                f"{label}th percentile of statement wall time by operation and table, from the "
                "query_duration_seconds histogram (measured around the DBAPI execute; with "
                "asyncpg it includes fetching the rows).",
                [
                    Target(
                        quantile(q, "query_duration_seconds", "database, operation, table"),
                        "{{operation}} {{table}} ({{database}})",
                    )
                ],
                unit="s",
                width=8,
            )
            for q, label in ((0.5, "50"), (0.95, "95"), (0.99, "99"))
        ),
        Panel(
            "Slow queries by operation and table",
            "Slow statements per second by operation and table. Open the exporter's / page "
            "(link on the Slow queries dashboard) for the statements and their call sites.",
            [
                Target(
                    "sum by (database, operation, table) "
                    f"(rate(slow_queries_total{{{APP}}}[{RATE}]))",
                    "{{operation}} {{table}} ({{database}})",
                )
            ],
            unit="ops",
        ),
        Panel(
            "Collector health",
            "1 when the collector's last run succeeded. A collector at 0 while its database is up "
            "failed on its own (statement or lock timeout, missing privilege): the exporter "
            "logs why.",
            [
                Target(
                    f"min by (database, collector) (exporter_collector_success{{{APP}}})",
                    "{{collector}} ({{database}})",
                )
            ],
            unit="none",
            width=6,
            mappings=UP_DOWN,
        ),
        Panel(
            "Collector run time",
            "Wall time of each collector's last run. Runs close to timeout_seconds are about "
            "to fail; a growing time follows a growing number of tables or indexes.",
            [
                Target(
                    f"max by (database, collector) (exporter_collector_duration_seconds{{{APP}}})",
                    "{{collector}} ({{database}})",
                )
            ],
            unit="s",
            width=6,
        ),
    ],
)

# The README's leak comparison ("Spotting a connection leak"), as the alert makes it: every
# connection the server counts for the application, minus what its pools know about.
_SERVER_SIDE = f"sum by (database) (pg_stat_activity_application_connections{{{PG}}})"
_CLIENT_SIDE = f"sum by (database) (db_connections_active{{{APP}}} + db_connections_idle{{{APP}}})"

POOL = Dashboard(
    uid="db-exporter-pool",
    title="db-exporter / Connection pool",
    description="The SQLAlchemy connection pool of each instrumented engine: occupancy, "
    "overflow, checkout waits and timeouts, connection churn, and the server's own count.",
    file="connection-pool.json",
    database_query=f'label_values({{__name__=~"db_up|db_connections_active", {PROC}}}, database)',
    panels=[
        Panel(
            "Pool connections",
            "Connections checked out (active) and waiting in the pool (idle), against the pool's "
            "size and its ceiling (pool_size + max_overflow; absent for an unlimited overflow). "
            "Active at the ceiling means requests queue for a connection.",
            [
                Target(
                    f"sum by (instance, database) (db_connections_active{{{APP}}})",
                    "active {{instance}} {{database}}",
                ),
                Target(
                    f"sum by (instance, database) (db_connections_idle{{{APP}}})",
                    "idle {{instance}} {{database}}",
                ),
                Target(
                    f"sum by (instance, database) (db_pool_size{{{APP}}})",
                    "pool_size {{instance}} {{database}}",
                ),
                Target(
                    f"sum by (instance, database) (db_pool_size{{{APP}}} "
                    f"+ (db_pool_max_overflow{{{APP}}} >= 0))",
                    "ceiling {{instance}} {{database}}",
                ),
            ],
            unit="short",
            width=16,
        ),
        Panel(
            "Pool utilisation",
            "Checked-out connections as a share of pool_size + max_overflow, per process. The "
            "pool-saturated alert fires at 90% for 5 minutes.",
            [
                Target(
                    f"max by (instance, database) (db_connections_active{{{APP}}} "
                    f"/ (db_pool_size{{{APP}}} + (db_pool_max_overflow{{{APP}}} >= 0)))",
                    "{{instance}} {{database}}",
                )
            ],
            kind="gauge",
            unit="percentunit",
            width=8,
            thresholds=[(None, "green"), (0.75, "orange"), (0.9, "red")],
        ),
        Panel(
            "Overflow events",
            "Connections opened beyond pool_size per second (overflow events), and overflow "
            "connections closed on return because the pool was full. Steady overflow means "
            "pool_size is below the usual concurrency.",
            [
                Target(
                    f"sum by (database) (rate(db_pool_overflow_total{{{APP}}}[{RATE}]))",
                    "opened beyond pool_size ({{database}})",
                ),
                Target(
                    f"sum by (database) (rate(db_pool_overflow_discarded_total{{{APP}}}[{RATE}]))",
                    "closed on return ({{database}})",
                ),
            ],
            unit="ops",
            width=8,
        ),
        Panel(
            "Overflow connections open",
            "Connections open beyond pool_size right now.",
            [
                Target(
                    f"sum by (instance, database) (db_pool_overflow_connections{{{APP}}})",
                    "{{instance}} {{database}}",
                )
            ],
            unit="short",
            width=8,
        ),
        Panel(
            "Checkout wait",
            "Time to get a connection from the pool (waiting for a free one, connecting, "
            "pre-ping), timed-out waits included: p95 and p99. Milliseconds are normal; "
            "seconds mean the pool is exhausted.",
            [
                Target(
                    quantile(0.95, "db_pool_checkout_wait_seconds", "database"),
                    "p95 ({{database}})",
                ),
                Target(
                    quantile(0.99, "db_pool_checkout_wait_seconds", "database"),
                    "p99 ({{database}})",
                ),
            ],
            unit="s",
            width=8,
        ),
        Panel(
            "Checkout timeouts",
            "Checkouts per second that gave up after pool_timeout: each one is a request that "
            "failed with sqlalchemy.exc.TimeoutError.",
            [
                Target(
                    f"sum by (database) (rate(db_pool_timeouts_total{{{APP}}}[{RATE}]))",
                    "{{database}}",
                )
            ],
            unit="ops",
            width=8,
            thresholds=[(None, "green"), (0.001, "red")],
        ),
        Panel(
            "Server-side and client-side connections",
            "Backends connected to the database as PostgreSQL counts them (every client, the "
            "exporter's own connection included) beside the connections the instrumented pools "
            "hold. Server-side growing while the pools stay flat points at connections no pool "
            "owns any more (a leak) or at another client.",
            [
                Target(
                    f"sum by (database) (pg_stat_database_numbackends{{{PG}}})",
                    "server: backends on {{database}}",
                ),
                Target(
                    f"sum by (database) (db_connections_active{{{APP}}} "
                    f"+ db_connections_idle{{{APP}}})",
                    "client: pooled connections of {{database}}",
                ),
            ],
            unit="short",
            width=8,
        ),
        Panel(
            "Connection churn",
            "Connections the pools opened, closed (recycled, discarded, invalidated, disposed) and "
            "invalidated after an error, per second. Invalidations follow disconnects or server "
            "restarts.",
            [
                Target(
                    f"sum by (database) (rate(db_connections_created_total{{{APP}}}[{RATE}]))",
                    "opened ({{database}})",
                ),
                Target(
                    f"sum by (database) (rate(db_connections_closed_total{{{APP}}}[{RATE}]))",
                    "closed ({{database}})",
                ),
                Target(
                    f"sum by (database) (rate(db_connections_invalidated_total{{{APP}}}[{RATE}]))",
                    "invalidated ({{database}})",
                ),
            ],
            unit="ops",
            width=8,
        ),
        Panel(
            "Connection open and hold times",
            "p95 time to open a new connection (network, TLS, authentication) and p95 time a "
            "connection stays checked out (a request's or a job's worth of work).",
            [
                Target(
                    quantile(0.95, "db_connection_create_seconds", "database"),
                    "open p95 ({{database}})",
                ),
                Target(
                    quantile(0.95, "db_connection_use_seconds", "database"),
                    "held p95 ({{database}})",
                ),
            ],
            unit="s",
            width=8,
        ),
        Panel(
            "Server-side vs client-side connections per application",
            "Connections the server counts for the application's application_name (activity "
            "collector, collectors.activity.application_name) beside the connections its pools "
            "hold (active + idle, summed over its processes), and the difference. The "
            "difference stays at 0; one that keeps growing is connections no pool owns any more "
            "(the connection-leak alert fires after 15 minutes above 0).",
            [
                Target(
                    "sum by (database, application_name) "
                    f"(pg_stat_activity_application_connections{{{PG}}})",
                    "server: {{application_name}} on {{database}}",
                ),
                Target(
                    f"sum by (database) (db_connections_active{{{APP}}} "
                    f"+ db_connections_idle{{{APP}}})",
                    "client: pools of {{database}}",
                ),
                Target(
                    f"{_SERVER_SIDE} - on (database) {_CLIENT_SIDE}",
                    "not in a pool: {{database}}",
                ),
            ],
            unit="short",
            width=8,
        ),
    ],
)

# One table for the indexes worth a second look: the reason is a label, the value the size.
_INDEX_KEY = "job, instance, database, schemaname, relname, indexrelname"
_FLAGGED = " or ".join(
    f'label_replace({flag}{{{PG}}} == 1, "reason", "{reason}", "", "") '
    f"* on ({_INDEX_KEY}) group_left () pg_index_size_bytes{{{PG}}}"
    for flag, reason in (
        ("pg_index_unused", "unused"),
        ("pg_index_invalid", "invalid"),
        ("pg_index_duplicate", "duplicate"),
    )
)

INDEXES = Dashboard(
    uid="db-exporter-indexes-tables",
    title="db-exporter / Indexes and tables",
    description="Per-index and per-table statistics from the exporter's indexes and tables "
    "collectors: indexes worth a look, scans, sequential vs index scans, dead rows, vacuum age "
    "and sizes.",
    file="indexes-and-tables.json",
    database_query="label_values(exporter_collector_success"
    f'{{collector=~"indexes|tables", {PROC}}}, database)',
    panels=[
        Panel(
            "Indexes worth a look",
            "Unused candidates (no scans since the statistics reset, not backing a constraint, at "
            "least unused_min_size_bytes), invalid indexes (a failed CREATE INDEX CONCURRENTLY) "
            "and duplicates (same definition as duplicate_of), with their size. Read unused "
            'together with "Statistics window": no scans in an hour mean little.',
            [Target(_FLAGGED, instant=True, table=True)],
            kind="table",
            unit="bytes",
            width=16,
            transformations=[
                {
                    "id": "organize",
                    "options": {
                        "excludeByName": {"Time": True, "__name__": True},
                        "renameByName": {"Value": "size"},
                        "indexByName": {
                            "reason": 0,
                            "database": 1,
                            "schemaname": 2,
                            "relname": 3,
                            "indexrelname": 4,
                            "duplicate_of": 5,
                            "Value": 6,
                        },
                    },
                }
            ],
        ),
        Panel(
            "Statistics window",
            'How long the statistics behind "no scans" have been accumulating (since the last '
            "statistics reset, or at least since the server started). Drop an unused index only "
            "after this covers your slowest cycle (month-end jobs, reports).",
            [Target(f"max by (database) (pg_index_stats_age_seconds{{{PG}}})", "{{database}}")],
            kind="stat",
            unit="s",
            width=4,
        ),
        Panel(
            "Indexes left out by the cap",
            "Indexes without per-index series because of max_index_series (flagged indexes are "
            "always kept).",
            [Target(f"sum by (database) (pg_index_series_omitted{{{PG}}})", "{{database}}")],
            kind="stat",
            unit="short",
            width=4,
        ),
        Panel(
            "Index scans by index",
            "Index scans started per second on each index. An index that stays at zero here for "
            "weeks is a candidate for removal.",
            [
                Target(
                    "sum by (database, relname, indexrelname) "
                    f"(rate(pg_stat_user_indexes_idx_scan_total{{{PG}}}[{RATE}]))",
                    "{{relname}}.{{indexrelname}} ({{database}})",
                )
            ],
            unit="ops",
            interval=COLLECTOR_INTERVAL,
        ),
        Panel(
            "Index sizes and scans",
            "Every index with per-index series: its size and the scans counted since the "
            "statistics reset.",
            [
                Target(f"pg_index_size_bytes{{{PG}}}", instant=True, table=True),
                Target(f"pg_stat_user_indexes_idx_scan_total{{{PG}}}", instant=True, table=True),
            ],
            kind="table",
            unit="bytes",
            transformations=[
                {"id": "merge", "options": {}},
                {
                    "id": "organize",
                    "options": {
                        "excludeByName": {"Time": True, "job": True, "instance": True},
                        "renameByName": {"Value #A": "size", "Value #B": "scans"},
                    },
                },
            ],
            overrides=[
                {
                    "matcher": {"id": "byName", "options": "scans"},
                    "properties": [{"id": "unit", "value": "short"}],
                }
            ],
        ),
        Panel(
            "Sequential and index scans by table",
            "Sequential and index scans started per second on each table. Many sequential scans "
            "on a large table usually mean a missing index.",
            [
                Target(
                    "sum by (database, relname) "
                    f"(rate(pg_stat_user_tables_seq_scan_total{{{PG}}}[{RATE}]))",
                    "sequential {{relname}} ({{database}})",
                ),
                Target(
                    "sum by (database, relname) "
                    f"(rate(pg_stat_user_tables_idx_scan_total{{{PG}}}[{RATE}]))",
                    "index {{relname}} ({{database}})",
                ),
            ],
            unit="ops",
            interval=COLLECTOR_INTERVAL,
        ),
        Panel(
            "Dead rows by table",
            "Dead row versions waiting for vacuum. A number that keeps growing means autovacuum "
            "cannot keep up or is blocked by a long transaction.",
            [
                Target(
                    f"sum by (database, relname) (pg_stat_user_tables_n_dead_tup{{{PG}}})",
                    "{{relname}} ({{database}})",
                )
            ],
            unit="short",
        ),
        Panel(
            "Dead-row share by table",
            "Dead rows as a share of all rows (live + dead). Autovacuum starts at 20% by default "
            "(autovacuum_vacuum_scale_factor).",
            [
                Target(
                    f"sum by (database, relname) (pg_stat_user_tables_n_dead_tup{{{PG}}}) "
                    "/ clamp_min(sum by (database, relname) "
                    f"(pg_stat_user_tables_n_live_tup{{{PG}}} "
                    f"+ pg_stat_user_tables_n_dead_tup{{{PG}}}), 1)",
                    "{{relname}} ({{database}})",
                )
            ],
            unit="percentunit",
        ),
        Panel(
            "Time since last vacuum",
            "Time since each table was last vacuumed (manual or autovacuum). Tables never "
            "vacuumed since the statistics reset are not listed; see Dead rows for them.",
            [
                Target(
                    "time() - max by (database, schemaname, relname) ("
                    '{__name__=~"pg_stat_user_tables_last_(auto)?vacuum_timestamp_seconds", '
                    f"{PG}}} > 0)",
                    instant=True,
                    table=True,
                )
            ],
            kind="table",
            unit="s",
            transformations=[
                {
                    "id": "organize",
                    "options": {
                        "excludeByName": {"Time": True},
                        "renameByName": {"Value": "since last vacuum"},
                    },
                },
                {"id": "sortBy", "options": {"sort": [{"field": "since last vacuum"}]}},
            ],
        ),
        Panel(
            "Table sizes",
            "On-disk size of each table: heap, indexes and TOAST together.",
            [
                Target(
                    "sum by (database, relname) "
                    f"(pg_table_size_bytes{{{PG}}} + pg_table_indexes_size_bytes{{{PG}}} "
                    f"+ pg_table_toast_size_bytes{{{PG}}})",
                    "{{relname}} ({{database}})",
                )
            ],
            unit="bytes",
        ),
        Panel(
            "Migrations pending",
            "Alembic revisions between the database's alembic_version and the head of the "
            "application's scripts (migrations collector; absent while it is off). Anything "
            "above 0 for long means a deploy ran without its migration; the alert waits 30 "
            "minutes.",
            [Target(f"max by (database) (db_migrations_pending{{{PG}}})", "{{database}}")],
            kind="stat",
            unit="short",
            width=6,
            thresholds=[(None, "green"), (1, "orange")],
        ),
        Panel(
            "Schema drift",
            "Differences Alembic's compare_metadata finds between the ORM models and the "
            "database (tables, columns, types, indexes; tables the models do not declare "
            "count too), and indexes the models declare that the database lacks. 0 when "
            "the database matches the models.",
            [
                Target(
                    f"max by (database) (db_schema_drift_differences{{{PG}}})",
                    "differences {{database}}",
                ),
                Target(
                    f"max by (database) (db_schema_drift_missing_indexes{{{PG}}})",
                    "missing indexes {{database}}",
                ),
            ],
            kind="stat",
            unit="short",
            width=6,
            thresholds=[(None, "green"), (1, "orange")],
        ),
    ],
)

# The statements with the most execution time in the dashboard's range (pg_stat_statements,
# statements collector); the other columns are restricted to the same statements.
_TOP_STATEMENTS = (
    "topk(10, sum by (database, queryid) "
    f"(increase(pg_stat_statements_seconds_total{{{PG}}}[$__range])))"
)


def _of_top_statements(expr: str) -> str:
    return f"{expr} and on (database, queryid) {_TOP_STATEMENTS}"


STATEMENTS_PER_REQUEST = "Statements per request by route"

SLOW = Dashboard(
    uid="db-exporter-slow-queries",
    title="db-exporter / Slow queries",
    description="Statements at or above the slow-query threshold: where they happen, how many, "
    "and a link to each exporter's / page with the statements and their call sites.",
    file="slow-queries.json",
    database_query=f'label_values({{__name__=~"db_up|query_duration_seconds_count", {PROC}}}, '
    "database)",
    panels=[
        Panel(
            "Slow queries by operation and table",
            "Slow statements per second by operation and primary table.",
            [
                Target(
                    "sum by (database, operation, table) "
                    f"(rate(slow_queries_total{{{APP}}}[{RATE}]))",
                    "{{operation}} {{table}} ({{database}})",
                )
            ],
            unit="ops",
            width=16,
        ),
        Panel(
            "Share of statements that are slow",
            "Slow statements as a share of all statements, per database.",
            [
                Target(
                    f"sum by (database) (rate(slow_queries_total{{{APP}}}[{RATE}])) "
                    "/ sum by (database) "
                    f"(rate(query_duration_seconds_count{{{APP}}}[{RATE}]))",
                    "{{database}}",
                )
            ],
            kind="stat",
            unit="percentunit",
            width=8,
            thresholds=[(None, "green"), (0.01, "orange"), (0.05, "red")],
        ),
        Panel(
            "Slow queries in the time range",
            "Slow statements over the dashboard's time range, most first.",
            [
                Target(
                    "sort_desc(sum by (database, operation, table) "
                    f"(increase(slow_queries_total{{{APP}}}[$__range])))",
                    "{{operation}} {{table}} ({{database}})",
                    instant=True,
                )
            ],
            kind="bargauge",
            unit="short",
            options={"orientation": "horizontal", "displayMode": "gradient"},
        ),
        Panel(
            "Latency p99 where slow queries happen",
            "p99 statement time of the operations and tables that had slow statements in the "
            "window: is it a few outliers or the whole distribution?",
            [
                Target(
                    quantile(0.99, "query_duration_seconds", "database, operation, table")
                    + " and on (database, operation, table) sum by (database, operation, table) "
                    f"(increase(slow_queries_total{{{APP}}}[{RATE}]) > 0)",
                    "{{operation}} {{table}} ({{database}})",
                )
            ],
            unit="s",
        ),
        Panel(
            "Top statements by execution time (pg_stat_statements)",
            "The 10 statements of the database that spent the most execution time in the "
            "dashboard's range, from pg_stat_statements (statements collector), with their "
            "calls and mean time. Only the query id is exported, never the text: look it up "
            "with SELECT query FROM pg_stat_statements WHERE queryid = <id>. Empty when the "
            "extension is not installed or not in shared_preload_libraries "
            "(pg_stat_statements_available is then 0 and the exporter logs why).",
            [
                Target(_TOP_STATEMENTS, instant=True, table=True),
                Target(
                    _of_top_statements(
                        "sum by (database, queryid) "
                        f"(increase(pg_stat_statements_calls_total{{{PG}}}[$__range]))"
                    ),
                    instant=True,
                    table=True,
                ),
                Target(
                    _of_top_statements(
                        f"max by (database, queryid) (pg_stat_statements_mean_seconds{{{PG}}})"
                    ),
                    instant=True,
                    table=True,
                ),
            ],
            kind="table",
            unit="s",
            width=24,
            transformations=[
                {"id": "merge", "options": {}},
                {
                    "id": "organize",
                    "options": {
                        "excludeByName": {"Time": True},
                        "renameByName": {
                            "Value #A": "execution time",
                            "Value #B": "calls",
                            "Value #C": "mean time",
                        },
                        "indexByName": {
                            "database": 0,
                            "queryid": 1,
                            "Value #A": 2,
                            "Value #B": 3,
                            "Value #C": 4,
                        },
                    },
                },
                {
                    "id": "sortBy",
                    "options": {"sort": [{"field": "execution time", "desc": True}]},
                },
            ],
            overrides=[
                {
                    "matcher": {"id": "byName", "options": "calls"},
                    "properties": [{"id": "unit", "value": "short"}],
                }
            ],
        ),
        Panel(
            "N+1 warnings by table",
            "N+1 warnings per second by table: a request or task ran the same SELECT "
            "n_plus_one_threshold times (10 by default). Each is one slow-query log record "
            "(kind n_plus_one) naming the call site and context; the N+1 alert fires above 10 "
            "in 10 minutes for one table. The routes behind them: Statements per request by "
            "route (the panel link).",
            [
                Target(
                    f"sum by (database, table) (rate(db_n_plus_one_total{{{APP}}}[{RATE}]))",
                    "{{table}} ({{database}})",
                )
            ],
            unit="ops",
            see_also=[STATEMENTS_PER_REQUEST],
        ),
        Panel(
            STATEMENTS_PER_REQUEST,
            "The 10 routes whose requests ran the most statements on average over the "
            "dashboard's range (db_request_statements, from the web-framework middleware; "
            "every database, so the database filter does not apply). A route far above the "
            "others is where N+1 loads and chatty loops live.",
            [
                Target(
                    "topk(10, sum by (route) "
                    f"(increase(db_request_statements_sum{{{PROC}}}[$__range])) / sum by (route) "
                    f"(increase(db_request_statements_count{{{PROC}}}[$__range])))",
                    "{{route}}",
                    instant=True,
                )
            ],
            kind="bargauge",
            unit="short",
            options={"orientation": "horizontal", "displayMode": "gradient"},
        ),
        Panel(
            "Database time per request by route (p95)",
            "95th percentile of the wall time a request spent in statements, for the 10 "
            "routes where it is highest (db_request_duration_seconds; every database).",
            [
                Target(
                    "topk(10, "
                    + quantile(0.95, "db_request_duration_seconds", "route", selector=PROC)
                    + ")",
                    "{{route}}",
                )
            ],
            unit="s",
            width=16,
        ),
        Panel(
            "Slow-query records dropped",
            "Records dropped per second because the slow-query log's writer queue was full "
            "(slow_queries.queue_size). Counted, never silent; anything above zero means the "
            "log is incomplete.",
            [
                Target(
                    f"sum by (instance) (rate(slow_query_log_dropped_total{{{PROC}}}[{RATE}]))",
                    "{{instance}}",
                )
            ],
            unit="ops",
            width=8,
            thresholds=[(None, "green"), (0.001, "red")],
        ),
        Panel(
            "Exporters: the slow-query page",
            "Each exporter serving this data. Click an instance to open its / page: the slowest "
            "statements by fingerprint with their normalised SQL, call site and plan. (Use "
            "https:// in the link when the exporter serves TLS.)",
            [
                Target(
                    f"max by (job, instance, version) (exporter_build_info{{{PROC}}})",
                    instant=True,
                    table=True,
                )
            ],
            kind="table",
            unit="none",
            width=16,
            transformations=[
                {
                    "id": "organize",
                    "options": {"excludeByName": {"Time": True, "Value": True}},
                }
            ],
            overrides=[
                {
                    "matcher": {"id": "byName", "options": "instance"},
                    "properties": [
                        {
                            "id": "links",
                            "value": [
                                {
                                    "title": "Open the slow-query page of ${__value.text}",
                                    "url": "http://${__value.text}/",
                                    "targetBlank": True,
                                }
                            ],
                        }
                    ],
                }
            ],
        ),
    ],
)

# The server-level picture an on-call engineer opens when PostgreSQL itself is in question:
# connections against the limit, replication, wraparound, checkpoints, WAL, locks, long
# transactions, autovacuum and archiving (the server-level collectors). Most series are
# server-wide and carry only `database` (the configured database they were read through).
# What ordinary roles may open: max_connections less the superuser reserve and, on PostgreSQL
# 16+, the pg_use_reserved_connections reserve (no series before 16: `or` puts a 0 with the same
# labels in its place).
_USABLE_CONNECTIONS = (
    f"max by (database) (pg_settings_max_connections{{{PG}}} "
    f"- pg_settings_superuser_reserved_connections{{{PG}}} "
    f"- (pg_settings_reserved_connections{{{PG}}} or pg_settings_max_connections{{{PG}}} * 0))"
)
# Client backends of every database of the server (server_activity): what max_connections
# limits, whichever database the clients connect to.
_CLIENTS = f'pg_stat_activity_server_connections{{backend_type="client backend", {PG}}}'
_BACKENDS = f"sum by (database) ({_CLIENTS})"
_FREEZE_MAX_AGE = f"max by (database) (pg_settings_autovacuum_freeze_max_age{{{PG}}})"
_BYTES = {"id": "unit", "value": "bytes"}
# The autovacuum collector has one series per running worker, none when it finds none: "0
# workers" is the collector's last run having succeeded.
_AUTOVACUUM_COLLECTED = (
    "max by (database) (exporter_collector_success"
    f'{{collector="stat_activity_autovacuum", {PG}}} == 1)'
)

SERVER = Dashboard(
    uid="db-exporter-server",
    title="db-exporter / PostgreSQL server",
    description="The PostgreSQL server behind each configured database: connections against "
    "max_connections, replication lag and slots, transaction-ID wraparound, checkpoints, WAL, "
    "locks, long transactions, autovacuum workers and WAL archiving.",
    file="server.json",
    database_query="label_values(exporter_collector_success"
    f'{{collector="settings", {PROC}}}, database)',
    panels=[
        Panel(
            "Role",
            "Primary or replica (pg_is_in_recovery(), replication collector).",
            [Target(f"max by (database) (pg_replication_is_replica{{{PG}}})", "{{database}}")],
            kind="stat",
            unit="none",
            width=4,
            height=4,
            mappings=[
                {
                    "type": "value",
                    "options": {
                        "0": {"text": "primary", "color": "blue", "index": 0},
                        "1": {"text": "replica", "color": "purple", "index": 1},
                    },
                }
            ],
        ),
        Panel(
            "Uptime",
            "Time since the postmaster started (pg_postmaster_start_time_seconds). A small "
            "value you did not expect is a restart or a crash recovery: look at the server log.",
            [
                Target(
                    f"time() - max by (database) (pg_postmaster_start_time_seconds{{{PG}}})",
                    "{{database}}",
                )
            ],
            kind="stat",
            unit="s",
            width=4,
            height=4,
        ),
        Panel(
            "Connections used",
            "Client connections to every database of the server as a share of the connections "
            "ordinary roles may open (max_connections - superuser_reserved_connections - "
            "reserved_connections, the last on PostgreSQL 16+). The alert fires at 80% for 5 "
            "minutes.",
            [Target(f"{_BACKENDS} / on (database) {_USABLE_CONNECTIONS}", "{{database}}")],
            kind="gauge",
            unit="percentunit",
            width=4,
            height=4,
            thresholds=[(None, "green"), (0.7, "orange"), (0.8, "red")],
        ),
        Panel(
            "Replication lag",
            "On a replica, how far replay is behind the primary (0 when everything received is "
            "replayed, and on a primary). The alert fires above 60 s for 5 minutes.",
            [Target(f"max by (database) (pg_replication_lag_seconds{{{PG}}})", "{{database}}")],
            kind="stat",
            unit="s",
            width=4,
            height=4,
            thresholds=[(None, "green"), (10, "orange"), (60, "red")],
        ),
        Panel(
            "Oldest open transaction",
            "Age of the oldest transaction on the server that is not idle (autovacuum and the "
            "exporter left out; 0: none). Long transactions hold back vacuum and the xmin "
            "horizon on every database of the server.",
            [
                Target(
                    f"max by (database) (pg_long_running_transactions_oldest_age_seconds{{{PG}}})",
                    "{{database}}",
                )
            ],
            kind="stat",
            unit="s",
            width=4,
            height=4,
            thresholds=[(None, "green"), (300, "orange"), (3600, "red")],
        ),
        Panel(
            "WAL archive failures",
            "Failed archive_command runs in the dashboard's range (0 when archiving is off). "
            "The alert fires when they keep failing for 15 minutes.",
            [
                Target(
                    "sum by (database) "
                    f"(increase(pg_stat_archiver_failed_count_total{{{PG}}}[$__range]))",
                    "{{database}}",
                    instant=True,
                )
            ],
            kind="stat",
            unit="short",
            width=4,
            height=4,
            thresholds=[(None, "green"), (1, "red")],
        ),
        Panel(
            "Connections against max_connections",
            "Client connections to the server, in all and per database of it "
            "(pg_stat_activity_server_connections, the exporter's own included), against the "
            "server's max_connections and what ordinary roles may use of it (minus "
            "superuser_reserved_connections and, on PostgreSQL 16+, reserved_connections).",
            [
                Target(_BACKENDS, "all databases ({{database}})"),
                Target(f"sum by (database, datname) ({_CLIENTS})", "{{datname}} ({{database}})"),
                Target(
                    f"max by (database) (pg_settings_max_connections{{{PG}}})",
                    "max_connections ({{database}})",
                ),
                Target(_USABLE_CONNECTIONS, "usable by ordinary roles ({{database}})"),
            ],
            unit="short",
        ),
        Panel(
            "Locks by mode",
            "Locks held or awaited on the server, by lock mode (pg_locks, every database of "
            "the server). Access exclusive locks block everything on their table: a migration "
            "or a VACUUM FULL, usually.",
            [
                Target(
                    f"sum by (database, mode) (pg_locks{{{PG}}})",
                    "{{mode}} ({{database}})",
                )
            ],
            unit="short",
        ),
        Panel(
            "Replication lag (time)",
            "On a replica, how far replay is behind (pg_replication_lag_seconds). On a primary, "
            "each standby's replay lag as the primary measures it (pg_stat_replication; none "
            "without standbys).",
            [
                Target(
                    f"max by (database) (pg_replication_lag_seconds{{{PG}}})",
                    "replica behind its primary ({{database}})",
                ),
                Target(
                    "max by (database, application_name) "
                    f"(pg_stat_replication_replay_lag_seconds{{{PG}}})",
                    "standby {{application_name}} ({{database}})",
                ),
            ],
            unit="s",
            width=8,
        ),
        Panel(
            "Replication lag (bytes)",
            "On a primary, WAL each standby has not replayed yet (pg_stat_replication, "
            "current WAL position minus the standby's replay position).",
            [
                Target(
                    "max by (database, application_name) "
                    f"(pg_stat_replication_replay_lag_bytes{{{PG}}})",
                    "standby {{application_name}} ({{database}})",
                )
            ],
            unit="bytes",
            width=8,
        ),
        Panel(
            "WAL retained by replication slots",
            "WAL each replication slot keeps in pg_wal (the server cannot remove it until the "
            "slot's consumer confirms it). An inactive slot holding more and more fills the "
            "disk: the alert fires above 1 GiB for 15 minutes.",
            [
                Target(
                    "max by (database, slot_name, slot_type) "
                    f"(pg_replication_slot_retained_wal_bytes{{{PG}}})",
                    "{{slot_name}} ({{slot_type}}, {{database}})",
                )
            ],
            unit="bytes",
            width=8,
        ),
        Panel(
            "Transaction-ID wraparound age",
            "age(datfrozenxid) of each database of the server against autovacuum_freeze_max_age, "
            "where autovacuum starts its anti-wraparound vacuum. Well above it means that "
            "vacuum cannot finish; writes stop near 2^31 (about 2.1 billion). The alert fires "
            "at 1.5 x autovacuum_freeze_max_age.",
            [
                Target(
                    f"max by (database, datname) (pg_database_wraparound_age_datfrozenxid{{{PG}}})",
                    "{{datname}} ({{database}})",
                ),
                Target(_FREEZE_MAX_AGE, "autovacuum_freeze_max_age ({{database}})"),
            ],
            unit="short",
        ),
        Panel(
            "Checkpoints",
            "Checkpoints per minute: timed (checkpoint_timeout) and requested (max_wal_size "
            "reached, or a CHECKPOINT, CREATE DATABASE, base backup). Mostly requested ones "
            "mean max_wal_size is too small for the write load; the alert fires when they are "
            "over half of more than three an hour.",
            [
                Target(
                    "60 * sum by (database) "
                    f"(rate(pg_stat_checkpointer_num_timed_total{{{PG}}}[{RATE}]))",
                    "timed ({{database}})",
                ),
                Target(
                    "60 * sum by (database) "
                    f"(rate(pg_stat_checkpointer_num_requested_total{{{PG}}}[{RATE}]))",
                    "requested ({{database}})",
                ),
            ],
            unit="opm",
            interval=COLLECTOR_INTERVAL,
        ),
        Panel(
            "Checkpoint write and sync time",
            "Seconds per second the checkpointer spent writing buffers to files and syncing "
            "them to disk. Sync time that grows is a slow disk.",
            [
                Target(
                    "sum by (database) "
                    f"(rate(pg_stat_checkpointer_write_time_seconds_total{{{PG}}}[{RATE}]))",
                    "write ({{database}})",
                ),
                Target(
                    "sum by (database) "
                    f"(rate(pg_stat_checkpointer_sync_time_seconds_total{{{PG}}}[{RATE}]))",
                    "sync ({{database}})",
                ),
            ],
            unit="s",
            interval=COLLECTOR_INTERVAL,
        ),
        Panel(
            "WAL rate",
            "WAL written per second (the rate of the WAL insert position; on a replica, of the "
            "replayed position), and the size of pg_wal.",
            [
                Target(
                    f"sum by (database) (rate(pg_wal_position_bytes_total{{{PG}}}[{RATE}]))",
                    "WAL per second ({{database}})",
                ),
                Target(
                    f"max by (database) (pg_wal_size_bytes{{{PG}}})",
                    "pg_wal size ({{database}})",
                ),
            ],
            unit="Bps",
            interval=COLLECTOR_INTERVAL,
            overrides=[{"matcher": {"id": "byFrameRefID", "options": "B"}, "properties": [_BYTES]}],
        ),
        Panel(
            "Long-running transactions",
            "Open transactions on the server that are not idle (autovacuum and the exporter "
            "left out), and the oldest one's age.",
            [
                Target(
                    f"max by (database) (pg_long_running_transactions{{{PG}}})",
                    "open ({{database}})",
                ),
                Target(
                    f"max by (database) (pg_long_running_transactions_oldest_age_seconds{{{PG}}})",
                    "oldest ({{database}})",
                ),
            ],
            unit="short",
            width=8,
            overrides=[
                {
                    "matcher": {"id": "byFrameRefID", "options": "B"},
                    "properties": [{"id": "unit", "value": "s"}],
                }
            ],
        ),
        Panel(
            "Autovacuum workers",
            "Autovacuum workers running on the server (0 while the collector runs and finds "
            "none). All autovacuum_max_workers busy for long means vacuum is behind.",
            [
                Target(
                    "count by (database) "
                    f"(pg_stat_activity_autovacuum_timestamp_seconds{{{PG}}}) "
                    f"or 0 * {_AUTOVACUUM_COLLECTED}",
                    "{{database}}",
                )
            ],
            unit="short",
            width=8,
        ),
        Panel(
            "WAL archiving",
            "WAL segments archived and archive_command failures per minute (both 0 when "
            "archive_mode is off). Failures keep the segments in pg_wal until the command "
            "succeeds.",
            [
                Target(
                    "60 * sum by (database) "
                    f"(rate(pg_stat_archiver_archived_count_total{{{PG}}}[{RATE}]))",
                    "archived ({{database}})",
                ),
                Target(
                    "60 * sum by (database) "
                    f"(rate(pg_stat_archiver_failed_count_total{{{PG}}}[{RATE}]))",
                    "failed ({{database}})",
                ),
            ],
            unit="opm",
            width=8,
            interval=COLLECTOR_INTERVAL,
        ),
    ],
)

DASHBOARDS = (OVERVIEW, POOL, INDEXES, SLOW, SERVER)


def _variables(database_query: str) -> list[dict[str, Any]]:
    def query_variable(name: str, label: str, query: str) -> dict[str, Any]:
        return {
            "name": name,
            "label": label,
            "type": "query",
            "datasource": DATASOURCE,
            "definition": query,
            "query": query,
            "refresh": 2,  # on time range change
            "includeAll": True,
            "multi": True,
            "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "sort": 1,
            "hide": 0,
        }

    return [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "refresh": 1,
            "hide": 0,
            "current": {},
        },
        query_variable("job", "Job", "label_values(exporter_build_info, job)"),
        query_variable(
            "instance", "Instance", 'label_values(exporter_build_info{job=~"$job"}, instance)'
        ),
        query_variable("database", "Database", database_query),
    ]


def _panel(
    panel: Panel, panel_id: int, x: int, y: int, links: list[dict[str, Any]]
) -> dict[str, Any]:
    targets = []
    for index, target in enumerate(panel.targets):
        targets.append(
            {
                "datasource": DATASOURCE,
                "refId": chr(ord("A") + index),
                "expr": target.expr,
                "legendFormat": target.legend or "__auto",
                "range": not target.instant,
                "instant": target.instant,
                "format": "table" if target.table else "time_series",
                "editorMode": "code",
            }
        )
    thresholds = panel.thresholds or [(None, "green")]
    custom: dict[str, Any] = {}
    if panel.kind == "timeseries":
        custom = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never"}
    options: dict[str, Any] = {"legend": {"displayMode": "list", "placement": "bottom"}}
    if panel.kind == "timeseries":
        options["tooltip"] = {"mode": "multi", "sort": "desc"}
    elif panel.kind in ("stat", "gauge", "bargauge"):
        options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}
        if panel.kind == "stat":
            options |= {"colorMode": "background", "graphMode": "area", "textMode": "auto"}
    elif panel.kind == "table":
        options = {"showHeader": True, "cellHeight": "sm"}
    options |= panel.options
    data: dict[str, Any] = {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {
            "defaults": {
                "unit": panel.unit,
                "custom": custom,
                "mappings": panel.mappings,
                "thresholds": {
                    "mode": "absolute",
                    "steps": [{"color": color, "value": value} for value, color in thresholds],
                },
                "color": {"mode": "thresholds" if panel.thresholds else "palette-classic"},
            },
            "overrides": panel.overrides,
        },
        "options": options,
        "targets": targets,
    }
    if links:
        data["links"] = links
    if panel.interval:
        data["interval"] = panel.interval
    if panel.transformations:
        data["transformations"] = panel.transformations
    return data


def render(dashboard: Dashboard) -> dict[str, Any]:
    panels = []
    x = y = row_height = 0
    ids = {panel.title: panel_id for panel_id, panel in enumerate(dashboard.panels, start=1)}
    for panel_id, panel in enumerate(dashboard.panels, start=1):
        if x + panel.width > 24:
            x, y, row_height = 0, y + row_height, 0
        # The other panel alone, with this dashboard's time range and variables.
        see_also = [
            {
                "title": title,
                "url": f"/d/{dashboard.uid}/?viewPanel={ids[title]}"
                "&${__url_time_range}&${__all_variables}",
            }
            for title in panel.see_also
        ]
        panels.append(_panel(panel, panel_id, x, y, see_also))
        x += panel.width
        row_height = max(row_height, panel.height)
    links = [
        {
            "title": "db-exporter dashboards",
            "type": "dashboards",
            "tags": ["db-exporter"],
            "asDropdown": True,
            "includeVars": True,
            "keepTime": True,
        }
    ]
    return {
        "uid": dashboard.uid,
        "title": dashboard.title,
        "description": dashboard.description,
        "tags": dashboard.tags,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "timezone": "",
        "links": links,
        "annotations": {"list": []},
        "templating": {"list": _variables(dashboard.database_query)},
        "panels": panels,
    }


def rendered() -> dict[str, str]:
    """File name -> the JSON text this script writes."""
    return {d.file: json.dumps(render(d), indent=2, ensure_ascii=False) + "\n" for d in DASHBOARDS}


def main() -> None:
    for name, text in rendered().items():
        (HERE / name).write_text(text, encoding="utf-8")
        print(f"wrote dashboards/{name}")


if __name__ == "__main__":
    main()

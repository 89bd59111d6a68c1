"""What postgres_exporter's own mixin reads: the metric names its alerts, recording rules and
overview dashboard query, the labels each query relies on, and which names it joins.

Facts, not our choices, read from prometheus-community/postgres_exporter, folder
`postgres_mixin/` (the newest version of each file; the file each fact cites):
`alerts/postgres.libsonnet` (the alerts the mixin builds, with its `config.libsonnet`:
`dbNameFilter` is `datname!~"template.*"`, aggregations are `by (job, instance, server)` and a
`datname` where the alert is per database), `alerts/alerts.yaml` (an older copy of its first
six alerts, aggregated `by (instance)` or `by (datname)`), `rules/rules.yaml` (recording rules)
and `dashboards/postgres-overview.json` (its variables take `job` and `instance` from `pg_up`
and `datname` from `pg_stat_database_tup_fetched`; the panels select `datname=~"$db"`).
`dashboards/queries.libsonnet` reads the same names as the overview. Only names and labels
are kept here, never their expressions.

A use's labels are those the exporter must put on the series for the query to mean what it
says: the labels it selects on (`datname=~"$db"`), groups by (`by (datname)`) or matches on
(`on (server)`, or every label when two series of one table or database are compared). Left
out: Prometheus' target labels (`TARGET_LABELS`), and a `by` label postgres_exporter does not
put on that series either (the `server` of `by (job, instance, server)` on the
`pg_stat_database_*` series), which just groups as one.

The test that checks a real `compatibility: postgres_exporter` scrape, and a real Prometheus
scraping it, against these is `tests/test_postgres_mixin.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

ALERTS = "alerts/postgres.libsonnet"
ALERTS_YAML = "alerts/alerts.yaml"
RULES = "rules/rules.yaml"
OVERVIEW = "dashboards/postgres-overview.json"

# Labels Prometheus puts on every series of a target (or a deployment's relabelling does).
TARGET_LABELS = frozenset({"job", "instance", "cluster", "namespace", "pod", "service"})


@dataclass(frozen=True)
class Use:
    name: str
    labels: tuple[str, ...]
    source: str
    readers: tuple[str, ...]  # the alerts, recording rules or panels that query it
    # postgres_exporter has it only on servers older than this major version (PostgreSQL 17
    # moved the checkpoint columns out of pg_stat_bgwriter; its collector follows).
    before: int | None = None


@dataclass(frozen=True)
class Join:
    """Two names one expression combines: on the labels `on` (target labels included), or
    on every label when `on` is None; `many_to_one`: each `right` series serves many `left`."""

    left: str
    right: str
    on: tuple[str, ...] | None
    source: str
    readers: tuple[str, ...]
    many_to_one: bool = False
    before: int | None = None


def _uses(
    source: str,
    readers: str,
    labels: tuple[str, ...],
    names: str,
    before: int | None = None,
) -> tuple[Use, ...]:
    return tuple(
        Use(name, labels, source, tuple(readers.split(", ")), before) for name in names.split()
    )


DATNAME = ("datname",)
SERVER = ("server",)
TABLE = ("datname", "schemaname", "relname")
CONNECTION_ALERTS = "PostgreSQLMaxConnectionsReached, PostgreSQLHighConnections"
CONNECTION_READERS = tuple(CONNECTION_ALERTS.split(", "))
CONNECTION_LIMITS = "pg_settings_max_connections pg_settings_superuser_reserved_connections"
PER_SERVER = ("job", "instance", "server")  # the mixin's default aggregation labels

USES: tuple[Use, ...] = (
    # alerts/postgres.libsonnet
    *_uses(ALERTS, CONNECTION_ALERTS, SERVER, f"pg_stat_activity_count {CONNECTION_LIMITS}"),
    *_uses(ALERTS, "PostgreSQLDown", (), "pg_up"),
    *_uses(ALERTS, "PostgreSQLSlowQueries", ("datname", "server"),
           "pg_stat_activity_max_tx_duration"),
    *_uses(ALERTS, "PostgreSQLQPS, PostgresHasTooManyRollbacks", DATNAME,
           "pg_stat_database_xact_commit pg_stat_database_xact_rollback"),
    *_uses(ALERTS, "PostgreSQLCacheHitRatio", DATNAME,
           "pg_stat_database_blks_hit pg_stat_database_blks_read"),
    *_uses(ALERTS, "PostgresHasHighDeadLocks", DATNAME, "pg_stat_database_deadlocks"),
    *_uses(ALERTS, "PostgresAcquiredTooManyLocks", DATNAME, "pg_locks_count"),
    *_uses(ALERTS, "PostgresAcquiredTooManyLocks", SERVER,
           "pg_settings_max_locks_per_transaction pg_settings_max_connections"),
    *_uses(ALERTS, "PostgresReplicationLaggingMore1Hour", (), "pg_replication_lag"),
    *_uses(ALERTS, "PostgresReplicationLaggingMore1Hour, PostgresReplicationRoleChanged", (),
           "pg_replication_is_replica"),
    *_uses(ALERTS, "PostgresHasReplicationSlotUsed", (), "pg_replication_slots_active"),
    *_uses(ALERTS, "PostgresHasExporterErrors", (), "pg_exporter_last_scrape_error"),
    *_uses(ALERTS, "PostgresTablesNotVaccumed", TABLE,
           "pg_stat_user_tables_n_dead_tup pg_stat_user_tables_n_live_tup"),
    *_uses(ALERTS, "PostgresTablesNotVaccumed", SERVER,
           "pg_settings_autovacuum_vacuum_scale_factor pg_settings_autovacuum_vacuum_threshold"),
    *_uses(ALERTS, "PostgresTooManyCheckpointsRequested", (),
           "pg_stat_bgwriter_checkpoints_timed_total pg_stat_bgwriter_checkpoints_req_total",
           before=17),
    # alerts/alerts.yaml
    *_uses(ALERTS_YAML, CONNECTION_ALERTS, (), f"pg_stat_activity_count {CONNECTION_LIMITS}"),
    *_uses(ALERTS_YAML, "PostgreSQLDown", (), "pg_up"),
    *_uses(ALERTS_YAML, "PostgreSQLSlowQueries", DATNAME, "pg_stat_activity_max_tx_duration"),
    *_uses(ALERTS_YAML, "PostgreSQLQPS", DATNAME,
           "pg_stat_database_xact_commit pg_stat_database_xact_rollback"),
    *_uses(ALERTS_YAML, "PostgreSQLCacheHitRatio", DATNAME,
           "pg_stat_database_blks_hit pg_stat_database_blks_read"),
    # rules/rules.yaml
    *_uses(RULES, "instance:pg_running_queries:sum", (), "pg_stat_database_numbackends"),
    *_uses(RULES, "instance:pg_table_cache_hitrate", TABLE,
           "pg_statio_user_tables_heap_blks_hit pg_statio_user_tables_heap_blks_read"),
    *_uses(RULES, "instance:pg_table_index_usage_rate", TABLE,
           "pg_stat_user_tables_idx_scan pg_stat_user_tables_seq_scan"),
    *_uses(RULES, "instance:pg_index_cache_hitrate", TABLE,
           "pg_statio_user_tables_idx_blks_hit pg_statio_user_tables_idx_blks_read"),
    # dashboards/postgres-overview.json: its variables, then its panels.
    *_uses(OVERVIEW, "$job, $instance", (), "pg_up"),
    *_uses(OVERVIEW, "$db", DATNAME, "pg_stat_database_tup_fetched"),
    *_uses(OVERVIEW, "QPS", DATNAME,
           "pg_stat_database_xact_commit pg_stat_database_xact_rollback"),
    *_uses(OVERVIEW, "Rows", DATNAME,
           "pg_stat_database_tup_fetched pg_stat_database_tup_returned "
           "pg_stat_database_tup_inserted pg_stat_database_tup_updated "
           "pg_stat_database_tup_deleted"),
    *_uses(OVERVIEW, "Buffers", (),
           "pg_stat_bgwriter_buffers_alloc_total pg_stat_bgwriter_buffers_clean_total"),
    *_uses(OVERVIEW, "Buffers", (),
           "pg_stat_bgwriter_buffers_backend_fsync_total pg_stat_bgwriter_buffers_backend_total "
           "pg_stat_bgwriter_buffers_checkpoint_total",
           before=17),
    *_uses(OVERVIEW, "Conflicts/Deadlocks", DATNAME,
           "pg_stat_database_deadlocks pg_stat_database_conflicts"),
    *_uses(OVERVIEW, "Cache hit ratio", DATNAME,
           "pg_stat_database_blks_hit pg_stat_database_blks_read"),
    *_uses(OVERVIEW, "Number of active connections", DATNAME, "pg_stat_database_numbackends"),
)  # fmt: skip

JOINS: tuple[Join, ...] = (
    *(
        Join("pg_stat_activity_count", limit, PER_SERVER, ALERTS, CONNECTION_READERS)
        for limit in CONNECTION_LIMITS.split()
    ),
    *(
        Join("pg_stat_activity_count", limit, ("instance",), ALERTS_YAML,
             CONNECTION_READERS)
        for limit in CONNECTION_LIMITS.split()
    ),
    Join("pg_stat_database_xact_rollback", "pg_stat_database_xact_commit", None, ALERTS,
         ("PostgreSQLQPS", "PostgresHasTooManyRollbacks")),
    Join("pg_stat_database_blks_hit", "pg_stat_database_blks_read", None, ALERTS,
         ("PostgreSQLCacheHitRatio",)),
    Join("pg_settings_max_locks_per_transaction", "pg_settings_max_connections", None, ALERTS,
         ("PostgresAcquiredTooManyLocks",)),
    # The per-database lock counts over the server's product of the two settings.
    Join("pg_locks_count", "pg_settings_max_locks_per_transaction", ("job", "instance"), ALERTS,
         ("PostgresAcquiredTooManyLocks",), many_to_one=True),
    Join("pg_replication_lag", "pg_replication_is_replica", PER_SERVER, ALERTS,
         ("PostgresReplicationLaggingMore1Hour",)),
    Join("pg_stat_user_tables_n_dead_tup", "pg_stat_user_tables_n_live_tup", None, ALERTS,
         ("PostgresTablesNotVaccumed",)),
    Join("pg_stat_user_tables_n_live_tup", "pg_settings_autovacuum_vacuum_scale_factor",
         PER_SERVER, ALERTS, ("PostgresTablesNotVaccumed",), many_to_one=True),
    Join("pg_stat_bgwriter_checkpoints_timed_total", "pg_stat_bgwriter_checkpoints_req_total",
         None, ALERTS, ("PostgresTooManyCheckpointsRequested",), before=17),
    Join("pg_stat_user_tables_idx_scan", "pg_stat_user_tables_seq_scan", None, RULES,
         ("instance:pg_table_index_usage_rate",)),
    Join("pg_statio_user_tables_heap_blks_hit", "pg_statio_user_tables_heap_blks_read", None,
         RULES, ("instance:pg_table_cache_hitrate",)),
    Join("pg_statio_user_tables_idx_blks_hit", "pg_statio_user_tables_idx_blks_read", None,
         RULES, ("instance:pg_index_cache_hitrate",)),
)  # fmt: skip

# Names the mixin reads that postgres_exporter's collectors do not expose (so its queries find
# nothing there either), and why; db-exporter's compatibility mode follows postgres_exporter.
GAPS: dict[str, str] = {
    "pg_replication_lag": (
        "from postgres_exporter's old example queries.yaml (--extend.query-path); its "
        "replication collector names it pg_replication_lag_seconds, which db-exporter has"
    ),
    **{
        name: (
            "from postgres_exporter's old example queries.yaml; its statio_user_tables "
            f"collector names it {name.replace('_blks_', '_blocks_')}, which db-exporter has"
        )
        for name in (
            "pg_statio_user_tables_heap_blks_hit",
            "pg_statio_user_tables_heap_blks_read",
            "pg_statio_user_tables_idx_blks_hit",
            "pg_statio_user_tables_idx_blks_read",
        )
    },
}

# Joins that find nothing against postgres_exporter itself, and why.
BROKEN_JOINS: dict[tuple[str, str], str] = {
    ("pg_stat_user_tables_n_live_tup", "pg_settings_autovacuum_vacuum_scale_factor"): (
        "matched on `server`, which only the settings carry (postgres_exporter's built-in "
        "map has it, its stat_user_tables collector not): PostgresTablesNotVaccumed never "
        "fires, there as here"
    ),
}

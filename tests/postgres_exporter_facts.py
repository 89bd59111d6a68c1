"""What postgres_exporter (prometheus-community/postgres_exporter, 0.15-0.18) exposes: the
metric names, types and labels of its default collectors and of the other collectors
db-exporter has an equivalent for, grouped by its collector name.

Facts, not our choices, read from its sources (the file each group cites) and its README's
list of collectors and defaults. A name is the sample name it exposes (its Go client writes a
counter's name as given: without `_total` unless the name has it). Built-in metrics (the
`cmd/postgres_exporter` maps, not `collector/`) carry its `server` label (host:port of the
DSN). The test that checks a scrape against these is
`tests/test_compatibility.py`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Fact:
    name: str
    type: str  # gauge or counter
    labels: tuple[str, ...] = ()
    # Series exist only when there is something to report (a running autovacuum worker, a
    # replica, a slot): the name and type are checked, the labels only when there are samples.
    may_be_empty: bool = False


def _each(names: str, kind: str, labels: tuple[str, ...], prefix: str) -> tuple[Fact, ...]:
    return tuple(Fact(f"{prefix}{name}", kind, labels) for name in names.split())


DATABASE = ("datid", "datname")
TABLE = ("datname", "schemaname", "relname")
SERVER = ("server",)

# Group (postgres_exporter collector, or the built-in map) -> its facts.
FACTS: dict[str, tuple[Fact, ...]] = {
    # cmd/postgres_exporter/server.go, postgres_exporter.go: the exporter's own.
    "up": (Fact("pg_up", "gauge"), Fact("pg_exporter_last_scrape_error", "gauge")),
    # cmd/postgres_exporter/pg_setting.go: bool/integer/real settings, units converted;
    # a few of the ~300, the ones runbooks and dashboards use.
    "settings": (
        Fact("pg_settings_max_connections", "gauge", SERVER),
        Fact("pg_settings_shared_buffers_bytes", "gauge", SERVER),
        Fact("pg_settings_work_mem_bytes", "gauge", SERVER),
        Fact("pg_settings_checkpoint_timeout_seconds", "gauge", SERVER),
        Fact("pg_settings_autovacuum_freeze_max_age", "gauge", SERVER),
        Fact("pg_settings_fsync", "gauge", SERVER),
    ),
    # cmd/postgres_exporter/queries.go (builtinMetricMaps "pg_stat_activity").
    "stat_activity": (
        Fact("pg_stat_activity_count", "gauge", ("datname", "state", "server")),
        Fact("pg_stat_activity_max_tx_duration", "gauge", ("datname", "state", "server")),
    ),
    # cmd/postgres_exporter/queries.go (builtinMetricMaps "pg_stat_database_conflicts").
    "stat_database_conflicts": _each(
        "tablespace lock snapshot bufferpin deadlock",
        "counter",
        (*DATABASE, "server"),
        "pg_stat_database_conflicts_confl_",
    ),
    # cmd/postgres_exporter/queries.go (builtinMetricMaps "pg_stat_archiver").
    "stat_archiver": (
        Fact("pg_stat_archiver_archived_count", "counter", SERVER),
        Fact("pg_stat_archiver_failed_count", "counter", SERVER),
        Fact("pg_stat_archiver_last_archive_age", "gauge", SERVER),
    ),
    # cmd/postgres_exporter/queries.go (builtinMetricMaps "pg_stat_replication"): primary only.
    "stat_replication": tuple(
        Fact(
            f"pg_stat_replication_{name}",
            "gauge",
            ("application_name", "client_addr", "state", "slot_name", "server"),
            may_be_empty=True,
        )
        for name in ("pg_current_wal_lsn_bytes", "pg_wal_lsn_diff")
    ),
    # cmd/postgres_exporter/queries.go (builtinMetricMaps "pg_replication_slots").
    "replication_slots": tuple(
        Fact(f"pg_replication_slots_{name}", "gauge", ("slot_name", "database", "server"), True)
        for name in ("active", "pg_wal_lsn_diff")
    ),
    # collector/pg_database.go (default: enabled).
    "database": (
        Fact("pg_database_size_bytes", "gauge", ("datname",)),
        Fact("pg_database_connection_limit", "gauge", ("datname",)),
    ),
    # collector/pg_stat_database.go (default: enabled); active_time from PostgreSQL 14 on.
    "stat_database": (
        Fact("pg_stat_database_numbackends", "gauge", DATABASE),
        *_each(
            "xact_commit xact_rollback blks_read blks_hit tup_returned tup_fetched tup_inserted "
            "tup_updated tup_deleted conflicts temp_files temp_bytes deadlocks blk_read_time "
            "blk_write_time stats_reset",
            "counter",
            DATABASE,
            "pg_stat_database_",
        ),
        Fact("pg_stat_database_active_time_seconds_total", "counter", DATABASE),
    ),
    # collector/pg_locks.go (default: enabled).
    "locks": (Fact("pg_locks_count", "gauge", ("datname", "mode")),),
    # collector/pg_replication.go (default: enabled).
    "replication": (
        Fact("pg_replication_lag_seconds", "gauge"),
        Fact("pg_replication_is_replica", "gauge"),
        Fact("pg_replication_last_replay_seconds", "gauge"),
    ),
    # collector/pg_replication_slot.go (default: enabled).
    "replication_slot": (
        *(
            Fact(f"pg_replication_slot_{name}", "gauge", ("slot_name", "slot_type"), True)
            for name in (
                "slot_current_wal_lsn",
                "slot_confirmed_flush_lsn",
                "slot_is_active",
                "safe_wal_size_bytes",
            )
        ),
        Fact(
            "pg_replication_slot_wal_status",
            "gauge",
            ("slot_name", "slot_type", "wal_status"),
            True,
        ),
    ),
    # collector/pg_roles.go (default: enabled).
    "roles": (Fact("pg_roles_connection_limit", "gauge", ("rolname",)),),
    # collector/pg_stat_bgwriter.go (default: enabled); before PostgreSQL 17 all of these, from
    # 17 on the checkpoint columns moved to stat_checkpointer.
    "stat_bgwriter": _each(
        "checkpoints_timed_total checkpoints_req_total checkpoint_write_time_total "
        "checkpoint_sync_time_total buffers_checkpoint_total buffers_clean_total "
        "maxwritten_clean_total buffers_backend_total buffers_backend_fsync_total "
        "buffers_alloc_total stats_reset_total",
        "counter",
        (),
        "pg_stat_bgwriter_",
    ),
    # collector/pg_stat_checkpointer.go (default: disabled; PostgreSQL 17+).
    "stat_checkpointer": _each(
        "num_timed_total num_requested_total restartpoints_timed_total "
        "restartpoints_req_total restartpoints_done_total write_time_total sync_time_total "
        "buffers_written_total stats_reset_total",
        "counter",
        (),
        "pg_stat_checkpointer_",
    ),
    # collector/pg_stat_user_tables.go (default: enabled).
    "stat_user_tables": (
        *_each(
            "seq_scan seq_tup_read idx_scan idx_tup_fetch n_tup_ins n_tup_upd n_tup_del "
            "n_tup_hot_upd vacuum_count autovacuum_count analyze_count autoanalyze_count",
            "counter",
            TABLE,
            "pg_stat_user_tables_",
        ),
        *_each(
            "n_live_tup n_dead_tup n_mod_since_analyze last_vacuum last_autovacuum "
            "last_analyze last_autoanalyze index_size_bytes table_size_bytes",
            "gauge",
            TABLE,
            "pg_stat_user_tables_",
        ),
    ),
    # collector/pg_statio_user_tables.go (default: enabled).
    "statio_user_tables": _each(
        "heap_blocks_read heap_blocks_hit idx_blocks_read idx_blocks_hit toast_blocks_read "
        "toast_blocks_hit tidx_blocks_read tidx_blocks_hit",
        "counter",
        TABLE,
        "pg_statio_user_tables_",
    ),
    # collector/pg_wal.go (default: enabled).
    "wal": (Fact("pg_wal_segments", "gauge"), Fact("pg_wal_size_bytes", "gauge")),
    # collector/pg_stat_wal_receiver.go (default: disabled; replicas only).
    "stat_wal_receiver": tuple(
        Fact(
            f"pg_stat_wal_receiver_{name}", "gauge", ("upstream_host", "slot_name", "status"), True
        )
        for name in (
            "receive_start_lsn",
            "receive_start_tli",
            "flushed_lsn",
            "received_tli",
            "last_msg_send_time",
            "last_msg_receipt_time",
            "latest_end_lsn",
            "latest_end_time",
            "upstream_node",
        )
    ),
    # collector/pg_postmaster.go (default: disabled).
    "postmaster": (Fact("pg_postmaster_start_time_seconds", "gauge"),),
    # collector/pg_database_wraparound.go (default: disabled).
    "database_wraparound": (
        Fact("pg_database_wraparound_age_datfrozenxid_seconds", "gauge", ("datname",)),
        Fact("pg_database_wraparound_age_datminmxid_seconds", "gauge", ("datname",)),
    ),
    # collector/pg_long_running_transactions.go (default: disabled).
    "long_running_transactions": (
        Fact("pg_long_running_transactions", "gauge"),
        Fact("pg_long_running_transactions_oldest_timestamp_seconds", "gauge"),
    ),
    # collector/pg_stat_activity_autovacuum.go (default: disabled).
    "stat_activity_autovacuum": (
        Fact("pg_stat_activity_autovacuum_timestamp_seconds", "gauge", ("relname",), True),
    ),
    # collector/pg_stat_statements.go (default: disabled).
    "stat_statements": _each(
        "calls_total seconds_total rows_total block_read_seconds_total block_write_seconds_total",
        "counter",
        ("user", "datname", "queryid"),
        "pg_stat_statements_",
    ),
}

# Group -> the db-exporter collector that emits it ("runner": the check itself), None where
# this test does not check it. The groups marked "pgrepl" have collectors, checked on a real
# primary and replica by tests/test_postgres_exporter_names_replication.py (its own facts;
# it leaves out the built-in maps' `server` label, which the groups here include).
OURS: dict[str, str | None] = {
    "up": "runner",
    "settings": "settings",
    "stat_activity": "server_activity",
    "stat_database_conflicts": "stat_database_conflicts",
    "stat_archiver": None,  # pgrepl: archiver
    "stat_replication": None,  # pgrepl: replication
    "replication_slots": "replication_slot",  # in postgres_exporter's view only
    "database": "database",
    "stat_database": "database",
    "locks": "locks",
    "replication": None,  # pgrepl
    "replication_slot": None,  # pgrepl
    "roles": "roles",
    "stat_bgwriter": None,  # pgrepl
    "stat_checkpointer": None,  # pgrepl
    "stat_user_tables": "tables",
    "statio_user_tables": "statio_user_tables",
    "wal": None,  # pgrepl
    "stat_wal_receiver": None,  # pgrepl
    "postmaster": "postmaster",
    "database_wraparound": "database_wraparound",
    "long_running_transactions": "long_running_transactions",
    "stat_activity_autovacuum": "stat_activity_autovacuum",
    "stat_statements": "statements",
}

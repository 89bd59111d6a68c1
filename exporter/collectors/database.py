"""Database: transactions, rows, deadlocks, temporary files, block I/O and size of this database.

The `pg_stat_database` row of `current_database()` (postgres_exporter's `stat_database`, labels
`datid, datname`), and its size and connection limit from `pg_database` (postgres_exporter's
`database`). The cache hit ratio is
`rate(..._blks_hit_total) / (rate(..._blks_hit_total) + rate(..._blks_read_total))`. Block read
and write times are only counted with `track_io_timing` on; `active_time` exists from
PostgreSQL 14 on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from exporter.collectors.base import Collector, Shape, number, timestamp
from exporter.settings import CollectorSettings

DATABASE_SQL = """
SELECT s.datid::text AS datid, numbackends, xact_commit, xact_rollback, deadlocks, temp_files,
       temp_bytes, blks_read, blks_hit, conflicts, tup_returned, tup_fetched, tup_inserted,
       tup_updated, tup_deleted, blk_read_time, blk_write_time, {active_time} AS active_time,
       stats_reset, pg_database_size(s.datid) AS size_bytes, d.datconnlimit
FROM pg_stat_database s JOIN pg_database d ON d.oid = s.datid
WHERE s.datname = current_database()
"""
# pg_stat_database.active_time exists from PostgreSQL 14 on.
ACTIVE_TIME_VERSION = 140000

LABELS = ["datid", "datname"]

# (column, help) of the counters, exported as pg_stat_database_<column>_total.
COUNTERS = (
    ("xact_commit", "Transactions committed in this database."),
    ("xact_rollback", "Transactions rolled back in this database."),
    ("deadlocks", "Deadlocks detected in this database."),
    ("temp_files", "Temporary files created by queries in this database."),
    ("temp_bytes", "Bytes written to temporary files by queries in this database."),
    ("blks_read", "Disk blocks read in this database (cache misses)."),
    ("blks_hit", "Disk blocks found in the buffer cache in this database (cache hits)."),
    ("conflicts", "Queries canceled by recovery conflicts (standbys only)."),
    ("tup_returned", "Rows returned by queries in this database."),
    ("tup_fetched", "Rows fetched by queries in this database."),
    ("tup_inserted", "Rows inserted by queries in this database."),
    ("tup_updated", "Rows updated by queries in this database."),
    ("tup_deleted", "Rows deleted by queries in this database."),
)
# (column, help) of the times, in milliseconds there, exported as ..._<column>_seconds_total.
TIMES = (
    ("blk_read_time", "Time backends spent reading data file blocks (track_io_timing)."),
    ("blk_write_time", "Time backends spent writing data file blocks (track_io_timing)."),
    ("active_time", "Time spent executing SQL statements in this database (PostgreSQL 14+)."),
)


class DatabaseCollector(Collector[CollectorSettings]):
    name = "database"
    database_wide = True
    # postgres_exporter: counters without _total, block times in milliseconds, stats_reset a
    # counter; active_time_seconds_total is the same there.
    postgres_exporter_names: ClassVar[Mapping[str, str]] = {
        **{f"pg_stat_database_{c}": f"pg_stat_database_{c}" for c, _ in COUNTERS},
        "pg_stat_database_blk_read_time_seconds": "pg_stat_database_blk_read_time",
        "pg_stat_database_blk_write_time_seconds": "pg_stat_database_blk_write_time",
        "pg_stat_database_stats_reset_timestamp_seconds": "pg_stat_database_stats_reset",
    }
    postgres_exporter_scales: ClassVar[Mapping[str, float]] = {
        "pg_stat_database_blk_read_time_seconds": 1000,
        "pg_stat_database_blk_write_time_seconds": 1000,
    }
    postgres_exporter_shapes: ClassVar[Mapping[str, Shape]] = {
        "pg_stat_database_stats_reset_timestamp_seconds": Shape(type="counter"),
        "pg_database_size_bytes": Shape(labels=("datname",)),
        "pg_database_connection_limit": Shape(labels=("datname",)),
    }

    async def collect(self, conn: AsyncConnection, server_version: int) -> Sequence[Metric]:
        active_time = "active_time" if server_version >= ACTIVE_TIME_VERSION else "NULL::float8"
        row = (await conn.execute(text(DATABASE_SQL.format(active_time=active_time)))).one()
        labels = [row.datid, self.datname]
        families: list[Metric] = []
        for column, doc in COUNTERS:
            family = CounterMetricFamily(f"pg_stat_database_{column}", doc, labels=LABELS)
            family.add_metric(labels, number(getattr(row, column)))
            families.append(family)
        for column, doc in TIMES:
            if column == "active_time" and server_version < ACTIVE_TIME_VERSION:
                continue
            seconds = CounterMetricFamily(f"pg_stat_database_{column}_seconds", doc, labels=LABELS)
            seconds.add_metric(labels, number(getattr(row, column)) / 1000)
            families.append(seconds)
        for name, doc, value in (
            (
                "pg_stat_database_numbackends",
                "Backends connected to this database right now.",
                number(row.numbackends),
            ),
            (
                "pg_stat_database_stats_reset_timestamp_seconds",
                "Unix time this database's statistics were last reset (0: never).",
                timestamp(row.stats_reset),
            ),
            (
                "pg_database_size_bytes",
                "Disk space used by this database.",
                number(row.size_bytes),
            ),
            (
                "pg_database_connection_limit",
                "Connections allowed to this database (-1: no limit).",
                number(row.datconnlimit),
            ),
        ):
            gauge = GaugeMetricFamily(name, doc, labels=LABELS)
            gauge.add_metric(labels, value)
            families.append(gauge)
        return families

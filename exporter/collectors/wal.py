"""WAL: how much is written, and how much sits in pg_wal.

Server-wide, no labels:

- `pg_wal_segments` and `pg_wal_size_bytes`: WAL segment files in `pg_wal` and their size
  (postgres_exporter's `wal` collector, from `pg_ls_waldir()`, which needs `pg_monitor`: the
  collector fails naming it otherwise).
- `pg_wal_position_bytes_total`: the WAL position in bytes (on a primary the insert position,
  on a replica the last replayed one); `rate()` of it is the WAL write (or replay) rate on
  every version, PostgreSQL 13 included.
- From PostgreSQL 14 (`pg_stat_wal`): `pg_stat_wal_{records,fpi,bytes,buffers_full}_total`
  and `pg_stat_wal_stats_reset_timestamp_seconds`; on 14-17 also
  `pg_stat_wal_{write,sync}_total` and `pg_stat_wal_{write,sync}_time_seconds_total` (18 moved
  these to `pg_stat_io`, so they have no series there). On 13 the `pg_stat_wal_*` families are
  skipped (said once in the log).
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from exporter.collectors.base import Collector, number
from exporter.collectors.columns import Column, row_families
from exporter.collectors.notices import SkipNotice
from exporter.collectors.privileges import require_role
from exporter.settings import CollectorSettings

# Recovery forbids pg_current_wal_lsn(): a replica's position is the last one replayed.
WAL_SQL = r"""
SELECT count(*) AS segments, COALESCE(sum(size), 0) AS size,
       (SELECT pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
                                    ELSE pg_current_wal_lsn() END, '0/0')) AS position
FROM pg_ls_waldir()
WHERE name ~ '^[0-9A-F]{24}$'
"""
STAT_WAL_VERSION = 140000
IO_MOVED_VERSION = 180000
STAT_WAL = (
    Column("wal_records", "pg_stat_wal_records", "WAL records generated."),
    Column("wal_fpi", "pg_stat_wal_fpi", "WAL full page images generated."),
    Column("wal_bytes", "pg_stat_wal_bytes", "WAL generated, in bytes."),
    Column("wal_buffers_full", "pg_stat_wal_buffers_full",
           "Times WAL was written to disk because the WAL buffers were full."),
    Column("stats_reset", "pg_stat_wal_stats_reset_timestamp_seconds",
           "Unix time these statistics were last reset (0: never).", "timestamp"),
)  # fmt: skip
BEFORE_18 = (
    Column("wal_write", "pg_stat_wal_write", "Times WAL buffers were written out to disk."),
    Column("wal_sync", "pg_stat_wal_sync", "Times WAL files were synced to disk."),
    Column("wal_write_time", "pg_stat_wal_write_time_seconds",
           "Time spent writing WAL buffers to disk (0 unless track_wal_io_timing is on).",
           scale=0.001),
    Column("wal_sync_time", "pg_stat_wal_sync_time_seconds",
           "Time spent syncing WAL files to disk (0 unless track_wal_io_timing is on).",
           scale=0.001),
)  # fmt: skip


class WalCollector(Collector[CollectorSettings]):
    name = "wal"
    database_wide = True
    server_wide = True

    def __init__(self, datname: str, settings: CollectorSettings) -> None:
        super().__init__(datname, settings)
        self._notice = SkipNotice(self.name, datname)

    async def collect(self, conn: AsyncConnection, server_version: int) -> Sequence[Metric]:
        await require_role(conn, "pg_monitor", "list the WAL directory with pg_ls_waldir()")
        row = (await conn.execute(text(WAL_SQL))).one()
        segments = GaugeMetricFamily("pg_wal_segments", "WAL segment files in pg_wal.", labels=[])
        segments.add_metric([], number(row.segments))
        size = GaugeMetricFamily("pg_wal_size_bytes", "Size of the WAL segment files.", labels=[])
        size.add_metric([], number(row.size))
        position = CounterMetricFamily(
            "pg_wal_position_bytes",
            "WAL position in bytes: inserted on a primary, replayed on a replica.",
            labels=[],
        )
        position.add_metric([], number(row.position))
        families: list[Metric] = [segments, size, position]
        if server_version < STAT_WAL_VERSION:
            self._notice.skipped("pg_stat_wal needs PostgreSQL 14: pg_stat_wal_* skipped")
            return families
        self._notice.skipped(None)
        columns = STAT_WAL if server_version >= IO_MOVED_VERSION else STAT_WAL + BEFORE_18
        sql = f"SELECT {', '.join(c.column for c in columns)} FROM pg_stat_wal"
        families.extend(row_families((await conn.execute(text(sql))).one(), columns))
        return families

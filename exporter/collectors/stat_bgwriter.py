"""Background writer: buffers it cleaned, how often it stopped early, buffers allocated.

Server-wide, from `pg_stat_bgwriter`, under postgres_exporter's `stat_bgwriter` names (no
labels): `pg_stat_bgwriter_{buffers_clean,maxwritten_clean,buffers_alloc}_total` and the reset
time `pg_stat_bgwriter_stats_reset_timestamp_seconds` (postgres_exporter:
`pg_stat_bgwriter_stats_reset_total`, a counter holding the same Unix time).

Before PostgreSQL 17 the view also held the checkpointer's columns and the backends' own
writes; as postgres_exporter does, they are exported here on those versions only:
`pg_stat_bgwriter_{checkpoints_timed,checkpoints_req,buffers_checkpoint,buffers_backend,
buffers_backend_fsync}_total` and `pg_stat_bgwriter_checkpoint_{write,sync}_time_seconds_total`
(seconds; postgres_exporter's `..._time_total` are milliseconds). PostgreSQL 17 moved the
checkpoint columns to `pg_stat_checkpointer` and dropped the backend ones (now in
`pg_stat_io`). For checkpoint metrics that read the same on every version, use the
`stat_checkpointer` collector's `pg_stat_checkpointer_*` families.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

from prometheus_client.metrics_core import Metric
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from exporter.collectors.base import Collector
from exporter.collectors.columns import Column, row_families
from exporter.settings import CollectorSettings

# pg_stat_checkpointer exists from this server_version_num on.
CHECKPOINTER_VERSION = 170000

BGWRITER = (
    Column("buffers_clean", "pg_stat_bgwriter_buffers_clean",
           "Buffers written by the background writer."),
    Column("maxwritten_clean", "pg_stat_bgwriter_maxwritten_clean",
           "Times the background writer stopped a cleaning scan, having written too many "
           "buffers."),
    Column("buffers_alloc", "pg_stat_bgwriter_buffers_alloc", "Buffers allocated."),
    Column("stats_reset", "pg_stat_bgwriter_stats_reset_timestamp_seconds",
           "Unix time these statistics were last reset (0: never).", "timestamp"),
)  # fmt: skip
BEFORE_17 = (
    Column("checkpoints_timed", "pg_stat_bgwriter_checkpoints_timed",
           "Scheduled checkpoints performed."),
    Column("checkpoints_req", "pg_stat_bgwriter_checkpoints_req",
           "Requested checkpoints performed."),
    Column("checkpoint_write_time", "pg_stat_bgwriter_checkpoint_write_time_seconds",
           "Time checkpoints spent writing files to disk.", scale=0.001),
    Column("checkpoint_sync_time", "pg_stat_bgwriter_checkpoint_sync_time_seconds",
           "Time checkpoints spent synchronizing files to disk.", scale=0.001),
    Column("buffers_checkpoint", "pg_stat_bgwriter_buffers_checkpoint",
           "Buffers written during checkpoints."),
    Column("buffers_backend", "pg_stat_bgwriter_buffers_backend",
           "Buffers written directly by a backend."),
    Column("buffers_backend_fsync", "pg_stat_bgwriter_buffers_backend_fsync",
           "Times a backend had to execute its own fsync call."),
)  # fmt: skip


class StatBgwriterCollector(Collector[CollectorSettings]):
    name = "stat_bgwriter"
    database_wide = True
    server_wide = True
    postgres_exporter_names: ClassVar[Mapping[str, str]] = {
        "pg_stat_bgwriter_stats_reset_timestamp_seconds": "pg_stat_bgwriter_stats_reset_total",
        "pg_stat_bgwriter_checkpoint_write_time_seconds": (
            "pg_stat_bgwriter_checkpoint_write_time_total"
        ),
        "pg_stat_bgwriter_checkpoint_sync_time_seconds": (
            "pg_stat_bgwriter_checkpoint_sync_time_total"
        ),
    }

    postgres_exporter_scales: ClassVar[Mapping[str, float]] = {
        "pg_stat_bgwriter_checkpoint_write_time_seconds": 1000.0,
        "pg_stat_bgwriter_checkpoint_sync_time_seconds": 1000.0,
    }

    async def collect(self, conn: AsyncConnection, server_version: int) -> Sequence[Metric]:
        columns = BGWRITER if server_version >= CHECKPOINTER_VERSION else BGWRITER + BEFORE_17
        sql = f"SELECT {', '.join(c.column for c in columns)} FROM pg_stat_bgwriter"
        return row_families((await conn.execute(text(sql))).one(), columns)

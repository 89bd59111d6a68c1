"""Checkpointer: checkpoints by cause, the time they spent writing and syncing, buffers written.

Server-wide, the same families on every version, under postgres_exporter's
`stat_checkpointer` names (no labels): `pg_stat_checkpointer_{num_timed,num_requested,
buffers_written}_total`, `pg_stat_checkpointer_{write,sync}_time_seconds_total` (seconds;
postgres_exporter's `..._time_total` are milliseconds) and
`pg_stat_checkpointer_stats_reset_timestamp_seconds` (postgres_exporter:
`..._stats_reset_total`, a counter holding the same Unix time).

PostgreSQL 17 moved these columns from `pg_stat_bgwriter` to `pg_stat_checkpointer` (and
renamed them): the query is chosen by server version, and before 17 the same families are read
from `pg_stat_bgwriter` (`checkpoints_timed` -> `num_timed`, `checkpoints_req` ->
`num_requested`, `checkpoint_write_time` -> `write_time`, `checkpoint_sync_time` ->
`sync_time`, `buffers_checkpoint` -> `buffers_written`), so dashboards and alerts use one name
whatever the version. Restartpoints (a replica's checkpoints) are counted from 17 on only:
`pg_stat_checkpointer_restartpoints_{timed,req,done}_total` have no series before (no value to
report, rather than a false 0). postgres_exporter exports this collector on 17+ only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

from prometheus_client.metrics_core import Metric
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from exporter.collectors.base import Collector
from exporter.collectors.columns import Column, row_families
from exporter.collectors.stat_bgwriter import CHECKPOINTER_VERSION
from exporter.settings import CollectorSettings

CHECKPOINTER_SQL = """
SELECT num_timed, num_requested, restartpoints_timed, restartpoints_req, restartpoints_done,
       write_time, sync_time, buffers_written, stats_reset
FROM pg_stat_checkpointer
"""
BGWRITER_SQL = """
SELECT checkpoints_timed AS num_timed, checkpoints_req AS num_requested,
       checkpoint_write_time AS write_time, checkpoint_sync_time AS sync_time,
       buffers_checkpoint AS buffers_written, stats_reset
FROM pg_stat_bgwriter
"""
EVERY_VERSION = (
    Column("num_timed", "pg_stat_checkpointer_num_timed",
           "Scheduled checkpoints (checkpoint_timeout reached)."),
    Column("num_requested", "pg_stat_checkpointer_num_requested",
           "Requested checkpoints (CHECKPOINT, max_wal_size reached, ...)."),
    Column("write_time", "pg_stat_checkpointer_write_time_seconds",
           "Time checkpoints and restartpoints spent writing files to disk.", scale=0.001),
    Column("sync_time", "pg_stat_checkpointer_sync_time_seconds",
           "Time checkpoints and restartpoints spent synchronizing files to disk.",
           scale=0.001),
    Column("buffers_written", "pg_stat_checkpointer_buffers_written",
           "Buffers written during checkpoints and restartpoints."),
    Column("stats_reset", "pg_stat_checkpointer_stats_reset_timestamp_seconds",
           "Unix time these statistics were last reset (0: never).", "timestamp"),
)  # fmt: skip
FROM_17 = (
    Column("restartpoints_timed", "pg_stat_checkpointer_restartpoints_timed",
           "Scheduled restartpoints (on a replica), including ones that could not run."),
    Column("restartpoints_req", "pg_stat_checkpointer_restartpoints_req",
           "Requested restartpoints (on a replica)."),
    Column("restartpoints_done", "pg_stat_checkpointer_restartpoints_done",
           "Restartpoints performed (on a replica)."),
)  # fmt: skip


class StatCheckpointerCollector(Collector[CollectorSettings]):
    name = "stat_checkpointer"
    database_wide = True
    server_wide = True
    postgres_exporter_names: ClassVar[Mapping[str, str]] = {
        "pg_stat_checkpointer_write_time_seconds": "pg_stat_checkpointer_write_time_total",
        "pg_stat_checkpointer_sync_time_seconds": "pg_stat_checkpointer_sync_time_total",
        "pg_stat_checkpointer_stats_reset_timestamp_seconds": (
            "pg_stat_checkpointer_stats_reset_total"
        ),
    }

    postgres_exporter_scales: ClassVar[Mapping[str, float]] = {
        "pg_stat_checkpointer_write_time_seconds": 1000.0,
        "pg_stat_checkpointer_sync_time_seconds": 1000.0,
    }

    async def collect(self, conn: AsyncConnection, server_version: int) -> Sequence[Metric]:
        if server_version >= CHECKPOINTER_VERSION:
            row = (await conn.execute(text(CHECKPOINTER_SQL))).one()
            return row_families(row, EVERY_VERSION + FROM_17)
        return row_families((await conn.execute(text(BGWRITER_SQL))).one(), EVERY_VERSION)

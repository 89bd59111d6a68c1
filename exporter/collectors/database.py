"""Database: transactions, deadlocks, temporary files and block I/O of the current database.

`pg_stat_database` row of `current_database()`, under postgres_exporter's names. The cache hit
ratio is `rate(..._blks_hit_total) / (rate(..._blks_hit_total) + rate(..._blks_read_total))`.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from exporter.collectors.base import Collector, number, timestamp
from exporter.settings import CollectorSettings

DATABASE_SQL = """
SELECT numbackends, xact_commit, xact_rollback, deadlocks, temp_files, temp_bytes,
       blks_read, blks_hit, conflicts, stats_reset
FROM pg_stat_database WHERE datname = current_database()
"""

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
)


class DatabaseCollector(Collector[CollectorSettings]):
    name = "database"
    database_wide = True

    async def collect(self, conn: AsyncConnection, server_version: int) -> Sequence[Metric]:
        row = (await conn.execute(text(DATABASE_SQL))).one()
        labels = [self.datname]
        families: list[Metric] = []
        for column, doc in COUNTERS:
            family = CounterMetricFamily(f"pg_stat_database_{column}", doc, labels=["datname"])
            family.add_metric(labels, number(getattr(row, column)))
            families.append(family)
        backends = GaugeMetricFamily(
            "pg_stat_database_numbackends",
            "Backends connected to this database right now.",
            labels=["datname"],
        )
        backends.add_metric(labels, number(row.numbackends))
        reset = GaugeMetricFamily(
            "pg_stat_database_stats_reset_timestamp_seconds",
            "Unix time this database's statistics were last reset (0: never).",
            labels=["datname"],
        )
        reset.add_metric(labels, timestamp(row.stats_reset))
        families.extend((backends, reset))
        return families

"""Autovacuum activity: `pg_stat_activity_autovacuum_timestamp_seconds{relname}`, one series
per running autovacuum worker, its transaction's start (Unix time), as postgres_exporter's
`stat_activity_autovacuum`. `time() - x` is how long it has been running; a worker stays on
one table for its whole run, so a large value points at a table autovacuum struggles with (or
an anti-wraparound vacuum). At most `autovacuum_max_workers` series. The worker's query text,
which names the table, is visible only to a role with pg_read_all_stats (pg_monitor): without
it the collector fails, naming the grant.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from exporter.collectors.base import Collector, timestamp
from exporter.collectors.privileges import require_role
from exporter.settings import CollectorSettings

# "autovacuum: VACUUM ANALYZE public.t (to prevent wraparound)" -> "t"
AUTOVACUUM_SQL = """
SELECT split_part(split_part(query, '.', 2), ' ', 1) AS relname, xact_start
FROM pg_stat_activity
WHERE backend_type = 'autovacuum worker' AND query LIKE 'autovacuum:%'
ORDER BY xact_start, relname
"""


class StatActivityAutovacuumCollector(Collector[CollectorSettings]):
    name = "stat_activity_autovacuum"
    database_wide = True
    server_wide = True

    async def collect(self, conn: AsyncConnection, server_version: int) -> Sequence[Metric]:
        await require_role(
            conn, "pg_read_all_stats", "see the tables autovacuum workers are processing"
        )
        rows = (await conn.execute(text(AUTOVACUUM_SQL))).all()
        family = GaugeMetricFamily(
            "pg_stat_activity_autovacuum_timestamp_seconds",
            "Unix time the running autovacuum worker started on this table.",
            labels=["relname"],
        )
        for row in rows:
            if row.xact_start is not None:
                family.add_metric([row.relname or "unknown"], timestamp(row.xact_start))
        return [family]

"""Long-running transactions: open transactions on the whole server and the oldest one's age.

As postgres_exporter's `long_running_transactions`: every session of the server in a
transaction (`xact_start` set) that is not idle and not an autovacuum worker, the exporter's
own session left out. `pg_long_running_transactions` counts them and
`pg_long_running_transactions_oldest_age_seconds` is the oldest one's age (0: none);
postgres_exporter calls the age `..._oldest_timestamp_seconds`, which `compatibility:
postgres_exporter` does too. A role that cannot see other roles' sessions would count them as
idle: the collector fails instead, naming the grant.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from exporter.collectors.base import Collector, number
from exporter.collectors.privileges import require_role
from exporter.settings import CollectorSettings

TRANSACTIONS_SQL = """
SELECT count(*) AS transactions,
       max(extract(epoch FROM clock_timestamp() - xact_start)) AS oldest_seconds
FROM pg_stat_activity
WHERE state IS DISTINCT FROM 'idle' AND xact_start IS NOT NULL
  AND backend_type IS DISTINCT FROM 'autovacuum worker'
  AND query NOT LIKE 'autovacuum:%' AND pid <> pg_backend_pid()
"""


class LongRunningTransactionsCollector(Collector[CollectorSettings]):
    name = "long_running_transactions"
    database_wide = True
    server_wide = True
    postgres_exporter_names: ClassVar[Mapping[str, str]] = {
        "pg_long_running_transactions_oldest_age_seconds": (
            "pg_long_running_transactions_oldest_timestamp_seconds"
        )
    }

    async def collect(self, conn: AsyncConnection, server_version: int) -> Sequence[Metric]:
        await require_role(
            conn, "pg_read_all_stats", "see other roles' transactions in pg_stat_activity"
        )
        row = (await conn.execute(text(TRANSACTIONS_SQL))).one()
        count = GaugeMetricFamily(
            "pg_long_running_transactions",
            "Open transactions on the server that are not idle (autovacuum and the exporter's "
            "own left out).",
        )
        count.add_metric([], number(row.transactions))
        oldest = GaugeMetricFamily(
            "pg_long_running_transactions_oldest_age_seconds",
            "Age of the oldest of those transactions (0: none).",
        )
        oldest.add_metric([], number(row.oldest_seconds))
        return [count, oldest]

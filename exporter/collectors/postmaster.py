"""Postmaster: when the server started, `pg_postmaster_start_time_seconds` (Unix time).

`time() - pg_postmaster_start_time_seconds` is the uptime; a change means a restart. Same name
as postgres_exporter's `postmaster` collector.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from exporter.collectors.base import Collector, timestamp
from exporter.settings import CollectorSettings

POSTMASTER_SQL = "SELECT pg_postmaster_start_time()"


class PostmasterCollector(Collector[CollectorSettings]):
    name = "postmaster"
    database_wide = True
    server_wide = True

    async def collect(self, conn: AsyncConnection, server_version: int) -> Sequence[Metric]:
        started = (await conn.execute(text(POSTMASTER_SQL))).scalar_one()
        family = GaugeMetricFamily(
            "pg_postmaster_start_time_seconds", "Unix time the server (postmaster) started."
        )
        family.add_metric([], timestamp(started))
        return [family]

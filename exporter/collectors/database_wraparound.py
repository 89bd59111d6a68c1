"""Database wraparound: how far each database of the server is from transaction-ID wraparound.

Per database that accepts connections (`datallowconn`), label `datname`:
`pg_database_wraparound_age_datfrozenxid` is `age(datfrozenxid)`, transactions since the oldest
unfrozen one, and `pg_database_wraparound_age_datminmxid` is `mxid_age(datminmxid)`, the same
for multixact IDs. The server stops accepting writes near 2^31 (about 2.1 billion); autovacuum
starts its anti-wraparound vacuums at `autovacuum_freeze_max_age` (200 million by default,
`pg_settings_autovacuum_freeze_max_age`). These are counts, not times: postgres_exporter names
them `..._seconds`, as `compatibility: postgres_exporter` does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from exporter.collectors.base import Collector, number
from exporter.settings import CollectorSettings

WRAPAROUND_SQL = """
SELECT datname, age(datfrozenxid) AS age_datfrozenxid, mxid_age(datminmxid) AS age_datminmxid
FROM pg_database WHERE datallowconn ORDER BY datname
"""

AGES = (
    (
        "age_datfrozenxid",
        "Transactions since the oldest transaction ID of the database that is not frozen.",
    ),
    (
        "age_datminmxid",
        "Multixact IDs since the oldest multixact ID of the database that is not frozen.",
    ),
)


class DatabaseWraparoundCollector(Collector[CollectorSettings]):
    name = "database_wraparound"
    database_wide = True
    server_wide = True
    postgres_exporter_names: ClassVar[Mapping[str, str]] = {
        f"pg_database_wraparound_{column}": f"pg_database_wraparound_{column}_seconds"
        for column, _ in AGES
    }

    async def collect(self, conn: AsyncConnection, server_version: int) -> Sequence[Metric]:
        rows = (await conn.execute(text(WRAPAROUND_SQL))).all()
        families: list[Metric] = []
        for column, doc in AGES:
            family = GaugeMetricFamily(f"pg_database_wraparound_{column}", doc, labels=["datname"])
            for row in rows:
                family.add_metric([row.datname], number(getattr(row, column)))
            families.append(family)
        return families

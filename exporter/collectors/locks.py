"""Locks: `pg_locks{datname,mode}`, the locks held or awaited per database and mode.

As postgres_exporter's `locks` collector, which names it `pg_locks_count` (a suffix Prometheus
keeps for histograms and summaries; `compatibility: postgres_exporter` uses that name): every
database of the server and each of the nine table-level lock modes (lower case,
`accesssharelock` ... `sireadlock`), 0 when none, so a rate or a threshold never sees a gap.
Locks not tied to a database (a transaction ID, a relation of a shared catalog) are not
counted.
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

LOCKS_SQL = """
SELECT d.datname, m.mode, coalesce(l.count, 0) AS count
FROM (VALUES ('accesssharelock'), ('rowsharelock'), ('rowexclusivelock'),
             ('shareupdateexclusivelock'), ('sharelock'), ('sharerowexclusivelock'),
             ('exclusivelock'), ('accessexclusivelock'), ('sireadlock')) AS m(mode)
CROSS JOIN pg_database d
LEFT JOIN (SELECT database, lower(mode) AS mode, count(*) AS count
           FROM pg_locks WHERE database IS NOT NULL
           GROUP BY database, lower(mode)) l
  ON l.mode = m.mode AND l.database = d.oid
ORDER BY d.datname, m.mode
"""


class LocksCollector(Collector[CollectorSettings]):
    name = "locks"
    database_wide = True
    server_wide = True
    postgres_exporter_names: ClassVar[Mapping[str, str]] = {"pg_locks": "pg_locks_count"}

    async def collect(self, conn: AsyncConnection, server_version: int) -> Sequence[Metric]:
        rows = (await conn.execute(text(LOCKS_SQL))).all()
        family = GaugeMetricFamily(
            "pg_locks",
            "Locks held or awaited, per database of the server and lock mode.",
            labels=["datname", "mode"],
        )
        for row in rows:
            family.add_metric([row.datname, row.mode], number(row.count))
        return [family]

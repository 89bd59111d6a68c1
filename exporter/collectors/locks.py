"""Locks: `pg_locks{datname,mode}`, the locks held or awaited per database and mode.

As postgres_exporter's `locks` collector, which names it `pg_locks_count` (a suffix Prometheus
keeps for histograms and summaries; `compatibility: postgres_exporter` uses that name): every
database of the server and each of the nine table-level lock modes (lower case,
`accesssharelock` ... `sireadlock`), 0 when none, so a rate or a threshold never sees a gap.
Locks not tied to a database (a transaction ID, a relation of a shared catalog) are not
counted. At most `max_databases` databases keep their own `datname` (the connected one, then
those holding the most locks, by name on ties); the others are summed under `datname="other"`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import ClassVar

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from exporter.collectors.base import Collector
from exporter.collectors.kept_databases import OTHER, kept_databases
from exporter.settings import ServerDatabasesCollectorSettings

LOCKS_SQL = """
SELECT d.datname, d.datname = current_database() AS connected, m.mode,
       coalesce(l.count, 0) AS locks
FROM (VALUES ('accesssharelock'), ('rowsharelock'), ('rowexclusivelock'),
             ('shareupdateexclusivelock'), ('sharelock'), ('sharerowexclusivelock'),
             ('exclusivelock'), ('accessexclusivelock'), ('sireadlock')) AS m(mode)
CROSS JOIN pg_database d
LEFT JOIN (SELECT database, lower(mode) AS mode, count(*) AS count
           FROM pg_locks WHERE database IS NOT NULL
           GROUP BY database, lower(mode)) l
  ON l.mode = m.mode AND l.database = d.oid
"""


class LocksCollector(Collector[ServerDatabasesCollectorSettings]):
    name = "locks"
    database_wide = True
    server_wide = True
    postgres_exporter_names: ClassVar[Mapping[str, str]] = {"pg_locks": "pg_locks_count"}

    async def collect(self, conn: AsyncConnection, server_version: int) -> Sequence[Metric]:
        rows = (await conn.execute(text(LOCKS_SQL))).all()
        kept = kept_databases(rows, lambda r: r.locks, self.settings.max_databases)
        counts: Counter[tuple[str, str]] = Counter()
        for row in rows:
            counts[(row.datname if row.datname in kept else OTHER, row.mode)] += row.locks
        family = GaugeMetricFamily(
            "pg_locks",
            "Locks held or awaited, per database of the server and lock mode (at most "
            "max_databases databases, the rest as other).",
            labels=["datname", "mode"],
        )
        for (datname, mode), count in sorted(counts.items()):
            family.add_metric([datname, mode], count)
        return [family]

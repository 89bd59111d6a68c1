"""Recovery conflicts: queries a standby canceled, per database of the server and cause.

From `pg_stat_database_conflicts` (postgres_exporter's built-in map of that name), labels
`datid, datname`: `pg_stat_database_conflicts_confl_{tablespace,lock,snapshot,bufferpin,
deadlock}_total` and, from PostgreSQL 16 on, `..._confl_active_logicalslot_total` (logical
slots invalidated on a standby). A primary has no conflicts: its counters stay at 0. With
`compatibility: postgres_exporter`, the counters are named without `_total` and carry its
`server` label.

At most `max_databases` databases (the connected one, then by name, so a database keeps its
series while the others come and go); `pg_stat_database_conflicts_series_omitted` counts the
rest. Summing the rest into one series instead would make that series drop whenever a
database left it, which `rate()` reads as a counter reset.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from exporter.collectors.base import Collector, Shape, number
from exporter.settings import ServerDatabasesCollectorSettings

# (column, help): postgres_exporter's five, then the one PostgreSQL 16 added.
CONFLICTS = (
    ("confl_tablespace", "Queries canceled because a tablespace they used was dropped."),
    ("confl_lock", "Queries canceled by lock timeouts."),
    ("confl_snapshot", "Queries canceled because they needed rows vacuum had removed."),
    ("confl_bufferpin", "Queries canceled because they held a buffer pinned."),
    ("confl_deadlock", "Queries canceled to resolve a deadlock with recovery."),
)
LOGICAL_SLOT = (
    "confl_active_logicalslot",
    "Uses of logical slots canceled because the slot was invalidated (PostgreSQL 16+).",
)
LOGICAL_SLOT_VERSION = 160000

# The window count is taken before LIMIT: every database, in the same round trip.
CONFLICTS_SQL = """
SELECT datid::text AS datid, datname, {columns}, count(*) OVER () AS databases
FROM pg_stat_database_conflicts
ORDER BY datname <> current_database(), datname
LIMIT :cap
"""
LABELS = ["datid", "datname"]


class StatDatabaseConflictsCollector(Collector[ServerDatabasesCollectorSettings]):
    name = "stat_database_conflicts"
    database_wide = True
    server_wide = True
    postgres_exporter_names: ClassVar[Mapping[str, str]] = {
        f"pg_stat_database_conflicts_{c}": f"pg_stat_database_conflicts_{c}" for c, _ in CONFLICTS
    }
    postgres_exporter_shapes: ClassVar[Mapping[str, Shape]] = {
        f"pg_stat_database_conflicts_{c}": Shape(server_label=True) for c, _ in CONFLICTS
    }

    async def collect(self, conn: AsyncConnection, server_version: int) -> Sequence[Metric]:
        counters = [*CONFLICTS, *([LOGICAL_SLOT] if server_version >= LOGICAL_SLOT_VERSION else [])]
        sql = CONFLICTS_SQL.format(columns=", ".join(column for column, _ in counters))
        rows = (await conn.execute(text(sql), {"cap": self.settings.max_databases})).all()
        families: list[Metric] = []
        for column, doc in counters:
            family = CounterMetricFamily(f"pg_stat_database_conflicts_{column}", doc, labels=LABELS)
            for r in rows:
                family.add_metric([r.datid, r.datname], number(getattr(r, column)))
            families.append(family)
        omitted = GaugeMetricFamily(
            "pg_stat_database_conflicts_series_omitted",
            "Databases beyond max_databases, without series of their own.",
            labels=[],
        )
        omitted.add_metric([], max(0, (rows[0].databases if rows else 0) - len(rows)))
        return [*families, omitted]

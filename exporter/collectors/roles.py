"""Roles: `pg_roles_connection_limit{rolname}`, each role's connection limit (-1: none).

As postgres_exporter's `roles` collector (its name, type and label in both modes: a gauge
without a unit needs no other name): every row of `pg_roles`, which any role can read, the
built-in `pg_*` roles included. Server-wide. At most `max_roles` roles get a series: those
with a limit first (the ones worth an alert), then by name; `pg_roles_series_omitted` counts
the rest, and the first run that leaves some out says so in the log (again only after a run
that left none out).
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from exporter.collectors.base import Collector, number
from exporter.collectors.notices import SkipNotice
from exporter.settings import RolesCollectorSettings

ROLES_SQL = """
SELECT rolname, rolconnlimit, count(*) OVER () AS roles
FROM pg_roles
ORDER BY rolconnlimit = -1, rolname
LIMIT :cap
"""
COUNT_SQL = "SELECT count(*) FROM pg_roles"


class RolesCollector(Collector[RolesCollectorSettings]):
    name = "roles"
    database_wide = True
    server_wide = True

    def __init__(self, datname: str, settings: RolesCollectorSettings) -> None:
        super().__init__(datname, settings)
        self._notice = SkipNotice(self.name, datname)

    async def collect(self, conn: AsyncConnection, server_version: int) -> Sequence[Metric]:
        cap = self.settings.max_roles
        rows = (await conn.execute(text(ROLES_SQL), {"cap": cap})).all()
        # The window counts every role, in the same snapshot; with no row it says nothing.
        roles = rows[0].roles if rows else (await conn.execute(text(COUNT_SQL))).scalar_one()
        limit = GaugeMetricFamily(
            "pg_roles_connection_limit",
            "Connections the role may open at once (-1: no limit).",
            labels=["rolname"],
        )
        for row in rows:
            limit.add_metric([row.rolname], number(row.rolconnlimit))
        omitted = GaugeMetricFamily(
            "pg_roles_series_omitted",
            "Roles beyond max_roles, without a pg_roles_connection_limit series.",
            labels=[],
        )
        omitted.add_metric([], roles - len(rows))
        self._notice.skipped(
            f"more roles than max_roles ({cap}): those without a connection limit come last, "
            "and the rest are counted in pg_roles_series_omitted"
            if roles > len(rows)
            else None
        )
        return [limit, omitted]

"""Lists the databases of a server for `discover:` (README "Discovering every database").

It runs as one more collector of the configured entry's worker (its own connection, timeouts,
interval and leader election), so listing costs one query on a connection that exists anyway.
Each successful run hands the chosen real names to `on_listed` (the runner starts and stops
the discovered databases' workers) and exports how many are watched and how many the cap left
out. Templates, databases that refuse connections and the entry's own database are never
listed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from fnmatch import fnmatchcase

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from exporter.collectors.base import Collector
from exporter.settings import DiscoverSettings

log = logging.getLogger("exporter.collectors")

_DATABASES = text(
    "SELECT datname FROM pg_database"
    " WHERE NOT datistemplate AND datallowconn AND datname <> current_database()"
    " ORDER BY datname"
)


def chosen(datnames: Sequence[str], settings: DiscoverSettings) -> tuple[list[str], int]:
    """The names to watch (matching an include and no exclude pattern, the first
    `max_databases` in the order given) and how many matched beyond the cap."""
    matching = [
        name
        for name in datnames
        if any(fnmatchcase(name, p) for p in settings.include)
        and not any(fnmatchcase(name, p) for p in settings.exclude)
    ]
    return matching[: settings.max_databases], max(0, len(matching) - settings.max_databases)


class DiscoveryCollector(Collector[DiscoverSettings]):
    name = "discovery"
    database_wide = True  # one exporter of a group lists, and watches, the databases
    server_wide = True  # and one entry of a server: two would watch its databases twice

    def __init__(
        self, database: str, settings: DiscoverSettings, on_listed: Callable[[list[str]], None]
    ) -> None:
        super().__init__(database, settings)
        self._on_listed = on_listed
        self._omitted = 0  # logged when it changes, not at every listing

    def stopped(self) -> None:
        """Another exporter leads now, and watches the databases: let go of them here."""
        self._omitted = 0
        self._on_listed([])

    async def collect(self, conn: AsyncConnection, server_version: int) -> Sequence[Metric]:
        listed = [str(row[0]) for row in await conn.execute(_DATABASES)]
        watched, omitted = chosen(listed, self.settings)
        if omitted != self._omitted and omitted:
            log.warning(
                "database %s: %d more databases match discover but max_databases (%d) is "
                "reached; they are not watched",
                self.database,
                omitted,
                self.settings.max_databases,
            )
        self._omitted = omitted
        self._on_listed(watched)
        count = GaugeMetricFamily(
            "db_discovered_databases",
            "Databases of the server watched through discover (the entry's own left out).",
            labels=["datname"],
        )
        count.add_metric([self.datname], len(watched))
        left_out = GaugeMetricFamily(
            "db_discovered_databases_omitted",
            "Databases matching discover that max_databases left unwatched.",
            labels=["datname"],
        )
        left_out.add_metric([self.datname], omitted)
        return [count, left_out]

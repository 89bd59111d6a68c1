"""Settings: the server's numeric and boolean settings, `pg_settings_<name>[_<unit>]`.

As postgres_exporter exports them (its names, so `pg_settings_max_connections` works in its
dashboards): one gauge per `pg_settings` row of type bool (1 on, 0 off), integer or real; a
name's dots become underscores; times are converted to `_seconds`, sizes to `_bytes` (-1, which
means "off" or "no limit" for many settings, is left as it is); for promtool's lint, a
type's name in a setting's name becomes plural (`pg_settings_wal_summaries_keep_time_seconds`)
and a name ending in a reserved suffix is untyped (`pg_settings_tcp_keepalives_count`);
postgres_exporter's mode keeps its names and gauges. A unit this exporter does not
know (a newer server's) skips that setting, logged once. At most `max_settings` settings are
exported (alphabetically; extensions can add many). Values are those the exporter's session
sees: `statement_timeout` and `lock_timeout` are its own (the collector's timeouts).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from exporter.collectors.base import Collector, Shape
from exporter.collectors.slices import Steps, in_slices
from exporter.settings import SettingsCollectorSettings

log = logging.getLogger("exporter.collectors")

SETTINGS_SQL = """
SELECT name, setting, coalesce(unit, '') AS unit, short_desc, vartype
FROM pg_settings WHERE vartype IN ('bool', 'integer', 'real')
ORDER BY name
"""

# pg_settings unit -> (suffix, factor to the base unit).
UNITS: dict[str, tuple[str, float]] = {
    "": ("", 1),
    "ms": ("seconds", 1 / 1000),
    "s": ("seconds", 1),
    "min": ("seconds", 60),
    "h": ("seconds", 3600),
    "d": ("seconds", 86400),
    "B": ("bytes", 1),
    "kB": ("bytes", 2**10),
    "MB": ("bytes", 2**20),
    "GB": ("bytes", 2**30),
    "TB": ("bytes", 2**40),
    "8kB": ("bytes", 2**13),
    "16kB": ("bytes", 2**14),
    "32kB": ("bytes", 2**15),
    "16MB": ("bytes", 2**24),
    "32MB": ("bytes", 2**25),
    "64MB": ("bytes", 2**26),
}


# promtool's lint flags a metric whose name holds a type's name (wal_summary_keep_time) or,
# when typed, ends in a suffix Prometheus keeps for histograms, summaries and counters
# (tcp_keepalives_count). Here the type's name becomes plural (pg_settings_wal_summaries_...),
# and a reserved suffix makes the setting untyped (the lint leaves it alone; Prometheus reads it
# as a gauge). postgres_exporter's mode keeps its names and gauges.
RESERVED_SUFFIXES = ("_count", "_sum", "_bucket", "_total", "_created")
PLURALS = {
    "counter": "counters",
    "gauge": "gauges",
    "histogram": "histograms",
    "summary": "summaries",
}
_SINGULARS = {plural: word for word, plural in PLURALS.items()}


def lint_safe_name(name: str) -> str:
    """`name` with each word that names a metric type made plural."""
    return "_".join(PLURALS.get(part, part) for part in name.split("_"))


class _PostgresExporterNames(Mapping[str, str]):
    """postgres_exporter's name of each pg_settings family renamed by `lint_safe_name`."""

    def __getitem__(self, name: str) -> str:
        parts = name.split("_")
        if not name.startswith("pg_settings_") or _SINGULARS.keys().isdisjoint(parts):
            raise KeyError(name)
        return "_".join(_SINGULARS.get(part, part) for part in parts)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


class _PostgresExporterShapes(Mapping[str, Shape]):
    """Every pg_settings family carries postgres_exporter's `server` label; the untyped ones
    are its gauges."""

    def __getitem__(self, name: str) -> Shape:
        if not name.startswith("pg_settings_"):
            raise KeyError(name)
        untyped = name.endswith(RESERVED_SUFFIXES)
        return Shape(type="gauge" if untyped else None, server_label=True)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def setting_family(row: Any) -> Metric | None:
    """One pg_settings row as postgres_exporter's gauge; None for a unit it cannot convert."""
    if row.unit not in UNITS:
        return None
    name, doc = f"pg_settings_{row.name.replace('.', '_')}", row.short_desc or row.name
    if row.vartype == "bool":
        value = 1.0 if row.setting == "on" else 0.0
    else:
        suffix, factor = UNITS[row.unit]
        value = float(row.setting)
        if suffix:
            name, doc = f"{name}_{suffix}", f"{doc} [Units converted to {suffix}.]"
            value = value if value == -1 else value * factor
    name = lint_safe_name(name)
    if name.endswith(RESERVED_SUFFIXES):
        family = Metric(name, doc, "unknown")
        family.add_sample(name, {}, value)
        return family
    gauge = GaugeMetricFamily(name, doc)
    gauge.add_metric([], value)
    return gauge


class SettingsCollector(Collector[SettingsCollectorSettings]):
    name = "settings"
    database_wide = True
    server_wide = True
    postgres_exporter_names: ClassVar[Mapping[str, str]] = _PostgresExporterNames()
    postgres_exporter_shapes: ClassVar[Mapping[str, Shape]] = _PostgresExporterShapes()

    def __init__(self, datname: str, settings: SettingsCollectorSettings) -> None:
        super().__init__(datname, settings)
        self._unknown_units: set[str] = set()  # logged once each

    async def collect(self, conn: AsyncConnection, server_version: int) -> Sequence[Metric]:
        rows = (await conn.execute(text(SETTINGS_SQL))).all()
        return await in_slices(self.families(rows))

    def families(self, rows: Sequence[Any]) -> Steps[list[Metric]]:
        families: list[Metric] = []
        for row in rows[: self.settings.max_settings]:
            family = setting_family(row)
            if family is None:
                if row.unit not in self._unknown_units:
                    self._unknown_units.add(row.unit)
                    log.info(
                        "collector settings on database %s: unit %r of %s is not known; "
                        "settings in it are skipped",
                        self.database,
                        row.unit,
                        row.name,
                    )
                continue
            families.append(family)
            yield
        return families

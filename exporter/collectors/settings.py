"""Settings: the server's numeric and boolean settings, `pg_settings_<name>[_<unit>]`.

As postgres_exporter exports them (its names, so `pg_settings_max_connections` works in its
dashboards): one gauge per `pg_settings` row of type bool (1 on, 0 off), integer or real; a
name's dots become underscores; times are converted to `_seconds`, sizes to `_bytes` (-1, which
means "off" or "no limit" for many settings, is left as it is); a name that would end in a
suffix Prometheus reserves (`tcp_keepalives_count`) gets `_value` (postgres_exporter's mode
keeps its name). A unit this exporter does not
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


# Prometheus keeps these suffixes for histograms, summaries and counters: a setting whose name
# ends in one (tcp_keepalives_count) gets `_value` after it, except in postgres_exporter's mode.
RESERVED_SUFFIXES = ("_count", "_sum", "_bucket", "_total", "_created")


class _WithoutValueSuffix(Mapping[str, str]):
    """postgres_exporter's name of each `..._value` family: the name without `_value`."""

    def __getitem__(self, name: str) -> str:
        stem = name.removesuffix("_value")
        if stem == name or not stem.endswith(RESERVED_SUFFIXES):
            raise KeyError(name)
        return stem

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def setting_family(row: Any) -> GaugeMetricFamily | None:
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
    if name.endswith(RESERVED_SUFFIXES):
        name = f"{name}_value"
    family = GaugeMetricFamily(name, doc)
    family.add_metric([], value)
    return family


class SettingsCollector(Collector[SettingsCollectorSettings]):
    name = "settings"
    database_wide = True
    # postgres_exporter's built-in pg_settings metrics carry its `server` label.
    postgres_exporter_names: ClassVar[Mapping[str, str]] = _WithoutValueSuffix()
    postgres_exporter_shapes: ClassVar[Mapping[str, Shape]] = {
        "pg_settings_*": Shape(server_label=True)
    }

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

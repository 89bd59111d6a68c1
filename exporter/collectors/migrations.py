"""Migrations and drift: is the database at the head of the application's Alembic scripts, and
does its schema match the application's ORM models?

- `db_migrations_pending{datname}`: revisions between the database's `alembic_version` and the
  head(s) of `script_location` (every revision when the database has none).
  `db_migrations_info{datname,database_revision,head_revision}` is 1 and names both (several
  heads joined with `,`; `none` when the database has no revision).
- With `metadata` (an import path such as `myapp.models:Base.metadata`, imported on the first run,
  never by the exporter package itself): `db_schema_drift_differences{datname}`, the number of
  operations Alembic's own `compare_metadata` finds (with its defaults: types compared, server
  defaults not), and `db_schema_drift_missing_index{datname,schemaname,relname,indexrelname}`
  for indexes the models declare and the database lacks (at most `max_missing_indexes`;
  `db_schema_drift_missing_indexes{datname}` counts them all).

Alembic reads the catalog through a synchronous connection: it runs on the exporter's own
connection through `run_sync()`, within this collector's timeouts. A database revision the
scripts do not know (the database is ahead of this code) fails the run, naming it.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Iterable, Sequence
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util import CommandError
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from sqlalchemy import Connection, Index, MetaData
from sqlalchemy.ext.asyncio import AsyncConnection

from exporter.collectors.base import Collector, CollectorError
from exporter.settings import MigrationsCollectorSettings

NONE = "none"
INDEX_LABELS = ["datname", "schemaname", "relname", "indexrelname"]


class MigrationsError(CollectorError):
    """The scripts, the metadata or the database's revision cannot be used; says which."""


def import_metadata(path: str) -> MetaData:
    """`package.module:attr.attr` -> that object, which must be a SQLAlchemy MetaData."""
    module_name, _, attributes = path.partition(":")
    try:
        found: Any = importlib.import_module(module_name)
        for attribute in attributes.split("."):
            found = getattr(found, attribute)
    except Exception as exc:
        message = f"cannot import metadata {path!r}: {type(exc).__name__}: {exc}"
        raise MigrationsError(message) from exc
    if not isinstance(found, MetaData):
        raise MigrationsError(f"metadata {path!r} is a {type(found).__name__}, not a MetaData")
    return found


def flatten(diffs: Iterable[Any]) -> list[tuple[Any, ...]]:
    """compare_metadata() groups a column's modify_* operations in a list: one entry each."""
    ops: list[tuple[Any, ...]] = []
    for diff in diffs:
        ops.extend(diff if isinstance(diff, list) else [diff])
    return ops


class MigrationsCollector(Collector[MigrationsCollectorSettings]):
    name = "migrations"
    database_wide = True

    def __init__(self, datname: str, settings: MigrationsCollectorSettings) -> None:
        super().__init__(datname, settings)
        self._metadata: MetaData | None = None

    async def collect(self, conn: AsyncConnection, server_version: int) -> Sequence[Metric]:
        location = self.settings.script_location
        if location is None:
            raise MigrationsError("script_location is not configured")
        try:
            script = await asyncio.to_thread(ScriptDirectory, location)
        except CommandError as exc:
            raise MigrationsError(f"script_location {location!r}: {exc}") from None
        if self.settings.metadata is not None and self._metadata is None:
            self._metadata = await asyncio.to_thread(import_metadata, self.settings.metadata)
        current, diffs, schema = await conn.run_sync(self._inspect, self._metadata)
        return self.families(script, current, diffs, schema)

    @staticmethod
    def _inspect(
        sync_conn: Connection, metadata: MetaData | None
    ) -> tuple[tuple[str, ...], list[tuple[Any, ...]] | None, str]:
        context = MigrationContext.configure(sync_conn)
        current = tuple(sorted(context.get_current_heads()))
        diffs = None if metadata is None else flatten(compare_metadata(context, metadata))
        return current, diffs, sync_conn.dialect.default_schema_name or "public"

    def families(
        self,
        script: ScriptDirectory,
        current: tuple[str, ...],
        diffs: list[tuple[Any, ...]] | None,
        schema: str,
    ) -> list[Metric]:
        heads = tuple(sorted(script.get_heads()))
        try:
            pending = sum(1 for _ in script.iterate_revisions(heads, current or "base"))
        except (CommandError, RevisionError) as exc:
            revision = ",".join(current)
            raise MigrationsError(
                f"database revision {revision} is not in {self.settings.script_location!r}"
                f" (is the database ahead of these scripts?): {exc}"
            ) from None
        labels = [self.datname]
        pending_family = GaugeMetricFamily(
            "db_migrations_pending",
            "Alembic revisions not yet applied to this database (to reach the scripts' heads).",
            labels=["datname"],
        )
        pending_family.add_metric(labels, pending)
        info = GaugeMetricFamily(
            "db_migrations_info",
            "Always 1: the database's Alembic revision and the scripts' head (none: no revision).",
            labels=["datname", "database_revision", "head_revision"],
        )
        info.add_metric([*labels, ",".join(current) or NONE, ",".join(heads) or NONE], 1)
        families: list[Metric] = [pending_family, info]
        if diffs is None:
            return families

        differences = GaugeMetricFamily(
            "db_schema_drift_differences",
            "Differences Alembic's compare_metadata finds between the ORM models and the "
            "database (0: in step).",
            labels=["datname"],
        )
        differences.add_metric(labels, len(diffs))
        missing: list[Index] = [d[1] for d in diffs if d[0] == "add_index"]
        count = GaugeMetricFamily(
            "db_schema_drift_missing_indexes",
            "Indexes the ORM models declare that the database does not have.",
            labels=["datname"],
        )
        count.add_metric(labels, len(missing))
        named = GaugeMetricFamily(
            "db_schema_drift_missing_index",
            "1 for an index the ORM models declare and the database lacks (at most "
            "max_missing_indexes of them).",
            labels=INDEX_LABELS,
        )
        names = sorted(
            (index.table.schema or schema, index.table.name, str(index.name))
            for index in missing
            if index.table is not None
        )
        for name in names[: self.settings.max_missing_indexes]:
            named.add_metric([*labels, *name], 1)
        families.extend((differences, count, named))
        return families

"""Table block I/O: blocks read from disk and found in the buffer cache, per table.

From `pg_statio_user_tables` of the connected database, labels `datname, schemaname, relname`:
`pg_statio_user_tables_{heap,idx,toast,tidx}_blocks_{read,hit}_total` for the table's heap,
all its indexes, its TOAST table and the TOAST table's index. postgres_exporter's
`statio_user_tables` collector has the same series (`compatibility: postgres_exporter` drops
the `_total`). A table without indexes or without a TOAST table has NULL in those columns;
as postgres_exporter does, they are reported as 0, so every table has all eight series.
A table's cache hit ratio is `rate(..._hit_total) / (rate(..._hit_total) + rate(..._read_total))`.

The statistics views need no grant and show every table of the database, also those the
role cannot read; no table is opened, so a table held `ACCESS EXCLUSIVE` does not stop it
(the `tables` collector's sizes do). At most `max_table_series` tables get series, chosen
alternately by blocks read and by blocks hit; `pg_statio_user_tables_series_omitted` counts
the rest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from prometheus_client.metrics_core import Metric
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from exporter.collectors.base import Collector, PlainRow, number, plain_rows, select
from exporter.collectors.lean import LeanFamily
from exporter.collectors.slices import Steps, in_slices
from exporter.settings import StatioUserTablesCollectorSettings

STATIO_SQL = """
SELECT schemaname, relname, heap_blks_read, heap_blks_hit, idx_blks_read, idx_blks_hit,
       toast_blks_read, toast_blks_hit, tidx_blks_read, tidx_blks_hit
FROM pg_statio_user_tables
"""

LABELS = ["datname", "schemaname", "relname"]

# (part, its help): columns <part>_blks_read and <part>_blks_hit, exported (as postgres_exporter
# names them) as pg_statio_user_tables_<part>_blocks_read_total and ..._blocks_hit_total.
PARTS = (
    ("heap", "this table's heap"),
    ("idx", "all indexes of this table"),
    ("toast", "this table's TOAST table (0 without one)"),
    ("tidx", "the index of this table's TOAST table (0 without one)"),
)
# (column, family name, help) of every counter.
COUNTERS = tuple(
    (
        f"{part}_blks_{kind}",
        f"pg_statio_user_tables_{part}_blocks_{kind}",
        f"Disk blocks read from {where}." if kind == "read" else f"Buffer hits in {where}.",
    )
    for part, where in PARTS
    for kind in ("read", "hit")
)


@dataclass(frozen=True)
class TableIO:
    labels: tuple[str, str, str]
    row: PlainRow
    read: float  # blocks read, every part
    hit: float  # buffer hits, every part


def by_read(table: TableIO) -> float:
    return table.read


def by_hit(table: TableIO) -> float:
    return table.hit


class StatioUserTablesCollector(Collector[StatioUserTablesCollectorSettings]):
    name = "statio_user_tables"
    database_wide = True
    # postgres_exporter's counters have no _total.
    postgres_exporter_names: ClassVar[Mapping[str, str]] = {name: name for _, name, _ in COUNTERS}

    async def collect(self, conn: AsyncConnection, server_version: int) -> Sequence[Metric]:
        rows = await in_slices(plain_rows(await conn.execute(text(STATIO_SQL))))
        return await in_slices(self.families(rows))

    def families(self, rows: Sequence[PlainRow]) -> Steps[list[Metric]]:
        tables = [
            TableIO(
                (self.datname, r["schemaname"], r["relname"]),
                r,
                sum(number(r[f"{part}_blks_read"]) for part, _ in PARTS),
                sum(number(r[f"{part}_blks_hit"]) for part, _ in PARTS),
            )
            for r in rows
        ]
        chosen = yield from select(tables, set(), self.settings.max_table_series, (by_read, by_hit))
        counters = [
            (column, LeanFamily(name, doc, "counter", LABELS)) for column, name, doc in COUNTERS
        ]
        for position in chosen:
            table = tables[position]
            labels = table.labels
            for column, family in counters:
                family.add_metric(labels, number(table.row[column]))
            yield
        omitted = LeanFamily(
            "pg_statio_user_tables_series_omitted",
            "Tables without block I/O series because of the max_table_series cap.",
            "gauge",
            ["datname"],
        )
        omitted.add_metric([self.datname], len(tables) - len(chosen))
        families: list[Metric] = [family for _, family in counters]
        families.append(omitted)
        return families

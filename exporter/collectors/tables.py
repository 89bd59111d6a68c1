"""Tables: sequential vs index scans, live and dead rows, (auto)vacuum and analyze, sizes.

Per-table series (labels `datname, schemaname, relname`) use postgres_exporter's
`pg_stat_user_tables_*` names where it has them; sizes are split into the heap
(`pg_table_size_bytes`, main fork), its indexes and its TOAST table (with the TOAST index).
Vacuum and analyze times are Unix timestamps (0: never), so an age is `time() - x`. With
`compatibility: postgres_exporter` the names are postgres_exporter's (`postgres_exporter_names`).

The sizes open each table, so a table held `ACCESS EXCLUSIVE` by a migration makes this
collector fail after `lock_timeout_seconds` (the others are unaffected). At most
`max_table_series` tables get series, chosen alternately by total size and by scans;
`pg_table_series_omitted` counts the rest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from prometheus_client.metrics_core import Metric
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from exporter.collectors.base import (
    Collector,
    PlainRow,
    by_scans,
    by_size,
    number,
    plain_rows,
    select,
    timestamp,
)
from exporter.collectors.lean import LeanFamily
from exporter.collectors.slices import Steps, in_slices
from exporter.settings import TablesCollectorSettings

TABLES_SQL = """
SELECT s.schemaname, s.relname,
       s.seq_scan, s.seq_tup_read, s.idx_scan, s.idx_tup_fetch,
       s.n_tup_ins, s.n_tup_upd, s.n_tup_del, s.n_tup_hot_upd,
       s.n_live_tup, s.n_dead_tup, s.n_mod_since_analyze,
       s.vacuum_count, s.autovacuum_count, s.analyze_count, s.autoanalyze_count,
       s.last_vacuum, s.last_autovacuum, s.last_analyze, s.last_autoanalyze,
       pg_relation_size(s.relid) AS table_bytes,
       pg_indexes_size(s.relid) AS indexes_bytes,
       CASE WHEN c.reltoastrelid = 0 THEN 0
            ELSE pg_total_relation_size(c.reltoastrelid) END AS toast_bytes
FROM pg_stat_user_tables s
JOIN pg_class c ON c.oid = s.relid
"""

LABELS = ["datname", "schemaname", "relname"]

COUNTERS = (
    ("seq_scan", "Sequential scans initiated on this table."),
    ("seq_tup_read", "Live rows fetched by sequential scans."),
    ("idx_scan", "Index scans initiated on this table."),
    ("idx_tup_fetch", "Live rows fetched by index scans."),
    ("n_tup_ins", "Rows inserted."),
    ("n_tup_upd", "Rows updated (including HOT updates)."),
    ("n_tup_del", "Rows deleted."),
    ("n_tup_hot_upd", "Rows HOT updated (no separate index update needed)."),
    ("vacuum_count", "Times this table was vacuumed manually."),
    ("autovacuum_count", "Times this table was vacuumed by autovacuum."),
    ("analyze_count", "Times this table was analyzed manually."),
    ("autoanalyze_count", "Times this table was analyzed by autovacuum."),
)
GAUGES = (
    ("n_live_tup", "pg_stat_user_tables_n_live_tup", "Estimated live rows."),
    ("n_dead_tup", "pg_stat_user_tables_n_dead_tup", "Estimated dead rows."),
    (
        "n_mod_since_analyze",
        "pg_stat_user_tables_n_mod_since_analyze",
        "Estimated rows changed since the table was last analyzed.",
    ),
    ("table_bytes", "pg_table_size_bytes", "Size of the table's heap (main fork)."),
    ("indexes_bytes", "pg_table_indexes_size_bytes", "Size of all the table's indexes."),
    ("toast_bytes", "pg_table_toast_size_bytes", "Size of the table's TOAST table and index."),
)
TIMESTAMPS = ("last_vacuum", "last_autovacuum", "last_analyze", "last_autoanalyze")


@dataclass(frozen=True)
class Table:
    labels: tuple[str, str, str]
    row: PlainRow
    size: float
    scans: float


class TablesCollector(Collector[TablesCollectorSettings]):
    name = "tables"
    database_wide = True
    # postgres_exporter's stat_user_tables: counters without _total, times without a unit.
    # Its table_size_bytes is pg_table_size() (with TOAST), ours the heap alone.
    postgres_exporter_names: ClassVar[Mapping[str, str]] = {
        **{f"pg_stat_user_tables_{c}": f"pg_stat_user_tables_{c}" for c, _ in COUNTERS},
        **{
            f"pg_stat_user_tables_{c}_timestamp_seconds": f"pg_stat_user_tables_{c}"
            for c in TIMESTAMPS
        },
        "pg_table_size_bytes": "pg_stat_user_tables_table_size_bytes",
        "pg_table_indexes_size_bytes": "pg_stat_user_tables_index_size_bytes",
    }

    async def collect(self, conn: AsyncConnection, server_version: int) -> Sequence[Metric]:
        rows = await in_slices(plain_rows(await conn.execute(text(TABLES_SQL))))
        return await in_slices(self.families(rows))

    def families(self, rows: Sequence[PlainRow]) -> Steps[list[Metric]]:
        tables = [
            Table(
                (self.datname, r["schemaname"], r["relname"]),
                r,
                number(r["table_bytes"]) + number(r["indexes_bytes"]) + number(r["toast_bytes"]),
                number(r["seq_scan"]) + number(r["idx_scan"]),
            )
            for r in rows
        ]
        chosen = yield from select(
            tables, set(), self.settings.max_table_series, (by_size, by_scans)
        )
        counters = [
            (column, LeanFamily(f"pg_stat_user_tables_{column}", doc, "counter", LABELS))
            for column, doc in COUNTERS
        ]
        gauges = [(column, LeanFamily(name, doc, "gauge", LABELS)) for column, name, doc in GAUGES]
        times = [
            (
                column,
                LeanFamily(
                    f"pg_stat_user_tables_{column}_timestamp_seconds",
                    f"Unix time of the table's {column.replace('_', ' ')} (0: never).",
                    "gauge",
                    LABELS,
                ),
            )
            for column in TIMESTAMPS
        ]
        for position in chosen:
            table = tables[position]
            labels = table.labels
            for column, family in counters + gauges:
                family.add_metric(labels, number(table.row[column]))
            for column, family in times:
                family.add_metric(labels, timestamp(table.row[column]))
            yield
        omitted = LeanFamily(
            "pg_table_series_omitted",
            "Tables without per-table series because of the max_table_series cap.",
            "gauge",
            ["datname"],
        )
        omitted.add_metric([self.datname], len(tables) - len(chosen))
        families: list[Metric] = [f for _, f in counters + gauges + times]
        families.append(omitted)
        return families

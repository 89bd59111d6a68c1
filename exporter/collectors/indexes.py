"""Indexes: usage, I/O and size per index, plus the ones worth a second look.

Per-index series use postgres_exporter's proposed names (PR #1071, also Grafana Alloy's), with
labels `datname, schemaname, relname, indexrelname`. Flags:

- `pg_index_unused`: no scans since the statistics were reset, not backing a primary key, a
  unique or exclusion constraint or the replica identity, valid, and at least
  `unused_min_size_bytes` large. Read it with `pg_index_stats_age_seconds`: zero scans in an
  hour mean little, zero scans in a month mean a lot.
- `pg_index_invalid`: `indisvalid` is false (typically a failed `CREATE INDEX CONCURRENTLY`);
  the index is maintained on every write and never used.
- `pg_index_duplicate`: another valid index of the same table has the same access method,
  columns, operator classes, collations, sort options, expressions and predicate (uniqueness
  aside: a plain index beside a unique one on the same columns is redundant too).

Cardinality: per-index series are kept for at most `max_index_series` indexes, chosen
alternately by size and by scans; flagged indexes are always kept (even beyond the cap).
`pg_index_series_omitted` counts the indexes left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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
from exporter.settings import IndexesCollectorSettings

INDEXES_SQL = """
SELECT s.schemaname, s.relname, s.indexrelname,
       s.idx_scan, s.idx_tup_read, s.idx_tup_fetch,
       io.idx_blks_read, io.idx_blks_hit,
       pg_relation_size(s.indexrelid) AS size_bytes,
       i.indisprimary, i.indisunique, i.indisexclusion, i.indisreplident, i.indisvalid,
       i.indrelid, c.relam, i.indkey::text AS indkey, i.indclass::text AS indclass,
       i.indcollation::text AS indcollation, i.indoption::text AS indoption,
       pg_get_expr(i.indexprs, i.indrelid) AS expressions,
       pg_get_expr(i.indpred, i.indrelid) AS predicate,
       {last_idx_scan} AS last_idx_scan
FROM pg_stat_user_indexes s
JOIN pg_statio_user_indexes io ON io.indexrelid = s.indexrelid
JOIN pg_index i ON i.indexrelid = s.indexrelid
JOIN pg_class c ON c.oid = s.indexrelid
"""
# pg_stat_user_indexes.last_idx_scan exists from PostgreSQL 16 on.
LAST_IDX_SCAN_VERSION = 160000

# How long the statistics behind "no scans" have been accumulating. A database whose statistics
# were never reset has no stats_reset; the server's start is then a lower bound.
STATS_AGE_SQL = """
SELECT extract(epoch FROM now() - coalesce(stats_reset, pg_postmaster_start_time()))
FROM pg_stat_database WHERE datname = current_database()
"""

LABELS = ["datname", "schemaname", "relname", "indexrelname"]

# (column, family name, help) of the per-index counters.
COUNTERS = (
    ("idx_scan", "pg_stat_user_indexes_idx_scan", "Index scans initiated on this index."),
    (
        "idx_tup_read",
        "pg_stat_user_indexes_idx_tup_read",
        "Index entries returned by scans on this index.",
    ),
    (
        "idx_tup_fetch",
        "pg_stat_user_indexes_idx_tup_fetch",
        "Live table rows fetched by simple index scans using this index.",
    ),
    (
        "idx_blks_read",
        "pg_statio_user_indexes_idx_blks_read",
        "Disk blocks read from this index.",
    ),
    ("idx_blks_hit", "pg_statio_user_indexes_idx_blks_hit", "Buffer hits in this index."),
)


# What two valid indexes of a table share when one is a duplicate of the other.
IDENTITY = (
    "indrelid", "relam", "indkey", "indclass", "indcollation", "indoption", "expressions",
    "predicate",
)  # fmt: skip


@dataclass(frozen=True)
class Index:
    labels: tuple[str, str, str, str]
    row: PlainRow
    size: float
    scans: float
    unused: bool
    invalid: bool


def duplicates(rows: Sequence[PlainRow]) -> Steps[dict[tuple[str, str], str]]:
    """(schemaname, indexrelname) -> the name of another index identical to it. In steps."""
    groups: dict[tuple[Any, ...], list[tuple[str, str]]] = {}
    for r in rows:
        yield
        if not r["indisvalid"]:  # reported as invalid; it does not do the other index's job
            continue
        key = tuple(r[column] for column in IDENTITY)
        groups.setdefault(key, []).append((r["schemaname"], r["indexrelname"]))
    found: dict[tuple[str, str], str] = {}
    for members in groups.values():
        if len(members) > 1:
            names = sorted(members)
            for member in names:
                found[member] = next(other[1] for other in names if other != member)
    return found


class IndexesCollector(Collector[IndexesCollectorSettings]):
    name = "indexes"
    database_wide = True

    async def collect(self, conn: AsyncConnection, server_version: int) -> Sequence[Metric]:
        last_scan = "s.last_idx_scan" if server_version >= LAST_IDX_SCAN_VERSION else "NULL"
        result = await conn.execute(text(INDEXES_SQL.format(last_idx_scan=last_scan)))
        rows = await in_slices(plain_rows(result))
        stats_age = number((await conn.execute(text(STATS_AGE_SQL))).scalar())
        # Thousands of samples are pure CPU work: built in slices, never one long stall.
        return await in_slices(self.families(rows, stats_age, server_version))

    def families(
        self, rows: Sequence[PlainRow], stats_age: float, server_version: int
    ) -> Steps[list[Metric]]:
        min_size = self.settings.unused_min_size_bytes
        indexes = []
        for r in rows:
            size_bytes = number(r["size_bytes"])
            protected = (
                r["indisprimary"] or r["indisunique"] or r["indisexclusion"] or r["indisreplident"]
            )
            indexes.append(
                Index(
                    labels=(self.datname, r["schemaname"], r["relname"], r["indexrelname"]),
                    row=r,
                    size=size_bytes,
                    scans=number(r["idx_scan"]),
                    unused=bool(
                        r["indisvalid"]
                        and not protected
                        and not r["idx_scan"]
                        and size_bytes >= min_size
                    ),
                    invalid=not r["indisvalid"],
                )
            )
            yield
        duplicate_of = yield from duplicates(rows)
        forced = {
            i
            for i, index in enumerate(indexes)
            if index.unused or index.invalid or (index.labels[1], index.labels[3]) in duplicate_of
        }
        chosen = yield from select(
            indexes, forced, self.settings.max_index_series, (by_size, by_scans)
        )

        counters = [
            (column, LeanFamily(name, doc, "counter", LABELS)) for column, name, doc in COUNTERS
        ]
        size = LeanFamily("pg_index_size_bytes", "On-disk size of this index.", "gauge", LABELS)
        families: list[Metric] = [family for _, family in counters]
        families.append(size)
        last_idx_scan = None
        if server_version >= LAST_IDX_SCAN_VERSION:
            last_idx_scan = LeanFamily(
                "pg_stat_user_indexes_last_idx_scan_timestamp_seconds",
                "Unix time of the last scan of this index (0: none since the statistics reset).",
                "gauge",
                LABELS,
            )
            families.append(last_idx_scan)
        for position in chosen:
            index = indexes[position]
            labels = index.labels
            for column, family in counters:
                family.add_metric(labels, number(index.row[column]))
            size.add_metric(labels, index.size)
            if last_idx_scan is not None:
                last_idx_scan.add_metric(labels, timestamp(index.row["last_idx_scan"]))
            yield

        unused = LeanFamily(
            "pg_index_unused",
            "1 for an unused-index candidate: no scans since the statistics reset, valid, not "
            "backing a primary key, unique or exclusion constraint or the replica identity, and "
            "at least unused_min_size_bytes large.",
            "gauge",
            LABELS,
        )
        invalid = LeanFamily(
            "pg_index_invalid",
            "1 for an invalid index (for example left by a failed CREATE INDEX CONCURRENTLY).",
            "gauge",
            LABELS,
        )
        duplicate = LeanFamily(
            "pg_index_duplicate",
            "1 for an index identical to another index of the same table (same access method, "
            "columns, operator classes, expressions and predicate), named in duplicate_of.",
            "gauge",
            [*LABELS, "duplicate_of"],
        )
        for index in indexes:
            if index.unused:
                unused.add_metric(index.labels, 1)
            if index.invalid:
                invalid.add_metric(index.labels, 1)
            other = duplicate_of.get((index.labels[1], index.labels[3]))
            if other is not None:
                duplicate.add_metric([*index.labels, other], 1)
            yield
        age = LeanFamily(
            "pg_index_stats_age_seconds",
            "Seconds since this database's statistics were reset (when never reset: since the "
            "server started, a lower bound); the window in which pg_index_unused saw no scans.",
            "gauge",
            ["datname"],
        )
        age.add_metric([self.datname], stats_age)
        omitted = LeanFamily(
            "pg_index_series_omitted",
            "Indexes without per-index series because of the max_index_series cap.",
            "gauge",
            ["datname"],
        )
        omitted.add_metric([self.datname], len(indexes) - len(chosen))
        families.extend((unused, invalid, duplicate, age, omitted))
        return families

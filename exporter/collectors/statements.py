"""Statements: the top `top_k` statements of this database by total execution time.

From `pg_stat_statements`, per `queryid` and role (top-level and nested summed), under
postgres_exporter's names (its `stat_statements` collector), labels `datname, queryid, user`
(the role that ran it): the query id is a number; the metrics' query reads no text
(`pg_stat_statements(showtext => false)`) and no text is ever exported. `top_k` counts
(statement, role) pairs. Counters restart when the statistics are reset or the entry is
evicted, which `rate()` absorbs.

For the on-call page, so that a `queryid` on a dashboard leads to its SQL, the last run's top
(statement, role) pairs are kept in memory (`top`) with their text: at most `top_k`, each text cut
at `query_text_max_length` characters, literals masked. A text is read once, when its queryid
enters the top (reading texts makes the server read its whole query-text file).

Column names follow the installed extension's version, not the server's: `total_time` before
1.8 (PostgreSQL 12 and older, or an extension never `ALTER EXTENSION ... UPDATE`d),
`total_exec_time` from 1.8 on. Planning time is not included.

When the extension is not installed in this database, or its library is not in
`shared_preload_libraries`, the run still succeeds: `pg_stat_statements_available` is 0, no
other series are exported, and the reason is logged once (again only when it changes).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from exporter.collectors.base import Collector, number
from exporter.settings import StatementsCollectorSettings
from exporter.sql import mask_literals
from exporter.sqlstate import sqlstate_of

log = logging.getLogger("exporter.collectors")

EXTENSION_SQL = """
SELECT e.extversion, quote_ident(n.nspname) AS schema
FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
WHERE e.extname = 'pg_stat_statements'
"""
# {schema}: where the extension lives; {total}: total_exec_time (1.8+) or total_time;
# {read}, {write}: the block I/O times (split into shared and local in 1.11).
STATEMENTS_SQL = """
SELECT queryid::text AS queryid, pg_get_userbyid(userid) AS username,
       sum(calls) AS calls, sum({total}) AS total_ms,
       sum(rows) AS rows, sum(shared_blks_hit) AS shared_blks_hit,
       sum(shared_blks_read) AS shared_blks_read, sum({read}) AS read_ms,
       sum({write}) AS write_ms, count(*) OVER () AS statements
FROM {schema}.pg_stat_statements(false)
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND queryid IS NOT NULL
GROUP BY queryid, userid
ORDER BY total_ms DESC, queryid, username
LIMIT :top_k
"""
# The texts of queryids new in the top, cut on the server.
TEXTS_SQL = """
SELECT queryid::text AS queryid, min(left(query, :length)) AS query
FROM {schema}.pg_stat_statements(true)
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND queryid = ANY(CAST(:queryids AS bigint[]))
GROUP BY queryid
"""
# pg_stat_statements 1.8 (PostgreSQL 13) renamed total_time to total_exec_time.
EXEC_TIME_VERSION = (1, 8)
# pg_stat_statements 1.11 (PostgreSQL 17) split blk_read_time into shared and local.
SPLIT_BLOCK_TIME_VERSION = (1, 11)
# "pg_stat_statements must be loaded via shared_preload_libraries"
NOT_LOADED_SQLSTATE = "55000"

LABELS = ["datname", "queryid", "user"]
COUNTERS = (
    ("calls", "pg_stat_statements_calls", "Times the statement was executed."),
    ("rows", "pg_stat_statements_rows", "Rows retrieved or affected by the statement."),
    (
        "shared_blks_hit",
        "pg_stat_statements_shared_blks_hit",
        "Shared buffer hits by the statement.",
    ),
    (
        "shared_blks_read",
        "pg_stat_statements_shared_blks_read",
        "Shared blocks read (cache misses) by the statement.",
    ),
)


@dataclass(frozen=True)
class TopStatement:
    """One of the last run's top (statement, role) pairs, for the on-call page."""

    queryid: str
    user: str  # the role that ran it
    calls: float
    total_ms: float
    rows: float
    text: str | None  # None: not read (query_text_max_length 0, or no longer known)


def extension_version(value: str) -> tuple[int, ...]:
    """'1.10' -> (1, 10); a part that is not a number counts as 0."""
    return tuple(int(part) if part.isdigit() else 0 for part in value.split("."))


class StatementsCollector(Collector[StatementsCollectorSettings]):
    name = "statements"
    database_wide = True

    def __init__(self, datname: str, settings: StatementsCollectorSettings) -> None:
        super().__init__(datname, settings)
        self._unavailable: str | None = None  # the reason last logged
        # The last run's top statements, costliest first (empty when unavailable).
        self.top: tuple[TopStatement, ...] = ()

    async def collect(self, conn: AsyncConnection, server_version: int) -> Sequence[Metric]:
        extension = (await conn.execute(text(EXTENSION_SQL))).one_or_none()
        if extension is None:
            return self._unavailable_families(
                "the extension is not installed in this database"
                " (CREATE EXTENSION pg_stat_statements)"
            )
        version = extension_version(extension.extversion)
        total = "total_exec_time" if version >= EXEC_TIME_VERSION else "total_time"
        if version >= SPLIT_BLOCK_TIME_VERSION:
            read = "shared_blk_read_time + local_blk_read_time"
            write = "shared_blk_write_time + local_blk_write_time"
        else:
            read, write = "blk_read_time", "blk_write_time"
        sql = text(
            STATEMENTS_SQL.format(schema=extension.schema, total=total, read=read, write=write)
        )
        try:
            # A savepoint: when the library is not loaded, the run's transaction goes on.
            async with conn.begin_nested():
                rows = (await conn.execute(sql, {"top_k": self.settings.top_k})).all()
        except DBAPIError as exc:
            if sqlstate_of(exc) != NOT_LOADED_SQLSTATE:
                raise
            return self._unavailable_families(
                "its library is not loaded (add pg_stat_statements to shared_preload_libraries"
                " and restart the server)"
            )
        if self._unavailable is not None:
            log.info("pg_stat_statements is available in database %s again", self.database)
            self._unavailable = None
        self.top = await self._with_texts(conn, extension.schema, rows)
        return self.families(rows)

    async def _with_texts(
        self, conn: AsyncConnection, schema: str, rows: Sequence[Any]
    ) -> tuple[TopStatement, ...]:
        """The rows as `TopStatement`s, their texts kept from the last run or read now."""
        length = self.settings.query_text_max_length
        known = {s.queryid: s.text for s in self.top if s.text is not None}
        texts = {str(r.queryid): known[str(r.queryid)] for r in rows if str(r.queryid) in known}
        new = [int(r.queryid) for r in rows if str(r.queryid) not in texts]
        if new and length:
            sql = text(TEXTS_SQL.format(schema=schema))
            async with conn.begin_nested():
                found = await conn.execute(sql, {"length": length, "queryids": new})
            texts.update((r.queryid, mask_literals(r.query)) for r in found if r.query)
        return tuple(
            TopStatement(
                str(r.queryid),
                r.username or "unknown",
                number(r.calls),
                number(r.total_ms),
                number(r.rows),
                texts.get(str(r.queryid)),
            )
            for r in rows
        )

    def _available(self, value: int) -> GaugeMetricFamily:
        family = GaugeMetricFamily(
            "pg_stat_statements_available",
            "1 when pg_stat_statements can be read in this database, else 0 (see the log).",
            labels=["datname"],
        )
        family.add_metric([self.datname], value)
        return family

    def _unavailable_families(self, reason: str) -> list[Metric]:
        if reason != self._unavailable:
            log.info(
                "collector statements on database %s: pg_stat_statements skipped: %s",
                self.database,
                reason,
            )
            self._unavailable = reason
        self.top = ()
        return [self._available(0)]

    def families(self, rows: Sequence[Any]) -> list[Metric]:
        counters = [
            (column, CounterMetricFamily(name, doc, labels=LABELS))
            for column, name, doc in COUNTERS
        ]
        seconds = CounterMetricFamily(
            "pg_stat_statements_seconds",
            "Time spent executing the statement, in seconds (planning not included).",
            labels=LABELS,
        )
        mean = GaugeMetricFamily(
            "pg_stat_statements_mean_seconds",
            "Mean execution time of the statement, in seconds.",
            labels=LABELS,
        )
        block_times = [
            (
                column,
                CounterMetricFamily(
                    f"pg_stat_statements_block_{kind}_seconds",
                    f"Time the statement spent {kind}ing blocks, in seconds (track_io_timing).",
                    labels=LABELS,
                ),
            )
            for column, kind in (("read_ms", "read"), ("write_ms", "write"))
        ]
        statements = 0
        for r in rows:
            labels = [self.datname, str(r.queryid), r.username or "unknown"]
            for column, family in block_times:
                family.add_metric(labels, number(getattr(r, column)) / 1000)
            for column, family in counters:
                family.add_metric(labels, number(getattr(r, column)))
            calls, total_seconds = number(r.calls), number(r.total_ms) / 1000
            seconds.add_metric(labels, total_seconds)
            mean.add_metric(labels, total_seconds / calls if calls else 0.0)
            statements = int(r.statements)
        omitted = GaugeMetricFamily(
            "pg_stat_statements_series_omitted",
            "Statements of this database without series because of the top_k cap.",
            labels=["datname"],
        )
        omitted.add_metric([self.datname], max(0, statements - len(rows)))
        families: list[Metric] = [family for _, family in counters + block_times]
        families.extend((seconds, mean, omitted, self._available(1)))
        return families

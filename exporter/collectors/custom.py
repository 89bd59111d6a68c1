"""Custom queries: an operator's own SELECTs from `databases[].custom_queries`, one metric each.

In the style of sql_exporter: each query names its metric (gauge or counter), its help text,
the columns that become labels (beside `datname`) and the column(s) holding the values; with
several value columns, `value_label` says which column a sample came from. Each query is a
collector of its own, `custom:<name>` in `exporter_collector_success{collector}`, with its own
interval and timeouts, so a broken query fails only itself.

What the config validation catches at start-up (settings.py): names, types, repeated or
overlapping columns, the version range, and SQL that PostgreSQL's parser rejects or that is not
one SELECT. What only a run can tell fails that run with one line naming the collector: an
error from the server (a missing table, a permission), a label or value column the result does
not have, a value that is not a number, more than `max_rows` rows, or two rows with the same
labels. Queries run in a read-only transaction. NULL values count as 0 and NULL labels as
`unknown`. Outside its server-version range a query is skipped (success, no series; logged
once).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncConnection

from exporter.collectors.base import Collector, CollectorError
from exporter.settings import CustomQuerySettings

log = logging.getLogger("exporter.collectors")

READ_ONLY = text("SET TRANSACTION READ ONLY")
UNKNOWN = "unknown"


class CustomQueryError(CollectorError):
    """A custom query's result does not fit its configuration."""


def _statement(sql: str) -> str:
    # SQLAlchemy's text() would take ":name" (in a literal, say) for a bind parameter.
    return sql.replace(":", "\\:")


class CustomQueryCollector(Collector[CustomQuerySettings]):
    database_wide = True  # a query of the database, not of one replica

    def __init__(self, datname: str, settings: CustomQuerySettings) -> None:
        super().__init__(datname, settings)
        self.name = f"custom:{settings.name}"
        self._skipped_logged = False

    def in_range(self, server_version: int) -> bool:
        low, high = self.settings.min_server_version, self.settings.max_server_version
        return (low is None or server_version >= low) and (high is None or server_version <= high)

    async def collect(self, conn: AsyncConnection, server_version: int) -> Sequence[Metric]:
        q = self.settings
        if not self.in_range(server_version):
            if not self._skipped_logged:
                log.info(
                    "collector %s on database %s skipped: server version %d is outside %s..%s",
                    self.name, self.database, server_version,
                    q.min_server_version or "", q.max_server_version or "",
                )  # fmt: skip
                self._skipped_logged = True
            return []
        await conn.execute(READ_ONLY)
        # Buffered (a server-side cursor's errors would reach us without their SQLSTATE):
        # timeout_seconds bounds the fetch, max_rows the series.
        result = await conn.execute(text(_statement(q.sql)))
        columns = list(result.keys())
        missing = [c for c in (*q.labels, *q.values) if c not in columns]
        if missing:
            raise CustomQueryError(
                f"column {missing[0]!r} is not in the result (columns: {', '.join(columns)})"
            )
        rows = result.fetchmany(q.max_rows + 1)
        if len(rows) > q.max_rows:
            raise CustomQueryError(f"more than max_rows ({q.max_rows}) rows")
        return [self.family(rows)]

    def family(self, rows: Sequence[Row[Any]]) -> Metric:
        q = self.settings
        label_names = ["datname", *q.labels, *([q.value_label] if q.value_label else [])]
        family: GaugeMetricFamily | CounterMetricFamily
        if q.type == "counter":
            family = CounterMetricFamily(q.name, q.help, labels=label_names)
        else:
            family = GaugeMetricFamily(q.name, q.help, labels=label_names)
        seen: set[tuple[str, ...]] = set()
        for row in rows:
            mapping = row._mapping
            labels = [self.datname]
            labels.extend(UNKNOWN if mapping[c] is None else str(mapping[c]) for c in q.labels)
            if tuple(labels) in seen:
                raise CustomQueryError(f"two rows have the same labels {labels[1:]}")
            seen.add(tuple(labels))
            for column in q.values:
                sample = [*labels, column] if q.value_label else labels
                family.add_metric(sample, self.number(column, mapping[column]))
        return family

    @staticmethod
    def number(column: str, value: object) -> float:
        if value is None:
            return 0.0
        if isinstance(value, bool | int | float | Decimal):
            return float(value)
        raise CustomQueryError(
            f"value column {column!r} holds {type(value).__name__}, not a number"
            " (cast it in the SQL, e.g. ::numeric)"
        )

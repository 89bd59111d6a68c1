"""Cursor events -> `query_duration_seconds{database,operation,table,status}`.

Timing brackets the DBAPI cursor execute: `before_cursor_execute` stamps the start on the
connection's info dict and `after_cursor_execute` (success) or `handle_error` (failure; SQLAlchemy
does not fire `after_cursor_execute` then) observes it and removes the stamp, so no per-query
state outlives its statement.
"""

from __future__ import annotations

from collections.abc import Callable
from time import perf_counter
from typing import Any

from prometheus_client.metrics import Histogram
from sqlalchemy.engine import Connection, ExceptionContext

from exporter.instrumentation.guard import FailureCounter
from exporter.metrics import Metrics
from exporter.sql import classify

_START = "db_exporter.query_start"
# A bound on the per-statement label cache; statements built with inlined literals would
# otherwise grow it without end. Clearing it only costs a few re-classifications.
MAX_CACHED_STATEMENTS = 10_000


class TableLabels:
    """Maps a statement's table to a bounded `table` label value."""

    def __init__(self, known: frozenset[str] | None, max_tables: int) -> None:
        self._known = known
        self._max = max_tables
        self._seen: set[str] = set()

    def __call__(self, table: str | None) -> str:
        if table is None:
            return "other"
        if self._known is not None:
            return table if table in self._known else "other"
        if table in self._seen:
            return table
        if len(self._seen) >= self._max:
            return "other"
        self._seen.add(table)
        return table


class QueryListener:
    def __init__(
        self,
        database: str,
        metrics: Metrics,
        table_label: Callable[[str | None], str],
        failures: FailureCounter,
    ) -> None:
        self._database = database
        self._histogram = metrics.query_duration
        self._table_label = table_label
        self._failures = failures
        self._children: dict[tuple[str, str], Histogram] = {}

    def _child(self, statement: str, status: str) -> Histogram:
        key = (statement, status)
        child = self._children.get(key)
        if child is None:
            operation, table = classify(statement)
            child = self._histogram.labels(
                self._database, operation, self._table_label(table), status
            )
            if len(self._children) >= MAX_CACHED_STATEMENTS:
                self._children.clear()
            self._children[key] = child
        return child

    def before_cursor_execute(
        self,
        conn: Connection,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        try:
            conn.info[_START] = perf_counter()
        except Exception:
            self._failures.record("before_cursor_execute")

    def after_cursor_execute(
        self,
        conn: Connection,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        try:
            start = conn.info.pop(_START, None)
            if start is not None:
                self._child(statement, "ok").observe(perf_counter() - start)
        except Exception:
            self._failures.record("after_cursor_execute")

    def handle_error(self, context: ExceptionContext) -> None:
        try:
            conn = context.connection
            start = conn.info.pop(_START, None) if conn is not None else None
            if start is not None and context.statement is not None:
                self._child(context.statement, "error").observe(perf_counter() - start)
        except Exception:
            self._failures.record("handle_error")

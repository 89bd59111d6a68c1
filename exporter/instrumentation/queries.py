"""Statement execution -> `query_duration_seconds`, `query_errors_total`, `query_rows_total`.

The dialect's `do_execute` / `do_executemany` / `do_execute_no_params` events let a listener
perform the DBAPI call itself: ours calls the dialect's own implementation and times exactly
that call, so success and failure (with the driver's SQLSTATE) are seen in one place and no
per-query state is kept anywhere. Unlike `before/after_cursor_execute`, these events do not
switch SQLAlchemy's connections onto their slower event-dispatching path. Everything else a
statement needs (its identity and its metric children) is looked up once per distinct
statement string and cached.
"""

from __future__ import annotations

from dataclasses import dataclass
from time import perf_counter
from typing import Any

from prometheus_client.metrics import Counter
from sqlalchemy.engine import Dialect

from exporter.instrumentation.guard import FailureCounter
from exporter.instrumentation.tracing import current_exemplar
from exporter.metrics import OTHER, Metrics, StatementSeries
from exporter.sql import identify

# A bound on the per-statement cache; statements built with inlined literals would otherwise
# grow it without end. Clearing it only costs re-looking-up a few statements.
MAX_CACHED_STATEMENTS = 10_000


@dataclass(slots=True)
class _Statement:
    operation: str
    table: str
    ok: StatementSeries
    error: StatementSeries | None = None  # made on the first failure: most statements never do


def sqlstate_class(exc: BaseException | None) -> str:
    """`23` for a unique violation (23505), ...; `other` when the driver gave no SQLSTATE.

    psycopg and SQLAlchemy's asyncpg adapter expose `sqlstate`, psycopg2 `pgcode`.
    """
    code = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    if isinstance(code, str) and len(code) == 5 and code[:2].isalnum():
        return code[:2].upper()
    return OTHER


class QueryListener:
    def __init__(
        self,
        database: str,
        metrics: Metrics,
        known_tables: frozenset[str] | None,
        dialect: Dialect,
        failures: FailureCounter,
    ) -> None:
        self._database = database
        self._metrics = metrics
        self._known_tables = known_tables
        self._dialect = dialect
        self._postgresql = dialect.name == "postgresql"
        self._failures = failures
        self._statements: dict[str, _Statement] = {}
        self._errors: dict[tuple[str, str], Counter] = {}

    def _statement(self, sql: str) -> _Statement:
        entry = self._statements.get(sql)
        if entry is None:
            identity = identify(sql, self._postgresql)
            table = identity.table
            known = self._known_tables
            if table is None or (known is not None and table not in known):
                table = OTHER
            labels = (self._database, identity.operation, table, "ok")
            ok = self._metrics.budget("query_duration_seconds").admit(labels)
            entry = _Statement(identity.operation, table, self._metrics.statement_series(ok))
            if len(self._statements) >= MAX_CACHED_STATEMENTS:
                self._statements.clear()
            self._statements[sql] = entry
        return entry

    # -- the dialect events: run the statement, time it, never fail it ----------------------

    def do_execute(self, cursor: Any, statement: str, parameters: Any, context: Any) -> bool:
        start = self._started()
        try:
            self._dialect.do_execute(cursor, statement, parameters, context)
        except Exception as exc:
            self._failed(statement, start, exc)
            raise
        self._succeeded(statement, start, cursor, parameters, batch=False)
        return True  # executed: SQLAlchemy must not run it again

    def do_executemany(self, cursor: Any, statement: str, parameters: Any, context: Any) -> bool:
        start = self._started()
        try:
            self._dialect.do_executemany(cursor, statement, parameters, context)
        except Exception as exc:
            self._failed(statement, start, exc)
            raise
        self._succeeded(statement, start, cursor, parameters, batch=True)
        return True

    def do_execute_no_params(self, cursor: Any, statement: str, context: Any) -> bool:
        start = self._started()
        try:
            self._dialect.do_execute_no_params(cursor, statement, context)
        except Exception as exc:
            self._failed(statement, start, exc)
            raise
        self._succeeded(statement, start, cursor, None, batch=False)
        return True

    # -- bookkeeping, each step guarded ---------------------------------------------------

    def _started(self) -> float | None:
        try:
            return perf_counter()
        except Exception:
            self._failures.record("query_start")
            return None

    def _succeeded(
        self, statement: str, start: float | None, cursor: Any, parameters: Any, batch: bool
    ) -> None:
        try:
            if start is None:
                return
            elapsed = perf_counter() - start
            # Rows as the driver counts them; a batch whose driver does not (-1) counts its
            # parameter sets.
            rows = cursor.rowcount
            if rows < 0 and batch:
                rows = len(parameters)
            self._statement(statement).ok.record(elapsed, rows, current_exemplar)
        except Exception:
            self._failures.record("query_succeeded")

    def _failed(self, statement: str, start: float | None, exc: BaseException) -> None:
        try:
            entry = self._statement(statement)
            if start is not None:
                if entry.error is None:
                    labels = (self._database, entry.operation, entry.table, "error")
                    admitted = self._metrics.budget("query_duration_seconds").admit(labels)
                    entry.error = self._metrics.statement_series(admitted)
                entry.error.record(perf_counter() - start, 0, current_exemplar)
            key = (entry.operation, sqlstate_class(exc))
            errors = self._errors.get(key)
            if errors is None:
                errors = self._errors[key] = self._metrics.query_errors.labels(self._database, *key)
            errors.inc()
        except Exception:
            self._failures.record("query_failed")

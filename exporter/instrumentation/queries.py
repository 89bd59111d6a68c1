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

import math
from dataclasses import dataclass
from time import perf_counter
from typing import Any

from prometheus_client.metrics import Counter
from sqlalchemy.engine import Dialect

from exporter.instrumentation.guard import FailureCounter
from exporter.instrumentation.pool import POOL_WAIT
from exporter.instrumentation.tracing import current_exemplar
from exporter.metrics import OTHER, Metrics, StatementSeries
from exporter.slowlog.callsite import call_site
from exporter.slowlog.context import QueryContext
from exporter.slowlog.context import current as current_context
from exporter.slowlog.log import SlowQueryLog
from exporter.slowlog.record import SlowQuery, redact
from exporter.sql import QueryIdentity, identify

# A bound on the per-statement cache; statements built with inlined literals would otherwise
# grow it without end. Clearing it only costs re-looking-up a few statements.
MAX_CACHED_STATEMENTS = 10_000


@dataclass(slots=True)
class _Statement:
    identity: QueryIdentity
    table: str  # the label value: the identity's table, or "other"
    ok: StatementSeries
    error: StatementSeries | None = None  # made on the first failure: most statements never do
    slow: Counter | None = None  # made when it is first slow

    @property
    def operation(self) -> str:
        return self.identity.operation


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
        slow_log: SlowQueryLog | None = None,
    ) -> None:
        self._database = database
        self._metrics = metrics
        self._known_tables = known_tables
        self._dialect = dialect
        self._postgresql = dialect.name == "postgresql"
        self._failures = failures
        self._statements: dict[str, _Statement] = {}
        self._errors: dict[tuple[str, str], Counter] = {}
        self._slow_log = slow_log
        self._slow_threshold = slow_log.threshold_seconds(database) if slow_log else math.inf
        self._n_plus_one: dict[str, Counter] = {}

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
            entry = _Statement(identity, table, self._metrics.statement_series(ok))
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
            self._failed(statement, start, exc, parameters, False, context)
            raise
        self._succeeded(statement, start, cursor, parameters, False, context)
        return True  # executed: SQLAlchemy must not run it again

    def do_executemany(self, cursor: Any, statement: str, parameters: Any, context: Any) -> bool:
        start = self._started()
        try:
            self._dialect.do_executemany(cursor, statement, parameters, context)
        except Exception as exc:
            self._failed(statement, start, exc, parameters, True, context)
            raise
        self._succeeded(statement, start, cursor, parameters, True, context)
        return True

    def do_execute_no_params(self, cursor: Any, statement: str, context: Any) -> bool:
        start = self._started()
        try:
            self._dialect.do_execute_no_params(cursor, statement, context)
        except Exception as exc:
            self._failed(statement, start, exc, None, False, context)
            raise
        self._succeeded(statement, start, cursor, None, False, context)
        return True

    # -- bookkeeping, each step guarded ---------------------------------------------------

    def _started(self) -> float | None:
        try:
            return perf_counter()
        except Exception:
            self._failures.record("query_start")
            return None

    def _succeeded(
        self,
        statement: str,
        start: float | None,
        cursor: Any,
        parameters: Any,
        batch: bool,
        context: Any,
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
            entry = self._statement(statement)
            entry.ok.record(elapsed, rows, current_exemplar)
            if elapsed >= self._slow_threshold:
                self._slow(entry, elapsed, rows, parameters, batch, context, None)
            if self._slow_log is not None:
                scope = current_context.get()
                if scope is not None and entry.identity.operation == "SELECT":
                    repeats = self._repeats(scope, entry)
                    if repeats is not None:
                        self._slow(entry, elapsed, None, parameters, batch, context, None, repeats)
        except Exception:
            self._failures.record("query_succeeded")

    def _failed(
        self,
        statement: str,
        start: float | None,
        exc: BaseException,
        parameters: Any,
        batch: bool,
        context: Any,
    ) -> None:
        try:
            entry = self._statement(statement)
            if start is not None:
                elapsed = perf_counter() - start
                if entry.error is None:
                    labels = (self._database, entry.operation, entry.table, "error")
                    admitted = self._metrics.budget("query_duration_seconds").admit(labels)
                    entry.error = self._metrics.statement_series(admitted)
                entry.error.record(elapsed, 0, current_exemplar)
                if elapsed >= self._slow_threshold:
                    code = getattr(exc, "sqlstate", None) or sqlstate_class(exc)
                    self._slow(entry, elapsed, None, parameters, batch, context, str(code))
            key = (entry.operation, sqlstate_class(exc))
            errors = self._errors.get(key)
            if errors is None:
                errors = self._errors[key] = self._metrics.query_errors.labels(self._database, *key)
            errors.inc()
        except Exception:
            self._failures.record("query_failed")

    # -- the slow-query log: only for slow statements and inside a context -------------------

    def _slow(
        self,
        entry: _Statement,
        seconds: float,
        rows: int | None,
        parameters: Any,
        batch: bool,
        context: Any,
        sqlstate: str | None,
        repeats: int | None = None,
    ) -> None:
        """One record for the slow-query log: a slow statement, or (with `repeats`) an N+1
        warning. Builds the record here, on the query path; the writer thread does the rest."""
        try:
            assert self._slow_log is not None
            if repeats is None:
                if entry.slow is None:
                    entry.slow = self._metrics.slow_queries.labels(
                        self._database, entry.operation, entry.table
                    )
                entry.slow.inc()
            else:
                counter = self._n_plus_one.get(entry.table)
                if counter is None:
                    counter = self._n_plus_one[entry.table] = self._metrics.n_plus_one.labels(
                        self._database, entry.table
                    )
                counter.inc()
            scope = current_context.get()
            include_values = self._slow_log.settings.include_parameter_values
            self._slow_log.submit(
                SlowQuery(
                    database=self._database,
                    seconds=seconds,
                    identity=entry.identity,
                    call_site=call_site(),
                    parameters=redact(parameters, include_values, batch),
                    context=scope.fields if scope is not None else {},
                    trace=current_exemplar(),
                    rows=rows,
                    pool_wait_seconds=_pool_wait(context),
                    sqlstate=sqlstate,
                    kind="slow_query" if repeats is None else "n_plus_one",
                    repeats=repeats,
                )
            )
        except Exception:
            self._failures.record("slow_query" if repeats is None else "n_plus_one")

    def _repeats(self, scope: QueryContext, entry: _Statement) -> int | None:
        """N+1: counts a SELECT within its request or task; its count when that reaches the
        threshold (once per context and fingerprint), else None."""
        assert self._slow_log is not None
        fingerprint = entry.identity.fingerprint
        repeats = scope.counts.get(fingerprint, 0) + 1
        scope.counts[fingerprint] = repeats
        return repeats if repeats == self._slow_log.settings.n_plus_one_threshold else None


def _pool_wait(context: Any) -> float | None:
    """How long the statement's connection waited at checkout (stored by the pool timer)."""
    connection = getattr(getattr(context, "root_connection", None), "_dbapi_connection", None)
    info = getattr(connection, "info", None)
    wait = info.get(POOL_WAIT) if info is not None else None
    return wait if isinstance(wait, float) else None

"""Statement execution -> `query_duration_seconds`, `query_errors_total`, `query_rows_total`.

The listener takes the place of the dialect's `do_execute` / `do_executemany` /
`do_execute_no_params` on the engine's own dialect instance, calls the implementation it
replaced and times exactly that call, so success and failure (with the driver's SQLSTATE) are
seen in one place and no per-query state is kept anywhere. SQLAlchemy calls these methods
directly for every statement. The dialect *events* of the same names would do the same job, but
SQLAlchemy dispatches them per statement, which measured about a third of the listener's whole
cost (`bench/instrumentation_overhead.py --instructions`); connection-level events such as
`before/after_cursor_execute` cost more still, as they switch connections onto SQLAlchemy's
event-dispatching path. Everything else a statement needs (its identity and its metric
children) is looked up once per distinct statement string and cached, within the bounds of
`instrumentation.statement_cache_*`; a statement longer than `max_statement_length` is cached
under a digest of its prefix, never kept whole.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from time import perf_counter
from typing import Any, Protocol

from prometheus_client.metrics import Counter
from sqlalchemy.engine import Dialect

from exporter.bounded import BoundedCache
from exporter.inprocess_settings import SlowQuerySettings
from exporter.instrumentation.budget import OTHER
from exporter.instrumentation.guard import FailureCounter
from exporter.instrumentation.pool import POOL_WAIT
from exporter.instrumentation.series import StatementSeries
from exporter.instrumentation.tracing import current_exemplar
from exporter.metrics import Metrics
from exporter.slowlog.context import QueryContext, current_scope
from exporter.slowlog.log import SlowQueryLog
from exporter.slowlog.record import SlowQuery, redact
from exporter.sql import QueryIdentity, entry_size, identify, statement_cache_bounds, statement_key
from exporter.sqlstate import sqlstate_of

# The dialect methods every statement goes through; the listener has one of each name.
STATEMENT_METHODS = ("do_execute", "do_executemany", "do_execute_no_params")

log = logging.getLogger("exporter.instrumentation")


class StatementObserver(Protocol):
    """Shown every statement of every instrumented engine, after it ran (or failed): the pytest
    plugin counts them per test. Called on the query path: must be quick and do no I/O."""

    def __call__(
        self, identity: QueryIdentity, seconds: float, scope: QueryContext | None, ok: bool
    ) -> None:
        """`scope`: the statement's context (a web request's, for one), or None; `ok`: False
        when the statement failed."""


# The one observer, or None (the default): then the query path pays one global lookup.
_observer: StatementObserver | None = None


def observe_statements(observer: StatementObserver | None) -> StatementObserver | None:
    """Show every instrumented statement to `observer` (None: to nobody) from now on, whatever
    engine runs it and whenever it was instrumented; returns the observer it replaces, for the
    caller to put back (a pytest session run inside another one has its own)."""
    global _observer
    previous, _observer = _observer, observer
    return previous


@dataclass(slots=True)
class _Statement:
    identity: QueryIdentity
    # The label value: the identity's table, or "other" (none, not a known table, or folded by
    # query_duration_seconds' cap, so that every metric of the statement names it alike).
    table: str
    ok: StatementSeries
    select: bool  # counted for N+1 detection
    error: StatementSeries | None = None  # made on the first failure: most statements never do
    slow: Counter | None = None  # made when it is first slow

    @property
    def operation(self) -> str:
        return self.identity.operation


def sqlstate_class(exc: BaseException | None) -> str:
    """`23` for a unique violation (23505), ...; `other` when the driver gave no SQLSTATE."""
    code = sqlstate_of(exc)
    return code[:2] if code is not None else OTHER


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
        # What each statement method was on this dialect instance before attach(): nothing
        # (the class's implementation), or another library's wrapper, put back by detach().
        self._replaced = tuple((name, dialect.__dict__.get(name)) for name in STATEMENT_METHODS)
        # The implementations the listener runs, bound before attach() takes their place.
        self._do_execute = dialect.do_execute
        self._do_executemany = dialect.do_executemany
        self._do_execute_no_params = dialect.do_execute_no_params
        self._postgresql = dialect.name == "postgresql"
        # What attach() puts in place, and what check_attached() has last seen there.
        self._attached: dict[str, Any] = {name: getattr(self, name) for name in STATEMENT_METHODS}
        self._seen = dict(self._attached)
        self._failures = failures
        self._statements: BoundedCache[_Statement] = BoundedCache(statement_cache_bounds)
        self._errors: dict[tuple[str, str], Counter] = {}
        self._slow_log = slow_log
        self._slow_threshold = slow_log.threshold_seconds(database) if slow_log else math.inf
        self._n_plus_one: dict[str, Counter] = {}
        if slow_log is not None:
            slow_log.watch(self)

    def slow_query_settings_changed(self, settings: SlowQuerySettings) -> None:
        # The threshold is kept here because the query path reads it for every statement.
        self._slow_threshold = settings.threshold_seconds(self._database)

    def _statement(self, statement: str) -> _Statement:
        # Keyed without a trailing comment: sqlcommenter's differs per request, and would
        # otherwise fill the cache with one entry per request.
        key = statement_key(statement)
        entry = self._statements.get(key)
        if entry is None:
            identity = identify(statement, self._postgresql)
            table = identity.table
            known = self._known_tables
            if table is None or (known is not None and table not in known):
                table = OTHER
            labels = (self._database, identity.operation, table, "ok")
            ok = self._metrics.budget("query_duration_seconds").admit(labels)
            series = self._metrics.statement_series(ok)
            entry = _Statement(identity, ok[2], series, identity.operation == "SELECT")
            self._statements.put(key, entry, entry_size(key, identity))
        return entry

    def attach(self) -> None:
        for name, method in self._attached.items():
            setattr(self._dialect, name, method)

    def check_attached(self, *_checkout: Any) -> None:
        """A pool `checkout` listener: says once, in one log line, when another library has
        put a statement method in our place that does not call ours, because that library's
        statements then go uncounted. A wrapper that calls ours needs nothing: every statement
        is still counted once. Costs three lookups per checkout while nothing changes."""
        try:
            methods = self._dialect.__dict__
            for name in STATEMENT_METHODS:
                current = methods.get(name)
                if current is self._seen[name]:
                    continue
                self._seen[name] = current
                if not _reaches(current, self._attached[name]):
                    log.warning(
                        "dialect.%s of database %r was replaced after instrument() by %s, "
                        "which does not call db-exporter's: statements it runs are not counted; "
                        "call instrument() after that library is set up",
                        name,
                        self._database,
                        _describe(current),
                    )
        except Exception:
            self._failures.record("query_check_attached")

    def detach(self) -> None:
        """Put back what attach() replaced, unless another library has since put its own
        wrapper in our place: that one calls ours, so ours must stay (and says so)."""
        for name, previous in self._replaced:
            if self._dialect.__dict__.get(name) != getattr(self, name):
                log.warning("dialect.%s was replaced after instrument(); leaving it in place", name)
                continue
            if previous is None:
                delattr(self._dialect, name)
            else:
                setattr(self._dialect, name, previous)

    # -- the statement methods: run the statement, time it, never fail it ------------------
    # Each stamps its start inline, not in a guarded helper: the call cost more than the
    # stamp. A clock that fails is counted like any failure of the bookkeeping.

    def do_execute(self, cursor: Any, statement: str, parameters: Any, context: Any) -> None:
        try:
            start: float | None = perf_counter()
        except Exception:
            start = None
            self._failures.record("query_start")
        try:
            self._do_execute(cursor, statement, parameters, context)
        except Exception as exc:
            self._failed(statement, start, exc, parameters, False, context)
            raise
        self._succeeded(statement, start, cursor, parameters, False, context)

    def do_executemany(self, cursor: Any, statement: str, parameters: Any, context: Any) -> None:
        try:
            start: float | None = perf_counter()
        except Exception:
            start = None
            self._failures.record("query_start")
        try:
            self._do_executemany(cursor, statement, parameters, context)
        except Exception as exc:
            self._failed(statement, start, exc, parameters, True, context)
            raise
        self._succeeded(statement, start, cursor, parameters, True, context)

    def do_execute_no_params(self, cursor: Any, statement: str, context: Any) -> None:
        try:
            start: float | None = perf_counter()
        except Exception:
            start = None
            self._failures.record("query_start")
        try:
            self._do_execute_no_params(cursor, statement, context)
        except Exception as exc:
            self._failed(statement, start, exc, None, False, context)
            raise
        self._succeeded(statement, start, cursor, None, False, context)

    # -- bookkeeping, each step guarded ---------------------------------------------------

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
            ended = perf_counter()
            elapsed = ended - start
            # Rows as the driver counts them; a batch whose driver does not (-1) counts its
            # parameter sets.
            rows = cursor.rowcount
            if rows < 0 and batch:
                rows = len(parameters)
            entry = self._statements.get(statement)  # inline: nearly always there
            if entry is None:
                entry = self._statement(statement)
            entry.ok.record(elapsed, rows, current_exemplar, ended)
            if elapsed >= self._slow_threshold:
                self._slow(entry, elapsed, rows, parameters, batch, context, None)
            scope = current_scope()
            if scope is not None:
                usage = scope.usage  # per request: statements and their time
                usage.statements += 1
                usage.seconds += elapsed
                # N+1 detection: only SELECTs count.
                if entry.select and self._slow_log is not None:
                    repeats = self._repeats(scope, entry)
                    if repeats is not None:
                        self._slow(entry, elapsed, None, parameters, batch, context, None, repeats)
            if _observer is not None:
                self._show(entry, elapsed, scope, context, True)
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
                ended = perf_counter()
                elapsed = ended - start
                if entry.error is None:
                    labels = (self._database, entry.operation, entry.table, "error")
                    admitted = self._metrics.budget("query_duration_seconds").admit(labels)
                    entry.error = self._metrics.statement_series(admitted)
                entry.error.record(elapsed, 0, current_exemplar, ended)
                scope = current_scope()
                if scope is not None:
                    scope.usage.statements += 1
                    scope.usage.seconds += elapsed
                if elapsed >= self._slow_threshold:
                    code = sqlstate_of(exc) or OTHER
                    self._slow(entry, elapsed, None, parameters, batch, context, str(code))
                if _observer is not None:
                    self._show(entry, elapsed, scope, context, False)
            key = (entry.operation, sqlstate_class(exc))
            errors = self._errors.get(key)
            if errors is None:
                budget = self._metrics.budget("query_errors_total")
                errors = self._metrics.query_errors.labels(*budget.admit((self._database, *key)))
                self._errors[key] = errors
            errors.inc()
        except Exception:
            self._failures.record("query_failed")

    def _show(
        self,
        entry: _Statement,
        seconds: float,
        scope: QueryContext | None,
        context: Any,
        ok: bool,
    ) -> None:
        """The statement, to the observer; its failure is the observer's, counted apart. Not
        the engine's first-connect statements: the application did not write them, and which
        test makes an engine's first connection depends on the order tests run in."""
        try:
            observer = _observer
            if observer is not None and _connection_info(context) is not _OUTSIDE_POOL:
                observer(entry.identity, seconds, scope, ok)
        except Exception:
            self._failures.record("statement_observer")

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
                    budget = self._metrics.budget("slow_queries_total")
                    slow = (self._database, entry.operation, entry.table)
                    entry.slow = self._metrics.slow_queries.labels(*budget.admit(slow))
                entry.slow.inc()
                if not self._slow_log.admit(self._database, entry.identity, seconds):
                    return
            else:
                counter = self._n_plus_one.get(entry.table)
                if counter is None:
                    budget = self._metrics.budget("db_n_plus_one_total")
                    labels = budget.admit((self._database, entry.table))
                    counter = self._n_plus_one[entry.table] = self._metrics.n_plus_one.labels(
                        *labels
                    )
                counter.inc()
            scope = current_scope()
            include_values = self._slow_log.settings.include_parameter_values
            self._slow_log.submit(
                SlowQuery(
                    database=self._database,
                    seconds=seconds,
                    identity=entry.identity,
                    call_site=self._slow_log.call_sites.find(),
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


def _reaches(method: Any, target: Any) -> bool:
    """Whether `method` is `target` or wraps it: through `__wrapped__` (functools.wraps, wrapt)
    or a closure, a few levels deep. A wrapper keeping the method it replaced elsewhere (on an
    object, in a registry) is not seen: it is reported, wrongly but only once."""
    pending, looked = [method], 0
    while pending and looked < 32:
        candidate = pending.pop()
        looked += 1
        if candidate is target:  # the very bound method attach() stored: `is`, never `==`
            return True
        if candidate is None:
            continue
        pending.append(getattr(candidate, "__wrapped__", None))
        function = getattr(candidate, "__func__", candidate)
        for cell in getattr(function, "__closure__", None) or ():
            try:
                pending.append(cell.cell_contents)
            except ValueError:  # an empty cell
                continue
    return False


def _describe(method: Any) -> str:
    if method is None:
        return "the dialect class's own method (db-exporter's was removed)"
    function = getattr(method, "__func__", method)
    module = getattr(function, "__module__", None) or "?"
    return f"{module}.{getattr(function, '__qualname__', type(function).__qualname__)}"


# What `_connection_info` answers for SQLAlchemy's own first-connect statements.
_OUTSIDE_POOL = object()


def _connection_info(context: Any) -> Any:
    """The `info` of the statement's pooled connection (None when there is none), or
    _OUTSIDE_POOL: the dialect's first-connect statements (server version, schema, ...) run on
    a connection outside the pool, whose `info` raises."""
    connection = getattr(getattr(context, "root_connection", None), "_dbapi_connection", None)
    try:
        return getattr(connection, "info", None)
    except NotImplementedError:
        return _OUTSIDE_POOL


def _pool_wait(context: Any) -> float | None:
    """How long the statement's connection waited at checkout (stored by the pool timer)."""
    info = _connection_info(context)
    # Outside the pool, a statement waited for no checkout.
    wait = info.get(POOL_WAIT) if info is not None and info is not _OUTSIDE_POOL else None
    return wait if isinstance(wait, float) else None

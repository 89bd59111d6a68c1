"""In-process hooks: `instrument(engine)` attaches db-exporter's listeners to one engine.

Listeners are kept per engine in a weak mapping, so instrumenting never keeps an engine alive,
and `uninstrument(engine)` removes exactly what `instrument(engine)` added.

The listeners' modules are imported when first used: `exporter.metrics` imports this package's
recording modules (budget, series, pool gauges), and the listeners import `exporter.metrics`,
so that importing either first works.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import MetaData, event
from sqlalchemy.engine import Engine

if TYPE_CHECKING:  # sqlalchemy.ext.asyncio is not loaded for an application that never did
    from sqlalchemy.ext.asyncio import AsyncEngine

    from exporter.instrumentation.pool import PoolListener
    from exporter.instrumentation.queries import QueryListener
    from exporter.metrics import Metrics
    from exporter.slowlog import SlowQueryLog


@dataclass
class _Attached:
    database: str
    metrics: Metrics
    queries: QueryListener
    pool: PoolListener
    finalizer: weakref.finalize[Any, Any]
    # (event name, listener) pairs, all registered on the engine itself. The engine is not
    # stored here: this is the value of a weak mapping keyed by the engine.
    listeners: list[tuple[str, Callable[..., Any]]]


_attached: weakref.WeakKeyDictionary[Engine, _Attached] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def _sync_engine(engine: Engine | AsyncEngine) -> Engine:
    return engine if isinstance(engine, Engine) else engine.sync_engine


def _known_tables(tables: MetaData | Iterable[str] | None) -> frozenset[str] | None:
    if tables is None:
        return None
    if isinstance(tables, MetaData):
        return frozenset(t.name for t in tables.sorted_tables)
    return frozenset(tables)


def instrument(
    engine: Engine | AsyncEngine,
    database: str = "main",
    *,
    metrics: Metrics | None = None,
    tables: MetaData | Iterable[str] | None = None,
    slow_log: SlowQueryLog | Literal[False] | None = None,
) -> Engine | AsyncEngine:
    """Time every statement and watch the pool of `engine`, labelled `database=<database>`.

    `tables` (an ORM `MetaData` or table names) limits the `table` label to known tables;
    without it any table name is used, up to the metric's label-set cap (`Metrics.limits`).
    Slow statements go to `slow_log` (default: the process-wide one; `False`: none).
    Calling it again for the same engine and database does nothing; returns `engine`.
    """
    from exporter.instrumentation.guard import FailureCounter
    from exporter.instrumentation.pool import PoolListener
    from exporter.instrumentation.queries import QueryListener
    from exporter.metrics import default_metrics
    from exporter.slowlog import default_slow_log

    sync = _sync_engine(engine)
    with _lock:
        existing = _attached.get(sync)
        if existing is not None:
            if existing.database != database:
                raise ValueError(
                    f"engine is already instrumented as database {existing.database!r}; "
                    "call uninstrument(engine) first"
                )
            return engine
        metrics = metrics or default_metrics()
        if slow_log is None:
            slow_log = default_slow_log(metrics=metrics)
        if slow_log:
            slow_log.register(database, sync.url)
        failures = FailureCounter(metrics)
        queries = QueryListener(
            database, metrics, _known_tables(tables), sync.dialect, failures, slow_log or None
        )
        pool = PoolListener(sync, database, metrics, failures)
        listeners: list[tuple[str, Callable[..., Any]]] = [
            # No connection-level listener: one would move every statement onto SQLAlchemy's
            # slower event-dispatching path (statements are timed by queries.attach()).
            ("do_connect", pool.do_connect),
            # Pool events registered on the engine follow it across Engine.dispose().
            ("connect", pool.connect),
            ("checkout", pool.checkout),
            ("checkin", pool.checkin),
            ("detach", pool.detach),
            ("close", pool.close),
            ("close_detached", pool.close_detached),
            ("invalidate", pool.invalidate),
            # Another library's statement method put in our place after this call is reported.
            ("checkout", queries.check_attached),
        ]
        queries.attach()  # first: check_attached() compares with what it put in place
        for name, fn in listeners:
            event.listen(sync, name, fn)
        pool.wrap(sync.pool)
        metrics.pools.add(sync, database)
        finalizer = weakref.finalize(sync, pool.release)
        _attached[sync] = _Attached(database, metrics, queries, pool, finalizer, listeners)
    return engine


def uninstrument(engine: Engine | AsyncEngine) -> None:
    """Remove every listener `instrument()` attached; a no-op for an engine never instrumented."""
    sync = _sync_engine(engine)
    with _lock:
        attached = _attached.pop(sync, None)
        if attached is None:
            return
        for name, fn in attached.listeners:
            event.remove(sync, name, fn)
        attached.queries.detach()
        attached.pool.unwrap(sync.pool)
        attached.metrics.pools.remove(sync)
        attached.finalizer.detach()
        attached.pool.release()


def is_instrumented(engine: Engine | AsyncEngine) -> bool:
    return _sync_engine(engine) in _attached

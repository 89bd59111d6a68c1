"""In-process hooks: `instrument(engine)` attaches db-exporter's listeners to one engine.

Listeners are kept per engine in a weak mapping, so instrumenting never keeps an engine alive,
and `uninstrument(engine)` removes exactly what `instrument(engine)` added.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import MetaData, event
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from exporter.instrumentation.guard import FailureCounter
from exporter.instrumentation.pool import PoolListener
from exporter.instrumentation.queries import QueryListener, TableLabels
from exporter.metrics import Metrics, default_metrics

DEFAULT_MAX_TABLES = 200


@dataclass
class _Attached:
    database: str
    metrics: Metrics
    # (event name, listener) pairs, all registered on the engine itself. The engine is not
    # stored here: this is the value of a weak mapping keyed by the engine.
    listeners: list[tuple[str, Callable[..., Any]]]


_attached: weakref.WeakKeyDictionary[Engine, _Attached] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def _sync_engine(engine: Engine | AsyncEngine) -> Engine:
    return engine.sync_engine if isinstance(engine, AsyncEngine) else engine


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
    max_tables: int = DEFAULT_MAX_TABLES,
) -> Engine | AsyncEngine:
    """Time every statement and watch the pool of `engine`, labelled `database=<database>`.

    `tables` (an ORM `MetaData` or table names) limits the `table` label to known tables; without
    it the first `max_tables` table names seen are used and the rest become `other`.
    Calling it again for the same engine and database does nothing; returns `engine`.
    """
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
        failures = FailureCounter(metrics)
        queries = QueryListener(
            database, metrics, TableLabels(_known_tables(tables), max_tables), failures
        )
        pool = PoolListener(sync, database, metrics, failures)
        listeners: list[tuple[str, Callable[..., Any]]] = [
            ("before_cursor_execute", queries.before_cursor_execute),
            ("after_cursor_execute", queries.after_cursor_execute),
            ("handle_error", queries.handle_error),
            # Pool events registered on the engine follow it across Engine.dispose().
            ("connect", pool.connect),
        ]
        for name, fn in listeners:
            event.listen(sync, name, fn)
        metrics.pools.add(sync, database)
        _attached[sync] = _Attached(database, metrics, listeners)
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
        attached.metrics.pools.remove(sync)


def is_instrumented(engine: Engine | AsyncEngine) -> bool:
    return _sync_engine(engine) in _attached

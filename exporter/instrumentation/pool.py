"""Pool events -> connection counts, checkout wait, timeouts, create and use times, overflow.

- `db_connections_active` counts checkouts minus returns, by events, so it works for every pool
  class and sums across worker processes. A checkout is marked on its pool entry with the
  listener that saw it, so returns of connections checked out before `instrument()` (or
  after `uninstrument()`) are ignored.
- An overflow *event* is a new connection that makes the pool's open connections exceed
  pool_size. `QueuePool.overflow()` cannot tell: it counts connections still being made, so
  concurrent first checkouts of an empty pool all saw it above zero. Each pool's open
  connections are counted here instead (`_OpenConnections`, under a lock), and each connection
  remembers the count it is in, so a close after `Engine.dispose()` lowers its old pool's count.
  The connections a pool had before `instrument()` start its count, and their closes (unmarked)
  lower it.
  `connect` also fires when an invalidated connection reconnects; a marker in the entry's
  lifetime info keeps those from being counted as events.
- SQLAlchemy raises its pool `TimeoutError` without firing `handle_error`, and no event fires
  before a checkout starts, so the wait is timed by wrapping this pool's `connect()` (an
  instance attribute, removed again by `unwrap`). `Engine.dispose()` swaps in a new pool; its
  first connection wraps it (the checkout that made that connection goes untimed).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from time import perf_counter
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine
from sqlalchemy.pool import ConnectionPoolEntry, Pool, PoolProxiedConnection, QueuePool

from exporter.instrumentation.guard import FailureCounter
from exporter.metrics import Metrics

_SEEN = "db_exporter.seen"
_CREATE_START = "db_exporter.create_start"
_CHECKED_OUT = "db_exporter.checked_out"
_OPEN = "db_exporter.open"  # the _OpenConnections this entry's live connection is counted in
_WRAPPER_MARK = "__db_exporter_wrapper__"
POOL_WAIT = "db_exporter.pool_wait"  # this checkout's wait, on the checked-out connection


class _OpenConnections:
    """One pool's open connections, as connect and close events see them; `before` were open
    before they were counted by events."""

    def __init__(self, before: int = 0) -> None:
        self._lock = threading.Lock()  # connect events of one pool run in several threads
        self._count = self._before = before

    def opened(self) -> int:
        """Count one more; the count with it."""
        with self._lock:
            self._count += 1
            return self._count

    def closed(self) -> None:
        with self._lock:
            self._count -= 1

    def closed_from_before(self) -> None:
        """A connection without a mark closed: one of those open before, while any are left."""
        with self._lock:
            if self._before > 0:
                self._before -= 1
                self._count -= 1


class PoolListener:
    def __init__(
        self, engine: Engine, database: str, metrics: Metrics, failures: FailureCounter
    ) -> None:
        self._engine = weakref.ref(engine)  # a strong reference would keep the engine alive
        self._failures = failures
        self._active = metrics.connections_active.labels(database)
        self._overflow = metrics.pool_overflow.labels(database)
        self._discarded = metrics.pool_overflow_discarded.labels(database)
        self._wait = metrics.pool_checkout_wait.labels(database)
        self._timeouts = metrics.pool_timeouts.labels(database)
        self._created = metrics.connections_created.labels(database)
        self._closed = metrics.connections_closed.labels(database)
        self._invalidated = metrics.connections_invalidated.labels(database)
        self._create_time = metrics.connection_create_time.labels(database)
        self._use_time = metrics.connection_use_time.labels(database)
        self.outstanding = 0  # checkouts this listener counted and has not seen returned
        self._open: weakref.WeakKeyDictionary[Pool, _OpenConnections] = weakref.WeakKeyDictionary()
        if isinstance(engine.pool, QueuePool):  # its slots: checked in, out, or being made
            self._open[engine.pool] = _OpenConnections(
                max(0, engine.pool.checkedout() + engine.pool.checkedin())
            )

    # -- checkout timing: a wrapper around Pool.connect ---------------------------------

    def wrap(self, pool: Pool) -> None:
        if getattr(pool.__dict__.get("connect"), _WRAPPER_MARK, False):
            return
        original: Callable[[], PoolProxiedConnection] = pool.connect

        def connect() -> PoolProxiedConnection:
            start = self._checkout_started()
            try:
                connection = original()
            except sa_exc.TimeoutError:
                self._checkout_finished(start, None)
                raise
            self._checkout_finished(start, connection)
            return connection

        setattr(connect, _WRAPPER_MARK, True)
        pool.connect = connect  # type: ignore[method-assign]

    @staticmethod
    def unwrap(pool: Pool) -> None:
        if getattr(pool.__dict__.get("connect"), _WRAPPER_MARK, False):
            del pool.connect

    def _checkout_started(self) -> float | None:
        try:
            return perf_counter()
        except Exception:
            self._failures.record("pool_checkout_wait")
            return None

    def _checkout_finished(
        self, start: float | None, connection: PoolProxiedConnection | None
    ) -> None:
        """`connection` is None when the checkout timed out."""
        try:
            if start is not None:
                waited = perf_counter() - start
                self._wait.observe(waited)
                if connection is not None:
                    connection.info[POOL_WAIT] = waited
            if connection is None:
                self._timeouts.inc()
        except Exception:
            self._failures.record("pool_checkout_wait")

    # -- connection lifecycle -----------------------------------------------------------

    def do_connect(
        self, dialect: Any, record: ConnectionPoolEntry | None, cargs: Any, cparams: Any
    ) -> None:
        try:
            info = record.record_info if record is not None else None
            if info is not None:
                info[_CREATE_START] = perf_counter()
        except Exception:
            self._failures.record("do_connect")

    def connect(self, dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        try:
            self._created.inc()
            info = record.record_info
            if info is None:
                return
            start = info.pop(_CREATE_START, None)
            if start is not None:
                self._create_time.observe(perf_counter() - start)
            engine = self._engine()
            if engine is None:
                return
            pool = engine.pool
            self.wrap(pool)  # a no-op unless Engine.dispose() replaced the pool
            if not isinstance(pool, QueuePool):
                return
            counted = self._open.setdefault(pool, _OpenConnections())
            info[_OPEN] = (self, counted)
            now_open = counted.opened()
            reconnect = _SEEN in info  # after invalidation: the same pool slot, not a new one
            info[_SEEN] = True
            if now_open > pool.size() and not reconnect:
                self._overflow.inc()
        except Exception:
            self._failures.record("pool_connect")

    def checkout(
        self, dbapi_connection: Any, record: ConnectionPoolEntry, proxy: PoolProxiedConnection
    ) -> None:
        try:
            info = record.record_info
            if info is not None:
                info[_CHECKED_OUT] = (self, perf_counter())
                self._active.inc()
                self.outstanding += 1
        except Exception:
            self._failures.record("pool_checkout")

    def _returned(self, record: ConnectionPoolEntry) -> bool:
        """Count a return seen by this listener; False for checkouts it never counted."""
        info = record.record_info
        mark = info.pop(_CHECKED_OUT, None) if info is not None else None
        if mark is None or mark[0] is not self:
            return False
        self._active.dec()
        self.outstanding -= 1
        self._use_time.observe(perf_counter() - mark[1])
        return True

    def checkin(self, dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        try:
            if not self._returned(record):
                return
            engine = self._engine()
            pool = engine.pool if engine is not None else None
            # Fired before the pool takes the connection back: a full pool closes it.
            if isinstance(pool, QueuePool) and pool.checkedin() >= pool.size():
                self._discarded.inc()
        except Exception:
            self._failures.record("pool_checkin")

    def detach(self, dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        try:
            self._returned(record)  # the connection leaves the pool's care for good
            self._left_the_pool(record)
        except Exception:
            self._failures.record("pool_detach")

    def close(self, dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        try:
            self._closed.inc()
            self._left_the_pool(record)
        except Exception:
            self._failures.record("pool_close")

    def _left_the_pool(self, record: ConnectionPoolEntry) -> None:
        info = record.record_info
        mark = info.pop(_OPEN, None) if info is not None else None
        if mark is not None and mark[0] is self:
            mark[1].closed()
            return
        # Open before instrument() (or counted by an earlier listener): of the current pool.
        engine = self._engine()
        counted = self._open.get(engine.pool) if engine is not None else None
        if counted is not None:
            counted.closed_from_before()

    def close_detached(self, dbapi_connection: Any) -> None:
        try:
            self._closed.inc()
        except Exception:
            self._failures.record("pool_close_detached")

    def invalidate(
        self, dbapi_connection: Any, record: ConnectionPoolEntry, exception: BaseException | None
    ) -> None:
        try:
            self._invalidated.inc()
        except Exception:
            self._failures.record("pool_invalidate")

    def release(self) -> None:
        """Forget checkouts that will never be seen returned (uninstrument, engine gone)."""
        try:
            if self.outstanding:
                self._active.dec(self.outstanding)
                self.outstanding = 0
        except Exception:
            self._failures.record("pool_release")

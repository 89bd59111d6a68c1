"""Pool events -> `db_pool_overflow_total{database}`.

`QueuePool.overflow()` is open connections minus pool_size (it starts at -pool_size), so an
overflow *event* is a new connection made while it is above zero. The `connect` event also fires
when an invalidated connection reconnects; a marker in the record's lifetime info keeps those
from being counted twice.
"""

from __future__ import annotations

import weakref
from typing import Any

from prometheus_client.metrics import Counter
from sqlalchemy.engine import Engine
from sqlalchemy.pool import ConnectionPoolEntry

from exporter.instrumentation.guard import FailureCounter
from exporter.metrics import Metrics

_SEEN = "db_exporter.seen"


class PoolListener:
    def __init__(
        self, engine: Engine, database: str, metrics: Metrics, failures: FailureCounter
    ) -> None:
        self._engine = weakref.ref(engine)  # a strong reference would keep the engine alive
        self._overflow: Counter = metrics.pool_overflow.labels(database)
        self._failures = failures

    def connect(self, dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        try:
            info = record.record_info
            if info is None or _SEEN in info:
                return
            info[_SEEN] = True
            engine = self._engine()
            overflow = getattr(engine.pool, "overflow", None) if engine is not None else None
            if overflow is not None and overflow() > 0:
                self._overflow.inc()
        except Exception:
            self._failures.record("pool_connect")

"""The slow-query log: one JSON record per slow statement, N+1 warnings, per-fingerprint
aggregates, optional plans. `instrument()` feeds it; `/slow-queries` and `/` read it."""

from __future__ import annotations

import threading

from exporter.metrics import Metrics, default_metrics
from exporter.settings import SlowQuerySettings
from exporter.slowlog.context import aiohttp_context_middleware, context
from exporter.slowlog.log import SlowQueryLog

__all__ = [
    "SlowQueryLog",
    "aiohttp_context_middleware",
    "context",
    "default_slow_log",
]

_default: SlowQueryLog | None = None
_lock = threading.Lock()


def default_slow_log(
    settings: SlowQuerySettings | None = None, metrics: Metrics | None = None
) -> SlowQueryLog:
    """The process-wide slow-query log, created on first use (with `settings` if given)."""
    global _default
    with _lock:
        if _default is None:
            _default = SlowQueryLog(settings or SlowQuerySettings(), metrics or default_metrics())
        return _default

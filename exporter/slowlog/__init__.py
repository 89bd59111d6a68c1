"""The slow-query log: one JSON record per slow statement, N+1 warnings, per-fingerprint
aggregates, optional plans. `instrument()` feeds it; `/slow-queries` and `/` read it."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from exporter.inprocess_settings import SlowQuerySettings
from exporter.metrics import Metrics, default_metrics
from exporter.slowlog.context import context
from exporter.slowlog.log import SlowQueryLog

if TYPE_CHECKING:
    from exporter.integrations.aiohttp import aiohttp_context_middleware

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
    """The process-wide slow-query log, created on first use. Given `settings`, it uses them
    from now on, also in the engines instrumented before (see `SlowQueryLog.apply`)."""
    global _default
    with _lock:
        if _default is None:
            _default = SlowQueryLog(settings or SlowQuerySettings(), metrics or default_metrics())
        elif settings is not None:
            _default.apply(settings)
        return _default


def __getattr__(name: str) -> Any:
    # Kept importable from here, where it always was, without loading aiohttp for everyone.
    if name == "aiohttp_context_middleware":
        from exporter.integrations.aiohttp import aiohttp_context_middleware

        return aiohttp_context_middleware
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

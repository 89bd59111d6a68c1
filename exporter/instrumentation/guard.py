"""The rule every listener lives by: never raise into the application.

A failure inside a hook is counted in `exporter_instrumentation_errors_total{kind}` and logged
once per kind (with its own traceback, not the application's error it may have been handling),
not once per query.
"""

from __future__ import annotations

import logging
import sys
import threading

from exporter.metrics import Metrics

log = logging.getLogger("exporter.instrumentation")


class FailureCounter:
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._logged: set[str] = set()
        self._lock = threading.Lock()

    def record(self, kind: str) -> None:
        """Call from an `except` block inside a hook; never raises itself."""
        try:
            self._metrics.instrumentation_errors.labels(kind).inc()
            with self._lock:
                first = kind not in self._logged
                self._logged.add(kind)
            if first:
                log.error(
                    "db-exporter listener %s failed; the application's statement was not "
                    "affected (further failures of this kind are only counted)",
                    kind,
                    exc_info=_unchained(sys.exception()),
                )
        except Exception:  # the guard of last resort must not raise either
            pass


def _unchained(error: BaseException | None) -> BaseException | None:
    """`error` cut from the exception it was raised while handling. A hook that fails while
    the application's error is handled would otherwise log that error too, and its text is the
    application's data (a unique violation's DETAIL quotes the row's values). `error` is the
    hook's own and is dropped after this, so cutting the link loses nothing else."""
    if error is not None:
        error.__cause__ = None
        error.__context__ = None
    return error

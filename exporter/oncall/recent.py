"""The application's pool counters over the last minutes: checkouts that waited, timeouts.

The counters in `Metrics` only grow; what the health strip needs is how much they grew lately.
`PoolHistory.sample()` (every `EVERY_SECONDS`, from a task of the app) keeps their totals,
at most `KEPT` samples, and `recent()` answers the growth since the oldest sample within
`WINDOW_SECONDS`: the span it covers is shorter while the exporter is young.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client.metrics_core import Metric

from exporter.metrics import Metrics

WINDOW_SECONDS = 300
EVERY_SECONDS = 15
KEPT = WINDOW_SECONDS // EVERY_SECONDS + 2  # samples, each a few numbers per database
SLOW_CHECKOUT_SECONDS = 0.1  # a checkout waiting longer than this is counted as a wait


@dataclass(frozen=True)
class PoolTotals:
    checkouts: float = 0.0
    waits: float = 0.0  # checkouts slower than SLOW_CHECKOUT_SECONDS
    timeouts: float = 0.0

    def __sub__(self, other: PoolTotals) -> PoolTotals:
        return PoolTotals(
            self.checkouts - other.checkouts,
            self.waits - other.waits,
            self.timeouts - other.timeouts,
        )


def _samples(families: Iterable[Metric], name: str) -> Iterable[tuple[dict[str, str], float]]:
    for family in families:
        for sample in family.samples:
            if sample.name == name:
                yield sample.labels, sample.value


def pool_totals(metrics: Metrics) -> dict[str, PoolTotals]:
    """Per database: checkouts, those slower than SLOW_CHECKOUT_SECONDS, and timeouts."""
    waits = list(metrics.pool_checkout_wait.collect())
    count: dict[str, float] = {}
    fast: dict[str, float] = {}
    for labels, value in _samples(waits, "db_pool_checkout_wait_seconds_count"):
        count[labels["database"]] = value
    for labels, value in _samples(waits, "db_pool_checkout_wait_seconds_bucket"):
        if float(labels["le"]) == SLOW_CHECKOUT_SECONDS:
            fast[labels["database"]] = value
    timeouts = {
        labels["database"]: value
        for labels, value in _samples(metrics.pool_timeouts.collect(), "db_pool_timeouts_total")
    }
    return {
        database: PoolTotals(
            count.get(database, 0.0),
            count.get(database, 0.0) - fast.get(database, 0.0),
            timeouts.get(database, 0.0),
        )
        for database in sorted(count.keys() | timeouts.keys())
    }


class PoolHistory:
    def __init__(self, metrics: Metrics, clock: Callable[[], float] = time.monotonic) -> None:
        self._metrics = metrics
        self._clock = clock
        self._samples: deque[tuple[float, dict[str, PoolTotals]]] = deque(maxlen=KEPT)

    def sample(self) -> None:
        self._samples.append((self._clock(), pool_totals(self._metrics)))

    def recent(self) -> tuple[float, dict[str, PoolTotals]]:
        """(seconds covered, per database the growth in that span); with no sample yet, the
        totals since the process started (span 0)."""
        now, current = self._clock(), pool_totals(self._metrics)
        base = next(
            ((at, totals) for at, totals in list(self._samples) if now - at <= WINDOW_SECONDS),
            None,
        )
        if base is None:
            return 0.0, current
        at, totals = base
        return now - at, {db: value - totals.get(db, PoolTotals()) for db, value in current.items()}

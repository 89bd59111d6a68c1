"""Latencies of one fingerprint in bounded memory: count, total and max exactly, and quantiles
that are exact up to `EXACT` samples and within `RELATIVE_ERROR` of the true value beyond.

Past `EXACT` samples the values move into log-spaced buckets (each `GROWTH` times wider than
the one before, from `LOWEST_MS` to `HIGHEST_MS`), so a fingerprint costs at most a few
kilobytes however long the log is. A quantile is read from its bucket (L, L * GROWTH] as
2 * L * GROWTH / (GROWTH + 1), which is within `RELATIVE_ERROR` of every value in it (the
estimate DDSketch uses); values below `LOWEST_MS` read as `LOWEST_MS`.
"""

from __future__ import annotations

import math
from array import array

EXACT = 256  # samples kept as they are (2 KB)
GROWTH = 1.04
RELATIVE_ERROR = (GROWTH - 1) / (GROWTH + 1)  # ~2%
LOWEST_MS = 0.01  # values below share the first bucket
HIGHEST_MS = 1e8  # ~28 hours; values above share the last bucket
_LOG_GROWTH = math.log(GROWTH)
_BUCKETS = math.ceil(math.log(HIGHEST_MS / LOWEST_MS) / _LOG_GROWTH) + 1  # 586: 4.6 KB


def _bucket(ms: float) -> int:
    if ms <= LOWEST_MS:
        return 0
    return min(_BUCKETS - 1, math.ceil(math.log(ms / LOWEST_MS) / _LOG_GROWTH))


def _estimate(bucket: int) -> float:
    """Within RELATIVE_ERROR of each value in (LOWEST_MS * GROWTH**(b-1), LOWEST_MS * GROWTH**b]."""
    return 2 * LOWEST_MS * GROWTH**bucket / (GROWTH + 1) if bucket else LOWEST_MS


class Latencies:
    __slots__ = ("_buckets", "_exact", "count", "max", "total")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.max = 0.0
        self._exact: array[float] | None = array("d")
        self._buckets: array[int] | None = None

    def add(self, ms: float) -> None:
        self.count += 1
        self.total += ms
        self.max = max(self.max, ms)
        if self._exact is not None:
            self._exact.append(ms)
            if len(self._exact) <= EXACT:
                return
            self._buckets = array("Q", bytes(8 * _BUCKETS))
            for value in self._exact:
                self._buckets[_bucket(value)] += 1
            self._exact = None
            return
        assert self._buckets is not None
        self._buckets[_bucket(ms)] += 1

    @property
    def exact(self) -> bool:
        return self._exact is not None

    @property
    def stored_bytes(self) -> int:
        """Bytes the samples take: at most `EXACT` floats, then the fixed buckets."""
        samples = self._exact if self._exact is not None else self._buckets
        assert samples is not None
        return len(samples) * samples.itemsize

    def quantile(self, q: float) -> float:
        """The smallest value with at least `q` of the samples at or below it (0 when empty)."""
        if not self.count:
            return 0.0
        rank = max(1, math.ceil(q * self.count))
        if self._exact is not None:
            return sorted(self._exact)[rank - 1]
        assert self._buckets is not None
        seen = 0
        for bucket, count in enumerate(self._buckets):
            seen += count
            if seen >= rank:
                return min(self.max, _estimate(bucket))
        return self.max  # unreachable: the buckets hold every sample

"""Latencies in bounded memory: exact quantiles up to the bound, within the stated error past it."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.slowlog.quantiles import EXACT, HIGHEST_MS, LOWEST_MS, RELATIVE_ERROR, Latencies


def exact_quantile(values: list[float], q: float) -> float:
    return sorted(values)[max(1, math.ceil(q * len(values))) - 1]


def latencies_of(values: list[float]) -> Latencies:
    latencies = Latencies()
    for value in values:
        latencies.add(value)
    return latencies


DURATIONS = st.floats(LOWEST_MS, HIGHEST_MS, allow_nan=False)


@settings(max_examples=25, deadline=None)
@given(st.lists(DURATIONS, min_size=1, max_size=EXACT), st.sampled_from([0.5, 0.95, 0.99]))
def test_quantiles_are_exact_up_to_the_bound(values: list[float], q: float) -> None:
    latencies = latencies_of(values)
    assert latencies.exact
    assert latencies.quantile(q) == exact_quantile(values, q)
    assert (latencies.count, latencies.max) == (len(values), max(values))


@settings(max_examples=50, deadline=None)
@given(st.lists(DURATIONS, min_size=EXACT + 1, max_size=3 * EXACT), st.sampled_from([0.5, 0.95]))
def test_quantiles_past_the_bound_are_within_the_stated_error(
    values: list[float], q: float
) -> None:
    latencies = latencies_of(values)
    assert not latencies.exact
    true = exact_quantile(values, q)
    assert abs(latencies.quantile(q) - true) <= RELATIVE_ERROR * true * (1 + 1e-9)
    assert (latencies.count, latencies.max) == (len(values), max(values))
    assert math.isclose(latencies.total, sum(values))


def test_memory_stays_the_same_however_many_samples() -> None:
    latencies = latencies_of([float(i % 5000) for i in range(EXACT + 1)])
    stored = latencies.stored_bytes
    for i in range(100_000):
        latencies.add(float(i % 5000) + 0.5)
    assert latencies.stored_bytes == stored < 5000
    assert latencies.quantile(0.0) <= latencies.quantile(0.95) <= latencies.max == 4999.5

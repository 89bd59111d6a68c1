"""A collector's pure-Python work, run on the event loop in slices of about a millisecond.

Building and rendering thousands of series takes tens of milliseconds of CPU. In a worker
thread it still holds the GIL for whole switch intervals (5 ms) at a time, so the event loop,
which may be the host application's, stalled for 5-10 ms once per collector run; and it queued
behind whatever else used the loop's default executor. Written as a generator that yields
between small steps, the same work runs on the loop itself and hands the loop back every
`SLICE_SECONDS`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from time import perf_counter
from typing import TypeVar

T = TypeVar("T")

# Work in steps: a generator that yields None between small steps and returns its result.
Steps = Generator[None, None, T]

SLICE_SECONDS = 0.001


async def in_slices(work: Steps[T], budget: float = SLICE_SECONDS) -> T:
    """Run `work` to its end on the running loop, letting other tasks run whenever it has had
    `budget` seconds since its last turn; return what it returns."""
    try:
        deadline = perf_counter() + budget
        while True:
            try:
                next(work)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            if perf_counter() >= deadline:
                await asyncio.sleep(0)
                deadline = perf_counter() + budget
    finally:
        work.close()  # cancelled half-way: the generator's own cleanup runs now


def at_once(work: Steps[T]) -> T:
    """Run `work` to its end without yielding (outside the loop, or when it is small)."""
    while True:
        try:
            next(work)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

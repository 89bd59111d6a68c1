"""Collector work in slices on the event loop: turns for other tasks, results, cleanup."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from collector_helpers import dsn, execute, names
from prometheus_client import CollectorRegistry
from sqlalchemy.engine import URL

from exporter.collectors.exposition import SnapshotStore
from exporter.collectors.runner import DatabaseWorker
from exporter.collectors.slices import Steps, at_once, in_slices
from exporter.metrics import Metrics
from exporter.settings import DatabaseSettings


def counting(steps: int, ticks: list[int], seen: list[int]) -> Steps[str]:
    for _ in range(steps):
        seen.append(ticks[0])
        yield
    return "done"


async def ticking(ticks: list[int]) -> None:
    while True:
        ticks[0] += 1
        await asyncio.sleep(0)


async def test_other_tasks_run_between_slices_and_the_result_comes_back() -> None:
    ticks, seen = [0], []
    ticker = asyncio.create_task(ticking(ticks))
    await asyncio.sleep(0)
    try:
        # A zero budget hands the loop back after every step.
        assert await in_slices(counting(50, ticks, seen), budget=0) == "done"
        assert len(set(seen)) == 50
        # A budget longer than the work never does: the ticker sees none of it.
        seen.clear()
        assert await in_slices(counting(50, ticks, seen), budget=60) == "done"
        assert len(set(seen)) == 1
    finally:
        ticker.cancel()


async def test_cancelled_work_is_closed_and_an_error_reaches_the_caller() -> None:
    closed = asyncio.Event()

    def endless() -> Steps[None]:
        try:
            while True:
                yield
        finally:
            closed.set()

    task = asyncio.create_task(in_slices(endless(), budget=0))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert closed.is_set()

    def failing() -> Steps[None]:
        yield
        raise ValueError("a bug in the collector")

    with pytest.raises(ValueError, match="a bug in the collector"):
        await in_slices(failing())
    assert at_once(counting(3, [0], [])) == "done"


async def test_collectors_do_not_wait_for_a_busy_default_executor(
    fresh_database: URL, registry: CollectorRegistry
) -> None:
    # The loop's default executor may be the host application's, busy with its own blocking
    # calls: the per-index and per-table collectors must not queue behind it.
    execute(fresh_database, "CREATE TABLE t (id int PRIMARY KEY, v int)", "CREATE INDEX ON t (v)")
    settings = DatabaseSettings(
        name="main",
        dsn=dsn(fresh_database),
        collectors={"indexes": {"enabled": True}, "tables": {"enabled": True}},
        election={"enabled": False},
    )
    store = SnapshotStore()
    registry.register(store)
    worker = DatabaseWorker(settings, Metrics(registry), store)
    loop = asyncio.get_running_loop()
    busy = ThreadPoolExecutor(max_workers=1)
    release = threading.Event()
    loop.set_default_executor(busy)
    blocker = loop.run_in_executor(None, release.wait)
    try:
        assert await worker.check()
        jobs = {job.collector.name: job for job in worker.jobs}
        for name in ("indexes", "tables"):
            assert await asyncio.wait_for(worker.run_collector(jobs[name]), 10), name
        sample = registry.get_sample_value(
            "pg_index_size_bytes",
            {
                **names(fresh_database),
                "schemaname": "public",
                "relname": "t",
                "indexrelname": "t_v_idx",
            },
        )
        assert sample is not None
        assert sample > 0
        assert not blocker.done()
    finally:
        release.set()
        await blocker
        await worker.close()

"""Pool telemetry on real pools: QueuePool, AsyncAdaptedQueuePool and NullPool."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool, QueuePool

from exporter import Metrics, instrument, uninstrument
from exporter.dsn import async_url, sync_url
from exporter.instrumentation.queries import STATEMENT_METHODS


def value(registry: CollectorRegistry, name: str, database: str = "main") -> float:
    return registry.get_sample_value(name, {"database": database}) or 0.0


@pytest.fixture
def small_pool(database_url: URL) -> Iterator[Engine]:
    engine = create_engine(sync_url(database_url), pool_size=1, max_overflow=1, pool_timeout=0.2)
    yield engine
    uninstrument(engine)
    engine.dispose()


def test_checkout_wait_and_timeouts_are_measured_around_the_checkout(
    small_pool: Engine, metrics: Metrics, registry: CollectorRegistry
) -> None:
    instrument(small_pool, metrics=metrics)
    with small_pool.connect(), small_pool.connect():
        with pytest.raises(PoolTimeout):  # the application still gets its own error
            small_pool.connect()
        assert value(registry, "db_pool_timeouts_total") == 1
    assert value(registry, "db_pool_checkout_wait_seconds_count") == 3
    assert value(registry, "db_pool_checkout_wait_seconds_sum") >= 0.2  # the timed-out wait
    assert (
        registry.get_sample_value(
            "db_pool_checkout_wait_seconds_bucket", {"database": "main", "le": "0.1"}
        )
        == 2
    )


async def test_async_pool_timeouts_are_counted(
    database_url: URL, metrics: Metrics, registry: CollectorRegistry
) -> None:
    engine = create_async_engine(
        async_url(database_url), pool_size=1, max_overflow=0, pool_timeout=0.2
    )
    instrument(engine, metrics=metrics)
    try:
        async with engine.connect() as held:
            await held.execute(text("SELECT 1"))
            with pytest.raises(PoolTimeout):
                await engine.connect()
        assert value(registry, "db_pool_timeouts_total") == 1
        assert value(registry, "db_pool_checkout_wait_seconds_count") == 2
    finally:
        uninstrument(engine)
        await engine.dispose()


def test_connection_lifecycle_counts_and_times(
    small_pool: Engine, metrics: Metrics, registry: CollectorRegistry
) -> None:
    instrument(small_pool, metrics=metrics)
    with small_pool.connect() as first, small_pool.connect() as second:
        first.execute(text("SELECT 1"))
        second.execute(text("SELECT 1"))
        assert value(registry, "db_pool_overflow_connections") == 1
        assert value(registry, "db_connections_active") == 2
    # The pool keeps one connection; the overflow one is closed on return.
    assert value(registry, "db_connections_created_total") == 2
    assert value(registry, "db_connection_create_seconds_count") == 2
    assert value(registry, "db_connection_use_seconds_count") == 2
    assert value(registry, "db_pool_overflow_total") == 1
    assert value(registry, "db_pool_overflow_discarded_total") == 1
    assert value(registry, "db_connections_closed_total") == 1
    assert value(registry, "db_pool_overflow_connections") == 0
    assert value(registry, "db_connections_idle") == 1

    with small_pool.connect() as conn:
        conn.invalidate()  # e.g. after a disconnect error
    assert value(registry, "db_connections_invalidated_total") == 1
    assert value(registry, "db_connections_closed_total") == 2
    assert value(registry, "db_connections_active") == 0
    with small_pool.connect() as conn:  # the pool entry reconnects: a new connection ...
        conn.execute(text("SELECT 1"))
    assert value(registry, "db_connections_created_total") == 3
    assert value(registry, "db_pool_overflow_total") == 1  # ... but no overflow event


def test_null_pool_counts_active_connections_by_events(
    database_url: URL, metrics: Metrics, registry: CollectorRegistry
) -> None:
    engine = create_engine(sync_url(database_url), poolclass=NullPool)
    instrument(engine, metrics=metrics)
    try:
        with ExitStack() as stack:
            for _ in range(3):
                stack.enter_context(engine.connect()).execute(text("SELECT 1"))
            assert value(registry, "db_connections_active") == 3
        assert value(registry, "db_connections_active") == 0
        assert value(registry, "db_connections_created_total") == 3
        assert value(registry, "db_connections_closed_total") == 3
        assert value(registry, "db_pool_checkout_wait_seconds_count") == 3
        assert registry.get_sample_value("db_pool_size", {"database": "main"}) is None
    finally:
        uninstrument(engine)
        engine.dispose()


def test_several_engines_in_one_process(
    database_url: URL, metrics: Metrics, registry: CollectorRegistry
) -> None:
    url = sync_url(database_url)
    orders, audit_a, audit_b = (create_engine(url, pool_size=2) for _ in range(3))
    instrument(orders, "orders", metrics=metrics)
    instrument(audit_a, "audit", metrics=metrics)
    instrument(audit_b, "audit", metrics=metrics)
    try:
        with orders.connect(), audit_a.connect(), audit_b.connect(), audit_b.connect():
            assert value(registry, "db_connections_active", "orders") == 1
            assert value(registry, "db_connections_active", "audit") == 3
            assert value(registry, "db_pool_size", "audit") == 4  # two pools of 2
    finally:
        for engine in (orders, audit_a, audit_b):
            uninstrument(engine)
            engine.dispose()


def test_checkouts_outside_the_instrumented_window_are_not_miscounted(
    small_pool: Engine, metrics: Metrics, registry: CollectorRegistry
) -> None:
    before = small_pool.connect()  # checked out before instrument()
    instrument(small_pool, metrics=metrics)
    before.close()
    assert value(registry, "db_connections_active") == 0  # not -1

    during = small_pool.connect()
    assert value(registry, "db_connections_active") == 1
    uninstrument(small_pool)  # the return will not be seen: the gauge lets go of it now
    assert value(registry, "db_connections_active") == 0
    during.close()
    assert value(registry, "db_connections_active") == 0


def test_checkout_timing_survives_dispose(
    small_pool: Engine, metrics: Metrics, registry: CollectorRegistry
) -> None:
    instrument(small_pool, metrics=metrics)
    small_pool.dispose()
    for _ in range(3):
        with small_pool.connect():
            pass
    # The new pool is wrapped by its first connection: the checkout that made it goes untimed.
    assert value(registry, "db_pool_checkout_wait_seconds_count") == 2


def checkouts_at_once(engine: Engine, checkouts: int, new_connections: int) -> None:
    """`checkouts` threads each check out a connection and hold it until all have one. The
    `new_connections` connections made wait for each other before they connect, so that all
    of them are being made before any is counted: the race of a cold pool, every time."""
    made = threading.Barrier(new_connections)
    held = threading.Barrier(checkouts)

    def wait_for_the_others_made(*connect_arguments: object) -> None:
        made.wait(timeout=10)

    def check_out() -> None:
        with engine.connect():
            held.wait(timeout=10)

    event.listen(engine, "do_connect", wait_for_the_others_made)
    try:
        with ThreadPoolExecutor(checkouts) as threads:
            for done in [threads.submit(check_out) for _ in range(checkouts)]:
                done.result()
    finally:
        event.remove(engine, "do_connect", wait_for_the_others_made)


def test_concurrent_first_checkouts_count_only_the_connections_beyond_pool_size(
    database_url: URL, metrics: Metrics, registry: CollectorRegistry
) -> None:
    engine = create_engine(sync_url(database_url), pool_size=2, max_overflow=1, pool_timeout=10)
    instrument(engine, metrics=metrics)
    try:
        checkouts_at_once(engine, checkouts=3, new_connections=3)  # a cold pool
        assert value(registry, "db_pool_overflow_total") == 1
        assert value(registry, "db_connections_created_total") == 3
        checkouts_at_once(engine, checkouts=3, new_connections=1)  # warm: two idle ones reused
        assert value(registry, "db_pool_overflow_total") == 2
        engine.dispose()  # a new, empty pool
        checkouts_at_once(engine, checkouts=3, new_connections=3)
        assert value(registry, "db_pool_overflow_total") == 3
        assert value(registry, "db_connections_created_total") == 7
    finally:
        uninstrument(engine)
        engine.dispose()


def test_connections_open_before_instrument_count_toward_pool_size(
    database_url: URL, metrics: Metrics, registry: CollectorRegistry
) -> None:
    engine = create_engine(sync_url(database_url), pool_size=2, max_overflow=1, pool_timeout=10)
    try:
        with engine.connect(), engine.connect():  # both kept idle in the pool
            pass
        instrument(engine, metrics=metrics)
        checkouts_at_once(engine, checkouts=3, new_connections=1)
        assert value(registry, "db_pool_overflow_total") == 1
        engine.dispose()  # closes the two from before: the new pool starts empty
        checkouts_at_once(engine, checkouts=3, new_connections=3)
        assert value(registry, "db_pool_overflow_total") == 2
    finally:
        uninstrument(engine)
        engine.dispose()


def _listener_snapshot(engine: Engine) -> dict[str, list[object]]:
    names = ("before_cursor_execute", "after_cursor_execute", "engine_disposed")
    pool_names = ("connect", "checkout", "checkin", "detach", "close", "close_detached")
    snapshot: dict[str, list[object]] = {n: list(getattr(engine.dispatch, n)) for n in names}
    snapshot |= {f"pool.{n}": list(getattr(engine.pool.dispatch, n)) for n in pool_names}
    snapshot["pool.invalidate"] = list(engine.pool.dispatch.invalidate)
    snapshot["dialect.do_connect"] = list(engine.dialect.dispatch.do_connect)
    for name in ("do_execute", "do_executemany", "do_execute_no_params", "handle_error"):
        snapshot[f"dialect.{name}"] = list(getattr(engine.dialect.dispatch, name))
    # The statement methods instrument() puts on the dialect instance.
    snapshot["dialect.instance"] = [vars(engine.dialect).get(n) for n in STATEMENT_METHODS]
    return snapshot


def test_uninstrument_leaves_the_engine_exactly_as_before(
    small_pool: Engine, metrics: Metrics
) -> None:
    with small_pool.connect():
        pass
    listeners, pool_attributes = _listener_snapshot(small_pool), dict(vars(small_pool.pool))
    instrument(small_pool, metrics=metrics)
    assert _listener_snapshot(small_pool) != listeners
    assert "connect" in vars(small_pool.pool)  # the checkout timer
    uninstrument(small_pool)
    assert _listener_snapshot(small_pool) == listeners
    assert dict(vars(small_pool.pool)) == pool_attributes
    assert type(small_pool.pool).connect is QueuePool.connect

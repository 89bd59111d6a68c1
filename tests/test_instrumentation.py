"""instrument(): exact counts on a real PostgreSQL, sync (psycopg) and async (asyncpg) engines."""

from __future__ import annotations

import gc
import logging
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import exporter.instrumentation as instrumentation
import exporter.instrumentation.queries as queries
from exporter import Metrics, instrument, is_instrumented, uninstrument
from exporter.dsn import async_url, sync_url
from exporter.instrumentation.budget import LabelLimits
from exporter.instrumentation.queries import STATEMENT_METHODS

POOL_SIZE = 3


def count(registry: CollectorRegistry, **labels: str) -> float:
    labels = {"database": "main", "status": "ok", **labels}
    return registry.get_sample_value("query_duration_seconds_count", labels) or 0.0


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
def sync_engine(fresh_database: URL) -> Iterator[Engine]:
    engine = create_engine(sync_url(fresh_database), pool_size=POOL_SIZE, max_overflow=5)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE accounts (id int PRIMARY KEY, owner text)"))
        conn.execute(text("CREATE TABLE notes (id int PRIMARY KEY)"))
    yield engine
    uninstrument(engine)
    engine.dispose()


@pytest.fixture
async def async_engine(fresh_database: URL) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(async_url(fresh_database), pool_size=POOL_SIZE, max_overflow=5)
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE accounts (id int PRIMARY KEY, owner text)"))
    yield engine
    uninstrument(engine)
    await engine.dispose()


def test_sync_histogram_counts_each_statement_exactly(
    sync_engine: Engine, metrics: Metrics, registry: CollectorRegistry
) -> None:
    instrument(sync_engine, database="main", metrics=metrics)
    with sync_engine.connect() as conn:
        conn.execute(text("SELECT 1"))  # warm-up: the dialect's first-connect statements
        before = count(registry, operation="SELECT", table="accounts")
        for i in range(25):
            conn.execute(text("SELECT owner FROM accounts WHERE id = :id"), {"id": i})
        for i in range(7):
            conn.execute(text("INSERT INTO accounts (id, owner) VALUES (:id, 'x')"), {"id": i})
        conn.commit()
    assert count(registry, operation="SELECT", table="accounts") - before == 25
    assert count(registry, operation="INSERT", table="accounts") == 7
    total = sample(
        registry,
        "query_duration_seconds_sum",
        database="main",
        operation="SELECT",
        table="accounts",
        status="ok",
    )
    assert total > 0


async def test_async_histogram_counts_each_statement_exactly(
    async_engine: AsyncEngine, metrics: Metrics, registry: CollectorRegistry
) -> None:
    instrument(async_engine, database="main", metrics=metrics)
    async with async_engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
        before = count(registry, operation="SELECT", table="accounts")
        for i in range(25):
            await conn.execute(text("SELECT owner FROM accounts WHERE id = :id"), {"id": i})
        await conn.execute(
            text("UPDATE accounts SET owner = 'y' WHERE id = :id"), [{"id": 1}, {"id": 2}]
        )
    assert count(registry, operation="SELECT", table="accounts") - before == 25
    assert count(registry, operation="UPDATE", table="accounts") == 1  # one executemany call


def test_sync_pool_active_and_overflow_are_exact(
    sync_engine: Engine, metrics: Metrics, registry: CollectorRegistry
) -> None:
    instrument(sync_engine, database="main", metrics=metrics)
    assert sample(registry, "db_pool_size", database="main") == POOL_SIZE
    assert sample(registry, "db_pool_max_overflow", database="main") == 5
    overflow_before = sample(registry, "db_pool_overflow_total", database="main")
    with ExitStack() as stack:
        for _ in range(POOL_SIZE + 2):
            stack.enter_context(sync_engine.connect()).execute(text("SELECT 1"))
        assert sample(registry, "db_connections_active", database="main") == POOL_SIZE + 2
        assert sample(registry, "db_pool_overflow_total", database="main") - overflow_before == 2
    # Back in the pool: the two overflow connections were closed, the rest are idle.
    assert sample(registry, "db_connections_active", database="main") == 0
    assert sample(registry, "db_connections_idle", database="main") == POOL_SIZE


async def test_async_pool_active_and_overflow_are_exact(
    async_engine: AsyncEngine, metrics: Metrics, registry: CollectorRegistry
) -> None:
    instrument(async_engine, database="main", metrics=metrics)
    overflow_before = sample(registry, "db_pool_overflow_total", database="main")
    conns = []
    try:
        for _ in range(POOL_SIZE + 2):
            conn = await async_engine.connect()
            conns.append(conn)
            await conn.execute(text("SELECT 1"))
        assert sample(registry, "db_connections_active", database="main") == POOL_SIZE + 2
        assert sample(registry, "db_pool_overflow_total", database="main") - overflow_before == 2
    finally:
        for conn in conns:
            await conn.close()
    assert sample(registry, "db_connections_active", database="main") == 0


def test_failing_statement_is_timed_as_error(
    sync_engine: Engine, metrics: Metrics, registry: CollectorRegistry
) -> None:
    instrument(sync_engine, database="main", metrics=metrics)
    with sync_engine.connect() as conn:
        for _ in range(3):
            with pytest.raises(DataError):
                conn.execute(text("SELECT 1 / 0 FROM accounts"))
            conn.rollback()
        assert conn.execute(text("SELECT 41 + 1")).scalar() == 42
    assert count(registry, operation="SELECT", table="accounts", status="error") == 3
    assert count(registry, operation="SELECT", table="accounts", status="ok") == 0


async def test_async_failing_statement_is_timed_as_error(
    async_engine: AsyncEngine, metrics: Metrics, registry: CollectorRegistry
) -> None:
    instrument(async_engine, database="main", metrics=metrics)
    async with async_engine.connect() as conn:
        with pytest.raises(DBAPIError, match="division by zero"):
            await conn.execute(text("SELECT 1 / 0 FROM accounts"))
        await conn.rollback()
    assert count(registry, operation="SELECT", table="accounts", status="error") == 1


def broken_classifier(sql: str, postgresql: bool) -> None:
    """In place of `identify`: a bug of db-exporter's own, on every statement."""
    raise IndexError("simulated bug in the classifier")


def test_listener_failure_never_reaches_the_application(
    sync_engine: Engine,
    metrics: Metrics,
    registry: CollectorRegistry,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(queries, "identify", broken_classifier)
    instrument(sync_engine, database="main", metrics=metrics)
    with (
        caplog.at_level(logging.ERROR, logger="exporter.instrumentation"),
        sync_engine.connect() as conn,
    ):
        results = [conn.execute(text(f"SELECT {i} + 1")).scalar() for i in range(3)]
        with pytest.raises(DataError):  # the application's own error is untouched
            conn.execute(text("SELECT 1 / 0"))
    assert results == [1, 2, 3]
    errors = "exporter_instrumentation_errors_total"
    assert sample(registry, errors, kind="query_succeeded") == 3
    assert sample(registry, errors, kind="query_failed") == 1
    assert (
        sample(
            registry, "query_errors_total", database="main", operation="SELECT", sqlstate_class="22"
        )
        == 0
    )  # counting it needed the broken classifier
    logged = [r for r in caplog.records if "query_succeeded" in r.getMessage()]
    assert len(logged) == 1  # logged once per kind, counted every time


def test_a_listener_failure_logs_none_of_the_applications_error(
    sync_engine: Engine,
    metrics: Metrics,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The listener fails while the application's unique violation is being handled: its one
    # traceback must not chain to that error, whose DETAIL quotes the row's values.
    canary = "canary-7f3a@example.org"
    with sync_engine.begin() as conn:
        conn.execute(text("CREATE TABLE users (email text UNIQUE)"))
        conn.execute(text("INSERT INTO users VALUES (:email)"), {"email": canary})

    monkeypatch.setattr(queries, "identify", broken_classifier)
    instrument(sync_engine, database="main", metrics=metrics)
    with (
        caplog.at_level(logging.ERROR, logger="exporter.instrumentation"),
        sync_engine.connect() as conn,
        pytest.raises(IntegrityError, match="duplicate key") as error,
    ):
        conn.execute(text("INSERT INTO users VALUES (:email)"), {"email": canary})
    assert canary in str(error.value)  # the application's own error keeps its DETAIL
    [failed] = [r for r in caplog.records if "query_failed" in r.getMessage()]
    assert failed.exc_info is not None
    logged = logging.Formatter().format(failed)
    assert "IndexError: simulated bug in the classifier" in logged
    assert logged.count("Traceback (most recent call last)") == 1
    assert canary not in caplog.text
    assert "UniqueViolation" not in caplog.text


def test_instrument_is_idempotent_and_uninstrument_removes_every_listener(
    sync_engine: Engine, metrics: Metrics, registry: CollectorRegistry
) -> None:
    pool_listeners = list(sync_engine.pool.dispatch.connect)  # the dialect's own
    instrument(sync_engine, database="main", metrics=metrics)
    instrument(sync_engine, database="main", metrics=metrics)
    with pytest.raises(ValueError, match="already instrumented as database 'main'"):
        instrument(sync_engine, database="other", metrics=metrics)
    with sync_engine.connect() as conn:
        conn.execute(text("SELECT id FROM notes"))
    assert count(registry, operation="SELECT", table="notes") == 1

    attached = list(instrumentation._attached[sync_engine].listeners)
    assert all(event.contains(sync_engine, name, fn) for name, fn in attached)
    uninstrument(sync_engine)
    uninstrument(sync_engine)  # a second call is harmless
    assert not is_instrumented(sync_engine)
    assert not any(event.contains(sync_engine, name, fn) for name, fn in attached)
    assert not sync_engine.dialect.dispatch.do_execute
    assert not sync_engine.dialect.dispatch.do_executemany
    assert not set(STATEMENT_METHODS) & set(vars(sync_engine.dialect))
    assert list(sync_engine.pool.dispatch.connect) == pool_listeners
    with sync_engine.connect() as conn:
        conn.execute(text("SELECT id FROM notes"))
    assert count(registry, operation="SELECT", table="notes") == 1
    assert registry.get_sample_value("db_connections_active", {"database": "main"}) == 0
    assert registry.get_sample_value("db_pool_size", {"database": "main"}) is None


class ForeignWrapper:
    """Another library's wrapper on the dialect's do_execute, as APM agents install them."""

    def __init__(self, engine: Engine) -> None:
        self.inner = engine.dialect.do_execute
        self.calls = 0

    def __call__(self, *args: Any) -> None:
        self.calls += 1
        self.inner(*args)


def test_a_wrapper_installed_before_instrument_keeps_working_and_is_put_back(
    sync_engine: Engine, metrics: Metrics, registry: CollectorRegistry
) -> None:
    foreign = ForeignWrapper(sync_engine)
    sync_engine.dialect.do_execute = foreign  # type: ignore[method-assign]
    instrument(sync_engine, database="main", metrics=metrics)
    with sync_engine.connect() as conn:
        conn.execute(text("SELECT id FROM notes"))
    assert count(registry, operation="SELECT", table="notes") == 1
    assert foreign.calls >= 1
    uninstrument(sync_engine)
    assert vars(sync_engine.dialect)["do_execute"] is foreign
    calls = foreign.calls
    with sync_engine.connect() as conn:
        conn.execute(text("SELECT id FROM notes"))
    assert foreign.calls == calls + 1
    assert count(registry, operation="SELECT", table="notes") == 1


def test_a_wrapper_installed_after_instrument_is_left_in_place_with_a_warning(
    sync_engine: Engine, metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    instrument(sync_engine, database="main", metrics=metrics)
    foreign = ForeignWrapper(sync_engine)  # it calls ours
    sync_engine.dialect.do_execute = foreign  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="exporter.instrumentation"):
        uninstrument(sync_engine)
    assert [r.getMessage() for r in caplog.records] == [
        "dialect.do_execute was replaced after instrument(); leaving it in place"
    ]
    assert vars(sync_engine.dialect)["do_execute"] is foreign
    with sync_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM notes")).scalar() == 0
    assert foreign.calls >= 1
    # The other statement methods were put back.
    assert not {"do_executemany", "do_execute_no_params"} & set(vars(sync_engine.dialect))


def test_listeners_survive_engine_dispose(
    sync_engine: Engine, metrics: Metrics, registry: CollectorRegistry
) -> None:
    pool_listeners = list(sync_engine.pool.dispatch.connect)
    instrument(sync_engine, database="main", metrics=metrics)
    sync_engine.dispose()  # swaps in a new pool
    with sync_engine.connect() as conn:
        conn.execute(text("SELECT id FROM notes"))
    assert count(registry, operation="SELECT", table="notes") == 1
    assert sample(registry, "db_connections_idle", database="main") == 1
    uninstrument(sync_engine)
    assert list(sync_engine.pool.dispatch.connect) == pool_listeners


def test_garbage_collected_engine_leaves_nothing_behind(
    fresh_database: URL, metrics: Metrics, registry: CollectorRegistry
) -> None:
    engine = create_engine(sync_url(fresh_database))
    instrument(engine, database="gone", metrics=metrics)
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    assert sample(registry, "db_pool_size", database="gone") == 5
    engine.dispose()
    ref = weakref.ref(engine)
    del engine, conn
    gc.collect()
    assert ref() is None
    assert registry.get_sample_value("db_pool_size", {"database": "gone"}) is None


def test_table_label_is_bounded(
    sync_engine: Engine, metrics: Metrics, registry: CollectorRegistry
) -> None:
    metrics.limits = LabelLimits(default=1)
    instrument(sync_engine, database="main", metrics=metrics)
    with sync_engine.connect() as conn:
        conn.execute(text("SELECT id FROM accounts"))
        conn.execute(text("SELECT id FROM notes"))
    assert count(registry, operation="SELECT", table="accounts") == 1
    assert count(registry, operation="SELECT", table="other") == 1
    assert count(registry, operation="SELECT", table="notes") == 0


def test_known_tables_limit_the_table_label(
    sync_engine: Engine, metrics: Metrics, registry: CollectorRegistry
) -> None:
    instrument(sync_engine, database="main", metrics=metrics, tables={"notes"})
    with sync_engine.connect() as conn:
        conn.execute(text("SELECT id FROM accounts"))
        conn.execute(text("SELECT id FROM notes"))
        conn.execute(text("SELECT count(*) FROM pg_class"))
    assert count(registry, operation="SELECT", table="notes") == 1
    assert count(registry, operation="SELECT", table="other") == 2

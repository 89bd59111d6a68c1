"""Errors by SQLSTATE, rows and batches, exemplars, label caps and fault injection at every hook."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, insert, select, text
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, ProgrammingError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import exporter.instrumentation as instrumentation
import exporter.instrumentation.pool as pool_module
import exporter.instrumentation.queries as queries
from exporter import Metrics, instrument, uninstrument
from exporter.dsn import async_url, sync_url
from exporter.inprocess_settings import InstrumentationSettings
from exporter.instrumentation.budget import LabelLimits

metadata = MetaData()
items = Table("items", metadata, Column("id", Integer, primary_key=True), Column("name", String))


def errors(registry: CollectorRegistry, operation: str, sqlstate_class: str) -> float:
    labels = {"database": "main", "operation": operation, "sqlstate_class": sqlstate_class}
    return registry.get_sample_value("query_errors_total", labels) or 0.0


def rows(registry: CollectorRegistry, operation: str, table: str = "items") -> float:
    labels = {"database": "main", "operation": operation, "table": table}
    return registry.get_sample_value("query_rows_total", labels) or 0.0


def calls(registry: CollectorRegistry, operation: str, status: str = "ok") -> float:
    labels = {"database": "main", "operation": operation, "table": "items", "status": status}
    return registry.get_sample_value("query_duration_seconds_count", labels) or 0.0


@pytest.fixture
def engine(fresh_database: URL) -> Iterator[Engine]:
    engine = create_engine(sync_url(fresh_database), pool_size=1, max_overflow=1, pool_timeout=0.2)
    metadata.create_all(engine)
    yield engine
    uninstrument(engine)
    engine.dispose()


@pytest.fixture
async def async_engine(fresh_database: URL) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(async_url(fresh_database))
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield engine
    uninstrument(engine)
    await engine.dispose()


def test_errors_are_counted_by_sqlstate_class(
    engine: Engine, metrics: Metrics, registry: CollectorRegistry
) -> None:
    instrument(engine, metrics=metrics)
    with engine.connect() as conn:
        conn.execute(insert(items).values(id=1, name="a"))
        conn.commit()
        with pytest.raises(IntegrityError):
            conn.execute(insert(items).values(id=1, name="again"))  # 23505
        conn.rollback()
        with pytest.raises(DBAPIError):
            conn.execute(text("SELECT 1 / 0 FROM items"))  # 22012
        conn.rollback()
        with pytest.raises(ProgrammingError):
            conn.execute(text("SELECT nope FROM items"))  # 42703
        conn.rollback()
    assert errors(registry, "INSERT", "23") == 1
    assert errors(registry, "SELECT", "22") == 1
    assert errors(registry, "SELECT", "42") == 1
    assert calls(registry, "INSERT", "error") == 1
    assert calls(registry, "INSERT", "ok") == 1


async def test_async_errors_are_counted_by_sqlstate_class(
    async_engine: AsyncEngine, metrics: Metrics, registry: CollectorRegistry
) -> None:
    instrument(async_engine, metrics=metrics)
    async with async_engine.connect() as conn:
        await conn.execute(insert(items).values(id=1, name="a"))
        with pytest.raises(IntegrityError):
            await conn.execute(insert(items).values(id=1, name="again"))
        await conn.rollback()
        with pytest.raises(DBAPIError):
            await conn.execute(text("SELECT 1 / 0 FROM items"))
    assert errors(registry, "INSERT", "23") == 1
    assert errors(registry, "SELECT", "22") == 1


def test_ten_thousand_failing_statements_leave_no_state_behind(
    engine: Engine, metrics: Metrics, registry: CollectorRegistry
) -> None:
    instrument(engine, metrics=metrics)
    listener = instrumentation._attached[engine].queries
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for i in range(10_000):
            with pytest.raises(DBAPIError):
                conn.execute(text(f"SELECT 1 / 0 FROM items WHERE id > {i}"))
        assert conn.execute(text("SELECT count(*) FROM items")).scalar() == 0
    assert errors(registry, "SELECT", "22") == 10_000
    assert calls(registry, "SELECT", "error") == 10_000
    assert len(listener._statements) <= InstrumentationSettings().statement_cache_size
    assert len(listener._errors) == 1


# Four statements, each batch one of them: the budget holds when CI runs this file with the
# pytest plugin on (.ci/run).
@pytest.mark.db_queries(max=4)
def test_batches_are_one_call_with_their_row_count(
    engine: Engine, metrics: Metrics, registry: CollectorRegistry
) -> None:
    instrument(engine, metrics=metrics)
    with engine.begin() as conn:
        # executemany: one cursor call for 40 parameter sets
        conn.execute(
            text("INSERT INTO items (id, name) VALUES (:id, 'x')"), [{"id": i} for i in range(40)]
        )
        assert calls(registry, "INSERT") == 1
        assert rows(registry, "INSERT") == 40
        # insertmanyvalues: INSERT .. RETURNING in one batch
        returned = conn.execute(
            insert(items).returning(items.c.id), [{"id": 100 + i, "name": "y"} for i in range(25)]
        ).all()
        assert len(returned) == 25
        assert calls(registry, "INSERT") == 2
        assert rows(registry, "INSERT") == 65
        assert len(conn.execute(select(items).where(items.c.id < 7)).all()) == 7
        assert rows(registry, "SELECT") == 7
        conn.execute(text("UPDATE items SET name = 'z' WHERE id < 10"))
        assert rows(registry, "UPDATE") == 10


def test_exemplars_carry_the_active_trace(
    engine: Engine, metrics: Metrics, registry: CollectorRegistry
) -> None:
    instrument(engine, metrics=metrics)
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("transfer") as span, engine.connect() as conn:
        conn.execute(select(items))
    trace_id = format(span.get_span_context().trace_id, "032x")
    exposition = openmetrics(registry).decode()
    bucket_lines = [
        line for line in exposition.splitlines()
        if line.startswith("query_duration_seconds_bucket") and 'table="items"' in line
    ]  # fmt: skip
    assert any(f'trace_id="{trace_id}"' in line for line in bucket_lines)

    with engine.connect() as conn:  # outside a span: no exemplar is made up
        conn.execute(text("SELECT 1"))
    other = [
        line for line in openmetrics(registry).decode().splitlines() if 'table="other"' in line
    ]
    assert other
    assert not any("trace_id" in line for line in other)


async def test_async_exemplars_carry_the_active_trace(
    async_engine: AsyncEngine, metrics: Metrics, registry: CollectorRegistry
) -> None:
    instrument(async_engine, metrics=metrics)
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("transfer") as span:
        async with async_engine.connect() as conn:
            await conn.execute(select(items))
    trace_id = format(span.get_span_context().trace_id, "032x")
    assert f'trace_id="{trace_id}"' in openmetrics(registry).decode()


def test_label_sets_over_the_cap_fold_into_other_and_are_counted(
    engine: Engine, metrics: Metrics, registry: CollectorRegistry
) -> None:
    metrics.limits = LabelLimits(default=2, per_metric={"unrelated_metric": 100})
    instrument(engine, metrics=metrics)
    with engine.connect() as conn:
        conn.execute(text("SELECT * FROM items"))  # admitted: (SELECT, items, ok)
        conn.execute(text("INSERT INTO items VALUES (1, 'a')"))  # admitted: (INSERT, items, ok)
        conn.execute(text("UPDATE items SET name = 'b'"))  # over the cap: table -> other
    assert calls(registry, "SELECT") == 1
    assert calls(registry, "INSERT") == 1
    other = {"database": "main", "operation": "UPDATE", "table": "other", "status": "ok"}
    assert registry.get_sample_value("query_duration_seconds_count", other) == 1
    assert (
        registry.get_sample_value(
            "exporter_label_overflow_total", {"metric": "query_duration_seconds"}
        )
        == 1
    )
    assert rows(registry, "UPDATE", table="other") == 1  # rows follow the folded label set


class Exploding:
    """Stands in for any object a hook uses: every use raises, like a bug would."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"simulated failure ({name})")


def test_a_fault_in_every_hook_never_reaches_the_application(
    engine: Engine,
    metrics: Metrics,
    registry: CollectorRegistry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    instrument(engine, metrics=metrics)
    first = engine.connect()  # checked out while everything works: marked
    second = engine.connect()

    attached = instrumentation._attached[engine]
    listeners = {fn.__self__ for _, fn in attached.listeners} | {attached.queries}
    for listener in listeners:
        for name, attribute in list(vars(listener).items()):
            if isinstance(attribute, (MetricWrapperBase, Metrics, dict)):
                setattr(listener, name, Exploding())

    def broken(*args: Any) -> Any:
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(queries, "perf_counter", broken)
    monkeypatch.setattr(pool_module, "perf_counter", broken)
    monkeypatch.setattr(pool_module.PoolListener, "wrap", broken)

    # Every application operation below behaves exactly as without instrumentation.
    assert first.execute(text("SELECT 41 + 1")).scalar() == 42  # query_start
    with monkeypatch.context() as working_clock:  # the start is stamped, the rest fails
        working_clock.setattr(queries, "perf_counter", time.perf_counter)
        assert first.execute(text("SELECT 42 + 1")).scalar() == 43  # query_succeeded
        with pytest.raises(DBAPIError, match="division by zero"):
            first.execute(text("SELECT 1 / 0"))  # query_failed
    first.rollback()
    second.connection.detach()  # detach ...
    assert second.execute(text("SELECT 2")).scalar() == 2
    second.close()  # ... close_detached
    first.invalidate()  # invalidate, close
    first.close()  # checkin
    third = engine.connect()  # the checkout timer, do_connect, connect, checkout
    assert third.execute(text("SELECT 3")).scalar() == 3
    fourth = engine.connect()  # an overflow connection
    with pytest.raises(PoolTimeout):  # the pool's own error, untouched
        engine.connect()
    fourth.close()
    third.close()
    engine.dispose()  # the new pool's first connection re-wraps it
    with engine.connect() as conn:
        assert conn.execute(text("SELECT 4")).scalar() == 4

    kinds = {
        sample.labels["kind"]
        for family in registry.collect()
        if family.name == "exporter_instrumentation_errors"
        for sample in family.samples
        if sample.name.endswith("_total") and sample.value > 0
    }
    assert kinds >= {
        "query_start", "query_succeeded", "query_failed",
        "do_connect", "pool_connect", "pool_checkout", "pool_checkin", "pool_detach",
        "pool_close", "pool_close_detached", "pool_invalidate", "pool_checkout_wait",
    }  # fmt: skip


@pytest.mark.allow_n_plus_one(reason="the same statement 50 times, on purpose")
def test_listener_cost_is_paid_once_per_distinct_statement(
    engine: Engine, metrics: Metrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []
    real = queries.identify

    def counting(sql: str, postgresql: bool) -> Any:
        seen.append(sql)
        return real(sql, postgresql)

    monkeypatch.setattr(queries, "identify", counting)
    instrument(engine, metrics=metrics)
    with engine.connect() as conn:
        for _ in range(50):
            conn.execute(text("SELECT count(*) FROM items"))
    assert seen.count("SELECT count(*) FROM items") == 1


def test_statement_text_never_becomes_a_label(
    engine: Engine, metrics: Metrics, registry: CollectorRegistry
) -> None:
    instrument(engine, metrics=metrics)
    secret = f"s3cret-{time.time_ns()}"
    with engine.connect() as conn:
        conn.execute(text(f"SELECT * FROM items WHERE name = '{secret}'"))
        conn.execute(text("SELECT * FROM items WHERE name = :n"), {"n": secret})
    exposition = openmetrics(registry).decode()
    assert secret not in exposition
    labels = set(re.findall(r'(\w+)="', exposition))
    assert labels <= {"database", "operation", "table", "status", "le", "version", "metric", "kind"}

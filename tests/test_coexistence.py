"""Beside the other instrumentations of an engine: OpenTelemetry's (with its SQL commenter),
Sentry's, SQLAlchemy's own `echo`, a library that takes over `do_execute`, and statements too
deep for Python's JSON decoder. Every statement is counted exactly once and the others still
do their job."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import Column, Integer, MetaData, Table, create_engine, event, select, text
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import DBAPIError

import exporter.instrumentation as instrumentation
from exporter import Metrics, instrument, uninstrument
from exporter.dsn import sync_url

STATEMENTS = 5
ITEMS_SELECT = "SELECT items.id"  # how run_selects()' statement begins
metadata = MetaData()
items = Table("items", metadata, Column("id", Integer, primary_key=True))


def selects(registry: CollectorRegistry, table: str = "items", status: str = "ok") -> float:
    labels = {"database": "main", "operation": "SELECT", "table": table, "status": status}
    return registry.get_sample_value("query_duration_seconds_count", labels) or 0.0


def instrumentation_errors(registry: CollectorRegistry) -> float:
    return sum(
        sample.value
        for family in registry.collect()
        if family.name == "exporter_instrumentation_errors"
        for sample in family.samples
        if sample.name.endswith("_total")
    )


@pytest.fixture
def make_engine(fresh_database: URL) -> Iterator[Callable[..., Engine]]:
    made: list[Engine] = []

    def make(**options: Any) -> Engine:
        engine = create_engine(sync_url(fresh_database), **options)
        metadata.create_all(engine)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        uninstrument(engine)
        engine.dispose()


def run_selects(engine: Engine, count: int = STATEMENTS) -> None:
    """`count` SELECTs, each on its own checkout, as `count` requests would run them."""
    for _ in range(count):
        with engine.connect() as conn:
            conn.execute(select(items)).all()


def statements_sent(engine: Engine) -> list[str]:
    """What reaches the driver (after any listener rewrote it), seen by a listener of the test."""
    sent: list[str] = []

    @event.listens_for(engine, "after_cursor_execute")
    def record(*args: Any) -> None:
        sent.append(args[2])

    return sent


# -- OpenTelemetry's SQLAlchemy instrumentor ----------------------------------------------


@pytest.fixture
def otel_spans() -> Iterator[tuple[Any, Any]]:
    """(instrument the engine, finished spans) with an in-memory span exporter."""
    from opentelemetry.instrumentation.dependencies import get_dependency_conflicts
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    instrumentor = SQLAlchemyInstrumentor()
    conflict = get_dependency_conflicts(instrumentor.instrumentation_dependencies())
    if conflict is not None:  # SQLAlchemy 2.1: CI's SQLAlchemy 2.0 step runs these
        pytest.skip(f"OpenTelemetry's instrumentor refuses this SQLAlchemy: {conflict}")
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    def attach(engine: Engine, commenter: bool) -> None:
        instrumentor.instrument(engine=engine, tracer_provider=provider, enable_commenter=commenter)

    yield attach, exporter.get_finished_spans
    instrumentor.uninstrument()


@pytest.mark.parametrize("commenter", [False, True], ids=["plain", "commenter"])
@pytest.mark.parametrize("ours_first", [True, False], ids=["ours-first", "otel-first"])
def test_beside_opentelemetry(
    make_engine: Callable[..., Engine],
    otel_spans: tuple[Any, Any],
    registry: CollectorRegistry,
    ours_first: bool,
    commenter: bool,
) -> None:
    attach_otel, finished = otel_spans
    engine = make_engine()
    if ours_first:
        instrument(engine, metrics=Metrics(registry), slow_log=False)
    attach_otel(engine, commenter)
    if not ours_first:
        instrument(engine, metrics=Metrics(registry), slow_log=False)
    sent = statements_sent(engine)

    run_selects(engine)

    assert selects(registry) == STATEMENTS
    assert len([s for s in finished() if s.name.startswith("SELECT")]) == STATEMENTS
    assert len(sent) == STATEMENTS
    assert all(("traceparent=" in sql) == commenter for sql in sent)
    # Each statement carried its own traceparent; all share one statement-cache entry.
    assert len(set(sent)) == (STATEMENTS if commenter else 1)
    assert len(instrumentation._attached[engine].queries._statements) == 1
    assert instrumentation_errors(registry) == 0


# -- Sentry's SQLAlchemy integration, initialised without a DSN: nothing is sent -------------


@pytest.fixture
def sentry_queries() -> Iterator[list[str]]:
    """The query breadcrumbs Sentry records. Its integration listens on the Engine class for
    the rest of the process, so its listeners are removed afterwards."""
    import sentry_sdk
    from sentry_sdk.integrations import sqlalchemy as sentry_sqlalchemy

    queries: list[str] = []

    def breadcrumb(crumb: dict[str, Any], hint: Any) -> dict[str, Any]:
        if crumb.get("category") == "query":
            queries.append(crumb["message"])
        return crumb

    integration = sentry_sqlalchemy.SqlalchemyIntegration()
    sentry_sdk.init(  # only this one: the others (Flask's, ...) would patch the frameworks for good
        integrations=[integration],
        default_integrations=False,
        auto_enabling_integrations=False,
        before_breadcrumb=breadcrumb,
    )
    yield queries
    sentry_sdk.get_client().close()
    sentry_sdk.get_global_scope().set_client(None)
    for name, listener in [
        ("before_cursor_execute", sentry_sqlalchemy._before_cursor_execute),
        ("after_cursor_execute", sentry_sqlalchemy._after_cursor_execute),
        ("handle_error", sentry_sqlalchemy._handle_error),
    ]:
        if event.contains(Engine, name, listener):
            event.remove(Engine, name, listener)


def test_beside_sentry(
    make_engine: Callable[..., Engine], sentry_queries: list[str], registry: CollectorRegistry
) -> None:
    engine = make_engine()
    instrument(engine, metrics=Metrics(registry), slow_log=False)
    run_selects(engine)
    assert selects(registry) == STATEMENTS
    assert len([q for q in sentry_queries if q.startswith(ITEMS_SELECT)]) == STATEMENTS


def test_beside_echo(
    make_engine: Callable[..., Engine],
    registry: CollectorRegistry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = make_engine(echo=True)
    instrument(engine, metrics=Metrics(registry), slow_log=False)
    with caplog.at_level(logging.INFO, logger="sqlalchemy.engine"):
        run_selects(engine)
    assert selects(registry) == STATEMENTS
    echoed = [r for r in caplog.records if r.getMessage().startswith(ITEMS_SELECT)]
    assert len(echoed) == STATEMENTS


# -- a library that takes over do_execute after instrument() ---------------------------------


def wrap_do_execute(engine: Engine) -> list[str]:
    """What a tracing library does: wrap the method in place, calling the one it replaced."""
    dialect, seen = engine.dialect, []
    replaced = dialect.do_execute

    @functools.wraps(replaced)
    def traced(cursor: Any, statement: str, parameters: Any, context: Any) -> None:
        seen.append(statement)
        replaced(cursor, statement, parameters, context)

    dialect.do_execute = traced  # type: ignore[method-assign]
    return seen


def replace_do_execute(engine: Engine) -> list[str]:
    """What a careless one does: call the dialect class's own method, bypassing ours."""
    dialect, seen = engine.dialect, []
    own = type(dialect).do_execute

    def traced(cursor: Any, statement: str, parameters: Any, context: Any) -> None:
        seen.append(statement)
        own(dialect, cursor, statement, parameters, context)

    dialect.do_execute = traced  # type: ignore[method-assign]
    return seen


TAKEOVER = "was replaced after instrument()"


@pytest.mark.parametrize(
    ("take_over", "counted", "reported"),
    [(wrap_do_execute, 1 + 20, False), (replace_do_execute, 1, True)],
    ids=["wraps-ours", "bypasses-ours"],
)
def test_a_library_taking_over_do_execute(
    make_engine: Callable[..., Engine],
    registry: CollectorRegistry,
    caplog: pytest.LogCaptureFixture,
    take_over: Callable[[Engine], list[str]],
    counted: int,
    reported: bool,
) -> None:
    engine = make_engine()
    instrument(engine, metrics=Metrics(registry), slow_log=False)
    run_selects(engine, 1)
    seen = take_over(engine)
    with caplog.at_level(logging.WARNING, logger="exporter.instrumentation"):
        run_selects(engine, 20)
    reports = [r.getMessage() for r in caplog.records if TAKEOVER in r.getMessage()]
    expected = (
        "dialect.do_execute of database 'main' was replaced after instrument() by "
        f"{__name__}.{take_over.__name__}.<locals>.traced, which does not call db-exporter's: "
        "statements it runs are not counted; call instrument() after that library is set up"
    )
    assert reports == ([expected] if reported else [])  # once, not per statement
    assert len(seen) == 20  # the application's statements ran through the library's method
    assert selects(registry) == counted
    assert instrumentation_errors(registry) == 0


# -- statements deeper than Python's JSON decoder goes ----------------------------------------


@pytest.mark.parametrize(
    ("operands", "status", "table"),
    [
        (500, "ok", "items"),
        (5_000, "error", "items"),
        # Longer than max_statement_length: identified from a prefix that does not reach FROM.
        (200_000, "error", "other"),
    ],
)
def test_deep_statements_are_counted(
    make_engine: Callable[..., Engine],
    registry: CollectorRegistry,
    operands: int,
    status: str,
    table: str,
) -> None:
    engine = make_engine()
    instrument(engine, metrics=Metrics(registry), slow_log=False)
    statement = text(f"SELECT {'+'.join(['1'] * operands)} FROM items")
    with engine.connect() as conn:
        if status == "ok":
            conn.execute(statement).all()
        else:  # beyond the server's own stack depth limit: a failure, counted as one
            with pytest.raises(DBAPIError, match="stack depth limit exceeded"):
                conn.execute(statement)
    assert selects(registry, table, status) == 1
    assert instrumentation_errors(registry) == 0

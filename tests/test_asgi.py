"""The ASGI middleware, the mounted endpoints and the lifespan helper, with the real FastAPI
and Starlette, over httpx, against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import litestar
import pytest
from browser import visible_text
from collector_helpers import by_label, gunzip_one_member
from fastapi import BackgroundTasks, FastAPI
from fastapi.responses import StreamingResponse
from litestar.types import Receive as LitestarReceive
from litestar.types import Scope as LitestarScope
from litestar.types import Send as LitestarSend
from prometheus_client import CollectorRegistry
from sqlalchemy import select, text
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Session, selectinload
from starlette.applications import Starlette
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from test_server import database
from test_slowlog import (  # the models and the instrumented engines of the slow-query tests
    Author,
    async_engine,
    engine,
    slow_log,
)
from web_requests import (
    CANARY,
    GENERATED_ID,
    REQUEST_IDS,
    SLOW,
    assert_no_canary,
    assert_request_id,
    get_context,
    lazy_authors,
    outputs,
    per_request,
    records,
    statements_of,
)

import exporter.integrations.request as request_module
from exporter import Metrics
from exporter.instrumentation.budget import OTHER, LabelLimits
from exporter.integrations.asgi import QueryContextMiddleware
from exporter.integrations.asgi_endpoints import ExporterEndpoints, exporter_lifespan
from exporter.integrations.request import UNMATCHED, RequestFields, clean_request_id, request_scope
from exporter.slowlog import SlowQueryLog, context
from exporter.slowlog.context import current

__all__ = ["async_engine", "engine", "lazy_authors", "slow_log"]  # fixtures, by name


def fastapi_app(engine: Engine, async_engine: AsyncEngine) -> FastAPI:
    app = FastAPI()

    @app.get("/users/{email}/orders")
    def sync_orders(email: str) -> dict[str, str]:
        with engine.connect() as conn:
            conn.execute(text(SLOW))
        return {"ok": email}

    @app.get("/async/users/{email}")
    async def async_user(email: str) -> dict[str, str]:
        async with async_engine.connect() as conn:
            await conn.execute(text(SLOW))
        return {"ok": email}

    @app.get("/authors/lazy")
    def lazy_books() -> int:
        with Session(engine) as session:
            authors = session.scalars(select(Author)).all()
            return sum(len(author.books) for author in authors)  # one SELECT per author

    @app.get("/authors/batched")
    def batched_books() -> int:
        with Session(engine) as session:
            query = select(Author).options(selectinload(Author.books))
            return sum(len(author.books) for author in session.scalars(query).all())

    @app.get("/stream/{email}")
    def stream(email: str) -> StreamingResponse:
        def chunks() -> Iterator[bytes]:
            yield b"first,"
            with engine.connect() as conn:  # runs while the response streams
                conn.execute(text(SLOW))
            yield b"second"

        return StreamingResponse(chunks())

    @app.post("/later/{email}")
    def later(email: str, tasks: BackgroundTasks) -> str:
        def slow_task() -> None:
            with engine.connect() as conn:
                conn.execute(text(SLOW))

        tasks.add_task(slow_task)  # runs after the response is sent
        return "queued"

    @app.get("/statements/{count}")
    def statements(count: int) -> int:
        with engine.connect() as conn:
            for number in range(count):
                conn.execute(text(f"SELECT {number}"))
        return count

    @app.get("/boom/{email}")
    def boom(email: str) -> None:
        with engine.connect() as conn:
            conn.execute(text(SLOW))
        raise RuntimeError("the handler failed")

    return app


@asynccontextmanager
async def client(app: Any, **transport: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, **transport), base_url="http://app"
    ) as http:
        yield http


def database_seconds(registry: CollectorRegistry) -> float:
    """Wall time of the statements `/statements/{count}` runs, as query_duration_seconds has it."""
    labels = {"database": "main", "operation": "SELECT", "table": "other", "status": "ok"}
    return registry.get_sample_value("query_duration_seconds_sum", labels) or 0.0


async def test_records_carry_route_templates_method_and_request_id_never_the_path(
    engine: Engine,
    async_engine: AsyncEngine,
    slow_log: SlowQueryLog,
    metrics: Metrics,
    registry: CollectorRegistry,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    app = fastapi_app(engine, async_engine)
    app.add_middleware(QueryContextMiddleware)
    endpoints = ExporterEndpoints(metrics=metrics, slow_log=slow_log)
    app.mount("/db-exporter", endpoints)
    headers = {"X-Request-ID": "req-1", "X-Canary": CANARY}
    async with client(app) as http:
        assert (await http.get(f"/users/{CANARY}/orders", headers=headers)).status_code == 200
        assert (await http.get(f"/async/users/{CANARY}")).status_code == 200
        assert (await http.get(f"/nowhere/{CANARY}", headers=headers)).status_code == 404
        served = {
            path: (await http.get(f"/db-exporter{path}")).text
            for path in ("/metrics", "/slow-queries")
        }
    first, second = records(slow_log)
    assert first["context"] == get_context("/users/{email}/orders", "req-1")
    assert second["context"]["route"] == "/async/users/{email}"
    assert GENERATED_ID.match(second["context"]["request_id"])
    places = outputs(slow_log, capsys, caplog, served, client_logger="httpx")
    assert places["stdout"].count('"/users/{email}/orders"') == 1
    assert_no_canary(places)


async def test_n_plus_one_is_reported_once_per_request_and_not_for_a_batched_load(
    engine: Engine, async_engine: AsyncEngine, slow_log: SlowQueryLog, lazy_authors: None
) -> None:
    app = fastapi_app(engine, async_engine)
    app.add_middleware(QueryContextMiddleware)
    async with client(app) as http:
        for request_id in ("lazy-1", "lazy-2"):
            response = await http.get("/authors/lazy", headers={"X-Request-ID": request_id})
            assert response.json() == 6
        assert (await http.get("/authors/batched")).json() == 6
    warnings = records(slow_log, "n_plus_one")
    assert [w["context"]["request_id"] for w in warnings] == ["lazy-1", "lazy-2"]
    assert {w["context"]["route"] for w in warnings} == {"/authors/lazy"}
    assert {w["table"] for w in warnings} == {"books"}


async def test_streaming_and_background_tasks_are_untouched_and_in_the_request_context(
    engine: Engine, async_engine: AsyncEngine, slow_log: SlowQueryLog
) -> None:
    app = fastapi_app(engine, async_engine)
    app.add_middleware(QueryContextMiddleware)
    async with client(app) as http:
        streamed = await http.get(f"/stream/{CANARY}", headers={"X-Request-ID": "s"})
        queued = await http.post(f"/later/{CANARY}", headers={"X-Request-ID": "b"})
    assert streamed.content == b"first,second"
    assert queued.json() == "queued"
    routes = [(r["context"]["route"], r["context"]["request_id"]) for r in records(slow_log)]
    assert routes == [("/stream/{email}", "s"), ("/later/{email}", "b")]


async def test_statements_and_database_time_per_request_by_route_template(
    engine: Engine, async_engine: AsyncEngine, metrics: Metrics, registry: CollectorRegistry
) -> None:
    async with async_engine.connect():  # SQLAlchemy's first-connect statements, before
        pass
    app = fastapi_app(engine, async_engine)
    app.add_middleware(QueryContextMiddleware, metrics=metrics)
    async with client(app) as http:
        before = database_seconds(registry)
        for count in (3, 3, 0, 12):
            assert (await http.get(f"/statements/{count}")).json() == count
        spent = database_seconds(registry) - before
        assert (await http.get(f"/async/users/{CANARY}")).status_code == 200
        assert (await http.get(f"/nowhere/{CANARY}")).status_code == 404
    template = "/statements/{count}"
    assert per_request(registry, "db_request_statements", template) == {
        "0.0": 1, "1.0": 1, "2.0": 1, "3.0": 3, "5.0": 3, "10.0": 3, "20.0": 4, "50.0": 4,
        "100.0": 4, "200.0": 4, "500.0": 4, "1000.0": 4, "+Inf": 4, "sum": 18, "count": 4,
    }  # fmt: skip
    duration = per_request(registry, "db_request_duration_seconds", template)
    assert duration["count"] == 4
    assert duration["sum"] == pytest.approx(spent, rel=1e-9)
    assert duration["0.0005"] >= 1  # the request without statements: 0 s
    assert statements_of(registry, "/async/users/{email}") == (1, 1)  # asyncpg, in a greenlet
    assert (
        per_request(registry, "db_request_duration_seconds", "/async/users/{email}")["sum"] >= 0.12
    )
    assert statements_of(registry, UNMATCHED) == (1, 0)
    routes = set(by_label(registry, "db_request_statements_count", "route"))
    assert routes == {template, "/async/users/{email}", UNMATCHED}


async def test_routes_beyond_the_cap_fold_into_other_counted_once_each(
    engine: Engine, async_engine: AsyncEngine, metrics: Metrics, registry: CollectorRegistry
) -> None:
    capped = ("db_request_statements", "db_request_duration_seconds")
    metrics.limits = LabelLimits(per_metric=dict.fromkeys(capped, 1))
    app = fastapi_app(engine, async_engine)
    app.add_middleware(QueryContextMiddleware, metrics=metrics)
    async with client(app) as http:
        for _ in range(3):
            await http.get("/statements/2")  # admitted
            await http.get("/authors/batched")  # folded
            await http.get(f"/nowhere/{CANARY}")  # folded
    assert set(by_label(registry, "db_request_statements_count", "route")) == {
        "/statements/{count}",
        OTHER,
    }
    assert statements_of(registry, OTHER)[0] == 6
    for metric in capped:
        overflow = registry.get_sample_value("exporter_label_overflow_total", {"metric": metric})
        assert overflow == 2, metric


async def test_a_fault_in_the_request_bookkeeping_never_reaches_the_application(
    engine: Engine,
    async_engine: AsyncEngine,
    metrics: Metrics,
    registry: CollectorRegistry,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(metrics, "request_statements", None)  # any use raises
    app = fastapi_app(engine, async_engine)
    app.add_middleware(QueryContextMiddleware, metrics=metrics)
    async with client(app) as http:
        for count in (1, 2):
            assert (await http.get(f"/statements/{count}")).json() == count
    errors = {"kind": "request_metrics"}
    assert registry.get_sample_value("exporter_instrumentation_errors_total", errors) == 2
    logged = [r for r in caplog.records if r.name == "exporter.instrumentation"]
    assert len(logged) == 1  # once per kind, not per request
    assert current.get() is None


def test_the_routes_kept_for_the_histograms_are_bounded(
    metrics: Metrics, registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(request_module, "MAX_CACHED_ROUTES", 3)
    for number in range(10):
        route = f"/route/{number}"
        for _ in range(2):
            with request_scope(RequestFields(lambda: route), metrics):  # noqa: B023 (used at once)
                pass
    assert len(request_module._recorder(metrics)._children) <= 3
    assert len(by_label(registry, "db_request_statements_count", "route")) == 10
    assert set(by_label(registry, "db_request_statements_count", "route").values()) == {2}


async def test_an_application_that_raises_leaves_no_context_behind(
    engine: Engine,
    async_engine: AsyncEngine,
    slow_log: SlowQueryLog,
    metrics: Metrics,
    registry: CollectorRegistry,
) -> None:
    app = fastapi_app(engine, async_engine)
    app.add_middleware(QueryContextMiddleware, metrics=metrics)
    async with client(app, raise_app_exceptions=False) as http:
        failed = await http.get(f"/boom/{CANARY}", headers={"X-Request-ID": "failing"})
        assert current.get() is None
        await http.get("/users/x/orders", headers={"X-Request-ID": "next"})
    assert failed.status_code == 500
    failing, following = records(slow_log)
    assert failing["context"] == get_context("/boom/{email}", "failing")
    assert following["context"]["request_id"] == "next"
    assert statements_of(registry, "/boom/{email}") == (1, 1)  # observed, as it failed
    assert statements_of(registry, "/users/{email}/orders") == (1, 1)  # none carried over


async def test_middleware_added_twice_sets_the_context_once(
    engine: Engine,
    async_engine: AsyncEngine,
    slow_log: SlowQueryLog,
    lazy_authors: None,
    metrics: Metrics,
    registry: CollectorRegistry,
) -> None:
    app = fastapi_app(engine, async_engine)
    app.add_middleware(QueryContextMiddleware, request_id_header="X-Inner-ID", metrics=metrics)
    app.add_middleware(QueryContextMiddleware, metrics=metrics)  # the outer one: its settings apply
    headers = {"X-Request-ID": "outer", "X-Inner-ID": "inner"}
    async with client(app) as http:
        await http.get("/authors/lazy", headers=headers)
        await http.get("/users/x/orders", headers=headers)
    (warning,) = records(slow_log, "n_plus_one")
    (record,) = records(slow_log)
    assert warning["context"]["request_id"] == record["context"]["request_id"] == "outer"
    assert statements_of(registry, "/authors/lazy") == (1, 7)  # the authors, six lazy loads
    assert statements_of(registry, "/users/{email}/orders") == (1, 1)


@pytest.mark.parametrize(("given", "kept"), REQUEST_IDS)
async def test_request_ids_are_cut_and_cleaned(
    engine: Engine,
    async_engine: AsyncEngine,
    slow_log: SlowQueryLog,
    given: str,
    kept: str | None,
) -> None:
    app = fastapi_app(engine, async_engine)
    app.add_middleware(QueryContextMiddleware)
    raw = given.encode("latin-1")
    async with client(app) as http:
        await http.get("/users/x/orders", headers=[(b"X-Request-ID", raw)])
    (record,) = records(slow_log)
    assert_request_id(record, kept)


def test_clean_request_id_bounds_any_input() -> None:
    from hypothesis import given
    from hypothesis import strategies as st

    @given(st.text(), st.integers(min_value=1, max_value=300))
    def check(raw: str, length: int) -> None:
        cleaned = clean_request_id(raw, length)
        assert 1 <= len(cleaned) <= max(length, 32)
        assert cleaned.isascii()
        assert cleaned.isprintable()
        assert " " not in cleaned

    check()


async def test_starlette_routes_and_mounted_sub_apps(
    engine: Engine, slow_log: SlowQueryLog
) -> None:
    async def item(request: Request) -> JSONResponse:
        with engine.connect() as conn:
            conn.execute(text(SLOW))
        return JSONResponse(request.path_params["item_id"])

    inner = Starlette(routes=[Route("/items/{item_id}", item)])
    app = Starlette(routes=[Route("/items/{item_id}", item), Mount("/tenants/{tenant}", inner)])
    app.add_middleware(QueryContextMiddleware)
    async with client(app) as http:
        assert (await http.get(f"/items/{CANARY}")).json() == CANARY
        assert (await http.get(f"/tenants/{CANARY}/items/1")).json() == "1"
    top, mounted = (r["context"]["route"] for r in records(slow_log))
    assert top == "/items/{item_id}"
    assert mounted == UNMATCHED  # the mount's prefix in the path is a raw value


async def test_litestar_route_templates_mounted_apps_and_404s(
    engine: Engine, slow_log: SlowQueryLog
) -> None:
    def slow() -> None:
        with engine.connect() as conn:
            conn.execute(text(SLOW))

    @litestar.get("/items/{item_id:str}", sync_to_thread=False)
    def item() -> str:  # the path parameter unread: its declaration style changed in 2.2x
        slow()
        return "item"

    @litestar.asgi("/files", is_mount=True, copy_scope=True)
    async def files(scope: LitestarScope, receive: LitestarReceive, send: LitestarSend) -> None:
        slow()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"file"})

    def not_found(
        request: litestar.Request[Any, Any, Any], error: Exception
    ) -> litestar.Response[str]:
        slow()
        return litestar.Response("not here", status_code=404)

    app = litestar.Litestar([item, files], exception_handlers={404: not_found}, logging_config=None)
    async with client(QueryContextMiddleware(app)) as http:
        assert (await http.get(f"/items/{CANARY}")).text == "item"
        assert (await http.get(f"/files/{CANARY}")).text == "file"
        assert (await http.get(f"/nowhere/{CANARY}")).status_code == 404
    routes = [r["context"]["route"] for r in records(slow_log)]
    assert routes == ["/items/{item_id}", UNMATCHED, UNMATCHED]  # a mount's rest is raw


async def assert_ready(http: httpx.AsyncClient, path: str) -> None:
    """`path` answers ready for the database `main` once its first check has finished."""
    for _ in range(100):
        ready = await http.get(path)
        if "not checked yet" not in ready.text:
            break
        await asyncio.sleep(0.05)
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"status": "ready", "databases": {"main": "ok"}}


async def test_contexts_inside_and_around_a_request_add_to_its_fields(
    engine: Engine,
    slow_log: SlowQueryLog,
    lazy_authors: None,
    metrics: Metrics,
    registry: CollectorRegistry,
) -> None:
    async def charge(request: Request) -> JSONResponse:
        with context(step="charge"), Session(engine) as session:
            for author in session.scalars(select(Author)).all():
                assert author.books  # lazy loads: counted in the request's one N+1 scope
            session.execute(text(SLOW))
        return JSONResponse("charged")

    app = Starlette(routes=[Route("/accounts/{account}/charge", charge, methods=["POST"])])
    app.add_middleware(QueryContextMiddleware, metrics=metrics)
    with context(suite="asgi") as caller:  # and requests inside a context of the caller's
        async with client(app) as http:
            await http.post(f"/accounts/{CANARY}/charge", headers={"X-Request-ID": "c-1"})
            await http.post(f"/accounts/{CANARY}/charge", headers={"X-Request-ID": "c-2"})
    first, second = records(slow_log, "n_plus_one")  # each request is its own N+1 scope
    record, _ = records(slow_log)
    expected = {**get_context("/accounts/{account}/charge", "c-1"), "method": "POST"}
    fields = {**expected, "step": "charge", "suite": "asgi"}
    assert first["context"] == record["context"] == fields
    assert second["context"]["request_id"] == "c-2"
    # the authors, six lazy loads and the slow one, per request; none in the caller's context
    assert statements_of(registry, "/accounts/{account}/charge") == (2, 2 * 8)
    assert (caller.usage.statements, caller.counts) == (0, {})
    assert current.get() is None


async def test_mounted_endpoints_and_the_lifespan_start_and_stop_the_collectors(
    engine: Engine,
    async_engine: AsyncEngine,
    metrics: Metrics,
    slow_log: SlowQueryLog,
    fresh_database: Any,
) -> None:
    endpoints = ExporterEndpoints(
        databases=[database("main", fresh_database)], metrics=metrics, slow_log=slow_log
    )
    events: list[str] = []

    class Sidecar:  # another service, to see the order of starts and stops
        async def start(self) -> None:
            events.append("sidecar starts")

        async def stop(self) -> None:
            events.append("sidecar stops")

    @asynccontextmanager
    async def own_lifespan(app: FastAPI) -> AsyncIterator[dict[str, str]]:
        events.append("app starts")
        yield {"answer": "42"}
        events.append("app stops")

    app = FastAPI(lifespan=exporter_lifespan(endpoints, Sidecar(), wrap=own_lifespan))
    app.mount("/db-exporter", endpoints)
    async with app.router.lifespan_context(app) as state, client(app) as http:
        assert state == {"answer": "42"}
        await assert_ready(http, "/db-exporter/readyz")
        scrape = await http.get("/db-exporter/metrics")
        assert scrape.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert 'db_up{database="main"} 1.0' in scrape.text
        openmetrics = await http.get(
            "/db-exporter/metrics", headers={"Accept": "application/openmetrics-text"}
        )
        assert openmetrics.text.endswith("# EOF\n")
        assert (await http.get("/db-exporter/healthz")).json() == {"status": "ok"}
        for query, error in [  # the sidecar's strict parameters, one line naming the culprit
            ("limit=0", "limit must be a whole number from 1 to 1000"),
            ("limit=", "limit must be a whole number from 1 to 1000"),
            ("since=yesterday", "since must be an ISO 8601 time such as 2024-05-01T12:00:00+00:00"),
        ]:
            bad = await http.get(f"/db-exporter/slow-queries?{query}")
            assert (bad.status_code, bad.json()) == (400, {"error": error}), query
        recent = await http.get("/db-exporter/slow-queries?since=2020-01-01T00:00:00&limit=5")
        assert recent.json()["threshold_ms"] == slow_log.settings.threshold_ms
        assert (await http.get("/db-exporter/nothing")).status_code == 404
        assert (await http.post("/db-exporter/metrics")).status_code == 405
    assert events == ["sidecar starts", "app starts", "app stops", "sidecar stops"]


async def test_endpoints_served_on_their_own_answer_the_lifespan_events(
    metrics: Metrics, fresh_database: Any
) -> None:
    endpoints = ExporterEndpoints(databases=[database("main", fresh_database)], metrics=metrics)
    events: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    answers: list[str] = []

    async def send(message: Any) -> None:
        answers.append(message["type"])

    lifespan = asyncio.create_task(endpoints({"type": "lifespan"}, events.get, send))
    await events.put({"type": "lifespan.startup"})
    async with client(endpoints) as http:
        await assert_ready(http, "/readyz")  # the check runs: the startup started it
    await events.put({"type": "lifespan.shutdown"})
    await asyncio.wait_for(lifespan, 10)
    assert answers == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


SECRET = "S3cret-Passw0rd"


async def test_mounted_page_and_answers_leak_no_secret_and_gzip_passes_the_apps_middleware(
    metrics: Metrics, slow_log: SlowQueryLog, fresh_database: Any
) -> None:
    """Mounted, the page shares the application's origin and, unless the application guards
    the prefix, its audience: no DSN password on any answer (a reachable database whose DSN
    carries one, an unreachable one whose error could quote it), no script may run on the
    page. An application that gzips its own answers (Starlette's GZipMiddleware) sends the
    exporter's gzip as it is, one gzip member, not gzipped twice."""
    with_secret = fresh_database.set(password=SECRET)
    databases = [
        database("main", with_secret),
        database("gone", f"postgresql://postgres:{SECRET}@127.0.0.1:1/x"),
    ]
    endpoints = ExporterEndpoints(databases=databases, metrics=metrics, slow_log=slow_log)
    app = FastAPI(lifespan=exporter_lifespan(endpoints))
    app.add_middleware(GZipMiddleware, minimum_size=100)
    app.mount("/db-exporter", endpoints)
    async with app.router.lifespan_context(app), client(app) as http:
        for _ in range(100):
            states = endpoints.runner.states()
            if states["main"].ok and states["gone"].ok is False:
                break
            await asyncio.sleep(0.05)
        answers = {
            path: await http.get(f"/db-exporter{path}")
            for path in ("/", "/?window=all", "/readyz", "/metrics", "/probe?target=gone",
                         "/probe?target=main", "/slow-queries")
        }  # fmt: skip
        async with http.stream(
            "GET", "/db-exporter/metrics", headers={"Accept-Encoding": "gzip"}
        ) as scrape:
            gzipped = b"".join([part async for part in scrape.aiter_raw()])
    for path, answer in answers.items():
        assert answer.status_code == (503 if path == "/readyz" else 200), path
        assert SECRET not in answer.text, path
    assert "ConnectionRefusedError" in answers["/readyz"].text
    page = answers["/"]
    assert "main database up" in visible_text(page.text)
    assert "gone database down" in visible_text(page.text)
    assert "script-src" not in page.headers["content-security-policy"]
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    assert scrape.headers["content-encoding"] == "gzip"
    assert b'db_up{database="main"} 1.0' in gunzip_one_member(gzipped)


async def test_the_mount_itself_leads_to_the_page_below_it(metrics: Metrics) -> None:
    """Served as a raw ASGI app below a prefix (no framework to add the slash), the prefix
    alone redirects to the page at `prefix/`, query kept, where the page's relative links
    resolve below the prefix."""
    endpoints = ExporterEndpoints(metrics=metrics)
    async with client(endpoints, root_path="/ops/db") as http:
        answer = await http.get("/ops/db?window=15m")
        assert (answer.status_code, answer.headers["location"]) == (308, "/ops/db/?window=15m")
        assert (await http.get("/ops/db/?window=15m")).status_code == 200


def test_mounted_endpoints_load_no_web_server() -> None:
    from subprocesses import run_python

    result = run_python(
        "import sys, exporter.integrations.asgi_endpoints, exporter.integrations.asgi\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'aiohttp', 'starlette'}))"
    )
    assert result.stdout.strip() == "[]", result.stderr


def test_a_request_id_length_below_one_is_refused_naming_the_setting() -> None:
    with pytest.raises(ValueError, match=r"^max_request_id_length must be at least 1, not 0$"):
        QueryContextMiddleware(FastAPI(), max_request_id_length=0)

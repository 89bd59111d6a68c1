"""The aiohttp routes and the Exporter lifecycle, against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import create_async_engine

from exporter import Exporter, Metrics, create_app, instrument, uninstrument
from exporter.dsn import async_url
from exporter.probe import one_line
from exporter.settings import DatabaseSettings

Client = Callable[..., Awaitable[TestClient[Any, Any]]]
UNREACHABLE = "postgresql://postgres@127.0.0.1:1/postgres"


def database(name: str, url: URL | str, **extra: Any) -> DatabaseSettings:
    dsn = url if isinstance(url, str) else url.render_as_string(hide_password=False)
    return DatabaseSettings(name=name, dsn=dsn, check_interval_seconds=0.2, **extra)


async def wait_until_checked(client: TestClient[Any, Any]) -> dict[str, Any]:
    for _ in range(100):
        response = await client.get("/readyz")
        body: dict[str, Any] = await response.json()
        if "not checked yet" not in body["databases"].values():
            return {"http": response.status, **body}
        await asyncio.sleep(0.05)
    raise AssertionError("the database check never finished")


async def test_metrics_serves_text_format_with_instrumented_queries(
    aiohttp_client: Client, registry: CollectorRegistry, database_url: URL
) -> None:
    metrics = Metrics(registry)
    engine = create_async_engine(async_url(database_url))
    instrument(engine, database="main", metrics=metrics)
    try:
        async with engine.connect() as conn:
            for _ in range(3):
                await conn.execute(text("SELECT 1"))
        client = await aiohttp_client(create_app(metrics))
        response = await client.get("/metrics")
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        body = await response.text()
        assert "# TYPE query_duration_seconds histogram" in body
        assert "# TYPE db_pool_overflow_total counter" in body
        assert "# TYPE db_connections_active gauge" in body
        assert 'db_connections_active{database="main"} 0.0' in body
        count = registry.get_sample_value(
            "query_duration_seconds_count",
            {"database": "main", "operation": "SELECT", "table": "other", "status": "ok"},
        )
        assert count is not None
        assert count >= 3
        assert f'status="ok",table="other"}} {count}' in body
    finally:
        uninstrument(engine)
        await engine.dispose()


async def test_metrics_speaks_openmetrics_and_gzip_when_asked(
    aiohttp_client: Client, registry: CollectorRegistry
) -> None:
    client = await aiohttp_client(create_app(Metrics(registry)))
    response = await client.get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert (await response.text()).endswith("# EOF\n")

    response = await client.get("/metrics", headers={"Accept-Encoding": "gzip"})
    assert response.headers["Content-Encoding"] == "gzip"
    assert "exporter_build_info" in await response.text()


async def test_healthz_and_readyz_with_a_live_database(
    aiohttp_client: Client, registry: CollectorRegistry, database_url: URL
) -> None:
    app = create_app(Metrics(registry), [database("main", database_url)])
    client = await aiohttp_client(app)
    assert (await client.get("/healthz")).status == 200
    ready = await wait_until_checked(client)
    assert ready == {"http": 200, "status": "ready", "databases": {"main": "ok"}}
    assert registry.get_sample_value("db_up", {"database": "main"}) == 1


async def test_unreachable_database_is_named_by_readyz_and_metrics_keep_serving(
    aiohttp_client: Client, registry: CollectorRegistry, database_url: URL
) -> None:
    databases = [database("main", database_url), database("reports", UNREACHABLE)]
    client = await aiohttp_client(create_app(Metrics(registry), databases))
    ready = await wait_until_checked(client)
    assert ready["http"] == 503
    assert ready["status"] == "not ready"
    assert ready["databases"]["main"] == "ok"
    assert ready["databases"]["reports"] != "ok"
    assert "refused" in ready["databases"]["reports"].lower()

    started = time.perf_counter()
    response = await client.get("/metrics")
    assert response.status == 200
    assert time.perf_counter() - started < 1.0  # rendering never waits for the database
    body = await response.text()
    assert 'db_up{database="reports"} 0.0' in body
    assert 'db_up{database="main"} 1.0' in body
    assert (await client.get("/healthz")).status == 200


async def test_a_driver_error_quoting_the_password_reaches_neither_readyz_nor_the_log(
    aiohttp_client: Client,
    registry: CollectorRegistry,
    database_url: URL,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The server names the database it lacks; here that name is also the password.
    secret = "canary-s3cret-pw"
    url = database_url.set(password=secret, database=secret)
    client = await aiohttp_client(create_app(Metrics(registry), [database("main", url)]))
    with caplog.at_level(logging.INFO, logger="exporter"):
        ready = await wait_until_checked(client)
    assert ready["databases"]["main"] == (
        'InvalidCatalogNameError: database "***" does not exist (SQLSTATE 3D000)'
    )
    assert "not answering" in caplog.text
    assert secret not in caplog.text


def test_a_reason_cut_short_keeps_no_part_of_a_password() -> None:
    secret = "canary-s3cret-pw"  # placed across the 300th character of the line
    error = RuntimeError(f"{'x' * 262} postgresql://app:{secret}@h/db")
    reason = one_line(error, f"postgresql://app:{secret}@h/db")
    assert reason.startswith("RuntimeError: xxx")
    assert len(reason) == 300
    assert "canary" not in reason


async def test_exporter_probe_uses_its_own_connection(
    aiohttp_client: Client, registry: CollectorRegistry, database_url: URL
) -> None:
    client = await aiohttp_client(create_app(Metrics(registry), [database("main", database_url)]))
    await wait_until_checked(client)
    engine = create_async_engine(async_url(database_url))
    try:
        async with engine.connect() as conn:
            names = (
                await conn.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE application_name = :n AND datname = current_database()"
                    ),
                    {"n": "db-exporter"},
                )
            ).scalar()
        assert names == 1
    finally:
        await engine.dispose()


async def test_exporter_starts_and_stops_inside_a_running_loop(registry: CollectorRegistry) -> None:
    exporter = Exporter(listen="127.0.0.1:0", metrics=Metrics(registry))
    await exporter.start()
    try:
        assert exporter.port != 0
        async with ClientSession() as session, session.get(f"{exporter.url}/healthz") as response:
            assert response.status == 200
    finally:
        await exporter.stop()
    with pytest.raises(ConnectionRefusedError):  # nothing listens any more
        socket.create_connection(("127.0.0.1", exporter.port), timeout=1).close()


async def test_exporter_refuses_a_port_in_use(registry: CollectorRegistry) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        exporter = Exporter(listen=f"127.0.0.1:{port}", metrics=Metrics(registry))
        with pytest.raises(OSError, match="address already in use"):
            await exporter.start()


def test_exporter_runs_in_a_thread_for_sync_applications(registry: CollectorRegistry) -> None:
    exporter = Exporter(listen="127.0.0.1:0", metrics=Metrics(registry))
    exporter.start_in_thread()
    try:
        with urllib.request.urlopen(f"{exporter.url}/metrics", timeout=5) as response:
            assert response.status == 200
            assert b"exporter_build_info" in response.read()
    finally:
        exporter.stop_in_thread()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", exporter.port), timeout=1).close()

"""Helpers for the collector tests: run one collector against a real database, read results."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import asyncpg
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector as RegistryCollector
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

from exporter import Metrics
from exporter.collectors.base import Collector
from exporter.collectors.exposition import SnapshotStore
from exporter.collectors.runner import DatabaseWorker
from exporter.dsn import sync_url
from exporter.probe import exporter_engine
from exporter.settings import DatabaseSettings, ElectionSettings


def dsn(url: URL) -> str:
    return url.render_as_string(hide_password=False)


class _Fixed(RegistryCollector):
    def __init__(self, families: Sequence[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


async def run_collector(collector: Collector[Any], url: URL) -> CollectorRegistry:
    """One run of `collector` on the exporter's own engine; its families in a fresh registry."""
    engine = exporter_engine(dsn(url), 10)
    try:
        async with engine.connect() as conn:
            version = (await conn.execute(text("SHOW server_version_num"))).scalar_one()
            families = await collector.collect(conn, int(version))
    finally:
        await engine.dispose()
    return registry_of(families)


def registry_of(families: Sequence[Metric]) -> CollectorRegistry:
    """A fresh registry that collects exactly `families`."""
    registry = CollectorRegistry()
    registry.register(_Fixed(families))
    return registry


def names(url: URL, database: str = "main") -> dict[str, str]:
    """The labels the runner gives a configured database's server-side series: `database`, its
    logical name in the config, and `datname`, its real name on the server."""
    return {"database": database, "datname": str(url.database)}


def execute(url: URL, *statements: str) -> list[Any]:
    """Run statements in autocommit mode on one session; the last one's rows (if any)."""
    engine = create_engine(sync_url(url), isolation_level="AUTOCOMMIT")
    rows: list[Any] = []
    try:
        with engine.connect() as conn:
            for statement in statements:
                result = conn.execute(text(statement))
                rows = list(result.all()) if result.returns_rows else []
    finally:
        engine.dispose()
    return rows


@asynccontextmanager
async def sessions(url: URL, *names: str) -> AsyncIterator[list[asyncpg.Connection]]:
    """Open idle sessions to `url`, one per application name."""
    conns = [
        await asyncpg.connect(dsn(url), server_settings={"application_name": name})
        for name in names
    ]
    try:
        yield conns
    finally:
        for conn in conns:
            await conn.close()


@contextmanager
def uncached_copy(url: URL) -> Iterator[URL]:
    """A copy of the database at `url` made file by file (`STRATEGY FILE_COPY`, PostgreSQL
    15+), so none of its blocks is in shared buffers yet: its first reads are disk reads (for
    the statistics). Dropped afterwards."""
    name = f"dbx_copy_{uuid.uuid4().hex[:8]}"
    server = url.set(database="postgres")
    execute(server, f'CREATE DATABASE "{name}" TEMPLATE "{url.database}" STRATEGY FILE_COPY')
    try:
        yield url.set(database=name)
    finally:
        execute(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def held_in_transaction(url: URL, statement: str) -> Iterator[None]:
    """Another session ran `statement` in a transaction it keeps open (holding its locks)."""
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as conn, conn.begin():
            conn.execute(text(statement))
            yield
    finally:
        engine.dispose()


@contextmanager
def login_role(url: URL) -> Iterator[URL]:
    """`url` as a new role with no grants (no pg_monitor), dropped afterwards."""
    role = f"dbx_role_{uuid.uuid4().hex[:8]}"
    execute(url, f"CREATE ROLE {role} LOGIN")
    try:
        yield url.set(username=role)
    finally:
        execute(url, f"DROP ROLE IF EXISTS {role}")


def wait_for(url: URL, query: str, expected: Any, timeout: float = 10) -> None:
    """Poll `query` (one value) until it returns `expected`: statistics reach shared memory
    asynchronously, after the backend that produced them flushes."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = execute(url, query)[0][0]
        if value == expected:
            return
        time.sleep(0.1)
    raise AssertionError(f"{query!r} returned {value!r}, never {expected!r}")


async def until(
    predicate: Callable[[], bool], what: str = "the condition", *, within: float = 60
) -> None:
    """Let the event loop run (a runner's workers, a served exporter) until `predicate()`
    holds; `what` names it when it never does."""
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, f"never happened within {within} s: {what}"
        await asyncio.sleep(0.05)


def by_label(registry: CollectorRegistry, name: str, label: str) -> dict[str, float]:
    """Samples of one name, keyed by the value of one of their labels."""
    found: dict[str, float] = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == name:
                found[sample.labels[label]] = sample.value
    return found


def samples(registry: CollectorRegistry, name: str) -> list[tuple[dict[str, str], float]]:
    return [
        (dict(sample.labels), sample.value)
        for family in registry.collect()
        for sample in family.samples
        if sample.name == name
    ]


def present(registry: CollectorRegistry, name: str, labels: dict[str, str] | None = None) -> float:
    """The value of a sample that must be there."""
    found = registry.get_sample_value(name, labels)
    assert found is not None, f"no sample {name}{labels or ''}"
    return found


@asynccontextmanager
async def worker_for(
    url: URL, registry: CollectorRegistry, *collectors: Collector[Any]
) -> AsyncIterator[tuple[DatabaseWorker, SnapshotStore]]:
    """The runner's worker for `url`, running `collectors` (built for the database they name) as
    `serve` runs them, without an election; its metrics and snapshot in `registry`."""
    store = SnapshotStore()
    registry.register(store)
    settings = DatabaseSettings(
        name=collectors[0].database, dsn=dsn(url), election=ElectionSettings(enabled=False)
    )
    worker = DatabaseWorker(settings, Metrics(registry), store, {})
    for collector in collectors:
        worker.add_job(collector, collector.settings)
    try:
        yield worker, store
    finally:
        await worker.close()


# The worker's own session, as its role sees it.
_EXPORTER_SESSION = (
    "SELECT pid FROM pg_stat_activity WHERE application_name = 'db-exporter'"
    " AND usename = current_user AND datname = current_database()"
)


async def refused_without_pg_monitor(
    collector: Collector[Any], url: URL, cannot: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Run `collector` twice through the runner as `url`'s role, which lacks pg_monitor: each
    run fails cleanly (no series, the connection kept), and the log says once, in one line,
    what the role cannot do and the grant that fixes it; nothing else is logged."""
    role = url.username
    registry = CollectorRegistry()
    async with worker_for(url, registry, collector) as (worker, store):
        [job] = worker.jobs
        with caplog.at_level(logging.INFO):
            assert await worker.check()
            [(pid,)] = execute(url, _EXPORTER_SESSION)
            assert not await worker.run_collector(job)
            assert not await worker.run_collector(job)  # again: said once
        assert execute(url, _EXPORTER_SESSION) == [(pid,)]
    assert [r.getMessage() for r in caplog.records] == [
        f"collector {collector.name} on database {collector.database} failed: "
        f"InsufficientPrivilegeError: role {role} cannot {cannot}; GRANT pg_monitor TO {role}"
    ]
    labels = {"collector": collector.name, "database": collector.database}
    assert registry.get_sample_value("exporter_collector_success", labels) == 0
    assert store.runs(collector.name) == []


def gunzip_one_member(body: bytes) -> bytes:
    """The content of `body`, which must be exactly one gzip member (nothing after it)."""
    reader = zlib.decompressobj(16 + zlib.MAX_WBITS)
    content = reader.decompress(body)
    assert reader.eof
    assert reader.unused_data == b""
    return content

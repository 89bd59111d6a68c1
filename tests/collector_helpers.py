"""Helpers for the collector tests: run one collector against a real database, read results."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector as RegistryCollector
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

from exporter.collectors.base import Collector
from exporter.dsn import sync_url
from exporter.probe import exporter_engine


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


async def until(predicate: Callable[[], bool], within: float = 30) -> None:
    """Let the event loop run (a runner's workers) until `predicate()` holds."""
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition never became true"
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

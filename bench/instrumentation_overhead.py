"""What instrument() costs per statement, beside OpenTelemetry's SQLAlchemy instrumentor.

    .venv/bin/python bench/instrumentation_overhead.py [--rounds 25] [--queries 2000]
    .venv/bin/python bench/instrumentation_overhead.py --memory

Against a real PostgreSQL (BENCH_DATABASE_URL, else TEST_DATABASE_URL, else an embedded one).
For each driver (psycopg on an Engine, asyncpg on an AsyncEngine) and statement (`SELECT 1`, a
primary-key point select), one connection is held for the whole run and the instrumentation
is switched on and off between rounds, so every variant runs on the same connection and the
same server backend. Rounds alternate their order; each figure is the median over rounds of
(variant - bare) in that round, as client CPU time (what the listeners spend; insensitive to
the server) and as wall time.

OpenTelemetry's instrumentor (`opentelemetry-instrumentation-sqlalchemy`, which needs
SQLAlchemy < 2.1; see bench/README.md) is measured the same way when it is importable. Its
connection-level listeners leave the engine on SQLAlchemy's event path even after they are
removed, so it is measured after ours, against a bare baseline that pays that path too: its
figure is, if anything, an underestimate.

`--memory` runs 1,000,000 statements over 10,000 distinct SQL strings on a bare and on an
instrumented engine and prints the RSS each grew by.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy
from prometheus_client import CollectorRegistry
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from exporter import Metrics, instrument, uninstrument
from exporter.dsn import async_url, sync_url
from exporter.embedded import embedded_postgres

STATEMENTS = {
    "SELECT 1": ("SELECT 1", None),
    "point select": ("SELECT name FROM bench_items WHERE id = :id", {"id": 42}),
}
Timing = tuple[float, float]  # (CPU, wall) microseconds per statement


@contextmanager
def database() -> Iterator[str]:
    url = os.environ.get("BENCH_DATABASE_URL") or os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
        return
    with embedded_postgres() as server:
        yield server.url


class OTelPeer:
    """OpenTelemetry's SQLAlchemy instrumentor with an SDK tracer whose exporter only counts
    spans (the least any exporter does)."""

    def __init__(self) -> None:
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            SimpleSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )

        peer = self
        self.spans = 0

        class Counting(SpanExporter):
            def export(self, spans: Any) -> SpanExportResult:
                peer.spans += len(spans)
                return SpanExportResult.SUCCESS

        self._provider = TracerProvider()
        self._provider.add_span_processor(SimpleSpanProcessor(Counting()))
        self._instrumentor = SQLAlchemyInstrumentor()

    @classmethod
    def create(cls) -> OTelPeer | None:
        try:
            return cls()
        except ImportError:
            return None

    def attach(self, engine: Engine) -> None:
        self._instrumentor.instrument(engine=engine, tracer_provider=self._provider)

    def detach(self) -> None:
        self._instrumentor.uninstrument()


def prepare(url: str) -> None:
    engine = create_engine(sync_url(url))
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS bench_items"))
        conn.execute(text("CREATE TABLE bench_items (id int PRIMARY KEY, name text)"))
        conn.execute(
            text("INSERT INTO bench_items SELECT g, 'item ' || g FROM generate_series(1, 1000) g")
        )
    engine.dispose()


def timed(run: Callable[[], None], n: int) -> Timing:
    cpu, wall = time.thread_time_ns(), time.perf_counter_ns()
    for _ in range(n):
        run()
    return (time.thread_time_ns() - cpu) / n / 1000, (time.perf_counter_ns() - wall) / n / 1000


async def timed_async(run: Callable[[], Awaitable[Any]], n: int) -> Timing:
    cpu, wall = time.thread_time_ns(), time.perf_counter_ns()
    for _ in range(n):
        await run()
    return (time.thread_time_ns() - cpu) / n / 1000, (time.perf_counter_ns() - wall) / n / 1000


def median_delta(variant: list[Timing], bare: list[Timing], i: int) -> float:
    return statistics.median(v[i] - b[i] for v, b in zip(variant, bare, strict=True))


class Comparison:
    """Rounds of `bare` against one variant on one held connection."""

    def __init__(self, attach: Callable[[], None], detach: Callable[[], None]) -> None:
        self.attach, self.detach = attach, detach
        self.bare: list[Timing] = []
        self.variant: list[Timing] = []

    def order(self, round_: int) -> list[bool]:
        return [False, True] if round_ % 2 else [True, False]

    def switch(self, on: bool) -> None:
        self.detach()
        if on:
            self.attach()

    def record(self, on: bool, timing: Timing) -> None:
        (self.variant if on else self.bare).append(timing)

    def deltas(self) -> tuple[float, float, float]:
        bare_cpu = statistics.median(t[0] for t in self.bare)
        return (
            bare_cpu,
            median_delta(self.variant, self.bare, 0),
            median_delta(self.variant, self.bare, 1),
        )


def report(driver: str, label: str, ours: Comparison, otel: Comparison | None) -> None:
    bare_cpu, cpu, wall = ours.deltas()
    line = (
        f"{driver:8} {label:13} bare {bare_cpu:6.1f} us CPU/stmt | "
        f"ours +{cpu:5.2f} us CPU (+{wall:5.2f} wall)"
    )
    if otel is not None:
        _, otel_cpu, otel_wall = otel.deltas()
        ratio = otel_cpu / cpu if cpu > 0 else float("inf")
        line += f" | otel +{otel_cpu:6.2f} us CPU (+{otel_wall:6.2f} wall) | otel/ours {ratio:.1f}x"
    print(line, flush=True)


def compare_sync(
    conn: Connection, run: Callable[[], None], c: Comparison, rounds: int, n: int
) -> None:
    for r in range(rounds):
        for on in c.order(r):
            c.switch(on)
            c.record(on, timed(run, n))
    c.detach()


async def compare_async(
    run: Callable[[], Awaitable[Any]], c: Comparison, rounds: int, n: int
) -> None:
    for r in range(rounds):
        for on in c.order(r):
            c.switch(on)
            c.record(on, await timed_async(run, n))
    c.detach()


def bench_sync(url: str, rounds: int, n: int, otel: OTelPeer | None) -> None:
    engine = create_engine(sync_url(url))
    metrics = Metrics(CollectorRegistry())
    with engine.connect() as conn:
        for label, (sql, params) in STATEMENTS.items():
            statement = text(sql)

            def run(statement: Any = statement, params: Any = params) -> None:
                conn.execute(statement, params)

            timed(run, 200)  # warm: the connection, compiled cache, prepared statements
            ours = Comparison(
                lambda: instrument(engine, metrics=metrics), lambda: uninstrument(engine)
            )
            compare_sync(conn, run, ours, rounds, n)
            peer = None
            if otel is not None:
                peer = Comparison(lambda: otel.attach(engine), otel.detach)
                compare_sync(conn, run, peer, rounds, n)
            report("psycopg", label, ours, peer)
    engine.dispose()


async def bench_async(url: str, rounds: int, n: int, otel: OTelPeer | None) -> None:
    engine = create_async_engine(async_url(url))
    metrics = Metrics(CollectorRegistry())
    conn: AsyncConnection = await engine.connect()
    try:
        for label, (sql, params) in STATEMENTS.items():
            statement = text(sql)

            def run(statement: Any = statement, params: Any = params) -> Awaitable[Any]:
                return conn.execute(statement, params)

            await timed_async(run, 200)
            ours = Comparison(
                lambda: instrument(engine, metrics=metrics), lambda: uninstrument(engine)
            )
            await compare_async(run, ours, rounds, n)
            peer = None
            if otel is not None:
                peer = Comparison(lambda: otel.attach(engine.sync_engine), otel.detach)
                await compare_async(run, peer, rounds, n)
            report("asyncpg", label, ours, peer)
    finally:
        await conn.close()
        await engine.dispose()


def check_peer_attaches(url: str, otel: OTelPeer) -> None:
    """The peer must really be measured: a statement on an instrumented engine makes a span."""
    engine = create_engine(sync_url(url))
    otel.attach(engine)
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    otel.detach()
    engine.dispose()
    if otel.spans == 0:
        raise SystemExit("OpenTelemetry's instrumentor did not attach: no span was recorded")


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory(url: str, statements: int, distinct: int) -> None:
    def grow(engine: Engine) -> int:
        with engine.connect() as conn:
            for i in range(distinct):  # warm-up: the driver's and the server's own caches
                conn.exec_driver_sql(f"SELECT {i} AS n")
            gc.collect()
            before = rss_bytes()
            for i in range(statements):
                conn.exec_driver_sql(f"SELECT {i % distinct} AS n")
            gc.collect()
            return rss_bytes() - before

    bare = create_engine(sync_url(url))
    ours = create_engine(sync_url(url))
    instrument(ours, metrics=Metrics(CollectorRegistry()))
    for name, engine in (("bare", bare), ("ours", ours)):
        started = time.perf_counter()
        growth = grow(engine)
        print(
            f"memory   {name}: {statements:,} statements over {distinct:,} distinct strings: "
            f"RSS +{growth / 2**20:.1f} MiB ({time.perf_counter() - started:.0f} s)",
            flush=True,
        )
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--queries", type=int, default=2000, help="statements per round")
    parser.add_argument("--memory", action="store_true", help="run the memory benchmark")
    parser.add_argument("--statements", type=int, default=1_000_000)
    parser.add_argument("--distinct", type=int, default=10_000)
    args = parser.parse_args()
    with database() as url:
        if args.memory:
            memory(url, args.statements, args.distinct)
            return
        prepare(url)
        otel = OTelPeer.create()
        if otel is not None:
            check_peer_attaches(url, otel)
        print(
            f"SQLAlchemy {sqlalchemy.__version__}, Python {sys.version.split()[0]}, "
            f"{args.rounds} rounds x {args.queries} statements per variant, medians of per-round "
            f"deltas; OpenTelemetry peer: {'yes' if otel else 'not installed'}",
            flush=True,
        )
        bench_sync(url, args.rounds, args.queries, otel)
        asyncio.run(bench_async(url, args.rounds, args.queries, otel))


if __name__ == "__main__":
    main()

"""What instrument() costs per statement, beside OpenTelemetry's SQLAlchemy instrumentor.

    .venv/bin/python bench/instrumentation_overhead.py [--rounds 25] [--queries 2000]
    .venv/bin/python bench/instrumentation_overhead.py --instructions [--queries 300] [--seeds 3]
    .venv/bin/python bench/instrumentation_overhead.py --memory
    .venv/bin/python bench/instrumentation_overhead.py --commenter [--rounds 25] [--queries 2000]

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

`--instructions` counts instead of timing (`valgrind` must be installed), so that a change of
a few hundred nanoseconds shows on a noisy machine. For each driver, statement and variant
(bare, ours, ours with every statement inside a context as in a web request, OpenTelemetry)
one child process runs N statements and another 2N under `valgrind --tool=callgrind`;
callgrind counts only the statement loop (switched on and off
around it with `callgrind_control`, after the warm-up), and (2N total - N total) / N is one
statement. A child repeats its count to within ~50 instructions per statement whatever else the
machine runs. What moves more is memory layout: any change to the code shifts which lookups
hit CPython's caches, so the same code measured under another hash seed, or a bare run beside
edited exporter code, differs by up to ~1-2k instructions per statement. Each figure is hence
the mean over several PYTHONHASHSEED values, with half their range. Differences between
variants smaller than that range are not meaningful. Counts weigh every instruction alike:
compare them with each other, not with time. Each child uses a fresh engine, so the
OpenTelemetry figure includes the event path its listeners put the engine on, and the
slow-query threshold is set out of reach (valgrind makes statements ~50x slower). The figure
in parentheses turns our count into time at the rate the bare statement runs user-space code
on this machine (its instructions over its user CPU time, the least of five runs outside
valgrind): the listeners make no system calls, so this is their time without the noise.

`--commenter` times ours on a psycopg point select sent with a new sqlcommenter-style
`/*traceparent=...*/` each time (as OpenTelemetry's commenter sends it) and without one.

`--memory` runs 1,000,000 statements over 10,000 distinct SQL strings on a bare and on an
instrumented engine and prints the RSS each grew by.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import math
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from typing import Any, NamedTuple

import sqlalchemy
from prometheus_client import CollectorRegistry
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

import exporter.instrumentation.series
from exporter import Metrics, instrument, uninstrument
from exporter.demo.embedded import embedded_postgres
from exporter.dsn import async_url, sync_url
from exporter.settings import SlowQuerySettings
from exporter.slowlog import SlowQueryLog, context

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


def bench_commenter(url: str, rounds: int, n: int) -> None:
    """--commenter: what ours adds to a statement that sqlcommenter has given a traceparent of
    its own (a new statement text every time), beside the same statement without one."""
    engine = create_engine(sync_url(url))
    metrics = Metrics(CollectorRegistry())
    sql = "SELECT name FROM bench_items WHERE id = %(id)s"
    traces = itertools.count()
    variants: dict[str, Callable[[], str]] = {
        "off": lambda: sql,
        "on": lambda: f"{sql} /*traceparent='00-{next(traces):032x}-00f067aa0ba902b7-01'*/",
    }
    with engine.connect() as conn:
        for label, statement in variants.items():

            def run(statement: Callable[[], str] = statement) -> None:
                conn.exec_driver_sql(statement(), {"id": 42})

            timed(run, 200)
            ours = Comparison(
                lambda: instrument(engine, metrics=metrics), lambda: uninstrument(engine)
            )
            compare_sync(conn, run, ours, rounds, n)
            report("psycopg", f"commenter {label}", ours, None)
    engine.dispose()


def peer_attaches(url: str, otel: OTelPeer) -> bool:
    """Whether a statement on an engine the peer instruments makes a span (not on SQLAlchemy
    2.1, which the instrumentor does not support)."""
    engine = create_engine(sync_url(url))
    otel.attach(engine)
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    otel.detach()
    engine.dispose()
    return otel.spans > 0


def check_peer_attaches(url: str, otel: OTelPeer) -> None:
    """The peer must really be measured."""
    if not peer_attaches(url, otel):
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


# -- --instructions: callgrind counts, N against 2N statements per child -------------------

DRIVERS = ("psycopg", "asyncpg")
# `in_context`: ours, with every statement inside a context, as in a web request (N+1 counts and
# the request's statements and time added up per statement).
VARIANTS = ("bare", "ours", "in_context", "otel")
WARM_UP = 200  # as in the timed run: connection, compiled cache, prepared statements
USER_TIME_REPEATS = 5  # the least of these is the bare statement's user time


def attach_variant(variant: str, engine: Engine) -> OTelPeer | None:
    if variant in ("ours", "in_context"):
        metrics = Metrics(CollectorRegistry())
        # Under valgrind a statement can take longer than the default slow-query threshold;
        # a real one seldom does, and a slow record would cost a child more the slower it ran.
        unreachable = SlowQuerySettings(threshold_ms=3_600_000, stdout=False)
        instrument(engine, metrics=metrics, slow_log=SlowQueryLog(unreachable, metrics))
    elif variant == "otel":
        peer = OTelPeer()
        peer.attach(engine)
        return peer
    return None


def callgrind_instrumentation(on: bool) -> None:
    # stdout is not captured: reading a pipe takes a timing-dependent number of reads.
    command = ["callgrind_control", f"--instr={'on' if on else 'off'}", str(os.getpid())]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


@contextmanager
def counted() -> Iterator[None]:
    """Callgrind counts only in here: set-up, connecting and warm-up differ from run to run
    with timing (timeouts, partial reads) and stay outside."""
    # A full collection of the set-up heap inside would cost as much as ~100 statements.
    gc.collect()
    gc.freeze()
    callgrind_instrumentation(True)
    yield
    callgrind_instrumentation(False)


async def count_async(
    url: str, statement: Any, params: Any, variant: str, n: int
) -> OTelPeer | None:
    engine = create_async_engine(async_url(url))
    peer = attach_variant(variant, engine.sync_engine)
    async with engine.connect() as conn:
        for _ in range(WARM_UP):
            await conn.execute(statement, params)
        with counted():
            for _ in range(n):
                await conn.execute(statement, params)
    await engine.dispose()
    return peer


def count_child(url: str, driver: str, label: str, variant: str, n: int) -> None:
    """The child under callgrind (started with instrumentation off): warm up, then run the
    statement n times."""
    # Each histogram bucket looks up the current trace once per wall-clock second: once per
    # thousands of statements in a real run, but a clock-dependent share of them under
    # valgrind. Once per bucket is the closer (and repeatable) figure.
    exporter.instrumentation.series.EXEMPLAR_INTERVAL_SECONDS = math.inf
    sql, params = STATEMENTS[label]
    statement = text(sql)
    # The warm-up inside the context too: its one N+1 warning falls there.
    with context(route="/bench") if variant == "in_context" else nullcontext():
        if driver == "asyncpg":
            peer = asyncio.run(count_async(url, statement, params, variant, n))
        else:
            engine = create_engine(sync_url(url))
            peer = attach_variant(variant, engine)
            with engine.connect() as conn:
                for _ in range(WARM_UP):
                    conn.execute(statement, params)
                with counted():
                    for _ in range(n):
                        conn.execute(statement, params)
            engine.dispose()
    if peer is not None and peer.spans < n:
        raise SystemExit("OpenTelemetry's instrumentor did not record a span per statement")


def user_microseconds() -> float:
    return resource.getrusage(resource.RUSAGE_THREAD).ru_utime * 1e6


async def bare_user_time_async(url: str, statement: Any, params: Any, n: int) -> float:
    engine = create_async_engine(async_url(url))
    best = math.inf
    async with engine.connect() as conn:
        for _ in range(WARM_UP):
            await conn.execute(statement, params)
        for _ in range(USER_TIME_REPEATS):
            start = user_microseconds()
            for _ in range(n):
                await conn.execute(statement, params)
            best = min(best, (user_microseconds() - start) / n)
    await engine.dispose()
    return best


def bare_user_time(url: str, driver: str, label: str, n: int = 5000) -> float:
    """User-space CPU microseconds of one bare statement, the least of a few repeats, outside
    valgrind. Instructions per user microsecond of the bare path turn the listeners' count
    into time: they make no system calls, so user time is all they take."""
    sql, params = STATEMENTS[label]
    statement = text(sql)
    if driver == "asyncpg":
        return asyncio.run(bare_user_time_async(url, statement, params, n))
    engine = create_engine(sync_url(url))
    best = math.inf
    with engine.connect() as conn:
        for _ in range(WARM_UP):
            conn.execute(statement, params)
        for _ in range(USER_TIME_REPEATS):
            start = user_microseconds()
            for _ in range(n):
                conn.execute(statement, params)
            best = min(best, (user_microseconds() - start) / n)
    engine.dispose()
    return best


class Job(NamedTuple):
    """One callgrind child."""

    driver: str
    label: str
    variant: str
    statements: int
    seed: int  # PYTHONHASHSEED


def callgrind_total(url: str, job: Job) -> int:
    """Instructions one child executed while counting (callgrind's `totals`)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        command = [
            "valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
            sys.executable, os.path.abspath(__file__),
            "--count", job.driver, job.label, job.variant, str(job.statements),
        ]  # fmt: skip
        env = {**os.environ, "PYTHONHASHSEED": str(job.seed), "BENCH_DATABASE_URL": url}
        subprocess.run(command, env=env, check=True, capture_output=True)
        with open(out) as data:
            found = re.search(r"^totals: (\d+)", data.read(), re.MULTILINE)
    if found is None:
        raise SystemExit(f"no instruction total in callgrind's output for {command}")
    return int(found.group(1))


def instructions(url: str, n: int, seeds: int) -> None:
    otel = OTelPeer.create()
    variants = VARIANTS if otel is not None and peer_attaches(url, otel) else VARIANTS[:-1]
    jobs = [
        Job(driver, label, variant, count, seed)
        for driver in DRIVERS
        for label in STATEMENTS
        for variant in variants
        for count in (n, 2 * n)
        for seed in range(seeds)
    ]
    print(
        f"SQLAlchemy {sqlalchemy.__version__}, Python {sys.version.split()[0]}, callgrind: "
        f"instructions per statement = (total of {2 * n} - total of {n}) / {n}, mean over "
        f"{seeds} hash seeds (± half their range); {len(jobs)} children",
        flush=True,
    )
    # Counts do not depend on load, so the children may run side by side.
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        totals = dict(zip(jobs, pool.map(lambda job: callgrind_total(url, job), jobs), strict=True))

    def per_statement(driver: str, label: str, variant: str) -> list[float]:
        """One figure per seed: all but the extra N statements is alike in both children."""
        figures = []
        for seed in range(seeds):
            more, fewer = (totals[Job(driver, label, variant, c, seed)] for c in (2 * n, n))
            figures.append((more - fewer) / n)
        return figures

    for driver in DRIVERS:
        for label in STATEMENTS:
            bare = per_statement(driver, label, "bare")
            added = {
                v: [x - b for x, b in zip(per_statement(driver, label, v), bare, strict=True)]
                for v in variants[1:]
            }
            ours = statistics.mean(added["ours"])
            spread = (max(added["ours"]) - min(added["ours"])) / 2
            in_context = statistics.mean(added["in_context"])
            per_microsecond = statistics.mean(bare) / bare_user_time(url, driver, label)
            line = (
                f"{driver:8} {label:13} bare {statistics.mean(bare):9,.0f} instr/stmt | "
                f"ours +{ours:7,.0f} ±{spread:4,.0f} (~{ours / per_microsecond:.1f} us) | "
                f"in a context +{in_context:7,.0f}"
            )
            if "otel" in added:
                otel = statistics.mean(added["otel"])
                line += f" | otel +{otel:9,.0f} | otel/ours {otel / ours:.1f}x"
            print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument(
        "--queries", type=int, help="statements per round (2000; 300 with --instructions)"
    )
    parser.add_argument("--memory", action="store_true", help="run the memory benchmark")
    parser.add_argument(
        "--commenter",
        action="store_true",
        help="a point select with and without a per-statement sqlcommenter traceparent",
    )
    parser.add_argument("--statements", type=int, default=1_000_000)
    parser.add_argument("--distinct", type=int, default=10_000)
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count instructions per statement with callgrind instead of timing",
    )
    parser.add_argument(
        "--seeds", type=int, default=3, help="hash seeds to average over (--instructions)"
    )
    # Internal: one callgrind child (driver, statement, variant, statements).
    parser.add_argument("--count", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    with database() as url:
        if args.count:
            driver, label, variant, n = args.count
            count_child(url, driver, label, variant, int(n))
            return
        if args.instructions:
            prepare(url)
            instructions(url, args.queries or 300, args.seeds)
            return
        if args.memory:
            memory(url, args.statements, args.distinct)
            return
        if args.commenter:
            prepare(url)
            bench_commenter(url, args.rounds, args.queries or 2000)
            return
        queries = args.queries or 2000
        prepare(url)
        otel = OTelPeer.create()
        if otel is not None:
            check_peer_attaches(url, otel)
        print(
            f"SQLAlchemy {sqlalchemy.__version__}, Python {sys.version.split()[0]}, "
            f"{args.rounds} rounds x {queries} statements per variant, medians of per-round "
            f"deltas; OpenTelemetry peer: {'yes' if otel else 'not installed'}",
            flush=True,
        )
        bench_sync(url, args.rounds, queries, otel)
        asyncio.run(bench_async(url, args.rounds, queries, otel))


if __name__ == "__main__":
    main()

"""Benchmark: `/metrics` with every per-index series of 1,200 indexes, beside postgres_exporter.

    .venv/bin/python bench/collectors_scrape.py [--url URL] [--scrapes N]

Loads `../shared/bench/many-indexes.sql` (200 tables, 1,200 indexes; resolved from the repository
root) into a scratch database, serves db-exporter's app with the indexes collector keeping every
index (`max_index_series` above the index count), and scrapes `/metrics` N times from a separate
process (as Prometheus would) while a 1 ms ticker in the exporter's event loop records how late
it wakes up: the longest lateness is the longest event-loop stall the scrapes caused. It also
times one collector run and the stall it causes. When Debian's `prometheus-postgres-exporter` is
installed, it is started on a loopback port with the per-index query file and scraped the same
way in the same run. Prints a table; asserts nothing. The scratch database is dropped at the end.

URL is the server to use (any database on it; default `$BENCH_DATABASE_URL`, else
`$TEST_DATABASE_URL`, else postgresql://postgres@127.0.0.1:5432/postgres).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

from exporter.collectors import COLLECTORS
from exporter.dsn import parse_dsn, sync_url
from exporter.metrics import Metrics
from exporter.server import RUNNER, create_app
from exporter.settings import DatabaseSettings

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "bench"
SCHEMA_SQL = SHARED / "many-indexes.sql"
PER_INDEX_QUERIES = SHARED / "postgres_exporter-per-index.yaml"
POSTGRES_EXPORTER = "/usr/bin/prometheus-postgres-exporter"
# What Prometheus 2.x sends.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)

# Runs in a child process: N sequential scrapes on one keep-alive connection.
SCRAPER = r"""
import gzip, http.client, json, sys, time
host, port, n, accept = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
use_gzip = sys.argv[5] == "1"
headers = {"Accept": accept} if accept else {}
if use_gzip:
    headers["Accept-Encoding"] = "gzip"
conn = http.client.HTTPConnection(host, port, timeout=60)
times, size, series = [], 0, 0
for i in range(n + 1):
    if i == 1:  # warmed up: tell the parent, wait for its go
        print("ready", flush=True)
        sys.stdin.readline()
    start = time.perf_counter()
    conn.request("GET", "/metrics", headers=headers)
    response = conn.getresponse()
    body = response.read()
    elapsed = time.perf_counter() - start
    assert response.status == 200, response.status
    if i == 0:  # warm-up, not timed
        if response.getheader("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        size = len(body)
        series = sum(1 for line in body.decode().splitlines() if line and not line.startswith("#"))
        continue
    times.append(elapsed)
print(json.dumps({"times": times, "bytes": size, "series": series}))
"""


class StallMeter:
    """A 1 ms ticker in the event loop; `worst` is the longest it woke up late."""

    PERIOD = 0.001

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(self.PERIOD)
            self.worst = max(self.worst, loop.time() - before - self.PERIOD)

    def start(self) -> None:
        self.worst = 0.0
        self._task = asyncio.create_task(self._tick())

    async def stop(self) -> float:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        return self.worst


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def admin(url: URL, sql: str) -> None:
    engine = create_engine(sync_url(url), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(sql))
    finally:
        engine.dispose()


def load_schema(url: URL) -> None:
    """many-indexes.sql without its psql meta-commands (`\\set`, `\\o`, `\\echo`)."""
    script = "\n".join(
        line for line in SCHEMA_SQL.read_text().splitlines() if not line.startswith("\\")
    )
    script = script[: script.index("SELECT count(*) AS tables")]  # drop the summary queries
    engine = create_engine(sync_url(url), isolation_level="AUTOCOMMIT")
    try:
        conn = engine.raw_connection()  # no parameters: psycopg leaves the script's % alone
        try:
            conn.cursor().execute(script)
        finally:
            conn.close()
    finally:
        engine.dispose()


async def scrape(
    port: int, n: int, accept: str, use_gzip: bool, meter: StallMeter | None = None
) -> tuple[dict[str, Any], float | None]:
    """N timed scrapes from a child process; with `meter`, the longest event-loop stall while
    they ran (the child's start-up and warm-up scrape are outside that window)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SCRAPER, "127.0.0.1", str(port), str(n), accept,
        "1" if use_gzip else "0",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdin is not None
    assert proc.stdout is not None
    if await proc.stdout.readline() != b"ready\n":
        raise RuntimeError("the scraper did not warm up")
    if meter is not None:
        meter.start()
    proc.stdin.write(b"go\n")
    await proc.stdin.drain()
    out = await proc.stdout.read()
    stall = await meter.stop() if meter is not None else None
    if await proc.wait() != 0:
        raise RuntimeError(f"scraper failed with status {proc.returncode}")
    result: dict[str, Any] = json.loads(out)
    return result, stall


async def wait_for_port(port: int, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def row(name: str, result: dict[str, Any], stall: float | None) -> str:
    times = sorted(result["times"])
    median = statistics.median(times) * 1000
    p90 = times[int(len(times) * 0.9) - 1] * 1000
    stall_text = f"{stall * 1000:9.2f}" if stall is not None else "        -"
    return (
        f"{name:<44} {median:9.2f} {p90:9.2f} {stall_text} {result['series']:8d} "
        f"{result['bytes'] / 1024:8.0f}"
    )


async def run(url: URL, scrapes: int) -> None:
    scratch = f"dbx_bench_{uuid.uuid4().hex[:8]}"
    admin(url, f'CREATE DATABASE "{scratch}"')
    target = url.set(database=scratch)
    try:
        started = time.perf_counter()
        load_schema(target)
        print(f"loaded {SCHEMA_SQL.name} into {scratch} in {time.perf_counter() - started:.1f} s")
        await measure(target, scrapes)
    finally:
        admin(url, f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')


async def measure(target: URL, scrapes: int) -> None:
    database = DatabaseSettings(
        name="bench",
        dsn=target.render_as_string(hide_password=False),
        collectors={
            # Every index gets its series; runs only when this script asks for it. The other
            # collectors are off: this measures the per-index series alone.
            **{name: {"enabled": False} for name in COLLECTORS if name != "indexes"},
            "indexes": {"max_index_series": 100_000, "interval_seconds": 3600},
        },
    )
    metrics = Metrics(CollectorRegistry())
    app = create_app(metrics, [database])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    meter = StallMeter()
    lines = []
    try:
        labels = {"collector": "indexes", "database": "bench"}
        deadline = time.monotonic() + 60
        while metrics.registry.get_sample_value("exporter_collector_success", labels) != 1:
            if time.monotonic() > deadline:
                raise RuntimeError("the indexes collector never succeeded")
            await asyncio.sleep(0.1)

        # One collector run (query, families, rendering) while the ticker watches.
        worker = app[RUNNER].workers[0]
        meter.start()
        assert await worker.run_collector(worker.jobs[0])
        collector_stall = await meter.stop()
        run_seconds = metrics.registry.get_sample_value(
            "exporter_collector_duration_seconds", labels
        )
        assert run_seconds is not None

        for name, accept, use_gzip in (
            ("db-exporter, text 0.0.4", "", False),
            ("db-exporter, as Prometheus asks (OM + gzip)", PROMETHEUS_ACCEPT, True),
        ):
            result, stall = await scrape(port, scrapes, accept, use_gzip, meter)
            lines.append(row(name, result, stall))
    finally:
        await runner.cleanup()

    lines.extend(await postgres_exporter(target, scrapes))
    print(f"\n/metrics, {scrapes} scrapes each after one warm-up, one client process")
    print(
        f"{'exporter':<44} {'median ms':>9} {'p90 ms':>9} {'stall ms':>9} {'series':>8} {'KiB':>8}"
    )
    print("\n".join(lines))
    print(
        f"\none indexes collector run: {run_seconds * 1000:.1f} ms "
        f"(query + families + rendering), longest event-loop stall during it "
        f"{collector_stall * 1000:.2f} ms"
    )


async def postgres_exporter(target: URL, scrapes: int) -> list[str]:
    if not os.access(POSTGRES_EXPORTER, os.X_OK):
        missing = "not installed (apt-get install prometheus-postgres-exporter)"
        return [f"{'postgres_exporter':<44} {missing}"]
    port = free_port()
    dsn = target.set(drivername="postgresql", query={"sslmode": "disable"})
    env = dict(os.environ, DATA_SOURCE_NAME=dsn.render_as_string(hide_password=False))
    lines = []
    for name, queries in (
        (
            "postgres_exporter 0.11, per-index query file",
            [f"--extend.query-path={PER_INDEX_QUERIES}"],
        ),
        ("postgres_exporter 0.11, default config", []),
    ):
        proc = await asyncio.create_subprocess_exec(
            POSTGRES_EXPORTER, f"--web.listen-address=127.0.0.1:{port}", *queries,
            env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            await wait_for_port(port)
            result, _ = await scrape(port, scrapes, "", False)
            lines.append(row(name, result, None))
        finally:
            proc.terminate()
            await proc.wait()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = os.environ.get("BENCH_DATABASE_URL") or os.environ.get(
        "TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    parser.add_argument("--url", default=default, help="a database on the server to use")
    parser.add_argument("--scrapes", type=int, default=200)
    args = parser.parse_args()
    if not SCHEMA_SQL.exists():
        sys.exit(f"bench: {SCHEMA_SQL} not found (the shared bench folder beside the repository)")
    asyncio.run(run(parse_dsn(args.url).set(drivername="postgresql"), args.scrapes))


if __name__ == "__main__":
    main()

"""Benchmark: `/metrics` with every per-index series of 1,200 indexes, beside postgres_exporter.

    .venv/bin/python bench/collectors_scrape.py [--url URL] [--scrapes N] [--runs N]
        [--pg-stat-statements]

Loads `../shared/bench/many-indexes.sql` (200 tables, 1,200 indexes; resolved from the repository
root) into a scratch database and serves db-exporter's app on it twice: first with the indexes
collector alone keeping every index (`max_index_series` above the index count), then with every
collector on as well (each server-level one, database, tables, activity, statements, settings,
locks, migrations over this repository's Alembic scripts, backups over an empty directory), each
table kept too. Each is scraped N times per format from a separate process (as Prometheus
would: the text format, OpenMetrics as Prometheus's `Accept` asks, each plain and gzipped)
while a 1 ms ticker in the exporter's event loop records how late it wakes up: the longest
lateness is the longest event-loop stall the scrapes caused. It also times `--runs` rounds
of the collectors (each one after the other, as the worker runs them): the longest stall, and
from `gc.callbacks` the full (generation-2) garbage collections they set off and the longest
collection; first with nothing frozen (as in a host application), then after `gc.freeze()`
(as `db-exporter serve` does once started, exporter/sidecar_gc.py). Collector intervals are
an hour, so no scheduled run falls inside the timed scrapes. `pg_stat_statements` gives the
statements collector series only when the server preloads it; the script says which (with
it, 200 distinct statements fill the top). `--pg-stat-statements` runs everything on a private
cluster that preloads it (the helper the tests use, `tests/pg_cluster.py`: PostgreSQL
binaries in /usr/lib/postgresql/*/bin).

When Debian's `prometheus-postgres-exporter` is installed, it is started on a loopback port in
the same run, with the per-index query file and then with its default config (all its default
collectors, no query file), and scraped the same way. Prints a table and the ratios; asserts
nothing. The scratch database is dropped at the end.

URL is the server to use (any database on it; default `$BENCH_DATABASE_URL`, else
`$TEST_DATABASE_URL`, else postgresql://postgres@127.0.0.1:5432/postgres).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.exposition import generate_latest
from scratch import free_port, scratch_database
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

from exporter.collectors import COLLECTORS
from exporter.collectors.exposition import SnapshotStore, prerendered
from exporter.collectors.runner import DatabaseWorker
from exporter.dsn import parse_dsn, sync_url
from exporter.endpoints import metrics_body, metrics_gzip
from exporter.metrics import Metrics
from exporter.server import RUNNER, create_app
from exporter.settings import DatabaseSettings

REPO = Path(__file__).resolve().parent.parent
# `../shared/bench` beside the checkout (a worktree one level deeper finds it too).
SHARED = next(
    (d / "shared" / "bench" for d in REPO.parents if (d / "shared" / "bench").is_dir()),
    REPO.parent / "shared" / "bench",
)
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


class GcPauses:
    """Every garbage collection while active, from `gc.callbacks`: (generation, seconds)."""

    def __init__(self) -> None:
        self.pauses: list[tuple[int, float]] = []
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses.append((info["generation"], time.perf_counter() - self._started))

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def full(self) -> list[float]:
        return [seconds for generation, seconds in self.pauses if generation == 2]


def load() -> str:
    """The load average (the machine may be shared), as `uptime` prints it."""
    return ", ".join(f"{n:.2f}" for n in os.getloadavg())


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


# (row name, Accept header, gzip): the text format, and what Prometheus asks for, each plain
# and gzipped (Prometheus sends `Accept-Encoding: gzip`).
FORMATS = (
    ("text 0.0.4", "", False),
    ("text 0.0.4 + gzip", "", True),
    ("OpenMetrics", PROMETHEUS_ACCEPT, False),
    ("OpenMetrics + gzip (Prometheus)", PROMETHEUS_ACCEPT, True),
)


def median_ms(result: dict[str, Any]) -> float:
    return float(statistics.median(result["times"])) * 1000


def row(name: str, result: dict[str, Any], stall: float | None) -> str:
    times = sorted(result["times"])
    p95 = times[max(int(len(times) * 0.95) - 1, 0)] * 1000
    stall_text = f"{stall * 1000:9.2f}" if stall is not None else "        -"
    return (
        f"{name:<56} {median_ms(result):9.2f} {p95:9.2f} {stall_text} {result['series']:8d} "
        f"{result['bytes'] / 1024:8.0f}"
    )


async def run(url: URL, scrapes: int, rounds: int) -> None:
    with scratch_database(url, "scrape") as target:
        started = time.perf_counter()
        load_schema(target)
        elapsed = time.perf_counter() - started
        print(f"loaded {SCHEMA_SQL.name} into {target.database} in {elapsed:.1f} s")
        statements = fill_statements(target)
        await measure(target, scrapes, rounds, statements)


def fill_statements(target: URL) -> bool:
    """When the server preloads pg_stat_statements: the extension in the scratch database and
    200 distinct statements in it (the statements collector keeps its top 100). False when not."""
    engine = create_engine(sync_url(target), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            preload = conn.execute(text("SHOW shared_preload_libraries")).scalar_one()
            if "pg_stat_statements" not in str(preload):
                return False
            conn.execute(text("CREATE EXTENSION IF NOT EXISTS pg_stat_statements"))
            tables = conn.execute(
                text(
                    "SELECT format('%I.%I', schemaname, relname) FROM pg_stat_user_tables"
                    " ORDER BY 1"
                )
            ).scalars()
            for table in list(tables)[:200]:
                conn.execute(text(f"SELECT count(*) FROM {table}"))
        return True
    finally:
        engine.dispose()


def every_collector(backups: str) -> dict[str, dict[str, Any]]:
    """Every collector on, each with the options it needs to run here."""
    return {
        **{name: {"interval_seconds": 3600} for name in COLLECTORS},
        "indexes": {"max_index_series": 100_000, "interval_seconds": 3600},
        "tables": {"max_table_series": 100_000, "interval_seconds": 3600},
        "migrations": {"script_location": str(REPO / "alembic"), "interval_seconds": 3600},
        "backups": {"directory": backups, "interval_seconds": 3600},
    }


def indexes_only() -> dict[str, dict[str, Any]]:
    # Every index gets its series; runs only when this script asks for it.
    return {
        **{name: {"enabled": False} for name in COLLECTORS if name != "indexes"},
        "indexes": {"max_index_series": 100_000, "interval_seconds": 3600},
    }


async def measure(target: URL, scrapes: int, rounds: int, statements: bool) -> None:
    results: dict[tuple[str, str], dict[str, Any]] = {}
    lines: list[str] = []
    runs: list[str] = []
    with tempfile.TemporaryDirectory(prefix="dbx-bench-backups-") as backups:
        for config, collectors in (
            ("indexes only", indexes_only()),
            ("every collector", every_collector(backups)),
        ):
            lines.append(f"db-exporter, {config}:")
            run_lines = await serve_and_scrape(
                target, scrapes, rounds, collectors, results, lines, config
            )
            runs.extend(f"{config}, {line}" for line in run_lines)

    lines.extend(await postgres_exporter(target, scrapes, results))
    print(f"\n/metrics, {scrapes} scrapes each after one warm-up, one client process")
    print(
        f"{'exporter':<56} {'median ms':>9} {'p95 ms':>9} {'stall ms':>9} {'series':>8} {'KiB':>8}"
    )
    print("\n".join(lines))
    print(f"\n{rounds} rounds of the collectors (query + families + rendering); load {load()}:")
    print("\n".join(f"  {line}" for line in runs))
    print(
        "pg_stat_statements: "
        + ("preloaded, 200 statements run" if statements else "not preloaded on this server")
    )
    ratios = [
        ("every collector", "OpenMetrics + gzip (Prometheus)", "default config, as Prometheus"),
        ("every collector", "text 0.0.4", "default config, text 0.0.4"),
        ("indexes only", "text 0.0.4", "per-index query file, text 0.0.4"),
    ]
    for ours, fmt, theirs in ratios:
        mine, other = results.get((ours, fmt)), results.get(("postgres_exporter", theirs))
        if mine is not None and other is not None:
            print(
                f"ratio db-exporter {ours}, {fmt} / postgres_exporter {theirs}: "
                f"{median_ms(mine) / median_ms(other):.2f}"
            )


async def serve_and_scrape(
    target: URL,
    scrapes: int,
    runs: int,
    collectors: dict[str, dict[str, Any]],
    results: dict[tuple[str, str], dict[str, Any]],
    lines: list[str],
    config: str,
) -> list[str]:
    """Serve the app with `collectors`, wait for each to succeed once, time `runs` more rounds
    (`collector_rounds()`, nothing frozen then start-up frozen), then scrape in every format.
    Returns the rounds' lines."""
    database = DatabaseSettings(
        name="bench", dsn=target.render_as_string(hide_password=False), collectors=collectors
    )
    metrics = Metrics(CollectorRegistry())
    app = create_app(metrics, [database])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    meter = StallMeter()
    try:
        worker = app[RUNNER].workers[0]
        names = [job.collector.name for job in worker.jobs]
        deadline = time.monotonic() + 120
        while True:
            failing = [
                name
                for name in names
                if metrics.registry.get_sample_value(
                    "exporter_collector_success", {"collector": name, "database": "bench"}
                )
                != 1
            ]
            if not failing:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"collectors never succeeded: {', '.join(failing)}")
            await asyncio.sleep(0.1)

        run_lines: list[str] = []
        # As in a host application (nothing frozen), then as `db-exporter serve` runs them.
        for frozen in (False, True):
            gc.collect()  # both start from the same point
            if frozen:
                gc.freeze()  # what exporter/sidecar_gc.py does once the sidecar has started
            run_lines.append(await collector_rounds(worker, runs, meter, frozen))
            gc.unfreeze()

        for name, accept, use_gzip in FORMATS:
            result, stall = await scrape(port, scrapes, accept, use_gzip, meter)
            results[(config, name)] = result
            lines.append(row(f"  {name}", result, stall))
        lines.append(handler_share(metrics.registry, app[RUNNER].store, scrapes))
    finally:
        await runner.cleanup()
    return run_lines


async def collector_rounds(
    worker: DatabaseWorker, rounds: int, meter: StallMeter, frozen: bool
) -> str:
    """`rounds` runs of every collector, one after the other as the worker runs them: the
    time of a round, the longest event-loop stall, the full garbage collections and the
    longest collection of any generation."""
    with GcPauses() as pauses:
        meter.start()
        started = time.perf_counter()
        for _ in range(rounds):
            for job in worker.jobs:
                assert await worker.run_collector(job)
        seconds = (time.perf_counter() - started) / rounds
        stall = await meter.stop()
    longest = max((p for _, p in pauses.pauses), default=0.0)
    state = f"start-up frozen ({gc.get_freeze_count():,} objects)" if frozen else "nothing frozen"
    return (
        f"{state}: {len(worker.jobs)} collectors in {seconds * 1000:.0f} ms a round; "
        f"longest stall {stall * 1000:.1f} ms; {len(pauses.full())} full collections, "
        f"longest collection {longest * 1000:.1f} ms"
    )


def handler_share(registry: CollectorRegistry, store: SnapshotStore, n: int) -> str:
    """In-process medians, Prometheus's Accept: the whole body (plain, gzipped) and the part
    of it prometheus_client renders on every scrape (the registry without the snapshot)."""

    def median_of(call: Callable[[], object]) -> float:
        times = []
        for _ in range(n):
            started = time.perf_counter()
            call()
            times.append(time.perf_counter() - started)
        return statistics.median(times) * 1000

    def registry_only() -> None:
        with prerendered():
            generate_latest(registry)

    body = median_of(lambda: metrics_body(registry, store, PROMETHEUS_ACCEPT))
    gzipped = median_of(lambda: metrics_gzip(registry, store, PROMETHEUS_ACCEPT))
    part = median_of(registry_only)
    return (
        f"  in the handler, OpenMetrics: {body:.2f} ms plain, {gzipped:.2f} ms gzipped; "
        f"the registry's part (rendered per scrape) {part:.2f} ms"
    )


async def postgres_exporter(
    target: URL, scrapes: int, results: dict[tuple[str, str], dict[str, Any]]
) -> list[str]:
    if not os.access(POSTGRES_EXPORTER, os.X_OK):
        missing = "not installed (apt-get install prometheus-postgres-exporter)"
        return [f"{'postgres_exporter':<56} {missing}"]
    port = free_port()
    dsn = target.set(drivername="postgresql", query={"sslmode": "disable"})
    env = dict(os.environ, DATA_SOURCE_NAME=dsn.render_as_string(hide_password=False))
    lines = ["postgres_exporter 0.11:"]
    for config, queries, formats in (
        (
            "per-index query file",
            [f"--extend.query-path={PER_INDEX_QUERIES}"],
            FORMATS[:1],
        ),
        # Its default collectors, no query file: as Prometheus scrapes it, and in plain text.
        ("default config", [], (FORMATS[0], ("as Prometheus", PROMETHEUS_ACCEPT, True))),
    ):
        proc = await asyncio.create_subprocess_exec(
            POSTGRES_EXPORTER, f"--web.listen-address=127.0.0.1:{port}", *queries,
            env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            await wait_for_port(port)
            for name, accept, use_gzip in formats:
                result, _ = await scrape(port, scrapes, accept, use_gzip)
                results[("postgres_exporter", f"{config}, {name}")] = result
                lines.append(row(f"  {config}, {name}", result, None))
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
    parser.add_argument("--runs", type=int, default=5, help="rounds of the collectors timed")
    parser.add_argument(
        "--pg-stat-statements",
        action="store_true",
        help="run on a private cluster (tests/pg_cluster.py) that preloads pg_stat_statements, "
        "instead of --url",
    )
    args = parser.parse_args()
    if not SCHEMA_SQL.exists():
        sys.exit(f"bench: {SCHEMA_SQL} not found (the shared bench folder beside the repository)")
    if not args.pg_stat_statements:
        asyncio.run(run(parse_dsn(args.url).set(drivername="postgresql"), args.scrapes, args.runs))
        return
    sys.path.insert(0, str(REPO / "tests"))
    from pg_cluster import private_cluster

    with private_cluster("shared_preload_libraries = 'pg_stat_statements'") as cluster:
        print(f"private PostgreSQL {cluster.version} cluster with pg_stat_statements preloaded")
        asyncio.run(
            run(parse_dsn(cluster.url).set(drivername="postgresql"), args.scrapes, args.runs)
        )


if __name__ == "__main__":
    main()

"""Benchmark: what discovery costs. `/probe` beside `/metrics`, and a check on a discovered
database (a connection per use) beside one on a configured database (a kept connection).

    .venv/bin/python bench/discovery_cost.py [--url URL] [--databases N] [--scrapes N]

Creates N empty databases (default 10), serves an exporter whose entry discovers them (the
default collectors), waits until every one has its series, then prints the median time of
`/metrics` and of `/probe?target=<one of them>` over HTTP and their ratio, the bytes of each,
and the median wall time of one check (`SELECT` version and name, as the runner's) through a
per-use engine and through a kept-connection one, with their ratio. Drops its databases at the
end. Asserts nothing.

URL: default `$BENCH_DATABASE_URL`, else `$TEST_DATABASE_URL`, else
postgresql://postgres@127.0.0.1:5432/postgres.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import urllib.request
import uuid

from prometheus_client import CollectorRegistry
from scratch import admin  # bench/ is on the path
from sqlalchemy import text

from exporter import Metrics
from exporter.dsn import parse_dsn
from exporter.probe import exporter_engine
from exporter.server import Exporter
from exporter.settings import DatabaseSettings

CHECK = text("SELECT current_setting('server_version_num')::int, current_database()")


def timed_get(url: str) -> tuple[float, int]:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as response:
        size = len(response.read())
    return time.perf_counter() - started, size


async def check_times(url: str, persistent: bool, runs: int) -> list[float]:
    engine = exporter_engine(url, 10, persistent)
    times = []
    try:
        for _ in range(runs + 1):
            started = time.perf_counter()
            async with engine.connect() as conn:
                (await conn.execute(CHECK)).one()
            times.append(time.perf_counter() - started)
    finally:
        await engine.dispose()
    return times[1:]  # the first opens the kept connection


def main() -> None:
    parser = argparse.ArgumentParser()
    default = os.environ.get("BENCH_DATABASE_URL") or os.environ.get("TEST_DATABASE_URL")
    parser.add_argument("--url", default=default or "postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--databases", type=int, default=10)
    parser.add_argument("--scrapes", type=int, default=200)
    args = parser.parse_args()
    prefix = f"bench_disc_{uuid.uuid4().hex[:6]}_"
    names = [f"{prefix}{i:03d}" for i in range(args.databases)]
    for name in names:
        admin(args.url, f'CREATE DATABASE "{name}"')
    registry = CollectorRegistry()
    entry = DatabaseSettings(
        name="main",
        dsn=args.url,
        election={"enabled": False},
        discover={"include": [f"{prefix}*"], "interval_seconds": 5},
    )
    exporter = Exporter(listen="127.0.0.1:0", databases=[entry], metrics=Metrics(registry))
    exporter.start_in_thread()
    try:
        target = f"main/{names[-1]}"
        deadline = time.monotonic() + 120
        while any(
            registry.get_sample_value(
                "exporter_collector_success", {"collector": "indexes", "database": f"main/{n}"}
            )
            != 1
            for n in names
        ):
            if time.monotonic() > deadline:
                raise SystemExit("the discovered databases never all reported")
            time.sleep(0.2)
        metrics = [timed_get(f"{exporter.url}/metrics") for _ in range(args.scrapes)]
        probe = [
            timed_get(f"{exporter.url}/probe?target={urllib.request.quote(target, safe='')}")
            for _ in range(args.scrapes)
        ]
    finally:
        exporter.stop_in_thread()
        for name in names:
            admin(args.url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    one = parse_dsn(args.url).render_as_string(hide_password=False)
    per_use = asyncio.run(check_times(one, False, args.scrapes))
    kept = asyncio.run(check_times(one, True, args.scrapes))

    m_time, p_time = (statistics.median(t for t, _ in xs) * 1000 for xs in (metrics, probe))
    print(f"{args.databases} discovered databases, {args.scrapes} scrapes each")
    print(f"/metrics         median {m_time:7.2f} ms  {metrics[-1][1]:>9,} bytes")
    print(f"/probe (one db)  median {p_time:7.2f} ms  {probe[-1][1]:>9,} bytes")
    print(f"probe/metrics    time {p_time / m_time:.3f}  bytes {probe[-1][1] / metrics[-1][1]:.3f}")
    u_time, k_time = (statistics.median(xs) * 1000 for xs in (per_use, kept))
    print(f"check, a connection per use (discovered)  median {u_time:7.2f} ms")
    print(f"check, a kept connection (configured)     median {k_time:7.2f} ms")
    print(f"per-use/kept {u_time / k_time:.1f}x")


if __name__ == "__main__":
    main()

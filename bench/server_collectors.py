"""Benchmark: what one run of each server-level collector costs, beside the `database` one.

    .venv/bin/python bench/server_collectors.py [--url URL] [--runs N]

Runs each collector N times on one exporter connection (as the runner does, timeouts set per
run) and prints, per collector, the median wall time of a run, the median CPU time the
exporter's process spent on it (building the families included), the series it exported and
the bytes of their text exposition, with the ratios to the `database` collector measured in
the same run. On a primary the WAL receiver exports nothing; point `--url` at a replica to
see it. Asserts nothing.

URL: default `$BENCH_DATABASE_URL`, else `$TEST_DATABASE_URL`, else
postgresql://postgres@127.0.0.1:5432/postgres.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry
from sqlalchemy import text

from exporter.collectors import COLLECTORS
from exporter.dsn import parse_dsn
from exporter.probe import exporter_engine
from exporter.settings import CollectorsSettings

BASELINE = "database"
MEASURED = (
    "replication",
    "replication_slot",
    "stat_wal_receiver",
    "stat_bgwriter",
    "stat_checkpointer",
    "wal",
    "archiver",
    "roles",
    "server_activity",
    "stat_database_conflicts",
)


class _Families:
    def __init__(self, families: list[object]) -> None:
        self.families = families

    def collect(self) -> list[object]:
        return self.families


async def measure(url: str, runs: int) -> list[tuple[str, float, float, int, int]]:
    engine = exporter_engine(url, 10)
    rows = []
    try:
        async with engine.connect() as conn:
            version = int((await conn.execute(text("SHOW server_version_num"))).scalar_one())
            await conn.commit()
            for name in (BASELINE, *MEASURED):
                cls = COLLECTORS[name]
                collector = cls("postgres", getattr(CollectorsSettings(), name))
                walls, cpus = [], []
                families: list[object] = []
                for _ in range(runs):
                    wall, cpu = time.perf_counter(), time.process_time()
                    await conn.execute(text("SET LOCAL statement_timeout = '10s'"))
                    families = list(await collector.collect(conn, version))
                    await conn.commit()
                    cpus.append(time.process_time() - cpu)
                    walls.append(time.perf_counter() - wall)
                registry = CollectorRegistry()
                registry.register(_Families(families))  # type: ignore[arg-type]
                body = generate_latest(registry)
                series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
                rows.append((name, statistics.median(walls), statistics.median(cpus), series,
                             len(body)))  # fmt: skip
    finally:
        await engine.dispose()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = os.environ.get("BENCH_DATABASE_URL") or os.environ.get("TEST_DATABASE_URL")
    parser.add_argument("--url", default=default or "postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    url = parse_dsn(args.url).render_as_string(hide_password=False)
    rows = asyncio.run(measure(url, args.runs))
    base_wall, base_cpu = rows[0][1], rows[0][2]
    print(f"{'collector':<24}{'wall ms':>9}{'x db':>7}{'cpu ms':>9}{'x db':>7}"
          f"{'series':>8}{'bytes':>8}")  # fmt: skip
    for name, wall, cpu, series, size in rows:
        print(f"{name:<24}{wall * 1e3:>9.2f}{wall / base_wall:>7.2f}{cpu * 1e3:>9.2f}"
              f"{cpu / base_cpu:>7.2f}{series:>8}{size:>8}")  # fmt: skip


if __name__ == "__main__":
    main()

"""How much memory statement text costs the application: RSS growth of an instrumented engine
above a bare one, same workload, same run.

    TEST_DATABASE_URL=postgresql://... .venv/bin/python bench/statement_memory.py
        [--big 1000] [--big-mib 5] [--statements 1000000] [--distinct 100000]

Two workloads, each run in a fresh subprocess (a clean RSS), once on a bare engine and once
with `instrument()` and a slow-query log at threshold 0 (every statement is recorded: the
worst case, which fills the queue, the ring buffer, the aggregates and the plan capture):

- "big": `--big` distinct statements of `--big-mib` MiB each (an ETL job inlining values);
- "many": `--statements` statements over `--distinct` distinct texts, each its own fingerprint,
  round-robin (every cache churns).

Growth is the RSS after the workload (and the slow-query log flushed) minus the RSS after one
warm-up statement (drivers, pglast, the exporter and its plan capture loaded, a cost paid once
whatever the workload). Goal: <= 20 MiB above bare.

`--fixed-mmap-threshold` runs the children with glibc's MALLOC_MMAP_THRESHOLD_=1048576: blocks
of 1 MiB or more are then always mapped and given back when freed. By default glibc raises the
threshold after the first 5 MiB block is freed and serves later ones from its heap, where a few
freed blocks stay resident (reused, not kept by anyone): the difference between the two runs
is the allocator's, not the exporter's.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from typing import Any

from instrumentation_overhead import database  # bench/ is on the path
from prometheus_client import CollectorRegistry
from sqlalchemy import Connection, create_engine

from exporter import Metrics, instrument
from exporter.dsn import sync_url
from exporter.inprocess_settings import SlowQuerySettings
from exporter.slowlog import SlowQueryLog

MIB = 2**20


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def big(conn: Connection, args: argparse.Namespace) -> None:
    padding = "x" * (args.big_mib * MIB)
    for i in range(args.big):
        conn.exec_driver_sql(f"SELECT length('{i:07d}{padding}')")


def many(conn: Connection, args: argparse.Namespace) -> None:
    for i in range(args.statements):
        k = i % args.distinct
        conn.exec_driver_sql(f"SELECT c{k} FROM (SELECT {k} AS c{k}) t")


WORKLOADS = {"big": big, "many": many}


def child(url: str, workload: str, instrumented: bool, args: argparse.Namespace) -> dict[str, Any]:
    # Without prepared statements: psycopg would keep the last 100 statements' text to count
    # which to prepare (500 MiB of 5 MiB statements), in both engines alike.
    engine = create_engine(sync_url(url), connect_args={"prepare_threshold": None})
    slow_log = None
    if instrumented:
        metrics = Metrics(CollectorRegistry())
        slow_log = SlowQueryLog(SlowQuerySettings(threshold_ms=0, stdout=False), metrics)
        instrument(engine, database="main", metrics=metrics, slow_log=slow_log)
    started = time.perf_counter()
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")
        if slow_log is not None:  # its plan loads asyncio and asyncpg: a cost paid once
            slow_log.flush()
        gc.collect()
        before = rss_bytes()
        WORKLOADS[workload](conn, args)
        if slow_log is not None:
            slow_log.flush()
        gc.collect()
        after = rss_bytes()
    return {"growth": after - before, "seconds": time.perf_counter() - started}


def run_child(workload: str, instrumented: bool, fixed_mmap_threshold: bool) -> dict[str, Any]:
    command = [sys.executable, __file__, *sys.argv[1:], "--child", workload]
    command += ["--instrumented"] if instrumented else []
    env = dict(os.environ)
    if fixed_mmap_threshold:
        env["MALLOC_MMAP_THRESHOLD_"] = str(MIB)
    done = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True, env=env)
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--big", type=int, default=1000, help="distinct big statements")
    parser.add_argument("--big-mib", type=int, default=5, help="size of each, MiB")
    parser.add_argument("--statements", type=int, default=1_000_000)
    parser.add_argument("--distinct", type=int, default=100_000)
    parser.add_argument("--only", choices=sorted(WORKLOADS), help="run one workload")
    parser.add_argument("--fixed-mmap-threshold", action="store_true", help="see above")
    parser.add_argument("--child", choices=sorted(WORKLOADS), help=argparse.SUPPRESS)
    parser.add_argument("--instrumented", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    with database() as url:
        if args.child:
            print(json.dumps(child(url, args.child, args.instrumented, args)))
            return
        os.environ["BENCH_DATABASE_URL"] = url  # the children use the same server
        labels = {
            "big": f"{args.big:,} distinct statements of {args.big_mib} MiB",
            "many": f"{args.statements:,} statements over {args.distinct:,} distinct texts",
        }
        for workload in [args.only] if args.only else list(WORKLOADS):
            bare = run_child(workload, False, args.fixed_mmap_threshold)
            ours = run_child(workload, True, args.fixed_mmap_threshold)
            above = (ours["growth"] - bare["growth"]) / MIB
            print(
                f"{labels[workload]}: bare +{bare['growth'] / MIB:.1f} MiB "
                f"({bare['seconds']:.0f} s), instrumented +{ours['growth'] / MIB:.1f} MiB "
                f"({ours['seconds']:.0f} s): {above:+.1f} MiB above bare (goal <= 20)",
                flush=True,
            )


if __name__ == "__main__":
    main()

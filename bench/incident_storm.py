"""An incident storm: every statement is slow. What the slow-query log then costs the application.

    .venv/bin/python bench/incident_storm.py [--rounds 11] [--queries 2000] [--storm 100000]

Same method as bench/slowlog_overhead.py (one held connection, the log switched on and off
between rounds, rounds alternating their order), on psycopg, in two storms:

- "threshold 0": a primary-key point select with a slow-query threshold of 0, so every
  statement (~100 us) is slow: the worst case for the log's own cost;
- "degraded database": `SELECT pg_sleep(0.002)` with a threshold of 1 ms, as when the database
  itself is slow.

"log off" is instrument() without a slow-query log, "log on" with one writing to a file (the
default settings otherwise). The writer thread's backlog at the end of an "on" round is drained
inside that round's time, so none of its work moves into the next round. Throughput is
statements per second of wall time; the ratio is on/off (median over rounds). Wall time on a
busy machine is noisy, so the process's CPU time per statement (the writer thread's included:
under the GIL it is taken from the application) is printed too, with its ratio off/on, which
is what throughput would be for an application bound by its own CPU.

Then one uninterrupted storm of `--storm` threshold-0 statements with the log on: the RSS it
grew by (queue, ring buffer, aggregates and the writer at their bounds) and what became of the
slow statements: written, dropped because the writer's queue was full, and left out by the
per-fingerprint rate limit.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import tempfile
import time

from instrumentation_overhead import database, prepare, rss_bytes  # bench/ is on the path
from prometheus_client import CollectorRegistry
from slowlog_overhead import file_log
from sqlalchemy import TextClause, create_engine, text
from sqlalchemy.engine import Connection

from exporter import Metrics, instrument, uninstrument
from exporter.dsn import sync_url
from exporter.slowlog import SlowQueryLog

POINT_SELECT = text("SELECT name FROM bench_items WHERE id = :id"), {"id": 42}
DEGRADED = text("SELECT pg_sleep(0.002)"), None


Case = tuple[TextClause, dict[str, int] | None]


def throughput(
    conn: Connection, metrics: Metrics, log: SlowQueryLog, case: Case, n: int, rounds: int
) -> tuple[float, float, float]:
    """Statements per second with the log on over statements per second with it off (wall
    time), and the process's CPU time per statement off and on (microseconds, the writer
    thread's included): medians over rounds."""
    statement, params = case
    engine = conn.engine

    def round_(on: bool) -> tuple[float, float]:
        uninstrument(engine)
        instrument(engine, metrics=metrics, slow_log=log if on else False)
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(n):
            conn.execute(statement, params)
        if on:
            log.flush()
        return n / (time.perf_counter() - wall), (time.process_time() - cpu) / n * 1e6

    ratios, off, on = [], [], []
    for r in range(rounds):
        rates = {is_on: round_(is_on) for is_on in ((False, True) if r % 2 else (True, False))}
        ratios.append(rates[True][0] / rates[False][0])
        off.append(rates[False][1])
        on.append(rates[True][1])
    uninstrument(engine)
    return statistics.median(ratios), statistics.median(off), statistics.median(on)


def storm(conn: Connection, metrics: Metrics, log: SlowQueryLog, n: int) -> None:
    engine, registry = conn.engine, metrics.registry
    instrument(engine, metrics=metrics, slow_log=log)
    statement, params = POINT_SELECT
    gc.collect()
    before = rss_bytes()
    started = time.perf_counter()
    for _ in range(n):
        conn.execute(statement, params)
    seconds = time.perf_counter() - started
    grown = rss_bytes() - before
    log.flush()
    uninstrument(engine)

    def value(name: str) -> int:  # summed over label sets
        return int(sum(s.value for m in registry.collect() for s in m.samples if s.name == name))

    slow = value("slow_queries_total")
    dropped = value("slow_query_log_dropped_total")
    limited = value("slow_query_log_rate_limited_total")
    with open(log.settings.file or os.devnull) as written:
        lines = sum(1 for _ in written)
    print(
        f"storm        {n:,} slow statements in {seconds:.1f} s ({n / seconds:,.0f}/s): "
        f"RSS +{grown / 2**20:.1f} MiB; slow_queries_total {slow:,}, written {lines:,}, "
        f"dropped (queue full) {dropped:,}, rate-limited {limited:,}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--storm", type=int, default=100_000)
    args = parser.parse_args()
    with database() as url, tempfile.TemporaryDirectory() as scratch:
        prepare(url)
        engine = create_engine(sync_url(url))
        with engine.connect() as conn:
            for label, case, threshold, n in (
                ("threshold 0", POINT_SELECT, 0.0, args.queries),
                ("degraded database", DEGRADED, 1.0, args.queries // 10),
            ):
                out = os.path.join(scratch, f"{threshold}.jsonl")
                metrics = Metrics(CollectorRegistry())
                log = file_log(metrics, out, threshold_ms=threshold)
                ratio, off, on = throughput(conn, metrics, log, case, n, args.rounds)
                print(
                    f"{label:18} throughput log on / log off {ratio:.3f} (wall); CPU per "
                    f"statement off {off:6.1f} us, on {on:6.1f} us: on / off {off / on:.3f}",
                    flush=True,
                )
                log.close()
            out = os.path.join(scratch, "storm.jsonl")
            metrics = Metrics(CollectorRegistry())
            log = file_log(metrics, out, threshold_ms=0, file_max_bytes=2**31 - 1)  # lines counted
            storm(conn, metrics, log, args.storm)
            log.close()
        engine.dispose()


if __name__ == "__main__":
    main()

"""What handing slow-query records over to the sidecar costs a worker, with the sidecar absent
and with it present and reading.

    .venv/bin/python bench/handover_cost.py [--rounds 9] [--queries 2000]

Every statement is slow (threshold 0, no record rate limit), so each one produces a record: the
worst case for the hand-over. One process runs `SELECT 1` on a held psycopg connection through
three slow-query logs, switched between rounds (medians of per-round figures):

- "no hand-over": records written to a file sink only (the baseline of each round);
- "hand-over": the same, and handed over to the hand-over directory;

first with the sidecar absent (no one reading the directory), then with `db-exporter serve`
running beside it, merging the files.

Per statement it reports the process's CPU time (every thread: the query path and the writer
thread that appends to the hand-over file) and wall time, including the wait for the writer to
finish (`flush()`); then, for each phase, the median over rounds of hand-over against the
baseline of the same round, and the absent phase's ratio against the present one's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable

from instrumentation_overhead import database  # bench/ is on the path
from prometheus_client import CollectorRegistry
from sqlalchemy import create_engine, text

from exporter import Metrics, instrument, uninstrument
from exporter.dsn import sync_url
from exporter.inprocess_settings import PlanSettings, SlowQuerySettings
from exporter.slowlog import SlowQueryLog


def slow_log(directory: str, handover: bool) -> SlowQueryLog:
    settings = SlowQuerySettings(
        threshold_ms=0,
        records_per_second=0,
        stdout=False,
        file=os.path.join(directory, f"records-{handover}.jsonl"),
        file_max_bytes=64 * 1024 * 1024,
        handover=handover,
        handover_dir=os.path.join(directory, "handover"),
        plans=PlanSettings(enabled=False),
    )
    return SlowQueryLog(settings, Metrics(CollectorRegistry()))


def per_statement(run: Callable[[], None], n: int, log: SlowQueryLog) -> tuple[float, float]:
    """(CPU, wall) microseconds per statement, the writer's work included."""
    cpu, wall = time.process_time_ns(), time.perf_counter_ns()
    for _ in range(n):
        run()
    log.flush()
    return (time.process_time_ns() - cpu) / n / 1000, (time.perf_counter_ns() - wall) / n / 1000


def measure(url: str, directory: str, rounds: int, n: int) -> dict[str, list[tuple[float, float]]]:
    engine = create_engine(sync_url(url))
    logs = {"no hand-over": slow_log(directory, False), "hand-over": slow_log(directory, True)}
    found: dict[str, list[tuple[float, float]]] = {name: [] for name in logs}
    with engine.connect() as conn:
        statement = text("SELECT 1")
        for round_ in range(rounds):
            order = list(logs) if round_ % 2 == 0 else list(reversed(logs))
            for name in order:
                instrument(engine, metrics=Metrics(CollectorRegistry()), slow_log=logs[name])
                found[name].append(per_statement(lambda: conn.execute(statement), n, logs[name]))
                uninstrument(engine)
    for log in logs.values():
        log.close()
    engine.dispose()
    return found


def sidecar(url: str, directory: str) -> subprocess.Popen[bytes]:
    port = 19188 + os.getpid() % 1000
    env = os.environ | {
        "DATABASE_URL": url,
        "DB_EXPORTER_SLOW_QUERIES__HANDOVER_DIR": os.path.join(directory, "handover"),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "exporter", "serve", "--listen", f"127.0.0.1:{port}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(200):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("the sidecar did not start")


def median(timings: list[tuple[float, float]], i: int) -> float:
    return statistics.median(t[i] for t in timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--queries", type=int, default=2000)
    args = parser.parse_args()
    with database() as url, tempfile.TemporaryDirectory() as directory:
        absent = measure(url, directory, args.rounds, args.queries)
        process = sidecar(url, directory)
        try:
            present = measure(url, directory, args.rounds, args.queries)
        finally:
            process.terminate()
            process.wait()
    print(f"every statement a record; {args.rounds} rounds x {args.queries} SELECT 1 (psycopg)")
    print(f"{'':34}{'CPU us/stmt':>14}{'wall us/stmt':>14}")
    ratios = {}
    for phase, found in (("sidecar absent", absent), ("sidecar present", present)):
        for name, timings in found.items():
            label = f"{phase}: {name}"
            print(f"{label:34}{median(timings, 0):14.1f}{median(timings, 1):14.1f}")
        # Each round's hand-over against its own baseline: the machine's load cancels out.
        pairs = list(zip(found["hand-over"], found["no hand-over"], strict=True))
        ratios[phase] = [statistics.median(h[i] / b[i] for h, b in pairs) for i in (0, 1)]
    for phase, (cpu, wall) in ratios.items():
        print(f"{phase}: hand-over / no hand-over  CPU x{cpu:.2f}, wall x{wall:.2f}")
    (absent_cpu, absent_wall), (present_cpu, present_wall) = ratios.values()
    print(
        f"sidecar absent / present: CPU x{absent_cpu / present_cpu:.2f}, "
        f"wall x{absent_wall / present_wall:.2f}"
    )


if __name__ == "__main__":
    main()

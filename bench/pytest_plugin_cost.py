"""What the pytest plugin costs a test run: this project's own tests with the plugin off (only
installed) and on (`--db-queries` with a JSON report), what importing its entry point costs
every pytest run (the plugin installed, not enabled), and what the recorder costs per statement.

    .venv/bin/python bench/pytest_plugin_cost.py [--rounds 3] [TEST PATH ...]

Each round runs the suite subset once each way, in alternating order, as a child pytest; the
figures are the medians over rounds of its wall time and its CPU time (user + system, from the
child's resource usage: less sensitive to a busy machine), and the ratio on / off.
Default subset: tests/test_query_telemetry.py, the file CI runs with the plugin on (10,070
statements, 10,000 of them in one test). Uses TEST_DATABASE_URL (else the suite's embedded
server).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUBSET = ["tests/test_query_telemetry.py"]
# pytest has loaded itself when it imports the entry point: only what the import adds counts.
IMPORT = (
    "import time, pytest; t = time.process_time(); import {module}; print(time.process_time() - t)"
)


def run(args: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one child."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def import_cost(module: str, rounds: int = 7) -> float:
    """Median CPU seconds of importing `module` in a fresh interpreter that has pytest."""
    times = []
    for _ in range(rounds):
        code = IMPORT.format(module=module)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        times.append(float(out.stdout))
    return statistics.median(times)


def observer_cost(n: int = 100_000) -> float:
    """CPU seconds the recorder spends per statement it is shown (a repeated SELECT inside a
    test: the N+1 path included), without the database."""
    from exporter.integrations.query_recorder import Limits, Recorder
    from exporter.sql import identify

    recorder = Recorder(Limits(), str(ROOT))
    identity = identify("SELECT name FROM items WHERE id = 1", True)
    recorder.start()
    start = time.process_time()
    for _ in range(n):
        recorder(identity, 0.001, None, True)
    return (time.process_time() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("tests", nargs="*", default=SUBSET)
    args = parser.parse_args()
    entry = import_cost("exporter.integrations.pytest_plugin")
    instrument = import_cost("exporter.instrumentation")
    print(f"entry point import (plugin off, every pytest run): {entry * 1000:6.1f} ms CPU")
    print(f"  beside importing the instrumentation:            {instrument * 1000:6.1f} ms CPU")
    print(f"the recorder, per statement shown to it:           {observer_cost() * 1e6:6.2f} us CPU")
    pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args.tests]
    figures: dict[str, list[tuple[float, float]]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "queries.json")
        variants = {"off": pytest, "on": [*pytest, "--db-queries", f"--db-queries-report={report}"]}
        for round_ in range(args.rounds):
            order = ["off", "on"] if round_ % 2 == 0 else ["on", "off"]
            for name in order:
                figures[name].append(run(variants[name]))
    off_wall, off_cpu = (statistics.median(f[i] for f in figures["off"]) for i in (0, 1))
    on_wall, on_cpu = (statistics.median(f[i] for f in figures["on"]) for i in (0, 1))
    print(f"suite subset: {' '.join(args.tests)} ({args.rounds} rounds, medians)")
    print(f"  plugin off: {off_wall:7.2f} s wall  {off_cpu:7.2f} s CPU")
    print(f"  plugin on:  {on_wall:7.2f} s wall  {on_cpu:7.2f} s CPU")
    print(f"  on / off:   {on_wall / off_wall:7.3f} wall    {on_cpu / off_cpu:7.3f} CPU")


if __name__ == "__main__":
    main()

"""`db-exporter slowlog` on a large log: peak memory and throughput.

    .venv/bin/python bench/slowlog_report.py [--megabytes 200] [--fingerprints 2000]

Writes a log of slow-query records as the slow-query log writes them (a few thousand
fingerprints, one in fifty an N+1 warning, one line in a hundred other output), and a tenth of
that size, then runs the command on each in a fresh process and prints its peak RSS and
throughput. Bounded memory shows as the same peak for both sizes. Baselines: `db-exporter
--version` (the command's start-up, which the throughput figures include) and a process that
only reads the file line by line. No database needed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta

MB = 1024 * 1024


def record(rng: random.Random, fingerprints: int, at: datetime) -> dict[str, object]:
    n = rng.randrange(fingerprints)
    kind = "n_plus_one" if n % 50 == 0 else "slow_query"
    return {
        "time": at.isoformat(timespec="milliseconds"),
        "kind": kind,
        "database": "main" if n % 3 else "replica",
        "duration_ms": round(rng.lognormvariate(5, 1), 3),
        "status": "ok",
        "operation": "SELECT",
        "table": f"table_{n % 40}",
        "fingerprint": f"{n:016x}",
        "sql": f"SELECT a, b, c FROM table_{n % 40} WHERE id = $1 AND kind_{n} = $2",
        "call_site": {"file": f"app/views_{n % 25}.py", "line": n % 400, "function": "handler"},
        "parameters": {"id": {"type": "int"}, "kind": {"type": "str", "length": 8}},
        "context": {"route": f"/items/{{id}}/{n % 30}", "request_id": f"{rng.getrandbits(64):x}"},
        "rows": 1,
        "pool_wait_ms": 0.05,
        **({"repeats": 10} if kind == "n_plus_one" else {}),
    }


def write_log(path: str, megabytes: int, fingerprints: int) -> None:
    rng = random.Random(13)
    start = datetime(2026, 11, 24, tzinfo=UTC)
    written = 0
    with open(path, "w") as out:
        while written < megabytes * MB:
            batch = []
            for i in range(1000):
                at = start + timedelta(milliseconds=written // 100 + i)
                if i % 100 == 99:
                    batch.append("2026-11-24T00:00:00Z INFO app: request served")
                else:
                    batch.append(json.dumps(record(rng, fingerprints, at)))
            text = "\n".join(batch) + "\n"
            out.write(text)
            written += len(text)


def run(command: list[str]) -> tuple[float, int]:
    """(wall seconds, peak RSS in kB) of `command` in a child process of its own."""
    probe = (
        "import resource, subprocess, sys, time\n"
        "t = time.perf_counter()\n"
        "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)\n"
        "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, *command], check=True, capture_output=True, text=True
    ).stdout.split()
    return float(out[0]), int(out[1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--megabytes", type=int, default=200)
    parser.add_argument("--fingerprints", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        small, large = os.path.join(tmp, "small.jsonl"), os.path.join(tmp, "large.jsonl")
        began = time.perf_counter()
        write_log(small, max(1, args.megabytes // 10), args.fingerprints)
        write_log(large, args.megabytes, args.fingerprints)
        print(f"wrote {args.megabytes} MB in {time.perf_counter() - began:.0f} s")
        read_only = "import sys\nfor _ in open(sys.argv[1], 'rb'): pass"
        seconds, rss = run([sys.executable, "-m", "exporter", "--version"])
        print(f"start-up (--version)     peak RSS {rss / 1024:6.1f} MB  ({seconds:.1f} s)")
        for path in (small, large):
            size = os.path.getsize(path) / MB
            baseline = run([sys.executable, "-c", read_only, path])
            report = run([sys.executable, "-m", "exporter", "slowlog", path, "--top", "50"])
            as_json = run([sys.executable, "-m", "exporter", "slowlog", path, "--json"])
            for name, (seconds, rss) in (
                ("read lines only", baseline),
                ("slowlog", report),
                ("slowlog --json", as_json),
            ):
                print(
                    f"{size:7.0f} MB  {name:<16} peak RSS {rss / 1024:6.1f} MB  "
                    f"{size / seconds:6.1f} MB/s  ({seconds:.1f} s)"
                )


if __name__ == "__main__":
    main()

"""The on-call page (`GET /`) with 10,000 slow-query records kept: how long it takes to answer.

    .venv/bin/python bench/oncall_page.py [--records 10000] [--requests 30]

Fills the slow-query log's ring buffer with records as the writer keeps them (the generator of
`slowlog_report.py`; one in fifty an N+1 warning), every fingerprint's aggregate, and a
20-node plan with findings for each, then asks an exporter on 127.0.0.1 for `/` over HTTP
(window `all`: every record counts) for a few shapes of log: a few thousand fingerprints, one
fingerprint holding every record, every record its own fingerprint. Prints the median and
worst answer time and the median CPU time of one rendering (the figure a busy machine
disturbs least), beside `/slow-queries?limit=100` (the JSON
of the same log, a baseline that does little) in the same run. Goal: under 50 ms. No database.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry
from slowlog_report import record

from exporter import Exporter, Metrics
from exporter.bounded import size_of
from exporter.oncall.query import PageQuery
from exporter.settings import SlowQuerySettings
from exporter.slowlog import SlowQueryLog


def plan(depth: int = 20) -> list[dict[str, Any]]:
    """A chain of nested loops over a large sequential scan: findings at several nodes."""
    node: dict[str, Any] = {
        "Node Type": "Seq Scan", "Relation Name": "ledger_entries", "Plan Rows": 50000,
        "Startup Cost": 0.0, "Total Cost": 1234.5, "Filter": "(account_id = $1)",
        "Actual Rows": 5000.0, "Actual Loops": 1, "Rows Removed by Filter": 45000.0,
    }  # fmt: skip
    for level in range(depth - 1):
        node = {
            "Node Type": "Nested Loop", "Plan Rows": 10, "Startup Cost": 0.0,
            "Total Cost": 2000.0 + level, "Actual Rows": 5000.0, "Actual Loops": 1,
            "Plans": [node, {
                "Node Type": "Index Scan", "Relation Name": f"table_{level}",
                "Index Name": f"ix_table_{level}_id", "Plan Rows": 1, "Startup Cost": 0.29,
                "Total Cost": 8.3, "Index Cond": "(id = ledger_entries.account_id)",
                "Actual Rows": 1.0, "Actual Loops": 5000,
            }],
        }  # fmt: skip
    return [{"Plan": node, "Planning Time": 0.2, "Execution Time": 120.0}]


def filled_log(records: int, fingerprints: int) -> SlowQueryLog:
    settings = SlowQuerySettings(
        stdout=False,
        ring_buffer_size=records,
        ring_buffer_max_bytes=1024 * 1024 * 1024,
        max_fingerprints=max(fingerprints, 1),
        fingerprints_max_bytes=1024 * 1024 * 1024,
    )
    log = SlowQueryLog(settings, Metrics(CollectorRegistry()))
    rng = random.Random(13)
    start = datetime.now(UTC) - timedelta(minutes=30)
    the_plan = plan()
    for i in range(records):
        data = record(rng, fingerprints, start + timedelta(milliseconds=i * 150))
        if fingerprints >= records:  # every record its own fingerprint
            data["fingerprint"] = f"{i:016x}"
        size = size_of(data)
        log.ring.append(data, size)
        if data["kind"] == "slow_query":
            log.aggregates.add(data, size)
            log.aggregates.set_plan(
                str(data["database"]), str(data["fingerprint"]), the_plan, "Nested Loop",
                {"ledger_entries": 50000.0},
            )  # fmt: skip
    return log


async def timed_gets(url: str, requests: int) -> list[float]:
    times = []
    async with aiohttp.ClientSession() as session:
        for _ in range(requests):
            started = time.perf_counter()
            async with session.get(url) as response:
                body = await response.read()
            times.append((time.perf_counter() - started) * 1000)
            assert response.status == 200, (response.status, body[:200])
    return times


async def measure(records: int, fingerprints: int, requests: int) -> None:
    log = filled_log(records, fingerprints)
    exporter = Exporter(listen="127.0.0.1:0", metrics=Metrics(CollectorRegistry()), slow_log=log)
    await exporter.start()
    try:
        page = await timed_gets(f"{exporter.url}/?window=all", requests)
        baseline = await timed_gets(f"{exporter.url}/slow-queries?limit=100", requests)
    finally:
        await exporter.stop()
    from exporter.oncall.web import ONCALL_PAGE

    renderer = exporter._app[ONCALL_PAGE]
    cpu_times = []
    for _ in range(10):
        cpu = time.process_time()
        renderer.render(PageQuery("all", None))
        cpu_times.append((time.process_time() - cpu) * 1000)
    cpu_ms = statistics.median(cpu_times)
    shape = f"{records:,} records, {fingerprints:,} fingerprints"
    median, baseline_median = statistics.median(page), statistics.median(baseline)
    print(
        f"{shape:<38} GET /: median {median:6.1f} ms, worst {max(page):6.1f} ms,"
        f" render CPU {cpu_ms:5.1f} ms | /slow-queries median {baseline_median:5.1f} ms"
        f" | ratio {median / baseline_median:4.1f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=30)
    args = parser.parse_args()
    load = ", ".join(f"{n:.1f}" for n in os.getloadavg())
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {load};"
        f" goal: GET / under 50 ms with {args.records:,} records"
    )
    for fingerprints in (2000, 1, args.records):
        asyncio.run(measure(args.records, fingerprints, args.requests))


if __name__ == "__main__":
    main()

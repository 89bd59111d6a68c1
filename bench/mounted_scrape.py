"""Benchmark: `/metrics` of the endpoints an application serves from its own port (ASGI), with
every collector on 1,200 indexes, plain and gzipped, beside the sidecar.

    .venv/bin/python bench/mounted_scrape.py [--url URL] [--scrapes N]

Loads `../shared/bench/many-indexes.sql` into a scratch database (as bench/collectors_scrape.py
does, whose helpers this uses), then serves `ExporterEndpoints` with every collector under
uvicorn in this process's event loop, and the sidecar's aiohttp app after it. Each is scraped N
times per format from a separate process while a 1 ms ticker in the serving loop records the
longest stall. Prints the scrape times, the bytes on the wire and the ratios of gzipped to
plain; asserts nothing. The scratch database is dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import tempfile
import time
import urllib.request
from typing import Any

import uvicorn
from collectors_scrape import (
    FORMATS,
    PROMETHEUS_ACCEPT,
    StallMeter,
    every_collector,
    load_schema,
    median_ms,
    row,
    scrape,
    serve_and_scrape,
)
from prometheus_client import CollectorRegistry
from scratch import scratch_database
from sqlalchemy.engine import URL, make_url

from exporter.integrations.asgi_endpoints import ExporterEndpoints
from exporter.metrics import Metrics
from exporter.settings import DatabaseSettings


def succeeded(metrics: Metrics, collector: str) -> bool:
    labels = {"collector": collector, "database": "bench"}
    return metrics.registry.get_sample_value("exporter_collector_success", labels) == 1


def wire_bytes(port: int, use_gzip: bool) -> int:
    headers = {"Accept": PROMETHEUS_ACCEPT} | ({"Accept-Encoding": "gzip"} if use_gzip else {})
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers=headers)
    with urllib.request.urlopen(request, timeout=60) as response:
        return len(response.read())


async def mounted(
    target: URL, scrapes: int, collectors: dict[str, dict[str, Any]]
) -> tuple[list[str], dict[str, dict[str, Any]]]:
    database = DatabaseSettings(
        name="bench", dsn=target.render_as_string(hide_password=False), collectors=collectors
    )
    metrics = Metrics(CollectorRegistry())
    endpoints = ExporterEndpoints(databases=[database], metrics=metrics)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(endpoints, log_level="warning", lifespan="on"))
    serving = asyncio.create_task(server.serve(sockets=[listener]))
    lines, results = [], {}
    try:
        names = [job.collector.name for job in endpoints.runner.workers[0].jobs]
        deadline = time.monotonic() + 120
        while not (server.started and all(succeeded(metrics, name) for name in names)):
            if time.monotonic() > deadline:
                raise RuntimeError("the collectors never all succeeded")
            await asyncio.sleep(0.1)
        meter = StallMeter()
        for name, accept, use_gzip in FORMATS:
            result, stall = await scrape(port, scrapes, accept, use_gzip, meter)
            results[name] = result
            lines.append(row(f"  {name}", result, stall))
        plain = await asyncio.to_thread(wire_bytes, port, False)
        gzipped = await asyncio.to_thread(wire_bytes, port, True)
        lines.append(
            f"  on the wire, OpenMetrics: {plain / 1024:.0f} KiB plain, "
            f"{gzipped / 1024:.0f} KiB gzipped (ratio {gzipped / plain:.3f})"
        )
    finally:
        server.should_exit = True
        await serving
    return lines, results


async def run(url: URL, scrapes: int) -> None:
    with scratch_database(url, "mounted") as target:
        load_schema(target)
        with tempfile.TemporaryDirectory(prefix="dbx-bench-backups-") as backups:
            collectors = every_collector(backups)
            lines, mine = await mounted(target, scrapes, collectors)
            sidecar: dict[tuple[str, str], dict[str, Any]] = {}
            sidecar_lines: list[str] = []
            await serve_and_scrape(target, scrapes, collectors, sidecar, sidecar_lines, "sidecar")
    print(f"\n/metrics, every collector, {scrapes} scrapes each after one warm-up")
    print(f"{'':<56} {'median ms':>9} {'p95 ms':>9} {'stall ms':>9} {'series':>8} {'KiB':>8}")
    print("mounted (ASGI, uvicorn):")
    print("\n".join(lines))
    print("sidecar (aiohttp):")
    print("\n".join(sidecar_lines))
    prometheus = "OpenMetrics + gzip (Prometheus)"
    print(
        f"ratio mounted gzipped / mounted plain (OpenMetrics): "
        f"{median_ms(mine[prometheus]) / median_ms(mine['OpenMetrics']):.2f}\n"
        f"ratio mounted / sidecar, as Prometheus scrapes: "
        f"{median_ms(mine[prometheus]) / median_ms(sidecar[('sidecar', prometheus)]):.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default = os.environ.get("BENCH_DATABASE_URL") or os.environ.get("TEST_DATABASE_URL")
    parser.add_argument("--url", default=default or "postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--scrapes", type=int, default=30)
    args = parser.parse_args()
    asyncio.run(run(make_url(args.url), args.scrapes))


if __name__ == "__main__":
    main()

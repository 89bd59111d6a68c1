"""Several worker processes, each with its own pool: one scrape returns the sum over workers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import URL

from exporter.dsn import sync_url

WORKER = """
import sys
from sqlalchemy import create_engine, text
from exporter import instrument
from exporter.integrations.request import RequestFields, request_scope

engine = create_engine(sys.argv[1], pool_size=2)
instrument(engine, database="main")
with engine.connect() as first, engine.connect() as second:
    for _ in range(25):
        first.execute(text("SELECT count(*) FROM pg_database"))
    second.execute(text("SELECT count(*) FROM pg_database"))
    with request_scope(RequestFields(lambda: "/report", method="GET")):
        for _ in range(3):
            first.execute(text("SELECT count(*) FROM pg_database"))
    print("ready", flush=True)
    sys.stdin.readline()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(url, timeout=5) as response:
        body = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def test_one_scrape_sums_every_worker(tmp_path: Path, database_url: URL) -> None:
    directory = tmp_path / "prometheus"
    directory.mkdir()
    env = os.environ | {"PROMETHEUS_MULTIPROC_DIR": str(directory)}
    dsn = sync_url(database_url).render_as_string(hide_password=False)
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, dsn],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    config = tmp_path / "exporter.yaml"
    config.write_text("log_level: INFO\n")
    port = free_port()
    sidecar = subprocess.Popen(
        [sys.executable, "-m", "exporter", "serve", "--config", str(config),
         "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    try:
        for worker in workers:
            assert worker.stdout is not None
            assert worker.stdout.readline().strip() == "ready"
        assert sidecar.stdout is not None
        assert "serving" in sidecar.stdout.readline()
        samples = scrape(f"http://127.0.0.1:{port}/metrics")
        main = frozenset({("database", "main")})
        ok = main | {("operation", "SELECT"), ("table", "pg_database"), ("status", "ok")}
        assert samples[("query_duration_seconds_count", ok)] == 2 * 29
        report = frozenset({("route", "/report")})
        assert samples[("db_request_statements_count", report)] == 2 * 1
        assert samples[("db_request_statements_sum", report)] == 2 * 3
        assert samples[("db_connections_active", main)] == 2 * 2
        assert samples[("db_connections_created_total", main)] == 2 * 2
    finally:
        for worker in workers:
            worker.communicate("stop\n", timeout=30)
        sidecar.terminate()
        sidecar.communicate(timeout=30)
    assert all(worker.returncode == 0 for worker in workers)
    assert sidecar.returncode == 0

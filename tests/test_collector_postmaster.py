"""The postmaster collector: when the server started."""

from __future__ import annotations

from collector_helpers import execute, run_collector
from sqlalchemy.engine import URL

from exporter.collectors.postmaster import PostmasterCollector
from exporter.settings import CollectorSettings


async def test_start_time_is_the_servers(database_url: URL) -> None:
    registry = await run_collector(PostmasterCollector("main", CollectorSettings()), database_url)
    started = execute(database_url, "SELECT extract(epoch FROM pg_postmaster_start_time())")
    assert registry.get_sample_value("pg_postmaster_start_time_seconds", {}) == float(started[0][0])

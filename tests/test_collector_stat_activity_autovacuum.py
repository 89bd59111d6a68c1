"""The stat_activity_autovacuum collector: running autovacuum workers and their tables."""

from __future__ import annotations

import pytest
from collector_helpers import (
    execute,
    refused_without_pg_monitor,
    run_collector,
    samples,
    wait_for,
)
from pg_cluster import private_cluster
from sqlalchemy.engine import URL, make_url

from exporter.collectors.stat_activity_autovacuum import StatActivityAutovacuumCollector
from exporter.settings import CollectorSettings

WORKER_ON_T = (
    "SELECT count(*) FROM pg_stat_activity"
    " WHERE backend_type = 'autovacuum worker' AND query LIKE 'autovacuum: VACUUM%public.slow%'"
)


def collector() -> StatActivityAutovacuumCollector:
    return StatActivityAutovacuumCollector("main", CollectorSettings())


async def test_a_running_worker_is_reported_by_table_with_its_start() -> None:
    # Autovacuum wakes every second; the table's own cost settings make its vacuum crawl, so
    # the worker is still there when the collector runs.
    with private_cluster("autovacuum_naptime = 1") as cluster:
        url = make_url(cluster.url)
        execute(
            url,
            "CREATE TABLE slow (id int, pad text) WITH (autovacuum_vacuum_threshold = 0,"
            " autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_cost_delay = 100,"
            " autovacuum_vacuum_cost_limit = 1)",
            "INSERT INTO slow SELECT g, repeat('x', 200) FROM generate_series(1, 50000) g",
            "DELETE FROM slow",
        )
        wait_for(url, WORKER_ON_T, 1, timeout=60)
        registry = await run_collector(collector(), url)
        started = execute(
            url,
            "SELECT extract(epoch FROM xact_start) FROM pg_stat_activity"
            " WHERE backend_type = 'autovacuum worker' AND query LIKE '%public.slow%'",
        )
    reported = samples(registry, "pg_stat_activity_autovacuum_timestamp_seconds")
    assert [labels["relname"] for labels, _ in reported] == ["slow"]
    assert reported[0][1] == float(started[0][0])


async def test_a_role_without_pg_monitor_is_told_which_grant_it_lacks(
    unprivileged_database: URL, caplog: pytest.LogCaptureFixture
) -> None:
    await refused_without_pg_monitor(
        collector(),
        unprivileged_database,
        "see the tables autovacuum workers are processing (needs pg_read_all_stats)",
        caplog,
    )

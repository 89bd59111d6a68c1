"""The activity collector: connections by state, application and wait; ages; privileges."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from collector_helpers import (
    execute,
    refused_without_pg_monitor,
    run_collector,
    samples,
    sessions,
    worker_for,
)
from prometheus_client import CollectorRegistry
from sqlalchemy.engine import URL

from exporter.collectors.activity import ActivityCollector
from exporter.collectors.database import DatabaseCollector
from exporter.settings import ActivityCollectorSettings

WAITING = (
    "SELECT count(*) FROM pg_stat_activity"
    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
)


def collector(**options: Any) -> ActivityCollector:
    return ActivityCollector("main", ActivityCollectorSettings(**options))


def counts(registry: CollectorRegistry) -> dict[tuple[str, str, str], float]:
    return {
        (labels["state"], labels["application_name"], labels["wait_event_type"]): value
        for labels, value in samples(registry, "pg_stat_activity_connections")
    }


def gauge(registry: CollectorRegistry, name: str) -> float | None:
    return registry.get_sample_value(name, {"datname": "main"})


async def test_states_waits_ages_and_the_applications_connections(fresh_database: URL) -> None:
    execute(fresh_database, "CREATE TABLE t (id int)")
    async with sessions(fresh_database, "wallet", "wallet", "wallet", "") as (a, b, _, other):
        # a holds the table in an open transaction; b waits for it (active, waiting on Lock).
        await a.execute("BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
        blocked = asyncio.create_task(b.execute("SELECT count(*) FROM t"))
        for _ in range(500):
            if await other.fetchval(WAITING) == 1:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the blocked session never waited for the lock")
        await asyncio.sleep(0.01)  # so the ages below are measurably above zero
        registry = await run_collector(collector(application_name="wallet"), fresh_database)
        await a.execute("COMMIT")
        await blocked

    assert counts(registry) == {
        ("idle in transaction", "wallet", "Client"): 1,
        ("active", "wallet", "Lock"): 1,
        ("idle", "wallet", "Client"): 1,
        ("idle", "unknown", "Client"): 1,  # the session with an empty application_name
        ("active", "db-exporter", "none"): 1,  # the collector's own connection, labelled
    }
    held = {"datname": "main", "application_name": "wallet"}
    assert registry.get_sample_value("pg_stat_activity_application_connections", held) == 3
    assert gauge(registry, "pg_stat_activity_idle_in_transaction_connections") == 1
    oldest_transaction = gauge(registry, "pg_stat_activity_oldest_transaction_age_seconds")
    oldest_query = gauge(registry, "pg_stat_activity_oldest_query_age_seconds")
    idle_age = gauge(registry, "pg_stat_activity_oldest_idle_in_transaction_age_seconds")
    assert oldest_transaction is not None
    assert oldest_query is not None
    assert idle_age is not None
    # a's transaction began before b's statement, and both before the collector ran.
    assert 0 < oldest_query < oldest_transaction < 10
    assert 0 < idle_age <= oldest_transaction
    # By state, every session's transaction counts (postgres_exporter's max_tx_duration).
    by_state = {
        labels["state"]: value
        for labels, value in samples(registry, "pg_stat_activity_max_transaction_age_seconds")
    }
    assert by_state.keys() == {"idle in transaction", "active"}
    assert by_state["idle in transaction"] == oldest_transaction
    assert 0 < by_state["active"] < oldest_transaction  # b's, or the collector's own


async def test_nothing_to_measure_reports_zero_and_leaves_the_exporter_out(
    fresh_database: URL,
) -> None:
    registry = await run_collector(collector(application_name="wallet"), fresh_database)
    assert counts(registry) == {("active", "db-exporter", "none"): 1}
    for name in (
        "pg_stat_activity_oldest_transaction_age_seconds",
        "pg_stat_activity_oldest_query_age_seconds",
        "pg_stat_activity_oldest_idle_in_transaction_age_seconds",
        "pg_stat_activity_idle_in_transaction_connections",
    ):
        assert gauge(registry, name) == 0, name
    held = {"datname": "main", "application_name": "wallet"}
    assert registry.get_sample_value("pg_stat_activity_application_connections", held) == 0
    # Without a configured application_name there is no such series.
    registry = await run_collector(collector(), fresh_database)
    assert samples(registry, "pg_stat_activity_application_connections") == []


async def test_application_names_beyond_the_cap_are_other(fresh_database: URL) -> None:
    names = ("a", "b", "b", "c", "c", "c", "wallet")
    async with sessions(fresh_database, *names):
        registry = await run_collector(
            collector(application_name="wallet", max_application_names=1), fresh_database
        )
    assert counts(registry) == {
        ("idle", "c", "Client"): 3,  # the most connected name
        ("idle", "other", "Client"): 3,  # a and b
        ("idle", "wallet", "Client"): 1,  # configured: always kept
        ("active", "db-exporter", "none"): 1,  # the exporter: always kept
    }


async def test_a_role_without_pg_monitor_is_told_which_grant_it_lacks(
    unprivileged_database: URL, caplog: pytest.LogCaptureFixture
) -> None:
    await refused_without_pg_monitor(
        collector(),
        unprivileged_database,
        "see other roles' sessions in pg_stat_activity (needs pg_read_all_stats)",
        caplog,
    )


async def test_the_grant_it_names_is_enough_and_the_others_run_meanwhile(
    registry: CollectorRegistry, fresh_database: URL, unprivileged_database: URL
) -> None:
    database = DatabaseCollector("main", DatabaseCollector.default_settings)
    async with worker_for(unprivileged_database, registry, collector(), database) as (worker, _):
        activity, other = worker.jobs
        assert await worker.check()
        assert not await worker.run_collector(activity)
        assert await worker.run_collector(other)  # on the same connection
        execute(fresh_database, f"GRANT pg_monitor TO {unprivileged_database.username}")
        assert await worker.run_collector(activity)
    labels = {"collector": "activity", "database": "main"}
    assert registry.get_sample_value("exporter_collector_success", labels) == 1
    assert samples(registry, "pg_stat_activity_connections")

"""The server_activity collector: backends of every database of a quiet private server, by
state and backend type, their oldest transactions, the cap on databases, postgres_exporter's
view and the grant it needs."""

from __future__ import annotations

from collections import Counter

import pytest
from collector_helpers import (
    execute,
    login_role,
    refused_without_pg_monitor,
    run_collector,
    samples,
    sessions,
)
from prometheus_client import CollectorRegistry
from sqlalchemy.engine import URL

from exporter.collectors.compatibility import postgres_exporter_view
from exporter.collectors.server_activity import STATES, ServerActivityCollector
from exporter.settings import ConfigError, ServerDatabasesCollectorSettings, settings_from_data

CONNECTIONS = "pg_stat_activity_server_connections"
MAX_AGE = "pg_stat_activity_server_max_transaction_age_seconds"
CLIENT = "client backend"


def collector(max_databases: int = 100) -> ServerActivityCollector:
    return ServerActivityCollector(
        "main", ServerDatabasesCollectorSettings(max_databases=max_databases)
    )


def clients(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    """Client backends by (datname, state)."""
    return {
        (labels["datname"], labels["state"]): value
        for labels, value in samples(registry, CONNECTIONS)
        if labels["backend_type"] == CLIENT
    }


def ages(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    return {(labels["datname"], labels["state"]): v for labels, v in samples(registry, MAX_AGE)}


async def test_every_database_by_state_with_zeros_and_oldest_transactions(
    quiet_server: URL,
) -> None:
    shop, ledger = quiet_server.set(database="shop"), quiet_server.set(database="ledger")
    async with sessions(ledger, "books") as [book], sessions(shop, "web", "web", "web") as web:
        await book.execute("BEGIN; SELECT 1")  # the oldest transaction, idle in it
        await web[0].execute("BEGIN; SELECT 1")
        registry = await run_collector(collector(), quiet_server)

    databases = {"postgres", "shop", "ledger", "template0", "template1"}
    expected = {(datname, state): 0.0 for datname in databases for state in STATES}
    expected |= {
        ("shop", "idle"): 2,
        ("shop", "idle in transaction"): 1,
        ("ledger", "idle in transaction"): 1,
        ("postgres", "active"): 1,  # the collector's own connection
    }
    assert clients(registry) == expected
    # No other kind of backend has a database on this quiet server.
    assert {labels["backend_type"] for labels, _ in samples(registry, CONNECTIONS)} == {CLIENT}

    found = ages(registry)
    assert found.keys() == {(datname, state) for datname in databases for state in STATES}
    assert found[("ledger", "idle in transaction")] > found[("shop", "idle in transaction")] > 0
    assert 0 <= found[("postgres", "active")] < found[("shop", "idle in transaction")]
    in_transactions = {("ledger", "idle in transaction"), ("shop", "idle in transaction")}
    assert {k for k, v in found.items() if v} <= in_transactions | {("postgres", "active")}


async def test_databases_beyond_the_cap_are_other_and_nothing_is_lost(quiet_server: URL) -> None:
    shop, ledger = quiet_server.set(database="shop"), quiet_server.set(database="ledger")
    async with sessions(shop, "a", "b", "c"), sessions(ledger, "d"):
        whole = await run_collector(collector(), quiet_server)
        capped = await run_collector(collector(max_databases=2), quiet_server)

    # The connected database always keeps its name, then the most connected one.
    assert {datname for datname, _ in clients(capped)} == {"postgres", "shop", "other"}
    assert clients(capped)[("other", "idle")] == 1  # ledger's, with the templates' zeros

    def by_state(registry: CollectorRegistry) -> Counter[str]:
        totals: Counter[str] = Counter()
        for (_, state), count in clients(registry).items():
            totals[state] += count
        return totals

    assert by_state(capped) == by_state(whole)
    assert ages(capped)[("other", "idle")] == 0


async def test_postgres_exporter_view_sums_backend_types_per_database_and_state(
    quiet_server: URL,
) -> None:
    shop = quiet_server.set(database="shop")
    async with sessions(shop, "web", "web"):
        families = (await run_collector(collector(), quiet_server)).collect()
        ours = list(families)
    view = postgres_exporter_view(collector(), ours, "db:5432")
    assert [f.name for f in view] == ["pg_stat_activity_count", "pg_stat_activity_max_tx_duration"]
    count, duration = view
    for family in view:
        assert {frozenset(s.labels) for s in family.samples} == {
            frozenset({"datname", "state", "server"})
        }
        assert {s.labels["server"] for s in family.samples} == {"db:5432"}
    counted = {(s.labels["datname"], s.labels["state"]): s.value for s in count.samples}
    assert counted[("shop", "idle")] == 2
    assert counted[("template0", "disabled")] == 0  # postgres_exporter's zero rows
    assert len(counted) == 5 * len(STATES)
    assert len(duration.samples) == 5 * len(STATES)


async def test_a_role_without_pg_monitor_fails_naming_the_grant(
    unprivileged_database: URL, caplog: pytest.LogCaptureFixture
) -> None:
    await refused_without_pg_monitor(
        collector(),
        unprivileged_database,
        "see other roles' sessions in pg_stat_activity (needs pg_read_all_stats)",
        caplog,
    )


async def test_the_grant_the_message_names_is_enough(quiet_server: URL) -> None:
    with login_role(quiet_server) as url:
        execute(quiet_server, f"GRANT pg_monitor TO {url.username}")
        registry = await run_collector(collector(), url)
        execute(quiet_server, f"REVOKE pg_monitor FROM {url.username}")
    assert clients(registry)[("postgres", "active")] == 1


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (0, "Input should be greater than or equal to 1"),
        (10_001, "Input should be less than or equal to 10000"),
        ("all", "Input should be a valid integer, unable to parse string as an integer"),
    ],
)
def test_a_bad_max_databases_is_one_line_naming_it(value: object, problem: str) -> None:
    for name in ("server_activity", "stat_database_conflicts", "locks"):
        collectors = {name: {"max_databases": value}}
        data = {
            "databases": [{"name": "main", "dsn": "postgresql://db/app", "collectors": collectors}]
        }
        with pytest.raises(ConfigError) as error:
            settings_from_data(data, "exporter.yaml")
        assert str(error.value) == (
            f"exporter.yaml: databases[0].collectors.{name}.max_databases: {problem}"
        )

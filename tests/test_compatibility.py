"""`compatibility: postgres_exporter`: a real server's scrape has postgres_exporter's names,
types and labels (tests/postgres_exporter_facts.py) for every group db-exporter covers; the
default mode stays clean for `promtool check metrics`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from collector_helpers import dsn
from compat_server import JOIN_LABEL, LOGICAL_SLOT, Scrape
from mounted import SIDES, raw_client
from postgres_exporter_facts import FACTS, OURS, Fact
from prom_helpers import needs_promtool, promtool
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample
from sqlalchemy.engine import URL

from exporter import Metrics
from exporter.collectors import COLLECTORS
from exporter.collectors.compatibility import postgres_exporter_view
from exporter.collectors.database import DatabaseCollector
from exporter.collectors.exposition import SnapshotStore
from exporter.collectors.server_activity import ServerActivityCollector
from exporter.settings import CollectorSettings, DatabaseSettings, ServerDatabasesCollectorSettings

Client = Callable[..., Awaitable[TestClient[Any, Any]]]


async def scrape(
    aiohttp_client: Client, url: URL, compatibility: str, side: str = "sidecar"
) -> str:
    """`/metrics` once every collector db-exporter shares with postgres_exporter has run, from
    the sidecar or the endpoints mounted in an application (tests/mounted.py)."""
    ours = {name for name in OURS.values() if name is not None and name != "runner"}
    fast = {"interval_seconds": 0.5}
    settings = DatabaseSettings.model_validate(
        {
            "name": "main",
            "dsn": dsn(url),
            "election": {"enabled": False},
            "collectors": {name: {**fast, "enabled": name in ours} for name in COLLECTORS},
        }
    )
    metrics = Metrics(CollectorRegistry())
    options = {"metrics": metrics, "databases": [settings], "compatibility": compatibility}
    async with raw_client(side, aiohttp_client, **options) as (fetch, _):
        deadline = asyncio.get_running_loop().time() + 60
        while True:
            states = {
                name: metrics.registry.get_sample_value(
                    "exporter_collector_success", {"collector": name, "database": "main"}
                )
                for name in ours
            }
            if all(state == 1 for state in states.values()):
                break
            assert asyncio.get_running_loop().time() < deadline, states
            await asyncio.sleep(0.1)
        status, _, body = await fetch("/metrics", {"Accept-Encoding": "identity"})
        assert status == 200
        return body.decode()


@pytest.mark.parametrize("side", SIDES)
async def test_postgres_exporter_names_types_and_labels(
    aiohttp_client: Client, compat_server: URL, side: str
) -> None:
    found = Scrape.parse(await scrape(aiohttp_client, compat_server, "postgres_exporter", side))
    checked: list[Fact] = []
    for group, ours in OURS.items():
        if ours is None:
            continue
        for fact in FACTS[group]:
            assert found.types.get(fact.name) == fact.type, (group, fact.name)
            samples = found.labels.get(fact.name, [])
            if not fact.may_be_empty:
                assert samples, (group, fact.name)
            expected = frozenset(fact.labels) | {JOIN_LABEL}
            assert all(names == expected for names in samples), (group, fact.name, samples)
            checked.append(fact)
    assert len(checked) >= 60  # every group db-exporter covers, not a lucky few
    # db-exporter's own names for the same series are gone in this mode.
    for name in (
        "pg_stat_database_xact_commit_total",
        "pg_stat_activity_server_connections",
        "pg_stat_database_conflicts_confl_lock_total",
        "db_up_x",
    ):
        assert name not in found.labels


async def test_postgres_exporters_views_keep_their_own_database_label(
    aiohttp_client: Client, compat_server: URL
) -> None:
    """`pg_replication_slots_*` carry the slot's database instead of the configured one, and
    only in postgres_exporter's view; the server-wide counts cover every database."""
    body = await scrape(aiohttp_client, compat_server, "postgres_exporter")
    port = compat_server.port
    assert (
        f'pg_replication_slots_active{{database="shop",server="127.0.0.1:{port}",'
        f'slot_name="{LOGICAL_SLOT}"}} 0.0\n'
    ) in body
    for datname in ("shop", "postgres", "template1"):
        assert (
            f'pg_stat_activity_count{{database="main",datname="{datname}",'
            f'server="127.0.0.1:{port}",state="idle in transaction"}}'
        ) in body
    assert "pg_replication_slots_" not in await scrape(aiohttp_client, compat_server, "default")


@needs_promtool
async def test_default_names_pass_promtool(aiohttp_client: Client, compat_server: URL) -> None:
    body = await scrape(aiohttp_client, compat_server, "default")
    assert "pg_stat_database_xact_commit_total{" in body
    assert "pg_settings_max_connections{" in body
    code, problems = promtool("check", "metrics", stdin=body)
    assert (code, problems.splitlines()) == (0, [])


def test_a_bare_counter_is_unknown_in_openmetrics_and_counter_in_text() -> None:
    # postgres_exporter's counters without _total: the text format says counter, OpenMetrics
    # (which requires _total on counters) says unknown, and the sample name is the same.
    store = SnapshotStore()
    family = Metric("pg_stat_database_xact_commit", "Commits.", "counter")
    family.samples = [Sample("pg_stat_database_xact_commit_total", {"datname": "shop"}, 5)]
    collector = DatabaseCollector("main", CollectorSettings())
    store.put("main", "database", postgres_exporter_view(collector, [family], "db:5432"))
    text = store.exposition(openmetrics=False).decode()
    assert "# TYPE pg_stat_database_xact_commit counter\n" in text
    assert 'pg_stat_database_xact_commit{database="main",datname="shop"} 5.0\n' in text
    om = store.exposition(openmetrics=True).decode()
    assert "# TYPE pg_stat_database_xact_commit unknown\n" in om


def test_labels_postgres_exporter_lacks_are_summed_away() -> None:
    name = "pg_stat_activity_server_connections"
    family = Metric(name, "Connections.", "gauge")
    family.samples = [
        Sample(name, {"datname": "d", "state": "idle", "backend_type": kind}, n)
        for kind, n in (("client backend", 2), ("walsender", 3))
    ]

    activity = ServerActivityCollector("main", ServerDatabasesCollectorSettings())
    [view] = postgres_exporter_view(activity, [family], "db:5432")
    assert [(s.name, s.labels, s.value) for s in view.samples] == [
        ("pg_stat_activity_count", {"datname": "d", "state": "idle", "server": "db:5432"}, 5)
    ]

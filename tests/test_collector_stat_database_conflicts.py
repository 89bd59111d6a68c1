"""The stat_database_conflicts collector: a real recovery conflict counted on a replica, and
the cap on databases, on the private primary and replica pair."""

from __future__ import annotations

import asyncpg
from collector_helpers import dsn, run_collector, samples
from replication_pair import Pair

from exporter.collectors.stat_database_conflicts import StatDatabaseConflictsCollector
from exporter.settings import ServerDatabasesCollectorSettings

TABLE = "dbx_conflicting"
LOCK_CONFLICTS = "SELECT confl_lock FROM pg_stat_database_conflicts WHERE datname = 'postgres'"


def collector(max_databases: int = 100) -> StatDatabaseConflictsCollector:
    settings = ServerDatabasesCollectorSettings(max_databases=max_databases)
    return StatDatabaseConflictsCollector("main", settings)


async def test_a_lock_conflict_on_the_replica_is_counted(replication_pair: Pair) -> None:
    pair = replication_pair
    pair.primary.query(f"CREATE TABLE {TABLE} (id int)")
    pair.caught_up()
    before = int(pair.replica.query(LOCK_CONFLICTS))
    # Replay cancels a conflicting query at once instead of waiting up to 30 s.
    pair.replica.query("ALTER SYSTEM SET max_standby_streaming_delay = 0")
    pair.replica.query("SELECT pg_reload_conf()")
    reader = await asyncpg.connect(dsn(pair.replica_url))
    try:
        pair.replica.wait_for("SHOW max_standby_streaming_delay", "0")
        # The replica's reader holds the table; the primary's TRUNCATE needs it exclusively.
        await reader.execute(f"BEGIN; SELECT count(*) FROM {TABLE}")
        pair.primary.query(f"TRUNCATE {TABLE}")
        pair.replica.wait_for(LOCK_CONFLICTS, str(before + 1))
    finally:
        reader.terminate()
        pair.replica.query("ALTER SYSTEM RESET max_standby_streaming_delay")
        pair.replica.query("SELECT pg_reload_conf()")
        pair.primary.query(f"DROP TABLE {TABLE}")

    registry = await run_collector(collector(), pair.replica_url)
    locks = {
        labels["datname"]: value
        for labels, value in samples(registry, "pg_stat_database_conflicts_confl_lock_total")
    }
    assert locks["postgres"] == before + 1
    assert {"template0", "template1"} <= locks.keys()
    assert registry.get_sample_value("pg_stat_database_conflicts_series_omitted") == 0
    # The primary has none of its own.
    registry = await run_collector(collector(), pair.primary_url)
    for family in registry.collect():
        assert all(s.value == 0 for s in family.samples), family.name


async def test_databases_beyond_the_cap_are_counted_not_exported(replication_pair: Pair) -> None:
    pair = replication_pair
    databases = int(pair.primary.query("SELECT count(*) FROM pg_database"))
    registry = await run_collector(collector(max_databases=1), pair.primary_url)
    for family in registry.collect():
        if family.name != "pg_stat_database_conflicts_series_omitted":
            # The connected database keeps its series.
            assert [s.labels["datname"] for s in family.samples] == ["postgres"], family.name
    omitted = registry.get_sample_value("pg_stat_database_conflicts_series_omitted")
    assert omitted == databases - 1 > 0

"""The locks collector: locks per database and mode, every mode of every database."""

from __future__ import annotations

from collections import Counter

from collector_helpers import execute, held_in_transaction, run_collector, samples
from prometheus_client import CollectorRegistry
from sqlalchemy.engine import URL

from exporter.collectors.locks import LocksCollector
from exporter.settings import ServerDatabasesCollectorSettings

MODES = {
    "accesssharelock", "rowsharelock", "rowexclusivelock", "shareupdateexclusivelock",
    "sharelock", "sharerowexclusivelock", "exclusivelock", "accessexclusivelock", "sireadlock",
}  # fmt: skip


def collector(max_databases: int = 100) -> LocksCollector:
    return LocksCollector("main", ServerDatabasesCollectorSettings(max_databases=max_databases))


def counts(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    """Locks by (datname, mode)."""
    return {(labels["datname"], labels["mode"]): v for labels, v in samples(registry, "pg_locks")}


async def test_a_held_lock_is_counted_under_its_database_and_mode(fresh_database: URL) -> None:
    execute(fresh_database, "CREATE TABLE t (id int)")
    with held_in_transaction(fresh_database, "LOCK TABLE t IN SHARE ROW EXCLUSIVE MODE"):
        registry = await run_collector(collector(), fresh_database)
    found = counts(registry)
    mine = {mode: v for (datname, mode), v in found.items() if datname == fresh_database.database}
    assert mine.keys() == MODES
    assert mine["sharerowexclusivelock"] == 1
    assert mine["exclusivelock"] == 0
    # Every database of the server, each with all nine modes (others come and go meanwhile on
    # the shared test server, so the set itself is not compared).
    per_database: dict[str, set[str]] = {}
    for datname, mode in found:
        per_database.setdefault(datname, set()).add(mode)
    assert {"postgres", "template1"} <= per_database.keys()
    assert all(modes == MODES for modes in per_database.values())


async def test_databases_beyond_the_cap_are_other_and_nothing_is_lost(quiet_server: URL) -> None:
    shop, ledger = quiet_server.set(database="shop"), quiet_server.set(database="ledger")
    execute(shop, "CREATE TABLE a (id int)", "CREATE TABLE b (id int)")
    execute(ledger, "CREATE TABLE c (id int)")
    with (
        held_in_transaction(shop, "LOCK TABLE a, b IN EXCLUSIVE MODE"),
        held_in_transaction(ledger, "LOCK TABLE c IN EXCLUSIVE MODE"),
    ):
        whole = await run_collector(collector(), quiet_server)
        capped = await run_collector(collector(max_databases=2), quiet_server)

    # The connected database always keeps its name, then the one holding the most locks.
    assert {datname for datname, _ in counts(capped)} == {"postgres", "shop", "other"}
    assert {mode for datname, mode in counts(capped) if datname == "other"} == MODES
    assert counts(capped)[("shop", "exclusivelock")] == 2
    assert counts(capped)[("other", "exclusivelock")] == 1  # ledger's, with the templates' zeros

    def by_mode(registry: CollectorRegistry) -> Counter[str]:
        # The collector's own locks in postgres are left out: they are its query's.
        totals: Counter[str] = Counter()
        for (datname, mode), count in counts(registry).items():
            if datname != "postgres":
                totals[mode] += int(count)
        return totals

    assert by_mode(capped) == by_mode(whole)
    assert sum(by_mode(whole).values()) >= 3

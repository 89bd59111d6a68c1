"""The locks collector: locks per database and mode, every mode of every database."""

from __future__ import annotations

from collector_helpers import execute, held_in_transaction, run_collector, samples
from sqlalchemy.engine import URL

from exporter.collectors.locks import LocksCollector
from exporter.settings import CollectorSettings

MODES = {
    "accesssharelock", "rowsharelock", "rowexclusivelock", "shareupdateexclusivelock",
    "sharelock", "sharerowexclusivelock", "exclusivelock", "accessexclusivelock", "sireadlock",
}  # fmt: skip


async def test_a_held_lock_is_counted_under_its_database_and_mode(fresh_database: URL) -> None:
    execute(fresh_database, "CREATE TABLE t (id int)")
    with held_in_transaction(fresh_database, "LOCK TABLE t IN SHARE ROW EXCLUSIVE MODE"):
        registry = await run_collector(LocksCollector("main", CollectorSettings()), fresh_database)
    counts = {
        (labels["datname"], labels["mode"]): value
        for labels, value in samples(registry, "pg_locks")
    }
    mine = {mode: v for (datname, mode), v in counts.items() if datname == fresh_database.database}
    assert mine.keys() == MODES
    assert mine["sharerowexclusivelock"] == 1
    assert mine["exclusivelock"] == 0
    # Every database of the server, each with all nine modes (others come and go meanwhile on
    # the shared test server, so the set itself is not compared).
    per_database: dict[str, set[str]] = {}
    for datname, mode in counts:
        per_database.setdefault(datname, set()).add(mode)
    assert {"postgres", "template1"} <= per_database.keys()
    assert all(modes == MODES for modes in per_database.values())

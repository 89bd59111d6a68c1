"""The database_wraparound collector: transaction-ID ages of every database."""

from __future__ import annotations

from collector_helpers import by_label, execute, run_collector
from sqlalchemy.engine import URL

from exporter.collectors.database_wraparound import DatabaseWraparoundCollector
from exporter.settings import CollectorSettings

AGES = (
    "SELECT datname, age(datfrozenxid), mxid_age(datminmxid) FROM pg_database"
    " WHERE datallowconn ORDER BY datname"
)


async def test_ages_of_every_database_that_accepts_connections(fresh_database: URL) -> None:
    before = {row[0]: row[1:] for row in execute(fresh_database, AGES)}
    collector = DatabaseWraparoundCollector("main", CollectorSettings())
    registry = await run_collector(collector, fresh_database)
    after = {row[0]: row[1:] for row in execute(fresh_database, AGES)}
    frozen = by_label(registry, "pg_database_wraparound_age_datfrozenxid", "datname")
    multi = by_label(registry, "pg_database_wraparound_age_datminmxid", "datname")
    assert fresh_database.database in frozen
    assert "template0" not in frozen  # datallowconn is false
    assert frozen.keys() == multi.keys() == before.keys() | after.keys()
    # Other sessions' transactions age them meanwhile: between the two readings.
    for datname, value in frozen.items():
        assert before[datname][0] <= value <= after[datname][0], datname
    for datname, value in multi.items():
        assert before[datname][1] <= value <= after[datname][1], datname

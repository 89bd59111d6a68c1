"""The statio_user_tables collector against real tables: blocks read then hit in every part
(heap, indexes, TOAST, TOAST index), NULL parts as 0, the series cap, privileges and locks."""

from __future__ import annotations

import pytest
from collector_helpers import (
    by_label,
    execute,
    held_in_transaction,
    login_role,
    run_collector,
    uncached_copy,
    wait_for,
)
from prometheus_client import CollectorRegistry
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from exporter.collectors.statio_user_tables import StatioUserTablesCollector
from exporter.settings import StatioUserTablesCollectorSettings

COLUMNS = [
    f"{part}_blks_{kind}" for part in ("heap", "idx", "toast", "tidx") for kind in ("read", "hit")
]
VIEW = f"SELECT {', '.join(COLUMNS)} FROM pg_statio_user_tables WHERE relname = '{{}}'"
FLUSH = "SELECT pg_stat_force_next_flush()"
OMITTED = "pg_statio_user_tables_series_omitted"


def collector(**options: int) -> StatioUserTablesCollector:
    return StatioUserTablesCollector("main", StatioUserTablesCollectorSettings(**options))


def exported(registry: CollectorRegistry, relname: str) -> dict[str, float]:
    """The table's eight counters, by the view's column name."""
    found = {}
    for column in COLUMNS:
        part, _, kind = column.split("_")
        name = f"pg_statio_user_tables_{part}_blocks_{kind}_total"
        found[column] = by_label(registry, name, "relname")[relname]
    return found


def tables(registry: CollectorRegistry) -> set[str]:
    return set(by_label(registry, "pg_statio_user_tables_heap_blocks_read_total", "relname"))


async def test_blocks_read_then_hit_in_every_part(fresh_database: URL) -> None:
    execute(
        fresh_database,
        # No autovacuum: nothing but the test reads these tables.
        "CREATE TABLE t (id int PRIMARY KEY, body text) WITH (autovacuum_enabled = false)",
        "ALTER TABLE t ALTER body SET STORAGE EXTERNAL",  # out of line, uncompressed
        "INSERT INTO t SELECT g, repeat('x', 4000) FROM generate_series(1, 20) g",
        # Only fixed-width columns and no index: no TOAST table, no index (NULLs in the view).
        "CREATE TABLE plain (n int) WITH (autovacuum_enabled = false)",
        "INSERT INTO plain VALUES (1)",
    )
    read_body = (
        "SET enable_seqscan = off",
        "SELECT length(body) FROM t WHERE id = 7",  # index, heap, TOAST index, TOAST table
        FLUSH,
    )
    with uncached_copy(fresh_database) as copy:
        execute(copy, *read_body)
        wait_for(
            copy, "SELECT tidx_blks_read > 0 FROM pg_statio_user_tables WHERE relname = 't'", True
        )
        registry = await run_collector(collector(), copy)
        first = exported(registry, "t")
        assert first == dict(zip(COLUMNS, execute(copy, VIEW.format("t"))[0], strict=True))
        # The copy's blocks were in no buffer: each part was read from disk once.
        assert all(first[f"{part}_blks_read"] >= 1 for part in ("heap", "idx", "toast", "tidx"))

        execute(copy, *read_body)  # the same blocks, now in shared buffers
        wait_for(
            copy, "SELECT tidx_blks_hit > 0 FROM pg_statio_user_tables WHERE relname = 't'", True
        )
        second = exported(await run_collector(collector(), copy), "t")
        for part in ("heap", "idx", "toast", "tidx"):
            assert second[f"{part}_blks_read"] == first[f"{part}_blks_read"], part
            assert second[f"{part}_blks_hit"] > first[f"{part}_blks_hit"], part

        # postgres_exporter's rule: a part the table lacks (NULL in the view) is 0.
        assert execute(copy, VIEW.format("plain"))[0][2:] == (None,) * 6
        assert exported(registry, "plain") == dict.fromkeys(COLUMNS, 0.0)
        assert registry.get_sample_value(OMITTED, {"datname": "main"}) == 0


async def test_the_cap_takes_the_most_read_and_the_most_hit_alternately(
    fresh_database: URL,
) -> None:
    execute(
        fresh_database,
        "CREATE TABLE a_idle (n int)",  # first by name, never read
        "CREATE TABLE big (n int)",  # the most blocks read
        "INSERT INTO big SELECT generate_series(1, 20000)",
        "CREATE TABLE mid (n int)",  # the second most read, never hit
        "INSERT INTO mid SELECT generate_series(1, 5000)",
        "CREATE TABLE busy (n int)",  # one block, read once then hit: the most hits
        "INSERT INTO busy VALUES (1)",
    )
    with uncached_copy(fresh_database) as copy:
        execute(
            copy,
            "SELECT count(*) FROM big",
            "SELECT count(*) FROM mid",
            *["SELECT count(*) FROM busy"] * 20,
            FLUSH,
        )
        wait_for(
            copy,
            "SELECT heap_blks_hit >= 19 FROM pg_statio_user_tables WHERE relname = 'busy'",
            True,
        )
        reads = dict(execute(copy, "SELECT relname, heap_blks_read FROM pg_statio_user_tables"))
        assert reads["big"] > reads["mid"] > reads["busy"] > reads["a_idle"] == 0

        one = await run_collector(collector(max_table_series=1), copy)
        assert tables(one) == {"big"}
        assert one.get_sample_value(OMITTED, {"datname": "main"}) == 3
        # Not the two most read (big, mid): the most read, then the most hit.
        two = await run_collector(collector(max_table_series=2), copy)
        assert tables(two) == {"big", "busy"}
        assert two.get_sample_value(OMITTED, {"datname": "main"}) == 2
        none = await run_collector(collector(max_table_series=0), copy)
        assert tables(none) == set()
        assert none.get_sample_value(OMITTED, {"datname": "main"}) == 4


async def test_a_role_without_grants_sees_every_table(fresh_database: URL) -> None:
    execute(fresh_database, "CREATE TABLE secret (id int PRIMARY KEY)")
    with login_role(fresh_database) as url:
        with pytest.raises(DBAPIError, match="permission denied for table secret"):
            execute(url, "SELECT * FROM secret")
        registry = await run_collector(collector(), url)
    assert tables(registry) == {"secret"}


async def test_a_table_held_access_exclusive_does_not_stop_it(fresh_database: URL) -> None:
    execute(fresh_database, "CREATE TABLE t (id int)")
    # run_collector's lock_timeout is 10 s: opening the table would fail the run.
    with held_in_transaction(fresh_database, "LOCK TABLE t IN ACCESS EXCLUSIVE MODE"):
        registry = await run_collector(collector(), fresh_database)
    assert tables(registry) == {"t"}


async def test_a_database_without_tables(fresh_database: URL) -> None:
    registry = await run_collector(collector(), fresh_database)
    assert tables(registry) == set()
    assert registry.get_sample_value(OMITTED, {"datname": "main"}) == 0

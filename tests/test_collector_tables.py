"""The tables collector against a real table: scans, rows, vacuum, sizes, the series cap."""

from __future__ import annotations

import time

from collector_helpers import by_label, execute, run_collector, wait_for
from prometheus_client import CollectorRegistry
from sqlalchemy.engine import URL

from exporter.collectors.tables import TablesCollector
from exporter.settings import TablesCollectorSettings

STATS = "SELECT {} FROM pg_stat_user_tables WHERE relname = 't'"
FLUSH = "SELECT pg_stat_force_next_flush()"


def collector(**options: int) -> TablesCollector:
    return TablesCollector("main", TablesCollectorSettings(**options))


def value(registry: CollectorRegistry, name: str) -> float:
    return by_label(registry, name, "relname")["t"]


async def test_scans_rows_vacuum_and_sizes(fresh_database: URL) -> None:
    execute(
        fresh_database,
        # No autovacuum: the test decides when the table is vacuumed and analyzed.
        "CREATE TABLE t (id int PRIMARY KEY, v text) WITH (autovacuum_enabled = false)",
        "INSERT INTO t SELECT g, CASE WHEN g <= 10 THEN 'gone' ELSE 'kept' END"
        " FROM generate_series(1, 100) g",
        "DELETE FROM t WHERE v = 'gone'",  # no index on v: one sequential scan
        "SET enable_indexscan = off",
        "SET enable_bitmapscan = off",
        "SELECT count(*) FROM t",
        "SELECT count(*) FROM t",
        "SET enable_indexscan = on",
        "SET enable_seqscan = off",
        "SELECT v FROM t WHERE id = 50",
        "SELECT v FROM t WHERE id = 51",
        "SELECT v FROM t WHERE id = 52",
        FLUSH,
    )
    wait_for(fresh_database, STATS.format("seq_scan::int + idx_scan::int"), 7)
    registry = await run_collector(collector(), fresh_database)
    # Building the primary key's index scanned the (empty) heap once, then 1 + 2 above.
    assert value(registry, "pg_stat_user_tables_seq_scan_total") == 4
    assert value(registry, "pg_stat_user_tables_idx_scan_total") == 3
    assert value(registry, "pg_stat_user_tables_idx_tup_fetch_total") == 3
    assert value(registry, "pg_stat_user_tables_n_tup_ins_total") == 100
    assert value(registry, "pg_stat_user_tables_n_tup_del_total") == 10
    assert value(registry, "pg_stat_user_tables_n_live_tup") == 90
    assert value(registry, "pg_stat_user_tables_n_dead_tup") == 10
    assert value(registry, "pg_stat_user_tables_vacuum_count_total") == 0
    assert value(registry, "pg_stat_user_tables_last_vacuum_timestamp_seconds") == 0  # never

    heap, indexes, toast = execute(
        fresh_database,
        "SELECT pg_relation_size('t'), pg_indexes_size('t'),"
        " pg_total_relation_size(reltoastrelid) FROM pg_class WHERE relname = 't'",
    )[0]
    assert value(registry, "pg_table_size_bytes") == heap
    assert value(registry, "pg_table_indexes_size_bytes") == indexes
    assert value(registry, "pg_table_toast_size_bytes") == toast
    assert heap > 0
    assert indexes > 0

    execute(fresh_database, "VACUUM ANALYZE t")
    wait_for(fresh_database, STATS.format("vacuum_count::int"), 1)
    registry = await run_collector(collector(), fresh_database)
    assert value(registry, "pg_stat_user_tables_n_dead_tup") == 0
    assert value(registry, "pg_stat_user_tables_vacuum_count_total") == 1
    assert value(registry, "pg_stat_user_tables_analyze_count_total") == 1
    assert value(registry, "pg_stat_user_tables_autovacuum_count_total") == 0
    assert (
        0 <= time.time() - value(registry, "pg_stat_user_tables_last_vacuum_timestamp_seconds") < 60
    )
    assert value(registry, "pg_stat_user_tables_last_autovacuum_timestamp_seconds") == 0
    assert registry.get_sample_value("pg_table_series_omitted", {"datname": "main"}) == 0


async def test_series_cap_keeps_the_largest_and_busiest_tables(fresh_database: URL) -> None:
    execute(
        fresh_database,
        "CREATE TABLE big (id int)",
        "INSERT INTO big SELECT generate_series(1, 10000)",
        "CREATE TABLE busy (id int)",
        "CREATE TABLE idle (id int)",
        "SELECT count(*) FROM busy",
        "SELECT count(*) FROM busy",
        FLUSH,
    )
    wait_for(
        fresh_database, "SELECT seq_scan::int FROM pg_stat_user_tables WHERE relname = 'busy'", 2
    )
    registry = await run_collector(collector(max_table_series=2), fresh_database)
    assert set(by_label(registry, "pg_table_size_bytes", "relname")) == {"big", "busy"}
    assert registry.get_sample_value("pg_table_series_omitted", {"datname": "main"}) == 1


async def test_a_database_without_tables(fresh_database: URL) -> None:
    registry = await run_collector(collector(), fresh_database)
    assert by_label(registry, "pg_table_size_bytes", "relname") == {}
    assert registry.get_sample_value("pg_table_series_omitted", {"datname": "main"}) == 0

"""The database collector: pg_stat_database of the current database."""

from __future__ import annotations

from collector_helpers import execute, run_collector, wait_for
from sqlalchemy.engine import URL

from exporter.collectors.database import DatabaseCollector
from exporter.settings import CollectorSettings

STAT = "SELECT {}::bigint FROM pg_stat_database WHERE datname = current_database()"


async def test_rollbacks_temp_files_and_cache_inputs(fresh_database: URL) -> None:
    execute(
        fresh_database,
        "BEGIN", "ROLLBACK", "BEGIN", "ROLLBACK", "BEGIN", "ROLLBACK",
        # A sort larger than work_mem spills to one temporary file.
        "SET work_mem = '64kB'",
        "SELECT count(*) FROM (SELECT g FROM generate_series(1, 100000) g ORDER BY g DESC) s",
        "SELECT pg_stat_force_next_flush()",
    )  # fmt: skip
    wait_for(fresh_database, STAT.format("(temp_files > 0)::int"), 1)
    registry = await run_collector(DatabaseCollector("main", CollectorSettings()), fresh_database)
    datid = execute(
        fresh_database, "SELECT oid::text FROM pg_database WHERE datname = current_database()"
    )[0][0]
    labels = {"datid": datid, "datname": "main"}
    assert registry.get_sample_value("pg_stat_database_xact_rollback_total", labels) == 3
    assert registry.get_sample_value("pg_stat_database_deadlocks_total", labels) == 0
    temp_files = registry.get_sample_value("pg_stat_database_temp_files_total", labels)
    assert temp_files == execute(fresh_database, STAT.format("temp_files"))[0][0]
    temp_bytes = registry.get_sample_value("pg_stat_database_temp_bytes_total", labels)
    assert temp_bytes == execute(fresh_database, STAT.format("temp_bytes"))[0][0]
    assert temp_bytes > 0
    commits = registry.get_sample_value("pg_stat_database_xact_commit_total", labels)
    assert commits is not None
    assert commits > 0
    hits = registry.get_sample_value("pg_stat_database_blks_hit_total", labels)
    assert hits is not None
    assert hits > 0
    assert registry.get_sample_value("pg_stat_database_blks_read_total", labels) is not None
    assert registry.get_sample_value("pg_stat_database_numbackends", labels) == 1  # the collector
    # A fresh database's statistics were never reset.
    assert registry.get_sample_value("pg_stat_database_stats_reset_timestamp_seconds", labels) == 0
    returned = registry.get_sample_value("pg_stat_database_tup_returned_total", labels)
    assert returned is not None
    assert returned > 0
    size = registry.get_sample_value("pg_database_size_bytes", labels)
    assert size == execute(fresh_database, "SELECT pg_database_size(current_database())")[0][0]
    assert registry.get_sample_value("pg_database_connection_limit", labels) == -1
    execute(fresh_database, f'ALTER DATABASE "{fresh_database.database}" CONNECTION LIMIT 7')
    registry = await run_collector(DatabaseCollector("main", CollectorSettings()), fresh_database)
    assert registry.get_sample_value("pg_database_connection_limit", labels) == 7
    # Times are counted in seconds (0 here: track_io_timing is off by default).
    read = registry.get_sample_value("pg_stat_database_blk_read_time_seconds_total", labels)
    assert read is not None
    version = int(execute(fresh_database, "SHOW server_version_num")[0][0])
    active = registry.get_sample_value("pg_stat_database_active_time_seconds_total", labels)
    assert (active is not None) == (version >= 140000)

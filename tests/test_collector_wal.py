"""The wal collector: pg_wal's segments, the WAL position and pg_stat_wal, on the primary and
the replica."""

from __future__ import annotations

import pytest
from collector_helpers import execute, present, refused_without_pg_monitor, run_collector
from replication_pair import UNPRIVILEGED, Pair

from exporter.collectors.wal import WalCollector
from exporter.settings import CollectorSettings

WRITE_TIMES = (
    "pg_stat_wal_write_total",
    "pg_stat_wal_sync_total",
    "pg_stat_wal_write_time_seconds_total",
    "pg_stat_wal_sync_time_seconds_total",
)


def collector() -> WalCollector:
    return WalCollector("postgres", CollectorSettings())


async def test_writes_grow_the_wal(replication_pair: Pair) -> None:
    pair = replication_pair
    before = await run_collector(collector(), pair.primary_url)
    execute(pair.primary_url, "CREATE TABLE IF NOT EXISTS written (n int)",
            "INSERT INTO written SELECT generate_series(1, 20000)")  # fmt: skip
    written = float(pair.primary.query("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')"))
    # The writing backend flushes its pg_stat_wal counts as it exits, after we disconnect.
    bytes_before = int(present(before, "pg_stat_wal_bytes_total"))
    pair.primary.wait_for(f"SELECT wal_bytes > {bytes_before} + 100000 FROM pg_stat_wal", "t")
    after = await run_collector(collector(), pair.primary_url)

    position = present(after, "pg_wal_position_bytes_total")
    assert position >= written > present(before, "pg_wal_position_bytes_total")
    segment = float(
        pair.primary.query("SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'")
    )
    assert present(after, "pg_wal_segments") >= 1
    assert present(after, "pg_wal_size_bytes") == present(after, "pg_wal_segments") * segment
    # 20,000 rows are well over 100 kB of WAL records.
    assert (
        present(after, "pg_stat_wal_bytes_total") - present(before, "pg_stat_wal_bytes_total")
        > 100_000
    )
    assert present(after, "pg_stat_wal_records_total") > present(
        before, "pg_stat_wal_records_total"
    )
    assert present(after, "pg_stat_wal_fpi_total") >= present(before, "pg_stat_wal_fpi_total")
    assert present(after, "pg_stat_wal_stats_reset_timestamp_seconds") > 0
    write_times = [after.get_sample_value(name) for name in WRITE_TIMES]
    if pair.version >= 18:  # moved to pg_stat_io
        assert write_times == [None] * 4
    else:
        assert None not in write_times


async def test_the_replica_reports_its_replayed_position(replication_pair: Pair) -> None:
    pair = replication_pair
    pair.caught_up()
    replayed = float(pair.replica.query("SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')"))
    registry = await run_collector(collector(), pair.replica_url)
    assert present(registry, "pg_wal_position_bytes_total") >= replayed
    assert present(registry, "pg_wal_segments") >= 1


async def test_a_role_without_pg_monitor_is_told_which_grant(
    replication_pair: Pair, caplog: pytest.LogCaptureFixture
) -> None:
    url = replication_pair.primary_url.set(username=UNPRIVILEGED)
    await refused_without_pg_monitor(
        collector(), url, "list the WAL directory with pg_ls_waldir() (needs pg_monitor)", caplog
    )

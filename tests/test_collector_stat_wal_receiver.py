"""The stat_wal_receiver collector: the replica's receiver streaming from the primary; a
primary has none."""

from __future__ import annotations

import logging
import time

import pytest
from collector_helpers import execute, refused_without_pg_monitor, run_collector
from replication_pair import SLOT, UNPRIVILEGED, Pair

from exporter.collectors.stat_wal_receiver import NOT_A_REPLICA, StatWalReceiverCollector
from exporter.settings import CollectorSettings

LABELS = {"upstream_host": "127.0.0.1", "slot_name": SLOT, "status": "streaming"}


def collector() -> StatWalReceiverCollector:
    return StatWalReceiverCollector("postgres", CollectorSettings())


async def test_the_replica_streams_through_its_slot(replication_pair: Pair) -> None:
    pair = replication_pair
    execute(pair.primary_url, "CREATE TABLE IF NOT EXISTS written (n int)",
            "INSERT INTO written VALUES (1)")  # fmt: skip
    written = float(pair.primary.query("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')"))
    pair.caught_up()
    pair.replica.wait_for(
        f"SELECT pg_wal_lsn_diff(flushed_lsn, '0/0') >= {written} FROM pg_stat_wal_receiver", "t"
    )
    registry = await run_collector(collector(), pair.replica_url)
    done = time.time()

    def get(name: str) -> float:
        found = registry.get_sample_value(f"pg_stat_wal_receiver_{name}", LABELS)
        assert found is not None, name
        return found

    assert get("flushed_lsn") >= written
    assert 0 < get("receive_start_lsn") <= get("flushed_lsn")
    assert get("latest_end_lsn") <= get("flushed_lsn")
    assert get("received_tli") == get("receive_start_tli") == 1
    for name in ("last_msg_send", "last_msg_receipt", "latest_end"):
        assert 0 < get(f"{name}_timestamp_seconds") <= done + 1
    # Not a repmgr slot: no upstream node to name.
    assert registry.get_sample_value("pg_stat_wal_receiver_upstream_node", LABELS) is None


async def test_a_primary_has_no_receiver_and_says_so_once(
    replication_pair: Pair, caplog: pytest.LogCaptureFixture
) -> None:
    collecting = collector()
    with caplog.at_level(logging.INFO, logger="exporter.collectors"):
        for _ in range(2):
            registry = await run_collector(collecting, replication_pair.primary_url)
            assert list(registry.collect()) == []
    assert [r.getMessage() for r in caplog.records] == [
        f"collector stat_wal_receiver on database postgres: {NOT_A_REPLICA}"
    ]


async def test_a_role_without_pg_monitor_is_told_which_grant(
    replication_pair: Pair, caplog: pytest.LogCaptureFixture
) -> None:
    url = replication_pair.replica_url.set(username=UNPRIVILEGED)
    await refused_without_pg_monitor(
        collector(), url, "see the WAL receiver's connection (needs pg_read_all_stats)", caplog
    )

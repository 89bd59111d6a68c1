"""The replication_slot collector: the replica's slot on the primary, an idle slot holding WAL
back, safe_wal_size once bounded, and a slot on the replica itself."""

from __future__ import annotations

from collector_helpers import execute, run_collector, samples
from prometheus_client import CollectorRegistry
from replication_pair import SLOT, Pair

from exporter.collectors.replication_slot import ReplicationSlotCollector
from exporter.settings import ReplicationSlotCollectorSettings

IDLE = "dbx_idle_slot"


def collector(**options: int) -> ReplicationSlotCollector:
    return ReplicationSlotCollector("postgres", ReplicationSlotCollectorSettings(**options))


def value(registry: CollectorRegistry, name: str, slot: str) -> float | None:
    found = [v for labels, v in samples(registry, name) if labels["slot_name"] == slot]
    assert len(found) <= 1
    return found[0] if found else None


def position(pair: Pair) -> float:
    return float(pair.primary.query("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')"))


async def test_an_active_slot_and_an_idle_one_retaining_wal(replication_pair: Pair) -> None:
    pair = replication_pair
    # Reserves WAL from now on, and no consumer will ever confirm any.
    pair.primary.query(f"SELECT pg_create_physical_replication_slot('{IDLE}', true)")
    try:
        execute(pair.primary_url, "CREATE TABLE IF NOT EXISTS written (n int)",
                "INSERT INTO written SELECT generate_series(1, 20000)")  # fmt: skip
        reserved = float(pair.primary.query(
            f"SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)"
            f" FROM pg_replication_slots WHERE slot_name = '{IDLE}'"
        ))  # fmt: skip
        pair.caught_up()
        before = position(pair)
        registry = await run_collector(collector(), pair.primary_url)
        after = position(pair)
    finally:
        pair.primary.query(f"SELECT pg_drop_replication_slot('{IDLE}')")

    labels = {"slot_name": SLOT, "slot_type": "physical"}
    assert registry.get_sample_value("pg_replication_slot_slot_is_active", labels) == 1
    assert value(registry, "pg_replication_slot_slot_is_active", IDLE) == 0
    current = registry.get_sample_value("pg_replication_slot_slot_current_wal_lsn", labels)
    assert current is not None
    assert before <= current <= after
    # A physical slot has no confirmed flush position; an inactive one has no series.
    assert registry.get_sample_value("pg_replication_slot_slot_confirmed_flush_lsn", labels) == 0
    assert value(registry, "pg_replication_slot_slot_confirmed_flush_lsn", IDLE) is None
    status = {**labels, "wal_status": "reserved"}
    assert registry.get_sample_value("pg_replication_slot_wal_status", status) == 1
    # Unbounded (max_slot_wal_keep_size = -1): no safe size to report.
    assert samples(registry, "pg_replication_slot_safe_wal_size_bytes") == []
    # The idle slot holds back everything written since it was made.
    retained = value(registry, "pg_replication_slot_retained_wal_bytes", IDLE)
    assert retained is not None
    assert retained >= reserved > 0
    assert registry.get_sample_value("pg_replication_slot_series_omitted") == 0


async def test_a_bounded_slot_reports_its_safe_wal_size_and_the_cap_counts_the_rest(
    replication_pair: Pair,
) -> None:
    pair = replication_pair
    pair.primary.query("ALTER SYSTEM SET max_slot_wal_keep_size = '1GB'")
    pair.primary.query("SELECT pg_reload_conf()")
    try:
        pair.primary.wait_for("SHOW max_slot_wal_keep_size", "1GB")
        registry = await run_collector(collector(), pair.primary_url)
        server = float(pair.primary.query(
            f"SELECT safe_wal_size FROM pg_replication_slots WHERE slot_name = '{SLOT}'"
        ))  # fmt: skip
        capped = await run_collector(collector(max_slot_series=0), pair.primary_url)
    finally:
        pair.primary.query("ALTER SYSTEM RESET max_slot_wal_keep_size")
        pair.primary.query("SELECT pg_reload_conf()")
    safe = value(registry, "pg_replication_slot_safe_wal_size_bytes", SLOT)
    assert safe is not None
    # The server's own figure, give or take the WAL written in between (bookkeeping only).
    assert safe > 0
    assert abs(safe - server) <= 1024**2
    assert samples(capped, "pg_replication_slot_slot_is_active") == []
    assert capped.get_sample_value("pg_replication_slot_series_omitted") == 1


async def test_a_slot_on_the_replica_reports_the_received_position(replication_pair: Pair) -> None:
    pair = replication_pair
    pair.replica.query(f"SELECT pg_create_physical_replication_slot('{IDLE}')")
    try:
        pair.caught_up()
        received = float(pair.replica.query(
            "SELECT pg_wal_lsn_diff(pg_last_wal_receive_lsn(), '0/0')"
        ))  # fmt: skip
        registry = await run_collector(collector(), pair.replica_url)
    finally:
        pair.replica.query(f"SELECT pg_drop_replication_slot('{IDLE}')")
    current = value(registry, "pg_replication_slot_slot_current_wal_lsn", IDLE)
    assert current is not None
    assert current >= received
    # Never used: nothing reserved, nothing retained.
    assert value(registry, "pg_replication_slot_retained_wal_bytes", IDLE) == 0

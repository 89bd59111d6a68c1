"""The archiver collector: a copying archive_command counts archived files, a failing one
failed attempts; a replica (which does not archive with archive_mode=on) has no age yet."""

from __future__ import annotations

from collector_helpers import execute, present, run_collector
from prometheus_client import CollectorRegistry
from replication_pair import Pair

from exporter.collectors.archiver import ArchiverCollector
from exporter.settings import CollectorSettings


def collector() -> ArchiverCollector:
    return ArchiverCollector("postgres", CollectorSettings())


def get(registry: CollectorRegistry, name: str) -> float:
    return present(registry, f"pg_stat_archiver_{name}")


def switch_segment(pair: Pair) -> None:
    """Fill part of a segment and close it, so the archiver has a file to archive."""
    execute(pair.primary_url, "CREATE TABLE IF NOT EXISTS written (n int)",
            "INSERT INTO written VALUES (1)", "SELECT pg_switch_wal()")  # fmt: skip


async def test_archived_then_failed_attempts(replication_pair: Pair) -> None:
    pair = replication_pair
    archived = int(pair.primary.query("SELECT archived_count FROM pg_stat_archiver"))
    switch_segment(pair)
    pair.primary.wait_for(f"SELECT archived_count > {archived} FROM pg_stat_archiver", "t")
    registry = await run_collector(collector(), pair.primary_url)
    assert get(registry, "archived_count_total") > archived
    assert (pair.primary.data / "archive").is_dir()
    assert any((pair.primary.data / "archive").iterdir())
    assert get(registry, "last_archived_timestamp_seconds") > 0
    assert get(registry, "last_archive_age_seconds") >= 0

    failed = int(pair.primary.query("SELECT failed_count FROM pg_stat_archiver"))
    pair.primary.query("ALTER SYSTEM SET archive_command = 'false'")
    pair.primary.query("SELECT pg_reload_conf()")
    try:
        pair.primary.wait_for("SHOW archive_command", "false")
        switch_segment(pair)
        pair.primary.wait_for(f"SELECT failed_count > {failed} FROM pg_stat_archiver", "t")
        registry = await run_collector(collector(), pair.primary_url)
    finally:
        pair.primary.query("ALTER SYSTEM RESET archive_command")
        pair.primary.query("SELECT pg_reload_conf()")
    assert get(registry, "failed_count_total") > failed
    assert get(registry, "last_failed_timestamp_seconds") > 0


async def test_nothing_archived_yet_has_no_age(replication_pair: Pair) -> None:
    registry = await run_collector(collector(), replication_pair.replica_url)
    assert get(registry, "archived_count_total") == 0
    assert get(registry, "last_archived_timestamp_seconds") == 0
    assert registry.get_sample_value("pg_stat_archiver_last_archive_age_seconds") is None

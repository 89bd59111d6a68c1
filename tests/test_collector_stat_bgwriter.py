"""The stat_bgwriter collector: postgres_exporter's families for the server's version."""

from __future__ import annotations

from collector_helpers import run_collector
from replication_pair import Pair

from exporter.collectors.stat_bgwriter import StatBgwriterCollector
from exporter.settings import CollectorSettings

CHECKPOINT_FAMILIES = (
    "pg_stat_bgwriter_checkpoints_timed_total",
    "pg_stat_bgwriter_checkpoints_req_total",
    "pg_stat_bgwriter_checkpoint_write_time_seconds_total",
    "pg_stat_bgwriter_checkpoint_sync_time_seconds_total",
    "pg_stat_bgwriter_buffers_checkpoint_total",
    "pg_stat_bgwriter_buffers_backend_total",
    "pg_stat_bgwriter_buffers_backend_fsync_total",
)


async def test_checkpoint_columns_follow_the_version(replication_pair: Pair) -> None:
    pair = replication_pair
    collector = StatBgwriterCollector("postgres", CollectorSettings())
    registry = await run_collector(collector, pair.primary_url)
    alloc = registry.get_sample_value("pg_stat_bgwriter_buffers_alloc_total")
    assert alloc is not None
    assert alloc > 0  # the server has read pages into shared buffers
    for name in ("buffers_clean_total", "maxwritten_clean_total"):
        found = registry.get_sample_value(f"pg_stat_bgwriter_{name}")
        assert found is not None
        assert found >= 0
    reset = registry.get_sample_value("pg_stat_bgwriter_stats_reset_timestamp_seconds")
    assert reset is not None
    assert reset > 0  # set when the cluster was created

    present = {name: registry.get_sample_value(name) for name in CHECKPOINT_FAMILIES}
    if pair.version >= 17:  # moved to pg_stat_checkpointer and pg_stat_io
        assert present == dict.fromkeys(CHECKPOINT_FAMILIES)
        return
    before = present["pg_stat_bgwriter_checkpoints_req_total"]
    assert before is not None
    pair.primary.query("CHECKPOINT")
    pair.primary.wait_for(f"SELECT checkpoints_req > {before} FROM pg_stat_bgwriter", "t")
    registry = await run_collector(collector, pair.primary_url)
    after = registry.get_sample_value("pg_stat_bgwriter_checkpoints_req_total")
    assert after is not None
    assert after > before

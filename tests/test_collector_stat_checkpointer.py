"""The stat_checkpointer collector: the same families on every version, moving with CHECKPOINT
on the primary and, from PostgreSQL 17, with restartpoints on the replica."""

from __future__ import annotations

from collector_helpers import execute, present, run_collector
from prometheus_client import CollectorRegistry
from replication_pair import Pair

from exporter.collectors.stat_checkpointer import StatCheckpointerCollector
from exporter.settings import CollectorSettings

RESTARTPOINTS = tuple(
    f"pg_stat_checkpointer_restartpoints_{name}_total" for name in ("timed", "req", "done")
)


def collector() -> StatCheckpointerCollector:
    return StatCheckpointerCollector("postgres", CollectorSettings())


def counters(registry: CollectorRegistry, *names: str) -> dict[str, float]:
    return {name: present(registry, f"pg_stat_checkpointer_{name}") for name in names}


async def test_a_checkpoint_moves_the_counters(replication_pair: Pair) -> None:
    pair = replication_pair
    names = ("num_requested_total", "num_timed_total", "buffers_written_total",
             "write_time_seconds_total", "sync_time_seconds_total")  # fmt: skip
    before = counters(await run_collector(collector(), pair.primary_url), *names)
    # Dirty some buffers for the checkpoint to write.
    execute(pair.primary_url, "CREATE TABLE IF NOT EXISTS written (n int)",
            "INSERT INTO written SELECT generate_series(1, 5000)")  # fmt: skip
    pair.primary.query("CHECKPOINT")
    column = "num_requested" if pair.version >= 17 else "checkpoints_req"
    view = "pg_stat_checkpointer" if pair.version >= 17 else "pg_stat_bgwriter"
    requested = int(before["num_requested_total"])
    pair.primary.wait_for(f"SELECT {column} > {requested} FROM {view}", "t")
    registry = await run_collector(collector(), pair.primary_url)
    after = counters(registry, *names)
    assert after["num_requested_total"] > before["num_requested_total"]
    assert after["buffers_written_total"] > before["buffers_written_total"]
    for name in ("num_timed_total", "write_time_seconds_total", "sync_time_seconds_total"):
        assert after[name] >= before[name], name
    reset = registry.get_sample_value("pg_stat_checkpointer_stats_reset_timestamp_seconds")
    assert reset is not None
    assert reset > 0


async def test_restartpoints_on_the_replica_from_17(replication_pair: Pair) -> None:
    pair = replication_pair
    registry = await run_collector(collector(), pair.replica_url)
    if pair.version < 17:  # not counted before: no series rather than a false 0
        assert [registry.get_sample_value(name) for name in RESTARTPOINTS] == [None] * 3
        return
    before = counters(registry, "restartpoints_req_total")["restartpoints_req_total"]
    # A restartpoint needs a checkpoint record replayed since the last one.
    pair.primary.query("CHECKPOINT")
    pair.caught_up()
    pair.replica.query("CHECKPOINT")
    pair.replica.wait_for(
        f"SELECT restartpoints_req > {int(before)} FROM pg_stat_checkpointer", "t"
    )
    registry = await run_collector(collector(), pair.replica_url)
    after = counters(registry, "restartpoints_req_total", "restartpoints_done_total")
    assert after["restartpoints_req_total"] > before
    assert after["restartpoints_done_total"] >= 1

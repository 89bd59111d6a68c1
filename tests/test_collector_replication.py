"""The replication collector on a real primary and its streaming replica."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from collector_helpers import dsn, execute, refused_without_pg_monitor, run_collector, samples
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from replication_pair import SLOT, STANDBY, UNPRIVILEGED, Pair

from exporter import Metrics
from exporter.collectors import COLLECTORS
from exporter.collectors.exposition import SnapshotStore
from exporter.collectors.replication import ON_REPLICA, ReplicationCollector
from exporter.collectors.runner import DatabaseWorker
from exporter.settings import (
    ConfigError,
    DatabaseSettings,
    ReplicationCollectorSettings,
    settings_from_data,
)

# The server-level collectors this test bed is for.
SERVER_COLLECTORS = (
    "replication",
    "replication_slot",
    "stat_wal_receiver",
    "stat_bgwriter",
    "stat_checkpointer",
    "wal",
    "archiver",
)

STANDBY_LABELS = {
    "application_name": STANDBY,
    "client_addr": "127.0.0.1",
    "state": "streaming",
    "slot_name": SLOT,
}


def collector(**options: int) -> ReplicationCollector:
    return ReplicationCollector("postgres", ReplicationCollectorSettings(**options))


def lsn_bytes(pair: Pair, function: str) -> float:
    return float(pair.primary.query(f"SELECT pg_wal_lsn_diff({function}(), '0/0')"))


async def test_the_primary_reports_itself_and_its_standby(replication_pair: Pair) -> None:
    pair = replication_pair
    execute(pair.primary_url, "CREATE TABLE IF NOT EXISTS written (n int)",
            "INSERT INTO written SELECT generate_series(1, 1000)")  # fmt: skip
    before = lsn_bytes(pair, "pg_current_wal_lsn")
    pair.caught_up()  # replayed at least up to `before`
    registry = await run_collector(collector(), pair.primary_url)
    after = lsn_bytes(pair, "pg_current_wal_lsn")

    assert registry.get_sample_value("pg_replication_is_replica") == 0
    assert registry.get_sample_value("pg_replication_lag_seconds") == 0
    assert registry.get_sample_value("pg_replication_last_replay_seconds") == 0
    [(labels, position)] = samples(registry, "pg_stat_replication_pg_current_wal_lsn_bytes")
    assert labels == STANDBY_LABELS
    assert before <= position <= after
    # Caught up before the run: at most what the primary wrote since `before` (bookkeeping).
    lag_bytes = registry.get_sample_value("pg_stat_replication_replay_lag_bytes", labels)
    assert lag_bytes is not None
    assert 0 <= lag_bytes <= after - before
    for name in ("write", "flush", "replay"):
        seconds = registry.get_sample_value(f"pg_stat_replication_{name}_lag_seconds", labels)
        assert seconds is not None
        assert seconds >= 0
    assert registry.get_sample_value("pg_stat_replication_series_omitted") == 0

    # Beyond the cap the standby keeps no series of its own but is counted.
    registry = await run_collector(collector(max_standby_series=0), pair.primary_url)
    assert samples(registry, "pg_stat_replication_pg_current_wal_lsn_bytes") == []
    assert registry.get_sample_value("pg_stat_replication_series_omitted") == 1


async def test_standbys_that_look_alike_share_one_series(
    replication_pair: Pair, tmp_path: Path
) -> None:
    """Two pg_receivewal from one host, without a slot: one label set, one series each."""
    pair = replication_pair
    with pair.primary.wal_receivers(2, tmp_path):
        registry = await run_collector(collector(), pair.primary_url)
    series = [labels for labels, _ in samples(registry, "pg_stat_replication_replay_lag_bytes")]
    assert sorted(s["application_name"] for s in series) == ["pg_receivewal", STANDBY]
    assert registry.get_sample_value("pg_stat_replication_series_omitted") == 0


async def test_the_replica_reports_its_role_and_a_real_lag(
    replication_pair: Pair, caplog: pytest.LogCaptureFixture
) -> None:
    pair = replication_pair
    execute(pair.primary_url, "CREATE TABLE IF NOT EXISTS written (n int)",
            "INSERT INTO written VALUES (1)")  # fmt: skip
    pair.caught_up()
    pair.replica.query("SELECT pg_wal_replay_pause()")
    try:
        # Written on the primary and received, but not replayed: the replica lags.
        execute(pair.primary_url, "INSERT INTO written VALUES (2)")
        position = pair.primary.query("SELECT pg_current_wal_lsn()")
        pair.replica.wait_for(f"SELECT pg_last_wal_receive_lsn() >= '{position}'", "t")
        since_replay = float(pair.replica.query(
            "SELECT extract(epoch FROM now() - pg_last_xact_replay_timestamp())"
        ))  # fmt: skip
        collecting = collector()
        with caplog.at_level(logging.INFO, logger="exporter.collectors"):
            registry = await run_collector(collecting, pair.replica_url)
            await run_collector(collecting, pair.replica_url)
    finally:
        pair.replica.query("SELECT pg_wal_replay_resume()")

    assert registry.get_sample_value("pg_replication_is_replica") == 1
    lag = registry.get_sample_value("pg_replication_lag_seconds")
    assert lag is not None
    assert lag >= since_replay > 0
    last_replay = registry.get_sample_value("pg_replication_last_replay_seconds")
    assert last_replay is not None
    assert last_replay >= since_replay
    # Primary-only values are skipped, said once for two runs; the rest is there.
    assert samples(registry, "pg_stat_replication_pg_current_wal_lsn_bytes") == []
    assert registry.get_sample_value("pg_stat_replication_series_omitted") == 0
    notes = [r.getMessage() for r in caplog.records]
    assert notes == [f"collector replication on database postgres: {ON_REPLICA}"]

    # Replayed everything it received: no lag (the primary's own bookkeeping records can
    # arrive at any time and be replayed a moment later, so wait for a run that says so).
    pair.caught_up()
    deadline = time.monotonic() + 30
    lag = None
    while lag != 0 and time.monotonic() < deadline:
        registry = await run_collector(collector(), pair.replica_url)
        lag = registry.get_sample_value("pg_replication_lag_seconds")
    assert lag == 0


async def test_a_role_without_pg_monitor_is_told_which_grant(
    replication_pair: Pair, caplog: pytest.LogCaptureFixture
) -> None:
    url = replication_pair.primary_url.set(username=UNPRIVILEGED)
    await refused_without_pg_monitor(
        collector(),
        url,
        "see the WAL senders in pg_stat_replication (needs pg_read_all_stats)",
        caplog,
    )


async def test_every_server_collector_runs_on_the_replica_without_writing(
    replication_pair: Pair, registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """Through the runner, as `serve` runs them: a replica refuses any write, so every run
    succeeding shows none was attempted; what is primary-only is skipped, said once."""
    store = SnapshotStore()
    registry.register(store)
    settings = DatabaseSettings(name="standby", dsn=dsn(replication_pair.replica_url))
    worker = DatabaseWorker(
        settings, Metrics(registry), store, {name: COLLECTORS[name] for name in SERVER_COLLECTORS}
    )
    try:
        with caplog.at_level(logging.INFO, logger="exporter.collectors"):
            assert await worker.check()
            for _ in range(2):
                for job in worker.jobs:
                    assert await worker.run_collector(job), job.collector.name
    finally:
        await worker.close()
    for name in SERVER_COLLECTORS:
        labels = {"collector": name, "database": "standby"}
        assert registry.get_sample_value("exporter_collector_success", labels) == 1
    text = store.exposition(openmetrics=False).decode()
    assert 'pg_replication_is_replica{database="standby"} 1.0' in text
    assert "pg_stat_wal_receiver_flushed_lsn{" in text
    notes = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert [n for n in notes if ": " in n and n.startswith("collector ")] == [
        f"collector replication on database standby: {ON_REPLICA}"
    ]


@settings(max_examples=60, deadline=None, database=None)
@given(
    key=st.sampled_from(
        [
            ("replication", "max_standby_series"),
            ("replication_slot", "max_slot_series"),
            ("server_activity", "max_databases"),
            ("stat_database_conflicts", "max_databases"),
            ("locks", "max_databases"),
        ]
    ),
    value=st.one_of(st.integers(), st.text(max_size=8), st.floats(), st.none(), st.booleans()),
)
def test_any_series_cap_is_a_count_or_one_config_error(key: tuple[str, str], value: object) -> None:
    collector, option = key
    data = {
        "databases": [
            {
                "name": "main",
                "dsn": "postgresql://db/app",
                "collectors": {collector: {option: value}},
            }
        ]
    }
    try:
        loaded = settings_from_data(data, "exporter.yaml")
    except ConfigError as error:
        message = str(error)
        assert "\n" not in message
        assert message.startswith(f"exporter.yaml: databases[0].collectors.{collector}.{option}")
        return
    cap = getattr(getattr(loaded.databases[0].collectors, collector), option)
    assert isinstance(cap, int)
    assert cap >= 0

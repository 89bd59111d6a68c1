"""postgres_exporter's names for the replication, WAL, checkpoint and archiver metrics.

Facts from prometheus-community/postgres_exporter (release 0.17/0.18), by its collector name:
`collector/pg_replication.go`, `collector/pg_replication_slot.go`,
`collector/pg_stat_walreceiver.go`, `collector/pg_stat_bgwriter.go`,
`collector/pg_stat_checkpointer.go`, `collector/pg_wal.go`, and the built-in maps
`pg_stat_replication` and `pg_stat_archiver` of `cmd/postgres_exporter/postgres_metrics.go`
(those two also carry a constant `server="host:port"` label, which db-exporter leaves to
Prometheus' `instance`). Each fact: name -> (type, labels).

The scrape of a real primary and its replica (both server versions) is checked against them
under the names the collectors declare in `postgres_exporter_names`, i.e. what the
`compatibility: postgres_exporter` mode renders; `postgres_exporter_scales` converts units.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from collector_helpers import run_collector
from prom_helpers import needs_promtool, promtool
from prometheus_client import generate_latest
from replication_pair import SLOT as STANDBY_SLOT
from replication_pair import Pair
from sqlalchemy.engine import URL

from exporter.collectors import COLLECTORS
from exporter.collectors.compatibility import default_view, postgres_exporter_view
from exporter.settings import CollectorsSettings

Facts = dict[str, tuple[str, tuple[str, ...]]]
SLOT = ("slot_name", "slot_type")
RECEIVER = ("upstream_host", "slot_name", "status")
STANDBY = ("application_name", "client_addr", "state", "slot_name")


def facts(version: int) -> dict[str, Facts]:
    """postgres_exporter's group -> its metrics on a server of `version` (major)."""
    bgwriter: Facts = {
        f"pg_stat_bgwriter_{name}_total": ("counter", ())
        for name in ("buffers_clean", "maxwritten_clean", "buffers_alloc", "stats_reset")
    }
    if version < 17:
        bgwriter |= {
            f"pg_stat_bgwriter_{name}_total": ("counter", ())
            for name in (
                "checkpoints_timed", "checkpoints_req", "checkpoint_write_time",
                "checkpoint_sync_time", "buffers_checkpoint", "buffers_backend",
                "buffers_backend_fsync",
            )
        }  # fmt: skip
    groups: dict[str, Facts] = {
        "replication": {
            "pg_replication_lag_seconds": ("gauge", ()),
            "pg_replication_is_replica": ("gauge", ()),
            "pg_replication_last_replay_seconds": ("gauge", ()),
        },
        "replication_slot": {
            "pg_replication_slot_slot_current_wal_lsn": ("gauge", SLOT),
            "pg_replication_slot_slot_confirmed_flush_lsn": ("gauge", SLOT),
            "pg_replication_slot_slot_is_active": ("gauge", SLOT),
            "pg_replication_slot_safe_wal_size_bytes": ("gauge", SLOT),
            "pg_replication_slot_wal_status": ("gauge", (*SLOT, "wal_status")),
        },
        "stat_wal_receiver": {
            "pg_stat_wal_receiver_receive_start_lsn": ("counter", RECEIVER),
            "pg_stat_wal_receiver_receive_start_tli": ("gauge", RECEIVER),
            "pg_stat_wal_receiver_flushed_lsn": ("counter", RECEIVER),
            "pg_stat_wal_receiver_received_tli": ("gauge", RECEIVER),
            "pg_stat_wal_receiver_last_msg_send_time": ("counter", RECEIVER),
            "pg_stat_wal_receiver_last_msg_receipt_time": ("counter", RECEIVER),
            "pg_stat_wal_receiver_latest_end_lsn": ("counter", RECEIVER),
            "pg_stat_wal_receiver_latest_end_time": ("counter", RECEIVER),
            "pg_stat_wal_receiver_upstream_node": ("gauge", RECEIVER),
        },
        "stat_bgwriter": bgwriter,
        "wal": {
            "pg_wal_segments": ("gauge", ()),
            "pg_wal_size_bytes": ("gauge", ()),
        },
        "pg_stat_replication": {
            "pg_stat_replication_pg_current_wal_lsn_bytes": ("gauge", STANDBY),
            "pg_stat_replication_pg_wal_lsn_diff": ("gauge", STANDBY),
        },
        "pg_stat_archiver": {
            "pg_stat_archiver_archived_count": ("counter", ()),
            "pg_stat_archiver_failed_count": ("counter", ()),
            "pg_stat_archiver_last_archive_age": ("gauge", ()),
        },
    }
    if version >= 17:  # postgres_exporter skips it before
        groups["stat_checkpointer"] = {
            f"pg_stat_checkpointer_{name}_total": ("counter", ())
            for name in (
                "num_timed", "num_requested", "restartpoints_timed", "restartpoints_req",
                "restartpoints_done", "write_time", "sync_time", "buffers_written",
                "stats_reset",
            )
        }  # fmt: skip
    return groups


# postgres_exporter's group -> the db-exporter collector that covers it.
OURS = {
    "replication": "replication",
    "replication_slot": "replication_slot",
    "stat_wal_receiver": "stat_wal_receiver",
    "stat_bgwriter": "stat_bgwriter",
    "stat_checkpointer": "stat_checkpointer",
    "wal": "wal",
    "pg_stat_replication": "replication",
    "pg_stat_archiver": "archiver",
}
# Where postgres_exporter's type says "counter" for what is a position or a point in time
# (it can go down: a new timeline, a statistics reset), db-exporter exports a gauge; the
# compatibility mode has to type these as postgres_exporter does.
GAUGES_THERE_COUNTERS = {
    "pg_stat_wal_receiver_receive_start_lsn",
    "pg_stat_wal_receiver_flushed_lsn",
    "pg_stat_wal_receiver_last_msg_send_time",
    "pg_stat_wal_receiver_last_msg_receipt_time",
    "pg_stat_wal_receiver_latest_end_lsn",
    "pg_stat_wal_receiver_latest_end_time",
    "pg_stat_bgwriter_stats_reset_total",
    "pg_stat_checkpointer_stats_reset_total",
}
# postgres_exporter's built-in `pg_replication_slots` map labels its series `slot_name,
# database` (a logical slot's database), which would clash with db-exporter's own `database`
# label: only its view has them; `pg_replication_slot_retained_wal_bytes{slot_name,
# slot_type}` and `pg_replication_slot_slot_is_active` carry the same data in the default one.
ITS_VIEW_ONLY = {"pg_replication_slots_active", "pg_replication_slots_pg_wal_lsn_diff"}


async def scrape(collector: str, url: URL) -> dict[str, tuple[str, tuple[str, ...], Any]]:
    """The families of one run, under postgres_exporter's names: name -> (type, labels, the
    family), the type and labels taken from the samples (a family without samples is left
    out: nothing to compare)."""
    cls = COLLECTORS[collector]
    names: Mapping[str, str] = cls.postgres_exporter_names
    options = getattr(CollectorsSettings(), collector)
    collector = cls("postgres", options)
    registry = await run_collector(collector, url)
    found = {}
    for family in default_view(collector, list(registry.collect())):
        if not family.samples:
            continue
        exposed = family.name + "_total" if family.type == "counter" else family.name
        labels = tuple(family.samples[0].labels)
        found[names.get(family.name, exposed)] = (family.type, labels, family)
    return found


async def test_every_postgres_exporter_metric_is_there(replication_pair: Pair) -> None:
    pair = replication_pair
    # A slot with a safe size, for its series to exist.
    pair.primary.query("ALTER SYSTEM SET max_slot_wal_keep_size = '1GB'")
    pair.primary.query("SELECT pg_reload_conf()")
    try:
        pair.primary.wait_for("SHOW max_slot_wal_keep_size", "1GB")
        scraped = {
            name: await scrape(name, pair.primary_url)
            for name in set(OURS.values()) - {"stat_wal_receiver"}
        }
    finally:
        pair.primary.query("ALTER SYSTEM RESET max_slot_wal_keep_size")
        pair.primary.query("SELECT pg_reload_conf()")
    scraped["stat_wal_receiver"] = await scrape("stat_wal_receiver", pair.replica_url)

    missing, wrong = [], []
    for group, metrics in facts(pair.version).items():
        ours = scraped[OURS[group]]
        for name, (kind, labels) in metrics.items():
            if name == "pg_stat_wal_receiver_upstream_node":
                continue  # repmgr slots only (`repmgr_slot_<node>`): none here
            if name not in ours:
                missing.append(f"{group}: {name}")
                continue
            our_kind, our_labels, _ = ours[name]
            expected_kind = "gauge" if name in GAUGES_THERE_COUNTERS else kind
            if (our_kind, our_labels) != (expected_kind, labels):
                wrong.append(f"{name}: {our_kind}{our_labels}, expected {expected_kind}{labels}")
    assert missing == []
    assert wrong == []
    for family in scraped.values():
        assert ITS_VIEW_ONLY.isdisjoint(family)


async def test_postgres_exporters_slot_series_have_the_slots_database(
    replication_pair: Pair,
) -> None:
    """Its view has `pg_replication_slots_*{slot_name,database,server}`, `database` being the
    slot's: "" for the standby's physical slot (no label, once Prometheus stores it)."""
    pair = replication_pair
    collector = COLLECTORS["replication_slot"]("postgres", CollectorsSettings().replication_slot)
    families = list((await run_collector(collector, pair.primary_url)).collect())
    view = {f.name: f for f in postgres_exporter_view(collector, families, "db:5432")}
    ours = {f.name: f for f in families}
    for name in ITS_VIEW_ONLY:
        assert view[name].type == "gauge"
        assert [s.labels for s in view[name].samples] == [
            {"slot_name": STANDBY_SLOT, "database": "", "server": "db:5432"}
        ]
    [active] = view["pg_replication_slots_active"].samples
    assert active.value == 1
    [retained] = view["pg_replication_slots_pg_wal_lsn_diff"].samples
    [same] = ours["pg_replication_slot_retained_wal_bytes"].samples
    assert retained.value == same.value


async def test_scaled_families_match_postgres_exporter_units(replication_pair: Pair) -> None:
    """Checkpoint times are seconds here, milliseconds there: the declared scale converts."""
    pair = replication_pair
    pair.primary.query("CHECKPOINT")
    view, column = (
        ("pg_stat_checkpointer", "write_time")
        if pair.version >= 17
        else ("pg_stat_bgwriter", "checkpoint_write_time")
    )
    read = f"SELECT {column} FROM {view}"
    before = float(pair.primary.query(read))
    cls = COLLECTORS["stat_checkpointer"]
    registry = await run_collector(cls("postgres", CollectorsSettings().stat_checkpointer),
                                   pair.primary_url)  # fmt: skip
    after = float(pair.primary.query(read))
    seconds = registry.get_sample_value("pg_stat_checkpointer_write_time_seconds_total")
    assert seconds is not None
    converted = seconds * cls.postgres_exporter_scales["pg_stat_checkpointer_write_time_seconds"]
    assert before - 1e-6 <= converted <= after + 1e-6


@needs_promtool
async def test_the_default_names_pass_promtool(replication_pair: Pair) -> None:
    """Prometheus' conventions in the default mode: `promtool check metrics` finds nothing in
    the families of a primary with its standby and slot, and of the replica."""
    pair = replication_pair
    for url in (pair.primary_url, pair.replica_url):
        body = b""
        for name in sorted(set(OURS.values())):
            cls = COLLECTORS[name]
            options = getattr(CollectorsSettings(), name)
            body += generate_latest(await run_collector(cls("postgres", options), url))
        assert b"pg_replication_is_replica" in body
        code, output = promtool("check", "metrics", stdin=body.decode())
        assert (code, output) == (0, "")

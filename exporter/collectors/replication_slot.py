"""Replication slots: which are in use, and how much WAL each holds back.

Server-wide, from `pg_replication_slots`, labels `slot_name, slot_type` as in
postgres_exporter's `replication_slot` collector (its metric names too):

- `pg_replication_slot_slot_current_wal_lsn`: the server's WAL position in bytes (received
  position on a replica), `pg_replication_slot_slot_confirmed_flush_lsn` (active slots only;
  0 for a physical slot, which has none), `pg_replication_slot_slot_is_active`;
- `pg_replication_slot_safe_wal_size_bytes` (only when `max_slot_wal_keep_size` bounds the
  slot: NULL, and no series, otherwise) and `pg_replication_slot_wal_status{...,wal_status}`
  (1 for the slot's current status: reserved, extended, unreserved or lost);
- `pg_replication_slot_retained_wal_bytes`: WAL the slot keeps from removal (from its
  `restart_lsn` to the current position; 0 before its first use).

With `compatibility: postgres_exporter` only, also its built-in map's
`pg_replication_slots_active` and `pg_replication_slots_pg_wal_lsn_diff` (the retained bytes
above), labels `slot_name, database, server`, where `database` is the slot's database (a
logical slot's; "" for a physical slot, which Prometheus stores as no label), as
postgres_exporter has it. That label takes the place of db-exporter's own `database`, so
these two cannot be joined with other series on it; in the default mode they are left out
(the families above carry the same data). Two differences: a slot that has not reserved WAL
yet retains 0 bytes here (NaN there), and a replica reports its slots here (postgres_exporter's
query fails in recovery).

At most `max_slot_series` slots (by name); `pg_replication_slot_series_omitted` counts the
rest. `pg_replication_slots` is readable by any role.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from exporter.collectors.base import Collector, Shape, number
from exporter.settings import ReplicationSlotCollectorSettings

# Recovery forbids pg_current_wal_lsn(): a replica's position is what it has received.
SLOTS_SQL = """
SELECT slot_name, slot_type, database, active, safe_wal_size, wal_status,
       pg_wal_lsn_diff(position, '0/0') AS current_wal_lsn,
       COALESCE(pg_wal_lsn_diff(confirmed_flush_lsn, '0/0'), 0) AS confirmed_flush_lsn,
       COALESCE(pg_wal_lsn_diff(position, restart_lsn), 0) AS retained_wal_bytes
FROM pg_replication_slots,
     LATERAL (SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn()
                          ELSE pg_current_wal_lsn() END AS position) p
ORDER BY slot_name
LIMIT :cap
"""
COUNT_SQL = "SELECT count(*) FROM pg_replication_slots"
LABELS = ["slot_name", "slot_type"]
# postgres_exporter's built-in map: its `database` is the slot's.
POSTGRES_EXPORTER_LABELS = ["slot_name", "database"]
POSTGRES_EXPORTER_ACTIVE = "pg_replication_slots_active"
POSTGRES_EXPORTER_RETAINED = "pg_replication_slots_pg_wal_lsn_diff"


class ReplicationSlotCollector(Collector[ReplicationSlotCollectorSettings]):
    name = "replication_slot"
    database_wide = True
    server_wide = True
    postgres_exporter_only = frozenset({POSTGRES_EXPORTER_ACTIVE, POSTGRES_EXPORTER_RETAINED})
    postgres_exporter_shapes: ClassVar[Mapping[str, Shape]] = {
        name: Shape(server_label=True) for name in postgres_exporter_only
    }

    async def collect(self, conn: AsyncConnection, server_version: int) -> Sequence[Metric]:
        cap = self.settings.max_slot_series
        rows = (await conn.execute(text(SLOTS_SQL), {"cap": cap})).all()
        slots = (await conn.execute(text(COUNT_SQL))).scalar_one()

        def family(name: str, doc: str, extra: Sequence[str] = ()) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=[*LABELS, *extra])

        current = family(
            "pg_replication_slot_slot_current_wal_lsn",
            "The server's WAL position in bytes (on a replica: received).",
        )
        confirmed = family(
            "pg_replication_slot_slot_confirmed_flush_lsn",
            "Last WAL position in bytes the slot's consumer confirmed (active slots; 0 for "
            "physical slots).",
        )
        active = family("pg_replication_slot_slot_is_active", "1 when a consumer uses the slot.")
        safe = family(
            "pg_replication_slot_safe_wal_size_bytes",
            "WAL bytes that can still be written before the slot is lost (only when "
            "max_slot_wal_keep_size is set).",
        )
        status = family(
            "pg_replication_slot_wal_status",
            "1 for the availability of the WAL the slot claims (reserved, extended, "
            "unreserved, lost).",
            ["wal_status"],
        )
        retained = family(
            "pg_replication_slot_retained_wal_bytes",
            "WAL bytes the slot keeps from removal (restart_lsn to the current position).",
        )
        slots_active = GaugeMetricFamily(
            POSTGRES_EXPORTER_ACTIVE,
            "1 when a consumer uses the slot (postgres_exporter's view only).",
            labels=POSTGRES_EXPORTER_LABELS,
        )
        slots_retained = GaugeMetricFamily(
            POSTGRES_EXPORTER_RETAINED,
            "WAL bytes the slot keeps from removal (postgres_exporter's view only).",
            labels=POSTGRES_EXPORTER_LABELS,
        )
        for r in rows:
            labels = [r.slot_name or "unknown", r.slot_type or "unknown"]
            theirs = [r.slot_name or "unknown", r.database or ""]
            slots_active.add_metric(theirs, 1.0 if r.active else 0.0)
            slots_retained.add_metric(theirs, number(r.retained_wal_bytes))
            current.add_metric(labels, number(r.current_wal_lsn))
            if r.active:
                confirmed.add_metric(labels, number(r.confirmed_flush_lsn))
            active.add_metric(labels, 1.0 if r.active else 0.0)
            if r.safe_wal_size is not None:
                safe.add_metric(labels, number(r.safe_wal_size))
            if r.wal_status is not None:
                status.add_metric([*labels, r.wal_status], 1.0)
            retained.add_metric(labels, number(r.retained_wal_bytes))
        omitted = GaugeMetricFamily(
            "pg_replication_slot_series_omitted",
            "Replication slots beyond max_slot_series, without series of their own.",
            labels=[],
        )
        omitted.add_metric([], max(0, slots - len(rows)))
        return [
            current,
            confirmed,
            active,
            safe,
            status,
            retained,
            omitted,
            slots_active,
            slots_retained,
        ]

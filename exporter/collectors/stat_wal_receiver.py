"""WAL receiver: on a replica, where it streams from and how far it has received.

Server-wide, from `pg_stat_wal_receiver`, labels `upstream_host, slot_name, status` as in
postgres_exporter's `stat_wal_receiver` collector: `pg_stat_wal_receiver_{receive_start_lsn,
flushed_lsn,latest_end_lsn}` (WAL positions in bytes: where streaming started, flushed to
disk, last reported to the primary), `..._receive_start_tli` and `..._received_tli`
(timelines), `pg_stat_wal_receiver_{last_msg_send,last_msg_receipt,latest_end}_timestamp_seconds`
(postgres_exporter: `..._last_msg_send_time`, `..._last_msg_receipt_time`,
`..._latest_end_time`), and `..._upstream_node` for a repmgr slot (`repmgr_slot_<node>`).
`upstream_host` is the `host` of the receiver's connection string (else the sender's host;
its first 255 characters, as a host list can be long), "" when unknown, as is a missing
`slot_name`.

postgres_exporter types the positions and times as counters; they are gauges here (a
position can restart lower on a new timeline). A primary has no WAL receiver: the collector
exports nothing there and says so once in the log; so does a replica whose receiver is not
running (restoring from an archive, or reconnecting). Without `pg_read_all_stats` (in
`pg_monitor`) the receiver's details read as NULL: the collector fails naming the grant.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from exporter.collectors.base import Collector, number, timestamp
from exporter.collectors.notices import SkipNotice
from exporter.collectors.privileges import require_role
from exporter.settings import CollectorSettings

RECEIVER_SQL = r"""
SELECT pg_is_in_recovery() AS is_replica, w.*
FROM (SELECT 1) one
LEFT JOIN (
  SELECT left(COALESCE(trim(both '''' FROM substring(conninfo FROM 'host=([^ ]*)')),
                       sender_host), 255) AS upstream_host,
         slot_name, status, received_tli, receive_start_tli,
         pg_wal_lsn_diff(receive_start_lsn, '0/0') AS receive_start_lsn,
         pg_wal_lsn_diff(flushed_lsn, '0/0') AS flushed_lsn,
         pg_wal_lsn_diff(latest_end_lsn, '0/0') AS latest_end_lsn,
         last_msg_send_time, last_msg_receipt_time, latest_end_time,
         substring(slot_name FROM 'repmgr_slot_([0-9]*)')::int AS upstream_node
  FROM pg_stat_wal_receiver
) w ON true
"""
LABELS = ["upstream_host", "slot_name", "status"]
# (column, family, help, is a timestamp)
COLUMNS = (
    ("receive_start_lsn", "pg_stat_wal_receiver_receive_start_lsn",
     "First WAL position in bytes the receiver used when it started.", False),
    ("receive_start_tli", "pg_stat_wal_receiver_receive_start_tli",
     "First timeline the receiver used when it started.", False),
    ("flushed_lsn", "pg_stat_wal_receiver_flushed_lsn",
     "Last WAL position in bytes received and flushed to disk.", False),
    ("received_tli", "pg_stat_wal_receiver_received_tli",
     "Timeline of the last WAL position received and flushed to disk.", False),
    ("last_msg_send_time", "pg_stat_wal_receiver_last_msg_send_timestamp_seconds",
     "Unix time the sender sent the last message received.", True),
    ("last_msg_receipt_time", "pg_stat_wal_receiver_last_msg_receipt_timestamp_seconds",
     "Unix time the last message from the sender was received.", True),
    ("latest_end_lsn", "pg_stat_wal_receiver_latest_end_lsn",
     "Last WAL position in bytes reported to the sender.", False),
    ("latest_end_time", "pg_stat_wal_receiver_latest_end_timestamp_seconds",
     "Unix time of the last WAL position reported to the sender.", True),
)  # fmt: skip
NOT_A_REPLICA = "the server is not a replica (no WAL receiver): nothing to export"
NOT_RECEIVING = "no WAL receiver is running on this replica: nothing to export"


class StatWalReceiverCollector(Collector[CollectorSettings]):
    name = "stat_wal_receiver"
    database_wide = True
    server_wide = True
    postgres_exporter_names: ClassVar[Mapping[str, str]] = {
        "pg_stat_wal_receiver_last_msg_send_timestamp_seconds": (
            "pg_stat_wal_receiver_last_msg_send_time"
        ),
        "pg_stat_wal_receiver_last_msg_receipt_timestamp_seconds": (
            "pg_stat_wal_receiver_last_msg_receipt_time"
        ),
        "pg_stat_wal_receiver_latest_end_timestamp_seconds": (
            "pg_stat_wal_receiver_latest_end_time"
        ),
    }

    def __init__(self, datname: str, settings: CollectorSettings) -> None:
        super().__init__(datname, settings)
        self._notice = SkipNotice(self.name, datname)

    async def collect(self, conn: AsyncConnection, server_version: int) -> Sequence[Metric]:
        await require_role(conn, "pg_read_all_stats", "see the WAL receiver's connection")
        row = (await conn.execute(text(RECEIVER_SQL))).one()
        if not row.is_replica or row.status is None:
            self._notice.skipped(NOT_RECEIVING if row.is_replica else NOT_A_REPLICA)
            return []
        self._notice.skipped(None)
        labels = [row.upstream_host or "", row.slot_name or "", row.status]
        families: list[Metric] = []
        for column, family_name, doc, is_time in COLUMNS:
            family = GaugeMetricFamily(family_name, doc, labels=LABELS)
            value = getattr(row, column)
            family.add_metric(labels, timestamp(value) if is_time else number(value))
            families.append(family)
        node = GaugeMetricFamily(
            "pg_stat_wal_receiver_upstream_node",
            "Node id of the upstream node (repmgr slots, repmgr_slot_<id>, only).",
            labels=LABELS,
        )
        if row.upstream_node is not None:
            node.add_metric(labels, float(row.upstream_node))
        families.append(node)
        return families

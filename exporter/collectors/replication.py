"""Replication: is this server a replica, how far behind is it, and its standbys.

Server-wide, labels exactly postgres_exporter's (its `replication` collector and its built-in
`pg_stat_replication` map):

- `pg_replication_is_replica` (1 in recovery), `pg_replication_lag_seconds` (0 on a primary,
  and 0 while the replica has replayed everything it received, else the time since the last
  replayed transaction) and `pg_replication_last_replay_seconds` (time since the last
  replayed transaction; 0 on a primary).
- One row per WAL sender of `pg_stat_replication` (labels `application_name, client_addr,
  state, slot_name`): `pg_stat_replication_pg_current_wal_lsn_bytes` (this server's WAL
  position) and `pg_stat_replication_replay_lag_bytes` (postgres_exporter's
  `..._pg_wal_lsn_diff`: WAL sent but not yet replayed by that standby), plus the server's
  own time lags `pg_stat_replication_{write,flush,replay}_lag_seconds` (0 when idle: the
  server reports NULL once a standby has caught up). `slot_name` is the slot the standby
  streams through ("" without one; postgres_exporter puts the pid there, its query having no
  such column); a Unix-socket standby has `client_addr=""`. Standbys with the same labels
  (say two `pg_receivewal` from one host, without a slot) share one series, the furthest
  behind. At most `max_standby_series` standbys (by application_name),
  `pg_stat_replication_series_omitted` counts the rest.

On a replica, its cascading standbys' byte positions need `pg_current_wal_lsn()`, which
recovery forbids: those two families are skipped (said once in the log), the rest is exported.
Without `pg_read_all_stats` (in `pg_monitor`) the WAL senders' details read as NULL: the
collector fails with a message naming the grant instead.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from exporter.collectors.base import Collector, number
from exporter.collectors.notices import SkipNotice
from exporter.collectors.privileges import require_role
from exporter.settings import ReplicationCollectorSettings

# postgres_exporter's query, with its NULLs (a primary's replay timestamp) made 0.
ROLE_SQL = """
SELECT pg_is_in_recovery() AS is_replica,
       CASE WHEN NOT pg_is_in_recovery() THEN 0
            WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
            ELSE GREATEST(0, extract(epoch FROM now() - pg_last_xact_replay_timestamp()))
       END AS lag,
       GREATEST(0, extract(epoch FROM now() - pg_last_xact_replay_timestamp())) AS last_replay,
       (SELECT count(*) FROM pg_stat_replication) AS standbys
"""
# The WAL senders, with this server's position where it has one (not in recovery).
STANDBYS_SQL = """
SELECT r.application_name, host(r.client_addr) AS client_addr, r.state, s.slot_name,
       CASE WHEN pg_is_in_recovery() THEN NULL
            ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0') END AS current_wal_lsn,
       CASE WHEN pg_is_in_recovery() THEN NULL
            ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), r.replay_lsn) END AS replay_lag_bytes,
       extract(epoch FROM r.write_lag) AS write_lag,
       extract(epoch FROM r.flush_lag) AS flush_lag,
       extract(epoch FROM r.replay_lag) AS replay_lag
FROM pg_stat_replication r
LEFT JOIN pg_replication_slots s ON s.active_pid = r.pid
ORDER BY r.application_name, r.pid
LIMIT :cap
"""
STANDBY_LABELS = ["application_name", "client_addr", "state", "slot_name"]
ON_REPLICA = (
    "the server is a replica: pg_stat_replication_pg_current_wal_lsn_bytes and "
    "pg_stat_replication_replay_lag_bytes are primary-only, skipped"
)


class ReplicationCollector(Collector[ReplicationCollectorSettings]):
    name = "replication"
    database_wide = True
    server_wide = True
    postgres_exporter_names: ClassVar[Mapping[str, str]] = {
        "pg_stat_replication_replay_lag_bytes": "pg_stat_replication_pg_wal_lsn_diff",
    }

    def __init__(self, datname: str, settings: ReplicationCollectorSettings) -> None:
        super().__init__(datname, settings)
        self._notice = SkipNotice(self.name, datname)

    async def collect(self, conn: AsyncConnection, server_version: int) -> Sequence[Metric]:
        await require_role(conn, "pg_read_all_stats", "see the WAL senders in pg_stat_replication")
        role = (await conn.execute(text(ROLE_SQL))).one()
        cap = self.settings.max_standby_series
        rows = (await conn.execute(text(STANDBYS_SQL), {"cap": cap})).all()
        self._notice.skipped(ON_REPLICA if role.is_replica else None)

        families: list[Metric] = []
        for family_name, doc, value in (
            ("pg_replication_is_replica", "1 when the server is a replica (in recovery).",
             1.0 if role.is_replica else 0.0),
            ("pg_replication_lag_seconds",
             "Time since the last replayed transaction while WAL received is not yet replayed "
             "(0 on a primary or when caught up).", number(role.lag)),
            ("pg_replication_last_replay_seconds",
             "Time since the last transaction replayed (0 on a primary).",
             number(role.last_replay)),
        ):  # fmt: skip
            family = GaugeMetricFamily(family_name, doc, labels=[])
            family.add_metric([], value)
            families.append(family)
        families.extend(self.standby_families(rows, bool(role.is_replica)))
        omitted = GaugeMetricFamily(
            "pg_stat_replication_series_omitted",
            "Standbys beyond max_standby_series, without series of their own.",
            labels=[],
        )
        omitted.add_metric([], max(0, role.standbys - len(rows)))
        families.append(omitted)
        return families

    def standby_families(self, rows: Sequence[Any], is_replica: bool) -> list[Metric]:
        columns = [
            ("write_lag", "pg_stat_replication_write_lag_seconds",
             "Time until the standby wrote recent WAL (0 when idle)."),
            ("flush_lag", "pg_stat_replication_flush_lag_seconds",
             "Time until the standby flushed recent WAL (0 when idle)."),
            ("replay_lag", "pg_stat_replication_replay_lag_seconds",
             "Time until the standby replayed recent WAL (0 when idle)."),
        ]  # fmt: skip
        if not is_replica:
            columns[:0] = [
                ("current_wal_lsn", "pg_stat_replication_pg_current_wal_lsn_bytes",
                 "This server's WAL position in bytes."),
                ("replay_lag_bytes", "pg_stat_replication_replay_lag_bytes",
                 "WAL bytes sent to the standby and not yet replayed there."),
            ]  # fmt: skip
        # Standbys that look alike (two without a slot, from one host, under one name) share
        # a label set: one series each, the furthest behind, never a repeated series.
        alike: dict[tuple[str, ...], list[Any]] = defaultdict(list)
        for r in rows:
            key = (r.application_name or "", r.client_addr or "", r.state or "",
                   r.slot_name or "")  # fmt: skip
            alike[key].append(r)
        families: list[Metric] = []
        for column, family_name, doc in columns:
            family = GaugeMetricFamily(family_name, doc, labels=STANDBY_LABELS)
            for labels, group in alike.items():
                family.add_metric(list(labels), max(number(getattr(r, column)) for r in group))
            families.append(family)
        return families

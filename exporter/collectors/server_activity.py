"""Server activity: backends of every database of the server, by state, and their oldest
transactions: what `max_connections` limits, whichever database the clients connect to.

From `pg_stat_activity`, for every database of the server (postgres_exporter's built-in
`pg_stat_activity` map, where the per-database `activity` collector sees one database):

- `pg_stat_activity_server_connections{datname,state,backend_type}`: backends connected to a
  database. `backend_type` is `client backend` (the connections `max_connections` limits;
  0 for each of postgres_exporter's six states, so a threshold never sees a gap),
  `autovacuum worker` (`autovacuum_max_workers`), `walsender` (a logical replication
  connection, `max_wal_senders`), `parallel worker`, or `background worker` for any other
  background worker (`max_worker_processes`). Server processes without a database
  (checkpointer, physical WAL senders...) are not counted; a missing state is `unknown`.
- `pg_stat_activity_server_max_transaction_age_seconds{datname,state}`: the oldest open
  transaction per database and state, every backend's (0: none), as postgres_exporter's
  `max_tx_duration`.

At most `max_databases` databases keep their own `datname` (the connected one, then the
most connected, by name on ties); the others are summed under `datname="other"`. With
`compatibility: postgres_exporter` these are its `pg_stat_activity_count` and
`pg_stat_activity_max_tx_duration{datname,state,server}`. Without `pg_read_all_stats`
(which `pg_monitor` includes) other roles' backends hide their state and transaction: the
collector fails instead, naming the grant.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from exporter.collectors.base import Collector, Shape, number
from exporter.collectors.kept_databases import OTHER, kept_databases
from exporter.collectors.privileges import require_role
from exporter.settings import ServerDatabasesCollectorSettings

# One row per (database, state, backend type) with backends, one with NULLs per database
# without any. Ages use one wall-clock reading for the whole run.
SERVER_ACTIVITY_SQL = """
SELECT d.datname, d.datname = current_database() AS connected,
       a.state, a.backend_type, a.connections, a.oldest_transaction
FROM pg_database d
LEFT JOIN (
  SELECT s.datid, COALESCE(s.state, 'unknown') AS state,
         CASE WHEN s.backend_type IN ('client backend', 'autovacuum worker', 'walsender',
                                      'parallel worker')
              THEN s.backend_type ELSE 'background worker' END AS backend_type,
         count(*) AS connections,
         extract(epoch FROM clock.at - min(s.xact_start)) AS oldest_transaction
  FROM pg_stat_activity s CROSS JOIN (SELECT clock_timestamp() AS at) clock
  GROUP BY 1, 2, 3, clock.at
) a ON a.datid = d.oid
ORDER BY d.datname
"""

CLIENT_BACKEND = "client backend"
# postgres_exporter's states, each reported (0 when none) for client backends.
STATES = (
    "active",
    "idle",
    "idle in transaction",
    "idle in transaction (aborted)",
    "fastpath function call",
    "disabled",
)


class ServerActivityCollector(Collector[ServerDatabasesCollectorSettings]):
    name = "server_activity"
    database_wide = True
    server_wide = True
    # postgres_exporter's built-in pg_stat_activity metrics: by datname and state, with its
    # `server` label (backend types summed).
    postgres_exporter_names: ClassVar[Mapping[str, str]] = {
        "pg_stat_activity_server_connections": "pg_stat_activity_count",
        "pg_stat_activity_server_max_transaction_age_seconds": "pg_stat_activity_max_tx_duration",
    }
    postgres_exporter_shapes: ClassVar[Mapping[str, Shape]] = {
        "pg_stat_activity_server_connections": Shape(
            labels=("datname", "state"), server_label=True
        ),
        "pg_stat_activity_server_max_transaction_age_seconds": Shape(server_label=True),
    }

    async def collect(self, conn: AsyncConnection, server_version: int) -> Sequence[Metric]:
        # Without it, other roles' backends show no state and no transaction start.
        await require_role(
            conn, "pg_read_all_stats", "see other roles' sessions in pg_stat_activity"
        )
        rows = (await conn.execute(text(SERVER_ACTIVITY_SQL))).all()
        return self.families(rows)

    def families(self, rows: Sequence[Any]) -> list[Metric]:
        # The connected database, then the most connected.
        kept = kept_databases(rows, lambda r: r.connections or 0, self.settings.max_databases)
        folded = any(r.datname not in kept for r in rows)
        counts: Counter[tuple[str, str, str]] = Counter()
        ages: dict[tuple[str, str], float] = {}
        for datname in sorted(kept | ({OTHER} if folded else set())):
            for state in STATES:
                counts[(datname, state, CLIENT_BACKEND)] += 0
                ages[(datname, state)] = 0.0
        for r in rows:
            if r.state is None:
                continue  # a database without backends: its zeros are already there
            datname = r.datname if r.datname in kept else OTHER
            counts[(datname, r.state, r.backend_type)] += r.connections
            age = number(r.oldest_transaction)
            ages[(datname, r.state)] = max(ages.get((datname, r.state), 0.0), age)

        connections = GaugeMetricFamily(
            "pg_stat_activity_server_connections",
            "Backends connected to each database of the server, by state and backend type "
            "(client backend: what max_connections limits; at most max_databases databases, "
            "the rest as other).",
            labels=["datname", "state", "backend_type"],
        )
        for key, count in sorted(counts.items()):
            connections.add_metric(list(key), count)
        max_age = GaugeMetricFamily(
            "pg_stat_activity_server_max_transaction_age_seconds",
            "Age of the oldest open transaction per database of the server and state (0: none).",
            labels=["datname", "state"],
        )
        for (datname, state), age in sorted(ages.items()):
            max_age.add_metric([datname, state], age)
        return [connections, max_age]

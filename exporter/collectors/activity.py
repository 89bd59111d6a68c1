"""Activity: who is connected to this database, doing what, and for how long.

From `pg_stat_activity` (client backends of the current database only):

- `pg_stat_activity_connections{datname,state,application_name,wait_event_type}`: connections. At
  most `max_application_names` application names are kept (the most connected first; the
  exporter's own `db-exporter` and the configured `application_name` always); the others are
  counted under `application_name="other"`. A missing state is `unknown`, no wait `none`, an
  empty application name `unknown`.
- `pg_stat_activity_oldest_transaction_age_seconds`, `..._oldest_query_age_seconds` (running
  queries only), `pg_stat_activity_idle_in_transaction_connections` and
  `..._oldest_idle_in_transaction_age_seconds` (since the session went idle in its transaction).
  The exporter's own connections are left out of these four: their work is bounded by their
  timeouts and would only blur the application's picture. 0 when there is nothing to measure.
- `pg_stat_activity_application_connections{datname,application_name}`, when
  `application_name` is configured: every connection the application holds on the server,
  whatever its state (0 when none), to compare with the application's own pool metrics.

A role that cannot see other roles' sessions (not a member of `pg_read_all_stats`, which
`pg_monitor` includes) would see their state, wait and times as NULL and report wrong ages:
the collector fails instead, with a message saying which grant is missing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from exporter.collectors.base import Collector, number
from exporter.collectors.privileges import require_role
from exporter.probe import APPLICATION_NAME
from exporter.settings import ActivityCollectorSettings

# One row per (state, application_name, wait_event_type); ages use the wall clock, not now()
# (the start of this run's transaction), read once for the whole run so that every age is
# measured from the same instant, and leave the exporter's own connections out.
ACTIVITY_SQL = """
SELECT state, application_name, wait_event_type, count(*) AS connections,
       extract(epoch FROM at - min(xact_start) FILTER (WHERE mine)) AS oldest_transaction,
       extract(epoch FROM at - min(xact_start)) AS oldest_transaction_any,
       extract(epoch FROM at - min(query_start) FILTER (WHERE mine
         AND state = 'active')) AS oldest_query,
       count(*) FILTER (WHERE mine AND state LIKE 'idle in transaction%') AS idle_in_transaction,
       extract(epoch FROM at - min(state_change) FILTER (WHERE mine
         AND state LIKE 'idle in transaction%')) AS oldest_idle_in_transaction
FROM (
  SELECT s.*, s.application_name IS DISTINCT FROM :exporter AS mine, clock.at
  FROM pg_stat_activity s CROSS JOIN (SELECT clock_timestamp() AS at) clock
  WHERE s.datname = current_database() AND s.backend_type = 'client backend'
) a
GROUP BY state, application_name, wait_event_type, at
"""

LABELS = ["datname", "state", "application_name", "wait_event_type"]
UNKNOWN = "unknown"
OTHER = "other"


class ActivityCollector(Collector[ActivityCollectorSettings]):
    name = "activity"
    # postgres_exporter's pg_stat_activity_count and ..._max_tx_duration count every database
    # of the server: the server_activity collector renders them, not this one.
    database_wide = True

    async def collect(self, conn: AsyncConnection, server_version: int) -> Sequence[Metric]:
        # Without it, other roles' sessions show no state, wait event or times.
        await require_role(
            conn, "pg_read_all_stats", "see other roles' sessions in pg_stat_activity"
        )
        rows = (await conn.execute(text(ACTIVITY_SQL), {"exporter": APPLICATION_NAME})).all()
        return self.families(rows)

    def kept_names(self, rows: Sequence[Any]) -> set[str]:
        """The application names that keep their own label value."""
        per_name: Counter[str] = Counter()
        for r in rows:
            per_name[r.application_name or UNKNOWN] += r.connections
        kept = {APPLICATION_NAME}
        if self.settings.application_name is not None:
            kept.add(self.settings.application_name)
        ranked = sorted(per_name, key=lambda name: (-per_name[name], name))
        kept.update(ranked[: self.settings.max_application_names])
        return kept

    def families(self, rows: Sequence[Any]) -> list[Metric]:
        kept = self.kept_names(rows)
        counts: Counter[tuple[str, str, str]] = Counter()
        for r in rows:
            name = r.application_name or UNKNOWN
            label = name if name in kept else OTHER
            counts[(r.state or UNKNOWN, label, r.wait_event_type or "none")] += r.connections
        connections = GaugeMetricFamily(
            "pg_stat_activity_connections",
            "Client connections to this database by state, application_name (capped by "
            "max_application_names, the rest as other) and wait_event_type.",
            labels=LABELS,
        )
        for (state, name, wait), count in sorted(counts.items()):
            connections.add_metric([self.datname, state, name, wait], count)

        by_state: dict[str, float] = {}
        for r in rows:
            if r.oldest_transaction_any is not None:
                state = r.state or UNKNOWN
                by_state[state] = max(by_state.get(state, 0.0), number(r.oldest_transaction_any))
        max_age = GaugeMetricFamily(
            "pg_stat_activity_max_transaction_age_seconds",
            "Age of the oldest open transaction by connection state (the exporter's own "
            "included; states without a transaction absent).",
            labels=["datname", "state"],
        )
        for state, age in sorted(by_state.items()):
            max_age.add_metric([self.datname, state], age)
        families: list[Metric] = [connections, max_age]
        for column, family_name, doc in (
            (
                "oldest_transaction",
                "pg_stat_activity_oldest_transaction_age_seconds",
                "Age of the oldest open transaction (0: none), the exporter's own left out.",
            ),
            (
                "oldest_query",
                "pg_stat_activity_oldest_query_age_seconds",
                "Run time of the longest-running active query (0: none), the exporter's own "
                "left out.",
            ),
            (
                "oldest_idle_in_transaction",
                "pg_stat_activity_oldest_idle_in_transaction_age_seconds",
                "Longest time a session has been idle inside an open transaction (0: none).",
            ),
        ):
            ages = [number(getattr(r, column)) for r in rows if getattr(r, column) is not None]
            family = GaugeMetricFamily(family_name, doc, labels=["datname"])
            family.add_metric([self.datname], max([0.0, *ages]))
            families.append(family)
        idle = GaugeMetricFamily(
            "pg_stat_activity_idle_in_transaction_connections",
            "Sessions idle inside an open transaction (including aborted ones), the exporter's "
            "own left out.",
            labels=["datname"],
        )
        idle.add_metric([self.datname], sum(r.idle_in_transaction for r in rows))
        families.append(idle)

        application = self.settings.application_name
        if application is not None:
            held = GaugeMetricFamily(
                "pg_stat_activity_application_connections",
                "Server-side connections with the configured application_name, in any state; "
                "compare with the application's db_connections_active + db_connections_idle.",
                labels=["datname", "application_name"],
            )
            held.add_metric(
                [self.datname, application],
                sum(r.connections for r in rows if r.application_name == application),
            )
            families.append(held)
        return families

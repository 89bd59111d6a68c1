"""The health strip's facts, per database: does it answer (and why not), the application's
pool (in use against its size and overflow), checkout waits and timeouts lately, collectors
failing, migrations pending or drift. Read from the runner, the in-process metrics and the
collectors' snapshot; nothing here waits for a database."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from prometheus_client.metrics_core import Metric

from exporter.collectors.exposition import SnapshotStore
from exporter.collectors.runner import DatabaseView
from exporter.metrics import Metrics
from exporter.oncall.recent import PoolHistory, PoolTotals


@dataclass(frozen=True)
class Pool:
    in_use: float
    size: float
    overflow: float  # connections open beyond the size right now
    max_overflow: float  # -1: unlimited


@dataclass(frozen=True)
class CollectorState:
    name: str
    # "ok", "failing", "waiting" (no run yet, or the election not settled), "elsewhere" (another
    # exporter runs it) or "down" (not running while the database does not answer)
    state: str
    reason: str | None = None


@dataclass(frozen=True)
class Migrations:
    pending: float | None
    drift: float | None  # None: the collector compares no models


@dataclass(frozen=True)
class DatabaseHealth:
    name: str
    up: bool | None  # None: not checked yet
    reason: str | None  # None: this exporter does not check the database
    pool: Pool | None  # None: no instrumented pool in this process
    recent: PoolTotals | None
    collectors: tuple[CollectorState, ...]
    migrations: Migrations | None  # None: the migrations collector has no run

    @property
    def failing(self) -> list[CollectorState]:
        return [c for c in self.collectors if c.state == "failing"]


@dataclass(frozen=True)
class Health:
    databases: tuple[DatabaseHealth, ...]
    recent_seconds: float  # the span `DatabaseHealth.recent` covers (0: since start)


def _by_database(families: Iterable[Metric], name: str) -> dict[str, float]:
    return {
        s.labels["database"]: s.value
        for family in families
        for s in family.samples
        if s.name == name and "database" in s.labels
    }


def _pools(metrics: Metrics) -> dict[str, Pool]:
    pools = list(metrics.pools.collect())
    size = _by_database(pools, "db_pool_size")
    overflow = _by_database(pools, "db_pool_overflow_connections")
    max_overflow = _by_database(pools, "db_pool_max_overflow")
    active = _by_database(metrics.connections_active.collect(), "db_connections_active")
    return {
        db: Pool(active.get(db, 0.0), size[db], overflow.get(db, 0.0), max_overflow.get(db, 0.0))
        for db in size
    }


def _collectors(
    databases: Iterable[DatabaseView], metrics: Metrics
) -> dict[str, list[CollectorState]]:
    succeeded = {
        (s.labels["database"], s.labels["collector"]): s.value
        for family in metrics.collector_success.collect()
        for s in family.samples
    }
    found: dict[str, list[CollectorState]] = {}
    for database in databases:
        states = found.setdefault(database.name, [])
        for job in database.jobs:
            name = job.collector.name
            if database.state.ok is False:
                states.append(CollectorState(name, "down", job.failure))
            elif not job.active:
                states.append(
                    CollectorState(name, "elsewhere" if database.leader is False else "waiting")
                )
            elif job.failure is not None:
                states.append(CollectorState(name, "failing", job.failure))
            elif succeeded.get((database.name, name)) == 1:
                states.append(CollectorState(name, "ok"))
            else:
                states.append(CollectorState(name, "waiting"))
    return found


def _migrations(store: SnapshotStore) -> dict[str, Migrations]:
    found = {}
    for database, families in store.runs("migrations"):
        values = {s.name: s.value for family in families for s in family.samples}
        found[database] = Migrations(
            values.get("db_migrations_pending"), values.get("db_schema_drift_differences")
        )
    return found


def gather(
    databases: Sequence[DatabaseView],
    store: SnapshotStore | None,
    metrics: Metrics,
    history: PoolHistory,
) -> Health:
    """`databases` and `store`: the runner's (none and None without one)."""
    pools = _pools(metrics)
    span, recent = history.recent()
    states = {database.name: database.state for database in databases}
    collectors = _collectors(databases, metrics)
    migrations = _migrations(store) if store is not None else {}
    names = sorted(states.keys() | pools.keys() | recent.keys())
    return Health(
        tuple(
            DatabaseHealth(
                name,
                states[name].ok if name in states else None,
                states[name].reason if name in states else None,
                pools.get(name),
                recent.get(name),
                tuple(collectors.get(name, ())),
                migrations.get(name),
            )
            for name in names
        ),
        span,
    )

"""Runs each database's check and collectors on their own intervals, each under a timeout.

One `DatabaseWorker` per configured database owns the exporter's one-connection engine for it
and runs, one at a time on that connection, the check that feeds `db_up` and `/readyz` and every
enabled collector when it is due. Serial on purpose: the exporter never holds more than one
connection per database, and a collector that fails (lock timeout, statement timeout, missing
privilege, a bug) only fails itself, because each run has its own server-side
`statement_timeout`/`lock_timeout`, its own client-side deadline, and its own error handling.

While the check fails, collectors are not attempted (they report `success 0` and their series
are withdrawn); the check alone reconnects, and overdue collectors run as soon as it succeeds.
`/metrics` never waits for any of this: it serves the last snapshot (`SnapshotStore`).

Leader election (`election` in a database's settings, on by default): when several replicas of
an application each embed the exporter, every check also runs `pg_try_advisory_lock(lock_key)`
on the exporter's connection, unless pg_locks shows this session already holds it. The lock is
session-level: it lasts as long as the connection, so when its holder dies (or loses its
connection) the server frees it and another exporter takes it at its next check. Only the
holder (the leader, `exporter_collector_leader 1`) runs the database-wide collectors
(`Collector.database_wide`); a follower withdraws their series and their runner metrics
(`exporter_collector_success` and its companions have no series there, so nothing alerts).

Discovery (`discover` in a database's settings): the entry's worker also lists the server's
databases (`DiscoveryCollector`, a database-wide job, so only the leader discovers), and the
runner gives each listed database a worker of its own named `<name>/<datname>`. A discovered
worker runs only the collectors that are not `server_wide` (the entry's worker runs those once
for the server), without an election of its own, and connects only for each use, so an idle
connection of ours never keeps anyone from dropping the database. When its database is gone,
its check asks for a new listing at once instead of logging, and the listing lets it go: its
series and runner metrics are withdrawn and its engine closed.

Several configured entries on one server (exporter/collectors/servers.py): each check also
reads which server answered, and each `server_wide` collector runs on the first entry of its
server (config order) that answers and enables it; the others retract that job as a follower
does. A worker applies what the others' checks change at the top of its own loop (they wake
it), never from another task, so a run in progress never puts back series just withdrawn.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics import Gauge
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from exporter.collectors import COLLECTORS
from exporter.collectors.base import Collector, CollectorError
from exporter.collectors.compatibility import (
    POSTGRES_EXPORTER,
    default_view,
    postgres_exporter_view,
)
from exporter.collectors.custom import CustomQueryCollector
from exporter.collectors.discovery import DiscoveryCollector
from exporter.collectors.exposition import SnapshotStore
from exporter.collectors.servers import (
    ServerIdentity,
    ServerWideOwners,
    Unidentified,
    identify,
    ownership_line,
)
from exporter.collectors.slices import in_slices
from exporter.dsn import parse_dsn
from exporter.metrics import MULTIPROCESS, Metrics
from exporter.probe import ProbeState, exporter_engine, one_line
from exporter.settings import (
    CollectorSettings,
    Compatibility,
    DatabaseSettings,
    ElectionSettings,
)
from exporter.sqlstate import sqlstate_of

log = logging.getLogger("exporter.collectors")

# The client-side deadline of a run is its statement_timeout plus this, so that the server's
# own, clearer error ("canceling statement due to statement timeout") normally comes first.
CLIENT_GRACE_SECONDS = 1.0

_CHECK = text("SELECT current_setting('server_version_num')::int, current_database()")
# The oldest server whose catalogs and statistics views the collectors' queries know.
MIN_SERVER_VERSION = 130000
# The newest major version the collectors' queries were tested on. A newer server runs: each
# query chosen by version takes its form for this version, which the log says once.
NEWEST_TESTED_SERVER_VERSION = 180000
# Take the election lock unless this session holds it already (session-level advisory locks
# stack: each extra pg_try_advisory_lock would need its own unlock). CASE evaluates in order.
# pg_locks shows a bigint key as classid (high 32 bits), objid (low 32 bits), objsubid 1.
_ELECT = text(
    "SELECT CASE WHEN EXISTS (SELECT FROM pg_locks WHERE locktype = 'advisory'"
    " AND pid = pg_backend_pid() AND granted AND objsubid = 1"
    " AND classid::bigint = :high AND objid::bigint = :low)"
    " THEN true ELSE pg_try_advisory_lock(:key) END"
)
# Per-run timeouts, local to the run's transaction (one round trip).
_SET_TIMEOUTS = text(
    "SELECT set_config('statement_timeout', :statement_timeout, true),"
    " set_config('lock_timeout', :lock_timeout, true)"
)
# SQLSTATE classes that mean the connection, not the query, failed: 08 connection exception,
# 57P01-57P03 server shutting down or not accepting connections.
_CONNECTION_SQLSTATES = ("08", "57P01", "57P02", "57P03")
# invalid_catalog_name: "database ... does not exist" (a discovered database was dropped).
_NO_SUCH_DATABASE = "3D000"


def _milliseconds(seconds: float) -> str:
    return f"{max(1, int(seconds * 1000))}ms"


def _query_error(exc: BaseException) -> bool:
    """True when the server refused the query itself (the connection is fine)."""
    if isinstance(exc, CollectorError):
        return True
    if not isinstance(exc, DBAPIError) or exc.connection_invalidated:
        return False
    sqlstate = sqlstate_of(exc)
    return sqlstate is not None and not sqlstate.startswith(_CONNECTION_SQLSTATES)


class UnsupportedServerError(CollectorError):
    """The server is older than every query db-exporter has for it."""


def check_server_version(version: int) -> None:
    """Refuse, in one line, a server older than `MIN_SERVER_VERSION` (server_version_num)."""
    if version < MIN_SERVER_VERSION:
        raise UnsupportedServerError(
            f"PostgreSQL {version // 10000} is not supported: db-exporter needs "
            f"PostgreSQL {MIN_SERVER_VERSION // 10000} or newer"
        )


def newer_than_tested(version: int) -> str | None:
    """The log line for a server newer than the collectors were tested on, else None."""
    if version // 10000 <= NEWEST_TESTED_SERVER_VERSION // 10000:
        return None
    tested = NEWEST_TESTED_SERVER_VERSION // 10000
    return (
        f"PostgreSQL {version // 10000} is newer than db-exporter was tested on "
        f"({MIN_SERVER_VERSION // 10000}-{tested}): queries chosen by server version fall back "
        f"to their PostgreSQL {tested} form; a collector whose view changed fails alone"
    )


def _server_label(dsn: str) -> str:
    """postgres_exporter's `server` label: host:port of the DSN."""
    url = parse_dsn(dsn)
    return f"{url.host or 'localhost'}:{url.port or 5432}"


def _lock_parts(key: int) -> dict[str, int]:
    """`_ELECT`'s parameters: the key, and its two halves as pg_locks shows them."""
    unsigned = key & 0xFFFF_FFFF_FFFF_FFFF
    return {"key": key, "high": unsigned >> 32, "low": unsigned & 0xFFFF_FFFF}


def _remove_series(gauge: Gauge, *labels: str) -> None:
    """Withdraw one labelled series of a runner metric."""
    if MULTIPROCESS:
        # Values live in files that outlive remove(): NaN, which no `== 0` matches.
        gauge.labels(*labels).set(float("nan"))
        return
    with suppress(KeyError):
        gauge.remove(*labels)


def _stopping() -> bool:
    """True when this task is being cancelled from outside (the runner is stopping): an error
    raised while the driver was interrupted must not be taken for a database failure."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class _Job:
    """One enabled collector of one database, with its schedule and its runner metrics.

    An inactive job (a database-wide collector while another exporter leads, a server-wide one
    another entry of its server runs) is not run and has no runner metrics; `activate()` gives
    it fresh ones and makes it due at once."""

    duration: Gauge
    success: Gauge
    last_success: Gauge

    def __init__(
        self,
        collector: Collector[Any],
        settings: CollectorSettings,
        metrics: Metrics,
        db: str,
        active: bool = True,
    ) -> None:
        self.collector = collector
        self.settings = settings
        self.next_due = 0.0
        self.failure: str | None = None  # the last failure's reason, for logging changes only
        self.active = False
        self._metrics = metrics
        self._labels = (collector.name, db)
        if active:
            self.activate()

    def activate(self) -> None:
        m = self._metrics
        self.duration = m.collector_duration.labels(*self._labels)
        self.success = m.collector_success.labels(*self._labels)
        self.last_success = m.collector_last_success.labels(*self._labels)
        self.success.set(0)
        self.last_success.set(0)
        self.active = True
        self.next_due = 0.0
        self.failure = None

    def retract(self) -> None:
        m = self._metrics
        for gauge in (m.collector_duration, m.collector_success, m.collector_last_success):
            _remove_series(gauge, *self._labels)
        self.active = False
        self.failure = None


@dataclass(frozen=True)
class JobView:
    """One enabled collector of a database, as the on-call page reads it."""

    collector: Collector[Any]
    active: bool  # False: another exporter leads, or another entry of the server runs it
    failure: str | None  # the last run's failure; None after a success


@dataclass(frozen=True)
class DatabaseView:
    """One database's worker, as the on-call page reads it: a copy, taken when asked."""

    name: str
    state: ProbeState
    leader: bool | None  # None: the election not settled yet
    jobs: tuple[JobView, ...]


class DatabaseWorker:
    """The check and the collectors of one database, on the exporter's own connection."""

    def __init__(
        self,
        settings: DatabaseSettings,
        metrics: Metrics,
        store: SnapshotStore,
        collectors: Mapping[str, type[Collector[Any]]] = COLLECTORS,
        compatibility: Compatibility = "default",
        *,
        persistent: bool = True,
        gone: Callable[[], None] | None = None,
        owners: ServerWideOwners | None = None,
    ) -> None:
        self.settings = settings
        self.state = ProbeState()
        self._metrics = metrics
        # Several configured entries: each check also reads which server answered, and the
        # server-wide collectors run on one entry per server (exporter/collectors/servers.py).
        self._owners = owners
        self.server: ServerIdentity | None = None  # the last one read
        self._elsewhere: dict[str, str] = {}  # server-wide collector -> the entry running it
        # A discovered database's: called (instead of logging) when its database no longer exists.
        self._gone = gone
        self._wake = asyncio.Event()
        self._leaving = False  # set by leave(): run() returns between two uses of the database
        self.server_version = 0
        self.datname = ""  # the database's real name, once a check has read it
        self._store = store
        self._compatible = compatibility == POSTGRES_EXPORTER
        self._server = _server_label(settings.dsn)
        self._up = metrics.db_up.labels(settings.name)
        self._up.set(0)
        self._up_value = 0
        self._health: tuple[int, int] | None = None  # (pg_up, pg_exporter_last_scrape_error)
        self._engine = exporter_engine(settings.dsn, settings.check_timeout_seconds, persistent)
        self._check_due = 0.0
        # Election: None until a check has settled it (and again after losing the connection,
        # which frees the lock); with election off this exporter always leads.
        self._election = settings.election
        self.leader: bool | None = None if settings.election.enabled else True
        # The last election's result, kept through an outage: a database-wide job handed to
        # this entry while its database is down starts as that result says (see `_wanted`).
        self._last_leader = self.leader
        self._leader = metrics.collector_leader.labels(settings.name)
        self._leader.set(0 if settings.election.enabled else 1)
        self.jobs: list[_Job] = []
        for name, cls in collectors.items():
            # A collector outside the configurable set (tests pass their own) brings its own.
            options: CollectorSettings = getattr(settings.collectors, name, cls.default_settings)
            if options.enabled:
                self.add_job(cls(settings.name, options), options)
        for query in settings.custom_queries:
            if query.enabled:
                self.add_job(CustomQueryCollector(settings.name, query), query)

    def add_job(self, collector: Collector[Any], options: CollectorSettings) -> _Job:
        # Waits for the election, or for the server's entries to be known, when there are.
        job = _Job(collector, options, self._metrics, self.name, active=False)
        if self._wanted(job):
            job.activate()
        self.jobs.append(job)
        return job

    @property
    def name(self) -> str:
        return self.settings.name

    def view(self) -> DatabaseView:
        jobs = tuple(JobView(job.collector, job.active, job.failure) for job in self.jobs)
        return DatabaseView(self.name, self.state, self.leader, jobs)

    @property
    def answered(self) -> bool | None:
        return self.state.ok

    def enables(self, collector: str) -> bool:
        return any(job.collector.name == collector for job in self.jobs)

    async def check(self) -> bool:
        """`db_up` and `/readyz`: does the database answer, and with which server version?"""
        try:
            async with asyncio.timeout(self.settings.check_timeout_seconds):
                async with self._engine.connect() as conn:
                    version, datname = (await conn.execute(_CHECK)).one()
                    check_server_version(int(version))
                    leader = True
                    if self._election.enabled:
                        # Session-level: kept across this transaction's rollback.
                        parts = _lock_parts(self._election.lock_key)
                        leader = bool((await conn.execute(_ELECT, parts)).scalar_one())
                    server = self.server
                    if self._owners is not None:
                        server = await identify(conn, self.name)
        except Exception as exc:
            if _stopping():
                raise asyncio.CancelledError from exc
            reason = one_line(exc, self.settings.dsn)
            dropped = self._dropped(exc)
            if self.state.ok is not False:
                if dropped:  # the listing this asks for says so, once
                    log.debug("database %s no longer exists", self.name)
                elif isinstance(exc, UnsupportedServerError):
                    log.error("database %s is refused: %s", self.name, exc)
                else:
                    log.warning("database %s is not answering: %s", self.name, reason)
                self._withdraw("database is not answering")
            answered = self.state.ok
            self.state = ProbeState(False, reason)
            self._set_up(0)
            await self._reset_connection()
            if self._owners is not None and answered is not False:
                self._owners.changed(self)
            return False
        if self.state.ok is False:
            log.info("database %s is answering again", self.name)
        if isinstance(server, Unidentified) and not isinstance(self.server, Unidentified):
            log.warning(
                "database %s: its role may not call pg_control_system() here, so which server "
                "it is on is unknown: it runs the server-wide collectors itself, as if no "
                "other entry shared its server",
                self.name,
            )
        changed = (self.state.ok, self.server) != (True, server)
        self.server = server
        self.state = ProbeState(True, "ok")
        if int(version) != self.server_version and (newer := newer_than_tested(int(version))):
            log.warning("database %s: %s", self.name, newer)
        self.server_version = int(version)
        self.datname = str(datname)
        for job in self.jobs:
            job.collector.datname = self.datname
        self._set_up(1)
        self._elected(leader)
        if self._owners is not None and changed:
            self._owners.changed(self)
        self._settle()
        return True

    def _set_up(self, value: int) -> None:
        self._up.set(value)
        self._up_value = value
        self._put_health(force=True)

    def _put_health(self, force: bool = False) -> None:
        """postgres_exporter's `pg_up` and `pg_exporter_last_scrape_error` (1 while the database
        does not answer or the last run of any collector this entry runs failed), from the
        snapshot like its families; rendered again only when one of them changes."""
        if not self._compatible or (self._health is None and not force):
            return  # nothing before the first check, as before
        failed = self.state.ok is not True or any(
            job.active and job.failure is not None for job in self.jobs
        )
        health = (self._up_value, int(failed))
        if health == self._health and not force:
            return
        self._health = health
        up = GaugeMetricFamily(
            "pg_up", "Whether the last scrape of metrics from PostgreSQL was able to connect."
        )
        up.add_metric([], health[0])
        error = GaugeMetricFamily(
            "pg_exporter_last_scrape_error",
            "Whether the last scrape of metrics from PostgreSQL resulted in an error "
            "(1 for error, 0 for success).",
        )
        error.add_metric([], health[1])
        self._store.put(self.name, "up", [up, error])

    def _dropped(self, exc: BaseException) -> bool:
        """A discovered database found gone: ask for a new listing, which lets it go and says
        so in one line, rather than log an error until then."""
        if self._gone is None or sqlstate_of(exc) != _NO_SUCH_DATABASE:
            return False
        self._gone()
        return True

    def _elected(self, leader: bool) -> None:
        """Start or stop the database-wide collectors after a check's election."""
        if leader != self.leader and self._election.enabled:
            if leader:
                log.info(
                    "database %s: this exporter holds the election lock and runs the "
                    "database-wide collectors",
                    self.name,
                )
            else:
                log.info(
                    "database %s: another exporter holds the election lock; this one skips "
                    "the database-wide collectors",
                    self.name,
                )
        self.leader = leader
        self._last_leader = leader
        self._leader.set(1 if leader else 0)

    def _owner(self, job: _Job) -> str | None:
        """The entry that runs this job's collector: this one, unless it is server-wide and
        another entry of the same server runs it; None while that is not known yet."""
        if not job.collector.server_wide or self._owners is None:
            return self.name
        if self.server is None:
            return None
        return self._owners.owner(self.server, job.collector.name)

    def _wanted(self, job: _Job) -> bool | None:
        """Whether this worker runs `job` now; None while that is not settled (the job stays
        as it is: a database that stopped answering keeps reporting failures)."""
        owner = self._owner(job)
        if owner != self.name:
            return None if owner is None else False
        if job.collector.database_wide and self._election.enabled and not self.leader:
            if self.leader is None and self.state.ok is False and self._last_leader is not None:
                # Down, so the election is not settled; the last one decides, so that the
                # entry left owning a server-wide job reports its failure whichever order the
                # server's entries noticed the outage in (it may have handed the job over).
                return self._last_leader
            return None if self.leader is None else False
        return True

    def _settle(self) -> None:
        """Start or stop each job as the election and the other entries of the server say;
        only ever from this worker's own task, so never while one of its runs is going."""
        for job in self.jobs:
            wanted = self._wanted(job)
            if wanted and not job.active:
                job.activate()
            elif wanted is False and job.active:
                job.retract()
                self._store.drop(self.name, job.collector.name)
                job.collector.stopped()
        self._put_health()  # a failed job handed to another entry no longer counts here
        if self._owners is None:
            return
        server_wide = [job for job in self.jobs if job.collector.server_wide]
        elsewhere = {
            job.collector.name: owner
            for job in server_wide
            if (owner := self._owner(job)) not in (None, self.name)
        }
        if elsewhere != self._elsewhere:
            names = [job.collector.name for job in server_wide]
            answering = self.state.ok is True
            log.info(ownership_line(self.name, elsewhere, names, answering=answering))
            self._elsewhere = elsewhere

    def _withdraw(self, reason: str) -> None:
        """The database stopped answering: every collector reports failure, no stale series."""
        self._store.drop(self.name)
        for job in self.jobs:
            if job.active:
                job.success.set(0)
                job.failure = reason

    async def _reset_connection(self) -> None:
        # Drop a connection the failure may have broken, so the next use starts afresh. Its
        # election lock goes with it: the next check settles the election again.
        with suppress(Exception):
            await self._engine.dispose()
        if self._election.enabled:
            self.leader = None
            self._leader.set(0)

    async def run_collector(self, job: _Job) -> bool:
        if not job.active:
            return False  # a database-wide collector while another exporter leads
        name, options = job.collector.name, job.settings
        started = time.perf_counter()
        try:
            async with asyncio.timeout(options.timeout_seconds + CLIENT_GRACE_SECONDS):
                async with self._engine.connect() as conn:
                    await conn.execute(
                        _SET_TIMEOUTS,
                        {
                            "statement_timeout": _milliseconds(options.timeout_seconds),
                            "lock_timeout": _milliseconds(options.lock_timeout_seconds),
                        },
                    )
                    families = await job.collector.collect(conn, self.server_version)
            if self._compatible:
                families = postgres_exporter_view(job.collector, families, self._server)
            else:
                families = default_view(job.collector, families)
            # Rendering thousands of series is pure CPU: in slices, never one long stall.
            await in_slices(self._store.put_steps(self.name, name, families))
        except Exception as exc:
            if _stopping():
                raise asyncio.CancelledError from exc
            job.duration.set(time.perf_counter() - started)
            job.success.set(0)
            self._store.drop(self.name, name)
            reason = one_line(exc, self.settings.dsn)
            if self._dropped(exc):
                log.debug("database %s no longer exists (collector %s)", self.name, name)
            elif reason != job.failure:
                log.warning("collector %s on database %s failed: %s", name, self.name, reason)
            else:
                log.debug("collector %s on database %s failed again: %s", name, self.name, reason)
            job.failure = reason
            self._put_health()
            if not _query_error(exc):
                # Timed out on the client or lost the connection: start afresh, check now.
                await self._reset_connection()
                self._check_due = 0.0
            return False
        job.duration.set(time.perf_counter() - started)
        job.success.set(1)
        job.last_success.set(time.time())
        if job.failure is not None:
            log.info("collector %s on database %s succeeded again", name, self.name)
            job.failure = None
            self._put_health()
        return True

    async def run(self) -> None:
        """Until `leave()`: whichever of the check and the collectors is due next, one at a
        time."""
        while not self._leaving:
            self._settle()  # another entry of the server may have changed what runs here
            up = self.state.ok is True
            due_jobs = [job for job in self.jobs if job.active] if up else []
            next_job = min(due_jobs, key=lambda j: j.next_due, default=None)
            if next_job is None or self._check_due <= next_job.next_due:
                if not await self._sleep_until(self._check_due):
                    continue
                await self.check()
                self._check_due = time.monotonic() + self.settings.check_interval_seconds
                continue
            if not await self._sleep_until(next_job.next_due):
                continue
            started = time.monotonic()
            await self.run_collector(next_job)
            # Keep the phase when on time; after a late start (the first run, a slow neighbour,
            # an outage) count the interval from this run, never a burst of catch-up runs.
            interval = next_job.settings.interval_seconds
            on_time = started - next_job.next_due < interval
            next_job.next_due = (next_job.next_due if on_time else started) + interval

    def leave(self) -> None:
        """Make `run()` return once the check or run in progress is over. Not a cancel: asyncpg
        answers a connection attempt cancelled halfway with an unretrieved future's error."""
        self._leaving = True
        self.wake()

    def wake(self) -> None:
        """Look at the schedule again now (a job was made due early)."""
        self._wake.set()

    async def _sleep_until(self, deadline: float) -> bool:
        """Sleep until `deadline`; False when `wake()` cut the sleep short."""
        delay = deadline - time.monotonic()
        if delay > 0:
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
        woken = self._wake.is_set()
        self._wake.clear()
        return not woken

    def forget(self) -> None:
        """Withdraw every series of this database: its snapshot, its runner metrics, db_up."""
        self._store.drop(self.name)
        for job in self.jobs:
            if job.active:
                job.retract()
        _remove_series(self._metrics.db_up, self.name)
        _remove_series(self._metrics.collector_leader, self.name)

    async def close(self) -> None:
        await self._engine.dispose()


class CollectorRunner:
    """Every configured (and discovered) database's worker, their tasks, and the snapshot
    `/metrics` serves."""

    def __init__(
        self,
        databases: Sequence[DatabaseSettings],
        metrics: Metrics,
        collectors: Mapping[str, type[Collector[Any]]] = COLLECTORS,
        compatibility: Compatibility = "default",
    ) -> None:
        self.metrics = metrics
        self.store = SnapshotStore()
        self._compatibility = compatibility
        # A discovered database runs what describes it alone; its server's entry runs the rest.
        self._per_database = {n: c for n, c in collectors.items() if not c.server_wide}
        # Replaced, never changed in place: readers (the on-call page) may be iterating it.
        self.workers: list[DatabaseWorker] = []
        self._found: dict[str, dict[str, DatabaseWorker]] = {}  # entry -> datname -> worker
        self._listing: dict[str, _Job] = {}  # entry -> its discovery job
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._running = False
        # With one entry there is nobody to share its server with: no identity is read.
        owners = ServerWideOwners() if len(databases) > 1 else None
        for db in databases:
            worker = DatabaseWorker(
                db, metrics, self.store, collectors, compatibility, owners=owners
            )
            if owners is not None:
                owners.join(worker)
            if db.discover is not None and db.discover.enabled:
                listed = functools.partial(self._discovered, worker)
                lister = DiscoveryCollector(db.name, db.discover, listed)
                self._listing[db.name] = worker.add_job(lister, db.discover)
            self.workers.append(worker)

    def states(self) -> dict[str, ProbeState]:
        return {worker.name: worker.state for worker in self.workers}

    def view(self) -> tuple[DatabaseView, ...]:
        """Every database's state and collectors, read-only (the on-call page's)."""
        return tuple(worker.view() for worker in self.workers)

    def worker(self, name: str) -> DatabaseWorker | None:
        """The configured or discovered database named `name` (its logical name)."""
        return next((w for w in self.workers if w.name == name), None)

    def _discovered(self, entry: DatabaseWorker, datnames: list[str]) -> None:
        """A listing of `entry`'s server: watch the new databases, let go of the others."""
        found = self._found.setdefault(entry.name, {})
        for datname in sorted(set(found) - set(datnames)):
            worker = found.pop(datname)
            log.info("database %s is no longer listed: its series are withdrawn", worker.name)
            self._retire(worker)
        for datname in datnames:
            if datname not in found:
                worker = found[datname] = self._discovered_worker(entry, datname)
                log.info("database %s found: watching it", worker.name)
                self.workers = [*self.workers, worker]
                if self._running:
                    self._start(worker)

    def _discovered_worker(self, entry: DatabaseWorker, datname: str) -> DatabaseWorker:
        dsn = parse_dsn(entry.settings.dsn).set(database=datname)
        settings = entry.settings.model_copy(
            update={
                "name": f"{entry.name}/{datname}",
                "dsn": dsn.render_as_string(hide_password=False),
                "discover": None,
                # Only the entry's leader discovers, so every discovered database is led here.
                "election": ElectionSettings(enabled=False),
            }
        )
        return DatabaseWorker(
            settings,
            self.metrics,
            self.store,
            self._per_database,
            self._compatibility,
            persistent=False,
            gone=functools.partial(self._list_again, entry),
        )

    def _list_again(self, entry: DatabaseWorker) -> None:
        job = self._listing[entry.name]
        if job.active:
            job.next_due = 0.0
            entry.wake()

    def _start(self, worker: DatabaseWorker) -> None:
        self._tasks[worker.name] = asyncio.create_task(
            worker.run(), name=f"db-exporter:{worker.name}"
        )

    def _retire(self, worker: DatabaseWorker) -> None:
        self.workers = [w for w in self.workers if w is not worker]
        task = self._tasks.pop(worker.name, None)
        worker.leave()
        closing = asyncio.create_task(self._close(worker, task))
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)

    @staticmethod
    async def _close(worker: DatabaseWorker, task: asyncio.Task[None] | None) -> None:
        try:
            if task is not None:
                await task
        finally:
            worker.forget()
            await worker.close()

    async def start(self) -> None:
        self.metrics.registry.register(self.store)
        self._running = True
        for worker in self.workers:
            self._start(worker)

    async def stop(self) -> None:
        self._running = False
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with suppress(asyncio.CancelledError):
                await task
        self._tasks = {}
        for closing in list(self._closing):  # workers let go of, ending their last use
            closing.cancel()
        await asyncio.gather(*self._closing, return_exceptions=True)
        for worker in self.workers:
            await worker.close()
        with suppress(KeyError):
            self.metrics.registry.unregister(self.store)

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
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from contextlib import suppress
from typing import Any

from prometheus_client.metrics import Gauge
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from exporter.collectors import COLLECTORS
from exporter.collectors.base import Collector, CollectorError
from exporter.collectors.custom import CustomQueryCollector
from exporter.collectors.exposition import SnapshotStore
from exporter.metrics import Metrics
from exporter.probe import ProbeState, exporter_engine, one_line
from exporter.settings import CollectorSettings, DatabaseSettings

log = logging.getLogger("exporter.collectors")

# The client-side deadline of a run is its statement_timeout plus this, so that the server's
# own, clearer error ("canceling statement due to statement timeout") normally comes first.
CLIENT_GRACE_SECONDS = 1.0

_CHECK = text("SELECT current_setting('server_version_num')::int")
# Per-run timeouts, local to the run's transaction (one round trip).
_SET_TIMEOUTS = text(
    "SELECT set_config('statement_timeout', :statement_timeout, true),"
    " set_config('lock_timeout', :lock_timeout, true)"
)
# SQLSTATE classes that mean the connection, not the query, failed: 08 connection exception,
# 57P01-57P03 server shutting down or not accepting connections.
_CONNECTION_SQLSTATES = ("08", "57P01", "57P02", "57P03")


def _milliseconds(seconds: float) -> str:
    return f"{max(1, int(seconds * 1000))}ms"


def _query_error(exc: BaseException) -> bool:
    """True when the server refused the query itself (the connection is fine)."""
    if isinstance(exc, CollectorError):
        return True
    if not isinstance(exc, DBAPIError) or exc.connection_invalidated or exc.orig is None:
        return False
    cause = exc.orig.__cause__ or exc.orig
    sqlstate = getattr(cause, "sqlstate", None)
    return isinstance(sqlstate, str) and not sqlstate.startswith(_CONNECTION_SQLSTATES)


def _stopping() -> bool:
    """True when this task is being cancelled from outside (the runner is stopping): an error
    raised while the driver was interrupted must not be taken for a database failure."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class _Job:
    """One enabled collector of one database, with its schedule and its runner metrics."""

    def __init__(
        self, collector: Collector[Any], settings: CollectorSettings, metrics: Metrics, db: str
    ) -> None:
        self.collector = collector
        self.settings = settings
        self.next_due = 0.0
        self.failure: str | None = None  # the last failure's reason, for logging changes only
        self.duration: Gauge = metrics.collector_duration.labels(collector.name, db)
        self.success: Gauge = metrics.collector_success.labels(collector.name, db)
        self.last_success: Gauge = metrics.collector_last_success.labels(collector.name, db)
        self.success.set(0)
        self.last_success.set(0)


class DatabaseWorker:
    """The check and the collectors of one database, on the exporter's own connection."""

    def __init__(
        self,
        settings: DatabaseSettings,
        metrics: Metrics,
        store: SnapshotStore,
        collectors: Mapping[str, type[Collector[Any]]] = COLLECTORS,
    ) -> None:
        self.settings = settings
        self.state = ProbeState()
        self.server_version = 0
        self._store = store
        self._up = metrics.db_up.labels(settings.name)
        self._up.set(0)
        self._engine = exporter_engine(settings.dsn, settings.check_timeout_seconds)
        self._check_due = 0.0
        self.jobs: list[_Job] = []
        for name, cls in collectors.items():
            # A collector outside the configurable set (tests pass their own) brings its own.
            options: CollectorSettings = getattr(settings.collectors, name, cls.default_settings)
            if options.enabled:
                self.jobs.append(_Job(cls(settings.name, options), options, metrics, settings.name))
        for query in settings.custom_queries:
            if query.enabled:
                collector = CustomQueryCollector(settings.name, query)
                self.jobs.append(_Job(collector, query, metrics, settings.name))

    @property
    def name(self) -> str:
        return self.settings.name

    async def check(self) -> bool:
        """`db_up` and `/readyz`: does the database answer, and with which server version?"""
        try:
            async with asyncio.timeout(self.settings.check_timeout_seconds):
                async with self._engine.connect() as conn:
                    self.server_version = int((await conn.execute(_CHECK)).scalar_one())
        except Exception as exc:
            if _stopping():
                raise asyncio.CancelledError from exc
            reason = one_line(exc)
            if self.state.ok is not False:
                log.warning("database %s is not answering: %s", self.name, reason)
                self._withdraw("database is not answering")
            self.state = ProbeState(False, reason)
            self._up.set(0)
            await self._reset_connection()
            return False
        if self.state.ok is False:
            log.info("database %s is answering again", self.name)
        self.state = ProbeState(True, "ok")
        self._up.set(1)
        return True

    def _withdraw(self, reason: str) -> None:
        """The database stopped answering: every collector reports failure, no stale series."""
        self._store.drop(self.name)
        for job in self.jobs:
            job.success.set(0)
            job.failure = reason

    async def _reset_connection(self) -> None:
        # Drop a connection the failure may have broken, so the next use starts afresh.
        with suppress(Exception):
            await self._engine.dispose()

    async def run_collector(self, job: _Job) -> bool:
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
            # Rendering thousands of series is pure CPU: keep it off the event loop.
            await asyncio.to_thread(self._store.put, self.name, name, families)
        except Exception as exc:
            if _stopping():
                raise asyncio.CancelledError from exc
            job.duration.set(time.perf_counter() - started)
            job.success.set(0)
            self._store.drop(self.name, name)
            reason = one_line(exc)
            if reason != job.failure:
                log.warning("collector %s on database %s failed: %s", name, self.name, reason)
            else:
                log.debug("collector %s on database %s failed again: %s", name, self.name, reason)
            job.failure = reason
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
        return True

    async def run(self) -> None:
        """Forever: whichever of the check and the collectors is due next, one at a time."""
        while True:
            up = self.state.ok is True
            due_jobs = self.jobs if up else []
            next_job = min(due_jobs, key=lambda j: j.next_due, default=None)
            if next_job is None or self._check_due <= next_job.next_due:
                await self._sleep_until(self._check_due)
                await self.check()
                self._check_due = time.monotonic() + self.settings.check_interval_seconds
                continue
            await self._sleep_until(next_job.next_due)
            started = time.monotonic()
            await self.run_collector(next_job)
            # Keep the phase when on time; after a late start (the first run, a slow neighbour,
            # an outage) count the interval from this run, never a burst of catch-up runs.
            interval = next_job.settings.interval_seconds
            on_time = started - next_job.next_due < interval
            next_job.next_due = (next_job.next_due if on_time else started) + interval

    @staticmethod
    async def _sleep_until(deadline: float) -> None:
        delay = deadline - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    async def close(self) -> None:
        await self._engine.dispose()


class CollectorRunner:
    """Every configured database's worker, their tasks, and the snapshot `/metrics` serves."""

    def __init__(
        self,
        databases: Sequence[DatabaseSettings],
        metrics: Metrics,
        collectors: Mapping[str, type[Collector[Any]]] = COLLECTORS,
    ) -> None:
        self.metrics = metrics
        self.store = SnapshotStore()
        self.workers = [DatabaseWorker(db, metrics, self.store, collectors) for db in databases]
        self._tasks: list[asyncio.Task[None]] = []

    def states(self) -> dict[str, ProbeState]:
        return {worker.name: worker.state for worker in self.workers}

    async def start(self) -> None:
        self.metrics.registry.register(self.store)
        self._tasks = [
            asyncio.create_task(worker.run(), name=f"db-exporter:{worker.name}")
            for worker in self.workers
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for worker in self.workers:
            await worker.close()
        with suppress(KeyError):
            self.metrics.registry.unregister(self.store)

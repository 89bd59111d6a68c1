"""Plans for slow statements: EXPLAIN (FORMAT JSON) on a connection of the exporter's own, in a
thread of its own, never on the query path.

- Only SELECTs by default (`plans.non_select` adds INSERT/UPDATE/DELETE), never ANALYZE unless
  `plans.analyze` is on; whatever runs is inside a transaction that is rolled back.
- At most one plan per fingerprint per `plans.min_interval_seconds`; a small bounded queue, so
  a burst of slow statements cannot pile up work.
- The normalised statement has `$n` for every literal and parameter, whose values are not
  kept. It is planned as a generic plan: PREPARE it, force the generic plan, and EXPLAIN
  EXECUTE it with NULLs (what PostgreSQL 16's EXPLAIN (GENERIC_PLAN) does). The summary says
  so. ANALYZE needs real values, so it is skipped for such statements, and the summary says so.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from contextlib import suppress
from typing import NamedTuple

from sqlalchemy.engine import URL

from exporter.inprocess_settings import PlanSettings
from exporter.plan import RELATION_ROWS, Plan, read
from exporter.slowlog.aggregates import Aggregates
from exporter.slowlog.record import SlowQuery

log = logging.getLogger("exporter.slowlog.plans")

_PARAMETER = re.compile(r"\$(\d+)")
QUEUE_SIZE = 100
MAX_REMEMBERED = 10_000  # fingerprints whose last plan time is remembered
_RELATION_ROWS = RELATION_ROWS.format(names="$1")


def summarize(plan: Plan, generic: bool) -> str:
    """`Aggregate (cost 1234.5, rows 1); seq scan on ledger_entries (~50000 rows)`: the plan's
    one-line summary, saying when it is a generic plan."""
    return plan.summary() + (" [generic plan: parameter values unknown]" if generic else "")


class PlanJob(NamedTuple):
    """A statement to plan: from a record of this process, or one a worker handed over."""

    database: str
    fingerprint: str
    operation: str
    sql: str  # the whole normalised statement


def plan_job(record: SlowQuery) -> PlanJob | None:
    """The job for `record`, or None when it cannot be planned: it failed, or it was
    identified from its prefix (no whole text to plan)."""
    if record.sqlstate is not None or record.identity.truncated:
        return None
    identity = record.identity
    return PlanJob(record.database, identity.fingerprint, identity.operation, identity.normalized)


class PlanCapture:
    def __init__(self, settings: PlanSettings, aggregates: Aggregates) -> None:
        self.settings = settings
        self.attempts = 0  # EXPLAINs started, for tests and troubleshooting
        self._aggregates = aggregates
        self._urls: dict[str, URL] = {}
        self._last: dict[tuple[str, str], float] = {}
        self._queue: queue.Queue[PlanJob] = queue.Queue(maxsize=QUEUE_SIZE)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def register(self, database: str, url: URL) -> None:
        """Where plans for `database` are taken (PostgreSQL only); kept in memory, never shown."""
        if url.get_backend_name() == "postgresql":
            self._urls[database] = url

    def _wanted(self, job: PlanJob) -> bool:
        operation = job.operation
        if operation != "SELECT" and not (
            self.settings.non_select and operation in ("INSERT", "UPDATE", "DELETE")
        ):
            return False
        if job.database not in self._urls:
            return False
        key = (job.database, job.fingerprint)
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.settings.min_interval_seconds:
                return False
            if len(self._last) >= MAX_REMEMBERED:
                self._last.clear()
            self._last[key] = now
        return True

    def offer(self, job: PlanJob | None) -> None:
        """Called on the slow-query writer thread (or the sidecar's hand-over reader) for each
        slow record; at most one plan per fingerprint per `min_interval_seconds`."""
        if job is None or not self.settings.enabled or not self._wanted(job):
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="db-exporter-plans", daemon=True)
            self._thread.start()
        with suppress(queue.Full):  # plans are best effort; the record itself was written
            self._queue.put_nowait(job)

    def _run(self) -> None:
        import asyncio  # here, as asyncpg below: an application that never plans never loads them

        # One short-lived event loop per plan: plans are rare, and a loop (or an executor
        # thread) left waiting on the queue would keep the process from exiting.
        while True:
            job = self._queue.get()
            try:
                asyncio.run(self._explain(job))
            except Exception as exc:
                from exporter.dsn import without_secrets

                reason = without_secrets(str(exc), self._urls[job.database])
                log.info("no plan for %s: %s", job.fingerprint, reason)
            finally:
                self._queue.task_done()

    async def _explain(self, job: PlanJob) -> None:
        import asyncpg

        from exporter.dsn import asyncpg_connect_args  # with its ssl import: only when planning

        self.attempts += 1
        sql = job.sql
        parameters = max((int(n) for n in _PARAMETER.findall(sql)), default=0)
        analyze = self.settings.analyze and parameters == 0
        options = "ANALYZE, FORMAT JSON" if analyze else "FORMAT JSON"
        timeout_ms = str(int(self.settings.timeout_seconds * 1000))
        # The application's URL, whichever its driver: its libpq parameters (TLS, hosts,
        # options) hold for this connection too; DsnError says which one cannot.
        conn = await asyncpg.connect(
            **asyncpg_connect_args(
                self._urls[job.database].set(drivername="postgresql"),
                server_settings={
                    "application_name": "db-exporter",
                    "statement_timeout": timeout_ms,
                },
                timeout=self.settings.timeout_seconds,
            )
        )
        try:
            await conn.execute("BEGIN")
            if parameters:
                await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
                await conn.execute(f"PREPARE db_exporter_plan AS {sql}")
                nulls = ", ".join(["NULL"] * parameters)
                raw = await conn.fetchval(f"EXPLAIN ({options}) EXECUTE db_exporter_plan({nulls})")
            else:
                raw = await conn.fetchval(f"EXPLAIN ({options}) {sql}")
            await conn.execute("ROLLBACK")
            plan = read(raw)
            rows = await conn.fetch(_RELATION_ROWS, plan.seq_scanned())
        finally:
            await conn.close()
        sizes = {row["relname"]: float(row["rows"]) for row in rows}
        plan = plan.with_sizes(sizes)
        summary = summarize(plan, generic=parameters > 0)
        self._aggregates.set_plan(job.database, job.fingerprint, plan.raw, summary, sizes)

    def forked(self, aggregates: Aggregates) -> PlanCapture:
        """This capture as a forked child starts it, planning into `aggregates`: the parent's
        thread and queued statements are not the child's; the databases registered are."""
        child = PlanCapture(self.settings, aggregates)
        child._urls = dict(self._urls)
        return child

    def flush(self) -> None:
        """Wait until every queued plan has been taken (tests)."""
        if self._thread is not None:
            self._queue.join()

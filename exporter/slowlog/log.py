"""The slow-query log: records go into a bounded queue on the query path, and a writer thread
turns them into JSON lines for the sinks, the ring buffer and the per-fingerprint aggregates.

Submitting never blocks and never does I/O: when the queue is full (in records, or in bytes of
their statements' text) the record is dropped and counted in `slow_query_log_dropped_total`, so
nothing is lost silently. Beyond `records_per_second` per fingerprint no record is built at
all (exporter.slowlog.rate).

With several worker processes the writer also hands each record over to the sidecar
(exporter.slowlog.handover), which merges them (`merge`) into its own ring, aggregates and N+1
findings, and plans them there: a log that hands over takes no plans itself.

A forked child (gunicorn's `preload_app`, uWSGI, celery's prefork pool: the application is
instrumented in a master that then forks its workers) starts a log of its own; see `_watch_forks`.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sys
import threading
import time
import weakref
from typing import Any, Protocol

from sqlalchemy.engine import URL

from exporter.bounded import size_of
from exporter.inprocess_settings import SlowQuerySettings
from exporter.metrics import Metrics
from exporter.slowlog.aggregates import Aggregates
from exporter.slowlog.callsite import CallSiteFinder
from exporter.slowlog.findings import NPlusOneFindings
from exporter.slowlog.handover import HandoverWriter, handover_directory
from exporter.slowlog.plans import PlanCapture, PlanJob, plan_job
from exporter.slowlog.rate import RecordRate, Skipped
from exporter.slowlog.record import SlowQuery, shown_sql
from exporter.slowlog.sinks import FileSink, RingBuffer, Sink, StdoutSink
from exporter.sql import QueryIdentity

log = logging.getLogger("exporter.slowlog")

_STOP = object()
# The settings that decide where records are written: when one changes, the sinks are remade.
_SINK_FIELDS = ("stdout", "file", "file_max_bytes", "file_backups")
# How long fork() waits for apply() and the writers to finish what they are doing (a line to a
# sink, usually microseconds); past it (a sink blocked: stdout's reader stopped) it forks anyway.
FORK_WAIT_SECONDS = 1.0


class SettingsWatcher(Protocol):
    def slow_query_settings_changed(self, settings: SlowQuerySettings) -> None:
        """Called by `SlowQueryLog.apply` (values the query path keeps at hand)."""


class _RecordQueue(queue.Queue[Any]):
    """A queue bounded in records (`maxsize`) and in the bytes of their statements' text
    (`max_bytes`), through the methods `queue.Queue` leaves to subclasses: a record that would
    take the text past its bound is refused with `queue.Full`, as a record beyond `maxsize`."""

    def __init__(self, maxsize: int, max_bytes: int) -> None:
        super().__init__(maxsize)
        self.max_bytes = max_bytes
        self.bytes = 0

    @staticmethod
    def _text_size(item: Any) -> int:
        return sys.getsizeof(item.identity.normalized) if isinstance(item, SlowQuery) else 0

    def _put(self, item: Any) -> None:
        size = self._text_size(item)
        if self.bytes + size > self.max_bytes and item is not _STOP:
            raise queue.Full  # under the queue's lock, before anything changed
        self.queue.append(item)
        self.bytes += size

    def _get(self) -> Any:
        item = self.queue.popleft()
        self.bytes -= self._text_size(item)
        return item


def _sinks(settings: SlowQuerySettings) -> list[Sink]:
    """Raises OSError when the file cannot be opened."""
    sinks: list[Sink] = []
    if settings.stdout:
        sinks.append(StdoutSink())
    if settings.file:
        sinks.append(FileSink(settings.file, settings.file_max_bytes, settings.file_backups))
    return sinks


class SlowQueryLog:
    def __init__(self, settings: SlowQuerySettings, metrics: Metrics) -> None:
        self.settings = settings
        self.aggregates = Aggregates(settings.max_fingerprints, settings.fingerprints_max_bytes)
        self.ring = RingBuffer(settings.ring_buffer_size, settings.ring_buffer_max_bytes)
        self.n_plus_one = NPlusOneFindings(
            settings.max_fingerprints, settings.fingerprints_max_bytes
        )
        self._metrics = metrics
        self._queue = _RecordQueue(settings.queue_size, settings.queue_max_bytes)
        self._sinks = _sinks(settings)
        self._handover = self._handover_writer(settings)
        self._sinks_lock = threading.Lock()  # the writer's sinks against apply()
        self._dropped = metrics.slow_query_log_dropped
        self._rate_limited = metrics.slow_query_log_rate_limited
        self.rate = RecordRate(settings.records_per_second)
        self.plans = PlanCapture(settings.plans, self.aggregates)
        self.call_sites = CallSiteFinder(settings.call_sites)
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._failed_sinks: set[str] = set()
        self._watchers: weakref.WeakSet[SettingsWatcher] = weakref.WeakSet()
        self._apply_lock = threading.Lock()
        self._held_for_fork: list[threading.Lock] = []
        _watch_forks(self)

    def threshold_seconds(self, database: str) -> float:
        return self.settings.threshold_seconds(database)

    def _handover_writer(self, settings: SlowQuerySettings) -> HandoverWriter | None:
        directory = handover_directory(settings)
        if directory is None:
            return None
        return HandoverWriter(directory, settings, self._metrics.slow_query_handover_dropped)

    def watch(self, watcher: SettingsWatcher) -> None:
        """Tell `watcher` about every later `apply()`, for as long as it lives."""
        self._watchers.add(watcher)

    def apply(self, settings: SlowQuerySettings) -> None:
        """Use `settings` from now on, in every engine already logging here: thresholds,
        sinks, sizes, plans and call sites. Raises OSError, changing nothing, when a new file sink
        cannot be opened."""
        with self._apply_lock:
            old = self.settings
            moved = any(getattr(old, name) != getattr(settings, name) for name in _SINK_FIELDS)
            sinks = _sinks(settings) if moved else None
            self.settings = settings
            self.aggregates.resize(settings.max_fingerprints, settings.fingerprints_max_bytes)
            self.ring.resize(settings.ring_buffer_size, settings.ring_buffer_max_bytes)
            self.n_plus_one.resize(settings.max_fingerprints, settings.fingerprints_max_bytes)
            with self._queue.mutex:  # records already queued stay; the bounds apply to new ones
                self._queue.maxsize = settings.queue_size
                self._queue.max_bytes = settings.queue_max_bytes
            self.plans.settings = settings.plans
            self.rate.per_second = settings.records_per_second
            if settings.call_sites != old.call_sites:
                self.call_sites = CallSiteFinder(settings.call_sites)
            if sinks is not None:
                with self._sinks_lock:
                    sinks, self._sinks = self._sinks, sinks
                for sink in sinks:
                    sink.close()
            if any(
                getattr(old, name) != getattr(settings, name)
                for name in vars(old)
                if name.startswith("handover")
            ):
                with self._sinks_lock:
                    handover, self._handover = self._handover, self._handover_writer(settings)
                if handover is not None:
                    handover.close()
            for watcher in list(self._watchers):
                watcher.slow_query_settings_changed(settings)

    def register(self, database: str, url: URL) -> None:
        """The database an instrumented engine talks to, for plans of its slow statements."""
        self.plans.register(database, url)

    # -- the query path --------------------------------------------------------------------

    def admit(self, database: str, identity: QueryIdentity, seconds: float) -> bool:
        """Whether a slow statement gets a record; when not, it is counted as rate-limited and
        its time goes into its aggregate by the writer."""
        if self.rate.admit(database, identity, seconds):
            return True
        self._rate_limited.inc()
        return False

    def submit(self, record: SlowQuery) -> None:
        if self._thread is None:
            self._start()
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self._dropped.inc()

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._write_forever, name="db-exporter-slowlog", daemon=True
                )
                self._thread.start()

    # -- the writer thread -----------------------------------------------------------------

    def _write_forever(self) -> None:
        counted = time.monotonic()
        while True:
            try:
                item = self._queue.get(timeout=1.0)
            except queue.Empty:
                item = None
            try:
                if item is _STOP:
                    return
                if item is not None:
                    self._write(item)
                if time.monotonic() - counted >= 1.0:
                    counted = time.monotonic()
                    self._count_skipped()
            except Exception:  # a bug here must not kill the writer
                log.exception("slow-query record could not be written")
            finally:
                if item is not None:
                    self._queue.task_done()

    def _count_skipped(self) -> None:
        """Rate-limited statements into their aggregates, so those stay exact (and, handing
        over, into the sidecar's)."""
        for skipped in self.rate.take_skipped():
            sql = shown_sql(skipped.identity, self.settings.max_sql_length)
            self.aggregates.add_skipped(skipped, sql)
            identity = skipped.identity
            with self._sinks_lock:  # against apply() replacing the hand-over
                if self._handover is not None:
                    self._handover.hand_over_skipped(
                        {
                            "database": skipped.database,
                            "fingerprint": identity.fingerprint,
                            "operation": identity.operation,
                            "table": identity.table,
                            "sql": sql,
                            "count": skipped.count,
                            "seconds": skipped.seconds,
                            "max_seconds": skipped.max_seconds,
                        }
                    )

    def _write(self, record: SlowQuery) -> None:
        data = record.as_dict(self.settings.max_sql_length)
        line = json.dumps(data, ensure_ascii=True, default=str)
        job = plan_job(record) if record.kind == "slow_query" else None
        with self._sinks_lock:
            for sink in self._sinks:
                try:
                    sink.write(line)
                except Exception as exc:  # e.g. a full disk: keep the other sinks going
                    name = type(sink).__name__
                    if name not in self._failed_sinks:
                        self._failed_sinks.add(name)
                        log.warning("slow-query sink %s failed: %s", name, exc)
            handover = self._handover
            if handover is not None:
                # The sidecar plans what it is handed (once per fingerprint for every worker),
                # from the SQL in the record: a statement cut there is not planned.
                whole = job is not None and job.sql == data["sql"]
                handover.hand_over(line, plan=whole)
        self._keep(data, None if handover is not None else job)

    def _keep(self, data: dict[str, Any], job: PlanJob | None) -> None:
        """Into the ring, the aggregates or the N+1 findings, and the plan asked for."""
        size = size_of(data)
        self.ring.append(data, size)
        if data["kind"] == "slow_query":
            self.aggregates.add(data, size)
            self.plans.offer(job)
        else:
            self.n_plus_one.add(data)

    # -- fork() (the hooks are `_watch_forks`'s) ------------------------------------------

    def _before_fork(self, deadline: float) -> None:
        """Wait (until `deadline`, a monotonic() reading) for apply() and the writer to be
        between two operations, so that the sinks, the hand-over writer and the settings,
        which the child keeps, are whole."""
        for lock in (self._apply_lock, self._sinks_lock):  # apply() takes them in this order
            if lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                self._held_for_fork.append(lock)

    def _after_fork_in_parent(self) -> None:
        for lock in self._held_for_fork:
            lock.release()
        self._held_for_fork.clear()

    def _after_fork_in_child(self) -> None:
        """The child's own log: the parent's threads are not here, and whatever they were
        changing (queue, record rate, ring, aggregates, plans) may be half changed and its
        lock held for ever; so all of it starts again empty, with new locks. The records the
        parent had queued are the parent's to write. The writer (and the plan thread) start
        on the child's first record; its hand-over segments, named by its pid, then too."""
        self._held_for_fork.clear()
        settings = self.settings
        self._apply_lock, self._sinks_lock = threading.Lock(), threading.Lock()
        self._start_lock = threading.Lock()
        self._thread = None
        self._queue = _RecordQueue(settings.queue_size, settings.queue_max_bytes)
        self.rate = RecordRate(settings.records_per_second)
        self.aggregates = Aggregates(settings.max_fingerprints, settings.fingerprints_max_bytes)
        self.ring = RingBuffer(settings.ring_buffer_size, settings.ring_buffer_max_bytes)
        self.n_plus_one = NPlusOneFindings(
            settings.max_fingerprints, settings.fingerprints_max_bytes
        )
        self.plans = self.plans.forked(self.aggregates)
        if self._handover is not None:
            self._handover.forked()

    # -- records handed over by workers (the sidecar: exporter/slowlog/handover_reader.py) --

    def merge(self, data: dict[str, Any], plan: bool) -> None:
        """A worker's record (with its `pid`); `plan`: plan its SQL here."""
        job = None
        if plan:
            job = PlanJob(data["database"], data["fingerprint"], data["operation"], data["sql"])
        self._keep(data, job)

    def merge_skipped(self, skipped: dict[str, Any]) -> None:
        """A worker's statements that got no record (its record rate)."""
        identity = QueryIdentity(
            skipped["fingerprint"], skipped["sql"], skipped["operation"], skipped["table"]
        )
        counted = Skipped(
            skipped["database"],
            identity,
            skipped["count"],
            skipped["seconds"],
            skipped["max_seconds"],
        )
        self.aggregates.add_skipped(counted, skipped["sql"])

    # -- readers ---------------------------------------------------------------------------

    def records(
        self, database: str | None = None, since: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """The most recent records first, by each record's own time (records merged from
        several processes arrive out of order); `since` is an ISO timestamp (as in the
        records)."""
        rows = sorted(self.ring.snapshot(), key=lambda r: str(r["time"]))
        if database is not None:
            rows = [r for r in rows if r["database"] == database]
        if since is not None:
            rows = [r for r in rows if r["time"] >= since]
        return rows[::-1][:limit]

    def flush(self) -> None:
        """Wait until every submitted record has been written (tests, shutdown)."""
        if self._thread is not None:
            self._queue.join()
        self._count_skipped()
        self.plans.flush()

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout=5)
            self._thread = None
        with self._sinks_lock:
            for sink in self._sinks:
                sink.close()
            if self._handover is not None:
                self._handover.close()


# Every log of this process, for the fork hooks (registered once, with the first log: importing
# this module starts and registers nothing).
_logs: weakref.WeakSet[SlowQueryLog] = weakref.WeakSet()
_logs_lock = threading.Lock()
_forks_watched = False


def _watch_forks(slow_log: SlowQueryLog) -> None:
    """Threads do not survive fork(). Without these hooks a pre-fork server's worker (the
    application instrumented, and slow statements logged, in the master) keeps the master's
    writer thread object, so its records wait in the queue for a writer that never runs, and a
    lock the master's writer held at fork time (a line being written) stays held in the worker
    for ever: its apply(), flush() and close() hang."""
    global _forks_watched
    with _logs_lock:
        _logs.add(slow_log)
        if not _forks_watched:  # children inherit the hooks
            os.register_at_fork(
                before=_before_fork,
                after_in_parent=_after_fork_in_parent,
                after_in_child=_after_fork_in_child,
            )
            _forks_watched = True


def _before_fork() -> None:
    _logs_lock.acquire()  # released by both sides after the fork
    deadline = time.monotonic() + FORK_WAIT_SECONDS  # one wait for them all
    for each in _logs:
        each._before_fork(deadline)


def _after_fork_in_parent() -> None:
    try:
        for each in _logs:
            each._after_fork_in_parent()
    finally:
        _logs_lock.release()


def _after_fork_in_child() -> None:
    try:
        for each in _logs:
            each._after_fork_in_child()
    finally:
        _logs_lock.release()

"""Hand-over of slow-query records from worker processes to the sidecar, through files.

With several workers (gunicorn, `uvicorn --workers`) each one's slow-query log lives in its own
memory; `db-exporter serve` beside them reads what they hand over here and merges it into its
own /slow-queries and / (exporter/slowlog/handover_reader.py).

Why files: they need no service of their own, survive a worker's or the sidecar's restart, and
a worker never waits for the sidecar (absent, slow or restarting): appending to a file is all a
worker does, on the slow-query log's writer thread, never on the query path.

- Each worker process writes JSON lines to `worker-{pid}-{token}-{seq}.jsonl` in the hand-over
  directory (`slow_queries.handover_dir`, default `slow-queries` inside
  PROMETHEUS_MULTIPROC_DIR); `token` tells apart two processes given the same pid. A line is
  `{"record": {...the record, with "pid"}, "plan": bool}` or, for statements the record rate
  left without a record, `{"skipped": {...}}`; one `write()` per line (O_APPEND).
- Bounded per worker: a segment holds at most half of `handover_max_bytes`; when full the
  worker starts the next one and deletes the one before, so at most two are on disk. Segment
  files are never rewritten, so a reader's offset into one stays valid.
- A worker holds a shared `flock` on its segments; the kernel releases it when the process
  ends, however it ends, which tells live workers from ended ones.
- Bounded in total (`prune`, run by every writer before a new segment and by every reader now
  and then, with the same rule): ended workers' files older than `handover_keep_seconds` are
  deleted, then the oldest ended beyond `handover_max_ended_workers` or beyond
  `handover_max_total_bytes`. If live workers alone fill the total, a worker drops its records
  (counted in `slow_query_handover_dropped_total`) until there is room. Cleanup depends on age
  and bounds only, never on what a reader has read, so any number of sidecars may read.
- Crash-safe: a line cut short by a worker killed while writing it has no newline; a reader
  skips it (and counts it) once that worker has ended. Any other line that is not a record is
  skipped and counted too.
- A directory that cannot be written: one warning line per worker, its records dropped and
  counted; the application goes on as before.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter

from exporter.inprocess_settings import SlowQuerySettings

log = logging.getLogger("exporter.slowlog.handover")

SUBDIRECTORY = "slow-queries"  # inside PROMETHEUS_MULTIPROC_DIR
SEGMENT = re.compile(r"worker-(\d+)-([0-9a-f]+)-(\d+)\.jsonl")
_NEW = ".new"  # a segment being created: locked before it takes its name


def handover_directory(settings: SlowQuerySettings) -> str | None:
    """Where records are handed over, or None when they are not."""
    if not settings.handover:
        return None
    if settings.handover_dir:
        return settings.handover_dir
    multiprocess = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return os.path.join(multiprocess, SUBDIRECTORY) if multiprocess else None


def segment_bytes(settings: SlowQuerySettings) -> int:
    return settings.handover_max_bytes // 2


@dataclass(frozen=True)
class Segment:
    name: str
    pid: int
    token: str
    seq: int
    size: int
    mtime: float

    @property
    def worker(self) -> tuple[int, str]:
        return self.pid, self.token


def segments(directory: str) -> list[Segment]:
    """The hand-over files in `directory`, by worker and then in the order written."""
    found = []
    with os.scandir(directory) as entries:
        for entry in entries:
            match = SEGMENT.fullmatch(entry.name)
            if match is None:
                continue
            with suppress(FileNotFoundError):  # deleted meanwhile
                stat = entry.stat()
                pid, token, seq = int(match[1]), match[2], int(match[3])
                found.append(Segment(entry.name, pid, token, seq, stat.st_size, stat.st_mtime))
    return sorted(found, key=lambda s: (s.pid, s.token, s.seq))


def is_held(path: str) -> bool:
    """Whether a live process still holds `path` (its writer's shared lock)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(descriptor)  # releases the lock we may have taken
    return False


def _by_worker(found: list[Segment]) -> Iterator[list[Segment]]:
    group: list[Segment] = []
    for segment in found:
        if group and group[-1].worker != segment.worker:
            yield group
            group = []
        group.append(segment)
    if group:
        yield group


def prune(directory: str, settings: SlowQuerySettings, now: float | None = None) -> int:
    """Delete ended workers' files past the age, count and byte bounds; the bytes left (which
    may still be above the total when live workers alone fill it)."""
    now = time.time() if now is None else now
    ended: list[list[Segment]] = []  # each ended worker's files
    total = 0
    for files in _by_worker(segments(directory)):
        total += sum(s.size for s in files)
        if not is_held(os.path.join(directory, files[-1].name)):
            ended.append(files)
    ended.sort(key=lambda files: files[-1].mtime)  # the longest ended first

    def delete(files: list[Segment]) -> None:
        nonlocal total
        for segment in files:
            with suppress(FileNotFoundError):  # another process pruned it first
                os.remove(os.path.join(directory, segment.name))
            total -= segment.size

    while ended and (
        now - ended[0][-1].mtime > settings.handover_keep_seconds
        or len(ended) > settings.handover_max_ended_workers
        or total > settings.handover_max_total_bytes
    ):
        delete(ended.pop(0))
    _remove_stale_new(directory, now, settings.handover_keep_seconds)
    return total


def _remove_stale_new(directory: str, now: float, keep_seconds: float) -> None:
    """A segment a worker was killed while creating (before it took its name)."""
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.name.endswith(_NEW) and entry.name.startswith("worker-"):
                with suppress(FileNotFoundError):
                    if now - entry.stat().st_mtime > max(keep_seconds, 60):
                        os.remove(entry.path)


class HandoverWriter:
    """Appends this process's records to its segments; used by the slow-query log's writer
    thread only. `write` never raises: what cannot be written is counted in `dropped`."""

    def __init__(self, directory: str, settings: SlowQuerySettings, dropped: Counter) -> None:
        self.directory = directory
        self.settings = settings
        self._dropped = dropped
        self._pid = 0  # the process the open segments belong to (a forked child opens its own)
        self._token = ""
        self._seq = 0
        self._current: int | None = None  # descriptor of the segment written to
        self._previous: int | None = None  # and of the one before, still locked
        self._written = self._previous_written = 0
        self._warned = False

    def hand_over(self, record: str, plan: bool) -> None:
        """`record`: the JSON object written to the sinks (the pid is added to it, without
        encoding it again); `plan`: whether the sidecar may plan it."""
        line = f'{{"record": {record[:-1]}, "pid": {os.getpid()}}}, "plan": {json.dumps(plan)}}}'
        self._write(line)

    def hand_over_skipped(self, skipped: dict[str, Any]) -> None:
        """Statements the record rate left without a record, for the sidecar's aggregates."""
        self._write(json.dumps({"skipped": {**skipped, "pid": os.getpid()}}, ensure_ascii=True))

    def _write(self, line: str) -> None:
        data = (line + "\n").encode()
        try:
            if len(data) > segment_bytes(self.settings) or not self._room_for(len(data)):
                self._dropped.inc()
                return
            assert self._current is not None
            written = os.write(self._current, data)
            self._written += written
            if written != len(data):  # a full disk: the line is torn, the reader skips it
                raise OSError("no space left for a whole line")
        except OSError as exc:
            self._dropped.inc()
            self._warn(f"cannot write to {self.directory}: {exc.strerror or exc}")

    def _room_for(self, size: int) -> bool:
        """Open (or move to) a segment with room for `size` bytes; False when the total bound
        leaves none."""
        if self._pid != os.getpid():
            self._start()
        if self._current is not None and self._written + size <= segment_bytes(self.settings):
            return True
        os.makedirs(self.directory, exist_ok=True)
        # Pruning happens here, once a segment: the new one must fit under the total, once
        # this worker's oldest segment is deleted.
        freed = self._previous_written if self._previous is not None else 0
        after = prune(self.directory, self.settings) - freed + size
        if after > self.settings.handover_max_total_bytes:
            self._warn(
                f"{self.directory} holds handover_max_total_bytes "
                f"({self.settings.handover_max_total_bytes}) already; records are dropped"
            )
            return False
        self._next_segment()
        return True

    def _start(self) -> None:
        """This process's own segments: in a forked child, the parent's are the parent's
        (closing our copies leaves the parent's locks held)."""
        for descriptor in (self._current, self._previous):
            if descriptor is not None:
                with suppress(OSError):
                    os.close(descriptor)
        self._pid, self._token, self._seq = os.getpid(), os.urandom(4).hex(), 0
        self._current = self._previous = None
        self._written = self._previous_written = 0
        self._warned = False

    def forked(self) -> None:
        """In a forked child, at once: closing our copies of the parent's segments now keeps a
        child that never writes from holding them (their lock) after the parent ends."""
        self._start()

    def _name(self, seq: int) -> str:
        return os.path.join(self.directory, f"worker-{self._pid}-{self._token}-{seq:08d}.jsonl")

    def _next_segment(self) -> None:
        path = self._name(self._seq + (self._current is not None))
        descriptor = os.open(
            path + _NEW, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC, 0o644
        )
        try:
            fcntl.flock(descriptor, fcntl.LOCK_SH)  # locked before anyone sees it
            os.replace(path + _NEW, path)
        except OSError:
            os.close(descriptor)
            raise
        if self._current is not None:
            self._seq += 1
            if self._previous is not None:  # two segments at most: the oldest goes
                with suppress(FileNotFoundError):
                    os.remove(self._name(self._seq - 2))
                os.close(self._previous)
            self._previous, self._previous_written = self._current, self._written
        self._current, self._written = descriptor, 0

    def _warn(self, message: str) -> None:
        if not self._warned:
            self._warned = True
            log.warning("slow-query hand-over to the sidecar: %s", message)

    def close(self) -> None:
        """Release this process's segments (the files stay for the sidecar)."""
        if self._pid == os.getpid():
            for descriptor in (self._current, self._previous):
                if descriptor is not None:
                    os.close(descriptor)
        self._current = self._previous = None
        self._pid = 0

"""Multi-process mode's directory: which processes are alive, and folding the files of dead ones.

prometheus_client gives every process its own files in PROMETHEUS_MULTIPROC_DIR
(`{type}_{pid}.db`, gauges `gauge_{mode}_{pid}.db`) and never removes counters or histograms, so
after many recycled workers each scrape would read thousands of files. Here:

- a process recording db-exporter's metrics holds a shared `flock` on `alive_{pid}.lock`, which
  the kernel releases when the process ends, however it ends (SIGKILL included);
- before reading the directory, `/metrics` folds the files of processes whose lock is free into
  one file per kind (`counter_aggregate.db`, ...): counters, histograms, summaries and gauges in
  `sum`/`min`/`max` mode merged as prometheus_client merges them; `live*` gauges deleted (what
  `mark_process_dead` does); gauges in `all` and `mostrecent` mode left as they are (their
  meaning needs the process's own file). Files without a lock (processes that never loaded
  db-exporter's metrics, earlier deployments) are never touched.

A fold is committed by renaming one manifest into place, after the new aggregates are written
and before anything is deleted; a fold interrupted after that point is finished by the next one,
so a fold stopped at any moment (the process killed) neither loses nor double-counts a value.
One fold takes at most `FOLD_AT_MOST` processes, so that no scrape pays for a long backlog
(a sidecar started beside a thousand ended workers' files) at once.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

log = logging.getLogger("exporter.multiprocess")

LOCK = "compaction.lock"  # held exclusively while folding, shared while reading
MANIFEST = "compaction.json"
_ALIVE = re.compile(r"alive_(\d+)\.lock")
_FILE = re.compile(r"(counter|histogram|summary|gauge_[a-z]+)_(\d+)\.db")
# Merged by adding (or by min/max): the aggregate stands for every dead process at once.
FOLDED = ("counter", "histogram", "summary", "gauge_sum", "gauge_min", "gauge_max")

FOLD_AT_MOST = 100
_alive: tuple[int, int] | None = None  # (pid, descriptor) of this process's lock
_forks_watched = False


def hold_alive_lock(directory: str) -> None:
    """Mark this process alive for as long as it runs (idempotent; forked children take their
    own). Waits while a fold is removing the files of an earlier process with this pid."""
    global _alive, _forks_watched
    pid = os.getpid()
    if _alive is not None and _alive[0] == pid:
        return
    if not _forks_watched:  # children inherit the hook: registered once for all
        os.register_at_fork(after_in_child=lambda: _after_fork(directory))
        _forks_watched = True
    path = os.path.join(directory, f"alive_{pid}.lock")
    while True:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(descriptor, fcntl.LOCK_SH)
        with suppress(FileNotFoundError):
            if os.stat(path).st_ino == os.fstat(descriptor).st_ino:
                break
        os.close(descriptor)  # a fold removed it while we waited: take a fresh one
    _alive = (pid, descriptor)


def _after_fork(directory: str) -> None:
    global _alive
    if _alive is None:
        return
    os.close(_alive[1])  # the parent's lock: the parent's to hold, not ours
    _alive = None
    try:
        hold_alive_lock(directory)
    except OSError as exc:
        log.warning("multi-process mode: cannot mark this process alive: %s", exc)


@contextmanager
def _locked(path: str, operation: int) -> Iterator[None]:
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, operation)
        yield
    finally:
        os.close(descriptor)


@contextmanager
def reading(directory: str) -> Iterator[None]:
    """Hold off folds while the directory is read."""
    with _locked(os.path.join(directory, LOCK), fcntl.LOCK_SH):
        yield


def fold(directory: str) -> int:
    """Fold the files of processes that have ended; the number of processes folded."""
    with _locked(os.path.join(directory, LOCK), fcntl.LOCK_EX):
        finish(directory)
        with _dead(directory) as dead:
            if not dead:
                return 0
            commit(directory, dead)
            finish(directory)
            for pid in dead:
                with suppress(FileNotFoundError):
                    os.remove(os.path.join(directory, f"alive_{pid}.lock"))
            return len(dead)


@contextmanager
def _dead(directory: str) -> Iterator[set[str]]:
    """Up to FOLD_AT_MOST pids whose lock is free, locked by us until the fold is done, so that
    a new process given the same pid waits before it writes."""
    held: list[int] = []
    dead: set[str] = set()
    try:
        for name in os.listdir(directory):
            found = _ALIVE.fullmatch(name)
            if found is None or len(dead) == FOLD_AT_MOST:
                continue
            try:
                descriptor = os.open(os.path.join(directory, name), os.O_RDWR)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(descriptor)
                continue
            held.append(descriptor)
            dead.add(found.group(1))
        yield dead
    finally:
        for descriptor in held:
            os.close(descriptor)


def commit(directory: str, dead: Iterable[str]) -> None:
    """Write the new aggregates beside the old ones, then the manifest that makes them count."""
    from prometheus_client.multiprocess import MultiProcessCollector

    dead = set(dead)
    groups: dict[str, list[str]] = {}
    removed: list[str] = []
    for name in os.listdir(directory):
        found = _FILE.fullmatch(name)
        if found is None or found.group(2) not in dead:
            continue
        kind = found.group(1)
        if kind in FOLDED:
            groups.setdefault(kind, []).append(os.path.join(directory, name))
            removed.append(name)
        elif kind.startswith("gauge_live"):
            removed.append(name)
    renames: dict[str, str] = {}
    for kind, files in groups.items():
        aggregate = os.path.join(directory, f"{kind}_aggregate.db")
        if os.path.exists(aggregate):
            files.append(aggregate)
        merged = MultiProcessCollector.merge(files, accumulate=False)  # type: ignore[no-untyped-call]
        _write(aggregate + ".new", merged)
        renames[f"{kind}_aggregate.db.new"] = f"{kind}_aggregate.db"
    _replace(os.path.join(directory, MANIFEST), json.dumps({"rename": renames, "remove": removed}))


def finish(directory: str) -> None:
    """Carry out a committed manifest (again, if a fold stopped half-way); drop uncommitted
    aggregates."""
    path = os.path.join(directory, MANIFEST)
    try:
        with open(path) as file:
            manifest = json.load(file)
    except FileNotFoundError:
        manifest = {"rename": {}, "remove": []}
    for new, final in manifest["rename"].items():
        with suppress(FileNotFoundError):
            os.replace(os.path.join(directory, new), os.path.join(directory, final))
    for name in manifest["remove"]:
        with suppress(FileNotFoundError):
            os.remove(os.path.join(directory, name))
    with suppress(FileNotFoundError):
        os.remove(path)
    for name in os.listdir(directory):
        if name.endswith((".db.new", ".json.new")):
            os.remove(os.path.join(directory, name))


def _write(path: str, metrics: Iterable[Any]) -> None:
    from prometheus_client.mmap_dict import MmapedDict, mmap_key

    with suppress(FileNotFoundError):
        os.remove(path)
    values = MmapedDict(path)  # type: ignore[no-untyped-call]
    try:
        for metric in metrics:
            for sample in metric.samples:
                labels = sample.labels
                key = mmap_key(metric.name, sample.name, list(labels), list(labels.values()),
                               metric.documentation)  # fmt: skip
                values.write_value(key, sample.value, 0.0)  # type: ignore[no-untyped-call]
    finally:
        values.close()  # type: ignore[no-untyped-call]


def _replace(path: str, text: str) -> None:
    """Write `path` whole or not at all."""
    with open(path + ".new", "w") as file:
        file.write(text)
    os.replace(path + ".new", path)


class FoldingCollector:
    """prometheus_client's `MultiProcessCollector`, folding the files of ended processes first."""

    def __init__(self, directory: str) -> None:
        self._directory = directory
        self._warned = False

    def collect(self) -> Iterable[Metric]:
        try:
            fold(self._directory)
            with reading(self._directory):
                return merged(self._directory)
        except OSError as exc:  # e.g. a read-only directory: read it as prometheus_client does
            if not self._warned:
                self._warned = True
                log.warning("multi-process mode: cannot fold ended processes' files: %s", exc)
        return merged(self._directory)


def merged(directory: str) -> Iterable[Metric]:
    """Every process's values, summed as prometheus_client's `MultiProcessCollector` does,
    but for files still empty: a process creating one has not sized it yet, and reading it
    would fail the scrape (it holds no value)."""
    from prometheus_client.multiprocess import MultiProcessCollector

    files = []
    for entry in os.scandir(directory):
        with suppress(FileNotFoundError):  # a live gauge's file removed by mark_process_dead
            if entry.name.endswith(".db") and entry.stat().st_size > 0:
                files.append(entry.path)
    metrics: Iterable[Metric] = MultiProcessCollector.merge(  # type: ignore[no-untyped-call]
        files, accumulate=True
    )
    return metrics

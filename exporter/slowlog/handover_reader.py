"""The sidecar's side of the hand-over (exporter/slowlog/handover.py): a thread of its own
reads the workers' files incrementally, by offset, and merges their records into the sidecar's
`SlowQueryLog` (ring buffer, aggregates, N+1 findings, plans), so that /slow-queries and /
cover every live worker and the recently ended ones. Requests only read that memory.

- What a sidecar has merged lives in its memory only: started again, it reads every file still
  in the directory from the start, which rebuilds the last records of each live worker and of
  the ended ones within the hand-over bounds; aggregate counts of records in segments already
  deleted (rotated away, or expired) are not rebuilt.
- Reading never changes a file: two sidecars on one directory each merge everything; the only
  deletions are `prune`'s, by age and bounds, the same rule in every process.
- A line that is not a record is skipped and counted (`slow_query_handover_skipped_total`,
  reason `corrupt`); a last line without its newline is left for later while its worker lives,
  and skipped and counted (reason `torn`) once it has ended.
- Records carry their worker's clock: each pass merges what it read in the order of the
  records' own times, and readers order by those times; nothing assumes two processes' clocks
  agree or that one process's never goes back.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from typing import Any

from exporter.inprocess_settings import SlowQuerySettings
from exporter.metrics import Metrics
from exporter.slowlog.handover import is_held, prune, segment_bytes, segments
from exporter.slowlog.log import SlowQueryLog

log = logging.getLogger("exporter.slowlog.handover")

POLL_SECONDS = 0.5
PRUNE_SECONDS = 30.0
READ_PER_PASS = 4 * 1024 * 1024  # bytes read in one pass, so a backlog is merged in steps
KINDS = ("slow_query", "n_plus_one")


def _text(value: Any) -> bool:
    return isinstance(value, str)


def _number(value: Any) -> bool:
    return (
        isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    ) and value >= 0


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _call_site(value: Any) -> bool:
    return value is None or (
        isinstance(value, dict) and _text(value.get("file")) and _whole(value.get("line"))
    )


def valid_record(record: Any) -> bool:
    """The fields the sidecar reads, with their types."""
    return (
        isinstance(record, dict)
        and record.get("kind") in KINDS
        and all(_text(record.get(k)) for k in ("time", "database", "fingerprint", "operation"))
        and all(_text(record.get(k)) for k in ("sql",))
        and (record.get("table") is None or _text(record["table"]))
        and _number(record.get("duration_ms"))
        and _whole(record.get("pid"))
        and _call_site(record.get("call_site"))
        and isinstance(record.get("context", {}), dict)
        and (record.get("repeats") is None or _whole(record["repeats"]))
    )


def valid_skipped(skipped: Any) -> bool:
    return (
        isinstance(skipped, dict)
        and all(_text(skipped.get(k)) for k in ("database", "fingerprint", "operation", "sql"))
        and (skipped.get("table") is None or _text(skipped["table"]))
        and _whole(skipped.get("count"))
        and _number(skipped.get("seconds"))
        and _number(skipped.get("max_seconds"))
    )


class HandoverReader:
    def __init__(
        self, directory: str, slow_log: SlowQueryLog, metrics: Metrics, settings: SlowQuerySettings
    ) -> None:
        self.directory = directory
        self.settings = settings
        self._log = slow_log
        self._skipped = metrics.slow_query_handover_skipped
        self._offsets: dict[str, int] = {}  # segment name -> bytes merged (files present only)
        self._pruned = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned = False

    # -- one pass ----------------------------------------------------------------------------

    def poll(self) -> int:
        """Merge what the workers wrote since the last pass; the number of records merged."""
        found = segments(self.directory)
        present = {s.name for s in found}
        self._offsets = {n: o for n, o in self._offsets.items() if n in present}
        lines: list[dict[str, Any]] = []
        budget = READ_PER_PASS
        for segment in found:
            offset = self._offsets.get(segment.name, 0)
            if segment.size <= offset or budget <= 0:
                continue
            size = min(segment.size - offset, budget)
            read = self._read(segment.name, offset, size, size == segment.size - offset, lines)
            self._offsets[segment.name] = offset + read
            budget -= read
        lines.sort(key=lambda line: str(line.get("record", line.get("skipped", {})).get("time")))
        for line in lines:
            if "record" in line:
                self._log.merge(line["record"], plan=line.get("plan") is True)
            else:
                self._log.merge_skipped(line["skipped"])
        return sum("record" in line for line in lines)

    def _read(
        self, name: str, offset: int, size: int, to_end: bool, into: list[dict[str, Any]]
    ) -> int:
        """Parse the whole lines in `size` bytes from `offset` (`to_end`: up to the file's
        end as it was listed); the bytes consumed."""
        path = os.path.join(self.directory, name)
        try:
            with open(path, "rb") as file:
                file.seek(offset)
                data = file.read(size)
        except FileNotFoundError:  # pruned meanwhile
            return 0
        whole = end = data.rfind(b"\n") + 1
        tail = len(data) - end
        # Past the last newline: a line longer than any a worker writes, or the last line of
        # an ended worker, cut short; else a line being written, read at the next pass.
        if tail >= segment_bytes(self.settings) or (tail and to_end and not is_held(path)):
            self._skipped.labels("torn").inc()
            end = len(data)
        for raw in data[:whole].split(b"\n")[:-1]:
            line = self._parsed(raw)
            if line is None:
                self._skipped.labels("corrupt").inc()
            else:
                into.append(line)
        return end

    @staticmethod
    def _parsed(raw: bytes) -> dict[str, Any] | None:
        try:
            line = json.loads(raw)
        except ValueError:  # not JSON, not UTF-8, or nested past the parser's depth
            return None
        except RecursionError:
            return None
        if not isinstance(line, dict):
            return None
        if "record" in line and valid_record(line["record"]):
            return line
        if "skipped" in line and valid_skipped(line["skipped"]):
            line["skipped"].setdefault("time", "")
            return line
        return None

    # -- the thread --------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="db-exporter-handover", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.pass_once()
            except Exception as exc:  # e.g. the directory not there yet, or a bug: go on
                if not self._warned:
                    self._warned = True
                    log.warning("slow-query hand-over: cannot read %s: %s", self.directory, exc)
            self._stop.wait(POLL_SECONDS)

    def pass_once(self) -> None:
        if not os.path.isdir(self.directory):
            return
        if time.monotonic() - self._pruned >= PRUNE_SECONDS:
            self._pruned = time.monotonic()
            prune(self.directory, self.settings)
        self.poll()

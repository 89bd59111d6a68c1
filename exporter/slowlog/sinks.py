"""Where slow-query records go: JSON lines on stdout, a rotating file, an in-memory ring."""

from __future__ import annotations

import logging
import sys
import threading
from collections import deque
from typing import Any, Protocol


class Sink(Protocol):
    def write(self, line: str) -> None: ...

    def close(self) -> None: ...


class StdoutSink:
    def write(self, line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def close(self) -> None:
        pass


class FileSink:
    """JSON lines in a file that rotates at `max_bytes`, keeping `backups` old files."""

    def __init__(self, path: str, max_bytes: int, backups: int) -> None:
        import logging.handlers  # only when a file is configured

        self._handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
        )
        self._handler.setFormatter(logging.Formatter("%(message)s"))

    def write(self, line: str) -> None:
        self._handler.emit(logging.makeLogRecord({"msg": line, "levelno": logging.INFO}))

    def close(self) -> None:
        self._handler.close()


class RingBuffer:
    """The most recent records, as dicts, for /slow-queries and the / page: at most `size` of
    them and `max_bytes` (each record's size as `exporter.bounded.size_of` counts it)."""

    def __init__(self, size: int, max_bytes: int) -> None:
        self._records: deque[tuple[dict[str, Any], int]] = deque()
        self._size, self._max_bytes = size, max_bytes
        self.bytes = 0
        self._lock = threading.Lock()

    def append(self, record: dict[str, Any], size: int) -> None:
        with self._lock:
            self._records.append((record, size))
            self.bytes += size
            self._trim()

    def resize(self, size: int, max_bytes: int) -> None:
        """Keep at most `size` records and `max_bytes` from now on (the most recent of those
        held)."""
        with self._lock:
            self._size, self._max_bytes = size, max_bytes
            self._trim()

    def _trim(self) -> None:
        records = self._records
        while records and (len(records) > self._size or self.bytes > self._max_bytes):
            self.bytes -= records.popleft()[1]

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return [record for record, _ in self._records]

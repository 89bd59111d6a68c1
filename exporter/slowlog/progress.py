"""How far `db-exporter slowlog` has read a long log: one line on stderr, redrawn in place,
and only when stderr is a terminal (never in a pipe, a file or a log collector)."""

from __future__ import annotations

import os
import stat
import sys
import time
from types import TracebackType
from typing import IO, TextIO

MB = 1024 * 1024
REDRAW_SECONDS = 0.2


class Progress:
    def __init__(self, name: str, stream: IO[bytes], out: TextIO | None = None) -> None:
        self._out = out or sys.stderr
        self._on = self._out.isatty()
        self._name = name
        self._total: int | None = None
        self._drawn_at = 0.0
        if self._on:
            info = os.fstat(stream.fileno())
            self._total = info.st_size if stat.S_ISREG(info.st_mode) and info.st_size else None

    def show(self, done: int) -> None:
        if not self._on or time.monotonic() - self._drawn_at < REDRAW_SECONDS:
            return
        self._drawn_at = time.monotonic()
        line = f"reading {self._name}: {done / MB:,.0f} MB"
        if self._total:
            line += f" of {self._total / MB:,.0f} MB ({min(done / self._total, 1):.0%})"
        self._out.write(f"\r{line}\x1b[K")
        self._out.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._on and self._drawn_at:
            self._out.write("\r\x1b[K")  # the report follows on a clean line
            self._out.flush()

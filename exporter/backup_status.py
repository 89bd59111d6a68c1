"""The status file `db-exporter backup` leaves in the backup directory, one per database
(`<name>.backup-status.json`), and that the `backups` collector reads:

    {"database": "main",
     "last_attempt": {"outcome": "failure", "started_at": 1764400000.0,
                      "finished_at": 1764400012.5, "size_bytes": 0, "file": null,
                      "error": "pg_dump: error: connection ... refused"},
     "last_success": {"outcome": "success", ..., "size_bytes": 73400320,
                      "file": "main-20261129T020000.000000Z.dump", "error": null}}

Times are Unix seconds. `last_success` is carried over from the previous file when a run fails
(null until one succeeds). The file is replaced atomically (written aside, then renamed), so
a reader sees the old status or the new one, never half of one.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

OUTCOMES = ("success", "failure", "interrupted")
STATUS_SUFFIX = ".backup-status.json"
# A status file is a few hundred bytes; anything much larger is not one.
MAX_STATUS_BYTES = 64 * 1024


class StatusError(ValueError):
    """The status file cannot be read or is not one; the message names the file."""


@dataclass(frozen=True, slots=True)
class Attempt:
    outcome: str
    started_at: float
    finished_at: float
    size_bytes: int = 0
    file: str | None = None
    error: str | None = None

    @property
    def duration_seconds(self) -> float:
        return self.finished_at - self.started_at


@dataclass(frozen=True, slots=True)
class BackupStatus:
    database: str
    last_attempt: Attempt
    last_success: Attempt | None


def status_path(directory: Path, database: str) -> Path:
    return directory / f"{database}{STATUS_SUFFIX}"


def write_status(path: Path, status: BackupStatus) -> None:
    """Replace the status file atomically (and durably: fsynced before the rename)."""
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("w", encoding="utf-8") as file:
        json.dump(asdict(status), file)
        file.flush()
        os.fsync(file.fileno())
    partial.replace(path)


def read_status(path: Path) -> BackupStatus | None:
    """The status in `path`, or None when there is none (no backup has run yet)."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_STATUS_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StatusError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_STATUS_BYTES:
        raise StatusError(f"{path}: larger than {MAX_STATUS_BYTES} bytes: not a status file")
    try:
        return parse_status(json.loads(data))
    except KeyError as exc:
        raise StatusError(f"{path}: not a backup status file: no {exc} key") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise StatusError(f"{path}: not a backup status file: {_one_line(exc)}") from None


def parse_status(data: Any) -> BackupStatus:
    """A status from parsed JSON; ValueError (or TypeError, KeyError) says what is wrong."""
    if not isinstance(data, dict):
        raise ValueError("the top level is not an object")
    database = data["database"]
    if not isinstance(database, str):
        raise ValueError("database is not a string")
    attempt = _attempt(data["last_attempt"], "last_attempt")
    success = data["last_success"]
    return BackupStatus(
        database, attempt, None if success is None else _attempt(success, "last_success")
    )


def _attempt(data: Any, where: str) -> Attempt:
    if not isinstance(data, dict):
        raise ValueError(f"{where} is not an object")
    outcome = data["outcome"]
    if outcome not in OUTCOMES:
        raise ValueError(f"{where}.outcome is not one of {', '.join(OUTCOMES)}")
    times = [data["started_at"], data["finished_at"]]
    if not all(_number(t) and t >= 0 for t in times):
        raise ValueError(f"{where}: started_at and finished_at must be Unix times")
    size = data.get("size_bytes", 0)
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError(f"{where}.size_bytes is not a size")
    texts = [data.get("file"), data.get("error")]
    if not all(t is None or isinstance(t, str) for t in texts):
        raise ValueError(f"{where}: file and error must be strings or null")
    return Attempt(outcome, float(times[0]), float(times[1]), size, *texts)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _one_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]

"""`db-exporter backup` and `db-exporter restore`: custom-format dumps with a SHA-256 checksum,
a bounded number kept, written so that an interrupted run leaves no file that looks complete;
restores that verify the file before they touch the target.

A backup directory, for a database configured as `main`:

    main-20261129T020000.123456Z.dump          pg_dump --format=custom
    main-20261129T020000.123456Z.dump.sha256   its checksum, as `sha256sum` writes it
    main.backup-status.json                    the last run's outcome (exporter.backup_status)
    .main-20261129T020000.123456Z.dump.partial the dump while pg_dump writes it
    .main.lock                                 held while a backup of main runs

The dump is written aside (`.partial`), fsynced and hashed; the checksum file is written next;
only then is the dump renamed to its final name. So a `.dump` never exists without its
checksum, a crash leaves at most a `.partial` (removed by the next run), and `restore` refuses
a file whose checksum is missing or does not match, before it connects to the target.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from exporter.backup_status import Attempt, BackupStatus, read_status, status_path, write_status
from exporter.dsn import without_secrets
from exporter.errors import UserError
from exporter.pg_tools import ToolError, find_tool, first_error_line, libpq_environment
from exporter.probe import exporter_engine, one_line

CHECKSUM_SUFFIX = ".sha256"
# What is kept of a tool's stderr to find its error line.
MAX_TOOL_STDERR_BYTES = 64 * 1024
CONNECT_TIMEOUT_SECONDS = 30.0
_CHUNK = 1 << 20
_STAMP = "%Y%m%dT%H%M%S.%fZ"
_TABLES = text(
    "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')"
    " AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
    " AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'"
)


class BackupError(UserError):
    """A backup or restore that cannot be made; the message is one line naming the file,
    directory or database."""


@dataclass(frozen=True, slots=True)
class Backup:
    path: Path
    size_bytes: int
    duration_seconds: float
    sha256: str
    removed: tuple[Path, ...]  # older backups deleted by the retention count


@dataclass(frozen=True, slots=True)
class Restore:
    path: Path
    database: str
    duration_seconds: float


# --- files ----------------------------------------------------------------------------------


def checksum_path(dump: Path) -> Path:
    return dump.with_name(dump.name + CHECKSUM_SUFFIX)


def backups_of(directory: Path, name: str) -> list[Path]:
    """The complete backups of database `name` in `directory`, oldest first."""
    pattern = re.compile(rf"{re.escape(name)}-\d{{8}}T\d{{6}}\.\d{{6}}Z\.dump")
    found = [p for p in directory.iterdir() if pattern.fullmatch(p.name)]
    return sorted(p for p in found if checksum_path(p).is_file())


def sha256_of(path: Path) -> tuple[str, int]:
    """The file's SHA-256 (hex) and size, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: Path, content: str) -> None:
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("w", encoding="utf-8") as file:
        file.write(content)
        file.flush()
        os.fsync(file.fileno())
    partial.replace(path)


def verify(dump: Path) -> str:
    """The dump's SHA-256 when it matches its checksum file; BackupError otherwise."""
    checksum = checksum_path(dump)
    if not dump.is_file():
        raise BackupError(f"{dump}: no such file")
    try:
        expected = checksum.read_text(encoding="utf-8").split()[0].lower()
    except FileNotFoundError:
        raise BackupError(
            f"{dump}: no checksum file {checksum.name} beside it: not a complete backup"
        ) from None
    except (OSError, UnicodeDecodeError, IndexError):
        raise BackupError(f"{checksum}: not a SHA-256 checksum file") from None
    if not re.fullmatch(r"[0-9a-f]{64}", expected):
        raise BackupError(f"{checksum}: not a SHA-256 checksum file")
    actual, _ = sha256_of(dump)
    if actual != expected:
        raise BackupError(
            f"{dump}: SHA-256 {actual[:12]}... does not match {checksum.name} "
            f"({expected[:12]}...): the file is truncated or corrupt; nothing was restored"
        )
    return actual


@contextmanager
def _locked(directory: Path, name: str) -> Iterator[None]:
    """Hold `.NAME.lock` in `directory`: one backup of a database at a time. Opening it is also
    the first write into the directory, so a missing or read-only one is found here."""
    try:
        fd = os.open(directory / f".{name}.lock", os.O_WRONLY | os.O_CREAT, 0o600)
    except FileNotFoundError:
        raise BackupError(f"backup directory {directory} does not exist") from None
    except NotADirectoryError:
        raise BackupError(f"backup directory {directory} is not a directory") from None
    except OSError as exc:
        raise BackupError(
            f"backup directory {directory} is not writable: {exc.strerror or exc}"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BackupError(f"another backup of {name} is running in {directory}") from None
        yield
    finally:
        os.close(fd)


# --- the database and the tools --------------------------------------------------------------


async def _inspect(dsn: str) -> tuple[int, int]:
    engine = exporter_engine(dsn, CONNECT_TIMEOUT_SECONDS)
    try:
        async with engine.connect() as conn:
            version = (await conn.execute(text("SHOW server_version_num"))).scalar_one()
            tables = (await conn.execute(_TABLES)).scalar_one()
    finally:
        await engine.dispose()
    return int(version), int(tables)


def inspect_database(dsn: str, name: str) -> tuple[int, int]:
    """(server_version_num, number of tables, views and sequences outside the catalogs)."""
    try:
        return asyncio.run(_inspect(dsn))
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        raise BackupError(f"database {name}: {one_line(exc, dsn)}") from None


class Interrupted(KeyboardInterrupt):
    """SIGTERM, raised where the program is, as Ctrl-C raises KeyboardInterrupt."""


@contextmanager
def terminate_raises() -> Iterator[None]:
    """SIGTERM (a CronJob's deadline, `kill`) unwinds like Ctrl-C, so that cleanup runs. Only
    the main thread can set a handler: elsewhere (the demo's backup thread) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_interrupted(signum: int, frame: FrameType | None) -> None:
        raise Interrupted

    previous = signal.signal(signal.SIGTERM, raise_interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_tool(argv: list[str], env: dict[str, str], program: str, dsn: str) -> None:
    """Run a client tool to its end; its error line as a BackupError when it fails. Stopped
    (and waited for) when this process is interrupted."""
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr
        )
        try:
            code = process.wait()
        except BaseException:
            process.terminate()
            process.wait()
            raise
        if code == 0:
            return
        size = stderr.seek(0, os.SEEK_END)
        stderr.seek(max(0, size - MAX_TOOL_STDERR_BYTES))
        message = stderr.read().decode("utf-8", "replace")
    line = without_secrets(first_error_line(message, program), dsn)
    raise BackupError(f"{program} exited {code}: {line}")


# --- backup ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BackupJob:
    """What `db-exporter backup` does for one configured database."""

    name: str
    dsn: str
    directory: Path
    keep: int
    pg_bin_dir: str | None = None


def run_backup(job: BackupJob) -> Backup:
    """Back up `job.name` into `job.directory`, keep the newest `job.keep`, and record the
    outcome in the status file (unless the directory cannot be written at all)."""
    with _locked(job.directory, job.name):
        started = time.time()
        try:
            backup = _dump(job, started)
        except KeyboardInterrupt:
            _record(job, Attempt("interrupted", started, time.time(), error="interrupted"))
            raise
        except (UserError, OSError) as exc:
            error = str(exc) if isinstance(exc, UserError) else f"{exc.strerror or exc}"
            _record(job, Attempt("failure", started, time.time(), error=error))
            if isinstance(exc, OSError):
                raise BackupError(f"backup of {job.name}: {error}") from None
            raise
        attempt = Attempt("success", started, time.time(), backup.size_bytes, backup.path.name)
        _record(job, attempt)
        return backup


def _record(job: BackupJob, attempt: Attempt) -> None:
    path = status_path(job.directory, job.name)
    try:
        previous = read_status(path)
    except ValueError:
        previous = None  # a damaged status file is replaced
    last_success = attempt if attempt.outcome == "success" else None
    if last_success is None and previous is not None:
        last_success = previous.last_success
    write_status(path, BackupStatus(job.name, attempt, last_success))


def _dump(job: BackupJob, started: float) -> Backup:
    version, _ = inspect_database(job.dsn, job.name)
    try:
        tool = find_tool("pg_dump", version, job.pg_bin_dir)
    except ToolError as exc:
        raise BackupError(str(exc)) from None
    for leftover in job.directory.glob(f".{job.name}-*.dump.partial"):
        leftover.unlink(missing_ok=True)  # an earlier run's, cut off (we hold the lock)
    stamp = datetime.fromtimestamp(started, UTC).strftime(_STAMP)
    final = job.directory / f"{job.name}-{stamp}.dump"
    partial = job.directory / f".{final.name}.partial"
    argv = [str(tool.path), "--format=custom", f"--file={partial}", "--no-password"]
    try:
        _run_tool(argv, libpq_environment(job.dsn), "pg_dump", job.dsn)
        _fsync(partial)
        digest, size = sha256_of(partial)
        _write_durably(checksum_path(final), f"{digest}  {final.name}\n")
        partial.rename(final)  # the commit point: complete from here on
        _fsync(job.directory)
    finally:
        partial.unlink(missing_ok=True)
    kept = backups_of(job.directory, job.name)
    removed = tuple(kept[: max(0, len(kept) - job.keep)])
    for old in removed:
        old.unlink(missing_ok=True)
        checksum_path(old).unlink(missing_ok=True)
    return Backup(final, size, time.time() - started, digest, removed)


# --- restore ---------------------------------------------------------------------------------


def _conninfo_value(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def run_restore(
    dump: Path, dsn: str, database: str, *, force: bool = False, pg_bin_dir: str | None = None
) -> Restore:
    """Restore `dump` into the database of `dsn` (called `database` in messages) in one
    transaction. The checksum is verified first; a target holding tables is refused unless
    `force` (then the backup's objects are dropped and recreated, others are left alone)."""
    verify(dump)
    started = time.time()
    version, tables = inspect_database(dsn, database)
    if tables and not force:
        raise BackupError(
            f"database {database} is not empty ({tables} tables, views or sequences): restore "
            "into an empty database, or pass --force to replace the backup's objects in it"
        )
    try:
        tool = find_tool("pg_restore", version, pg_bin_dir)
    except ToolError as exc:
        raise BackupError(str(exc)) from None
    env = libpq_environment(dsn)
    target = f"dbname={_conninfo_value(env.get('PGDATABASE', database))}"
    replace = ["--clean", "--if-exists"] if force else []
    argv = [str(tool.path), "--single-transaction", "--exit-on-error", "--no-password"]
    argv += [f"--dbname={target}", *replace, str(dump)]
    _run_tool(argv, env, "pg_restore", dsn)
    return Restore(dump, database, time.time() - started)

"""`db-exporter backup` and `db-exporter restore` against real PostgreSQL servers and the real
client tools: the restore drill, retention, and every bad input the issue names (directory
missing or not writable, pg_dump missing or older than the server, a truncated or corrupt
file, an interrupted backup), each refused in one line with nothing lost."""

from __future__ import annotations

import fcntl
import hashlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from backup_helpers import dsn, dump_files, seed_wallet, server_version_num, tables_digest
from collector_helpers import execute
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL
from subprocesses import Running, assert_one_line_error, databases_config, run_cli, running

from exporter.backup_status import read_status, status_path
from exporter.demo.embedded import embedded_postgres
from exporter.dsn import parse_dsn, sync_url
from exporter.pg_tools import installed

Capture = pytest.CaptureFixture[str]


@pytest.fixture
def seeded(migrated_database: URL, fresh_database: URL) -> URL:
    """The demo's wallet database with users, balances and ledger history."""
    seed_wallet(fresh_database)
    return fresh_database


@pytest.fixture
def on_database(clean_environment: pytest.MonkeyPatch, seeded: URL) -> URL:
    """DATABASE_URL names the seeded database (configured as `main`)."""
    clean_environment.setenv("DATABASE_URL", dsn(seeded))
    return seeded


@pytest.fixture
def empty_database(database_url: URL) -> Iterator[str]:
    """A new, empty database on the test server; its name."""
    name = f"dbx_restore_{uuid.uuid4().hex[:10]}"
    execute(database_url, f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        execute(database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def backup(capsys: Capture, directory: Path, *flags: str) -> Path:
    code, out, err = run_cli(capsys, "backup", "--dir", str(directory), *flags)
    assert (code, err) == (0, ""), err
    assert out.startswith("wrote ")
    return Path(out.split()[1])


# --- the drill ---------------------------------------------------------------------------------


def test_restore_drill_every_table_comes_back_row_for_row(
    capsys: Capture, on_database: URL, empty_database: str, tmp_path: Path
) -> None:
    dump = backup(capsys, tmp_path)
    assert dump.parent == tmp_path
    assert dump.name.startswith("main-")
    checksum = dump.with_name(dump.name + ".sha256").read_text()
    assert checksum == f"{hashlib.sha256(dump.read_bytes()).hexdigest()}  {dump.name}\n"
    status = read_status(status_path(tmp_path, "main"))
    assert status is not None
    assert status.last_attempt.outcome == "success"
    assert status.last_success == status.last_attempt
    assert (status.last_attempt.file, status.last_attempt.size_bytes) == (
        dump.name,
        dump.stat().st_size,
    )

    code, out, err = run_cli(capsys, "restore", str(dump), "--target-database", empty_database)
    assert (code, err) == (0, ""), err
    assert out.startswith(f"restored {dump} into {empty_database} (")

    original = tables_digest(on_database)
    restored = tables_digest(on_database.set(database=empty_database))
    assert set(original) == {"alembic_version", "users", "balances", "transfers", "ledger_entries"}
    assert original["ledger_entries"][0] > 0
    assert restored == original


def test_retention_keeps_the_newest_backups(
    capsys: Capture, on_database: URL, tmp_path: Path
) -> None:
    made = [backup(capsys, tmp_path, "--keep", "2") for _ in range(3)]
    assert dump_files(tmp_path) == sorted(
        name for path in made[1:] for name in (path.name, path.name + ".sha256")
    )
    code, out, _ = run_cli(capsys, "backup", "--dir", str(tmp_path), "--keep", "1")
    assert code == 0
    assert out.rstrip().endswith("; removed 2 older")
    assert len(dump_files(tmp_path)) == 2


# --- bad input: the database -------------------------------------------------------------------


@pytest.mark.parametrize("command", ["backup", "restore"])
def test_a_database_to_choose_or_not_configured_is_one_line_naming_the_command(
    capsys: Capture, seeded: URL, tmp_path: Path, command: str
) -> None:
    before = tables_digest(seeded)
    dump = tmp_path / "main.dump"
    dump.write_bytes(b"never read")
    file = [str(dump)] if command == "restore" else ["--dir", str(tmp_path)]
    two = databases_config(tmp_path, ("main", dsn(seeded)), ("spare", dsn(seeded)))
    code, _, err = run_cli(capsys, command, "--config", two, *file)
    assert_one_line_error(code, err, f"{command}: {two} configures main, spare: choose one with")
    code, _, err = run_cli(capsys, command, "--config", two, "--database", "nope", *file)
    assert_one_line_error(
        code, err, f"{command}: {two}: no database named 'nope' (configured: main, spare)"
    )
    none = databases_config(tmp_path)
    code, _, err = run_cli(capsys, command, "--config", none, *file)
    assert_one_line_error(code, err, f"{command}: {none}: no database configured")
    # Nothing written, nothing restored.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exporter.yaml", "main.dump"]
    assert tables_digest(seeded) == before


# --- bad input: the backup directory ------------------------------------------------------------


def test_a_missing_directory_is_one_line_and_creates_nothing(
    capsys: Capture, on_database: URL, tmp_path: Path
) -> None:
    missing = tmp_path / "no" / "such"
    code, _, err = run_cli(capsys, "backup", "--dir", str(missing))
    assert_one_line_error(code, err, f"backup directory {missing} does not exist")
    assert not (tmp_path / "no").exists()


def test_no_directory_at_all_says_how_to_give_one(capsys: Capture, on_database: URL) -> None:
    code, _, err = run_cli(capsys, "backup")
    assert_one_line_error(code, err, "database main: where to? give --dir DIR")


def test_a_directory_it_cannot_write_is_one_line(on_database: URL, tmp_path: Path) -> None:
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    read_only.chmod(0o555)
    tmp_path.chmod(0o755)
    # root writes anywhere: run the command as nobody then (the directory stays root's).
    user = "nobody" if os.geteuid() == 0 else None
    env = {**os.environ, "DATABASE_URL": dsn(on_database)}
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "backup", "--dir", str(read_only)],
        capture_output=True, text=True, timeout=120, env=env, user=user, cwd="/",
    )  # fmt: skip
    assert_one_line_error(
        result.returncode, result.stderr, f"backup directory {read_only} is not writable"
    )
    assert list(read_only.iterdir()) == []


def test_a_second_backup_of_the_same_database_waits_for_nobody(
    capsys: Capture, on_database: URL, tmp_path: Path
) -> None:
    with (tmp_path / ".main.lock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a backup still running holds it
        code, _, err = run_cli(capsys, "backup", "--dir", str(tmp_path))
    assert_one_line_error(code, err, f"another backup of main is running in {tmp_path}")
    assert dump_files(tmp_path) == []
    assert not status_path(tmp_path, "main").exists()  # the running one will write it


def test_an_unreachable_database_is_one_line_and_recorded(
    capsys: Capture, clean_environment: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    clean_environment.setenv("DATABASE_URL", "postgresql://app:s3cret@127.0.0.1:1/app")
    code, _, err = run_cli(capsys, "backup", "--dir", str(tmp_path))
    assert_one_line_error(code, err, "database main: ")
    assert "s3cret" not in err
    status = read_status(status_path(tmp_path, "main"))
    assert status is not None
    assert status.last_attempt.outcome == "failure"
    assert "s3cret" not in str(status.last_attempt.error)
    assert dump_files(tmp_path) == []


# --- bad input: the client tools ---------------------------------------------------------------


def test_pg_dump_missing_is_one_line_and_recorded(
    capsys: Capture, on_database: URL, tmp_path: Path
) -> None:
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    code, _, err = run_cli(capsys, "backup", "--dir", str(tmp_path), "--pg-bin-dir", str(empty_bin))
    assert_one_line_error(code, err, f"pg_dump not found in {empty_bin}")
    assert dump_files(tmp_path) == []
    status = read_status(status_path(tmp_path, "main"))
    assert status is not None
    assert status.last_attempt.outcome == "failure"
    assert f"pg_dump not found in {empty_bin}" in str(status.last_attempt.error)
    assert status.last_success is None


@pytest.fixture(scope="module")
def newer_server(database_url: URL) -> Iterator[URL]:
    """A server newer than the oldest pg_dump installed: the test server if it is, else the
    embedded one (PostgreSQL 18)."""
    oldest = installed("pg_dump")[0]
    if server_version_num(database_url) // 10000 > oldest.major:
        yield database_url
        return
    with embedded_postgres() as server:
        url = parse_dsn(server.url).set(drivername="postgresql")
        if server_version_num(url) // 10000 <= oldest.major:
            pytest.skip(f"no server newer than {oldest}")
        yield url


def test_an_older_pg_dump_is_refused_naming_both_versions(
    capsys: Capture, clean_environment: pytest.MonkeyPatch, newer_server: URL, tmp_path: Path
) -> None:
    oldest = installed("pg_dump")[0]
    clean_environment.setenv("DATABASE_URL", dsn(newer_server))
    server = server_version_num(newer_server)
    code, _, err = run_cli(
        capsys, "backup", "--dir", str(tmp_path), "--pg-bin-dir", str(oldest.path.parent)
    )
    assert_one_line_error(
        code,
        err,
        f"pg_dump {oldest.version} ({oldest.path}) is older than the server (PostgreSQL "
        f"{server // 10000}.{server % 10000})",
    )
    assert dump_files(tmp_path) == []


def test_without_pg_bin_dir_the_closest_version_at_least_the_servers_is_found(
    capsys: Capture, clean_environment: pytest.MonkeyPatch, newer_server: URL, tmp_path: Path
) -> None:
    clean_environment.setenv("DATABASE_URL", dsn(newer_server))
    dump = backup(capsys, tmp_path)
    assert dump.stat().st_size > 0


# --- bad input: the file to restore ------------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncated", "corrupt", "no checksum"])
def test_a_damaged_backup_is_refused_before_the_target_is_touched(
    capsys: Capture, on_database: URL, tmp_path: Path, damage: str
) -> None:
    dump = backup(capsys, tmp_path)
    data = dump.read_bytes()
    if damage == "truncated":
        dump.write_bytes(data[: len(data) // 2])
        expected = "the file is truncated or corrupt; nothing was restored"
    elif damage == "corrupt":
        dump.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
        expected = "the file is truncated or corrupt; nothing was restored"
    else:
        dump.with_name(dump.name + ".sha256").unlink()
        expected = f"no checksum file {dump.name}.sha256 beside it: not a complete backup"
    before = tables_digest(on_database)
    # Into the backed-up database itself, with --force: the one target a bad file would ruin.
    code, _, err = run_cli(capsys, "restore", str(dump), "--force")
    assert_one_line_error(code, err, str(dump), expected)
    assert tables_digest(on_database) == before


def test_a_non_empty_target_is_refused_unless_forced(
    capsys: Capture, on_database: URL, tmp_path: Path
) -> None:
    dump = backup(capsys, tmp_path)
    before = tables_digest(on_database)
    execute(on_database, "DELETE FROM ledger_entries WHERE id % 2 = 0")
    damaged = tables_digest(on_database)
    code, _, err = run_cli(capsys, "restore", str(dump))
    assert_one_line_error(code, err, f"database {on_database.database} is not empty", "--force")
    assert tables_digest(on_database) == damaged

    code, out, err = run_cli(capsys, "restore", str(dump), "--force")
    assert (code, err) == (0, ""), err
    assert out.startswith(f"restored {dump} into {on_database.database}")
    assert tables_digest(on_database) == before


# --- bad input: an interrupted backup ----------------------------------------------------------


def wait_until(check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.1)


def _pg_dump_waiting(url: URL) -> bool:
    rows = execute(
        url,
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg_dump'"
        " AND wait_event_type = 'Lock'",
    )
    return bool(rows[0][0])


def _pg_dump_gone(url: URL) -> bool:
    rows = execute(url, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg_dump'")
    return rows[0][0] == 0


def environment(url: URL) -> dict[str, str]:
    return {**os.environ, "DATABASE_URL": dsn(url)}


@contextmanager
def backup_held_up(url: URL, directory: Path) -> Iterator[Running]:
    """`db-exporter backup` as a real process whose pg_dump waits for a lock this test holds:
    stopped halfway, for sure. The lock is released when the block ends."""
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as holder:
            holder.execute(text("LOCK TABLE ledger_entries IN ACCESS EXCLUSIVE MODE"))
            with running("backup", "--dir", str(directory), env=environment(url)) as run:
                run.wait_until("pg_dump waiting", lambda: _pg_dump_waiting(url))
                yield run
            holder.rollback()
    finally:
        engine.dispose()


def backup_again(url: URL, directory: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "backup", "--dir", str(directory)],
        capture_output=True, text=True, timeout=120, env=environment(url),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    status = read_status(status_path(directory, "main"))
    assert status is not None
    assert status.last_attempt.outcome == "success"


def test_an_interrupted_backup_leaves_no_file_looking_complete(
    on_database: URL, tmp_path: Path
) -> None:
    with backup_held_up(on_database, tmp_path) as run:
        code = run.stop(signal.SIGTERM)  # as a CronJob's deadline or `kill` stops it
    wait_until(lambda: _pg_dump_gone(on_database))
    assert_one_line_error(
        code, "".join(run.err_lines), "backup of main interrupted: no backup written"
    )
    assert dump_files(tmp_path) == []
    status = read_status(status_path(tmp_path, "main"))
    assert status is not None
    assert status.last_attempt.outcome == "interrupted"
    assert status.last_success is None
    backup_again(on_database, tmp_path)
    assert len(dump_files(tmp_path)) == 2


def test_a_killed_backup_leaves_only_a_partial_file_the_next_run_removes(
    on_database: URL, tmp_path: Path
) -> None:
    with backup_held_up(on_database, tmp_path) as run:
        # No cleanup at all. Its pg_dump, orphaned, goes on once the lock is free.
        run.process.kill()
        run.process.wait()
    wait_until(lambda: _pg_dump_gone(on_database))
    leftovers = dump_files(tmp_path)
    assert len(leftovers) == 1
    assert leftovers[0].startswith(".main-")
    assert leftovers[0].endswith(".dump.partial")
    backup_again(on_database, tmp_path)
    (dump, checksum) = dump_files(tmp_path)
    assert dump.endswith(".dump")
    assert checksum == dump + ".sha256"

"""The backups collector reads the status file `db-exporter backup` leaves: never backed up,
after a success, after a failure that follows one; unreadable files and directories fail the
run clearly; the status reader takes any bytes without an unexpected error (fuzzed); the
settings refuse an enabled collector without a directory."""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from collector_helpers import run_collector, samples
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from sqlalchemy.engine import URL

from exporter.backup_status import (
    MAX_STATUS_BYTES,
    Attempt,
    BackupStatus,
    StatusError,
    parse_status,
    read_status,
    status_path,
    write_status,
)
from exporter.backups import BackupError, BackupJob, run_backup
from exporter.collectors import DEFAULT_ENABLED
from exporter.collectors.backups import BackupsCollector
from exporter.collectors.base import CollectorError
from exporter.settings import BackupsCollectorSettings, ConfigError, settings_from_data


def collector(directory: Path, **options: Any) -> BackupsCollector:
    return BackupsCollector(
        "main", BackupsCollectorSettings(enabled=True, directory=str(directory), **options)
    )


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, {"datname": "main", **labels})


def outcomes(registry: CollectorRegistry) -> dict[str, float]:
    return {labels["outcome"]: v for labels, v in samples(registry, "db_backup_last_outcome")}


async def test_never_backed_up_reads_zero_so_the_alert_fires(
    database_url: URL, tmp_path: Path
) -> None:
    registry = await run_collector(collector(tmp_path, max_age_seconds=3600), database_url)
    assert value(registry, "db_backup_last_success_timestamp_seconds") == 0
    assert value(registry, "db_backup_last_attempt_timestamp_seconds") == 0
    assert value(registry, "db_backup_last_size_bytes") == 0
    assert value(registry, "db_backup_max_age_seconds") == 3600
    assert outcomes(registry) == {}


async def test_a_real_backup_then_a_failure(database_url: URL, tmp_path: Path) -> None:
    dsn = database_url.render_as_string(hide_password=False)
    done = await asyncio.to_thread(run_backup, BackupJob("main", dsn, tmp_path, keep=3))
    registry = await run_collector(collector(tmp_path), database_url)
    status = read_status(status_path(tmp_path, "main"))
    assert status is not None
    assert status.last_success is not None
    success = status.last_success
    assert value(registry, "db_backup_last_success_timestamp_seconds") == success.finished_at
    assert value(registry, "db_backup_last_attempt_timestamp_seconds") == success.finished_at
    assert value(registry, "db_backup_last_size_bytes") == done.path.stat().st_size > 0
    assert value(registry, "db_backup_last_duration_seconds") == success.duration_seconds
    assert outcomes(registry) == {"success": 1, "failure": 0, "interrupted": 0}

    # A run whose pg_dump is nowhere: the failure is the last attempt, the success is kept.
    nowhere = BackupJob("main", dsn, tmp_path, keep=3, pg_bin_dir=str(tmp_path))
    with pytest.raises(BackupError, match="pg_dump not found"):
        await asyncio.to_thread(run_backup, nowhere)
    registry = await run_collector(collector(tmp_path), database_url)
    failed = read_status(status_path(tmp_path, "main"))
    assert failed is not None
    assert value(registry, "db_backup_last_success_timestamp_seconds") == success.finished_at
    attempt = value(registry, "db_backup_last_attempt_timestamp_seconds")
    assert attempt == failed.last_attempt.finished_at > success.finished_at
    assert value(registry, "db_backup_last_size_bytes") == done.path.stat().st_size
    assert outcomes(registry) == {"success": 0, "failure": 1, "interrupted": 0}


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"{not json", "not a backup status file"),
        (b'{"database": "main"}', "no 'last_attempt' key"),
        (b"x" * (MAX_STATUS_BYTES + 1), f"larger than {MAX_STATUS_BYTES} bytes"),
    ],
)
async def test_a_status_file_it_cannot_read_fails_the_run_naming_it(
    database_url: URL, tmp_path: Path, content: bytes, problem: str
) -> None:
    path = status_path(tmp_path, "main")
    path.write_bytes(content)
    with pytest.raises(CollectorError) as error:
        await run_collector(collector(tmp_path), database_url)
    assert str(path) in str(error.value)
    assert problem in str(error.value)


async def test_a_missing_directory_fails_the_run(database_url: URL, tmp_path: Path) -> None:
    with pytest.raises(CollectorError, match=r"backup directory .*/gone does not exist"):
        await run_collector(collector(tmp_path / "gone"), database_url)


def test_status_written_and_read_back(tmp_path: Path) -> None:
    attempt = Attempt("failure", 10.0, 12.5, error="pg_dump: error: boom")
    success = Attempt("success", 1.0, 2.0, 1234, "main-x.dump")
    status = BackupStatus("main", attempt, success)
    path = status_path(tmp_path, "main")
    write_status(path, status)
    assert read_status(path) == status
    assert attempt.duration_seconds == 2.5
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


STATUS_KEYS = ["database", "last_attempt", "last_success", "outcome", "started_at",
               "finished_at", "size_bytes", "file", "error", "other"]  # fmt: skip
JSON_LIKE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(STATUS_KEYS), children, max_size=7)
    ),
    max_leaves=30,
)


def read_bytes_as_status(content: bytes) -> BackupStatus | StatusError | None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "main.backup-status.json"
        path.write_bytes(content)
        try:
            return read_status(path)
        except StatusError as error:
            return error


# Whatever bytes the file holds, reading it gives a status or a one-line StatusError.
@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300), JSON_LIKE.map(lambda data: json.dumps(data).encode())))
def test_reading_any_status_file_gives_a_status_or_a_status_error(content: bytes) -> None:
    found = read_bytes_as_status(content)
    if isinstance(found, StatusError):
        assert str(found).count("main.backup-status.json: ") == 1
        assert "\n" not in str(found)
    else:
        assert isinstance(found, BackupStatus)  # never None: the file is there
        assert found.last_attempt.finished_at >= 0


def test_parse_status_refuses_an_unknown_outcome() -> None:
    attempt = {"outcome": "partial", "started_at": 1, "finished_at": 2}
    with pytest.raises(ValueError, match=r"last_attempt\.outcome is not one of"):
        parse_status({"database": "main", "last_attempt": attempt, "last_success": None})


def test_settings_enabled_without_directory_is_refused() -> None:
    data = {"databases": [{"name": "main", "dsn": "postgresql://u@h/db",
                           "collectors": {"backups": {"enabled": True}}}]}  # fmt: skip
    with pytest.raises(ConfigError, match="directory is required when the collector is enabled"):
        settings_from_data(data, "exporter.yaml", env={})
    data["databases"][0]["collectors"]["backups"]["directory"] = "/backups"
    backups = settings_from_data(data, "exporter.yaml", env={}).databases[0].collectors.backups
    assert (backups.keep, backups.max_age_seconds) == (7, 26 * 3600)
    assert DEFAULT_ENABLED["backups"] is False

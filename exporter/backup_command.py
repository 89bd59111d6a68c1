"""`db-exporter backup` and `db-exporter restore` on a configured database: its DSN, and the
`collectors.backups` section that the `backups` collector reads too (flags override it)."""

from __future__ import annotations

from pathlib import Path

from exporter.backups import (
    Backup,
    BackupError,
    BackupJob,
    Restore,
    run_backup,
    run_restore,
    terminate_raises,
)
from exporter.dsn import parse_dsn
from exporter.settings import DatabaseSettings


def backup_database(
    database: DatabaseSettings,
    *,
    directory: str | None = None,
    keep: int | None = None,
    pg_bin_dir: str | None = None,
) -> Backup:
    options = database.collectors.backups
    directory = directory or options.directory
    if directory is None:
        raise BackupError(
            f"database {database.name}: where to? give --dir DIR or set "
            "collectors.backups.directory"
        )
    job = BackupJob(
        database.name,
        database.dsn,
        Path(directory),
        keep or options.keep,
        pg_bin_dir or options.pg_bin_dir,
    )
    try:
        with terminate_raises():
            return run_backup(job)
    except KeyboardInterrupt:
        raise BackupError(
            f"backup of {database.name} interrupted: no backup written (recorded in the "
            "status file)"
        ) from None


def restore_database(
    database: DatabaseSettings,
    dump: str,
    *,
    target_database: str | None = None,
    force: bool = False,
    pg_bin_dir: str | None = None,
) -> Restore:
    url = parse_dsn(database.dsn)
    if target_database is not None:
        url = url.set(database=target_database)
    name = url.database or database.name
    try:
        with terminate_raises():
            return run_restore(
                Path(dump),
                url.render_as_string(hide_password=False),
                name,
                force=force,
                pg_bin_dir=pg_bin_dir or database.collectors.backups.pg_bin_dir,
            )
    except KeyboardInterrupt:
        raise BackupError(
            f"restore into {name} interrupted: its single transaction was rolled back"
        ) from None

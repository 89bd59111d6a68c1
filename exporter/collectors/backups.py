"""Backups: when did `db-exporter backup` last succeed for this database, and how did its last
run end? Read from the status file the command leaves in the backup directory
(`exporter.backup_status`); no query runs.

- `db_backup_last_success_timestamp_seconds{datname}`: when the last good backup finished (0:
  never); `db_backup_last_attempt_timestamp_seconds{datname}`: when the last run finished.
- `db_backup_last_outcome{datname,outcome}`: 1 for the last run's outcome (success, failure,
  interrupted), 0 for the others.
- `db_backup_last_duration_seconds{datname}`: how long the last run took;
  `db_backup_last_size_bytes{datname}`: the size of the last good backup.
- `db_backup_max_age_seconds{datname}`: the configured `max_age_seconds`, which
  DBExporterBackupTooOld compares the last success with.

No status file yet is "never": the timestamps are 0, so the alert fires until a backup
succeeds. A status file that cannot be read fails the run with its reason. Like every
collector it pauses while its database does not answer (DBExporterDatabaseDown covers that).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from sqlalchemy.ext.asyncio import AsyncConnection

from exporter.backup_status import OUTCOMES, BackupStatus, StatusError, read_status, status_path
from exporter.collectors.base import Collector, CollectorError
from exporter.settings import BackupsCollectorSettings


class BackupsCollector(Collector[BackupsCollectorSettings]):
    name = "backups"
    # One database's backups are one fact: with several replicas of the exporter, the elected
    # one reports it (each needs the directory mounted, to be able to take over).
    database_wide = True

    async def collect(self, conn: AsyncConnection, server_version: int) -> Sequence[Metric]:
        directory = self.settings.directory
        if directory is None:
            raise CollectorError("directory is not configured")
        if not await asyncio.to_thread(Path(directory).is_dir):
            raise CollectorError(f"backup directory {directory} does not exist")
        try:
            status = await asyncio.to_thread(
                read_status, status_path(Path(directory), self.datname)
            )
        except StatusError as exc:
            raise CollectorError(str(exc)) from None
        return self.families(status)

    def families(self, status: BackupStatus | None) -> list[Metric]:
        labels = [self.datname]
        attempt = status.last_attempt if status else None
        success = status.last_success if status else None
        gauges = (
            (
                "db_backup_last_success_timestamp_seconds",
                "Unix time the last successful backup finished (0: never).",
                success.finished_at if success else 0,
            ),
            (
                "db_backup_last_attempt_timestamp_seconds",
                "Unix time the last backup run finished, whatever its outcome (0: never).",
                attempt.finished_at if attempt else 0,
            ),
            (
                "db_backup_last_duration_seconds",
                "How long the last backup run took.",
                attempt.duration_seconds if attempt else 0,
            ),
            (
                "db_backup_last_size_bytes",
                "Size of the last successful backup file.",
                success.size_bytes if success else 0,
            ),
            (
                "db_backup_max_age_seconds",
                "The configured age beyond which the last successful backup is too old.",
                self.settings.max_age_seconds,
            ),
        )
        families: list[Metric] = []
        for name, doc, value in gauges:
            family = GaugeMetricFamily(name, doc, labels=["datname"])
            family.add_metric(labels, value)
            families.append(family)
        outcome = GaugeMetricFamily(
            "db_backup_last_outcome",
            "1 for how the last backup run ended (success, failure, interrupted), 0 for the "
            "others; no series before the first run.",
            labels=["datname", "outcome"],
        )
        if attempt is not None:
            for name in OUTCOMES:
                outcome.add_metric([*labels, name], 1 if attempt.outcome == name else 0)
        families.append(outcome)
        return families

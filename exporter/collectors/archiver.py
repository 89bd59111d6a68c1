"""Archiver: WAL files archived, attempts that failed, and how long since the last success.

Server-wide, from `pg_stat_archiver`, no labels: `pg_stat_archiver_archived_count_total`,
`pg_stat_archiver_failed_count_total` (postgres_exporter: the same counters without
`_total`), `pg_stat_archiver_last_archive_age_seconds` (postgres_exporter:
`pg_stat_archiver_last_archive_age`; no series until a file was archived, as there: an age of
0 would read as "just archived"), and `pg_stat_archiver_last_{archived,failed}_timestamp_seconds`
(0: never). A rising `failed_count` means `archive_command` fails and WAL piles up in pg_wal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from exporter.collectors.base import Collector
from exporter.collectors.columns import Column, row_families
from exporter.settings import CollectorSettings

ARCHIVER_SQL = """
SELECT archived_count, failed_count, last_archived_time, last_failed_time,
       extract(epoch FROM now() - last_archived_time) AS last_archive_age
FROM pg_stat_archiver
"""
COLUMNS = (
    Column("archived_count", "pg_stat_archiver_archived_count",
           "WAL files archived successfully."),
    Column("failed_count", "pg_stat_archiver_failed_count",
           "Failed attempts to archive a WAL file."),
    Column("last_archived_time", "pg_stat_archiver_last_archived_timestamp_seconds",
           "Unix time of the last successful archive (0: never).", "timestamp"),
    Column("last_failed_time", "pg_stat_archiver_last_failed_timestamp_seconds",
           "Unix time of the last failed archive attempt (0: never).", "timestamp"),
)  # fmt: skip


class ArchiverCollector(Collector[CollectorSettings]):
    name = "archiver"
    database_wide = True
    server_wide = True
    postgres_exporter_names: ClassVar[Mapping[str, str]] = {
        "pg_stat_archiver_archived_count": "pg_stat_archiver_archived_count",
        "pg_stat_archiver_failed_count": "pg_stat_archiver_failed_count",
        "pg_stat_archiver_last_archive_age_seconds": "pg_stat_archiver_last_archive_age",
    }

    async def collect(self, conn: AsyncConnection, server_version: int) -> Sequence[Metric]:
        row = (await conn.execute(text(ARCHIVER_SQL))).one()
        families = row_families(row, COLUMNS)
        age = GaugeMetricFamily(
            "pg_stat_archiver_last_archive_age_seconds",
            "Time since the last WAL file was archived (no series before the first).",
            labels=[],
        )
        if row.last_archive_age is not None:
            age.add_metric([], float(row.last_archive_age))
        families.append(age)
        return families

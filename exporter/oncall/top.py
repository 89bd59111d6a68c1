"""pg_stat_statements' top statements by total execution time, with their text, from each
database's statements collector (its last run, kept in memory by the collector)."""

from __future__ import annotations

from dataclasses import dataclass

from exporter.collectors.runner import CollectorRunner
from exporter.collectors.statements import StatementsCollector, TopStatement


@dataclass(frozen=True)
class DatabaseTop:
    database: str
    statements: tuple[TopStatement, ...]  # empty: pg_stat_statements not readable (yet)


def gather(runner: CollectorRunner | None) -> list[DatabaseTop]:
    """One entry per database whose statements collector runs in this exporter."""
    if runner is None:
        return []
    found = []
    for worker in runner.workers:
        for job in worker.jobs:
            if isinstance(job.collector, StatementsCollector) and job.active:
                found.append(DatabaseTop(worker.name, job.collector.top))
    return found

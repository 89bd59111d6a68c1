"""pg_stat_statements' top statements by total execution time, with their text, from each
database's statements collector (its last run, kept in memory by the collector).

The collector keeps (statement, role) pairs, as its series are labelled; the page shows each
statement once, with the roles that ran it and their counts summed."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from exporter.collectors.runner import DatabaseView
from exporter.collectors.statements import StatementsCollector, TopStatement


@dataclass(frozen=True)
class Statement:
    """One statement of a database's top: every role of the top that ran it, summed."""

    queryid: str
    roles: tuple[str, ...]  # sorted
    calls: float
    total_ms: float
    rows: float
    text: str | None  # None: not read


@dataclass(frozen=True)
class DatabaseTop:
    database: str
    statements: tuple[Statement, ...]  # empty: pg_stat_statements not readable (yet)


def by_statement(pairs: Iterable[TopStatement]) -> tuple[Statement, ...]:
    """The pairs grouped per queryid (a database's top, so per (datname, queryid)), costliest
    first."""
    grouped: dict[str, list[TopStatement]] = {}
    for pair in pairs:
        grouped.setdefault(pair.queryid, []).append(pair)
    statements = [
        Statement(
            queryid,
            tuple(sorted({p.user for p in runs})),
            sum(p.calls for p in runs),
            sum(p.total_ms for p in runs),
            sum(p.rows for p in runs),
            next((p.text for p in runs if p.text is not None), None),
        )
        for queryid, runs in grouped.items()
    ]
    return tuple(sorted(statements, key=lambda s: (-s.total_ms, s.queryid)))


def gather(databases: Iterable[DatabaseView]) -> list[DatabaseTop]:
    """One entry per database whose statements collector runs in this exporter."""
    return [
        DatabaseTop(database.name, by_statement(job.collector.top))
        for database in databases
        for job in database.jobs
        if isinstance(job.collector, StatementsCollector) and job.active
    ]

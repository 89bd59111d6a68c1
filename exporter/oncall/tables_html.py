"""Indexes to fix and pg_stat_statements' top statements, as HTML."""

from __future__ import annotations

from html import escape

from exporter.oncall.indexes import IndexToFix
from exporter.oncall.markup import (
    INVALID_INDEX,
    Links,
    duration,
    ms,
    row,
    size,
    sql_block,
    table,
)
from exporter.oncall.top import DatabaseTop, Statement

INDEXES_ON_PAGE = 100
STATEMENTS_ON_PAGE = 100  # per database


def indexes_section(indexes: list[IndexToFix], collected: bool, links: Links) -> str:
    rows = [
        row(
            [
                escape(i.database),
                escape(f"{i.schema}.{i.table}"),
                f"<code>{escape(i.index)}</code>",
                escape(i.problem),
                size(i.size_bytes),
                "-" if i.scans is None else f"{i.scans:.0f}",
                "-" if i.stats_age_seconds is None else duration(i.stats_age_seconds),
                f'<code class="copy">{escape(i.fix)}</code>',
            ],
            "bad" if i.problem == "invalid" else "",
        )
        for i in indexes[:INDEXES_ON_PAGE]
    ]
    headers = (
        "Database", "Table", "Index", "Problem", "Size", "Scans", "Statistics age",
        "Suggested fix (review first; never run by db-exporter)",
    )  # fmt: skip
    empty = (
        "No unused, invalid or duplicate index."
        if collected
        else "The indexes collector has not run yet in this exporter."
    )
    return (
        '<section id="indexes"><h2>Indexes</h2>'
        '<p class="suggest">Suggestions to review, not instructions: check each index with its'
        " owners (zero scans in an hour mean less than zero scans in a month: see the"
        f" statistics age) before running anything. {links.both(INVALID_INDEX)}</p>"
        + table("indexes-to-fix", headers, rows, empty)
        + "</section>"
    )


def _top_row(database: str, s: Statement) -> str:
    mean = s.total_ms / s.calls if s.calls else 0.0
    sql = sql_block(s.text, "query text") if s.text is not None else "-"
    return row(
        [
            f'<code class="copy">{escape(s.queryid)}</code>',
            escape(database),
            ", ".join(f"<code>{escape(role)}</code>" for role in s.roles),
            f"{s.calls:,.0f}",
            ms(s.total_ms),
            ms(mean),
            f"{s.rows:,.0f}",
            sql,
        ]
    ).replace("<tr", f'<tr id="queryid-{escape(s.queryid)}"', 1)


def top_section(tops: list[DatabaseTop]) -> str:
    if not tops:
        return (
            '<section id="top-statements"><h2>Top statements (pg_stat_statements)</h2>'
            '<p class="muted">The statements collector does not run in this exporter.</p>'
            "</section>"
        )
    rows = [_top_row(top.database, s) for top in tops for s in top.statements[:STATEMENTS_ON_PAGE]]
    headers = ("queryid", "Database", "Roles", "Calls", "Total ms", "Mean ms", "Rows", "SQL")
    return (
        '<section id="top-statements"><h2>Top statements (pg_stat_statements)</h2>'
        "<p>By total execution time since the statistics were reset, each statement once with"
        " the roles that ran it (counts summed over the roles in the collector's top); a queryid"
        " on a dashboard is <code>#queryid-&lt;id&gt;</code> here.</p>"
        + table("top-statements-table", headers, rows, "pg_stat_statements is not readable yet.")
        + "</section>"
    )

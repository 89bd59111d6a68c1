"""What every part of the page is built from: escaped, cut values, tables, and the links of
its signals. Every value that comes from a statement, a plan, a call site, a context, a database
or a collector goes through `escape()` (attribute values too)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from html import escape
from typing import Any
from urllib.parse import quote

from exporter.settings import PageSettings

SQL_SHOWN = 64 * 1024  # characters of one statement
VALUE_SHOWN = 300  # characters of a call site's parts, a route, a context value

# Alert (runbook anchor) and dashboard of each signal in the health strip.
DATABASE_DOWN = ("DBExporterDatabaseDown", "db-exporter-overview")
POOL_SATURATED = ("DBExporterPoolSaturated", "db-exporter-pool")
POOL_TIMEOUTS = ("DBExporterPoolTimeouts", "db-exporter-pool")
COLLECTOR_FAILING = ("DBExporterCollectorFailing", "db-exporter-overview")
MIGRATIONS_PENDING = ("DBExporterMigrationsPending", "db-exporter-overview")
SCHEMA_DRIFT = ("DBExporterSchemaDrift", "db-exporter-overview")
SLOW_QUERIES = ("DBExporterSlowQueryBurst", "db-exporter-slow-queries")
N_PLUS_ONE = ("DBExporterNPlusOneBurst", "db-exporter-slow-queries")
INVALID_INDEX = ("DBExporterInvalidIndex", "db-exporter-indexes-tables")


def cut(value: str, kept: int) -> str:
    return value if len(value) <= kept else value[:kept] + f"...[cut: {len(value)} characters]"


def shown(value: Any, kept: int = VALUE_SHOWN) -> str:
    """Any value as escaped text, cut."""
    return escape(cut(value if isinstance(value, str) else str(value), kept))


def plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def ms(value: float) -> str:
    return f"{value:,.1f}"


def moment(at: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at)) if at is not None else "-"


def duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def size(value: float | None) -> str:
    if value is None:
        return "-"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= scale:
            return f"{value / scale:.1f} {unit}"
    return f"{value:.0f} B"


def table(css_id: str, headers: Iterable[str], rows: list[str], empty: str) -> str:
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = "\n".join(rows) or f'<tr><td colspan="99" class="muted">{empty}</td></tr>'
    return (
        f'<div class="scroll"><table id="{css_id}"><thead><tr>{head}</tr></thead>'
        f"<tbody>\n{body}\n</tbody></table></div>"
    )


def row(cells: Iterable[str], css: str = "") -> str:
    attribute = f' class="{css}"' if css else ""
    return f"<tr{attribute}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def sql_block(sql: str, summary: str = "SQL") -> str:
    return (
        f'<details><summary>{summary}</summary><pre class="sql">{escape(cut(sql, SQL_SHOWN))}'
        "</pre></details>"
    )


@dataclass(frozen=True)
class Links:
    """Runbook and dashboard links of the page's signals."""

    settings: PageSettings

    def runbook(self, alert: str) -> str:
        url = f"{self.settings.runbook_base_url}#{alert.lower()}"
        return f'<a class="tag" href="{escape(url)}">runbook</a>'

    def dashboard(self, uid: str, database: str | None = None) -> str:
        if self.settings.grafana_url is None:
            return ""
        url = f"{self.settings.grafana_url.rstrip('/')}/d/{uid}"
        if database is not None:
            url += f"?var-database={quote(database, safe='')}"
        return f' <a class="tag" href="{escape(url)}">dashboard</a>'

    def both(self, signal: tuple[str, str], database: str | None = None) -> str:
        return self.runbook(signal[0]) + self.dashboard(signal[1], database)

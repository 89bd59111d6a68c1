"""The page as HTML, by string building: every value that comes from a statement, a plan, a call
site, a context, a database or a collector goes through `escape()` (attribute values too), and
every link the page makes from a record's value must be http(s)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from html import escape
from typing import Any
from urllib.parse import quote

from exporter.collectors.statements import TopStatement
from exporter.oncall.chart import latency_chart
from exporter.oncall.health import DatabaseHealth, Health
from exporter.oncall.indexes import IndexToFix
from exporter.oncall.query import WINDOWS, PageQuery
from exporter.oncall.records import SlowStatement, Window, number, route, text
from exporter.oncall.style import STYLE
from exporter.oncall.top import DatabaseTop
from exporter.settings import PageSettings

TOP_ON_PAGE = 25  # slow statements and N+1 rows shown
INDEXES_ON_PAGE = 100
STATEMENTS_ON_PAGE = 100  # per database
SQL_SHOWN = 64 * 1024  # characters of one statement
VALUE_SHOWN = 300  # characters of a call site's parts, a route, a context value
CONTEXT_SHOWN = 20  # context fields shown per record
REFRESH_CHOICES = (15, 30, 60, 300)
COLLECTOR_STATES = (
    ("ok", "ok"), ("waiting", "waiting for a first run"), ("elsewhere", "run by another exporter"),
    ("failing", "failing"), ("down", "not running: the database is down"),
)  # fmt: skip

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


# -- the health strip ----------------------------------------------------------------------


def _signal(state: str, what: str, detail: str, links: str) -> str:
    return (
        f'<li class="{state}"><span class="what">{what}</span> {detail}'
        f' <span class="links">{links}</span></li>'
    )


def _database_card(db: DatabaseHealth, position: int, span: str, links: Links) -> str:
    name = escape(db.name)
    signals = []
    if db.reason is None:
        signals.append(_signal("muted", "database", "not checked by this exporter", ""))
    elif db.up is None:
        signals.append(_signal("muted", "database", "not checked yet", ""))
    else:
        state = "ok" if db.up else "bad"
        detail = "up" if db.up else f"<b>down</b>: {shown(db.reason)}"
        signals.append(_signal(state, "database", detail, links.both(DATABASE_DOWN, db.name)))
    pool = db.pool
    if pool is None:
        signals.append(_signal("muted", "pool", "no instrumented pool in this process", ""))
    else:
        limit = "unlimited" if pool.max_overflow < 0 else f"{pool.max_overflow:.0f}"
        full = pool.in_use >= pool.size + max(pool.max_overflow, 0) and pool.max_overflow >= 0
        detail = (
            f"{pool.in_use:.0f} of {pool.size:.0f} in use, overflow {pool.overflow:.0f} of {limit}"
        )
        state = "bad" if full else ("warn" if pool.overflow > 0 else "ok")
        signals.append(_signal(state, "pool", detail, links.both(POOL_SATURATED, db.name)))
    if db.recent is not None:
        recent = db.recent
        state = "bad" if recent.timeouts else ("warn" if recent.waits else "ok")
        detail = (
            f"{recent.checkouts:.0f} checkouts {span}: {recent.waits:.0f} waited over 100 ms,"
            f" {recent.timeouts:.0f} timed out"
        )
        signals.append(_signal(state, "checkouts", detail, links.both(POOL_TIMEOUTS, db.name)))
    if db.collectors:
        failing = db.failing
        anchor = f'<a class="tag" href="#collectors-{position}">detail</a> '
        if failing:
            names = ", ".join(escape(c.name) for c in failing)
            detail, state = f"<b>{len(failing)} failing</b>: {names}", "bad"
        elif db.up is False:
            detail, state = "not running while the database is down", "muted"
        else:
            counts = Counter(c.state for c in db.collectors)
            detail = ", ".join(
                f"{counts[key]} {label}" for key, label in COLLECTOR_STATES if counts[key]
            )
            state = "ok"
        signals.append(
            _signal(state, "collectors", detail, anchor + links.both(COLLECTOR_FAILING, db.name))
        )
    if db.migrations is not None:
        pending, drift = db.migrations.pending, db.migrations.drift
        parts = [f"{pending:.0f} pending" if pending is not None else "pending unknown"]
        parts.append(
            "drift not compared"
            if drift is None
            else (f"<b>{drift:.0f} differences</b> from the models" if drift else "no drift")
        )
        state = "bad" if (pending or drift) else "ok"
        signal = SCHEMA_DRIFT if drift and not pending else MIGRATIONS_PENDING
        signals.append(_signal(state, "migrations", ", ".join(parts), links.both(signal, db.name)))
    down = db.up is False or any(s.startswith('<li class="bad"') for s in signals)
    return (
        f'<div class="card{" down" if down else ""}"><h3>{name}</h3>'
        f'<ul class="signals">{"".join(signals)}</ul></div>'
    )


def health_section(health: Health, links: Links) -> str:
    span = (
        f"in the last {duration(health.recent_seconds)}" if health.recent_seconds else "since start"
    )
    cards = "".join(
        _database_card(db, i, span, links) for i, db in enumerate(health.databases)
    ) or (
        '<p class="muted">No database is configured for this exporter and no pool is '
        "instrumented in this process.</p>"
    )
    return f'<section id="health"><h2>Health</h2><div class="strip">{cards}</div></section>'


def collectors_section(health: Health) -> str:
    rows = []
    for i, db in enumerate(health.databases):
        for c in db.collectors:
            state = dict(COLLECTOR_STATES).get(c.state, c.state)
            css = "bad" if c.state == "failing" else ""
            cells = [escape(db.name), escape(c.name), state, shown(c.reason or "")]
            rows.append(row(cells, css).replace("<tr", f'<tr id="collectors-{i}"', 1))
    return (
        '<section id="collectors"><h2>Collectors</h2>'
        + table(
            "collector-states",
            ("Database", "Collector", "State", "Last failure"),
            rows,
            "No collectors run in this exporter.",
        )
        + "</section>"
    )


# -- slow statements and N+1 ---------------------------------------------------------------


def call_site(site: Any) -> str:
    """A record's call site (`file:line in function`), linked when it has an http(s) URL."""
    if not isinstance(site, Mapping):
        return '<span class="muted">unknown</span>'
    where = shown(f"{site.get('file', '?')}:{site.get('line', '?')}")
    url = site.get("url")
    if isinstance(url, str) and url.startswith(("https://", "http://")):
        where = f'<a href="{escape(url)}">{where}</a>'
    function = site.get("function")
    return f"<code>{where}</code>" + (f" in <code>{shown(function)}</code>" if function else "")


def _context(record: Mapping[str, Any]) -> str:
    context = record.get("context")
    if not isinstance(context, Mapping) or not context:
        return '<span class="muted">none</span>'
    items = list(context.items())[:CONTEXT_SHOWN]
    return " ".join(f"<code>{shown(k)}={shown(v)}</code>" for k, v in items)


def _statement(op: str, table_name: str | None) -> str:
    return escape(f"{op} {table_name or ''}".strip())


def _fingerprint(value: str) -> str:
    return f'<code class="copy" title="fingerprint">{shown(value, 64)}</code>'


def _slow_row(rank: int, s: SlowStatement, start: float, end: float) -> str:
    return row(
        [
            f'<a href="#statement-{rank}">{rank}</a>',
            _fingerprint(s.fingerprint),
            escape(s.database),
            _statement(s.operation, s.table),
            str(s.count),
            ms(s.quantile(0.5)),
            ms(s.quantile(0.95)),
            ms(s.max_ms),
            ms(s.total_ms),
            moment(s.first),
            moment(s.last),
            latency_chart(s.points, start, end),
        ]
    )


def _slow_detail(rank: int, s: SlowStatement, plan: str) -> str:
    worst = s.worst
    runs = (
        f"{plural(s.count, 'run')}: p50 {ms(s.quantile(0.5))} ms, p95 {ms(s.quantile(0.95))} ms,"
        f" max {ms(s.max_ms)} ms, total {ms(s.total_ms)} ms; last seen {moment(s.last)} UTC"
    )
    facts = [
        ("Runs", runs),
        ("Call site (slowest run)", call_site(worst.get("call_site"))),
        ("Route", shown(route(worst) or "-")),
        ("Context", _context(worst)),
    ]
    pid = number(worst, "pid")
    if pid is not None:
        facts.append(("Worker pid", f"{pid:.0f}"))
    status = text(worst, "status")
    if status == "error":
        facts.append(("Status", f"error (SQLSTATE {shown(text(worst, 'sqlstate') or '?')})"))
    facts_html = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
    return (
        f'<article class="statement" id="statement-{rank}">'
        f"<h3>{rank}. {_statement(s.operation, s.table)} {_fingerprint(s.fingerprint)}"
        f' <span class="muted">on {escape(s.database)}</span></h3>'
        f"<dl>{facts_html}</dl>"
        f'<pre class="sql">{escape(cut(s.sql, SQL_SHOWN))}</pre>'
        f'<div class="plan-box"><h4>Plan</h4>{plan}</div></article>'
    )


def slow_section(
    window: Window,
    query: PageQuery,
    start: float,
    end: float,
    threshold_ms: float,
    plan: Callable[[SlowStatement], str],
    links: Links,
) -> str:
    shown_rows = window.statements(TOP_ON_PAGE)
    rows = [_slow_row(i, s, start, end) for i, s in enumerate(shown_rows, 1)]
    details = "".join(_slow_detail(i, s, plan(s)) for i, s in enumerate(shown_rows, 1))
    headers = (
        "#", "Fingerprint", "Database", "Statement", "Count", "p50 ms", "p95 ms", "Max ms",
        "Total ms", "First seen (UTC)", "Last seen (UTC)", "Latency over the window",
    )  # fmt: skip
    more = len(window.slow) - len(shown_rows)
    note = f'<p class="muted">{more} more fingerprints in /slow-queries.</p>' if more > 0 else ""
    return (
        f'<section id="slow-statements"><h2>Slow statements</h2>'
        f"<p>Statements at or above {threshold_ms:g} ms, {_window_text(query)}, by total time"
        f" ({plural(len(window.slow), 'fingerprint')},"
        f" {plural(window.slow_records, 'record')}). "
        f"{links.both(SLOW_QUERIES)}</p>"
        + table("slow-queries", headers, rows, "No slow statements in this window.")
        + note
        + details
        + "</section>"
    )


def n_plus_one_section(window: Window, query: PageQuery, links: Links) -> str:
    rows = [
        row(
            [
                str(n.requests),
                str(n.repeats),
                _fingerprint(n.fingerprint),
                escape(n.database),
                _statement(n.operation, n.table),
                call_site(n.call_site),
                ", ".join(f"<code>{shown(r)}</code>" for r in n.routes) or "-",
                moment(n.last),
                sql_block(n.sql),
            ]
        )
        for n in window.warnings(TOP_ON_PAGE)
    ]
    headers = (
        "Requests", "Largest repeat count", "Fingerprint", "Database", "Statement",
        "Call site", "Routes", "Last seen (UTC)", "SQL",
    )  # fmt: skip
    return (
        f'<section id="n-plus-one"><h2>N+1</h2><p>The same SELECT repeated within one request,'
        f" {_window_text(query)}, by requests. {links.both(N_PLUS_ONE)}</p>"
        + table("n-plus-one-table", headers, rows, "No N+1 warnings in this window.")
        + "</section>"
    )


def _window_text(query: PageQuery) -> str:
    return "over every record kept" if query.window_seconds is None else f"last {query.window}"


# -- indexes and top statements ------------------------------------------------------------


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


def _top_row(database: str, s: TopStatement) -> str:
    mean = s.total_ms / s.calls if s.calls else 0.0
    sql = sql_block(s.text, "query text") if s.text is not None else "-"
    return row(
        [
            f'<code class="copy">{escape(s.queryid)}</code>',
            escape(database),
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
    headers = ("queryid", "Database", "Calls", "Total ms", "Mean ms", "Rows", "SQL")
    return (
        '<section id="top-statements"><h2>Top statements (pg_stat_statements)</h2>'
        "<p>By total execution time since the statistics were reset; a queryid on a dashboard"
        " is <code>#queryid-&lt;id&gt;</code> here.</p>"
        + table("top-statements-table", headers, rows, "pg_stat_statements is not readable yet.")
        + "</section>"
    )


# -- the page ------------------------------------------------------------------------------


def _form(query: PageQuery) -> str:
    windows = "".join(
        f'<option value="{w}"{" selected" if w == query.window else ""}>{w}</option>'
        for w in WINDOWS
    )
    if query.window not in WINDOWS:
        windows += (
            f'<option value="{escape(query.window)}" selected>{escape(query.window)}</option>'
        )
    refresh = '<option value="">off</option>' + "".join(
        f'<option value="{r}"{" selected" if r == query.refresh else ""}>{r} s</option>'
        for r in REFRESH_CHOICES
    )
    if query.refresh is not None and query.refresh not in REFRESH_CHOICES:
        refresh += f'<option value="{query.refresh}" selected>{query.refresh} s</option>'
    return (
        '<form method="get" action="/"><label>Window <select name="window">'
        f'{windows}</select></label> <label>Refresh <select name="refresh">{refresh}'
        "</select></label> <button>Show</button></form>"
    )


def page(query: PageQuery, sections: list[str], now: float) -> str:
    refresh = f'<meta http-equiv="refresh" content="{query.refresh}">' if query.refresh else ""
    nav = " &middot; ".join(
        f'<a href="{href}">{label}</a>'
        for href, label in (
            ("#health", "Health"), ("#slow-statements", "Slow statements"),
            ("#n-plus-one", "N+1"), ("#indexes", "Indexes"),
            ("#top-statements", "Top statements"), ("/metrics", "/metrics"),
            ("/slow-queries", "/slow-queries"), ("/readyz", "/readyz"),
        )
    )  # fmt: skip
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"{refresh}<title>db-exporter: on call</title><style>{STYLE}</style></head><body>"
        f"<header><h1>db-exporter</h1><nav>{nav}</nav>{_form(query)}"
        f'<p class="muted">As of {moment(now)} UTC.</p></header>'
        + "\n".join(sections)
        + "</body></html>\n"
    )

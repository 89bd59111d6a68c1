"""Slow statements (table, then each one's details and plan) and N+1 warnings, as HTML. A
call site is a link only when its URL is http(s)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from html import escape
from typing import Any

from exporter.oncall.chart import latency_chart
from exporter.oncall.markup import (
    N_PLUS_ONE,
    SLOW_QUERIES,
    SQL_SHOWN,
    Links,
    cut,
    moment,
    ms,
    plural,
    row,
    shown,
    sql_block,
    table,
)
from exporter.oncall.query import PageQuery
from exporter.oncall.records import SlowStatement, Window, number, route, text

TOP_ON_PAGE = 25  # slow statements and N+1 rows shown

CONTEXT_SHOWN = 20  # context fields shown per record


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

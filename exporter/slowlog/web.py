"""`GET /slow-queries` (JSON) and `GET /` (a page for people) over the slow-query log.

Both read memory only: the ring buffer, the per-fingerprint aggregates and, for the list of
unused indexes, the collectors' last snapshot.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from html import escape
from typing import Any

from aiohttp import web

from exporter.endpoints import slow_queries_body
from exporter.slowlog.log import SlowQueryLog
from exporter.slowlog.params import BadParameter

SLOW_LOG = web.AppKey("slow_log", SlowQueryLog)
# () -> [{"database", "schema", "table", "index", "size_bytes"}], from the collectors' snapshot
UnusedIndexes = Callable[[], list[dict[str, Any]]]
UNUSED_INDEXES: web.AppKey[UnusedIndexes] = web.AppKey("unused_indexes")
TOP_ON_PAGE = 25


async def slow_queries(request: web.Request) -> web.Response:
    try:
        body = slow_queries_body(request.app[SLOW_LOG], request.query)
    except BadParameter as exc:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": str(exc)}), content_type="application/json"
        ) from None
    return web.json_response(body)


def _call_site(worst: dict[str, Any] | None) -> str:
    """The slowest record's call site as HTML: a link when a source URL template is set."""
    site = (worst or {}).get("call_site")
    if not site:
        return "unknown"
    where = escape(f"{site['file']}:{site['line']}")
    if site.get("url"):
        where = f'<a href="{escape(site["url"])}">{where}</a>'
    return f"{where} in {escape(site['function'])}"


def _fingerprint_rows(aggregates: list[dict[str, Any]]) -> str:
    if not aggregates:
        return '<tr><td colspan="8">No slow queries yet.</td></tr>'
    rows = []
    for a in aggregates[:TOP_ON_PAGE]:
        cells = [
            escape(a["database"]),
            f"{a['operation']} {escape(a['table'] or '')}",
            str(a["count"]),
            f"{a['total_ms']:.1f}",
            f"{a['max_ms']:.1f}",
            _call_site(a["worst"]),
            escape(a["plan_summary"] or "no plan"),
            f"<code>{escape(a['sql'][:300])}</code>",
        ]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return "\n".join(rows)


def _index_rows(indexes: list[dict[str, Any]]) -> str:
    if not indexes:
        return (
            '<tr><td colspan="4">No unused index candidates '
            "(or the indexes collector has not run yet).</td></tr>"
        )
    rows = []
    for i in sorted(indexes, key=lambda i: i["size_bytes"], reverse=True)[:TOP_ON_PAGE]:
        cells = [
            escape(i["database"]),
            escape(f"{i['schema']}.{i['table']}"),
            escape(i["index"]),
            f"{i['size_bytes'] / 2**20:.1f} MiB",
        ]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return "\n".join(rows)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>db-exporter</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 2rem; }}
th, td {{ border: 1px solid #ccc; padding: .3rem .6rem; text-align: left; vertical-align: top; }}
th {{ background: #f3f3f3; }} code {{ font-size: .85rem; white-space: pre-wrap; }}
</style></head><body>
<h1>db-exporter</h1>
<p><a href="/metrics">/metrics</a> &middot; <a href="/slow-queries">/slow-queries</a> &middot;
<a href="/readyz">/readyz</a> &middot; <a href="/healthz">/healthz</a></p>
<h2>Slowest statements by total time</h2>
<p>Statements at or above {threshold} ms, grouped by fingerprint.</p>
<table id="slow-queries"><thead><tr><th>Database</th><th>Statement</th><th>Count</th>
<th>Total ms</th><th>Max ms</th><th>Call site (slowest)</th><th>Plan</th><th>SQL</th></tr></thead>
<tbody>
{fingerprints}
</tbody></table>
<h2>Unused indexes</h2>
<table id="unused-indexes"><thead>
<tr><th>Database</th><th>Table</th><th>Index</th><th>Size</th></tr>
</thead><tbody>
{indexes}
</tbody></table>
</body></html>
"""


async def index_page(request: web.Request) -> web.Response:
    log = request.app[SLOW_LOG]
    unused = request.app.get(UNUSED_INDEXES)
    html = PAGE.format(
        threshold=f"{log.settings.threshold_ms:g}",
        fingerprints=_fingerprint_rows(log.aggregates.ranked()),
        indexes=_index_rows(unused() if unused is not None else []),
    )
    return web.Response(text=html, content_type="text/html")


def add_routes(app: web.Application, log: SlowQueryLog) -> None:
    app[SLOW_LOG] = log
    app.router.add_get("/slow-queries", slow_queries)
    app.router.add_get("/", index_page)

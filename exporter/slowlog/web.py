"""`GET /slow-queries` (JSON) over the slow-query log: the ring buffer and the per-fingerprint
aggregates, from memory only. The page for people, `GET /`, is exporter/oncall/."""

from __future__ import annotations

import json

from aiohttp import web

from exporter.endpoints import slow_queries_body
from exporter.slowlog.log import SlowQueryLog
from exporter.slowlog.params import BadParameter

SLOW_LOG = web.AppKey("slow_log", SlowQueryLog)


async def slow_queries(request: web.Request) -> web.Response:
    try:
        body = slow_queries_body(request.app[SLOW_LOG], request.query)
    except BadParameter as exc:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": str(exc)}), content_type="application/json"
        ) from None
    return web.json_response(body)


def add_routes(app: web.Application, log: SlowQueryLog) -> None:
    app[SLOW_LOG] = log
    app.router.add_get("/slow-queries", slow_queries)

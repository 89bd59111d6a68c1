"""aiohttp: each request is one slow-query context (`exporter.slowlog.context`) and one
observation of the per-request histograms, with
`web.Application(middlewares=[aiohttp_context_middleware])`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from exporter.integrations.request import UNMATCHED, RequestFields, request_scope
from exporter.metrics import Metrics

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]


def aiohttp_request_middleware(metrics: Metrics | None = None) -> Middleware:
    """An aiohttp middleware: each request is one context, with its route (the resource's
    pattern, e.g. `/users/{id}`, never the raw path) and method; its statements and database
    time go to `metrics` (default: the process-wide ones)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else UNMATCHED
        with request_scope(RequestFields(lambda: route, method=request.method), metrics):
            return await handler(request)

    return middleware


aiohttp_context_middleware = aiohttp_request_middleware()

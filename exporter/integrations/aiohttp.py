"""aiohttp: each request is one slow-query context (`exporter.slowlog.context`), with
`web.Application(middlewares=[aiohttp_context_middleware])`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from exporter.slowlog.context import context

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def aiohttp_context_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp middleware: each request is one context, with its route (the resource's
    pattern, e.g. `/users/{id}`, never the raw path) and method."""
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    with context(route=route, method=request.method):
        return await handler(request)

"""What QueryContextMiddleware adds to a request, without a database or a server.

    .venv/bin/python bench/asgi_middleware.py [--rounds 21] [--requests 5000]

A Starlette app with one route template, called directly through ASGI (no HTTP, no sockets),
with and without the middleware, alternating between rounds; medians of per-round CPU time per
request. The request carries an `X-Request-ID`, and the endpoint reads the context's route once,
as a slow statement's record would.
"""

from __future__ import annotations

import asyncio
from typing import Any

from middleware_cost import Requests, arguments, compare
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from exporter.integrations.asgi import QueryContextMiddleware
from exporter.slowlog.context import current


async def endpoint(request: Request) -> PlainTextResponse:
    scope = current.get()
    return PlainTextResponse(scope.fields["route"] if scope is not None else "")


def application(middleware: bool) -> Starlette:
    app = Starlette(routes=[Route("/users/{user_id}/orders", endpoint)])
    if middleware:
        app.add_middleware(QueryContextMiddleware)
    return app


def serve(app: Starlette) -> Requests:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        pass

    async def requests(count: int) -> None:
        for number in range(count):
            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "GET",
                "scheme": "http",
                "path": f"/users/{number}/orders",
                "raw_path": b"",
                "root_path": "",
                "query_string": b"",
                "headers": [(b"host", b"app"), (b"x-request-id", b"req-%d" % number)],
                "server": ("app", 80),
            }
            await app(scope, receive, send)

    return lambda count: asyncio.run(requests(count))


if __name__ == "__main__":
    args = arguments(__doc__)
    variants = {"without": serve(application(False)), "with": serve(application(True))}
    compare("QueryContextMiddleware", variants, args.rounds, args.requests)

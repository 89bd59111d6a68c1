"""What QueryContextMiddleware adds to a request, without a database or a server.

    .venv/bin/python bench/asgi_middleware.py [--rounds 21] [--requests 5000]

A Starlette app with one route template, called directly through ASGI (no HTTP, no sockets),
with and without the middleware, alternating between rounds; medians of per-round CPU time per
request. The request carries an `X-Request-ID`, and the endpoint reads the context's route once,
as a slow statement's record would.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

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


async def requests(app: Starlette, count: int) -> float:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        pass

    started = time.process_time()
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
    return (time.process_time() - started) / count


async def main(rounds: int, count: int) -> None:
    apps = {"without": application(False), "with": application(True)}
    per_request: dict[str, list[float]] = {name: [] for name in apps}
    for _ in range(rounds):
        for name, app in apps.items():
            per_request[name].append(await requests(app, count))
    medians = {name: statistics.median(times) * 1e6 for name, times in per_request.items()}
    print(f"rounds {rounds} x {count} requests, median CPU per request:")
    for name, us in medians.items():
        print(f"  {name} QueryContextMiddleware: {us:.1f} us")
    print(f"  added by the middleware: {medians['with'] - medians['without']:.1f} us")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--requests", type=int, default=5000)
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.requests))

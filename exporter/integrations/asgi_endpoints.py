"""`/metrics`, `/healthz`, `/readyz` and `/slow-queries` as an ASGI app, to serve them from the
application's own port, and a lifespan that starts and stops the exporter with the application:

    endpoints = ExporterEndpoints(databases=settings.databases)
    app = FastAPI(lifespan=exporter_lifespan(endpoints))
    app.mount("/db-exporter", endpoints)

Plain ASGI, so it loads no web framework (aiohttp's server included); the answers are the
ones the sidecar gives (`exporter.endpoints`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any, Protocol
from urllib.parse import parse_qs

from exporter.collectors.runner import CollectorRunner
from exporter.endpoints import (
    metrics_body,
    readiness,
    scraped_registry,
    slow_queries_body,
)
from exporter.integrations.asgi import Receive, Scope, Send
from exporter.metrics import Metrics, default_metrics
from exporter.settings import DatabaseSettings
from exporter.slowlog import SlowQueryLog, default_slow_log
from exporter.slowlog.params import BadParameter


class ExporterEndpoints:
    """The exporter's endpoints for GET requests at `/metrics`, `/healthz`, `/readyz` and
    `/slow-queries` below where it is mounted. `start()`/`stop()` run the databases' checks
    and collectors (`exporter_lifespan` calls them, since frameworks give mounted apps no
    lifespan events); served on its own, it answers the lifespan events itself."""

    def __init__(
        self,
        *,
        databases: Sequence[DatabaseSettings] = (),
        metrics: Metrics | None = None,
        slow_log: SlowQueryLog | None = None,
    ) -> None:
        self.metrics = metrics or default_metrics()
        self.slow_log = slow_log or default_slow_log(metrics=self.metrics)
        self.scraped = scraped_registry(self.metrics)
        self.runner = CollectorRunner(tuple(databases), self.metrics)
        self._routes: dict[str, Callable[[Scope], tuple[int, str, bytes]]] = {
            "/metrics": self._metrics,
            "/healthz": lambda scope: _json(200, {"status": "ok"}),
            "/readyz": self._readyz,
            "/slow-queries": self._slow_queries,
        }

    async def start(self) -> None:
        await self.runner.start()

    async def stop(self) -> None:
        await self.runner.stop()

    def _metrics(self, scope: Scope) -> tuple[int, str, bytes]:
        accept = ",".join(v.decode("latin-1") for k, v in scope["headers"] if k == b"accept")
        names = _query(scope).get("name[]")
        body, content_type = metrics_body(self.scraped, self.runner.store, accept, names)
        return 200, content_type, body

    def _readyz(self, scope: Scope) -> tuple[int, str, bytes]:
        body, status = readiness(self.runner.states())
        return _json(status, body)

    def _slow_queries(self, scope: Scope) -> tuple[int, str, bytes]:
        query = {name: values[0] for name, values in _query(scope).items()}
        try:
            return _json(200, slow_queries_body(self.slow_log, query))
        except BadParameter as exc:
            return _json(400, {"error": str(exc)})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":  # a websocket: refused before it is accepted
            await send({"type": "websocket.close", "code": 1000})
            return
        route = self._routes.get(_path_below_mount(scope))
        if route is None:
            status, content_type, body = _json(404, {"error": "not found"})
        elif scope["method"] not in ("GET", "HEAD"):
            status, content_type, body = _json(405, {"error": "only GET"})
        else:
            status, content_type, body = route(scope)
        headers = [(b"content-type", content_type.encode()), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
        )

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _path_below_mount(scope: Scope) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def _query(scope: Scope) -> dict[str, list[str]]:
    return parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)


def _json(status: int, body: Any) -> tuple[int, str, bytes]:
    return status, "application/json; charset=utf-8", json.dumps(body).encode()


class Service(Protocol):
    """What `exporter_lifespan` starts and stops: `ExporterEndpoints`, `exporter.Exporter`."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


Lifespan = Callable[[Any], AbstractAsyncContextManager[Any]]


def exporter_lifespan(*services: Service, wrap: Lifespan | None = None) -> Lifespan:
    """A lifespan (`FastAPI(lifespan=...)`, `Starlette(lifespan=...)`) that starts `services`
    in order before the application's own lifespan `wrap` (when given) and stops them in the
    reverse order after it, also when it fails."""

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[Any]:
        async with AsyncExitStack() as stack:
            for service in services:
                await service.start()
                stack.push_async_callback(service.stop)
            yield None if wrap is None else await stack.enter_async_context(wrap(app))

    return lifespan

"""The exporter's endpoints as an ASGI app, to serve them from the application's own port, and
a lifespan that starts and stops the exporter with the application:

    endpoints = ExporterEndpoints(
        databases=settings.databases,
        page=settings.server.page,
        compatibility=settings.compatibility,
    )
    app = FastAPI(lifespan=exporter_lifespan(endpoints))
    app.mount("/db-exporter", endpoints)

Plain ASGI, so it loads no web framework (aiohttp's server included); the answers are the
ones the sidecar gives (`exporter.endpoints`, `exporter.oncall.page`). Authentication is the
application's: the sidecar's basic auth and TLS (`server.web_config_file`) do not apply here.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any, Protocol
from urllib.parse import parse_qsl

from exporter.collectors.runner import CollectorRunner
from exporter.endpoints import (
    Answer,
    metrics_answer,
    probe_answer,
    readiness,
    scraped_registry,
    slow_queries_body,
)
from exporter.integrations.asgi import Receive, Scope, Send
from exporter.metrics import Metrics, default_metrics
from exporter.oncall.page import OnCallPage
from exporter.settings import Compatibility, DatabaseSettings, PageSettings
from exporter.slowlog import SlowQueryLog, default_slow_log
from exporter.slowlog.params import BadParameter


class ExporterEndpoints:
    """The exporter's endpoints for GET requests at `/` (the on-call page), `/metrics`,
    `/probe`, `/healthz`, `/readyz` and `/slow-queries` below where it is mounted.
    `start()`/`stop()` run the databases' checks and collectors and the page's pool sampling
    (`exporter_lifespan` calls them, since frameworks give mounted apps no lifespan events);
    served on its own, it answers the lifespan events itself."""

    def __init__(
        self,
        *,
        databases: Sequence[DatabaseSettings] = (),
        metrics: Metrics | None = None,
        slow_log: SlowQueryLog | None = None,
        page: PageSettings | None = None,
        compatibility: Compatibility = "default",
    ) -> None:
        self.metrics = metrics or default_metrics()
        self.slow_log = slow_log or default_slow_log(metrics=self.metrics)
        self.scraped = scraped_registry(self.metrics)
        self.runner = CollectorRunner(tuple(databases), self.metrics, compatibility=compatibility)
        self.page = OnCallPage(
            page or PageSettings(), self.slow_log, self.metrics, lambda: self.runner
        )
        self._running = AsyncExitStack()
        self._routes: dict[str, Callable[[Request], Awaitable[Answer]]] = {
            "/": self._page,
            "/metrics": self._metrics,
            "/probe": self._probe,
            "/healthz": self._healthz,
            "/readyz": self._readyz,
            "/slow-queries": self._slow_queries,
        }

    async def start(self) -> None:
        await self.runner.start()
        self._running.push_async_callback(self.runner.stop)
        await self._running.enter_async_context(self.page.sampling())

    async def stop(self) -> None:
        await self._running.aclose()

    async def _page(self, request: Request) -> Answer:
        return await self.page.answer(request.first_values())

    async def _metrics(self, request: Request) -> Answer:
        names = request.values("name[]")
        store = self.runner.store
        return metrics_answer(self.scraped, store, request.accept, request.accept_encoding, names)

    async def _probe(self, request: Request) -> Answer:
        targets = request.values("target")
        accept, encoding = request.accept, request.accept_encoding
        return await probe_answer(self.metrics, self.runner, targets, accept, encoding)

    async def _healthz(self, request: Request) -> Answer:
        return _json(200, {"status": "ok"})

    async def _readyz(self, request: Request) -> Answer:
        body, status = readiness(self.runner.states())
        return _json(status, body)

    async def _slow_queries(self, request: Request) -> Answer:
        try:
            return _json(200, slow_queries_body(self.slow_log, request.first_values()))
        except BadParameter as exc:
            return _json(400, {"error": str(exc)})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":  # a websocket: refused before it is accepted
            await send({"type": "websocket.close", "code": 1000})
            return
        path = _path_below_mount(scope)
        route = self._routes.get(path)
        if path == "":  # the mount itself: the page, where its relative links work
            answer = _redirect(scope)
        elif route is None:
            answer = _json(404, {"error": "not found"})
        elif scope["method"] not in ("GET", "HEAD"):
            answer = _json(405, {"error": "only GET"})
        else:
            answer = await route(Request(scope))
        headers = [(k.lower().encode(), v.encode("latin-1")) for k, v in answer.headers.items()]
        headers.append((b"content-length", b"%d" % len(answer.body)))
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        body = b"" if scope["method"] == "HEAD" else answer.body
        await send({"type": "http.response.body", "body": body})

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


class Request:
    """What the endpoints read of an HTTP request's scope: its query, parsed as the sidecar
    (aiohttp) parses it, and its `Accept` and `Accept-Encoding` headers."""

    def __init__(self, scope: Scope) -> None:
        raw = scope.get("query_string", b"").decode("utf-8", "surrogateescape")
        self.query = parse_qsl(raw, keep_blank_values=True)
        self.accept = _header(scope, b"accept", ",")
        self.accept_encoding = _header(scope, b"accept-encoding", None)

    def values(self, name: str) -> list[str]:
        return [value for key, value in self.query if key == name]

    def first_values(self) -> dict[str, str]:
        """Each parameter's first value (as aiohttp's `request.query.get()`)."""
        first: dict[str, str] = {}
        for key, value in self.query:
            first.setdefault(key, value)
        return first


def _header(scope: Scope, name: bytes, joined: str | None) -> str:
    """Every value of the header `name` joined with `joined`, or (None) the first one."""
    values = [v.decode("latin-1") for k, v in scope.get("headers", ()) if k.lower() == name]
    if joined is None:
        return values[0] if values else ""
    return joined.join(values)


def _path_below_mount(scope: Scope) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def _redirect(scope: Scope) -> Answer:
    query = scope.get("query_string", b"").decode("latin-1")
    location = scope.get("root_path", "") + "/" + (f"?{query}" if query else "")
    return Answer(308, b"", {"Location": location})


def _json(status: int, body: Any) -> Answer:
    return Answer(status, json.dumps(body).encode(), {"Content-Type": JSON})


JSON = "application/json; charset=utf-8"


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

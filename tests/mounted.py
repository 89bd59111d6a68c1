"""The exporter's endpoints served two ways, for tests that hold for both: the sidecar
(`Exporter`, aiohttp, its own port) and `ExporterEndpoints` mounted at `PREFIX` in a FastAPI
application. `exporter_on()`: both on real sockets (the mount served by uvicorn in a thread),
started and stopped alike, with `url` the base every endpoint's path is appended to.
`raw_client()`: both in the test's own loop (the mount over httpx's ASGI transport), so a test
can drive their collectors, with bodies read as sent (not decompressed)."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx
import uvicorn
from aiohttp import ClientSession
from fastapi import FastAPI

from exporter import Exporter, create_app
from exporter.collectors.runner import CollectorRunner
from exporter.integrations.asgi_endpoints import ExporterEndpoints, exporter_lifespan
from exporter.server import RUNNER

SIDES = ("sidecar", "mount")
PREFIX = "/db-exporter"


def mounted_app(endpoints: ExporterEndpoints) -> FastAPI:
    """An application of its own, with the endpoints mounted at PREFIX and started by its
    lifespan, as the README shows."""
    app = FastAPI(lifespan=exporter_lifespan(endpoints))

    @app.get("/")
    def home() -> str:
        return "the application's own page"

    app.mount(PREFIX, endpoints)
    return app


class MountedExporter:
    """`ExporterEndpoints(**options)` mounted in `mounted_app()`, served by uvicorn in a thread
    of its own (uvicorn's loop, its lifespan starting the collectors there); `Exporter`'s
    start/stop methods, both kinds."""

    def __init__(self, **options: Any) -> None:
        self.endpoints = ExporterEndpoints(**options)
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self.host, self.port = self._socket.getsockname()
        config = uvicorn.Config(
            mounted_app(self.endpoints), log_config=None, access_log=False, lifespan="on"
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{PREFIX}"

    def start_in_thread(self) -> None:
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )
        self._thread.start()
        while not self._server.started:
            assert self._thread.is_alive(), "uvicorn did not start"
            self._thread.join(0.02)

    def stop_in_thread(self) -> None:
        if self._thread is not None:
            self._server.should_exit = True
            self._thread.join()
            self._thread = None
        self._socket.close()

    async def start(self) -> None:
        await asyncio.to_thread(self.start_in_thread)

    async def stop(self) -> None:
        await asyncio.to_thread(self.stop_in_thread)


def exporter_on(side: str, **options: Any) -> Exporter | MountedExporter:
    """An exporter with `options` (`ExporterEndpoints`' keywords, which `Exporter` takes too)
    on 127.0.0.1, not started."""
    if side == "mount":
        return MountedExporter(**options)
    return Exporter(listen="127.0.0.1:0", **options)


def runner_of(served: Exporter | MountedExporter) -> CollectorRunner:
    if isinstance(served, MountedExporter):
        return served.endpoints.runner
    return served._app[RUNNER]


@asynccontextmanager
async def serving_on(side: str, **options: Any) -> AsyncIterator[Exporter | MountedExporter]:
    served = exporter_on(side, **options)
    await served.start()
    try:
        yield served
    finally:
        await served.stop()


# GET path with headers -> status, headers, body as sent
Fetch = Callable[[str, Mapping[str, str]], Awaitable[tuple[int, Mapping[str, str], bytes]]]


@asynccontextmanager
async def raw_client(
    side: str, aiohttp_client: Any, **options: Any
) -> AsyncIterator[tuple[Fetch, CollectorRunner]]:
    """A started exporter with `options` in this loop: how to GET from it, and its runner."""
    if side == "mount":
        endpoints = ExporterEndpoints(**options)
        app = mounted_app(endpoints)
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url=f"http://app{PREFIX}") as http,
        ):

            async def from_mount(path: str, headers: Mapping[str, str]) -> Any:
                async with http.stream("GET", path, headers=dict(headers)) as answer:
                    body = b"".join([part async for part in answer.aiter_raw()])
                    return answer.status_code, answer.headers, body

            yield from_mount, endpoints.runner
        return
    client = await aiohttp_client(create_app(**options))
    async with ClientSession(auto_decompress=False) as session:

        async def from_sidecar(path: str, headers: Mapping[str, str]) -> Any:
            async with session.get(client.make_url(path), headers=headers) as answer:
                return answer.status, answer.headers, await answer.read()

        yield from_sidecar, client.app[RUNNER]

"""The aiohttp side: app factory, routes, and `Exporter`, which serves them on its own port.

Rendering `/metrics` reads in-memory state only; the database is touched by background tasks
whose lifetime `cleanup_ctx` manages.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CollectorRegistry

from exporter.collectors.runner import CollectorRunner
from exporter.endpoints import (
    Answer,
    metrics_answer,
    probe_answer,
    readiness,
    scraped_registry,
)
from exporter.errors import UserError
from exporter.metrics import Metrics, default_metrics
from exporter.oncall.page import OnCallPage
from exporter.oncall.web import add_routes as add_page_routes
from exporter.settings import (
    DEFAULT_LISTEN,
    Compatibility,
    DatabaseSettings,
    PageSettings,
    Settings,
    parse_listen,
)
from exporter.slowlog import SlowQueryLog, default_slow_log
from exporter.slowlog.web import SLOW_LOG
from exporter.slowlog.web import add_routes as add_slow_query_routes
from exporter.webconfig import WebConfig, load_web_config

METRICS = web.AppKey("metrics", Metrics)
SCRAPED = web.AppKey("scraped", CollectorRegistry)
DATABASES = web.AppKey("databases", tuple)
RUNNER = web.AppKey("runner", CollectorRunner)
COMPATIBILITY: web.AppKey[Compatibility] = web.AppKey("compatibility")


class _MalformedRequests(logging.Filter):
    """aiohttp logs a request it cannot parse (a header over 8 KiB, a bad request line) as an
    ERROR with a traceback quoting the line, which may carry credentials. That is the client's
    mistake, answered 400: one INFO line naming only the kind of problem."""

    def filter(self, record: logging.LogRecord) -> bool:
        problem = record.exc_info[1] if record.exc_info else None
        if isinstance(problem, HttpProcessingError) and problem.code < 500:
            client = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg = "refused a malformed request from %s (%s)"
            record.args = (client, type(problem).__name__)
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


# The exporter's server logs through its own logger, so the host application's aiohttp
# servers keep aiohttp's behaviour.
server_log = logging.getLogger("exporter.server")
server_log.addFilter(_MalformedRequests())
# No access log: a scrape every few seconds is no news.
_HANDLER_ARGS: dict[str, Any] = {"access_log": None, "logger": server_log}


class _Connection(web.RequestHandler):
    """One connection to the exporter's port. A request aiohttp cannot parse is answered by
    aiohttp itself, with the request line quoted in full in the body (up to 8 KiB, query
    values and credentials in them included): here the answer names only the kind of
    problem, in one line, as the log does."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if isinstance(exc, HttpProcessingError) and status < 500:
            message = f"malformed request ({type(exc).__name__})\n"
        return super().handle_error(request, status, exc, message)


async def _runner_ctx(app: web.Application) -> AsyncIterator[None]:
    """Each database's check and collectors run in background tasks for the app's lifetime."""
    databases: tuple[DatabaseSettings, ...] = app[DATABASES]
    runner = CollectorRunner(databases, app[METRICS], compatibility=app[COMPATIBILITY])
    app[RUNNER] = runner
    await runner.start()
    yield
    await runner.stop()


def _response(answer: Answer) -> web.Response:
    response = web.Response(status=answer.status, body=answer.body, headers=answer.headers)
    if answer.status == 200 and not answer.compressed:
        response.enable_compression()  # deflate for a client that asks for it alone
    return response


async def metrics_endpoint(request: web.Request) -> web.Response:
    accept = ",".join(request.headers.getall(hdrs.ACCEPT, []))
    names = request.query.getall("name[]", [])  # `?name[]=...` filters by name
    encoding = request.headers.get(hdrs.ACCEPT_ENCODING, "")
    scraped, store = request.app[SCRAPED], request.app[RUNNER].store
    return _response(metrics_answer(scraped, store, accept, encoding, names))


async def probe(request: web.Request) -> web.Response:
    accept = ",".join(request.headers.getall(hdrs.ACCEPT, []))
    encoding = request.headers.get(hdrs.ACCEPT_ENCODING, "")
    targets = request.query.getall("target", [])
    runner, metrics = request.app[RUNNER], request.app[METRICS]
    return _response(await probe_answer(metrics, runner, targets, accept, encoding))


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    body, status = readiness(request.app[RUNNER].states())
    return web.json_response(body, status=status)


def _handover_ctx(directory: str) -> Callable[[web.Application], AsyncIterator[None]]:
    """The sidecar merges the records workers hand over in `directory`, and plans them on
    connections of its own to the configured databases (exporter/slowlog/handover_reader.py)."""

    async def handover(app: web.Application) -> AsyncIterator[None]:
        from exporter.dsn import parse_dsn
        from exporter.slowlog.handover_reader import HandoverReader

        slow_log = app[SLOW_LOG]
        for database in app[DATABASES]:
            slow_log.register(database.name, parse_dsn(database.dsn))
        reader = HandoverReader(directory, slow_log, app[METRICS], slow_log.settings)
        reader.start()
        yield
        await asyncio.get_running_loop().run_in_executor(None, reader.stop)

    return handover


def create_app(
    metrics: Metrics | None = None,
    databases: Sequence[DatabaseSettings] = (),
    slow_log: SlowQueryLog | None = None,
    web_config: WebConfig | None = None,
    handover_dir: str | None = None,
    page: PageSettings | None = None,
    compatibility: Compatibility = "default",
) -> web.Application:
    app = web.Application()
    if web_config is not None:  # basic auth and response headers, before any route runs
        web_config.install(app)
    app[METRICS] = metrics or default_metrics()
    app[SCRAPED] = scraped_registry(app[METRICS])
    app[DATABASES] = tuple(databases)
    app[COMPATIBILITY] = compatibility
    app.cleanup_ctx.append(_runner_ctx)
    app.router.add_get("/metrics", metrics_endpoint)
    app.router.add_get("/probe", probe)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    log = slow_log or default_slow_log(metrics=app[METRICS])
    add_slow_query_routes(app, log)
    on_call = OnCallPage(page or PageSettings(), log, app[METRICS], lambda: app.get(RUNNER))
    add_page_routes(app, on_call)
    if handover_dir is not None:
        app.cleanup_ctx.append(_handover_ctx(handover_dir))
    return app


class ListenError(UserError, OSError):
    """The address could not be bound; the message names it and says why, in one line."""


class Exporter:
    """Serves `/metrics`, `/healthz`, `/readyz`, `/slow-queries` and `/` on its own port.

    In an asyncio application: `await exporter.start()` / `await exporter.stop()` in the running
    loop. In a synchronous one: `exporter.start_in_thread()` / `exporter.stop_in_thread()`, which
    run the server in a daemon thread with a loop of its own.
    """

    def __init__(
        self,
        *,
        listen: str = DEFAULT_LISTEN,
        databases: Sequence[DatabaseSettings] = (),
        metrics: Metrics | None = None,
        slow_log: SlowQueryLog | None = None,
        web_config: WebConfig | None = None,
        handover_dir: str | None = None,
        page: PageSettings | None = None,
        compatibility: Compatibility = "default",
    ) -> None:
        self.host, self.port = parse_listen(listen)
        self.web_config = web_config
        self._app = create_app(
            metrics, databases, slow_log, web_config, handover_dir, page, compatibility
        )
        self._listener: asyncio.Server | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_settings(cls, settings: Settings, metrics: Metrics | None = None) -> Exporter:
        web_config = settings.server.web_config_file
        return cls(
            listen=settings.server.listen,
            databases=settings.databases,
            metrics=metrics,
            web_config=load_web_config(web_config) if web_config else None,
            page=settings.server.page,
            compatibility=settings.compatibility,
        )

    @classmethod
    def sidecar(cls, settings: Settings, metrics: Metrics) -> Exporter:
        """`db-exporter serve`: also merges the slow-query records the application's workers
        hand over (when there is a hand-over directory), into a slow-query log of its own that
        writes no sink (the workers' records are on their stdout already)."""
        from dataclasses import replace

        from exporter.slowlog.handover import handover_directory

        slow = replace(settings.slow_queries, stdout=False, file=None)
        web_config = settings.server.web_config_file
        return cls(
            listen=settings.server.listen,
            databases=settings.databases,
            metrics=metrics,
            slow_log=default_slow_log(slow, metrics),
            web_config=load_web_config(web_config) if web_config else None,
            handover_dir=handover_directory(slow),
            page=settings.server.page,
            compatibility=settings.compatibility,
        )

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        scheme = self.web_config.scheme if self.web_config is not None else "http"
        return f"{scheme}://{self.address}"

    async def start(self) -> None:
        """Bind, then start the app (its collectors connect to the databases) and serve.

        Binding comes first so that when the address is taken (ListenError) nothing has
        started: no database connection is opened only to be cancelled halfway, which asyncpg
        answers with a "Future exception was never retrieved" on stderr.
        """
        loop = asyncio.get_running_loop()
        runner = web.AppRunner(self._app, **_HANDLER_ARGS)

        def handler() -> asyncio.BaseProtocol:  # asked for only once serving has started
            assert runner.server is not None
            return _Connection(runner.server, loop=loop, **_HANDLER_ARGS)

        tls = self.web_config.tls if self.web_config is not None else None
        try:
            listener = await loop.create_server(
                handler, self.host, self.port, ssl=tls, start_serving=False
            )
        except OSError as exc:
            reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
            raise ListenError(f"cannot listen on {self.address}: {reason}") from exc
        try:
            await runner.setup()
            await listener.start_serving()
        except BaseException:
            listener.close()
            await runner.cleanup()
            raise
        if self.port == 0:  # an ephemeral port: report the one the OS chose
            self.port = listener.sockets[0].getsockname()[1]
        self._listener, self._runner = listener, runner

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()  # no new connections; the runner ends the open ones
            self._listener = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def start_in_thread(self) -> None:
        loop = asyncio.new_event_loop()
        started = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:
                failure.append(exc)
                started.set()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(self.stop())
            loop.close()

        thread = threading.Thread(target=serve, name="db-exporter", daemon=True)
        thread.start()
        started.wait()
        if failure:
            thread.join()
            raise failure[0]
        self._thread, self._thread_loop = thread, loop

    def stop_in_thread(self) -> None:
        if self._thread is None or self._thread_loop is None:
            return
        self._thread_loop.call_soon_threadsafe(self._thread_loop.stop)
        self._thread.join()
        self._thread = self._thread_loop = None

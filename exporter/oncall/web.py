"""`GET /` on the aiohttp sidecar: the on-call page (`exporter.oncall.page`) and its pool
sampling for the app's lifetime."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from exporter.oncall.page import OnCallPage

ONCALL_PAGE = web.AppKey("oncall_page", OnCallPage)


async def index_page(request: web.Request) -> web.Response:
    answer = await request.app[ONCALL_PAGE].answer(request.query)
    return web.Response(status=answer.status, body=answer.body, headers=answer.headers)


async def _sample_pools(app: web.Application) -> AsyncIterator[None]:
    async with app[ONCALL_PAGE].sampling():
        yield


def add_routes(app: web.Application, page: OnCallPage) -> None:
    app[ONCALL_PAGE] = page
    app.cleanup_ctx.append(_sample_pools)
    app.router.add_get("/", index_page)

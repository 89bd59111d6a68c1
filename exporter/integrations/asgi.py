"""ASGI (FastAPI, Starlette, Litestar): each HTTP request is one slow-query context
(`exporter.slowlog.context`), with `app.add_middleware(QueryContextMiddleware)`.

Plain ASGI, so it needs no framework: it reads the route the framework's router leaves in the
scope (`scope["route"]` in Starlette and FastAPI, `scope["path_template"]` in Litestar) and
otherwise passes everything through untouched: responses (streaming too), background tasks,
websockets and lifespan.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from exporter.integrations.request import (
    MAX_REQUEST_ID_LENGTH,
    REQUEST_ID_HEADER,
    UNMATCHED,
    RequestFields,
    checked_max_length,
    clean_request_id,
    request_scope,
)
from exporter.metrics import Metrics

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Set in the scope of a request that already has its context: a second instance of the
# middleware (added twice) passes the request through.
_HANDLED = "db_exporter.context"


def route_template(scope: Scope, root_path: str) -> str:
    """The template of the route the router matched (`/users/{user_id}`), or UNMATCHED: no
    route (404), or one inside a mounted sub-app, whose prefix in the path is a raw value."""
    route = scope.get("route")
    if route is not None:  # Starlette, FastAPI
        template = getattr(route, "path_format", None)
    else:  # Litestar; "" for a mounted ASGI app
        template = scope.get("path_template")
    if not template or not isinstance(template, str) or scope.get("root_path", "") != root_path:
        return UNMATCHED
    return template


class QueryContextMiddleware:
    """Sets the context of each HTTP request: `route` (the template, never the path),
    `method` and `request_id` (from the `request_id_header`, cleaned, else generated); N+1
    statements are counted per request, and each request's statements and database time go
    to `metrics` (default: the process-wide ones) by route. The context ends with the request,
    also when the application raises."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        request_id_header: str = REQUEST_ID_HEADER,
        max_request_id_length: int = MAX_REQUEST_ID_LENGTH,
        metrics: Metrics | None = None,
    ) -> None:
        self.app = app
        self._header = request_id_header.lower().encode("latin-1")
        self._max_length = checked_max_length(max_request_id_length)
        self._metrics = metrics

    def _request_id(self, scope: Scope) -> str:
        for name, value in scope.get("headers", ()):
            if name.lower() == self._header:
                return clean_request_id(value.decode("latin-1"), self._max_length)
        return clean_request_id(None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _HANDLED in scope:
            await self.app(scope, receive, send)
            return
        scope[_HANDLED] = True
        root_path = scope.get("root_path", "")
        fields = RequestFields(
            lambda: route_template(scope, root_path),
            method=scope["method"],
            request_id=self._request_id(scope),
        )
        with request_scope(fields, self._metrics):
            await self.app(scope, receive, send)

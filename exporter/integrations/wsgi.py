"""WSGI (Flask and any WSGI application): each HTTP request is one slow-query context
(`exporter.slowlog.context`), with `app = QueryContextMiddleware(app)`; for Flask,
`exporter.integrations.flask.instrument_flask(app)` does that and tells it the route.

Plain WSGI, so it needs no framework: the route template is what the framework's hook put in
the environ under `ROUTE_KEY` once it routed the request (Flask's URL rule, by
`instrument_flask`), else `unmatched`. A WSGI response is produced after the application
returns (streamed bodies, `stream_with_context`), so the request lasts until the server closes
the response, and each step (the call, every chunk, the close) runs in the request's context,
which is never left set between steps: nothing carries over to the thread's next request.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from exporter.integrations.request import (
    MAX_REQUEST_ID_LENGTH,
    REQUEST_ID_HEADER,
    UNMATCHED,
    OpenRequest,
    RequestFields,
    checked_max_length,
    clean_request_id,
)
from exporter.slowlog.context import run_in

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from exporter.metrics import Metrics

# Where a framework's hook leaves the route template (`/users/<int:user_id>`) of a request.
ROUTE_KEY = "db_exporter.route"
# Set in the environ of a request that already has its context: a second instance of the
# middleware (added twice) passes the request through.
_HANDLED = "db_exporter.context"


def route_template(environ: WSGIEnvironment) -> str:
    route = environ.get(ROUTE_KEY)
    return route if isinstance(route, str) else UNMATCHED


class QueryContextMiddleware:
    """Sets the context of each request: `route` (the template, never the path), `method` and
    `request_id` (from the `request_id_header`, cleaned, else generated); N+1 statements are
    counted per request, and its statements and database time go to `metrics` (the default
    ones unless given). The request ends when its response is closed, or when the
    application raises."""

    def __init__(
        self,
        app: WSGIApplication,
        *,
        request_id_header: str = REQUEST_ID_HEADER,
        max_request_id_length: int = MAX_REQUEST_ID_LENGTH,
        metrics: Metrics | None = None,
    ) -> None:
        self.app = app
        self._header = "HTTP_" + request_id_header.upper().replace("-", "_")
        self._max_length = checked_max_length(max_request_id_length)
        self._metrics = metrics

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if _HANDLED in environ:
            return self.app(environ, start_response)
        environ[_HANDLED] = True
        fields = RequestFields(
            lambda: route_template(environ),
            method=environ.get("REQUEST_METHOD", "GET"),
            request_id=clean_request_id(environ.get(self._header), self._max_length),
        )
        request = OpenRequest(fields, self._metrics)
        try:
            response = run_in(request.scope, self.app, environ, start_response)
        except BaseException:
            request.end()
            raise
        if _is_file(response, environ):
            # Sending a file runs no application code: the request ends here, and the server
            # still sees its own file wrapper (and can use sendfile).
            request.end()
            return response
        return _ScopedResponse(response, request)


def _is_file(response: Iterable[bytes], environ: WSGIEnvironment) -> bool:
    file_wrapper = environ.get("wsgi.file_wrapper")
    return isinstance(file_wrapper, type) and isinstance(response, file_wrapper)


class _ScopedResponse:
    """The application's response; iterating and closing it run in the request's scope, and
    closing it ends the request."""

    def __init__(self, response: Iterable[bytes], request: OpenRequest) -> None:
        self._response = response
        self._request = request

    def __iter__(self) -> Iterator[bytes]:
        scope = self._request.scope
        chunks = run_in(scope, iter, self._response)
        while True:
            try:
                chunk = run_in(scope, next, chunks)
            except StopIteration:
                return
            yield chunk  # outside the scope: the server's code runs between chunks

    def close(self) -> None:
        try:
            close = getattr(self._response, "close", None)
            if close is not None:
                run_in(self._request.scope, close)
        finally:
            self._request.end()

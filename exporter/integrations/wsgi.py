"""WSGI (Flask and any WSGI application): each HTTP request is one slow-query context
(`exporter.slowlog.context`), with `app.wsgi_app = QueryContextMiddleware(app.wsgi_app)`;
for Flask, `exporter.integrations.flask.instrument_flask(app)` does that and tells it the route.

Plain WSGI, so it needs no framework: the route template is what the framework's hook put in
the environ under `ROUTE_KEY` once it routed the request (Flask's URL rule, by
`instrument_flask`), else `unmatched`. A WSGI response is produced after the application
returns (streamed bodies, `stream_with_context`), so the request lasts until the server closes
the response, and each step (the call, every chunk, the close) runs in the request's context,
which is never left set between steps: nothing carries over to the thread's next request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING

from exporter.integrations.request import (
    MAX_REQUEST_ID_LENGTH,
    REQUEST_ID_HEADER,
    UNMATCHED,
    RequestFields,
    checked_max_length,
    clean_request_id,
)
from exporter.slowlog.context import QueryContext, entered, scope_of

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

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
    counted per request. The request ends when its response is closed, or when the
    application raises."""

    def __init__(
        self,
        app: WSGIApplication,
        *,
        request_id_header: str = REQUEST_ID_HEADER,
        max_request_id_length: int = MAX_REQUEST_ID_LENGTH,
    ) -> None:
        self.app = app
        self._header = "HTTP_" + request_id_header.upper().replace("-", "_")
        self._max_length = checked_max_length(max_request_id_length)

    @contextmanager
    def _request(self, environ: WSGIEnvironment) -> Iterator[QueryContext]:
        """One request, from the application's call to the close of its response."""
        fields = RequestFields(
            lambda: route_template(environ),
            method=environ.get("REQUEST_METHOD", "GET"),
            request_id=clean_request_id(environ.get(self._header), self._max_length),
        )
        try:
            yield scope_of(fields)
        finally:
            fields.settle()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if _HANDLED in environ:
            return self.app(environ, start_response)
        environ[_HANDLED] = True
        with ExitStack() as request:  # ends the request if the application raises
            scope = request.enter_context(self._request(environ))
            with entered(scope):
                response = self.app(environ, start_response)
            if _is_file(response, environ):
                # Sending a file runs no application code: the request ends here, and the
                # server still sees its own file wrapper (and can use sendfile).
                return response
            return _ScopedResponse(response, scope, request.pop_all().close)


def _is_file(response: Iterable[bytes], environ: WSGIEnvironment) -> bool:
    file_wrapper = environ.get("wsgi.file_wrapper")
    return isinstance(file_wrapper, type) and isinstance(response, file_wrapper)


class _ScopedResponse:
    """The application's response; iterating and closing it run in the request's scope, and
    closing it ends the request."""

    def __init__(
        self, response: Iterable[bytes], scope: QueryContext, end: Callable[[], None]
    ) -> None:
        self._response = response
        self._scope = scope
        self._end = end

    def __iter__(self) -> Iterator[bytes]:
        with entered(self._scope):
            chunks = iter(self._response)
        while True:
            with entered(self._scope):
                try:
                    chunk = next(chunks)
                except StopIteration:
                    return
            yield chunk  # outside the scope: the server's code runs between chunks

    def close(self) -> None:
        try:
            close = getattr(self._response, "close", None)
            if close is not None:
                with entered(self._scope):
                    close()
        finally:
            self._end()

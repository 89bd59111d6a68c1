"""What instrument_flask (the WSGI QueryContextMiddleware and its URL-rule hook) adds to a
request, without a database or a server.

    .venv/bin/python bench/wsgi_middleware.py [--rounds 21] [--requests 5000]

A Flask app with one URL rule, called directly through WSGI as a server calls it (the call, the
body, the close; no HTTP, no sockets), with and without instrument_flask, taking turns between
rounds; medians of per-round CPU time per request. The request carries an `X-Request-ID`, and
the view reads the context's route once, as a slow statement's record would.
"""

from __future__ import annotations

from typing import Any

from flask import Flask
from middleware_cost import Requests, arguments, compare

from exporter.integrations.flask import instrument_flask
from exporter.slowlog.context import current

ENVIRON = {
    "REQUEST_METHOD": "GET",
    "SCRIPT_NAME": "",
    "QUERY_STRING": "",
    "SERVER_NAME": "app",
    "SERVER_PORT": "80",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "HTTP_HOST": "app",
    "wsgi.version": (1, 0),
    "wsgi.url_scheme": "http",
    "wsgi.multithread": False,
    "wsgi.multiprocess": False,
    "wsgi.run_once": False,
}


def application(middleware: bool) -> Flask:
    app = Flask(__name__)

    @app.get("/users/<int:user_id>/orders")
    def orders(user_id: int) -> str:
        scope = current.get()
        return scope.fields["route"] if scope is not None else ""

    return instrument_flask(app) if middleware else app


def serve(app: Flask) -> Requests:
    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        return None

    def requests(count: int) -> None:
        for number in range(count):
            environ = {
                **ENVIRON,
                "PATH_INFO": f"/users/{number}/orders",
                "HTTP_X_REQUEST_ID": f"req-{number}",
            }
            body = app(environ, start_response)
            for _ in body:
                pass
            close = getattr(body, "close", None)
            if close is not None:
                close()

    return requests


if __name__ == "__main__":
    args = arguments(__doc__)
    variants = {"without": serve(application(False)), "with": serve(application(True))}
    compare("instrument_flask", variants, args.rounds, args.requests)

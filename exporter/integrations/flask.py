"""Flask: `instrument_flask(app, db)` gives each request a slow-query context with the URL rule
as its route, and instruments the Flask-SQLAlchemy engines of `app`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from flask import Flask, request
from flask.signals import request_started

from exporter.instrumentation import instrument
from exporter.integrations.request import MAX_REQUEST_ID_LENGTH, REQUEST_ID_HEADER
from exporter.integrations.wsgi import ROUTE_KEY, QueryContextMiddleware

if TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy

    from exporter.metrics import Metrics
    from exporter.slowlog import SlowQueryLog


def instrument_flask(
    app: Flask,
    db: SQLAlchemy | None = None,
    *,
    database: str = "main",
    request_id_header: str = REQUEST_ID_HEADER,
    max_request_id_length: int = MAX_REQUEST_ID_LENGTH,
    metrics: Metrics | None = None,
    slow_log: SlowQueryLog | Literal[False] | None = None,
) -> Flask:
    """Wrap `app.wsgi_app` in `QueryContextMiddleware`, whose `route` is the request's URL
    rule (`/users/<int:user_id>`), and `instrument()` every engine `db` made for `app`: the
    default one as `database`, each of `SQLALCHEMY_BINDS` under its bind key. Call it after
    `db.init_app(app)`; calling it again changes nothing. Returns `app`."""
    middleware = app.wsgi_app
    if not isinstance(middleware, QueryContextMiddleware):
        middleware = QueryContextMiddleware(  # first: it refuses bad settings
            app.wsgi_app,
            request_id_header=request_id_header,
            max_request_id_length=max_request_id_length,
            metrics=metrics,
        )
    if db is not None:
        with app.app_context():  # Flask-SQLAlchemy keeps the engines of each app
            engines = dict(db.engines)
        for key, engine in engines.items():
            instrument(engine, database if key is None else key, metrics=metrics, slow_log=slow_log)
    request_started.connect(_remember_route, app)
    app.wsgi_app = middleware  # type: ignore[method-assign]
    return app


def _remember_route(sender: Flask, **extra: Any) -> None:
    """Sent once Flask has routed the request, before any view or `before_request` runs. The
    rule is copied into the environ: Flask takes its request out of the environ when its
    context ends, before the server closes the response."""
    rule = request.url_rule
    if rule is not None:
        request.environ[ROUTE_KEY] = rule.rule

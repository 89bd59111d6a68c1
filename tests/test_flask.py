"""The WSGI middleware and `instrument_flask`, with the real Flask and Flask-SQLAlchemy, called
through werkzeug's test client (a real WSGI call), against a real PostgreSQL."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any
from wsgiref.util import FileWrapper

import pytest
from flask import Flask, request, send_file, stream_with_context
from flask_sqlalchemy import SQLAlchemy
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import selectinload
from test_slowlog import Author, engine, slow_log
from web_requests import (
    CANARY,
    GENERATED_ID,
    REQUEST_IDS,
    SLOW,
    assert_no_canary,
    assert_request_id,
    get_context,
    lazy_authors,
    outputs,
    per_request,
    records,
    statements_of,
)
from werkzeug.exceptions import HTTPException
from werkzeug.test import Client, EnvironBuilder

from exporter import Metrics, instrument, uninstrument
from exporter.endpoints import metrics_body, slow_queries_body
from exporter.integrations.flask import instrument_flask
from exporter.integrations.request import UNMATCHED
from exporter.integrations.wsgi import ROUTE_KEY, QueryContextMiddleware
from exporter.slowlog import SlowQueryLog
from exporter.slowlog.context import current

__all__ = ["engine", "lazy_authors", "slow_log"]  # fixtures, used by name


def flask_app(engine: Engine, db: SQLAlchemy) -> Flask:
    """An application on Flask-SQLAlchemy's `db`, on the database of `engine` (its tables
    made), with a second bind, `reports`, to the same database."""
    url = engine.url.render_as_string(hide_password=False)
    app = Flask(__name__)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=url, SQLALCHEMY_BINDS={"reports": url}, PROPAGATE_EXCEPTIONS=True
    )
    db.init_app(app)

    @app.get("/users/<email>/orders")
    def orders(email: str) -> str:
        db.session.execute(text(SLOW))
        return "ok"

    @app.get("/reports/<int:year>")
    def report(year: int) -> str:
        db.session.execute(text(SLOW), bind_arguments={"bind": db.engines["reports"]})
        return "ok"

    @app.get("/statements/<int:count>")
    def statements(count: int) -> str:
        for _ in range(count):
            db.session.execute(text("SELECT 1"))
        return "ok"

    @app.get("/authors/lazy")
    def lazy_books() -> str:
        authors = db.session.scalars(select(Author)).all()
        return str(sum(len(author.books) for author in authors))  # one SELECT per author

    @app.get("/authors/batched")
    def batched_books() -> str:
        query = select(Author).options(selectinload(Author.books))
        return str(sum(len(author.books) for author in db.session.scalars(query).all()))

    @app.get("/stream/<email>")
    def stream(email: str) -> Iterator[bytes]:
        @stream_with_context
        def chunks() -> Iterator[bytes]:
            yield b"first,"
            db.session.execute(text(SLOW))  # runs while the response streams
            yield b"second"

        return chunks()

    @app.get("/boom/<email>")
    def boom(email: str) -> None:
        db.session.execute(text(SLOW))
        raise RuntimeError("the handler failed")

    @app.get("/stream-boom/<email>")
    def stream_boom(email: str) -> Iterator[bytes]:
        @stream_with_context
        def chunks() -> Iterator[bytes]:
            yield b"first,"
            db.session.execute(text(SLOW))
            raise RuntimeError("the stream failed")

        return chunks()

    @app.get("/files/<name>")
    def download(name: str) -> Any:
        db.session.execute(text(SLOW))
        return send_file(io.BytesIO(b"contents"), mimetype="text/plain")

    @app.errorhandler(404)
    @app.errorhandler(405)
    def not_routed(error: HTTPException) -> tuple[str, int]:
        db.session.execute(text(SLOW))
        return "not here", error.code or 500

    # Connected once before the test instruments them: SQLAlchemy's first-connect statements
    # are slow on a busy machine, and would make slow-query records of their own.
    with app.app_context():
        for app_engine in db.engines.values():
            app_engine.connect().close()
    return app


@pytest.fixture
def app_and_db(engine: Engine) -> Iterator[tuple[Flask, SQLAlchemy]]:
    db = SQLAlchemy()
    app = flask_app(engine, db)
    yield app, db
    release_engines(app, db)


def release_engines(app: Flask, db: SQLAlchemy) -> None:
    with app.app_context():
        for app_engine in db.engines.values():
            uninstrument(app_engine)
            app_engine.dispose()


@pytest.fixture
def app(app_and_db: tuple[Flask, SQLAlchemy], metrics: Metrics, slow_log: SlowQueryLog) -> Flask:
    """The application with `instrument_flask(app, db)`."""
    flask, db = app_and_db
    return instrument_flask(flask, db, metrics=metrics, slow_log=slow_log)


def test_records_carry_url_rules_method_and_request_id_never_the_path(
    app: Flask,
    metrics: Metrics,
    slow_log: SlowQueryLog,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    headers = {"X-Request-ID": "req-1", "X-Canary": CANARY}
    client = app.test_client()
    assert client.get(f"/users/{CANARY}/orders?email={CANARY}", headers=headers).text == "ok"
    assert client.get("/reports/2024").text == "ok"
    assert client.get(f"/nowhere/{CANARY}", headers=headers).status_code == 404
    assert client.post(f"/users/{CANARY}/orders", headers=headers).status_code == 405
    orders, report, missing, not_allowed = records(slow_log)
    assert orders["context"] == get_context("/users/<email>/orders", "req-1")
    assert (report["database"], report["context"]["route"]) == ("reports", "/reports/<int:year>")
    assert GENERATED_ID.match(report["context"]["request_id"])
    assert missing["context"] == get_context(UNMATCHED, "req-1")
    assert not_allowed["context"] == {**get_context(UNMATCHED, "req-1"), "method": "POST"}
    served = {
        "/metrics": metrics_body(metrics.registry, None, "")[0].decode(),
        "/slow-queries": json.dumps(slow_queries_body(slow_log, {})),
    }
    places = outputs(slow_log, capsys, caplog, served)
    assert places["stdout"].count('"/users/<email>/orders"') == 1
    assert_no_canary(places)


def test_n_plus_one_is_reported_once_per_request_and_not_for_a_batched_load(
    app: Flask, slow_log: SlowQueryLog, lazy_authors: None
) -> None:
    client = app.test_client()
    for request_id in ("lazy-1", "lazy-2"):
        assert client.get("/authors/lazy", headers={"X-Request-ID": request_id}).text == "6"
    assert client.get("/authors/batched").text == "6"
    warnings = records(slow_log, "n_plus_one")
    assert [w["context"]["request_id"] for w in warnings] == ["lazy-1", "lazy-2"]
    assert {w["context"]["route"] for w in warnings} == {"/authors/lazy"}
    assert {w["table"] for w in warnings} == {"books"}


def test_each_request_is_one_observation_of_its_statements_and_database_time(
    app: Flask, metrics: Metrics
) -> None:
    # A request ends when the server closes its response (as PEP 3333 servers do).
    client = app.test_client()
    for count in (3, 3, 0, 12):
        with client.get(f"/statements/{count}") as response:
            assert response.text == "ok"
    with client.get(f"/stream/{CANARY}", buffered=False) as streamed:
        assert statements_of(metrics.registry, "/stream/<email>") == (0, 0)  # not over yet
        assert b"".join(streamed.response) == b"first,second"
    streamed.close()  # a server closing it twice: one request still
    with client.get(f"/nowhere/{CANARY}") as missing:
        assert missing.status_code == 404
    registry = metrics.registry
    counts = per_request(registry, "db_request_statements", "/statements/<int:count>")
    assert (counts["count"], counts["sum"]) == (4, 18)
    assert (counts["0.0"], counts["3.0"], counts["+Inf"]) == (1, 3, 4)
    assert statements_of(registry, "/stream/<email>") == (1, 1)  # the statement while streaming
    assert statements_of(registry, UNMATCHED) == (1, 1)  # the 404 handler's
    seconds = per_request(registry, "db_request_duration_seconds", "/stream/<email>")
    assert seconds["count"] == 1
    assert seconds["sum"] >= 0.12  # pg_sleep(0.12)


def test_a_streamed_response_runs_in_the_request_context_and_leaves_none_between_chunks(
    app: Flask, slow_log: SlowQueryLog
) -> None:
    response = app.test_client().get(
        f"/stream/{CANARY}", headers={"X-Request-ID": "s"}, buffered=False
    )
    assert current.get() is None  # the application returned; the body is still to come
    assert b"".join(response.response) == b"first,second"
    assert current.get() is None
    response.close()
    (record,) = records(slow_log)
    assert record["context"] == get_context("/stream/<email>", "s")


def test_an_application_that_raises_leaves_no_context_behind(
    app: Flask, slow_log: SlowQueryLog
) -> None:
    client = app.test_client()
    with pytest.raises(RuntimeError, match="the handler failed"):
        client.get(f"/boom/{CANARY}", headers={"X-Request-ID": "failing"})
    assert current.get() is None
    with pytest.raises(RuntimeError, match="the stream failed"):  # once the response began
        client.get(f"/stream-boom/{CANARY}", headers={"X-Request-ID": "streaming"}, buffered=True)
    assert current.get() is None
    assert client.get("/users/x/orders", headers={"X-Request-ID": "next"}).text == "ok"
    failing, streaming, following = records(slow_log)
    assert failing["context"] == get_context("/boom/<email>", "failing")
    assert streaming["context"] == get_context("/stream-boom/<email>", "streaming")
    assert following["context"] == get_context("/users/<email>/orders", "next")


def test_instrumented_twice_and_the_middleware_added_again_act_once(
    app_and_db: tuple[Flask, SQLAlchemy],
    metrics: Metrics,
    slow_log: SlowQueryLog,
    lazy_authors: None,
) -> None:
    app, db = app_and_db
    for _ in range(2):
        instrument_flask(app, db, metrics=metrics, slow_log=slow_log)
    app.wsgi_app = QueryContextMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, request_id_header="X-Outer-ID"
    )  # the outer one: its settings apply
    headers = {"X-Request-ID": "inner", "X-Outer-ID": "outer"}
    client = app.test_client()
    client.get("/authors/lazy", headers=headers)
    client.get("/users/x/orders", headers=headers)
    (warning,) = records(slow_log, "n_plus_one")
    (record,) = records(slow_log)  # each statement timed once
    assert warning["context"]["request_id"] == record["context"]["request_id"] == "outer"
    assert record["context"]["route"] == "/users/<email>/orders"


def test_any_wsgi_application_gets_the_route_its_framework_leaves_in_the_environ(
    engine: Engine, slow_log: SlowQueryLog
) -> None:
    def application(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        if environ["PATH_INFO"].startswith("/orders/"):
            environ[ROUTE_KEY] = "/orders/{order_id}"  # as a framework's router would
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"first,"
        with engine.connect() as conn:  # a generator body: runs as the server iterates it
            conn.execute(text(SLOW))
        yield b"second"

    client = Client(QueryContextMiddleware(application))
    for path in (f"/orders/{CANARY}", f"/elsewhere/{CANARY}"):
        assert client.get(path, headers={"X-Request-ID": "w"}).data == b"first,second"
    routed, elsewhere = records(slow_log)
    assert routed["context"] == get_context("/orders/{order_id}", "w")
    assert elsewhere["context"] == get_context(UNMATCHED, "w")


def test_each_app_of_one_db_gets_its_own_engines_instrumented(
    engine: Engine, metrics: Metrics, slow_log: SlowQueryLog
) -> None:
    db = SQLAlchemy()  # the application-factory pattern: one db, an app per tenant
    apps = {name: flask_app(engine, db) for name in ("tenant_a", "tenant_b")}
    try:
        for name, app in apps.items():
            instrument_flask(app, db, database=name, metrics=metrics, slow_log=slow_log)
            assert app.test_client().get("/users/x/orders").text == "ok"
            assert app.test_client().get("/reports/2024").text == "ok"
    finally:
        for app in apps.values():
            release_engines(app, db)
    databases = [(r["database"], r["context"]["route"]) for r in records(slow_log)]
    assert databases == [
        ("tenant_a", "/users/<email>/orders"),
        ("reports", "/reports/<int:year>"),
        ("tenant_b", "/users/<email>/orders"),
        ("reports", "/reports/<int:year>"),
    ]


@pytest.mark.parametrize(("given", "kept"), REQUEST_IDS)
def test_request_ids_are_cut_and_cleaned(
    app: Flask, slow_log: SlowQueryLog, given: str, kept: str | None
) -> None:
    # As the server puts the header in the environ (decoded as latin-1): werkzeug's client
    # refuses to send a line break in a header, a proxy in front of the server may not.
    app.test_client().get("/users/x/orders", environ_overrides={"HTTP_X_REQUEST_ID": given})
    (record,) = records(slow_log)
    assert_request_id(record, kept)


def test_a_file_response_reaches_the_server_as_its_own_file_wrapper(
    app: Flask, slow_log: SlowQueryLog
) -> None:
    environ = EnvironBuilder(path=f"/files/{CANARY}", headers={"X-Request-ID": "f"}).get_environ()
    environ["wsgi.file_wrapper"] = FileWrapper  # the server's, for sendfile
    body = app.wsgi_app(environ, lambda status, headers, exc_info=None: lambda data: None)
    assert isinstance(body, FileWrapper)
    assert b"".join(body) == b"contents"
    body.close()
    assert current.get() is None
    (record,) = records(slow_log)
    assert record["context"] == get_context("/files/<name>", "f")


def test_a_db_without_init_app_or_a_bad_length_is_refused_and_nothing_changes(
    metrics: Metrics,
) -> None:
    app = Flask(__name__)
    app.add_url_rule("/", "index", lambda: "ok")
    routes: list[str | None] = []
    app.before_request(lambda: routes.append(request.environ.get(ROUTE_KEY)))
    plain_wsgi_app = app.wsgi_app
    with pytest.raises(RuntimeError, match="Did you forget to call 'init_app'"):
        instrument_flask(app, SQLAlchemy(), metrics=metrics)
    with pytest.raises(ValueError, match=r"^max_request_id_length must be at least 1, not 0$"):
        instrument_flask(app, max_request_id_length=0)
    assert app.wsgi_app == plain_wsgi_app
    assert app.test_client().get("/").text == "ok"
    assert routes == [None]  # the route hook is not connected either


def test_an_engine_instrumented_under_another_name_is_refused_naming_it(
    app_and_db: tuple[Flask, SQLAlchemy], metrics: Metrics, slow_log: SlowQueryLog
) -> None:
    app, db = app_and_db
    with app.app_context():
        instrument(db.engine, "primary", metrics=metrics, slow_log=slow_log)
    plain_wsgi_app = app.wsgi_app
    with pytest.raises(ValueError, match="already instrumented as database 'primary'"):
        instrument_flask(app, db, metrics=metrics, slow_log=slow_log)
    assert app.wsgi_app == plain_wsgi_app


ROUTES = ["/users/<email>/orders", "/items/<int:item_id>"]


@settings(max_examples=200, deadline=None)
@given(
    path=st.tuples(
        st.sampled_from(["/users/", "/items/", "/"]), st.text(), st.sampled_from(["", "/orders"])
    ),
    request_id=st.text(),
)
def test_any_path_and_request_id_give_a_url_rule_and_a_clean_id(
    path: tuple[str, str, str], request_id: str
) -> None:
    app = Flask(__name__)
    for rule in ROUTES:
        app.add_url_rule(rule, rule, lambda **values: "ok")
    seen: list[tuple[dict[str, str], str]] = []

    @app.before_request  # also before a 404 or a redirect: after routing, before any view
    def fields() -> None:
        scope = current.get()
        rule = request.url_rule
        seen.append((dict(scope.fields) if scope else {}, rule.rule if rule else UNMATCHED))

    instrument_flask(app, request_id_header="X-Trace")
    raw = {"PATH_INFO": "".join(path), "HTTP_X_TRACE": request_id}
    as_served = {key: value.encode().decode("latin-1") for key, value in raw.items()}  # PEP 3333
    app.test_client().get(environ_overrides=as_served)
    ((context, routed),) = seen
    assert context["route"] == routed  # what Flask's router matched, for any path
    assert context["request_id"].isascii()
    assert context["request_id"].isprintable()
    assert 1 <= len(context["request_id"]) <= 128


def test_the_wsgi_middleware_loads_no_web_framework() -> None:
    from subprocesses import run_python

    result = run_python(
        "import sys, exporter.integrations.wsgi\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'flask', 'werkzeug'}))"
    )
    assert result.stdout.strip() == "[]", result.stderr

"""The HTTP surface under hostile input: every endpoint answers malformed, huge and Unicode
query strings (raw non-ASCII bytes too), headers and credentials with a 4xx and a short body,
never a 5xx, and the log never gets a traceback. Requests go over real sockets to a real
`Exporter` and to the endpoints mounted in a real application (tests/mounted.py), which read
every query as the sidecar does."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import string
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import pytest
from aiohttp.test_utils import TestClient
from basic_auth import basic_auth, bcrypt_hash
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from mounted import SIDES, MountedExporter, exporter_on
from prometheus_client import CollectorRegistry
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

from exporter import Exporter, Metrics, create_app, instrument, uninstrument
from exporter.dsn import sync_url
from exporter.settings import SlowQuerySettings
from exporter.slowlog import SlowQueryLog
from exporter.webconfig import WebConfig

ENDPOINTS = ["/metrics", "/healthz", "/readyz", "/slow-queries", "/", "/probe"]
PASSWORD = "scrape-me"
SHORT_BODY = 512  # bytes: an error answer names the problem, it does not echo the request
# uvicorn's own refusal of a request it cannot parse: the application's server, not the
# exporter's code, which never sees the request.
UVICORN_REFUSALS = {"Invalid HTTP request received."}
FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


Served = Exporter | MountedExporter


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, Served]]:
    """Exporters on ephemeral ports: open, on each side (mounted.SIDES), and a sidecar behind
    basic auth (on the mount, authentication is the application's)."""
    users = {"prometheus": bcrypt_hash(PASSWORD).encode()}
    started: dict[str, Served] = {
        side: exporter_on(side, metrics=Metrics(CollectorRegistry())) for side in SIDES
    }
    started["guarded"] = Exporter(
        listen="127.0.0.1:0",
        metrics=Metrics(CollectorRegistry()),
        web_config=WebConfig("web-config.yml", None, users, {}),
    )
    for exporter in started.values():
        exporter.start_in_thread()
    yield started
    for exporter in started.values():
        exporter.stop_in_thread()


def get(served: Served, target: str | bytes, headers: dict[str, bytes | str]) -> tuple[int, bytes]:
    """GET `target` (below the exporter's prefix) and `headers` sent byte for byte over a raw
    socket, as any client could: no quoting, and none of the checks a client library makes,
    so raw non-ASCII bytes reach the server as they are."""
    path = urlsplit(served.url).path.encode() + (
        target if isinstance(target, bytes) else target.encode()
    )
    lines = [b"GET " + path + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
    for name, value in headers.items():  # str values as http.client sends them
        lines.append(
            name.encode() + b": " + (value if isinstance(value, bytes) else value.encode("latin-1"))
        )
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as connection:
        connection.sendall(b"\r\n".join([*lines, b"", b""]))
        response = http.client.HTTPResponse(connection)
        response.begin()
        return response.status, response.read()


def assert_refused_cleanly(status: int, body: bytes, caplog: pytest.LogCaptureFixture) -> None:
    assert status < 500, body[:200]
    if status >= 400:
        assert len(body) <= SHORT_BODY, body[:200]
    loud = [
        r
        for r in caplog.records
        if (r.levelno >= logging.WARNING or r.exc_info) and r.getMessage() not in UVICORN_REFUSALS
    ]
    assert loud == [], [r.getMessage()[:200] for r in loud]


_UNICODE = st.characters(blacklist_categories=("Cs",))
_VALUES = st.one_of(
    st.text(_UNICODE, max_size=40),
    st.text("0123456789", min_size=1, max_size=6000),  # numbers past any conversion limit
    st.sampled_from(["²", "٣", "-1", "+5", " 5", "1e3", "0x10", "", "2024-05-01T12:00:00Z"]),
)
_PAIRS = st.lists(
    st.tuples(
        st.sampled_from(["limit", "since", "database", "name[]", "target", "window", "refresh"])
        | st.text(max_size=8),
        _VALUES,
    ),
    max_size=4,
)
# Raw query text, unquoted: stray `%`, `%ZZ`, `%FF` (not UTF-8), `&&`, `==`.
_RAW = st.text(
    "".join(c for c in string.printable if c not in string.whitespace + "#"), max_size=60
) | st.sampled_from(["%", "%ZZ", "limit=%FF", "limit=%C2%B2", "since=%00", "&&==&"])
# Raw bytes in the query, sent as they are: non-ASCII text as UTF-8, bytes that are not UTF-8
# (a lone continuation byte, a cut sequence, an encoded surrogate, an overlong `/`), or
# nothing. `at` places them in the query (`target_of`).
_NON_ASCII = st.one_of(
    st.just(b""),
    st.text(
        st.characters(min_codepoint=0x80, blacklist_categories=("Cs",)), min_size=1, max_size=4
    ).map(str.encode),
    st.binary(min_size=1, max_size=8).map(lambda raw: bytes(byte | 0x80 for byte in raw)),
    st.sampled_from([b"\x80", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\xc0\xaf", b"\xff"]),
)
# How each side refuses a request line with raw non-ASCII bytes: its HTTP server does, before
# any of the exporter's code runs, each in its own words (the mount's is the application's
# server's, uvicorn here), in one short line that does not quote the request.
NON_ASCII_REFUSALS = {
    "sidecar": (400, b"malformed request (InvalidURLError)\n"),
    "mount": (400, b"Invalid HTTP request received."),
}
_HEADER_VALUES = st.one_of(
    st.text(_UNICODE.filter(lambda c: c not in "\r\n"), max_size=60).map(str.encode),
    st.sampled_from(
        [b"*/*;q=\xff", b"gzip;q=-1, br;q=2", b"application/openmetrics-text; version=9"]
    ),
    st.just(b"x" * 9000),  # over aiohttp's 8 KiB header limit
)
_HEADERS = st.dictionaries(
    st.sampled_from(["Accept", "Accept-Encoding", "Authorization"]), _HEADER_VALUES
)


def query_of(pairs: list[tuple[str, str]], raw: str) -> str:
    return "&".join(filter(None, [urlencode(pairs, quote_via=quote), raw]))


def target_of(
    path: str, pairs: list[tuple[str, str]], raw: str, non_ascii: bytes = b"", at: int = 0
) -> bytes:
    """`path?query`, with the bytes `non_ascii` put in the query where `at` says."""
    query = query_of(pairs, raw).encode()
    cut = at % (len(query) + 1)
    return f"{path}?".encode() + query[:cut] + non_ascii + query[cut:]


@pytest.mark.parametrize("side", SIDES)
@FUZZ
@given(
    path=st.sampled_from(ENDPOINTS),
    pairs=_PAIRS,
    raw=_RAW,
    non_ascii=_NON_ASCII,
    at=st.integers(0, 10_000),
    headers=_HEADERS,
)
@example(path="/slow-queries", pairs=[("limit", "²")], raw="", non_ascii=b"", at=0, headers={})
@example(
    path="/slow-queries", pairs=[("limit", "9" * 5000)], raw="", non_ascii=b"", at=0, headers={}
)
# Not UTF-8 after a long query: the sidecar's refusal quoted the whole request line.
@example(
    path="/slow-queries",
    pairs=[("token", "9" * 5000)],
    raw="",
    non_ascii=b"\xff",
    at=-1,
    headers={},
)
def test_every_endpoint_survives_malformed_queries_and_headers(
    servers: dict[str, Served],
    caplog: pytest.LogCaptureFixture,
    side: str,
    path: str,
    pairs: list[tuple[str, str]],
    raw: str,
    non_ascii: bytes,
    at: int,
    headers: dict[str, bytes | str],
) -> None:
    status, body = get(servers[side], target_of(path, pairs, raw, non_ascii, at), headers)
    assert_refused_cleanly(status, body, caplog)


@FUZZ
@given(
    path=st.sampled_from(ENDPOINTS),
    pairs=_PAIRS,
    raw=_RAW,
    non_ascii=_NON_ASCII,
    at=st.integers(0, 10_000),
)
@example(path="/probe", pairs=[("target", "a"), ("target", "b")], raw="", non_ascii=b"", at=0)
@example(path="/", pairs=[], raw="window=%FF&window=1h", non_ascii=b"", at=0)
@example(path="/", pairs=[("window", "1h")], raw="", non_ascii=b"\xff", at=-1)
@example(path="/probe", pairs=[("target", "")], raw="", non_ascii=b"\xc3\xa9", at=-1)
def test_the_mount_reads_every_query_as_the_sidecar_does(
    servers: dict[str, Served],
    path: str,
    pairs: list[tuple[str, str]],
    raw: str,
    non_ascii: bytes,
    at: int,
) -> None:
    """The same status for the same request on both sides, and the same refusal word for
    word (the sidecar's parameter rules, first values and repeated ones included). Raw
    non-ASCII bytes are refused by each side's HTTP server (NON_ASCII_REFUSALS)."""
    target = target_of(path, pairs, raw, non_ascii, at)
    sidecar, mount = (get(servers[side], target, {}) for side in SIDES)
    assert mount[0] == sidecar[0], (target, sidecar, mount)
    if non_ascii:
        assert {"sidecar": sidecar, "mount": mount} == NON_ASCII_REFUSALS, target
    elif sidecar[0] >= 400:
        assert mount[1] == sidecar[1], target


_CREDENTIALS = st.one_of(
    st.tuples(st.text(_UNICODE, max_size=20), st.text(_UNICODE, max_size=100)).map(
        lambda pair: basic_auth(*pair)
    ),
    st.binary(max_size=120).map(lambda password: basic_auth("prometheus", password)),
    _HEADER_VALUES.map(lambda value: {"Authorization": b"Basic " + value}),
)


@FUZZ
@given(path=st.sampled_from(ENDPOINTS), credentials=_CREDENTIALS)
@example(path="/metrics", credentials=basic_auth("nobody", "x" * 73))
@example(path="/metrics", credentials=basic_auth("prometheus", PASSWORD + "x" * 70))
def test_wrong_credentials_are_a_401_on_every_endpoint(
    servers: dict[str, Served],
    caplog: pytest.LogCaptureFixture,
    path: str,
    credentials: dict[str, Any],
) -> None:
    status, body = get(servers["guarded"], path, credentials)
    # 400: a header aiohttp cannot parse (a control character, over 8 KiB) never gets in.
    assert status in ((200, 400) if path == "/healthz" else (401, 400))
    assert_refused_cleanly(status, body, caplog)
    # The right password still opens every endpoint afterwards (/probe: to its 400, no target).
    opened = get(servers["guarded"], path, basic_auth("prometheus", PASSWORD))[0]
    assert opened == (400 if path == "/probe" else 200)


@pytest.fixture
async def slow_queries(database_url: URL, aiohttp_client: Any) -> TestClient[Any, Any]:
    """A client of an app whose slow-query log holds one record of a real statement."""
    metrics = Metrics(CollectorRegistry())
    log = SlowQueryLog(SlowQuerySettings(threshold_ms=20), metrics)
    engine = create_engine(sync_url(database_url))
    instrument(engine, metrics=metrics, slow_log=log)
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_sleep(0.03)"))
    uninstrument(engine)
    engine.dispose()
    log.flush()
    client: TestClient[Any, Any] = await aiohttp_client(create_app(metrics, slow_log=log))
    return client


BAD_LIMITS = ["²", "٣", "9" * 5000, "0", "1001", "-1", "+5", " 5", "1e3", ""]
BAD_TIMES = ["yesterday", "2024-13-01", "9" * 5000, "\uff12\uff10\uff12\uff14-01-01",  # full-width
             "0001-01-01T00:00:00+05:00", "2024-05-01T12:00:00+99:00"]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "value"),
    [("limit", v) for v in BAD_LIMITS] + [("since", v) for v in BAD_TIMES],
)
async def test_bad_parameters_are_a_400_naming_the_parameter(
    slow_queries: TestClient[Any, Any], name: str, value: str
) -> None:
    response = await slow_queries.get("/slow-queries", params={name: value})
    body = await response.read()
    assert response.status == 400
    assert len(body) <= SHORT_BODY
    assert json.loads(body)["error"].startswith(f"{name} must be ")


async def test_since_is_compared_as_a_time_whatever_its_zone(
    slow_queries: TestClient[Any, Any],
) -> None:
    async def records(since: datetime | str) -> int:
        value = since if isinstance(since, str) else since.isoformat()
        response = await slow_queries.get("/slow-queries", params={"since": value})
        assert response.status == 200
        return len((await response.json())["records"])

    body = await (await slow_queries.get("/slow-queries?limit=1000")).json()
    [record] = body["records"]
    at = datetime.fromisoformat(record["time"])
    east = timezone(timedelta(hours=5))
    assert await records(at.astimezone(east)) == 1  # the same instant, written at +05:00
    assert await records((at + timedelta(seconds=1)).astimezone(east)) == 0
    assert await records(at.replace(tzinfo=None)) == 1  # no zone: UTC, as the records
    assert await records(at.date().isoformat()) == 1

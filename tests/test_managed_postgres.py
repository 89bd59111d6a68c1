"""Managed PostgreSQL as RDS and Cloud SQL hand it out, against a private cluster with `ssl=on`
and a throwaway CA: every kind of connection the exporter makes, with asyncpg and psycopg.

The cluster refuses connections without TLS, so whatever connects, connected over TLS. The user
`app` signs in with a password (the canary that must never be shown); `tls_client` with a
client certificate (`clientcert=verify-full`)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from certs import Certs, make_certs
from pg_cluster import private_cluster
from prometheus_client import CollectorRegistry
from sockets import until_closed
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import create_async_engine
from subprocesses import running
from test_settings import SECRET, write

from exporter import instrument, uninstrument
from exporter.demo.schema import apply_migrations
from exporter.dsn import asyncpg_connect_args, asyncpg_engine_args, parse_dsn, sync_url
from exporter.metrics import Metrics
from exporter.probe import one_line
from exporter.settings import SlowQuerySettings
from exporter.slowlog import SlowQueryLog

# What the connection reports about itself: TLS, its name, and a setting from `options`.
_WHO = (
    "SELECT s.ssl, a.application_name, current_setting('search_path') AS search_path"
    " FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE pid = pg_backend_pid()"
)


@dataclass(frozen=True)
class TlsServer:
    port: int
    certs: Certs
    wrong_ca: Path  # a CA that did not sign the server's certificate
    admin: str  # the superuser's DSN

    def application_names(self, user: str) -> list[str]:
        """The names `user`'s connections go by on the server right now."""
        engine = create_engine(sync_url(self.admin))
        try:
            with engine.connect() as conn:
                sql = "SELECT DISTINCT application_name FROM pg_stat_activity WHERE usename = :u"
                return sorted(conn.execute(text(sql), {"u": user}).scalars())
        finally:
            engine.dispose()

    def dsn(self, query: str, user: str = f"app:{SECRET}", hosts: str = "") -> str:
        return f"postgresql://{user}@{hosts or f'127.0.0.1:{self.port}'}/postgres?{query}"


@pytest.fixture(scope="module")
def tls_server(certs: Certs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    wrong = make_certs(tmp_path_factory.mktemp("wrong-ca"))
    with private_cluster(
        "ssl = on",
        "ssl_cert_file = 'server.crt'",
        "ssl_key_file = 'server.key'",
        "ssl_ca_file = 'ca.crt'",
        files=[certs.server_cert, certs.server_key, certs.ca],
        hba=[
            "hostnossl all all all reject",
            "hostssl all tls_client all trust clientcert=verify-full",
            "hostssl all app all scram-sha-256",
        ],
    ) as cluster:
        admin_dsn = f"{cluster.url}?sslmode=require"
        admin = create_engine(sync_url(admin_dsn), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f"CREATE ROLE app LOGIN PASSWORD '{SECRET}'"))
            conn.execute(text("CREATE ROLE tls_client LOGIN"))
            conn.execute(text("CREATE DATABASE wallet OWNER app"))
        admin.dispose()
        yield TlsServer(cluster.port, certs, wrong.ca, admin_dsn)


Who = tuple[bool, str, str]


async def _who_asyncpg_engine(dsn: str) -> Who:
    url, connect_args = asyncpg_engine_args(dsn)
    engine = create_async_engine(url, connect_args=connect_args)
    try:
        async with engine.connect() as conn:
            row = (await conn.execute(text(_WHO))).one()
    finally:
        await engine.dispose()
    return (row.ssl, row.application_name, row.search_path)


async def _who_asyncpg_connect(dsn: str) -> Who:
    # What the slow-query plans do: a raw asyncpg connection.
    conn = await asyncpg.connect(**asyncpg_connect_args(dsn))
    try:
        row = await conn.fetchrow(_WHO)
    finally:
        await conn.close()
    assert row is not None
    return (row["ssl"], row["application_name"], row["search_path"])


async def _who_psycopg(dsn: str) -> Who:
    engine = create_engine(sync_url(dsn))
    try:
        with engine.connect() as conn:
            row = conn.execute(text(_WHO)).one()
    finally:
        engine.dispose()
    return (row.ssl, row.application_name, row.search_path)


CONNECT: dict[str, Callable[[str], Awaitable[Who]]] = {
    "asyncpg engine": _who_asyncpg_engine,
    "asyncpg connect": _who_asyncpg_connect,
    "psycopg engine": _who_psycopg,
}


@pytest.fixture(params=list(CONNECT))
def connect(
    request: pytest.FixtureRequest, tls_server: TlsServer
) -> Callable[[str], Awaitable[Who]]:
    """Each way of connecting in turn; each attempt, made or refused, ends only once its socket
    is closed (a refused TLS connection closes on the loop, which ends with the test)."""
    who = CONNECT[request.param]

    async def connect_and_close(dsn: str) -> Who:
        try:
            return await who(dsn)
        finally:
            await until_closed(tls_server.port)

    return connect_and_close


NAMED = "application_name=billing%20api&options=-c%20search_path%3Dbilling,public"


async def test_verify_full_with_the_right_root_certificate_connects(
    tls_server: TlsServer, connect: Callable[[str], Awaitable[Who]]
) -> None:
    dsn = tls_server.dsn(f"sslmode=verify-full&sslrootcert={tls_server.certs.ca}&{NAMED}")
    assert await connect(dsn) == (True, "billing api", "billing,public")


async def test_verify_full_with_a_wrong_root_certificate_fails_in_one_clear_line(
    tls_server: TlsServer, connect: Callable[[str], Awaitable[Who]]
) -> None:
    dsn = tls_server.dsn(f"sslmode=verify-full&sslrootcert={tls_server.wrong_ca}")
    with pytest.raises(Exception) as error:  # noqa: PT011 (each driver has its own type)
        await connect(dsn)
    line = one_line(error.value)
    assert "certificate verify failed" in line
    assert SECRET not in line


async def test_require_connects_without_a_root_certificate(
    tls_server: TlsServer, connect: Callable[[str], Awaitable[Who]]
) -> None:
    assert (await connect(tls_server.dsn("sslmode=require")))[0] is True


async def test_a_client_certificate_signs_in(
    tls_server: TlsServer, connect: Callable[[str], Awaitable[Who]]
) -> None:
    certs = tls_server.certs
    files = f"sslrootcert={certs.ca}&sslcert={certs.client_cert}&sslkey={certs.client_key}"
    dsn = tls_server.dsn(f"sslmode=verify-full&{files}", user="tls_client")
    assert (await connect(dsn))[0] is True
    # Without it, the server refuses the same user.
    with pytest.raises(Exception, match="certificate"):
        await connect(tls_server.dsn(f"sslmode=verify-full&sslrootcert={certs.ca}", "tls_client"))


async def test_several_hosts_the_first_down_as_libpq_writes_them(
    tls_server: TlsServer, connect: Callable[[str], Awaitable[Who]]
) -> None:
    hosts = f"127.0.0.1:1,localhost:{tls_server.port}"  # nothing listens on port 1
    query = f"sslmode=verify-full&sslrootcert={tls_server.certs.ca}&target_session_attrs=read-write"
    assert (await connect(tls_server.dsn(query, hosts=hosts)))[0] is True


def test_slow_query_plans_connect_as_the_application_does(
    tls_server: TlsServer, tmp_path: Path, registry: CollectorRegistry
) -> None:
    # The plan connection is asyncpg's, made from the application's psycopg URL (asyncpg's own
    # DSN reader would send connect_timeout to the server as a setting, which it refuses).
    query = f"sslmode=verify-full&sslrootcert={tls_server.certs.ca}&connect_timeout=10"
    dsn = tls_server.dsn(query)
    engine = create_engine(sync_url(dsn))
    metrics = Metrics(registry)
    slow_log = SlowQueryLog(
        SlowQuerySettings(threshold_ms=100, file=str(tmp_path / "slow.jsonl")), metrics
    )
    instrument(engine, metrics=metrics, slow_log=slow_log)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_sleep(0.11)"))
        slow_log.flush()
    finally:
        uninstrument(engine)
        engine.dispose()
        slow_log.close()
    (aggregate,) = slow_log.aggregates.ranked()
    assert aggregate["plan_summary"].startswith("Result")


def test_the_demo_migrates_over_verify_full(tls_server: TlsServer) -> None:
    # Alembic's environment (asyncpg) and the demo's own engine take the DSN as it is given.
    query = f"sslmode=verify-full&sslrootcert={tls_server.certs.ca}&application_name=migrations"
    url = parse_dsn(tls_server.dsn(query)).set(database="wallet")
    apply_migrations(url)
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
    finally:
        engine.dispose()


def test_serve_reports_a_wrong_root_certificate_on_readyz_and_db_up(
    tls_server: TlsServer, tmp_path: Path
) -> None:
    right = tls_server.dsn(f"sslmode=verify-full&sslrootcert={tls_server.certs.ca}&{NAMED}")
    wrong = tls_server.dsn(f"sslmode=verify-full&sslrootcert={tls_server.wrong_ca}")
    config = write(
        tmp_path,
        "databases:\n"
        f"  - {{name: managed, dsn: '{right}', check_interval_seconds: 0.5}}\n"
        f"  - {{name: misconfigured, dsn: '{wrong}', check_interval_seconds: 0.5}}\n",
    )
    with running("serve", "--config", str(config), "--listen", "127.0.0.1:0") as serve:
        url = serve.wait_for(r"serving (http://\S+)/metrics").group(1)
        serve.wait_for("database misconfigured is not answering: .*certificate verify failed")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ready = _get_json(url + "/readyz")
            if ready["databases"]["managed"] == "ok":
                break
            time.sleep(0.2)
        with urllib.request.urlopen(url + "/metrics", timeout=5) as response:
            metrics = response.read().decode()
        # The DSN's application_name gives way to the exporter's own (the activity collector
        # leaves those connections out by that name).
        assert tls_server.application_names("app") == ["db-exporter"]
        serve.stop()
    assert ready["databases"]["managed"] == "ok"
    reason = ready["databases"]["misconfigured"]
    assert reason.startswith("SSLCertVerificationError: [SSL: CERTIFICATE_VERIFY_FAILED]")
    assert 'db_up{database="managed"} 1.0' in metrics
    assert 'db_up{database="misconfigured"} 0.0' in metrics
    assert SECRET not in "".join(serve.output) + json.dumps(ready) + metrics


def _get_json(url: str) -> dict[str, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            body = response.read()
    except urllib.error.HTTPError as error:  # 503 while a database is not ready
        with error:
            body = error.read()
    data: dict[str, dict[str, str]] = json.loads(body)
    return data

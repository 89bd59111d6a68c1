"""Discovering every database of a server, and `/probe?target=`, against the real server."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from collector_helpers import dsn, execute, gunzip_one_member, until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mounted import SIDES, exporter_on
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from sockets import connections_to
from sqlalchemy.engine import URL
from sqlalchemy.exc import OperationalError

from exporter import Metrics
from exporter.collectors import COLLECTORS as ALL_COLLECTORS
from exporter.collectors.database import DatabaseCollector
from exporter.collectors.discovery import chosen
from exporter.collectors.postmaster import PostmasterCollector
from exporter.collectors.runner import CollectorRunner
from exporter.collectors.runner import _lock_parts as lock_parts
from exporter.settings import (
    ConfigError,
    DatabaseSettings,
    DiscoverSettings,
    ElectionSettings,
    load_settings,
    settings_from_data,
)

# A per-database collector (pg_stat_database of its own database) and a server-wide one.
COLLECTORS: dict[str, Any] = {c.name: c for c in (DatabaseCollector, PostmasterCollector)}
PER_DATABASE = "pg_stat_database_xact_commit_total"  # a sample's name; its family's below
PER_DATABASE_FAMILY = "pg_stat_database_xact_commit"
SERVER_WIDE = "pg_postmaster_start_time_seconds"
EXPORTER_CONNECTIONS = (
    "SELECT count(*) FROM pg_stat_activity"
    " WHERE application_name = 'db-exporter' AND datname LIKE '{prefix}%'"
)
# Terminates the session holding an election lock (pg_locks shows the key in two halves).
HOLDER = (
    "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted"
    " AND objsubid = 1 AND classid::bigint = {high} AND objid::bigint = {low}"
)
LAST_LISTING = (
    "exporter_collector_last_success_timestamp_seconds",
    {"collector": "discovery", "database": "main"},
)


@pytest.fixture
def prefix(database_url: URL) -> Iterator[str]:
    """A name prefix of this test's own: the shared server has other people's databases too.
    Every database named with it is dropped afterwards."""
    prefix = f"dbx_disc_{uuid.uuid4().hex[:8]}_"
    yield prefix
    for (name,) in execute(
        database_url, f"SELECT datname FROM pg_database WHERE datname LIKE '{prefix}%'"
    ):
        execute(database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def entry(url: URL, **discover: Any) -> DatabaseSettings:
    discover.setdefault("interval_seconds", 0.2)
    return DatabaseSettings(
        name="main",
        dsn=dsn(url),
        check_interval_seconds=0.2,
        election={"enabled": False},
        discover=discover,
    )


def series(registry: CollectorRegistry, name: str) -> dict[str, float]:
    """{database label: value} of a family's samples."""
    return {
        s.labels["database"]: s.value
        for family in registry.collect()
        for s in family.samples
        if s.name == name
    }


def drop(server: URL, name: str) -> None:
    """A plain DROP DATABASE, as its owner would run it: it must not be kept from it by an idle
    connection of the exporter (only a run in progress may hold it for a moment)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            execute(server, f'DROP DATABASE "{name}"')
            return
        except OperationalError as exc:  # 55006: being accessed by other users
            if "other users" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def listed_lines(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [
        f"{r.levelname} {r.getMessage()}"
        for r in caplog.records
        if r.name == "exporter.collectors" and name in r.getMessage()
    ]


def test_the_server_wide_collectors_are_the_documented_ones() -> None:
    """A discovered database runs every other collector; the README lists these."""
    server_wide = {name for name, cls in ALL_COLLECTORS.items() if cls.server_wide}
    assert server_wide == {
        "settings", "postmaster", "database_wraparound", "locks", "long_running_transactions",
        "stat_activity_autovacuum", "replication", "replication_slot", "stat_wal_receiver",
        "stat_bgwriter", "stat_checkpointer", "wal", "archiver", "roles", "server_activity",
        "stat_database_conflicts",
    }  # fmt: skip


def test_include_exclude_and_the_cap() -> None:
    names = ["app", "app_archive", "billing", "postgres", "reports"]
    rules = DiscoverSettings(include=("app*", "billing", "re?orts"), exclude=("*_archive",))
    assert chosen(names, rules) == (["app", "billing", "reports"], 0)
    assert chosen(names, rules.model_copy(update={"max_databases": 2})) == (["app", "billing"], 1)
    assert chosen(names, DiscoverSettings(max_databases=0)) == ([], 5)
    # Patterns are case-sensitive, as database names are.
    assert chosen(["App"], DiscoverSettings(include=("app",))) == ([], 0)


@pytest.mark.parametrize(
    ("discover", "message"),
    [
        ({"include": []}, "databases[0].discover.include: Tuple should have at least 1 item"),
        ({"include": [""]}, "databases[0].discover.include: each pattern must be 1 to 200"),
        ({"max_databases": -1}, "databases[0].discover.max_databases: Input should be greater"),
        ({"interval_seconds": 0}, "databases[0].discover.interval_seconds: Input should be"),
        ({"patterns": ["a"]}, "databases[0].discover.patterns: unknown key"),
        ("all", "databases[0].discover: Input should be a valid dictionary"),
    ],
)
def test_bad_discover_settings_are_one_clear_line(discover: Any, message: str) -> None:
    data = {"databases": [{"name": "main", "dsn": "postgresql://h/db", "discover": discover}]}
    with pytest.raises(ConfigError) as caught:
        settings_from_data(data, "exporter.yaml", env={})
    text = str(caught.value)
    assert text.startswith(f"exporter.yaml: {message}"), text
    assert "\n" not in text


def test_discover_from_the_environment() -> None:
    env = {
        "DATABASE_URL": "postgresql://h/postgres",
        "DB_EXPORTER_DATABASES__0__DISCOVER__INCLUDE__0": "app*",
        "DB_EXPORTER_DATABASES__0__DISCOVER__MAX_DATABASES": "5",
    }
    rules = load_settings(None, env=env).databases[0].discover
    assert rules == DiscoverSettings(include=("app*",), max_databases=5)
    env["DB_EXPORTER_DATABASES__0__DISCOVER__MAX_DATABASES"] = "-1"
    with pytest.raises(ConfigError) as caught:
        load_settings(None, env=env)
    assert str(caught.value).startswith(
        "DB_EXPORTER_DATABASES__0__DISCOVER__MAX_DATABASES (databases[0].discover.max_databases)"
    )


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["include", "exclude", "max_databases", "interval_seconds", "x"]),
        st.one_of(
            st.lists(st.text(max_size=300), max_size=3),
            st.integers(-5, 20_000),
            st.floats(allow_nan=True),
            st.text(max_size=20),
            st.none(),
        ),
    )
)
def test_any_discover_section_is_valid_or_one_line(discover: dict[str, Any]) -> None:
    data = {"databases": [{"name": "main", "dsn": "postgresql://h/db", "discover": discover}]}
    try:
        loaded = settings_from_data(data, "exporter.yaml", env={})
    except ConfigError as exc:
        problem = str(exc)
    else:
        problem = None
    if problem is not None:
        assert problem.startswith("exporter.yaml: databases[0].discover")
        assert "\n" not in problem
        return
    rules = loaded.databases[0].discover
    assert rules is not None
    watched, omitted = chosen([f"db{i}" for i in range(50)], rules)
    assert len(watched) <= rules.max_databases
    assert omitted >= 0


async def test_discovered_databases_come_and_go_while_it_runs(
    database_url: URL, registry: CollectorRegistry, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "exporter.collectors")
    for suffix in ("a", "skip_b"):
        execute(database_url, f'CREATE DATABASE "{prefix}{suffix}"')
    metrics = Metrics(registry)
    seed = entry(database_url, include=[f"{prefix}*"], exclude=[f"{prefix}skip_*"])
    runner = CollectorRunner([seed], metrics, COLLECTORS)
    await runner.start()
    try:
        a, c = f"main/{prefix}a", f"main/{prefix}c"
        await until(lambda: a in series(registry, PER_DATABASE))
        # The server-wide collector runs once, on the entry; the excluded database is not watched.
        assert set(series(registry, SERVER_WIDE)) == {"main"}
        assert set(runner.states()) == {"main", a}
        assert series(registry, "db_discovered_databases") == {"main": 1}
        datnames = {
            s.labels["datname"]
            for f in registry.collect()
            for s in f.samples
            if s.name == PER_DATABASE and s.labels["database"] == a
        }
        assert datnames == {f"{prefix}a"}

        execute(database_url, f'CREATE DATABASE "{prefix}c"')  # picked up without a restart
        await until(lambda: c in series(registry, PER_DATABASE))
        assert registry.get_sample_value("db_up", {"database": c}) == 1

        drop(database_url, f"{prefix}c")
        await until(lambda: c not in runner.states())
        await until(lambda: c not in series(registry, PER_DATABASE))
        assert registry.get_sample_value("db_up", {"database": c}) is None
        assert series(registry, "exporter_collector_success").get(c) is None
        # More listings and checks: still the one line, no loop of errors.
        last = registry.get_sample_value(*LAST_LISTING) or 0
        await until(lambda: (registry.get_sample_value(*LAST_LISTING) or 0) > last + 0.5)
        assert listed_lines(caplog, c) == [
            f"INFO database {c} found: watching it",
            f"INFO database {c} is no longer listed: its series are withdrawn",
        ]
        assert a in series(registry, PER_DATABASE)  # the others carry on
    finally:
        await runner.stop()
    # Stopped: no connection of the exporter is left in any discovered database.
    assert execute(database_url, EXPORTER_CONNECTIONS.format(prefix=prefix)) == [(0,)]


async def test_a_dropped_database_is_let_go_before_the_next_listing(
    database_url: URL, registry: CollectorRegistry, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The listing is hourly here: the dropped database's own check asks for a new one."""
    caplog.set_level(logging.INFO, "exporter.collectors")
    execute(database_url, f'CREATE DATABASE "{prefix}d"')
    metrics = Metrics(registry)
    runner = CollectorRunner(
        [entry(database_url, include=[f"{prefix}*"], interval_seconds=3600)], metrics, COLLECTORS
    )
    await runner.start()
    try:
        d = f"main/{prefix}d"
        await until(lambda: d in series(registry, PER_DATABASE))
        drop(database_url, f"{prefix}d")
        await until(lambda: d not in runner.states())
        assert d not in series(registry, PER_DATABASE)
        assert listed_lines(caplog, d)[-1] == (
            f"INFO database {d} is no longer listed: its series are withdrawn"
        )
        assert not [line for line in listed_lines(caplog, d) if line.startswith("WARNING")]
    finally:
        await runner.stop()


async def test_only_the_elected_exporter_watches_the_discovered_databases(
    database_url: URL, prefix: str
) -> None:
    """Two exporters of one entry (replicas of an application): the holder of the election
    lock discovers; when it stops, the other takes the lock and the databases with it."""
    execute(database_url, f'CREATE DATABASE "{prefix}a"')
    a = f"main/{prefix}a"
    lock = {"lock_key": int(uuid.uuid4().int % 2**62)}
    seed = entry(database_url, include=[f"{prefix}*"]).model_copy(
        update={"election": ElectionSettings(**lock)}
    )
    first, second = (
        CollectorRunner([seed], Metrics(CollectorRegistry()), COLLECTORS) for _ in "12"
    )
    await first.start()
    try:
        await until(lambda: a in first.states())
        await second.start()
        try:
            leader = ("exporter_collector_leader", {"database": "main"})
            await until(lambda: second.states()["main"].ok is True)
            assert second.metrics.registry.get_sample_value(*leader) == 0
            assert set(second.states()) == {"main"}
            # The leader loses its connection, and with it the lock, until the other has it:
            # the first, now a follower, lets the database go and the second watches it.
            for _ in range(50):
                execute(database_url, HOLDER.format(**lock_parts(lock["lock_key"])))
                await until(lambda: second.states()["main"].ok is True)
                if second.metrics.registry.get_sample_value(*leader) == 1:
                    break
                await asyncio.sleep(0.3)  # another check of both
            await until(lambda: a in second.states())
            await until(lambda: a not in first.states())
            assert first.metrics.registry.get_sample_value(*leader) == 0
            await first.stop()
        finally:
            await second.stop()
    finally:
        await first.stop()


async def test_the_cap_counts_the_rest_and_logs_once(
    database_url: URL, registry: CollectorRegistry, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "exporter.collectors")
    for suffix in ("a", "b", "c"):
        execute(database_url, f'CREATE DATABASE "{prefix}{suffix}"')
    metrics = Metrics(registry)
    runner = CollectorRunner(
        [entry(database_url, include=[f"{prefix}*"], max_databases=1)], metrics, COLLECTORS
    )
    await runner.start()
    try:
        await until(lambda: f"main/{prefix}a" in series(registry, PER_DATABASE))
        last = registry.get_sample_value(*LAST_LISTING) or 0
        await until(lambda: (registry.get_sample_value(*LAST_LISTING) or 0) > last + 0.5)
        assert series(registry, "db_discovered_databases_omitted") == {"main": 2}
        assert series(registry, "db_discovered_databases") == {"main": 1}
        assert set(runner.states()) == {"main", f"main/{prefix}a"}
        capped = [r for r in caplog.records if "max_databases (1) is reached" in r.getMessage()]
        assert len(capped) == 1
        assert capped[0].levelname == "WARNING"
    finally:
        await runner.stop()


# --- /probe ----------------------------------------------------------------------------------


def get(base: str, query: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"{base}/probe{query}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture(params=SIDES)
def probed(
    request: pytest.FixtureRequest, database_url: URL, registry: CollectorRegistry, prefix: str
) -> Iterator[str]:
    """A running exporter (in its own thread; the sidecar, or the endpoints mounted in an
    application) discovering `<prefix>a`: its base URL, once both databases have their
    series."""
    execute(database_url, f'CREATE DATABASE "{prefix}a"')
    metrics = Metrics(registry)
    exporter = exporter_on(
        request.param,
        databases=[entry(database_url, include=[f"{prefix}*"])],
        metrics=metrics,
    )
    exporter.start_in_thread()
    try:
        deadline = time.monotonic() + 30
        while f"main/{prefix}a" not in series(registry, PER_DATABASE):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        yield exporter.url
    finally:
        exporter.stop_in_thread()


def test_probe_serves_one_configured_or_discovered_target(probed: str, prefix: str) -> None:
    a = f"main/{prefix}a"
    status, body = get(probed, "?" + urllib.parse.urlencode({"target": a}))
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(body)}
    assert [(s.labels, s.value) for s in families["db_up"].samples] == [({"database": a}, 1)]
    assert {s.labels["database"] for f in families.values() for s in f.samples} == {a}
    assert {s.labels["datname"] for s in families[PER_DATABASE_FAMILY].samples} == {f"{prefix}a"}
    assert SERVER_WIDE not in families  # the server's series are the entry's

    status, body = get(probed, "?target=main")
    families = {f.name: f for f in text_string_to_metric_families(body)}
    assert status == 200
    assert families[SERVER_WIDE].samples[0].labels["database"] == "main"

    # Gzipped when asked, as one gzip member (Prometheus asks).
    query = "?" + urllib.parse.urlencode({"target": a})
    request = urllib.request.Request(f"{probed}/probe{query}", headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Content-Encoding"] == "gzip"
        gunzipped = gunzip_one_member(response.read()).decode()
    families = {f.name: f for f in text_string_to_metric_families(gunzipped)}
    assert [(s.labels, s.value) for s in families["db_up"].samples] == [({"database": a}, 1)]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("", "give exactly one target"),
        ("?target=main&target=main", "give exactly one target"),
        ("?target=nope", "unknown target"),
        (
            "?target=" + urllib.parse.quote("postgresql://postgres@127.0.0.1:5432/postgres"),
            "unknown target",
        ),
    ],
)
def test_probe_refuses_a_missing_or_unknown_target(probed: str, query: str, message: str) -> None:
    status, body = get(probed, query)
    assert status == 400
    assert body.startswith(message)
    assert "postgresql://" not in body  # the target is never echoed


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    target=st.one_of(
        st.text(max_size=200),
        st.builds(
            lambda host, db: f"postgresql://u:p@{host}:{{port}}/{db}",
            st.sampled_from(["127.0.0.1", "localhost", "[::1]"]),
            st.text(max_size=20),
        ),
    )
)
def test_probe_fuzz_never_fails_nor_connects(probed: str, prefix: str, target: str) -> None:
    """Whatever the target, a 200 for a known name and a 400 otherwise, and nothing connects
    to the host a target names (a listener of ours stands in for it)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        port = listener.getsockname()[1]
        target = target.replace("{port}", str(port))
        status, _ = get(probed, "?" + urllib.parse.urlencode({"target": target}))
        known = {"main", f"main/{prefix}a"}
        assert status == (200 if target in known else 400)
        with pytest.raises(BlockingIOError):
            listener.accept()
        assert connections_to(port) == 0

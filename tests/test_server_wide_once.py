"""Server-wide collectors run once per server, also across configured entries, on real servers.

Two configured databases of one server: the first entry (in config order) that answers runs
the server-wide collectors, the others withdraw their series and runner metrics; another entry
takes over when it stops answering; entries on two servers (a primary and its replica too)
each report their own; a role that may not read the server's identity runs them itself.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from collector_helpers import dsn, execute, login_role, samples, until
from pg_cluster import PrivateCluster, private_cluster
from prometheus_client import CollectorRegistry
from replication_pair import Pair
from sqlalchemy.engine import URL, make_url

from exporter import Metrics
from exporter.collectors import COLLECTORS, DEFAULT_ENABLED, Collector
from exporter.collectors.database import DatabaseCollector
from exporter.collectors.locks import LocksCollector
from exporter.collectors.postmaster import PostmasterCollector
from exporter.collectors.runner import CollectorRunner
from exporter.collectors.servers import Server, ServerWideOwners, Unidentified
from exporter.settings import DatabaseSettings

CHECK_INTERVAL = 0.2
# A per-database collector (pg_stat_database of its own database) and two server-wide ones.
FEW: dict[str, type[Collector[Any]]] = {
    c.name: c for c in (DatabaseCollector, PostmasterCollector, LocksCollector)
}
FAST = {name: {"interval_seconds": 0.2} for name in FEW}
OWNERSHIP = ("server-wide collectors", "pg_control_system()")


def entry(name: str, url: URL, **extra: Any) -> DatabaseSettings:
    """A configured database with quick checks and collectors, and an election lock of this
    test run's own (other exporters on the shared server never make it a follower)."""
    extra.setdefault("collectors", FAST)
    return DatabaseSettings(
        name=name,
        dsn=dsn(url),
        check_interval_seconds=CHECK_INTERVAL,
        election={"lock_key": random.randrange(2**62)},
        **extra,
    )


@asynccontextmanager
async def running(
    databases: Sequence[DatabaseSettings], collectors: dict[str, type[Collector[Any]]] = FEW
) -> AsyncIterator[CollectorRunner]:
    runner = CollectorRunner(databases, Metrics(CollectorRegistry()), collectors)
    await runner.start()
    try:
        yield runner
    finally:
        await runner.stop()


def reporting(runner: CollectorRunner, collector: str) -> set[str]:
    """The entries whose last run of `collector` has series in `/metrics`."""
    return {database for database, _ in runner.store.runs(collector)}


def runner_metrics(runner: CollectorRunner, collector: str) -> dict[str, float]:
    """{database: exporter_collector_success} of `collector`, where the series exists."""
    found = samples(runner.metrics.registry, "exporter_collector_success")
    return {labels["database"]: v for labels, v in found if labels["collector"] == collector}


def start_time(runner: CollectorRunner) -> dict[str, float]:
    """{database: pg_postmaster_start_time_seconds}."""
    found = samples(runner.metrics.registry, "pg_postmaster_start_time_seconds")
    return {labels["database"]: value for labels, value in found}


def up(runner: CollectorRunner, database: str) -> float | None:
    return runner.metrics.registry.get_sample_value("db_up", {"database": database})


def ownership_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        f"{r.levelname} {r.getMessage()}"
        for r in caplog.records
        if r.name == "exporter.collectors" and any(word in r.getMessage() for word in OWNERSHIP)
    ]


async def some_checks() -> None:
    """Long enough for every worker to check and run again a few times."""
    await asyncio.sleep(6 * CHECK_INTERVAL)


async def test_two_databases_of_one_server_report_its_series_once(
    database_url: URL, fresh_database: URL, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "exporter.collectors")
    every = {name: {"interval_seconds": 0.5} for name in COLLECTORS}
    databases = [
        entry("first", fresh_database, collectors=every),
        entry("second", database_url, collectors=every),
    ]
    async with running(databases, COLLECTORS) as runner:
        await until(
            lambda: (
                runner_metrics(runner, "postmaster") == {"first": 1}
                and runner_metrics(runner, "database") == {"first": 1, "second": 1}
                and ownership_lines(caplog) != []
            )
        )
        await some_checks()
        for name, cls in COLLECTORS.items():
            if not DEFAULT_ENABLED[name]:
                continue
            if cls.server_wide:
                # Neither series nor runner metrics from the second: nothing to sum twice.
                assert set(runner_metrics(runner, name)) == {"first"}, name
                assert reporting(runner, name) <= {"first"}, name
            else:
                assert set(runner_metrics(runner, name)) == {"first", "second"}, name
        assert reporting(runner, "database") == {"first", "second"}
        assert set(start_time(runner)) == {"first"}
        assert ownership_lines(caplog) == [
            "INFO database second: server-wide collectors run by database first (same server)"
        ]


async def test_a_lone_entry_never_reads_the_server_identity(database_url: URL) -> None:
    async with running([entry("main", database_url)]) as runner:
        await until(lambda: runner_metrics(runner, "postmaster") == {"main": 1})
        [worker] = runner.workers
        assert worker.server is None


def allow_connections(cluster: PrivateCluster, database: str, allowed: bool) -> None:
    """Open or close `database` to new connections; closing also ends the open ones."""
    cluster.query(f"ALTER DATABASE {database} ALLOW_CONNECTIONS {str(allowed).lower()}")
    if not allowed:
        cluster.query(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'"
        )


@contextmanager
def server_of_a_and_b() -> Iterator[tuple[PrivateCluster, list[DatabaseSettings]]]:
    """A private server with databases `a` and `b`, and an entry for each (a first)."""
    with private_cluster() as cluster:
        for name in ("a", "b"):
            cluster.query(f"CREATE DATABASE {name}")
        server = make_url(cluster.url)
        yield cluster, [entry(name, server.set(database=name)) for name in ("a", "b")]


async def test_the_next_entry_of_the_server_takes_over_and_hands_back(
    fresh_database: URL, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "exporter.collectors")
    with server_of_a_and_b() as (cluster, databases):
        async with running([*databases, entry("local", fresh_database)]) as runner:
            # Two servers: each reports its own, through its first entry.
            await until(lambda: reporting(runner, "postmaster") == {"a", "local"})
            await until(lambda: reporting(runner, "database") == {"a", "b", "local"})
            assert set(runner_metrics(runner, "locks")) == {"a", "local"}
            first_start = start_time(runner)["a"]
            assert first_start != start_time(runner)["local"]

            # The owner's database stops answering: the next entry of its server takes over.
            allow_connections(cluster, "a", False)
            await until(lambda: reporting(runner, "postmaster") == {"b", "local"})
            await until(lambda: runner_metrics(runner, "locks") == {"b": 1, "local": 1})
            assert up(runner, "a") == 0
            assert runner_metrics(runner, "database")["a"] == 0  # its own ones fail
            assert start_time(runner)["b"] == first_start

            # It answers again: it runs them again, and the other lets go at once.
            allow_connections(cluster, "a", True)
            await until(lambda: reporting(runner, "postmaster") == {"a", "local"})
            await until(lambda: set(runner_metrics(runner, "locks")) == {"a", "local"})

            # Each says so once (the entry that stopped answering too).
            assert ownership_lines(caplog) == [
                "INFO database b: server-wide collectors run by database a (same server)",
                "INFO database a: server-wide collectors run by database b (same server)",
                "INFO database b: its server-wide collectors run here",
                "INFO database a: its server-wide collectors run here",
                "INFO database b: server-wide collectors run by database a (same server)",
            ]

            # The whole server stops: nobody answers for it; the first entry reports failure.
            await asyncio.to_thread(cluster.stop, "fast")
            await until(lambda: up(runner, "a") == 0 and up(runner, "b") == 0)
            await until(lambda: reporting(runner, "postmaster") == {"local"})
            await until(lambda: runner_metrics(runner, "postmaster") == {"a": 0, "local": 1})

            # Restarted, it is another server (a new postmaster); the first entry owns it.
            await asyncio.to_thread(cluster.start)
            await until(lambda: reporting(runner, "postmaster") == {"a", "local"})
            assert start_time(runner)["a"] > first_start
            # Whichever answered first, once both have checked the second lets go.
            await until(lambda: set(runner_metrics(runner, "postmaster")) == {"a", "local"})
            await until(lambda: reporting(runner, "locks") == {"a", "local"})
            await some_checks()
            assert set(runner_metrics(runner, "postmaster")) == {"a", "local"}
            assert reporting(runner, "locks") == {"a", "local"}
            # The last word is the first entry's.
            [*_, last] = [line for line in ownership_lines(caplog) if "database b:" in line]
            assert last == "INFO database b: server-wide collectors run by database a (same server)"


async def test_when_every_entry_of_a_server_is_down_the_first_reports_the_failure(
    fresh_database: URL,
) -> None:
    """The order the entries notice an outage in does not matter: the first entry ends up
    reporting `success 0`, also after it had handed its jobs to the second."""
    with server_of_a_and_b() as (cluster, databases):
        async with running(databases) as runner:
            await until(lambda: reporting(runner, "postmaster") == {"a"})
            allow_connections(cluster, "a", False)  # a first: b takes over
            await until(lambda: runner_metrics(runner, "postmaster") == {"b": 1})
            allow_connections(cluster, "b", False)  # then b: back to a, still down
            await until(lambda: up(runner, "b") == 0)
            await until(lambda: runner_metrics(runner, "postmaster") == {"a": 0})
            await some_checks()
            assert runner_metrics(runner, "postmaster") == {"a": 0}
            assert runner_metrics(runner, "locks") == {"a": 0}
            assert reporting(runner, "postmaster") == set()


async def test_an_entry_left_with_a_restarted_servers_old_identity_says_they_fail_there(
    fresh_database: URL, caplog: pytest.LogCaptureFixture
) -> None:
    """A restart makes the server a new one; an entry that cannot check yet still has the old
    identity, so it is left with that server's collectors: it reports their failure, and its
    line says so (not that they run there) until its next check finds the first entry."""
    caplog.set_level(logging.INFO, "exporter.collectors")
    with server_of_a_and_b() as (cluster, databases):
        async with running(databases) as runner:
            await until(lambda: reporting(runner, "postmaster") == {"a"})
            await until(lambda: ownership_lines(caplog) != [])
            allow_connections(cluster, "b", False)  # kept across the restart
            await until(lambda: up(runner, "b") == 0)
            await asyncio.to_thread(cluster.stop, "fast")
            await asyncio.to_thread(cluster.start)
            await until(lambda: runner_metrics(runner, "postmaster") == {"a": 1, "b": 0})
            allow_connections(cluster, "b", True)
            await until(lambda: runner_metrics(runner, "postmaster") == {"a": 1})
    assert ownership_lines(caplog) == [
        "INFO database b: server-wide collectors run by database a (same server)",
        "INFO database b: its server-wide collectors report failure here while it is not answering",
        "INFO database b: server-wide collectors run by database a (same server)",
    ]


async def test_a_primary_and_its_replica_are_two_servers(
    replication_pair: Pair, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "exporter.collectors")
    same = "SELECT system_identifier FROM pg_control_system()"
    assert replication_pair.primary.query(same) == replication_pair.replica.query(same)
    databases = [
        entry("primary", replication_pair.primary_url),
        entry("replica", replication_pair.replica_url),
    ]
    async with running(databases) as runner:
        await until(lambda: reporting(runner, "postmaster") == {"primary", "replica"})
        await until(lambda: reporting(runner, "locks") == {"primary", "replica"})
        await some_checks()
        assert set(runner_metrics(runner, "postmaster")) == {"primary", "replica"}
    assert ownership_lines(caplog) == []


async def test_a_role_that_may_not_read_the_identity_runs_them_itself(
    fresh_database: URL, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "exporter.collectors")
    # An ACL of this database only: the shared server's other databases keep the default.
    execute(fresh_database, "REVOKE EXECUTE ON FUNCTION pg_control_system() FROM PUBLIC")
    with login_role(fresh_database) as as_role:
        databases = [
            entry("admin", fresh_database),
            entry("x", as_role),
            entry("y", as_role),
        ]
        async with running(databases) as runner:
            # Each unidentified entry is a server of its own: it reports, and says why once.
            await until(lambda: reporting(runner, "postmaster") == {"admin", "x", "y"})
            await some_checks()
            assert set(runner_metrics(runner, "postmaster")) == {"admin", "x", "y"}
            assert sorted(ownership_lines(caplog)) == [
                f"WARNING database {name}: its role may not call pg_control_system() here, so "
                "which server it is on is unknown: it runs the server-wide collectors itself, "
                "as if no other entry shared its server"
                for name in ("x", "y")
            ]
            # Granted: at their next check they find their server's first entry runs them.
            role = as_role.username
            execute(fresh_database, f"GRANT EXECUTE ON FUNCTION pg_control_system() TO {role}")
            await until(lambda: reporting(runner, "postmaster") == {"admin"})
            await until(lambda: set(runner_metrics(runner, "postmaster")) == {"admin"})
            execute(fresh_database, f"REVOKE EXECUTE ON FUNCTION pg_control_system() FROM {role}")
        assert sorted(ownership_lines(caplog)[2:]) == [
            f"INFO database {name}: server-wide collectors run by database admin (same server)"
            for name in ("x", "y")
        ]


async def test_an_entry_that_disables_one_leaves_it_to_the_next(
    database_url: URL, fresh_database: URL, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "exporter.collectors")
    without_postmaster = {**FAST, "postmaster": {"enabled": False}}
    databases = [
        entry("a", fresh_database, collectors=without_postmaster),
        entry("b", database_url),
    ]
    async with running(databases) as runner:
        await until(
            lambda: reporting(runner, "postmaster") == {"b"} and reporting(runner, "locks") == {"a"}
        )
        await some_checks()
        assert runner_metrics(runner, "postmaster") == {"b": 1}
        assert set(runner_metrics(runner, "locks")) == {"a"}
        assert reporting(runner, "database") == {"a", "b"}
    assert ownership_lines(caplog) == [
        "INFO database b: server-wide collectors locks run by database a (same server)"
    ]


async def test_two_entries_discovering_one_server_watch_its_databases_once(
    database_url: URL, fresh_database: URL
) -> None:
    listed = f"dbx_once_{uuid.uuid4().hex[:8]}"
    execute(database_url, f'CREATE DATABASE "{listed}"')
    try:
        discover = {"include": [listed], "interval_seconds": 0.2}
        databases = [
            entry("a", fresh_database, discover=discover),
            entry("b", database_url, discover=discover),
        ]
        async with running(databases) as runner:
            await until(lambda: f"a/{listed}" in runner.states())
            await some_checks()
            assert set(runner.states()) == {"a", "b", f"a/{listed}"}
            assert set(runner_metrics(runner, "discovery")) == {"a"}
    finally:
        execute(database_url, f'DROP DATABASE IF EXISTS "{listed}" WITH (FORCE)')


# --- who owns what, without a server -----------------------------------------------------------


@dataclass
class Entry:
    name: str
    server: Server | Unidentified | None = None
    answered: bool | None = None
    collectors: set[str] = field(default_factory=lambda: {"locks", "postmaster"})
    woken: int = 0

    def enables(self, collector: str) -> bool:
        return collector in self.collectors

    def wake(self) -> None:
        self.woken += 1


ONE = Server(1, datetime(2026, 1, 1, tzinfo=UTC))
REPLICA = Server(1, datetime(2026, 1, 2, tzinfo=UTC))


def owners(*entries: Entry) -> ServerWideOwners:
    found = ServerWideOwners()
    for e in entries:
        found.join(e)
    return found


def test_the_first_answering_entry_of_a_server_owns_each_collector() -> None:
    a, b, c = Entry("a", ONE, True), Entry("b", ONE, True), Entry("c", REPLICA, True)
    chosen = owners(a, b, c)
    assert [chosen.owner(s, "locks") for s in (ONE, REPLICA)] == ["a", "c"]
    a.collectors = {"postmaster"}  # disabled on a: the next entry enabling it runs it
    assert (chosen.owner(ONE, "locks"), chosen.owner(ONE, "postmaster")) == ("b", "a")
    a.answered = False
    assert chosen.owner(ONE, "postmaster") == "b"
    b.answered = False  # none answers: the first keeps it, and reports its failures
    assert chosen.owner(ONE, "postmaster") == "a"
    assert chosen.owner(Unidentified("b"), "locks") is None  # nobody is on it
    chosen.changed(a)
    assert (a.woken, b.woken, c.woken) == (0, 1, 1)


def test_nobody_owns_a_server_before_every_entry_before_it_was_checked() -> None:
    a, b = Entry("a"), Entry("b", ONE, True)
    chosen = owners(a, b)
    assert chosen.owner(ONE, "locks") is None  # a may be on the same server
    a.answered, a.server = False, None  # a never answered: it is on no known server
    assert chosen.owner(ONE, "locks") == "b"
    a.answered, a.server = True, ONE
    assert chosen.owner(ONE, "locks") == "a"

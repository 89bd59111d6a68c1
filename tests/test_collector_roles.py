"""The roles collector on a private server (its roles are exactly the ones the tests make and
the built-in ones): every role with its connection limit, the cap, and no grant needed."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from collector_helpers import by_label, execute, login_role, run_collector
from pg_cluster import private_cluster
from prometheus_client import CollectorRegistry
from sqlalchemy.engine import URL, make_url

from exporter.collectors.roles import RolesCollector
from exporter.settings import RolesCollectorSettings

LIMIT = "pg_roles_connection_limit"
OMITTED = "pg_roles_series_omitted"


@pytest.fixture(scope="module")
def server() -> Iterator[URL]:
    with private_cluster() as cluster:
        url = make_url(cluster.url)
        execute(
            url,
            "CREATE ROLE app LOGIN CONNECTION LIMIT 3",
            "CREATE ROLE zz_batch LOGIN CONNECTION LIMIT 1",  # last by name, but has a limit
            "CREATE ROLE reporting",  # a group role: no limit
        )
        yield url


def collector(**options: int) -> RolesCollector:
    return RolesCollector("main", RolesCollectorSettings(**options))


def limits(registry: CollectorRegistry) -> dict[str, float]:
    return by_label(registry, LIMIT, "rolname")


def every_role(url: URL) -> dict[str, float]:
    return dict(execute(url, "SELECT rolname, rolconnlimit FROM pg_roles"))


async def test_every_role_with_its_connection_limit(server: URL) -> None:
    registry = await run_collector(collector(), server)
    # Every row of pg_roles, the built-in pg_* roles included, as postgres_exporter lists them.
    assert limits(registry) == every_role(server)
    assert {"app": 3, "zz_batch": 1, "reporting": -1, "postgres": -1}.items() <= limits(
        registry
    ).items()
    assert limits(registry)["pg_monitor"] == -1
    assert registry.get_sample_value(OMITTED) == 0


async def test_the_cap_keeps_roles_with_a_limit_first_and_says_so_once(
    server: URL, caplog: pytest.LogCaptureFixture
) -> None:
    capped = collector(max_roles=2)
    total = len(every_role(server))
    with caplog.at_level(logging.INFO, logger="exporter.collectors"):
        first = await run_collector(capped, server)
        second = await run_collector(capped, server)
    for registry in (first, second):
        assert limits(registry) == {"app": 3, "zz_batch": 1}
        assert registry.get_sample_value(OMITTED) == total - 2
    assert [r.getMessage() for r in caplog.records] == [
        "collector roles on database main: more roles than max_roles (2): those without a "
        "connection limit come last, and the rest are counted in pg_roles_series_omitted"
    ]

    none = await run_collector(collector(max_roles=0), server)
    assert limits(none) == {}
    assert none.get_sample_value(OMITTED) == total


async def test_a_role_without_grants_reads_them_all(server: URL) -> None:
    with login_role(server) as url:
        registry = await run_collector(collector(), url)
        assert limits(registry) == every_role(server)
        assert url.username in limits(registry)

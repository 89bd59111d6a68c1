"""The statements collector: pg_stat_statements top-K, its versions, and when it is missing."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from collector_helpers import by_label, dsn, execute, run_collector, samples, until
from pg_cluster import PrivateCluster, private_cluster, with_library
from prometheus_client import CollectorRegistry
from served_pages import get, serving
from sqlalchemy.engine import URL, make_url

from exporter import Metrics
from exporter.collectors.statements import StatementsCollector, extension_version
from exporter.server import RUNNER
from exporter.settings import DatabaseSettings, StatementsCollectorSettings

LIBRARY = with_library("pg_stat_statements")
needs_library = pytest.mark.skipif(
    LIBRARY is None, reason="no PostgreSQL binaries here ship pg_stat_statements"
)
# A workload with a known order by total time: the sleep, then the series, then the count.
WORKLOAD = (
    "SELECT pg_sleep(0.05)",
    "SELECT pg_sleep(0.05)",
    "SELECT g FROM generate_series(1, 7) g",
    "SELECT g FROM generate_series(1, 7) g",
    "SELECT g FROM generate_series(1, 7) g",
    "SELECT count(*) FROM t",
)
# The view shows every database's statements: this database's only.
ENTRY = (
    "SELECT queryid::text, calls, {total}, rows, shared_blks_hit, shared_blks_read"
    " FROM pg_stat_statements WHERE query = '{query}'"
    " AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


def collector(**options: Any) -> StatementsCollector:
    return StatementsCollector("main", StatementsCollectorSettings(**options))


def database(cluster: PrivateCluster, name: str, *setup: str) -> URL:
    execute(make_url(cluster.url), f"CREATE DATABASE {name}")
    url = make_url(cluster.url).set(database=name)
    execute(url, *setup, "CREATE TABLE t (id int)", "INSERT INTO t VALUES (1), (2)", *WORKLOAD)
    return url


def entry(url: URL, query: str, total: str = "total_exec_time") -> Any:
    return execute(url, ENTRY.format(total=total, query=query.replace("'", "''")))[0]


def value(registry: CollectorRegistry, name: str, queryid: str) -> float | None:
    """The sample of one statement (run by one role, the test's)."""
    found = [v for labels, v in samples(registry, name) if labels["queryid"] == queryid]
    assert len(found) <= 1, found
    return found[0] if found else None


@needs_library
async def test_top_k_by_total_time_with_query_ids_only(statements_server: PrivateCluster) -> None:
    url = database(statements_server, "current", "CREATE EXTENSION pg_stat_statements")
    await run_collector(collector(top_k=1000), url)  # its own statements are seen once
    registry = await run_collector(collector(top_k=1000), url)
    everything = len(samples(registry, "pg_stat_statements_calls_total"))
    omitted = registry.get_sample_value("pg_stat_statements_series_omitted", {"datname": "main"})
    assert (everything > 5, omitted) == (True, 0)
    registry = await run_collector(collector(top_k=1), url)
    omitted = registry.get_sample_value("pg_stat_statements_series_omitted", {"datname": "main"})
    assert omitted == everything - 1

    sleep = entry(url, "SELECT pg_sleep($1)")
    calls = by_label(registry, "pg_stat_statements_calls_total", "queryid")
    assert calls == {sleep.queryid: 2}  # the most time, and only the top 1
    [(labels, _)] = samples(registry, "pg_stat_statements_calls_total")
    # Never the query text; the role that ran it.
    [(role,)] = execute(url, "SELECT current_user")
    assert labels == {"datname": "main", "queryid": sleep.queryid, "user": role}
    assert value(registry, "pg_stat_statements_block_read_seconds_total", sleep.queryid) == 0
    assert value(registry, "pg_stat_statements_rows_total", sleep.queryid) == 2
    seconds = value(registry, "pg_stat_statements_seconds_total", sleep.queryid)
    assert seconds == sleep.total_exec_time / 1000
    assert seconds is not None
    assert seconds >= 0.1
    assert value(registry, "pg_stat_statements_mean_seconds", sleep.queryid) == seconds / 2
    assert registry.get_sample_value("pg_stat_statements_available", {"datname": "main"}) == 1

    registry = await run_collector(collector(), url)
    series = entry(url, "SELECT g FROM generate_series($1, $2) g")
    assert value(registry, "pg_stat_statements_calls_total", series.queryid) == 3
    assert value(registry, "pg_stat_statements_rows_total", series.queryid) == 21
    count = entry(url, "SELECT count(*) FROM t")
    assert value(registry, "pg_stat_statements_calls_total", count.queryid) == 1
    hit = value(registry, "pg_stat_statements_shared_blks_hit_total", count.queryid)
    read = value(registry, "pg_stat_statements_shared_blks_read_total", count.queryid)
    assert (hit, read) == (count.shared_blks_hit, count.shared_blks_read)
    assert (hit or 0) + (read or 0) > 0


@needs_library
async def test_an_extension_older_than_1_8_uses_total_time(
    statements_server: PrivateCluster,
) -> None:
    url = database(statements_server, "old", "CREATE EXTENSION pg_stat_statements VERSION '1.7'")
    registry = await run_collector(collector(top_k=1), url)
    sleep = entry(url, "SELECT pg_sleep($1)", total="total_time")
    assert by_label(registry, "pg_stat_statements_calls_total", "queryid") == {sleep.queryid: 2}
    assert value(registry, "pg_stat_statements_seconds_total", sleep.queryid) == (
        sleep.total_time / 1000
    )


def test_extension_versions_compare_as_numbers() -> None:
    assert extension_version("1.10") > extension_version("1.8") > extension_version("1.7")
    assert extension_version("1.11dev") == (1, 0)


async def test_not_installed_succeeds_without_series_and_logs_once(
    fresh_database: URL, caplog: pytest.LogCaptureFixture
) -> None:
    statements = collector()
    with caplog.at_level(logging.INFO, logger="exporter.collectors"):
        registry = await run_collector(statements, fresh_database)
        await run_collector(statements, fresh_database)
    assert [r.getMessage() for r in caplog.records] == [
        "collector statements on database main: pg_stat_statements skipped: the extension is "
        "not installed in this database (CREATE EXTENSION pg_stat_statements)"
    ]
    assert [(f.name, len(f.samples)) for f in registry.collect()] == [
        ("pg_stat_statements_available", 1)
    ]
    assert registry.get_sample_value("pg_stat_statements_available", {"datname": "main"}) == 0


@needs_library
async def test_installed_but_not_preloaded_succeeds_without_series(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A server without shared_preload_libraries: the view exists but cannot be read.
    with private_cluster(bindir=LIBRARY) as bare:
        url = make_url(bare.url)
        execute(url, "CREATE EXTENSION pg_stat_statements")
        statements = collector()
        with caplog.at_level(logging.INFO, logger="exporter.collectors"):
            registry = await run_collector(statements, url)
            await run_collector(statements, url)
    assert [r.getMessage() for r in caplog.records] == [
        "collector statements on database main: pg_stat_statements skipped: its library is not "
        "loaded (add pg_stat_statements to shared_preload_libraries and restart the server)"
    ]
    assert registry.get_sample_value("pg_stat_statements_available", {"datname": "main"}) == 0
    assert samples(registry, "pg_stat_statements_calls_total") == []


# How often the collector read texts (this query's own text does not start so).
TEXTS_READ = (
    "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements"
    " WHERE query LIKE 'SELECT queryid::text AS queryid, min(left(query,%'"
    " AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


@needs_library
async def test_top_statements_keep_their_text_for_the_page(
    statements_server: PrivateCluster,
) -> None:
    url = database(
        statements_server, "texts", "CREATE EXTENSION pg_stat_statements",
        # The top two by far, whatever the machine's load: 0.5 s each.
        "SELECT 'secret-literal-4711' AS marker, pg_sleep(0.5)", "SELECT pg_sleep(0.4)",
    )  # fmt: skip
    statements = collector(top_k=2, query_text_max_length=40)  # the two sleeps
    await run_collector(statements, url)
    by_id = {s.queryid: s for s in statements.top}
    [(role,)] = execute(url, "SELECT current_user")
    assert {s.user for s in statements.top} == {role}  # each kept with the role that ran it
    sleep = entry(url, "SELECT pg_sleep($1)")
    assert by_id[sleep.queryid].text == "SELECT pg_sleep($1)"
    assert by_id[sleep.queryid].calls == 3
    assert len(statements.top) == 2  # top_k: the count bound
    assert all(len(s.text or "") <= 40 for s in statements.top)  # the length bound
    marker = next(s for s in statements.top if s.text and "marker" in s.text)
    assert "secret-literal" not in (marker.text or "")  # pg_stat_statements masks literals
    await run_collector(statements, url)  # the same top: no text read again
    assert execute(url, TEXTS_READ)[0][0] == 1

    none = collector(query_text_max_length=0)
    await run_collector(none, url)
    assert none.top
    assert all(s.text is None for s in none.top)


async def test_no_top_statements_when_not_installed(fresh_database: URL) -> None:
    statements = collector()
    await run_collector(statements, fresh_database)
    assert statements.top == ()


@needs_library
async def test_a_queryid_on_a_dashboard_leads_to_its_sql_on_the_page(
    statements_server: PrivateCluster,
) -> None:
    url = database(statements_server, "page", "CREATE EXTENSION pg_stat_statements")
    sleep = entry(url, "SELECT pg_sleep($1)")
    settings = DatabaseSettings(name="main", dsn=dsn(url))
    metrics = Metrics(CollectorRegistry())
    async with serving(metrics=metrics, databases=[settings]) as exporter:
        runner = exporter._app[RUNNER]
        await until(lambda: bool(runner.store.runs("statements")), "the statements collector ran")
        _, page = await get(f"{exporter.url}/")
    row = page[page.index(f'<tr id="queryid-{sleep.queryid}">') :]
    row = row[: row.index("</tr>")]
    assert "SELECT pg_sleep($1)" in row
    assert "<td>2</td>" in row  # calls

"""The on-call page `/`: what an on-call engineer sees, as headless Chromium renders it, against
a real PostgreSQL; bad records, bad parameters, basic auth and TLS over real HTTP."""

from __future__ import annotations

import asyncio
import html
import http.client
import re
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

import aiohttp
import pytest
import source_lines
from alembic.script import ScriptDirectory
from basic_auth import basic_auth, bcrypt_hash
from browser import artifact, needs_chromium, rendered_dom, screenshot, visible_text
from certs import Certs
from collector_helpers import dsn, execute, run_collector, until
from hypothesis import given, settings
from hypothesis import strategies as st
from mounted import SIDES, exporter_on, runner_of
from pg_cluster import PrivateCluster
from prometheus_client import CollectorRegistry
from served_pages import get, serving
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import TimeoutError as PoolTimeout
from test_webconfig import _client_context, _tls_block

from exporter import Metrics, instrument, uninstrument
from exporter.collectors import COLLECTORS
from exporter.collectors.exposition import SnapshotStore
from exporter.collectors.indexes import IndexesCollector
from exporter.demo.schema import SCRIPT_LOCATION
from exporter.dsn import sync_url
from exporter.oncall.indexes import IndexesToFix
from exporter.oncall.markup import ms
from exporter.oncall.recent import EVERY_SECONDS, KEPT, WINDOW_SECONDS, PoolHistory, PoolTotals
from exporter.oncall.records import Reader, Window
from exporter.settings import (
    CollectorsSettings,
    CustomQuerySettings,
    DatabaseSettings,
    ElectionSettings,
    IndexesCollectorSettings,
    MigrationsCollectorSettings,
    PageSettings,
    SlowQuerySettings,
    StatementsCollectorSettings,
)
from exporter.slowlog import SlowQueryLog
from exporter.slowlog.context import context
from exporter.webconfig import load_web_config

SCRIPT = "</code><script>document.title='pwned'</script>"
QUOTED_ROUTE = "/say \"hi\" & 'bye' <b>"
GRAFANA = "https://grafana.example.com"
SCRIPTS = str(SCRIPT_LOCATION)


def slow_log(**settings: Any) -> SlowQueryLog:
    settings.setdefault("stdout", False)
    return SlowQueryLog(SlowQuerySettings(**settings), Metrics(CollectorRegistry()))


async def answer(log: SlowQueryLog, query: str = "", side: str = "sidecar") -> tuple[int, str]:
    """`GET /?query` from an exporter serving `log`."""
    async with serving(log, side) as exporter:
        return await get(f"{exporter.url}/?{query}")


def record(**fields: Any) -> dict[str, Any]:
    """A record as the slow-query log keeps it, now."""
    base = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S.000+00:00", time.gmtime()),
        "kind": "slow_query", "database": "main", "duration_ms": 150.0, "status": "ok",
        "operation": "SELECT", "table": "t", "fingerprint": "0123456789abcdef",
        "sql": "SELECT * FROM t WHERE id = $1",
        "call_site": {"file": "app/views.py", "line": 12, "function": "show", "url": None},
        "parameters": [], "context": {"route": "/t/{id}"},
    }  # fmt: skip
    return base | fields


def keep(log: SlowQueryLog, *records: Any) -> None:
    """Records in the ring as they would arrive (another process's, an older version's)."""
    for r in records:
        log.ring.append(r, 1000)


# -- the page as rendered ------------------------------------------------------------------

SETUP = (
    "CREATE TABLE accounts (id int PRIMARY KEY, owner text)",
    "INSERT INTO accounts SELECT g, 'owner ' || g FROM generate_series(1, 5000) g",
    "CREATE INDEX ix_accounts_owner ON accounts (owner)",
    "CREATE INDEX ix_accounts_owner_copy ON accounts (owner)",
    "CREATE TABLE dupes (v int)",
    "INSERT INTO dupes VALUES (1), (1)",
    "ANALYZE",
)


def _invalid_index(url: URL) -> None:
    """A failed CREATE UNIQUE INDEX CONCURRENTLY leaves an invalid index behind."""
    with pytest.raises(Exception, match="could not create unique index"):
        execute(url, "CREATE UNIQUE INDEX CONCURRENTLY ix_dupes_v ON dupes (v)")


@needs_chromium
@pytest.mark.parametrize("side", SIDES)
async def test_the_page_from_health_to_the_index_to_fix(fresh_database: URL, side: str) -> None:
    execute(fresh_database, *SETUP)
    _invalid_index(fresh_database)
    log = slow_log(threshold_ms=100)
    metrics = Metrics(CollectorRegistry())
    engine = create_engine(sync_url(fresh_database), pool_size=5, max_overflow=10)
    instrument(engine, database="main", metrics=metrics, slow_log=log)
    indexes = IndexesCollectorSettings(unused_min_size_bytes=0)
    collectors = CollectorsSettings(indexes=indexes, statements=StatementsCollectorSettings())
    databases = [
        DatabaseSettings(name="main", dsn=dsn(fresh_database), collectors=collectors),
        DatabaseSettings(name="gone", dsn="postgresql://postgres@127.0.0.1:1/x"),
    ]
    page_settings = PageSettings(grafana_url=GRAFANA)
    served = serving(log, side, metrics=metrics, databases=databases, page=page_settings)
    async with served as exporter:
        try:
            with engine.connect() as conn, context(route=QUOTED_ROUTE):
                conn.execute(text(f'SELECT pg_sleep(0.12), count(*) AS "{SCRIPT}" FROM accounts'))
            with engine.connect() as conn, context(route="/accounts/{id}"):
                for i in range(10):
                    conn.execute(text("SELECT owner FROM accounts WHERE id = :id"), {"id": i})
            log.flush()
            runner = runner_of(exporter)
            enabled = [name for name in COLLECTORS if getattr(collectors, name).enabled]
            await until(
                lambda: all(runner.store.runs(name) for name in enabled), "every collector ran"
            )
            await until(lambda: runner.states()["gone"].ok is False, "the check of 'gone' failed")
            dom = await asyncio.to_thread(rendered_dom, f"{exporter.url}/?window=15m")
            _, served = await get(f"{exporter.url}/?window=15m")
            artifact(f"oncall-page-{side}.html").write_text(served)  # to look at offline
            for width in (1400, 390):
                name = f"oncall-page-{side}-{width}.png"
                await asyncio.to_thread(screenshot, f"{exporter.url}/?window=15m", name, width)
        finally:
            uninstrument(engine)
            engine.dispose()
            log.close()
    page = visible_text(dom)
    assert "<title>db-exporter: on call</title>" in dom  # the statement's script never ran
    assert page.index("Health") < page.index("Slow statements") < page.index("N+1")
    assert page.index("N+1") < page.index("Indexes") < page.index("Top statements")

    # The health strip: each database, up or down with the reason, the pool, the collectors.
    assert re.search(r"gone database down\s*: ConnectionRefusedError", page), page[:2000]
    assert "main database up" in page
    assert "pool 0 of 5 in use, overflow 0 of 10" in page
    assert re.search(
        r"checkouts 2 checkouts (since start|in the last \d+ s): \d waited over 100 ms, 0 timed",
        page,
    )
    assert "collectors not running while the database is down" in page
    assert f"collectors {len(enabled)} ok detail" in page
    runbook = "https://github.com/db-exporter/db-exporter/blob/main/docs/runbooks.md"
    assert f'href="{runbook}#dbexporterdatabasedown"' in dom
    assert f'href="{GRAFANA}/d/db-exporter-pool?var-database=main"' in dom

    # The slow statement: its fingerprint, figures, SQL (markup as text), plan, call site.
    [fingerprint] = {a["fingerprint"] for a in log.aggregates.ranked() if "pg_sleep" in a["sql"]}
    assert fingerprint in page
    assert f'SELECT pg_sleep($1), count(*) AS "{SCRIPT}" FROM accounts' in page
    assert re.search(rf"{fingerprint} main SELECT accounts 1 1[2-9]\d\.\d", page)
    assert "Seq Scan on accounts" in page
    assert "sequential scan of accounts (~5000 rows)" in page  # the finding, called out
    assert f"{source_lines.shown_path(__file__)}:" in page
    assert f"route={QUOTED_ROUTE}" in page
    assert "<svg" in dom
    assert "slowest run per slice" in dom

    # N+1: one request, ten repeats, its route and call site.
    assert re.search(r"N\+1 .* 1 10 [0-9a-f]{16} main SELECT accounts", page)
    assert "/accounts/{id}" in page

    # Indexes: the suggested fixes, quoted, never run.
    assert 'REINDEX INDEX CONCURRENTLY "public"."ix_dupes_v";' in page
    assert "duplicate of ix_accounts_owner DROP" not in page
    assert "duplicate of ix_accounts_owner" in page
    assert 'DROP INDEX CONCURRENTLY "public"."ix_accounts_owner_copy";' in page
    assert 'DROP INDEX CONCURRENTLY "public"."ix_accounts_owner";' in page  # unused
    assert "accounts_pkey" not in page
    still_there = execute(
        fresh_database, "SELECT count(*) FROM pg_indexes WHERE tablename = 'accounts'"
    )
    assert still_there[0][0] == 3

    # pg_stat_statements is not installed in this database: said so, no error.
    assert "pg_stat_statements is not readable yet." in page


@needs_chromium
@pytest.mark.parametrize("side", SIDES)
async def test_every_link_of_the_page_leads_below_where_it_is_served(side: str) -> None:
    """The page's links to the exporter's own endpoints, and its form, resolve (as Chromium
    resolves them) below the prefix the page is served at and answer there; its anchors name
    elements of the page."""
    log = slow_log()
    keep(log, record(), record(kind="n_plus_one", repeats=10))
    log.aggregates.add(record(), 1000)
    async with serving(log, side) as exporter:
        page = f"{exporter.url}/"
        dom = await asyncio.to_thread(rendered_dom, page)
        links = [html.unescape(link) for link in re.findall(r'(?:href|src|action)="([^"]*)"', dom)]
        own = [urljoin(page, link) for link in links if not link.startswith(("#", "https://"))]
        assert sorted(own) == sorted(f"{exporter.url}/{path}" for path in OWN_LINKS), links
        for url in own:
            status, _ = await get(url)
            assert status == 200, url
        for anchor in (link[1:] for link in links if link.startswith("#")):
            assert f'id="{anchor}"' in dom, anchor
        # The prefix without its slash leads to the page, where the relative links work.
        async with aiohttp.ClientSession() as session, session.get(exporter.url) as response:
            assert (response.status, response.url.path) == (200, urlsplit(page).path)


OWN_LINKS = ["", "metrics", "slow-queries", "readyz"]  # the form's action, then the nav


# -- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize("side", SIDES)
async def test_records_of_any_shape_are_shown_never_a_500(side: str) -> None:
    log = slow_log(ring_buffer_max_bytes=64 * 1024 * 1024)
    huge = "SELECT " + "x, " * (10 * 1024 * 1024 // 3) + "1"  # 10 MB of SQL
    markup = "<img src=x onerror=alert(1)>"
    keep(
        log,
        {},  # nothing at all
        {"kind": "slow_query", "duration_ms": "slow", "time": "yesterday", "call_site": "here"},
        {"fingerprint": ["not", "text"], "database": {"a": 1}, "duration_ms": float("nan")},
        "a line that is not a record",
        ["a", "list"],
        # an older version's record: no kind, status, table or call site
        {"time": record()["time"], "database": "main", "duration_ms": 120.0,
         "fingerprint": "00000000000000aa", "sql": "SELECT 1"},
        record(sql=huge, fingerprint="00000000000000bb", duration_ms=900.0),
        record(database=markup, fingerprint="00000000000000cc", duration_ms=800.0, pid=4242,
               call_site={"file": "app/x.py", "line": 1, "function": "f",
                          "url": "javascript:alert(1)"}),
        # times at the ends of what ISO 8601 can say, beyond the years a clock shows
        record(time="0001-01-01T00:00:00+14:00", fingerprint="00000000000000dd"),
        record(time="9999-12-31T23:59:59-14:00", fingerprint="00000000000000ee"),
        record(kind="n_plus_one", repeats="many", call_site=None, context="none"),
        record(kind="n_plus_one", repeats=12, context={"route": 5}),
    )  # fmt: skip
    metrics = Metrics(CollectorRegistry())
    metrics.pool_timeouts.labels(markup).inc()  # an application's database named so
    async with serving(log, side, metrics=metrics) as exporter:
        status, page = await get(f"{exporter.url}/?window=all")
    assert status == 200
    assert "<h3>&lt;img src=x onerror=alert(1)&gt;</h3>" in page  # its health card
    assert markup not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert 'href="javascript:' not in page
    assert "app/x.py:1" in page
    assert "Worker pid</dt><dd>4242" in page
    assert "00000000000000aa" in page
    assert "00000000000000dd" in page
    assert "10000-01-01 13:59:59" in page  # last seen, as the record says
    assert "SELECT 1" in page
    assert f"...[cut: {len(huge):,}".replace(",", "") in page.replace(",", "")
    assert len(page) < 1024 * 1024  # 10 MB of SQL is cut for the page
    assert page.count("<tr") >= 3


async def test_a_plan_the_page_cannot_read_is_shown_raw() -> None:
    log = slow_log()
    slow = record(duration_ms=300.0)
    keep(log, slow)
    log.aggregates.add(slow, 1000)
    broken = [{"Plan": {"Node Type": "Seq Scan", "Plan Rows": "</pre><b>many</b>"}}]
    log.aggregates.set_plan("main", slow["fingerprint"], broken, "Seq Scan")
    status, page = await answer(log)
    assert status == 200
    assert "This plan could not be read (not EXPLAIN (FORMAT JSON) output" in page
    assert "&lt;/pre&gt;&lt;b&gt;many&lt;/b&gt;" in page
    assert "<b>many</b>" not in page


async def test_an_empty_log_and_no_database() -> None:
    status, page = await answer(slow_log())
    assert status == 200
    assert "No slow statements in this window." in page
    assert "No N+1 warnings in this window." in page
    assert "The indexes collector has not run yet in this exporter." in page
    assert "No database is configured for this exporter" in page


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("window=forever", "window must be all or a duration from 1m to 30d"),
        ("window=30s", "window must be all or a duration from 1m to 30d"),
        ("window=31d", "window must be all or a duration from 1m to 30d"),
        ("window=%EF%BC%91h", "window must be all or a duration"),  # a full-width digit
        ("refresh=1", "refresh must be a whole number from 5 to 3600"),
        ("refresh=99999999999999999999", "refresh must be a whole number from 5 to 3600"),
        ("refresh=-5", "refresh must be a whole number from 5 to 3600"),
    ],
)
@pytest.mark.parametrize("side", SIDES)
async def test_bad_parameters_are_a_400_naming_them(query: str, message: str, side: str) -> None:
    status, body = await answer(slow_log(), query, side)
    assert (status, body.count("\n")) == (400, 1)
    assert body.startswith(message)


@pytest.mark.parametrize("side", SIDES)
async def test_refresh_and_window_are_kept_in_the_page(side: str) -> None:
    status, page = await answer(slow_log(), "window=90m&refresh=30", side)
    assert status == 200
    assert '<meta http-equiv="refresh" content="30">' in page
    assert '<option value="90m" selected>' in page
    assert "last 90m" in page
    status, page = await answer(slow_log(), "refresh=", side)
    assert (status, "http-equiv" in page) == (200, False)


# -- basic auth and TLS --------------------------------------------------------------------


async def test_the_page_behind_basic_auth_and_tls(tmp_path: Path, certs: Certs) -> None:
    config = tmp_path / "web.yml"
    config.write_text(
        _tls_block(certs) + f"basic_auth_users:\n  oncall: '{bcrypt_hash('s3cret')}'\n"
    )
    log = slow_log()
    keep(log, record())
    async with serving(log, web_config=load_web_config(config)) as exporter:
        assert exporter.url.startswith("https://")
        tls = _client_context(certs)
        refused, _ = await get(f"{exporter.url}/", ssl=tls)
        status, page = await get(
            f"{exporter.url}/", ssl=tls, headers=basic_auth("oncall", "s3cret")
        )
    assert refused == 401
    assert status == 200
    assert "0123456789abcdef" in page


@pytest.mark.parametrize("side", SIDES)
def test_fuzzed_query_parameters_never_a_500(side: str) -> None:
    log = slow_log()
    keep(log, record(), record(kind="n_plus_one", repeats=10))
    exporter = exporter_on(side, slow_log=log)
    exporter.start_in_thread()
    page = urlsplit(exporter.url).path + "/"
    names = st.sampled_from(["window", "refresh", "window[]", "", "x"])
    values = st.one_of(
        st.text(max_size=40),
        st.from_regex(r"[0-9]{1,12}[smhdy]?", fullmatch=True),
        st.sampled_from(["all", "1m", "30d", "5", "3600", "0", "", "1h "]),
    )

    @settings(max_examples=150, deadline=None)
    @given(st.lists(st.tuples(names, values), max_size=4))
    def check(pairs: list[tuple[str, str]]) -> None:
        connection = http.client.HTTPConnection(exporter.host, exporter.port, timeout=30)
        try:
            connection.request("GET", page + "?" + urlencode(pairs))
            response = connection.getresponse()
            body = response.read().decode()
        finally:
            connection.close()
        assert response.status in (200, 400), (pairs, response.status, body[:300])
        if response.status == 400:
            assert body.startswith(("window must be", "refresh must be"))
            assert body.count("\n") == 1

    try:
        check()
    finally:
        exporter.stop_in_thread()


# -- the health strip ----------------------------------------------------------------------


async def test_health_shows_a_saturated_pool_its_timeouts_a_failing_collector_and_migrations(
    fresh_database: URL,
) -> None:
    metrics = Metrics(CollectorRegistry())
    engine = create_engine(sync_url(fresh_database), pool_size=1, max_overflow=0, pool_timeout=0.2)
    instrument(engine, database="main", metrics=metrics)
    broken = CustomQuerySettings(
        name="app_widgets", help="Widgets.", sql="SELECT count(*) AS n FROM no_such_table",
        values=("n",),
    )  # fmt: skip
    migrations = MigrationsCollectorSettings(enabled=True, script_location=SCRIPTS)
    database = DatabaseSettings(
        name="main",
        dsn=dsn(fresh_database),
        collectors=CollectorsSettings(migrations=migrations),
        custom_queries=(broken,),
        election=ElectionSettings(enabled=False),
    )
    async with serving(slow_log(), metrics=metrics, databases=[database]) as exporter:
        runner = runner_of(exporter)
        await until(lambda: bool(runner.store.runs("migrations")), "the migrations collector ran")
        await until(
            lambda: any(j.failure for w in runner.workers for j in w.jobs),
            "the custom query failed",
        )
        with engine.connect():  # the pool's only connection, held
            with pytest.raises(PoolTimeout), engine.connect():
                pass
            status, page = await get(f"{exporter.url}/")
    uninstrument(engine)
    engine.dispose()
    assert status == 200
    text_ = visible_text(page)
    assert "pool 1 of 1 in use, overflow 0 of 0" in text_
    assert re.search(r"checkouts 2 checkouts [^:]+: \d waited over 100 ms, 1 timed out", text_)
    assert re.search(r"collectors 1 failing : custom:app_widgets", text_)
    assert "UndefinedTableError" in text_  # the reason, in the collectors' detail
    revisions = len(list(ScriptDirectory(SCRIPTS).walk_revisions()))
    assert f"migrations {revisions} pending, drift not compared" in text_
    assert '<li class="bad"><span class="what">pool</span>' in page
    assert "#dbexportermigrationspending" in page
    assert "#dbexportercollectorfailing" in page


def test_pool_history_counts_the_last_minutes_only(metrics: Metrics) -> None:
    now = [1000.0]
    history = PoolHistory(metrics, clock=lambda: now[0])
    assert history.recent() == (0.0, {})
    metrics.pool_timeouts.labels("main").inc(3)  # before the first sample: since start
    assert history.recent()[1]["main"].timeouts == 3
    history.sample()
    for _ in range(3):
        now[0] += EVERY_SECONDS
        metrics.pool_timeouts.labels("main").inc()
        metrics.pool_checkout_wait.labels("main").observe(0.5)
        metrics.pool_checkout_wait.labels("main").observe(0.01)
        history.sample()
    span, recent = history.recent()
    assert (span, recent["main"]) == (3 * EVERY_SECONDS, PoolTotals(6, 3, 3))
    now[0] += WINDOW_SECONDS  # the first samples leave the window
    span, recent = history.recent()
    assert span <= WINDOW_SECONDS
    assert recent["main"] == PoolTotals(0, 0, 0)
    for _ in range(10 * KEPT):
        history.sample()
    assert len(history._samples) == KEPT


# -- indexes to fix ------------------------------------------------------------------------


async def test_suggested_fixes_quote_any_name_and_work_when_run(fresh_database: URL) -> None:
    execute(
        fresh_database,
        'CREATE SCHEMA "My Schema"',
        'CREATE TABLE "My Schema"."Odd Table" (v int)',
        'CREATE INDEX "Odd ""Name"" ix" ON "My Schema"."Odd Table" (v)',
        'CREATE INDEX "odd_copy" ON "My Schema"."Odd Table" (v)',
    )
    store = SnapshotStore()
    indexes = IndexesCollector("main", IndexesCollectorSettings(unused_min_size_bytes=0))
    registry = await run_collector(indexes, fresh_database)
    store.put("main", "indexes", list(registry.collect()))
    fixes = {i.index: i for i in IndexesToFix(store).get()}
    assert set(fixes) == {'Odd "Name" ix', "odd_copy"}
    assert fixes["odd_copy"].problem == 'duplicate of Odd "Name" ix'
    assert fixes['Odd "Name" ix'].fix == ('DROP INDEX CONCURRENTLY "My Schema"."Odd ""Name"" ix";')
    assert fixes['Odd "Name" ix'].stats_age_seconds is not None
    for fix in fixes.values():  # what the page suggests is valid SQL that does what it says
        execute(fresh_database, fix.fix)
    left = execute(fresh_database, "SELECT count(*) FROM pg_indexes WHERE schemaname = 'My Schema'")
    assert left[0][0] == 0


# -- top statements ------------------------------------------------------------------------

SLEEP_ENTRIES = (
    "SELECT queryid::text, calls, total_exec_time FROM pg_stat_statements"
    " WHERE query = 'SELECT pg_sleep($1)'"
    " AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


async def test_a_statement_two_roles_run_is_one_top_row_naming_both(
    statements_server: PrivateCluster,
) -> None:
    server = make_url(statements_server.url)
    name = f"dbx_{uuid.uuid4().hex[:12]}"
    execute(server, f'CREATE DATABASE "{name}"')
    url = server.set(database=name)
    roles = sorted(f"dbx_top_{uuid.uuid4().hex[:8]}" for _ in range(2))
    execute(url, "CREATE EXTENSION pg_stat_statements", *(f"CREATE ROLE {r} LOGIN" for r in roles))
    for role in roles:
        execute(url.set(username=role), "SELECT pg_sleep(0.01)", "SELECT pg_sleep(0.02)")
    entries = execute(url, SLEEP_ENTRIES)
    [queryid] = {e.queryid for e in entries}
    assert len(entries) == 2  # one queryid, an entry (and a series) per role
    collectors = CollectorsSettings(statements=StatementsCollectorSettings())
    settings = DatabaseSettings(name="main", dsn=dsn(url), collectors=collectors)
    async with serving(metrics=Metrics(CollectorRegistry()), databases=[settings]) as exporter:
        runner = runner_of(exporter)
        await until(lambda: bool(runner.store.runs("statements")), "the statements collector ran")
        _, page = await get(f"{exporter.url}/")
    opening = f'<tr id="queryid-{queryid}">'
    assert page.count(opening) == 1
    row = page[page.index(opening) :]
    row = row[: row.index("</tr>")]
    assert f"<td><code>{roles[0]}</code>, <code>{roles[1]}</code></td>" in row
    assert "<td>4</td>" in row  # calls: two per role, summed
    assert f"<td>{ms(sum(e.total_exec_time for e in entries))}</td>" in row


def test_a_page_rendered_again_reads_only_new_records_and_ranks_the_same() -> None:
    log = slow_log(ring_buffer_size=50)
    reader = Reader()

    def ranked(window: Window) -> list[tuple[str, int, float]]:
        return [(s.fingerprint, s.count, s.total_ms) for s in window.statements(100)]

    for step in range(7):  # the ring fills, then forgets its oldest as new records arrive
        batch = [record(fingerprint=f"{n % 7:016x}", duration_ms=100.0 + step) for n in range(20)]
        keep(log, *batch, "not a record")
        before = {id(r.record): r for r in reader._reads if r is not None}
        records = log.ring.snapshot()
        again = reader.gather(records, None)
        fresh = Reader().gather(records, None)
        assert ranked(again) == ranked(fresh)
        assert (again.slow_records, again.unreadable) == (fresh.slow_records, fresh.unreadable)
        reused = [r for r in reader._reads if r is not None and before.get(id(r.record)) is r]
        held = sum(isinstance(r, dict) for r in records[: -len(batch) - 1])
        assert len(reused) == held  # every record still held was not read again
    assert len(reader._reads) == len(log.ring.snapshot()) == 50  # no more than the ring holds

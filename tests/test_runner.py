"""The collector runner: schedules, timeouts, isolation, recovery, and what `/metrics` serves."""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import uuid
import zlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar

import pytest
from aiohttp.test_utils import TestClient
from collector_helpers import (
    dsn,
    execute,
    gunzip_one_member,
    held_in_transaction,
    names,
    until,
    wait_for,
    worker_for,
)
from mounted import SIDES, raw_client
from pg_cluster import private_cluster
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from exporter import Metrics, create_app, instrument, uninstrument
from exporter.collectors import COLLECTORS, DEFAULT_ENABLED, Collector
from exporter.collectors import runner as runner_module
from exporter.collectors.exposition import BareCounter, SnapshotStore, render
from exporter.collectors.indexes import IndexesCollector
from exporter.collectors.locks import LocksCollector
from exporter.collectors.postmaster import PostmasterCollector
from exporter.collectors.runner import (
    CollectorRunner,
    DatabaseWorker,
    UnsupportedServerError,
    check_server_version,
)
from exporter.dsn import async_url
from exporter.gzip_parts import Deflated
from exporter.settings import (
    CollectorSettings,
    CollectorsSettings,
    Compatibility,
    ConfigError,
    DatabaseSettings,
    IndexesCollectorSettings,
    settings_from_data,
)

Client = Callable[..., Awaitable[TestClient[Any, Any]]]
EXPORTER_CONNECTIONS = (
    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'db-exporter'"
)
# This test process's election lock key: another exporter or test run elsewhere on the same
# server database (the shared `test` one) never makes these tests' exporters followers.
LOCK_KEY = random.randrange(-(2**63), 2**63)


class Constant(Collector[CollectorSettings]):
    """Asks the database for a number: a collector that succeeds whenever the database works."""

    name = "constant"
    default_settings: ClassVar[CollectorSettings] = CollectorSettings(interval_seconds=0.2)

    async def collect(self, conn: AsyncConnection, server_version: int) -> Sequence[Metric]:
        family = GaugeMetricFamily("test_constant", "A constant.", labels=["datname"])
        family.add_metric([self.datname], (await conn.execute(text("SELECT 42"))).scalar_one())
        return [family]


class Broken(Collector[CollectorSettings]):
    name = "broken"
    default_settings: ClassVar[CollectorSettings] = CollectorSettings(interval_seconds=0.2)

    async def collect(self, conn: AsyncConnection, server_version: int) -> Sequence[Metric]:
        raise RuntimeError("a bug in the collector")


class Flaky(Collector[CollectorSettings]):
    """Fails until told otherwise."""

    name = "flaky"
    default_settings: ClassVar[CollectorSettings] = CollectorSettings()
    failing = True

    async def collect(self, conn: AsyncConnection, server_version: int) -> Sequence[Metric]:
        if self.failing:
            raise RuntimeError("failing for now")
        return []


class Sleepy(Collector[CollectorSettings]):
    name = "sleepy"
    default_settings: ClassVar[CollectorSettings] = CollectorSettings(timeout_seconds=0.3)

    async def collect(self, conn: AsyncConnection, server_version: int) -> Sequence[Metric]:
        await conn.execute(text("SELECT pg_sleep(5)"))
        return []


def database(name: str, url: URL | str, **extra: Any) -> DatabaseSettings:
    extra.setdefault("check_interval_seconds", 0.2)
    extra.setdefault("election", {"lock_key": LOCK_KEY})
    return DatabaseSettings(name=name, dsn=url if isinstance(url, str) else dsn(url), **extra)


def value(metrics: Metrics, name: str, labels: dict[str, str]) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def status(metrics: Metrics, collector: str, database: str = "main") -> tuple[Any, ...]:
    labels = {"collector": collector, "database": database}
    return (
        value(metrics, "exporter_collector_success", labels),
        value(metrics, "exporter_collector_last_success_timestamp_seconds", labels),
    )


# --- configuration and registry -------------------------------------------------------------


def test_registry_and_settings_name_the_same_collectors() -> None:
    assert set(COLLECTORS) == set(CollectorsSettings.model_fields)
    assert DEFAULT_ENABLED == {
        "indexes": True,
        "tables": True,
        "statio_user_tables": True,
        "database": True,
        "activity": True,
        "statements": True,
        "migrations": False,
        "replication": True,
        "replication_slot": True,
        "stat_wal_receiver": True,
        "stat_bgwriter": True,
        "stat_checkpointer": True,
        "wal": True,
        "archiver": True,
        "backups": False,
        "settings": True,
        "postmaster": True,
        "database_wraparound": True,
        "locks": True,
        "long_running_transactions": True,
        "stat_activity_autovacuum": True,
        "roles": True,
        "server_activity": True,
        "stat_database_conflicts": True,
    }


def test_unknown_collector_name_is_one_clear_line() -> None:
    data = {
        "databases": [{"name": "main", "dsn": "postgresql://db/app", "collectors": {"indxes": {}}}]
    }
    with pytest.raises(ConfigError) as error:
        settings_from_data(data, "exporter.yaml")
    assert str(error.value) == (
        "exporter.yaml: databases[0].collectors: unknown collector 'indxes' "
        "(known: indexes, tables, statio_user_tables, database, activity, statements, "
        "migrations, replication, replication_slot, stat_wal_receiver, stat_bgwriter, "
        "stat_checkpointer, wal, archiver, backups, settings, postmaster, database_wraparound, "
        "locks, long_running_transactions, stat_activity_autovacuum, roles, server_activity, "
        "stat_database_conflicts)"
    )


def test_unknown_collector_option_names_its_path() -> None:
    data = {
        "databases": [
            {"name": "main", "dsn": "postgresql://db/app", "collectors": {"indexes": {"cap": 1}}}
        ]
    }
    with pytest.raises(ConfigError) as error:
        settings_from_data(data, "exporter.yaml")
    assert str(error.value) == "exporter.yaml: databases[0].collectors.indexes.cap: unknown key"


def test_collector_options_are_typed() -> None:
    data = {
        "databases": [
            {
                "name": "main",
                "dsn": "postgresql://db/app",
                "collectors": {"indexes": {"enabled": False, "max_index_series": 10}},
            }
        ]
    }
    indexes = settings_from_data(data, "x").databases[0].collectors.indexes
    assert (indexes.enabled, indexes.max_index_series, indexes.interval_seconds) == (False, 10, 60)


# --- pre-rendered exposition ----------------------------------------------------------------


def families() -> list[Metric]:
    counter = CounterMetricFamily("test_things", "Things.\nWith a \\ backslash.", labels=["a", "b"])
    counter.add_metric(["x", 'quote " newline \n backslash \\'], 3)
    counter.add_metric(["y", "z"], 1e21)
    gauge = GaugeMetricFamily("test_level", "A level.", labels=["b", "a"])
    gauge.add_metric(["1", "2"], float("nan"))
    gauge.add_metric(["3", "4"], -0.5)
    plain = GaugeMetricFamily("test_plain", "No labels.", value=float("inf"))
    return [counter, gauge, plain]


class _Fixed:
    def __init__(self, fams: list[Metric]) -> None:
        self.fams = fams

    def collect(self) -> list[Metric]:
        return self.fams


def test_prerendered_text_is_exactly_what_prometheus_client_prints() -> None:
    registry = CollectorRegistry()
    registry.register(_Fixed(families()))  # type: ignore[arg-type]
    rendered = [render(f) for f in families()]
    text_format = "".join(f.header(False) + f.body.decode() for f in rendered)
    openmetrics = "".join(f.header(True) + f.body.decode() for f in rendered) + "# EOF\n"
    assert text_format.encode() == generate_latest(registry)
    assert openmetrics.encode() == generate_openmetrics(registry)


def test_store_merges_databases_under_one_header_and_withdraws_them() -> None:
    store = SnapshotStore()
    for db in ("a", "b"):
        gauge = GaugeMetricFamily("test_level", "A level.", labels=["datname"])
        gauge.add_metric([f"real_{db}"], 1)
        store.put(db, "levels", [gauge])
    body = store.exposition(openmetrics=False).decode()
    # Every sample carries the database's logical name beside the real one.
    assert body == (
        "# HELP test_level A level.\n# TYPE test_level gauge\n"
        'test_level{database="a",datname="real_a"} 1.0\n'
        'test_level{database="b",datname="real_b"} 1.0\n'
    )
    registry = CollectorRegistry()
    registry.register(store)
    assert registry.get_sample_value("test_level", {"database": "b", "datname": "real_b"}) == 1
    store.drop("a")
    assert registry.get_sample_value("test_level", {"database": "a", "datname": "real_a"}) is None
    assert 'database="a"' not in store.exposition(openmetrics=False).decode()
    assert store.ran("levels")
    store.drop("b")
    assert not store.ran("levels")


def test_store_keeps_a_database_label_the_collector_set() -> None:
    store = SnapshotStore()
    slots = GaugeMetricFamily("test_slot_active", "A slot.", labels=["slot_name", "database"])
    slots.add_metric(["s1", "billing"], 1)
    store.put("main", "slots", [slots])
    assert 'test_slot_active{database="billing",slot_name="s1"} 1.0' in (
        store.exposition(openmetrics=False).decode()
    )


def test_store_gives_back_exactly_the_families_it_was_given_labelled() -> None:
    store = SnapshotStore()
    store.put("a", "fixed", families())
    bare = BareCounter("test_bare", "No _total.", "counter", unit="bytes")
    bare.add_sample("test_bare", {"datname": "d"}, 7)
    store.put("a", "bare", [bare])
    expected = []
    for family in families():
        for sample in family.samples:  # the database label after the collector's own
            sample.labels["database"] = "a"
        expected.append(family)
    [(database, got)] = store.runs("fixed")
    assert database == "a"
    # Name, help, type, unit, samples, labels in their order (by repr: NaN is not NaN).
    assert repr(list(got)) == repr(expected)
    assert [list(s.labels) for s in got[1].samples] == [["b", "a", "database"]] * 2
    [(_, (got_bare,))] = store.runs("bare")
    assert type(got_bare) is BareCounter
    assert got_bare.samples == [Sample("test_bare", {"datname": "d", "database": "a"}, 7)]
    assert store.runs("fixed")[0][1][0] is not got[0]  # built afresh: a reader cannot alter it


def four_hundred_indexes(url: URL) -> IndexesCollector:
    """400 indexes on one table in the database at `url`, and a collector keeping them all."""
    execute(
        url,
        "CREATE TABLE t (a int)",
        "DO $$ BEGIN FOR n IN 1..400 LOOP EXECUTE format('CREATE INDEX t_%s ON t (a)', n);"
        " END LOOP; END $$",
    )
    return IndexesCollector("main", IndexesCollectorSettings(max_index_series=1000))


async def test_a_stored_run_leaves_the_garbage_collector_nothing_per_series(
    fresh_database: URL,
) -> None:
    """A full garbage collection scans every object the collector tracks, on the event loop:
    what the snapshot of a run keeps must not grow with its series (Samples, namedtuples, are
    tracked for good; 12,000 of them made each full collection ~15 ms longer)."""
    indexes = four_hundred_indexes(fresh_database)
    registry = CollectorRegistry()
    async with worker_for(fresh_database, registry, indexes) as (worker, store):
        [job] = worker.jobs
        assert await worker.check()
        assert await worker.run_collector(job)
        body = store.exposition(openmetrics=False).decode()
        series = sum(1 for line in body.splitlines() if not line.startswith("#"))
        families = sum(1 for line in body.splitlines() if line.startswith("# TYPE"))
        labels = {"datname": fresh_database.database, "schemaname": "public", "relname": "t"}
        size = {**labels, "indexrelname": "t_400", "database": "main"}
        assert registry.get_sample_value("pg_index_size_bytes", size) == 8192

        gc.collect()
        with_run = len(gc.get_objects())
        store.drop("main", "indexes")
        gc.collect()
        kept = with_run - len(gc.get_objects())
    assert series > 2800  # 400 indexes x (5 counters, size, duplicate) and two more
    assert 0 < kept <= 20 * families  # a few objects per family; it was one per series


class Promotions:
    """Counts the objects young collections move into the oldest generation while active,
    from `gc.callbacks`: what adds up towards CPython's next full collection (it runs once
    they exceed a quarter of the objects already there)."""

    def __init__(self) -> None:
        self.count = 0
        self._old = 0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 1:  # a generation-1 collection moves its survivors to 2
            return
        if phase == "start":
            self._old = len(gc.get_objects(generation=2))
        else:
            self.count += len(gc.get_objects(generation=2)) - self._old

    def __enter__(self) -> Promotions:
        gc.collect()
        gc.freeze()  # the oldest generation starts empty: counting it stays cheap
        self._threshold = gc.get_threshold()
        # A generation-1 collection after every generation-0 one (none missed by chance), and
        # no full collection, which would reset what is counted.
        gc.set_threshold(self._threshold[0], 1, 1_000_000)
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)
        gc.set_threshold(*self._threshold)
        gc.unfreeze()


async def test_a_run_promotes_few_objects_to_the_oldest_generation(fresh_database: URL) -> None:
    """In a host application nothing is frozen: what a run keeps alive across its slices ends
    up in the oldest generation, and each time that grows by a quarter, a full collection
    scans every object the application has, on the event loop (~11 in 20 rounds of every
    collector over 1,200 indexes, ~100 ms each). A run's series must die young: not one
    promoted object per series (Samples, kept until the run was stored, were)."""
    indexes = four_hundred_indexes(fresh_database)
    async with worker_for(fresh_database, CollectorRegistry(), indexes) as (worker, store):
        [job] = worker.jobs
        assert await worker.check()
        assert await worker.run_collector(job)  # imports, caches and statements settled
        series = store.exposition(openmetrics=False).count(b"\n")
        with Promotions() as promoted:
            for _ in range(3):
                assert await worker.run_collector(job)
    assert series > 2800
    assert promoted.count / 3 < series / 2, promoted.count


def many(name: str, value: float, count: int = 3000) -> GaugeMetricFamily:
    """A family whose body is larger than one deflate step (64 KiB)."""
    gauge = GaugeMetricFamily(name, "Many series.", labels=["indexrelname"])
    for n in range(count):
        gauge.add_metric([f"index_{n:05d}_with_a_long_name"], value)
    return gauge


def inflated(part: Deflated) -> bytes:
    content = zlib.decompressobj(-zlib.MAX_WBITS).decompress(part.data)
    assert (zlib.crc32(content), len(content)) == (part.crc, part.size)
    return content


def test_deflated_exposition_is_the_text_and_follows_every_change() -> None:
    store = SnapshotStore()
    store.put("a", "fixed", families())
    store.put("b", "many", [many("test_many", 1)])
    store.put("a", "many", [many("test_many", 2)])
    assert len(store.exposition(False)) > 3 * 64 * 1024
    for openmetrics in (False, True):
        assert inflated(store.deflated(openmetrics)) == store.exposition(openmetrics)
        only = ["test_many", "test_things_total"]
        assert inflated(store.deflated(openmetrics, only)) == store.exposition(openmetrics, only)
    kept = store.deflated(True)
    assert store.deflated(True) is kept  # one per format until something changes

    store.put("b", "many", [many("test_many", 7)])  # a collector ran again: nothing stale
    for openmetrics in (False, True):
        text = store.exposition(openmetrics)
        assert b'test_many{database="b",indexrelname="index_02999_with_a_long_name"} 7.0' in text
        assert inflated(store.deflated(openmetrics)) == text
    store.drop("a")
    assert b'database="a"' not in inflated(store.deflated(False))
    assert inflated(store.deflated(False)) == store.exposition(False)


# --- /metrics with collectors ---------------------------------------------------------------


async def test_metrics_serves_collector_series_for_several_databases(
    aiohttp_client: Client, registry: CollectorRegistry, fresh_database: URL
) -> None:
    execute(fresh_database, "CREATE TABLE t (id int PRIMARY KEY)")
    metrics = Metrics(registry)
    # Two names for one server database: with election on, only one would run `indexes`.
    off = {"enabled": False}
    databases = [
        database("main", fresh_database, election=off),
        database("replica", fresh_database, election=off),
    ]
    client = await aiohttp_client(create_app(metrics, databases))
    await until(
        lambda: (
            status(metrics, "indexes", "main")[0] == 1
            and status(metrics, "indexes", "replica")[0] == 1
        )
    )
    labels = {"schemaname": "public", "relname": "t", "indexrelname": "t_pkey"}
    body = await (await client.get("/metrics")).text()
    assert body.count("# TYPE pg_index_size_bytes gauge") == 1
    assert body.count("# TYPE pg_stat_user_indexes_idx_scan_total counter") == 1
    parsed = {f.name: f for f in text_string_to_metric_families(body)}
    idx_scan = parsed["pg_stat_user_indexes_idx_scan"].samples
    # `database` is the configured name, `datname` the real one (the same database here).
    assert {s.labels["database"]: s.value for s in idx_scan} == {"main": 0, "replica": 0}
    assert {s.labels["datname"] for s in idx_scan} == {fresh_database.database}
    assert parsed["exporter_collector_duration_seconds"].samples[0].value > 0
    assert value(metrics, "db_up", {"database": "main"}) == 1
    # The registry still sees the collectors' families (for other expositions and tests).
    real = {"database": "main", "datname": str(fresh_database.database)}
    size = value(metrics, "pg_index_size_bytes", {**real, **labels})
    assert size == 8192

    response = await client.get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    om = await response.text()
    assert om.endswith("# EOF\n")
    assert om.count("# EOF") == 1
    assert om.count("# TYPE pg_stat_user_indexes_idx_scan counter") == 1
    assert 'pg_stat_user_indexes_idx_scan_total{database="replica"' in om

    # A filtered scrape goes through prometheus_client itself and still finds them.
    filtered = await (await client.get("/metrics?name[]=pg_index_size_bytes")).text()
    assert filtered.count("pg_index_size_bytes{") == 2
    assert "db_up" not in filtered


@pytest.mark.parametrize("side", SIDES)
async def test_every_format_and_encoding_is_the_uncached_rendering_before_and_after_a_run(
    aiohttp_client: Client, registry: CollectorRegistry, fresh_database: URL, side: str
) -> None:
    """What prometheus_client renders of the whole registry (the store's families included,
    nothing pre-rendered or cached) is what `/metrics` serves, plain and gzipped, in both
    formats, from the sidecar and from the endpoints mounted in an application; and a
    collector run shows in the very next scrape."""
    execute(fresh_database, "CREATE TABLE t (id int PRIMARY KEY)")
    metrics = Metrics(registry)
    hourly = {"indexes": {"interval_seconds": 3600}}
    only_indexes = {name: {"enabled": False} for name in COLLECTORS if name != "indexes"}
    db = database("main", fresh_database, collectors={**only_indexes, **hourly})
    variants = [
        (accept, encoding)
        for accept in ("", "application/openmetrics-text; version=1.0.0")
        for encoding in ("identity", "gzip")
    ]
    async with raw_client(side, aiohttp_client, metrics=metrics, databases=[db]) as (get, runner):
        await until(lambda: status(metrics, "indexes")[0] == 1)

        async def scrape_all() -> list[bytes]:
            bodies = []
            for accept, encoding in variants:
                _, headers, body = await get(
                    "/metrics", {"Accept": accept, "Accept-Encoding": encoding}
                )
                if encoding == "gzip":
                    assert headers["Content-Encoding"] == "gzip"
                    body = gunzip_one_member(body)
                else:
                    assert "Content-Encoding" not in headers
                bodies.append(body)
            uncached = [generate_latest(registry), generate_openmetrics(registry)]
            assert bodies == [uncached[0], uncached[0], uncached[1], uncached[1]]
            return bodies

        before = await scrape_all()
        assert all(b'indexrelname="t_pkey"' in body for body in before)
        assert not any(b"t_later" in body for body in before)

        execute(fresh_database, "CREATE INDEX t_later ON t (id)")
        worker = runner.workers[0]
        assert await worker.run_collector(worker.jobs[0])
        after = await scrape_all()
        assert all(b'indexrelname="t_later"' in body for body in after)

        # A client asking for deflate alone: the sidecar's aiohttp deflates, as before; the
        # mount leaves compression to the application.
        _, headers, body = await get("/metrics", {"Accept-Encoding": "deflate"})
        if side == "sidecar":
            assert headers["Content-Encoding"] == "deflate"
            body = zlib.decompress(body)
        else:
            assert "Content-Encoding" not in headers
        assert body == after[0]


async def test_disabled_collector_does_not_run(
    aiohttp_client: Client, registry: CollectorRegistry, database_url: URL
) -> None:
    metrics = Metrics(registry)
    db = database("main", database_url, collectors={"indexes": {"enabled": False}})
    client = await aiohttp_client(create_app(metrics, [db]))
    await until(lambda: value(metrics, "db_up", {"database": "main"}) == 1)
    body = await (await client.get("/metrics")).text()
    assert "pg_index_size_bytes" not in body
    assert status(metrics, "indexes") == (None, None)


# --- isolation and timeouts -----------------------------------------------------------------


def worker(
    url: URL,
    metrics: Metrics,
    *classes: type[Collector[Any]],
    compatibility: Compatibility = "default",
    **extra: Any,
) -> DatabaseWorker:
    store = SnapshotStore()
    metrics.registry.register(store)
    collectors = {c.name: c for c in classes}
    return DatabaseWorker(database("main", url, **extra), metrics, store, collectors, compatibility)


async def test_a_locked_relation_fails_only_the_collector_that_needs_it(
    registry: CollectorRegistry, fresh_database: URL, caplog: pytest.LogCaptureFixture
) -> None:
    execute(fresh_database, "CREATE TABLE t (id int PRIMARY KEY)")
    metrics = Metrics(registry)
    w = worker(
        fresh_database,
        metrics,
        IndexesCollector,
        Constant,
        collectors={"indexes": {"lock_timeout_seconds": 0.2, "timeout_seconds": 5}},
    )
    try:
        assert await w.check()
        indexes, constant = w.jobs
        # REINDEX holds ACCESS EXCLUSIVE on the index until its transaction ends; the
        # collector's pg_relation_size() of that index waits for it, up to lock_timeout.
        reindex = "REINDEX INDEX t_pkey"
        with held_in_transaction(fresh_database, reindex), caplog.at_level(logging.WARNING):
            started = asyncio.get_running_loop().time()
            assert not await w.run_collector(indexes)
            assert asyncio.get_running_loop().time() - started < 2
            assert await w.run_collector(constant)
            assert await w.check()
        assert status(metrics, "indexes")[0] == 0
        assert status(metrics, "constant")[0] == 1
        assert value(metrics, "test_constant", names(fresh_database)) == 42
        [line] = [r.getMessage() for r in caplog.records if "indexes" in r.getMessage()]
        assert line == (
            "collector indexes on database main failed: LockNotAvailableError: "
            "canceling statement due to lock timeout (SQLSTATE 55P03)"
        )
        # Once the lock is gone the collector recovers on its own connection.
        assert await w.run_collector(indexes)
        assert status(metrics, "indexes")[0] == 1
    finally:
        await w.close()


async def test_a_table_held_access_exclusive_fails_only_the_tables_collector(
    aiohttp_client: Client,
    registry: CollectorRegistry,
    fresh_database: URL,
    caplog: pytest.LogCaptureFixture,
) -> None:
    execute(fresh_database, "CREATE TABLE t (id int PRIMARY KEY)")
    metrics = Metrics(registry)
    fast = {"interval_seconds": 0.2, "lock_timeout_seconds": 0.2}
    db = database(
        "main", fresh_database, collectors={n: fast for n in ("indexes", "tables", "database")}
    )
    with held_in_transaction(fresh_database, "LOCK TABLE t IN ACCESS EXCLUSIVE MODE"):
        client = await aiohttp_client(create_app(metrics, [db]))
        await until(
            lambda: (
                status(metrics, "indexes")[0] == 1
                and status(metrics, "database")[0] == 1
                and metrics.registry.get_sample_value(
                    "exporter_collector_duration_seconds",
                    {"collector": "tables", "database": "main"},
                )
                is not None
            )
        )
        assert status(metrics, "tables") == (0, 0)
        assert (
            "collector tables on database main failed: LockNotAvailableError: "
            "canceling statement due to lock timeout (SQLSTATE 55P03)"
        ) in [r.getMessage() for r in caplog.records]
        body = await (await client.get("/metrics")).text()
        assert "pg_stat_user_tables_seq_scan_total" not in body
        real = fresh_database.database
        assert (
            f'pg_index_size_bytes{{database="main",datname="{real}",indexrelname="t_pkey"' in body
        )
    await until(lambda: status(metrics, "tables")[0] == 1)  # the lock is gone


def test_servers_older_than_13_are_refused_in_one_line() -> None:
    for supported in (130000, 150010, 180001):
        check_server_version(supported)
    with pytest.raises(UnsupportedServerError) as refused:
        check_server_version(120017)
    assert str(refused.value) == (
        "PostgreSQL 12 is not supported: db-exporter needs PostgreSQL 13 or newer"
    )


def test_servers_up_to_the_newest_tested_run_without_a_word() -> None:
    assert runner_module.newer_than_tested(180004) is None
    assert runner_module.newer_than_tested(130000) is None


# The real server, with one bound of the supported versions moved past it: the bound, its new
# value, whether the check passes, its reason and the one line logged ({major}: the server's).
OUTSIDE_TESTED_VERSIONS = [
    pytest.param(
        "MIN_SERVER_VERSION", 990000, False,
        "UnsupportedServerError: PostgreSQL {major} is not supported:"
        " db-exporter needs PostgreSQL 99 or newer",
        "database main is refused: PostgreSQL {major} is not supported:"
        " db-exporter needs PostgreSQL 99 or newer",
        id="older-than-supported-is-refused",
    ),
    pytest.param(
        "NEWEST_TESTED_SERVER_VERSION", 120000, True, "ok",
        "database main: PostgreSQL {major} is newer than db-exporter was tested on (13-12):"
        " queries chosen by server version fall back to their PostgreSQL 12 form;"
        " a collector whose view changed fails alone",
        id="newer-than-tested-runs",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("bound", "moved", "up", "reason", "said"), OUTSIDE_TESTED_VERSIONS)
async def test_a_server_outside_the_tested_versions_is_said_once(
    registry: CollectorRegistry,
    database_url: URL,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    bound: str,
    moved: int,
    up: bool,
    reason: str,
    said: str,
) -> None:
    monkeypatch.setattr(runner_module, bound, moved)
    metrics = Metrics(registry)
    w = worker(database_url, metrics, Constant)
    try:
        with caplog.at_level(logging.WARNING):
            assert await w.check() is up
            assert await w.check() is up  # again: said once
    finally:
        await w.close()
    major = int(execute(database_url, "SHOW server_version_num")[0][0]) // 10000
    assert value(metrics, "db_up", {"database": "main"}) == int(up)
    assert (w.state.ok, w.state.reason) == (up, reason.format(major=major))
    assert [r.getMessage() for r in caplog.records if r.name == "exporter.collectors"] == [
        said.format(major=major)
    ]


async def test_a_dropped_database_withdraws_its_series_and_logs_once(
    registry: CollectorRegistry, database_url: URL, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"dbx_{uuid.uuid4().hex[:12]}"
    execute(database_url, f'CREATE DATABASE "{name}"')
    metrics = Metrics(registry)
    w = worker(database_url.set(database=name), metrics, LocksCollector, PostmasterCollector)
    started = {"database": "main"}
    try:
        assert await w.check()
        for job in w.jobs:
            assert await w.run_collector(job)
        assert value(metrics, "pg_postmaster_start_time_seconds", started) is not None
        execute(database_url, f'DROP DATABASE "{name}" WITH (FORCE)')
        with caplog.at_level(logging.WARNING):
            for _ in range(3):  # the check keeps failing; nothing else runs or logs
                assert not await w.check()
        assert value(metrics, "pg_postmaster_start_time_seconds", started) is None
        assert [s for f in registry.collect() for s in f.samples if s.name == "pg_locks"] == []
        assert value(metrics, "db_up", {"database": "main"}) == 0
        [line] = [r.getMessage() for r in caplog.records if r.name == "exporter.collectors"]
        assert line.startswith("database main is not answering: ")
        assert [status(metrics, c)[0] for c in ("locks", "postmaster")] == [0, 0]
        assert f'database "{name}" does not exist' in w.state.reason
    finally:
        await w.close()
        execute(database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_a_failing_or_slow_collector_never_blanks_the_others(
    registry: CollectorRegistry, database_url: URL
) -> None:
    metrics = Metrics(registry)
    w = worker(database_url, metrics, Broken, Sleepy, Constant)
    try:
        assert await w.check()
        broken, sleepy, constant = w.jobs
        assert await w.run_collector(constant)
        assert not await w.run_collector(broken)
        assert broken.failure == "RuntimeError: a bug in the collector"
        assert not await w.run_collector(sleepy)
        assert sleepy.failure is not None
        assert "statement timeout (SQLSTATE 57014)" in sleepy.failure
        assert await w.run_collector(constant)
        assert status(metrics, "constant")[0] == 1
        assert value(metrics, "test_constant", names(database_url)) == 42
        assert [status(metrics, n)[0] for n in ("broken", "sleepy")] == [0, 0]
        assert status(metrics, "broken")[1] == 0  # never succeeded
    finally:
        await w.close()


async def test_postgres_exporters_scrape_error_says_whether_the_last_runs_all_went_well(
    registry: CollectorRegistry, database_url: URL
) -> None:
    """`pg_exporter_last_scrape_error` in postgres_exporter's mode: 1 while the last run of any
    collector failed or the database does not answer, beside `pg_up`; neither before the first
    check, nor in the default mode."""
    metrics, elsewhere = Metrics(registry), Metrics(CollectorRegistry())
    w = worker(database_url, metrics, Flaky, Constant, compatibility="postgres_exporter")
    nowhere = make_url("postgresql://postgres@127.0.0.1:1/none")  # nothing listens on port 1
    down = worker(nowhere, elsewhere, Constant, compatibility="postgres_exporter")

    def health(m: Metrics = metrics) -> tuple[float | None, float | None]:
        labels = {"database": "main"}
        return value(m, "pg_up", labels), value(m, "pg_exporter_last_scrape_error", labels)

    try:
        assert health() == (None, None)
        assert await w.check()
        flaky, constant = w.jobs
        assert health() == (1, 0)
        assert await w.run_collector(constant)
        assert not await w.run_collector(flaky)
        assert health() == (1, 1)
        assert await w.run_collector(constant)
        assert health() == (1, 1)  # the other's last run still failed
        assert isinstance(flaky.collector, Flaky)
        flaky.collector.failing = False
        assert await w.run_collector(flaky)
        assert health() == (1, 0)
        assert not await down.check()
        assert health(elsewhere) == (0, 1)
    finally:
        await w.close()
        await down.close()
    plain = Metrics(CollectorRegistry())
    w = worker(database_url, plain, Constant)
    try:
        assert await w.check()
        assert health(plain) == (None, None)
    finally:
        await w.close()


async def test_the_runner_keeps_going_while_one_collector_always_fails(
    registry: CollectorRegistry, database_url: URL
) -> None:
    metrics = Metrics(registry)
    runner = CollectorRunner([database("main", database_url)], metrics, {
        c.name: c for c in (Broken, Constant)
    })  # fmt: skip
    await runner.start()
    try:
        await until(lambda: (status(metrics, "constant")[1] or 0) > 0)
        first = status(metrics, "constant")[1]
        await until(lambda: status(metrics, "constant")[1] != first)  # ran again
        assert status(metrics, "broken")[0] == 0
        assert runner.states()["main"].ok is True
    finally:
        await runner.stop()


async def test_collector_statements_are_not_counted_as_the_applications(
    registry: CollectorRegistry, database_url: URL
) -> None:
    metrics = Metrics(registry)
    app_engine = create_async_engine(async_url(database_url))
    instrument(app_engine, database="main", metrics=metrics)
    runner = CollectorRunner([database("main", database_url)], metrics)
    try:
        await runner.start()
        await until(lambda: status(metrics, "indexes")[0] == 1)
        counted = sum(
            s.value
            for f in registry.collect()
            for s in f.samples
            if s.name == "query_duration_seconds_count"
        )
        assert counted == 0
    finally:
        await runner.stop()
        uninstrument(app_engine)
        await app_engine.dispose()


# --- the database stops and comes back ------------------------------------------------------


async def test_restart_db_up_drops_and_recovers_without_leaking_connections(
    aiohttp_client: Client, registry: CollectorRegistry
) -> None:
    with private_cluster() as cluster:
        url = make_url(cluster.url)
        metrics = Metrics(registry)
        db = database("main", url, collectors={"indexes": {"interval_seconds": 0.2}})
        client = await aiohttp_client(create_app(metrics, [db]))
        up = {"database": "main"}
        await until(lambda: status(metrics, "indexes")[0] == 1)
        assert value(metrics, "db_up", up) == 1

        stop = asyncio.create_task(asyncio.to_thread(cluster.stop, "fast"))
        answered = 0
        while not stop.done() or value(metrics, "db_up", up) != 0:
            response = await client.get("/metrics")  # answers throughout
            assert response.status == 200
            answered += 1
            await asyncio.sleep(0.05)
        await stop
        assert answered > 0
        await until(lambda: status(metrics, "indexes")[0] == 0, within=1)
        body = await (await client.get("/metrics")).text()
        assert 'db_up{database="main"} 0.0' in body
        assert "pg_index_size_bytes" not in body  # no stale series while it is down
        assert (await client.get("/readyz")).status == 503

        await asyncio.to_thread(cluster.start)
        await until(lambda: value(metrics, "db_up", up) == 1, within=2 * 0.2 + 5)
        await until(lambda: status(metrics, "indexes")[0] == 1, within=5)
        assert (await client.get("/readyz")).status == 200
        assert execute(url, EXPORTER_CONNECTIONS) == [(1,)]


async def test_a_restart_between_checks_does_not_read_as_down(
    registry: CollectorRegistry,
) -> None:
    # The exporter's kept connection dies with the restart; the next check must replace it,
    # not report the (answering) database down for a check interval and flap /readyz.
    with private_cluster() as cluster:
        metrics = Metrics(registry)
        worker = DatabaseWorker(database("main", make_url(cluster.url)), metrics, SnapshotStore())
        try:
            assert await worker.check()
            await asyncio.to_thread(cluster.stop, "fast")
            await asyncio.to_thread(cluster.start)
            assert await worker.check(), worker.state.reason
            assert value(metrics, "db_up", {"database": "main"}) == 1
        finally:
            await worker.close()


async def test_stopping_the_runner_closes_its_connection(
    registry: CollectorRegistry, database_url: URL, fresh_database: URL
) -> None:
    metrics = Metrics(registry)
    runner = CollectorRunner([database("main", fresh_database)], metrics)
    await runner.start()
    await until(lambda: status(metrics, "indexes")[0] == 1)
    in_db = EXPORTER_CONNECTIONS + f" AND datname = '{fresh_database.database}'"
    assert execute(database_url, in_db) == [(1,)]
    await runner.stop()
    wait_for(database_url, in_db, 0)


# --- leader election among the exporters of several replicas --------------------------------

ADVISORY_LOCKS = (
    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)
CHECK_INTERVAL = 0.5


def replica(url: URL, election: dict[str, Any] | None = None) -> tuple[CollectorRunner, Metrics]:
    """One application replica's exporter: its own metrics, runner and connection."""
    metrics = Metrics(CollectorRegistry())
    db = database(
        "main",
        url,
        check_interval_seconds=CHECK_INTERVAL,
        collectors={"indexes": {"interval_seconds": 0.2}},
        election={"lock_key": LOCK_KEY, **(election or {})},
    )
    runner = CollectorRunner([db], metrics, {c.name: c for c in (IndexesCollector, Constant)})
    return runner, metrics


def leader(metrics: Metrics) -> float | None:
    return value(metrics, "exporter_collector_leader", {"database": "main"})


def index_series(metrics: Metrics) -> list[str]:
    return [
        s.labels["indexrelname"]
        for f in metrics.registry.collect()
        for s in f.samples
        if s.name == "pg_index_size_bytes"
    ]


async def test_one_exporter_per_database_runs_the_database_wide_collectors(
    fresh_database: URL,
) -> None:
    execute(fresh_database, "CREATE TABLE t (id int PRIMARY KEY)")
    (first, first_metrics), (second, second_metrics) = (
        replica(fresh_database),
        replica(fresh_database),
    )
    both = [first_metrics, second_metrics]
    await first.start()
    await second.start()
    try:
        await until(
            lambda: (
                sorted(leader(m) or 0 for m in both) == [0, 1]
                and all(status(m, "constant")[0] == 1 for m in both)
                and any(status(m, "indexes")[0] == 1 for m in both)
            )
        )
        [lead] = [m for m in both if leader(m) == 1]
        [follow] = [m for m in both if leader(m) == 0]
        assert index_series(lead) == ["t_pkey"]
        # The follower runs the per-replica collectors only, and has no database-wide series
        # at all: no stale values, and no exporter_collector_success 0 for an alert to see.
        assert index_series(follow) == []
        assert status(follow, "indexes") == (None, None)
        duration = {"collector": "indexes", "database": "main"}
        assert value(follow, "exporter_collector_duration_seconds", duration) is None
        assert value(follow, "test_constant", names(fresh_database)) == 42
        # Checked every interval, the lock is taken once, never stacked.
        await asyncio.sleep(3 * CHECK_INTERVAL)
        assert len(execute(fresh_database, ADVISORY_LOCKS)) == 1

        # The leader stops (its connection closes, the server frees the lock): the follower
        # takes over within two check intervals and runs the database-wide collectors.
        runners = {id(first_metrics): first, id(second_metrics): second}
        await runners[id(lead)].stop()
        await until(lambda: leader(follow) == 1, within=2 * CHECK_INTERVAL)
        await until(lambda: status(follow, "indexes")[0] == 1)
        assert index_series(follow) == ["t_pkey"]
    finally:
        await first.stop()
        await second.stop()


async def test_an_exporter_that_lost_its_connection_takes_the_lock_again(
    fresh_database: URL,
) -> None:
    runner, metrics = replica(fresh_database)
    await runner.start()
    try:
        await until(lambda: leader(metrics) == 1 and status(metrics, "indexes")[0] == 1)
        [(pid,)] = execute(fresh_database, ADVISORY_LOCKS)
        execute(fresh_database, f"SELECT pg_terminate_backend({pid})")
        # The lock went with the connection; the reconnected session tries it again.
        await until(lambda: execute(fresh_database, ADVISORY_LOCKS) not in ([], [(pid,)]))
        await until(lambda: leader(metrics) == 1 and status(metrics, "indexes")[0] == 1)
        assert len(execute(fresh_database, ADVISORY_LOCKS)) == 1
    finally:
        await runner.stop()


async def test_with_election_off_every_exporter_runs_everything(fresh_database: URL) -> None:
    execute(fresh_database, "CREATE TABLE t (id int PRIMARY KEY)")
    replicas = [replica(fresh_database, {"enabled": False}) for _ in range(2)]
    for runner, _ in replicas:
        await runner.start()
    try:
        await until(lambda: all(status(m, "indexes")[0] == 1 for _, m in replicas))
        for _, metrics in replicas:
            assert leader(metrics) == 1
            assert index_series(metrics) == ["t_pkey"]
        assert execute(fresh_database, ADVISORY_LOCKS) == []
    finally:
        for runner, _ in replicas:
            await runner.stop()


def test_election_settings_and_which_collectors_are_database_wide() -> None:
    db = DatabaseSettings(name="main", dsn="postgresql://db/app")
    assert (db.election.enabled, db.election.lock_key) == (True, 32515255304225836)
    assert {name for name, cls in COLLECTORS.items() if cls.database_wide} == set(COLLECTORS)
    with pytest.raises(ConfigError) as error:
        settings_from_data(
            {"databases": [{"name": "main", "dsn": "postgresql://db/app",
                            "election": {"lock_key": 2**63}}]},
            "exporter.yaml",
        )  # fmt: skip
    assert str(error.value).startswith("exporter.yaml: databases[0].election.lock_key: ")

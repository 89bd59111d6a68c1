"""The slow-query log on a real PostgreSQL: records, call sites, secrets, sinks, N+1, bounds."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
import tracemalloc
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
import source_lines
from aiohttp import web
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import ForeignKey, create_engine, select, text
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
    selectinload,
)
from statement_kinds import CANARIES, NUMBERS, statements

import exporter.instrumentation as instrumentation
from exporter import Exporter, Metrics, create_app, instrument, uninstrument
from exporter.bounded import size_of
from exporter.dsn import async_url, sync_url
from exporter.inprocess_settings import InstrumentationSettings
from exporter.integrations.aiohttp import aiohttp_request_middleware
from exporter.settings import PlanSettings, SlowQuerySettings
from exporter.slowlog import SlowQueryLog, context, rate
from exporter.slowlog.record import SlowQuery
from exporter.sql import identify

SECRET = "canary-4c7f-secret"


class Base(DeclarativeBase):
    pass


class Author(Base):
    __tablename__ = "authors"
    id: Mapped[int] = mapped_column(primary_key=True)
    books: Mapped[list[Book]] = relationship(back_populates="author", lazy="select")


class Book(Base):
    __tablename__ = "books"
    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("authors.id"))
    author: Mapped[Author] = relationship(back_populates="books")


def line_of(marker: str) -> int:
    return source_lines.line_of(__file__, marker)


@pytest.fixture
def slow_log(metrics: Metrics, tmp_path: Path) -> Iterator[SlowQueryLog]:
    settings = SlowQuerySettings(
        threshold_ms=100, file=str(tmp_path / "slow.jsonl"), n_plus_one_threshold=5
    )
    log = SlowQueryLog(settings, metrics)
    yield log
    log.close()


@pytest.fixture
def engine(fresh_database: URL, metrics: Metrics, slow_log: SlowQueryLog) -> Iterator[Engine]:
    password_url = fresh_database.set(password=SECRET)  # trust auth ignores it; it must not leak
    engine = create_engine(sync_url(password_url))
    Base.metadata.create_all(engine)
    instrument(engine, metrics=metrics, slow_log=slow_log)
    yield engine
    uninstrument(engine)
    engine.dispose()


@pytest.fixture
async def async_engine(
    fresh_database: URL, metrics: Metrics, slow_log: SlowQueryLog
) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(async_url(fresh_database))
    instrument(engine, metrics=metrics, slow_log=slow_log)
    yield engine
    uninstrument(engine)
    await engine.dispose()


def slow_records(log: SlowQueryLog) -> list[dict[str, Any]]:
    log.flush()
    return [r for r in log.records(limit=1000) if r["kind"] == "slow_query"]


def test_one_slow_statement_is_one_record_with_its_call_site(
    engine: Engine, slow_log: SlowQueryLog, registry: CollectorRegistry
) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))  # fast: no record
        conn.execute(text("SELECT pg_sleep(0.2)"))  # the slow one
    (record,) = slow_records(slow_log)
    assert record["call_site"] == {
        "file": source_lines.shown_path(__file__),
        "line": line_of("the slow one"),
        "function": "test_one_slow_statement_is_one_record_with_its_call_site",
        "url": None,
    }
    assert record["operation"] == "SELECT"
    assert record["sql"] == "SELECT pg_sleep($1)"  # the literal is masked
    assert record["fingerprint"] == identify("SELECT pg_sleep(0.2)").fingerprint
    assert 200 <= record["duration_ms"] < 2000
    assert record["pool_wait_ms"] >= 0
    assert record["rows"] == 1
    labels = {"database": "main", "operation": "SELECT", "table": "other"}
    assert registry.get_sample_value("slow_queries_total", labels) == 1


async def test_async_call_site_is_found_through_the_greenlet(
    async_engine: AsyncEngine, slow_log: SlowQueryLog
) -> None:
    async with async_engine.connect() as conn:
        await conn.execute(text("SELECT pg_sleep(0.15)"))  # async slow one
    (record,) = slow_records(slow_log)
    assert record["call_site"]["file"] == source_lines.shown_path(__file__)
    assert record["call_site"]["line"] == line_of("async slow one")


async def test_secrets_appear_nowhere(
    engine: Engine,
    slow_log: SlowQueryLog,
    metrics: Metrics,
    registry: CollectorRegistry,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    aiohttp_client: Any,
) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_sleep(0.15), :secret AS s"), {"secret": SECRET})
        conn.execute(text(f"SELECT pg_sleep(0.15), '{SECRET}' AS inline"))
    records = slow_records(slow_log)
    assert len(records) == 2
    assert records[1]["parameters"] == {"secret": {"type": "str", "length": len(SECRET)}}
    client: TestClient[Any, Any] = await aiohttp_client(create_app(metrics, slow_log=slow_log))
    places = {
        "stdout": capsys.readouterr().out,
        "file": (tmp_path / "slow.jsonl").read_text(),
        "ring buffer": json.dumps(slow_log.records(limit=1000)),
        "/slow-queries": await (await client.get("/slow-queries")).text(),
        "/": await (await client.get("/")).text(),
        "/metrics": await (await client.get("/metrics")).text(),
        "registry": generate_latest(registry).decode(),
    }
    assert len(places["stdout"].splitlines()) == 2  # one JSON line per record
    assert all(json.loads(line) for line in places["stdout"].splitlines())
    for place, content in places.items():
        assert SECRET not in content, place


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(canary=CANARIES, number=NUMBERS)
def test_no_literal_of_any_statement_kind_is_logged_served_or_labelled(
    fresh_database: URL, tmp_path: Path, canary: str, number: int
) -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    log = SlowQueryLog(
        SlowQuerySettings(
            threshold_ms=0,  # every statement is slow
            stdout=False,
            file=str(tmp_path / "every.jsonl"),
            plans=PlanSettings(enabled=False),
        ),
        metrics,
    )
    engine = create_engine(sync_url(fresh_database))
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS t (a text, n int)"))
    instrument(engine, metrics=metrics, slow_log=log)
    sidecar = Exporter(listen="127.0.0.1:0", metrics=metrics, slow_log=log)
    sidecar.start_in_thread()
    ran = statements(canary, number)
    try:
        with engine.connect() as conn:
            for sql in ran:
                # A missing role or server: recorded as an error all the same.
                with suppress(DBAPIError):
                    conn.exec_driver_sql(sql)
                conn.rollback()
        log.flush()
        recorded = {record["sql"] for record in log.records(limit=1000)}
        assert {identify(sql).normalized for sql in ran} <= recorded
        places = {
            "log file": (tmp_path / "every.jsonl").read_text(),
            "ring buffer": json.dumps(log.records(limit=1000)),
            "/slow-queries": fetch(sidecar, "/slow-queries?limit=1000"),
            "/": fetch(sidecar, "/"),
            "/metrics": fetch(sidecar, "/metrics"),
        }
    finally:
        sidecar.stop_in_thread()
        uninstrument(engine)
        engine.dispose()
        log.close()
    for place, content in places.items():
        assert canary not in content, place
        assert str(number) not in content, place


def fetch(exporter: Exporter, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{exporter.port}{path}", timeout=10) as answer:
        body: bytes = answer.read()
    return body.decode()


def test_parameter_values_only_when_allowed(
    fresh_database: URL, metrics: Metrics, tmp_path: Path
) -> None:
    log = SlowQueryLog(
        SlowQuerySettings(threshold_ms=0, stdout=False, include_parameter_values=True), metrics
    )
    engine = create_engine(sync_url(fresh_database))
    instrument(engine, metrics=metrics, slow_log=log)
    try:
        with engine.connect() as conn:
            conn.execute(
                text("SELECT :word AS w, :raw AS r"), {"word": "hello", "raw": b"\xff\xfe"}
            )
        log.flush()
        (record,) = [r for r in log.records() if r["sql"].startswith("SELECT $1")]
        assert record["parameters"] == {"word": "hello", "raw": "<2 bytes>"}
    finally:
        uninstrument(engine)
        engine.dispose()
        log.close()


def test_failed_slow_statement_is_recorded_with_its_sqlstate(
    engine: Engine, slow_log: SlowQueryLog
) -> None:
    with engine.connect() as conn:
        conn.execute(text("SET statement_timeout = '150ms'"))
        with pytest.raises(Exception, match="statement timeout"):
            conn.execute(text("SELECT pg_sleep(1)"))
    (record,) = slow_records(slow_log)
    assert record["status"] == "error"
    assert record["sqlstate"] == "57014"  # query_canceled


def test_n_plus_one_fires_for_lazy_loads_and_not_for_one_batched_query(
    engine: Engine, slow_log: SlowQueryLog, registry: CollectorRegistry
) -> None:
    with Session(engine) as session:
        session.add_all([Author(id=i, books=[Book(id=i)]) for i in range(1, 9)])
        session.commit()
    with Session(engine) as session, context(route="/authors", request_id="r-1"):
        for author in session.scalars(select(Author)).all():
            assert len(author.books) == 1  # one lazy load per author: N+1
    with Session(engine) as session, context(route="/authors-batched"):
        authors = session.scalars(select(Author).options(selectinload(Author.books))).all()
        assert sum(len(a.books) for a in authors) == 8
    slow_log.flush()
    warnings = [r for r in slow_log.records() if r["kind"] == "n_plus_one"]
    assert len(warnings) == 1  # once per context, not once per repeat
    (warning,) = warnings
    assert warning["table"] == "books"
    assert warning["repeats"] == 5
    assert warning["context"] == {"route": "/authors", "request_id": "r-1"}
    assert warning["call_site"]["file"] == source_lines.shown_path(__file__)
    labels = {"database": "main", "table": "books"}
    assert registry.get_sample_value("db_n_plus_one_total", labels) == 1


def test_huge_and_unparsable_sql_are_recorded_without_errors(
    engine: Engine, slow_log: SlowQueryLog, registry: CollectorRegistry
) -> None:
    huge = "x" * 100_000
    columns = ", ".join(f"{i} AS column_{i}" for i in range(1000))
    with engine.connect() as conn:
        conn.execute(text(f"SELECT pg_sleep(0.15), '{huge}' AS big, {columns}"))
    slow_log.submit(
        SlowQuery("main", 0.5, identify("SELEC broken (( 'x' FROM"), None, None, {}, None)
    )
    records = slow_records(slow_log)
    assert len(records) == 2
    big, broken = sorted(records, key=lambda r: r["operation"], reverse=True)
    assert big["sql"].endswith("characters in all]")
    assert len(big["sql"]) < 2100
    assert huge not in big["sql"]
    assert broken["operation"] == "OTHER"
    assert (
        registry.get_sample_value("exporter_instrumentation_errors_total", {"kind": "slow_query"})
        is None
    )


def test_a_statement_over_the_limit_is_counted_recorded_truncated_and_never_planned(
    engine: Engine, slow_log: SlowQueryLog, registry: CollectorRegistry
) -> None:
    limit = InstrumentationSettings().max_statement_length
    padding = "x" * 5 * 2**20
    statements = [f"SELECT pg_sleep(0.11), length('{SECRET}{i}{padding}')" for i in range(2)]
    with engine.connect() as conn:
        for statement in statements:
            assert conn.execute(text(statement)).one()[1] == len(SECRET) + 1 + len(padding)
    records = slow_records(slow_log)
    assert len(records) == 2
    for record, statement in zip(records, statements, strict=True):
        assert record["truncated"] is True
        assert record["statement_length"] == len(statement)
        assert record["sql"].endswith(f"...[truncated: {len(statement)} characters in all]")
        assert SECRET not in record["sql"]
        assert len(record["sql"]) < 2100
    assert records[0]["fingerprint"] == records[1]["fingerprint"]
    assert slow_log.plans.attempts == 0  # no whole text to plan
    labels = {"database": "main", "operation": "SELECT", "table": "other"}
    assert registry.get_sample_value("slow_queries_total", labels) == 2
    timed = registry.get_sample_value("query_duration_seconds_count", {**labels, "status": "ok"})
    assert timed == 2
    listener = instrumentation._attached[engine].queries
    assert all(len(key) <= limit for key in listener._statements if isinstance(key, str))


def test_ring_buffer_and_aggregates_stay_within_their_byte_budgets(metrics: Metrics) -> None:
    budget = 256 * 1024
    settings = SlowQuerySettings(
        stdout=False, ring_buffer_max_bytes=budget, fingerprints_max_bytes=budget
    )
    log = SlowQueryLog(settings, metrics)
    columns = ", ".join(f"column_number_{i}" for i in range(120))  # a 2,000-character record
    for i in range(1000):  # within the count bounds (1,000 records, 1,000 fingerprints)
        name = "".join(chr(97 + i // 26**n % 26) for n in range(3))  # letters: see below
        identity = identify(f"SELECT {columns} FROM t_{name}")
        log.submit(SlowQuery("main", 0.2, identity, None, None, {}, None))
    log.flush()
    records, aggregates = log.records(limit=1000), log.aggregates.ranked()
    assert 0 < len(records) < 1000
    assert 0 < len(aggregates) < 1000
    assert size_of(records) <= budget
    held = log.aggregates._by_key.values()
    assert sum(sys.getsizeof(a) + size_of(vars(a)) for a in held) <= budget
    cut = f"...[cut: {len(identity.normalized)} characters in all]"
    assert records[0]["sql"] == identity.normalized[:2000] + cut
    log.close()


def test_a_stuck_writer_holds_at_most_queue_max_bytes_of_statement_text(
    metrics: Metrics, registry: CollectorRegistry
) -> None:
    budget = 64 * 1024
    log = SlowQueryLog(SlowQuerySettings(stdout=False, queue_max_bytes=budget), metrics)
    identity = identify(f"SELECT {', '.join(f'c{i}' for i in range(2000))} FROM wide")  # 12 kB
    with log._sinks_lock:  # the writer blocks on its sinks, as on a stuck disk
        for _ in range(100):
            log.submit(SlowQuery("main", 0.2, identity, None, None, {}, None))
        assert log._queue.bytes <= budget
        queued = log._queue.qsize()
    log.flush()
    dropped = registry.get_sample_value("slow_query_log_dropped_total")
    assert 0 < queued < 10
    assert dropped is not None
    assert len(log.records()) + dropped == 100
    assert log._queue.bytes == 0
    log.close()


def test_a_burst_keeps_memory_bounded_and_the_dropped_count_exact(
    metrics: Metrics, registry: CollectorRegistry, tmp_path: Path
) -> None:
    # Records go to a file: captured stdout would hold every written line in this process's
    # memory, and the peak would measure how fast the writer kept up, not the log's bounds.
    out = tmp_path / "slow.jsonl"
    settings = SlowQuerySettings(
        queue_size=500, ring_buffer_size=200, max_fingerprints=50,
        stdout=False, file=str(out), file_max_bytes=2**30,
    )  # fmt: skip
    log = SlowQueryLog(settings, metrics)
    # Letters, not digits: libpg_query's fingerprint folds numbered tables (partitions) together.
    names = [f"burst_{chr(97 + i % 26)}{chr(97 + i // 26)}" for i in range(300)]
    identities = [identify(f"SELECT 1 FROM {name}") for name in names]
    tracemalloc.start()
    try:
        for i in range(100_000):
            log.submit(SlowQuery("main", 0.2, identities[i % 300], None, None, {}, None))
        log.flush()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    written = len(out.read_text().splitlines())
    dropped = registry.get_sample_value("slow_query_log_dropped_total") or 0
    assert written + dropped == 100_000
    assert dropped > 0
    assert len(log.records(limit=1000)) == 200
    assert len(log.aggregates.ranked()) <= 50
    assert peak < 20 * 2**20
    for identity in identities:  # slowly enough that none is dropped
        log.submit(SlowQuery("main", 0.2, identity, None, None, {}, None))
        log.flush()
    assert len(log.aggregates.ranked()) == 50  # the least recently seen were forgotten
    log.close()


def test_a_storm_gets_some_records_per_fingerprint_and_every_statement_counted(
    fresh_database: URL, metrics: Metrics, registry: CollectorRegistry, tmp_path: Path
) -> None:
    out = tmp_path / "slow.jsonl"
    settings = SlowQuerySettings(threshold_ms=0, stdout=False, file=str(out), records_per_second=5)
    log = SlowQueryLog(settings, metrics)
    engine = create_engine(sync_url(fresh_database))
    instrument(engine, metrics=metrics, slow_log=log)
    storm, other = text("SELECT :n"), text("SELECT count(*) FROM pg_class")
    try:
        started = time.monotonic()
        with engine.connect() as conn:
            for n in range(500):  # every statement slow: one fingerprint
                conn.execute(storm, {"n": n})
            conn.execute(other)  # another fingerprint still gets its record
        seconds = time.monotonic() - started
        log.flush()
    finally:
        uninstrument(engine)
        engine.dispose()
        log.close()
    records = [json.loads(line) for line in out.read_text().splitlines()]
    slow = sum(
        s.value for m in registry.collect() if m.name == "slow_queries" for s in m.samples
        if s.name == "slow_queries_total"
    )  # fmt: skip
    limited = registry.get_sample_value("slow_query_log_rate_limited_total")
    assert limited is not None
    assert limited > 0
    assert len(records) + limited == slow  # each slow statement: a record or counted as limited
    by_fingerprint = {r["fingerprint"]: r for r in records}
    storm_fingerprint = identify("SELECT $1").fingerprint
    written = sum(r["fingerprint"] == storm_fingerprint for r in records)
    assert written <= 5 * (int(seconds) + 2)  # at most 5 in each second it lasted
    assert identify(str(other)).fingerprint in by_fingerprint
    aggregates = {a["fingerprint"]: a for a in log.aggregates.ranked()}
    assert aggregates[storm_fingerprint]["count"] == 500  # the limited ones included
    assert aggregates[storm_fingerprint]["max_ms"] >= max(
        r["duration_ms"] for r in records if r["fingerprint"] == storm_fingerprint
    )


def test_records_per_second_zero_writes_a_record_for_every_slow_statement(
    fresh_database: URL, metrics: Metrics, registry: CollectorRegistry
) -> None:
    settings = SlowQuerySettings(threshold_ms=0, stdout=False, records_per_second=5)
    log = SlowQueryLog(settings, metrics)
    log.apply(dataclasses.replace(settings, records_per_second=0))
    engine = create_engine(sync_url(fresh_database))
    instrument(engine, metrics=metrics, slow_log=log)
    try:
        with engine.connect() as conn:
            for n in range(50):
                conn.execute(text("SELECT :n"), {"n": n})
        records = slow_records(log)
    finally:
        uninstrument(engine)
        engine.dispose()
        log.close()
    assert sum(r["sql"] == "SELECT $1" for r in records) == 50
    assert registry.get_sample_value("slow_query_log_rate_limited_total") == 0


def test_the_rate_limit_keeps_a_bounded_number_of_fingerprints(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(rate, "MAX_WINDOWS", 3)
    limit = rate.RecordRate(per_second=1)
    kept, new = identify("SELECT 1 FROM kept"), identify("SELECT 1 FROM beyond")
    others = [identify(f"SELECT 1 FROM t{n}") for n in range(2)]
    assert [limit.admit("main", i, 1.0) for i in (kept, *others)] == [True, True, True]
    assert limit.admit("main", kept, 1.0) is False  # limited: its window is kept
    # A fourth fingerprint finds the windows full: recorded, not remembered.
    assert [limit.admit("main", new, 1.0) for _ in range(3)] == [True, True, True]
    assert [(s.identity, s.count) for s in limit.take_skipped()] == [(kept, 1)]


async def test_slow_queries_endpoint_filters_and_ranks(
    engine: Engine, slow_log: SlowQueryLog, metrics: Metrics, aiohttp_client: Any
) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_sleep(0.15)"))
        conn.execute(text("SELECT pg_sleep(0.25)"))
        conn.execute(text("SELECT pg_sleep(0.11), count(*) FROM authors"))
    slow_log.flush()
    client: TestClient[Any, Any] = await aiohttp_client(create_app(metrics, slow_log=slow_log))
    body = await (await client.get("/slow-queries?limit=2")).json()
    assert len(body["records"]) == 2
    assert body["records"][0]["table"] == "authors"  # newest first
    assert body["aggregates"][0]["count"] == 2  # pg_sleep($1): the costliest fingerprint
    assert body["aggregates"][0]["max_ms"] >= 250
    assert (await (await client.get("/slow-queries?database=other")).json())["records"] == []
    bad = await client.get("/slow-queries?limit=0")
    assert bad.status == 400
    assert "limit" in (await bad.json())["error"]


def test_stdout_lines_are_json_ready_for_log_shippers(
    engine: Engine, slow_log: SlowQueryLog, capsys: pytest.CaptureFixture[str]
) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_sleep(0.12)"))
    slow_log.flush()
    (line,) = capsys.readouterr().out.splitlines()
    record = json.loads(line)
    assert set(record) >= {
        "time", "kind", "database", "duration_ms", "status", "operation", "table",
        "fingerprint", "sql", "call_site", "parameters", "context",
    }  # fmt: skip
    assert record["time"].endswith("+00:00")
    assert sys.stdout is not None


def test_a_slow_select_gets_a_plan_and_a_slow_update_never_runs_explain(
    engine: Engine, slow_log: SlowQueryLog
) -> None:
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO authors SELECT g FROM generate_series(1, 5000) g"))
        conn.execute(text("ANALYZE authors"))
    with engine.begin() as conn:
        # A parameter and a literal: planned as a generic plan.
        conn.execute(
            text("SELECT count(*), pg_sleep(0.15), 42 AS answer FROM authors WHERE id + 0 > :low"),
            {"low": 3},
        )
        conn.execute(text("UPDATE authors SET id = id WHERE pg_sleep(0.15) IS NOT NULL AND id = 1"))
    slow_log.flush()
    assert slow_log.plans.attempts == 1  # the SELECT only
    ranked = {a["operation"]: a for a in slow_log.aggregates.ranked()}
    select = ranked["SELECT"]
    assert select["plan"][0]["Plan"]["Node Type"] == "Aggregate"
    assert "seq scan on authors" in select["plan_summary"]
    assert select["plan_summary"].endswith("[generic plan: parameter values unknown]")
    assert ranked["UPDATE"]["plan"] is None


def test_plans_are_rate_limited_per_fingerprint(engine: Engine, slow_log: SlowQueryLog) -> None:
    with engine.connect() as conn:
        for _ in range(3):
            conn.execute(text("SELECT pg_sleep(0.11)"))
    slow_log.flush()
    assert slow_log.plans.attempts == 1
    (aggregate,) = slow_log.aggregates.ranked()
    assert aggregate["count"] == 3
    assert aggregate["plan_summary"].startswith("Result")


def test_slowlog_command_ranks_a_log_file(
    engine: Engine, slow_log: SlowQueryLog, tmp_path: Path
) -> None:
    with engine.connect() as conn:
        for _ in range(3):
            conn.execute(text("SELECT pg_sleep(0.11)"))  # ranked first: 3 x 110 ms
        conn.execute(text("SELECT pg_sleep(0.2), count(*) FROM authors"))
    slow_log.flush()
    log_file = tmp_path / "slow.jsonl"
    mixed = tmp_path / "mixed.log"
    mixed.write_text("INFO app started\n" + log_file.read_text() + "not json either\n")
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "slowlog", str(mixed)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    lines = result.stdout.splitlines()
    assert lines[1].split()[:5] == ["total", "ms", "count", "p95", "ms"]
    first, second = lines[3], lines[4]
    assert first.split()[1] == "3"  # count
    assert "SELECT pg_sleep($1)" in first
    assert f"test_slowlog.py:{line_of('ranked first: 3 x 110 ms')}" in first
    assert "SELECT authors" in second
    assert lines[-2] == "2 of 2 fingerprints"
    assert lines[-1] == "2 lines were not slow-query records and were skipped"

    piped = subprocess.run(
        [sys.executable, "-m", "exporter", "slowlog", "-"],
        input=log_file.read_text(), capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert piped.stdout.splitlines()[3] == first

    missing = subprocess.run(
        [sys.executable, "-m", "exporter", "slowlog", str(tmp_path / "absent.jsonl")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert missing.returncode == 2
    assert (
        missing.stderr
        == f"db-exporter: error: {tmp_path / 'absent.jsonl'}: No such file or directory\n"
    )


def test_per_database_threshold_overrides_the_default(
    fresh_database: URL, metrics: Metrics
) -> None:
    settings = SlowQuerySettings(
        threshold_ms=1000, threshold_ms_per_database={"orders": 100}, stdout=False
    )
    log = SlowQueryLog(settings, metrics)
    orders = create_engine(sync_url(fresh_database))
    audit = create_engine(sync_url(fresh_database))
    instrument(orders, "orders", metrics=metrics, slow_log=log)
    instrument(audit, "audit", metrics=metrics, slow_log=log)
    try:
        for engine in (orders, audit):
            with engine.connect() as conn:
                conn.execute(text("SELECT pg_sleep(0.15)"))
        log.flush()
        assert [r["database"] for r in log.records()] == ["orders"]
    finally:
        for engine in (orders, audit):
            uninstrument(engine)
            engine.dispose()
        log.close()


async def test_aiohttp_middleware_puts_the_route_in_records_and_counts_statements(
    engine: Engine,
    slow_log: SlowQueryLog,
    aiohttp_client: Any,
    metrics: Metrics,
    registry: CollectorRegistry,
) -> None:
    async def item(request: web.Request) -> web.Response:
        with engine.connect() as conn:  # a sync engine in a handler, for the test's sake
            conn.execute(text("SELECT pg_sleep(0.12)"))
        return web.Response(text="ok")

    app = web.Application(middlewares=[aiohttp_request_middleware(metrics)])
    app.router.add_get("/items/{id}", item)
    client: TestClient[Any, Any] = await aiohttp_client(app)
    assert (await client.get("/items/42")).status == 200
    assert (await client.get("/nothing/here")).status == 404
    (record,) = slow_records(slow_log)
    assert record["context"] == {"route": "/items/{id}", "method": "GET"}
    for route, count in (("/items/{id}", 1), ("unmatched", 0)):
        labels = {"route": route}
        assert registry.get_sample_value("db_request_statements_count", labels) == 1
        assert registry.get_sample_value("db_request_statements_sum", labels) == count


@pytest.mark.parametrize("driver", ["psycopg", "asyncpg"])
async def test_the_first_connections_own_statements_can_be_slow_without_errors(
    fresh_database: URL, metrics: Metrics, registry: CollectorRegistry, driver: str
) -> None:
    """SQLAlchemy runs the dialect's first-connect statements (server version, ...) on a
    connection without a pool entry, whose `info` raises: the record goes without a pool wait."""
    log = SlowQueryLog(SlowQuerySettings(threshold_ms=0, stdout=False), metrics)
    if driver == "asyncpg":
        engine: Engine | AsyncEngine = create_async_engine(async_url(fresh_database))
    else:
        engine = create_engine(sync_url(fresh_database))
    instrument(engine, metrics=metrics, slow_log=log)
    try:
        if isinstance(engine, AsyncEngine):
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        else:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        log.flush()
        statements = [r["sql"] for r in log.records(limit=100)]
        assert any("version()" in sql for sql in statements), statements
        assert (
            registry.get_sample_value(
                "exporter_instrumentation_errors_total", {"kind": "slow_query"}
            )
            is None
        )
    finally:
        uninstrument(engine)
        if isinstance(engine, AsyncEngine):
            await engine.dispose()
        else:
            engine.dispose()
        log.close()

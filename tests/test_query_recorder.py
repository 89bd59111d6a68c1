"""The pytest plugin's recorder (exporter/integrations/query_recorder.py) as the statement
observer of a real instrumented engine: what it counts, its bounds, and that an observer that
fails never fails the application's statement."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import DBAPIError

from exporter import Metrics, instrument, uninstrument
from exporter.dsn import sync_url
from exporter.instrumentation.queries import observe_statements
from exporter.integrations.query_recorder import MAX_FINDINGS, Block, Limits, Recorder

LIMITS = Limits(n_plus_one_threshold=3, max_fingerprints=30, max_sql_length=20)


@pytest.fixture
def engine(database_url: URL, metrics: Metrics) -> Iterator[Engine]:
    engine = create_engine(sync_url(database_url))
    instrument(engine, metrics=metrics, slow_log=False)
    yield engine
    uninstrument(engine)
    engine.dispose()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    recorder = Recorder(LIMITS, os.getcwd())
    previous = observe_statements(recorder)
    recorder.start()
    yield recorder
    observe_statements(previous)


def test_failed_statements_count_but_make_no_n_plus_one(engine: Engine, recorder: Recorder) -> None:
    with engine.connect() as conn:
        for _ in range(5):
            with pytest.raises(DBAPIError):
                conn.execute(text("SELECT 1 / 0"))
            conn.rollback()
        for _ in range(3):
            conn.execute(text("SELECT 1"))
    test = recorder.stop()
    assert test.statements == 8
    assert test.seconds > 0
    [finding] = test.n_plus_one
    assert (finding.sql, finding.repeats) == ("SELECT $1", 3)
    assert finding.call_site is not None
    assert finding.call_site.startswith("tests/test_query_recorder.py:")


def test_what_it_keeps_is_bounded(engine: Engine) -> None:
    limits = Limits(n_plus_one_threshold=2, max_fingerprints=MAX_FINDINGS + 5, max_sql_length=20)
    recorder = Recorder(limits, os.getcwd())
    previous = observe_statements(recorder)
    try:
        recorder.start()
        with engine.connect() as conn:
            for n in range(MAX_FINDINGS + 10):  # more distinct statements than max_fingerprints
                for _ in range(2):
                    # distinct by their number of terms
                    conn.execute(text("SELECT 1" + " + 1" * n + " AS long_enough_to_be_cut"))
        test = recorder.stop()
    finally:
        observe_statements(previous)
    assert test.statements == 2 * (MAX_FINDINGS + 10)
    assert len(test.fingerprints) == limits.max_fingerprints
    kept = [seen.sql for seen in test.fingerprints.values()]
    assert all(sql.startswith("SELECT $1 ") for sql in kept)
    assert all(sql[20:].startswith("...[cut: ") for sql in kept)  # max_sql_length
    # Repeats are counted within max_fingerprints entries; findings within MAX_FINDINGS.
    assert len(test.n_plus_one) == MAX_FINDINGS
    assert test.n_plus_one_omitted == limits.max_fingerprints - 1 - MAX_FINDINGS


def test_nothing_is_counted_outside_a_test_but_blocks(engine: Engine, recorder: Recorder) -> None:
    recorder.stop()
    with Block(recorder, None) as block, engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    assert block.count == 1
    assert recorder.current is None
    assert recorder.statements_seen == 1


def test_a_failing_observer_never_fails_the_statement(
    engine: Engine, registry: CollectorRegistry
) -> None:
    def broken(*_: object) -> None:
        raise RuntimeError("observer bug")

    previous = observe_statements(broken)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 41 + 1")).scalar() == 42
    finally:
        observe_statements(previous)
    labels = {"kind": "statement_observer"}
    assert registry.get_sample_value("exporter_instrumentation_errors_total", labels) == 1

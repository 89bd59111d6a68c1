"""One label budget for every metric labelled by the application's tables, SQLSTATE classes and
routes: caps honoured on every such metric, each folded label set counted exactly once."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from collector_helpers import by_label
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import DBAPIError

import exporter.instrumentation.budget as budget_module
import exporter.instrumentation.queries as queries
from exporter import Metrics, instrument, uninstrument
from exporter.dsn import sync_url
from exporter.inprocess_settings import CAPPED_METRICS, PlanSettings, SlowQuerySettings
from exporter.instrumentation.budget import OTHER, LabelBudget, LabelLimits
from exporter.metrics import CAPPED_LABELS
from exporter.slowlog import SlowQueryLog, context

TABLES = [f"t{i}" for i in range(12)]


def overflow(registry: CollectorRegistry, metric: str) -> float:
    return registry.get_sample_value("exporter_label_overflow_total", {"metric": metric}) or 0.0


@pytest.fixture
def tables_database(fresh_database: URL) -> URL:
    """A database with the tables t0..t11 (one row each)."""
    engine = create_engine(sync_url(fresh_database))
    with engine.begin() as conn:
        for name in TABLES:
            conn.execute(text(f"CREATE TABLE {name} (id int PRIMARY KEY)"))
            conn.execute(text(f"INSERT INTO {name} VALUES (1)"))
    engine.dispose()
    return fresh_database


def instrumented(url: URL, metrics: Metrics, slow_log: SlowQueryLog | None = None) -> Engine:
    engine = create_engine(sync_url(url))
    with engine.connect():  # SQLAlchemy's first-connect statements, before instrument()
        pass
    instrument(engine, metrics=metrics, slow_log=slow_log or False)
    return engine


@pytest.fixture
def every_statement_slow(metrics: Metrics) -> Iterator[SlowQueryLog]:
    """Every statement is slow, two in one context are an N+1; no output, no plans."""
    settings = SlowQuerySettings(
        threshold_ms=0, stdout=False, n_plus_one_threshold=2, plans=PlanSettings(enabled=False)
    )
    log = SlowQueryLog(settings, metrics)
    yield log
    log.close()


@pytest.mark.parametrize(
    ("limits", "kept_tables"),
    [
        # The statement's cap folds its table for every metric of the statement alike.
        (LabelLimits(default=4), 4),
        # Each metric's own, lower cap.
        (LabelLimits(per_metric={"slow_queries_total": 2, "db_n_plus_one_total": 2}), 2),
    ],
)
def test_slow_queries_and_n_plus_one_stay_within_the_cap_over_many_tables(
    tables_database: URL,
    metrics: Metrics,
    registry: CollectorRegistry,
    every_statement_slow: SlowQueryLog,
    limits: LabelLimits,
    kept_tables: int,
) -> None:
    metrics.limits = limits
    engine = instrumented(tables_database, metrics, every_statement_slow)
    try:
        for name in TABLES:
            with context(task=name), engine.connect() as conn:
                for _ in range(3):  # the second one is an N+1 warning
                    conn.execute(text(f"SELECT id FROM {name}"))
    finally:
        uninstrument(engine)
        engine.dispose()
    expected = {*TABLES[:kept_tables], OTHER}
    assert set(by_label(registry, "slow_queries_total", "table")) == expected
    assert set(by_label(registry, "db_n_plus_one_total", "table")) == expected
    folded = len(TABLES) - kept_tables
    select_other = {"database": "main", "operation": "SELECT", "table": OTHER}
    assert registry.get_sample_value("slow_queries_total", select_other) == 3 * folded
    main_other = {"database": "main", "table": OTHER}
    assert registry.get_sample_value("db_n_plus_one_total", main_other) == folded
    if kept_tables == 4:  # folded by query_duration_seconds' cap: counted there, once each
        assert overflow(registry, "query_duration_seconds") == folded
        assert overflow(registry, "slow_queries_total") == 0
    else:
        assert overflow(registry, "query_duration_seconds") == 0
        assert overflow(registry, "slow_queries_total") == folded
        assert overflow(registry, "db_n_plus_one_total") == folded


def test_each_folded_label_set_is_counted_once_however_often_it_is_seen(
    tables_database: URL,
    metrics: Metrics,
    registry: CollectorRegistry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Many statement texts per table, repeated, in two engines, with a statement cache cleared
    every few statements: still one count per folded (database, operation, table, status)."""
    monkeypatch.setattr(queries, "statement_cache_bounds", lambda: (5, 2**30))
    metrics.limits = LabelLimits(default=2)
    engines = [instrumented(tables_database, metrics) for _ in range(2)]
    try:
        for _ in range(3):
            for engine in engines:
                with engine.connect() as conn:
                    for name in TABLES:
                        for value in range(10):
                            conn.execute(text(f"SELECT id FROM {name} WHERE id = {value}"))
    finally:
        for engine in engines:
            uninstrument(engine)
            engine.dispose()
    assert set(by_label(registry, "query_duration_seconds_count", "table")) == {"t0", "t1", OTHER}
    assert overflow(registry, "query_duration_seconds") == len(TABLES) - 2
    other = {"database": "main", "operation": "SELECT", "table": OTHER, "status": "ok"}
    assert registry.get_sample_value("query_duration_seconds_count", other) == 3 * 2 * 10 * 10


def test_query_errors_fold_their_sqlstate_class_beyond_the_cap(
    tables_database: URL, metrics: Metrics, registry: CollectorRegistry
) -> None:
    metrics.limits = LabelLimits(per_metric={"query_errors_total": 1})
    engine = instrumented(tables_database, metrics)
    failing = [
        "SELECT id FROM t0 WHERE id = 'x'",  # 22P02: class 22, admitted
        "SELECT id FROM missing",  # 42P01: class 42, folded
        "SELECT id FROM missing_too",  # class 42 again: the same folded set
    ]
    try:
        for _ in range(2):
            for sql in failing:
                with engine.connect() as conn, pytest.raises(DBAPIError):
                    conn.execute(text(sql))
    finally:
        uninstrument(engine)
        engine.dispose()
    assert set(by_label(registry, "query_errors_total", "sqlstate_class")) == {"22", OTHER}
    labels = {"database": "main", "operation": "SELECT", "sqlstate_class": OTHER}
    assert registry.get_sample_value("query_errors_total", labels) == 4
    assert overflow(registry, "query_errors_total") == 1


label_sets = st.tuples(st.sampled_from(["main", "replica"]), st.text(max_size=3))


@given(
    st.lists(label_sets, max_size=60),
    st.integers(min_value=1, max_value=8),
)
def test_a_budget_keeps_its_cap_and_counts_each_folded_set_once(
    seen: list[tuple[str, str]], cap: int
) -> None:
    """For any sequence of (database, table) label sets: the same set always gets the same
    answer, at most `cap` sets keep their table, and the overflow count is the number of
    distinct sets that were folded."""
    registry = CollectorRegistry()
    metrics = Metrics(registry, limits=LabelLimits(default=cap))
    budget = metrics.budget("db_n_plus_one_total")
    answers: dict[tuple[str, str], tuple[str, str]] = {}
    for labels in seen:
        answer = budget.admit(labels)
        assert answers.setdefault(labels, answer) == answer
        assert answer in (labels, (labels[0], OTHER))
    kept = {answer for answer in answers.values() if answer[1] != OTHER}
    assert len(kept) <= cap
    assert overflow(registry, "db_n_plus_one_total") == sum(
        1 for labels, answer in answers.items() if answer != labels
    )


def test_the_memory_of_folded_sets_is_bounded(
    metrics: Metrics, registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(budget_module, "MAX_REMEMBERED_FOLDS", 10)
    metrics.limits = LabelLimits(default=1)
    budget = metrics.budget("db_request_statements")
    for i in range(100):
        assert budget.admit((f"/route/{i}",)) == ((f"/route/{i}",) if i == 0 else (OTHER,))
    assert len(budget._folded) <= 10
    assert overflow(registry, "db_request_statements") == 99


def test_every_capped_metric_folds_an_application_label_of_its_family() -> None:
    assert set(CAPPED_LABELS) == set(CAPPED_METRICS)
    for metric, label in CAPPED_METRICS.items():
        assert label in CAPPED_LABELS[metric]
        assert label in ("table", "sqlstate_class", "route")
    with pytest.raises(KeyError):
        LabelBudget("db_up", ("database",), Metrics(CollectorRegistry()))


def test_unknown_metric_in_per_metric_caps_is_refused_naming_the_capped_ones() -> None:
    from exporter.inprocess_settings import InstrumentationSettings

    with pytest.raises(ValueError, match=r"'db_up' has no cap \(capped: query_duration_seconds, "):
        InstrumentationSettings(max_label_sets_per_metric={"db_up": 5})
    settings = InstrumentationSettings(max_label_sets_per_metric=dict.fromkeys(CAPPED_METRICS, 3))
    assert LabelLimits.from_settings(settings).cap("db_request_statements") == 3

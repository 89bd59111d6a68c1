"""`exporter.configure()` on a real PostgreSQL: a config applied after `instrument()` reaches
the engines already instrumented, a bad one changes nothing, and keys that do nothing where
they are loaded say so once."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from sqlalchemy import create_engine
from sqlalchemy.engine import URL, Engine

import exporter.instrumentation
import exporter.metrics
import exporter.slowlog
import exporter.sql
from exporter import (
    ConfigError,
    Exporter,
    Metrics,
    Settings,
    configure,
    instrument,
    load_settings,
    uninstrument,
)
from exporter.dsn import sync_url
from exporter.inprocess_settings import PlanSettings, SlowQuerySettings
from exporter.settings import sidecar_ignored
from exporter.slowlog import default_slow_log

DOCUMENTED_CONFIG = Path(__file__).resolve().parent.parent / "config" / "exporter.yaml"
# pg_sleep(0.05) is slow for a 20 ms threshold and not for the 1 s the engines start with.
SLEEP = "SELECT pg_sleep(0.05)"
# Records only in memory, and no EXPLAIN: in a config, and as settings made in code.
QUIET: dict[str, Any] = {"stdout": False, "plans": {"enabled": False}}
QUIET_SETTINGS = SlowQuerySettings(
    threshold_ms=1000, stdout=False, plans=PlanSettings(enabled=False)
)


@pytest.fixture
def process(monkeypatch: pytest.MonkeyPatch, registry: CollectorRegistry) -> Iterator[Metrics]:
    """The process-wide metrics and slow-query log, made anew for the test (on its own
    registry), as a fresh application process would have them."""
    metrics = Metrics(registry)
    monkeypatch.setattr(exporter.metrics, "_default", metrics)
    monkeypatch.setattr(exporter.slowlog, "_default", None)
    monkeypatch.setattr(exporter.sql, "_settings", exporter.sql._settings)
    yield metrics
    if exporter.slowlog._default is not None:
        exporter.slowlog._default.close()


@pytest.fixture
def engine(database_url: URL, process: Metrics) -> Iterator[Engine]:
    """Instrumented before any configure(), with the process-wide defaults."""
    engine = create_engine(sync_url(database_url))
    default_slow_log(QUIET_SETTINGS)
    instrument(engine, database="app")
    # SQLAlchemy's first-connect statements run now, under the 1 s threshold: on a busy
    # machine they take more than the 20 ms the tests set, and would be records of their own.
    engine.connect().close()
    yield engine
    uninstrument(engine)
    engine.dispose()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exporter.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def run(engine: Engine, sql: str) -> None:
    with engine.connect() as conn:
        conn.exec_driver_sql(sql)


def slow_count() -> int:
    """pg_sleep statements logged as slow."""
    log = default_slow_log()
    log.flush()
    return sum("pg_sleep" in record["sql"] for record in log.records())


def test_configure_after_instrument_changes_the_threshold_in_use(
    engine: Engine, process: Metrics, tmp_path: Path
) -> None:
    run(engine, SLEEP)
    assert slow_count() == 0  # the threshold before, 1 s

    config = write(tmp_path, yaml.safe_dump({"slow_queries": {"threshold_ms": 20, **QUIET}}))
    returned = configure(config)
    assert isinstance(returned, Exporter)
    run(engine, SLEEP)
    assert slow_count() == 1
    assert process.registry.get_sample_value(
        "slow_queries_total", {"database": "app", "operation": "SELECT", "table": "other"}
    )

    configure(Settings.model_validate({"slow_queries": {"threshold_ms": 1000, **QUIET}}))
    run(engine, SLEEP)
    assert slow_count() == 1  # no longer slow


def test_a_log_file_configured_later_receives_the_records(engine: Engine, tmp_path: Path) -> None:
    file = tmp_path / "slow.jsonl"
    configure(
        Settings.model_validate({"slow_queries": {"threshold_ms": 20, "file": str(file), **QUIET}})
    )
    run(engine, SLEEP)
    assert slow_count() == 1
    [line] = file.read_text().splitlines()
    assert "pg_sleep" in json.loads(line)["sql"]


def test_a_per_database_threshold_reaches_its_engine(engine: Engine, process: Metrics) -> None:
    per_database = {"threshold_ms_per_database": {"app": 20}, **QUIET}
    configure(Settings.model_validate({"slow_queries": per_database}))
    run(engine, SLEEP)
    assert slow_count() == 1


def test_call_site_settings_reach_an_engine_instrumented_before(engine: Engine) -> None:
    call_sites = {
        "source_root": str(DOCUMENTED_CONFIG.parent.parent),
        "source_url_template": "https://x.test/{commit}/{path}#L{line}",
        "source_commit": "c0ffee",
    }
    configure(
        Settings.model_validate(
            {"slow_queries": {"threshold_ms": 20, "call_sites": call_sites, **QUIET}}
        )
    )
    run(engine, SLEEP)
    default_slow_log().flush()
    (record,) = default_slow_log().records()
    site = record["call_site"]
    assert site["file"] == "tests/test_configure.py"
    assert site["url"] == f"https://x.test/c0ffee/tests/test_configure.py#L{site['line']}"


def label_set_count(metrics: Metrics, table: str) -> float | None:
    return metrics.registry.get_sample_value(
        "query_duration_seconds_count",
        {"database": "app", "operation": "SELECT", "table": table, "status": "ok"},
    )


def test_label_caps_apply_to_an_engine_instrumented_before(
    engine: Engine, process: Metrics, tmp_path: Path
) -> None:
    run(engine, "SELECT count(*) FROM pg_namespace")
    assert label_set_count(process, "pg_namespace") == 1  # the default cap admits it

    # Every label set the engine has is already more than one: new ones fold into "other".
    caps = "instrumentation:\n  max_label_sets_per_metric: {query_duration_seconds: 1}\n"
    configure(write(tmp_path, caps))
    run(engine, "SELECT count(*) FROM pg_class")
    assert label_set_count(process, "pg_class") is None
    assert (
        process.registry.get_sample_value(
            "exporter_label_overflow_total", {"metric": "query_duration_seconds"}
        )
        == 1
    )
    run(engine, "SELECT count(*) FROM pg_namespace")
    assert label_set_count(process, "pg_namespace") == 2  # admitted before: kept


def test_statement_length_and_cache_bounds_apply_to_an_engine_instrumented_before(
    engine: Engine, tmp_path: Path
) -> None:
    statement = f"SELECT {', '.join(['1'] * 1000)}"  # 3,000 characters
    run(engine, statement)
    statements = exporter.instrumentation._attached[engine].queries._statements
    assert statement in statements

    bounds = "instrumentation:\n  max_statement_length: 1024\n  statement_cache_size: 3\n"
    configure(write(tmp_path, bounds))
    longer = statement.replace("1", "2")
    run(engine, longer)
    assert statement not in statements  # emptied: it held 3 statements already
    assert all(len(key) <= 1024 for key in statements if isinstance(key, str))
    entry = statements.get(exporter.sql.statement_key(longer))
    assert entry is not None
    assert entry.identity.full_length == len(longer)


BAD_CONFIGS = [
    pytest.param(
        "instrumentation:\n  max_label_sets: 0\n",
        "instrumentation: max_label_sets must be at least 1",
        id="a bound",
    ),
    pytest.param(
        "instrumentation:\n  max_statement_length: 100\n",
        "instrumentation: max_statement_length must be at least 1024",
        id="a statement length too short to identify a statement",
    ),
    pytest.param(
        "slow_queries:\n  queue_max_bytes: 1000\n",
        "slow_queries: queue_max_bytes must be at least 65536",
        id="a byte budget",
    ),
    pytest.param(
        "slow_queries:\n  threshold_ms: 20\n  treshold: 5\n",
        "slow_queries.treshold: unknown key",
        id="an unknown key",
    ),
    pytest.param(
        "slow_queries:\n  threshold_ms: fast\n",
        "slow_queries.threshold_ms: Input should be a valid number",
        id="a wrong type",
    ),
    pytest.param(
        "slow_queries:\n  threshold_ms: 20\n  file: /nonexistent/dir/slow.jsonl\n",
        "slow_queries.file: cannot open /nonexistent/dir/slow.jsonl: No such file or directory",
        id="an unwritable log file",
    ),
    pytest.param(
        "slow_queries: {threshold_ms: 20}\nserver: {web_config_file: /nonexistent/web.yml}\n",
        "/nonexistent/web.yml: no such file",
        id="a missing web config",
    ),
    pytest.param("slow_queries: [20\n", "YAML syntax error", id="a YAML error"),
    pytest.param(
        "slow_queries:\n  call_sites: {source_url_template: 'https://x.test/{file}'}\n",
        "slow_queries.call_sites: source_url_template: unknown placeholder {file}",
        id="a source URL template with an unknown placeholder",
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD_CONFIGS)
def test_a_bad_config_is_one_line_and_changes_nothing(
    engine: Engine, process: Metrics, tmp_path: Path, text: str, message: str
) -> None:
    slow_settings, limits = default_slow_log().settings, process.limits
    with pytest.raises(ConfigError) as raised:
        configure(write(tmp_path, text))
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)
    assert default_slow_log().settings is slow_settings
    assert process.limits is limits
    run(engine, SLEEP)
    assert slow_count() == 0  # still the 1 s threshold


# Values of every kind YAML can hold, under the keys configure() applies and a few others.
YAML_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
SLOW_KEYS = st.sampled_from(
    [field.name for field in fields(SlowQuerySettings) if field.name != "file"] + ["bogus"]
)  # no file: it would be created wherever the example says
SECTIONS = st.fixed_dictionaries(
    {},
    optional={
        "slow_queries": st.dictionaries(SLOW_KEYS, YAML_VALUES, max_size=4),
        "instrumentation": st.dictionaries(
            st.sampled_from(["max_label_sets", "max_label_sets_per_metric", "other"]),
            YAML_VALUES,
            max_size=2,
        ),
    },
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=SECTIONS)
def test_any_config_is_applied_whole_or_refused_whole(
    data: dict[str, Any], process: Metrics, tmp_path: Path
) -> None:
    path = write(tmp_path, yaml.safe_dump(data))
    try:
        expected = load_settings(path)
    except ConfigError:
        before = default_slow_log().settings, process.limits
        with pytest.raises(ConfigError, match=r"^[^\n]+$"):  # one line
            configure(path)
        assert (default_slow_log().settings, process.limits) == before
        return
    configure(path)
    assert default_slow_log().settings == expected.slow_queries
    assert process.limits.default == expected.instrumentation.max_label_sets


def test_default_slow_log_applies_later_settings(process: Metrics, tmp_path: Path) -> None:
    log = default_slow_log(QUIET_SETTINGS)
    file = tmp_path / "slow.jsonl"
    later = SlowQuerySettings(threshold_ms=5, file=str(file), stdout=False, ring_buffer_size=2)
    assert default_slow_log(later) is log
    assert log.settings is later
    assert log.threshold_seconds("app") == 0.005
    assert file.exists()  # the new sink is open


def test_a_key_without_effect_in_the_application_warns_once(
    process: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="exporter.config"):
        configure(Settings(log_level="INFO"))  # the default: nothing to warn about
        configure(load_settings(DOCUMENTED_CONFIG, env={}))  # every default written out
        assert caplog.messages == []
        configure(Settings(log_level="DEBUG"))
    assert caplog.messages == [
        "exporter.configure() ignores log_level: the application's own logging configuration "
        "decides"
    ]


def test_the_documented_config_sets_nothing_the_sidecar_ignores() -> None:
    assert sidecar_ignored(load_settings(DOCUMENTED_CONFIG, env={})) == []

"""The dashboards and rules against the real thing: the demo, scraped every second by a real
Prometheus that loads `dashboards/alerts.yml`.

- `promtool check metrics` finds no problem at all in a busy /metrics;
- every metric name a panel or rule uses is one the exporter emits, and `rate()`/`increase()`
  only ever see counters (`histogram_quantile()` only histogram buckets);
- every variable query returns values, every panel target returns data (a finite number), and
  every rule expression parses and evaluates; every rule is healthy in Prometheus.

The demo runs exactly as a newcomer runs it: no DATABASE_URL, its embedded server (with
pg_stat_statements preloaded), its hand-made table with an unused and an invalid index. No panel
may be empty.
"""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import pytest
from prom_helpers import (
    RULES,
    Exposition,
    Prometheus,
    dashboard_files,
    function_arguments,
    http_get,
    load_dashboard,
    metric_names,
    needs_prometheus,
    panel_targets,
    promtool,
    recorded_names,
    rules,
    running_prometheus,
    substitute,
)
from subprocesses import Running

pytestmark = needs_prometheus

JOB = "db-exporter"
DATA_DEADLINE_SECONDS = 60


@dataclass
class Live:
    demo_url: str
    target: str
    prometheus: Prometheus
    variables: dict[str, str]
    last_results: dict[str, Any]

    def evaluate(self, expr: str) -> dict[str, Any]:
        return self.prometheus.query(substitute(expr, self.variables))


def _finite(result: dict[str, Any]) -> bool:
    if result.get("status") != "success":
        return False
    data = result["data"]
    values = [data["result"][1]] if data["resultType"] == "scalar" else []
    values += [sample["value"][1] for sample in data["result"] if isinstance(sample, dict)]
    return any(math.isfinite(float(value)) for value in values)


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    demo: Running | None = None
    try:
        env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        demo = Running("demo", "--listen", "127.0.0.1:0", env=env)
        demo_url = demo.wait_for(r"serving (http://\S+)/metrics").group(1)
        target = demo_url.removeprefix("http://")
        with running_prometheus([target], JOB, [RULES]) as prometheus:
            live = Live(demo_url, target, prometheus, {}, {})
            # As Grafana formats a regex variable: escaped, inside a PromQL string.
            instance = re.escape(target).replace("\\", "\\\\")
            live.variables = {"job": JOB, "instance": instance, "database": "main"}
            # Wait until every panel has data (the demo's errors, overflow and slow reports
            # arrive within seconds; rate() needs two scrapes of each).
            deadline = time.monotonic() + DATA_DEADLINE_SECONDS
            pending = panel_targets()
            while pending and time.monotonic() < deadline:
                time.sleep(1)
                still = []
                for target_ in pending:
                    result = live.evaluate(target_.expr)
                    live.last_results[target_.where] = result
                    if not _finite(result):
                        still.append(target_)
                pending = still
            yield live
    finally:
        if demo is not None:
            with suppress(subprocess.TimeoutExpired):
                demo.stop(signal.SIGTERM, timeout=10)
            demo.close()


def test_promtool_check_metrics_finds_no_problem_in_a_busy_exposition(live: Live) -> None:
    status, body = http_get(f"{live.demo_url}/metrics")
    assert status == 200
    assert "query_errors_total{" in body
    assert "slow_queries_total{" in body
    code, output = promtool("check", "metrics", stdin=body)
    assert (code, output) == (0, "")


def test_every_metric_name_in_dashboards_and_rules_is_emitted(live: Live) -> None:
    exposition = Exposition.parse(http_get(f"{live.demo_url}/metrics")[1])
    emitted = exposition.names()
    recorded = recorded_names()
    expressions = [(t.where, t.expr) for t in panel_targets()]
    expressions += [(rule.get("alert") or rule["record"], rule["expr"]) for rule in rules()]
    missing = []
    for where, expr in expressions:
        names = metric_names(expr)
        assert names.plain or names.patterns, f"{where}: no metric found in {expr!r}"
        missing += [(where, n) for n in sorted(names.plain - emitted - recorded)]
        for pattern in names.patterns:
            if not any(re.fullmatch(pattern, name) for name in emitted):
                missing.append((where, f"__name__=~{pattern!r}"))
    assert missing == []


def test_rate_and_quantiles_only_see_counters_and_histograms(live: Live) -> None:
    exposition = Exposition.parse(http_get(f"{live.demo_url}/metrics")[1])
    recorded = recorded_names()
    expressions = [(t.where, t.expr) for t in panel_targets()]
    expressions += [(rule.get("alert") or rule["record"], rule["expr"]) for rule in rules()]
    wrong = []
    for where, expr in expressions:
        for function, argument in function_arguments(expr):
            for name in metric_names(argument).plain - recorded:
                kind = exposition.kind_of(name)
                if function == "histogram_quantile":
                    ok = kind == "histogram" and name.endswith("_bucket")
                else:
                    ok = kind in ("counter", "histogram")
                if not ok:
                    wrong.append((where, function, name, kind))
            if function == "histogram_quantile" and metric_names(argument).plain - recorded:
                assert re.search(r"\bby \((le\b|[^)]*\ble\b)", argument), (where, argument)
    assert wrong == []


def test_every_variable_query_returns_values(live: Live) -> None:
    for path in dashboard_files():
        for variable in load_dashboard(path)["templating"]["list"]:
            if variable["type"] != "query":
                continue
            match = re.fullmatch(r"label_values\((.*), (\w+)\)", variable["query"])
            assert match, variable["query"]
            selector = substitute(match.group(1), live.variables)
            values = {series.get(match.group(2)) for series in live.prometheus.series(selector)}
            values.discard(None)
            expected = live.target if variable["name"] == "instance" else None
            expected = expected or live.variables[variable["name"]]
            assert values == {expected}, (path.name, variable["name"], selector)


def test_every_panel_returns_data(live: Live) -> None:
    empty = []
    for target in panel_targets():
        result = live.evaluate(target.expr)
        assert result["status"] == "success", (target.where, result)
        if not _finite(result):
            empty.append((target.where, result["data"]))
    assert empty == []


def test_flagged_indexes_table_shows_each_kind_with_its_size(live: Live) -> None:
    [flagged] = [t for t in panel_targets() if t.panel == "Indexes worth a look"]
    rows = live.evaluate(flagged.expr)["data"]["result"]
    by_reason = {(row["metric"]["reason"], row["metric"]["indexrelname"]) for row in rows}
    assert ("unused", "ix_archive_events_id") in by_reason
    assert ("invalid", "ix_archive_events_kind") in by_reason
    assert ("duplicate", "ix_balances_user_id_asset") in by_reason
    sizes = {row["metric"]["indexrelname"]: float(row["value"][1]) for row in rows}
    assert sizes["ix_archive_events_id"] >= 1024 * 1024


def test_every_rule_parses_evaluates_and_is_healthy(live: Live) -> None:
    for rule in rules():
        result = live.prometheus.query(rule["expr"])
        assert result["status"] == "success", (rule.get("alert") or rule["record"], result)
    # The rules Prometheus loaded are exactly ours, and each has been evaluated without error.
    deadline = time.monotonic() + 10
    while True:
        groups = live.prometheus.api("rules")["data"]["groups"]
        loaded = [r for g in groups for r in g["rules"]]
        if all(r.get("lastEvaluation", "").startswith("2") for r in loaded) or (
            time.monotonic() > deadline
        ):
            break
        time.sleep(0.5)
    assert sorted(r["name"] for r in loaded) == sorted(
        rule.get("alert") or rule["record"] for rule in rules()
    )
    assert [(r["name"], r.get("lastError")) for r in loaded if r["health"] != "ok"] == []
    # The recorded latency series exist, so the latency alert has something to compare.
    assert _finite(live.prometheus.query("database_operation_table:query_duration_seconds:p95_5m"))


def test_invalid_index_alert_expression_finds_the_invalid_index(live: Live) -> None:
    [rule] = [r for r in rules() if r.get("alert") == "DBExporterInvalidIndex"]
    rows = live.prometheus.query(rule["expr"])["data"]["result"]
    assert [row["metric"]["indexrelname"] for row in rows] == ["ix_archive_events_kind"]


def _values(live: Live, expr: str) -> dict[str, float]:
    rows = live.prometheus.query(expr)["data"]["result"]
    return {row["metric"].get("database", ""): float(row["value"][1]) for row in rows}


def test_the_demo_application_is_counted_on_the_server_and_the_leak_rule_compares(
    live: Live,
) -> None:
    """The demo's engine connects as wallet-demo and its exporter counts those connections:
    the leak alert's two sides both exist (the difference, not the alert, is checked: the
    activity collector samples every 15 s while the pool moves every second)."""
    server = _values(
        live, 'pg_stat_activity_application_connections{application_name="wallet-demo"}'
    )
    assert server.keys() == {"main"}
    assert server["main"] >= 1
    [rule] = [r for r in rules() if r.get("alert") == "DBExporterConnectionLeak"]
    difference = rule["expr"].rsplit(">", 1)[0]
    assert _values(live, difference).keys() == {"main"}


def test_the_migrations_collector_sees_the_demo_at_head(live: Live) -> None:
    assert _values(live, "db_migrations_pending") == {"main": 0.0}
    [info] = live.prometheus.query("db_migrations_info")["data"]["result"]
    assert info["metric"]["database_revision"] == info["metric"]["head_revision"] != "none"
    # The models match the schema; the differences are the demo's hand-made archive_events
    # table, which no model declares, and its two indexes (remove_table, remove_index x 2).
    assert _values(live, "db_schema_drift_differences") == {"main": 3.0}
    assert _values(live, "db_schema_drift_missing_indexes") == {"main": 0.0}
    for alert in ("DBExporterMigrationsPending", "DBExporterSchemaDrift"):
        [rule] = [r for r in rules() if r.get("alert") == alert]
        assert live.prometheus.query(rule["expr"])["status"] == "success"

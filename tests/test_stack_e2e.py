"""The dashboards and rules against the real thing: the demo, scraped every second by a real
Prometheus that loads `dashboards/alerts.yml`.

- `promtool check metrics` finds no problem at all in a busy /metrics;
- every metric name a panel or rule uses is one the exporter emits, and `rate()`/`increase()`
  only ever see counters (`histogram_quantile()` only histogram buckets);
- every variable query returns values, every panel target returns data (a finite number), and
  every rule expression parses and evaluates; every rule is healthy in Prometheus.

The demo runs exactly as a newcomer runs it: no DATABASE_URL, its embedded server (with
pg_stat_statements preloaded), its hand-made table with an unused and an invalid index. No panel
may be empty, but for the few that need a standby or a replication slot, which
test_stack_e2e_replication.py proves against a primary and its replica.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import pytest
from prom_helpers import (
    RULES,
    Exposition,
    PanelTarget,
    Prometheus,
    dashboard_files,
    function_arguments,
    grafana_regex,
    http_get,
    load_dashboard,
    metric_names,
    needs_prometheus,
    needs_replication,
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

    def evaluate(self, expr: str) -> dict[str, Any]:
        return self.prometheus.query(substitute(expr, self.variables))


def demo_targets() -> list[PanelTarget]:
    """Every panel target but the few that need a standby or a slot, which the demo's server
    lacks (test_stack_e2e_replication.py proves those)."""
    return [target for target in panel_targets() if not needs_replication(target)]


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    demo: Running | None = None
    try:
        env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        demo = Running("demo", "--listen", "127.0.0.1:0", env=env)
        demo_url = demo.wait_for(r"serving (http://\S+)/metrics").group(1)
        target = demo_url.removeprefix("http://")
        with running_prometheus([target], JOB, [RULES]) as prometheus:
            variables = {"job": JOB, "instance": grafana_regex(target), "database": "main"}
            # Wait until every panel has data (the demo's errors, overflow and slow reports
            # arrive within seconds; rate() needs two scrapes of each).
            prometheus.wait_for_data(demo_targets(), variables, DATA_DEADLINE_SECONDS)
            yield Live(demo_url, target, prometheus, variables)
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
    assert live.prometheus.without_data(demo_targets(), live.variables) == []


def test_only_the_standby_and_slot_panels_are_left_to_the_replication_test(live: Live) -> None:
    """They parse and are empty here: the demo's server has no standby and no slot."""
    left = [t for t in panel_targets() if needs_replication(t)]
    assert {(t.dashboard, t.panel) for t in left} == {
        ("server.json", "Replication lag (time)"),
        ("server.json", "Replication lag (bytes)"),
        ("server.json", "WAL retained by replication slots"),
    }
    for target in left:
        result = live.evaluate(target.expr)
        assert result["status"] == "success", (target.where, result)
        assert result["data"]["result"] == [], target.where


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
    assert live.prometheus.rule_problems() == []
    # The recorded latency series exist, so the latency alert has something to compare (the
    # panels, which the fixture waited for, read the raw series: the rule may be an
    # evaluation behind them).
    recorded = "database_operation_table:query_duration_seconds:p95_5m"
    assert live.prometheus.wait_for_value(recorded, seconds=10)


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

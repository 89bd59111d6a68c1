"""The Grafana dashboards' structure, without Grafana (not installable here): schema, variables,
datasource, units, descriptions, layout, and the filters and functions of every expression.
`test_stack_e2e.py` evaluates the same expressions against a real Prometheus."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from prom_helpers import (
    DASHBOARDS,
    dashboard_files,
    function_arguments,
    load_dashboard,
    metric_names,
    panel_targets,
    substitute,
)

EXPECTED = {
    "overview.json",
    "connection-pool.json",
    "indexes-and-tables.json",
    "slow-queries.json",
    "server.json",
}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def _build() -> Any:
    spec = importlib.util.spec_from_file_location("dashboards_build", DASHBOARDS / "build.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def test_the_five_dashboards_are_exactly_what_build_py_writes() -> None:
    assert {p.name for p in dashboard_files()} == EXPECTED
    written = _build().rendered()
    assert set(written) == EXPECTED
    for name, text in written.items():
        assert (DASHBOARDS / name).read_text(encoding="utf-8") == text, (
            f"dashboards/{name} differs from build.py: run python3 dashboards/build.py"
        )


@pytest.mark.parametrize("path", dashboard_files(), ids=lambda p: p.name)
def test_dashboard_structure(path: Path) -> None:
    dashboard = load_dashboard(path)
    assert dashboard["schemaVersion"] >= 39
    assert dashboard["uid"].startswith("db-exporter-")
    assert len(dashboard["uid"]) <= 40
    assert dashboard["title"].startswith("db-exporter / ")
    assert dashboard["description"]
    assert "db-exporter" in dashboard["tags"]

    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert list(variables) == ["datasource", "job", "instance", "database"]
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("job", "instance", "database"):
        variable = variables[name]
        assert variable["type"] == "query"
        assert variable["datasource"] == DATASOURCE
        assert re.fullmatch(r"label_values\(.+, \w+\)", variable["query"]), variable["query"]
        assert variable["includeAll"]
        assert variable["multi"]
    assert "$job" in variables["instance"]["query"]
    assert "$job" in variables["database"]["query"]
    assert "$instance" in variables["database"]["query"]

    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    occupied: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        where = f"{path.name} / {panel['title']}"
        assert panel["description"].strip(), where
        assert panel["datasource"] == DATASOURCE, where
        assert panel["fieldConfig"]["defaults"]["unit"], where
        assert panel["targets"], where
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), where
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, where
            assert target["expr"].strip(), where
        grid = panel["gridPos"]
        assert grid["x"] >= 0, where
        assert grid["x"] + grid["w"] <= 24, where
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & occupied, f"{where} overlaps another panel"
        occupied |= cells


def _selectors(expr: str) -> list[tuple[str, str]]:
    """(metric name or '', matchers) of every vector selector."""
    return re.findall(r"([A-Za-z_:][A-Za-z0-9_:]*)?\{([^}]*)\}", expr)


@pytest.mark.parametrize("target", panel_targets(), ids=lambda t: t.where)
def test_every_selector_filters_on_the_variables(target: Any) -> None:
    selectors = _selectors(target.expr)
    assert selectors, "every series is selected with the dashboard's filters"
    for name, matchers in selectors:
        assert 'job=~"$job"' in matchers, (name, matchers)
        assert 'instance=~"$instance"' in matchers, (name, matchers)
        # Server-side series carry the logical `database` like application-side ones; their
        # `datname` is the real name, which the $database variable (logical names) never is.
        assert "datname" not in matchers, (name, matchers)
        # A request's statements may span databases: its series are by route only.
        if name not in ("exporter_build_info", "slow_query_log_dropped_total") and not (
            name.startswith("db_request_")
        ):
            assert 'database=~"$database"' in matchers, (name, matchers)


@pytest.mark.parametrize("target", panel_targets(), ids=lambda t: t.where)
def test_rates_see_counters_and_quantiles_see_buckets_by_le(target: Any) -> None:
    """By name here; by the types the exporter declares in test_stack_e2e.py."""
    for function, argument in function_arguments(target.expr):
        names = metric_names(argument).plain
        if function == "histogram_quantile":
            assert names, target.expr
            assert all(n.endswith("_bucket") for n in names), target.expr
            assert re.search(r"sum by \(le\b", argument), target.expr
            assert "rate(" in argument, target.expr
        else:
            assert names, target.expr
            assert all(n.endswith(("_total", "_bucket", "_count", "_sum")) for n in names), (
                target.expr
            )


def test_metric_names_are_read_from_expressions() -> None:
    names = metric_names(
        'histogram_quantile(0.95, sum by (le, table) (rate(a_bucket{job=~"$job"}[5m]))) '
        '/ on (x) group_left () b_total and c{__name__=~"d_(x|y)|e"} > 0 '
        'or label_replace(f, "reason", "unused", "", "") * time() - 1e3'
    )
    assert names.plain == {"a_bucket", "b_total", "c", "f"}
    assert names.patterns == ("d_(x|y)", "e")


def test_variables_are_substituted_longest_first() -> None:
    expr = 'rate(x[$__rate_interval]) + increase(y[$__range]) + z{d=~"$database"}'
    assert substitute(expr, {"database": "main"}) == (
        'rate(x[20s]) + increase(y[1m]) + z{d=~"main"}'
    )


def test_slow_queries_dashboard_links_to_each_exporters_page() -> None:
    dashboard = load_dashboard(DASHBOARDS / "slow-queries.json")
    [panel] = [p for p in dashboard["panels"] if "slow-query page" in p["title"]]
    [override] = panel["fieldConfig"]["overrides"]
    assert override["matcher"] == {"id": "byName", "options": "instance"}
    [link] = override["properties"][0]["value"]
    assert link["url"] == "http://${__value.text}/"


def test_the_n_plus_one_panel_links_to_the_statements_per_request_panel() -> None:
    dashboard = load_dashboard(DASHBOARDS / "slow-queries.json")
    panels = {panel["title"]: panel for panel in dashboard["panels"]}
    [link] = panels["N+1 warnings by table"]["links"]
    target = panels["Statements per request by route"]
    assert link["title"] == target["title"]
    assert link["url"] == (
        f"/d/{dashboard['uid']}/?viewPanel={target['id']}&${{__url_time_range}}&${{__all_variables}}"
    )
    [expr] = [t["expr"] for t in target["targets"]]
    assert "db_request_statements_sum" in expr
    assert "db_request_statements_count" in expr

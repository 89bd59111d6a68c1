"""The PostgreSQL server dashboard and the server alerts against a primary and its streaming
replica: a sidecar watching both (as `primary` and `replica`), scraped every second by a real
Prometheus that loads `dashboards/alerts.yml`.

The demo's embedded server (test_stack_e2e.py) has no standby and no replication slot, so the
panels reading them are proven here; every other panel of the server dashboard must return
data here too, on both servers at once, and every rule must load and evaluate. The joins the
server alerts make (backends with settings, wraparound ages with the freeze age, slots with
their activity) are checked to find real series on `database`.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import pytest
from prom_helpers import (
    DASHBOARDS,
    RULES,
    PanelTarget,
    Prometheus,
    alerts,
    grafana_regex,
    load_dashboard,
    needs_prometheus,
    panel_targets,
    running_prometheus,
    substitute,
)
from replication_pair import SLOT, Pair
from subprocesses import Running

pytestmark = needs_prometheus

JOB = "db-exporter"
DATA_DEADLINE_SECONDS = 90
# An idle physical slot that reserves WAL from its creation: what the inactive-slot alert is
# about, short of the gigabyte that makes it fire.
IDLE_SLOT = "dbx_dashboards_idle"
DATABASES = ("primary", "replica")


@dataclass
class Servers:
    pair: Pair
    prometheus: Prometheus
    variables: dict[str, str]

    def evaluate(self, expr: str) -> dict[str, Any]:
        return self.prometheus.query(substitute(expr, self.variables))

    def by_database(self, expr: str) -> dict[str, list[dict[str, Any]]]:
        rows = self.prometheus.query(expr)["data"]["result"]
        found: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            found.setdefault(row["metric"]["database"], []).append(row)
        return found


def server_targets() -> list[PanelTarget]:
    return [t for t in panel_targets() if t.dashboard == "server.json"]


def alert_expr(name: str) -> str:
    [rule] = [rule for rule in alerts() if rule["alert"] == name]
    expr: str = rule["expr"]
    return expr


@pytest.fixture(scope="module")
def servers(replication_pair: Pair) -> Iterator[Servers]:
    pair = replication_pair
    pair.primary.query(f"SELECT pg_create_physical_replication_slot('{IDLE_SLOT}', true)")
    sidecar: Running | None = None
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DB_EXPORTER_")}
        env.pop("DATABASE_URL", None)
        urls = (pair.primary_url, pair.replica_url)
        for index, (name, url) in enumerate(zip(DATABASES, urls, strict=True)):
            env[f"DB_EXPORTER_DATABASES__{index}__NAME"] = name
            env[f"DB_EXPORTER_DATABASES__{index}__DSN"] = url.render_as_string(hide_password=False)
        sidecar = Running("serve", "--listen", "127.0.0.1:0", env=env)
        target = sidecar.wait_for(r"serving http://(\S+)/metrics").group(1)
        with running_prometheus([target], JOB, [RULES]) as prometheus:
            variables = {
                "job": JOB,
                "instance": grafana_regex(target),
                "database": "|".join(DATABASES),
            }
            prometheus.wait_for_data(server_targets(), variables, DATA_DEADLINE_SECONDS)
            yield Servers(pair, prometheus, variables)
    finally:
        if sidecar is not None:
            with suppress(subprocess.TimeoutExpired):
                sidecar.stop(signal.SIGTERM, timeout=10)
            sidecar.close()
        pair.primary.query(f"SELECT pg_drop_replication_slot('{IDLE_SLOT}')")


def test_every_server_panel_returns_data(servers: Servers) -> None:
    assert servers.prometheus.without_data(server_targets(), servers.variables) == []


def test_the_database_variable_lists_both_servers(servers: Servers) -> None:
    [variable] = [
        v
        for v in load_dashboard(DASHBOARDS / "server.json")["templating"]["list"]
        if v["name"] == "database"
    ]
    selector = substitute(variable["query"], servers.variables)
    selector = selector.removeprefix("label_values(").rsplit(", database)", 1)[0]
    found = {series["database"] for series in servers.prometheus.series(selector)}
    assert found == set(DATABASES)


def test_the_role_and_replication_panels_tell_primary_from_replica(servers: Servers) -> None:
    role = servers.by_database("pg_replication_is_replica")
    assert {name: float(rows[0]["value"][1]) for name, rows in role.items()} == {
        "primary": 0.0,
        "replica": 1.0,
    }
    [bytes_target] = [t for t in server_targets() if t.panel == "Replication lag (bytes)"]
    rows = servers.evaluate(bytes_target.expr)["data"]["result"]
    # The primary measures its standby (cluster_name `standby`); the replica has none.
    assert [(r["metric"]["database"], r["metric"]["application_name"]) for r in rows] == [
        ("primary", "standby")
    ]
    assert float(rows[0]["value"][1]) >= 0


def test_the_slot_panel_shows_the_standbys_slot_and_the_idle_one(servers: Servers) -> None:
    [target] = [t for t in server_targets() if t.panel == "WAL retained by replication slots"]
    rows = servers.evaluate(target.expr)["data"]["result"]
    on_primary = {r["metric"]["slot_name"] for r in rows if r["metric"]["database"] == "primary"}
    assert on_primary == {SLOT, IDLE_SLOT}


def test_every_rule_loads_evaluates_and_is_healthy(servers: Servers) -> None:
    assert servers.prometheus.rule_problems() == []


def test_the_connections_alert_joins_backends_with_the_servers_limit(servers: Servers) -> None:
    share = alert_expr("DBExporterConnectionsNearLimit").rsplit(">", 1)[0]
    found = servers.by_database(share)
    assert found.keys() == set(DATABASES)
    for rows in found.values():
        [row] = rows
        assert 0 < float(row["value"][1]) < 0.8


def test_the_wraparound_alert_compares_every_database_with_the_freeze_age(
    servers: Servers,
) -> None:
    # With a factor of 0 the comparison keeps every database the collector reports.
    everything = alert_expr("DBExporterWraparoundApproaching").replace("1.5 *", "0 *")
    found = servers.by_database(everything)
    assert found.keys() == set(DATABASES)
    for rows in found.values():
        assert {"postgres", "template1"} <= {row["metric"]["datname"] for row in rows}
    # As written, nothing on two fresh servers is anywhere near.
    assert (
        servers.prometheus.query(alert_expr("DBExporterWraparoundApproaching"))["data"]["result"]
        == []
    )


def test_the_inactive_slot_alert_finds_the_idle_slot_and_not_the_standbys(
    servers: Servers,
) -> None:
    expr = alert_expr("DBExporterInactiveSlotRetainingWAL")
    # Below the gigabyte: the idle slot holds a segment or so.
    rows = servers.prometheus.query(expr.replace("> 1073741824", ">= 0"))["data"]["result"]
    assert [(r["metric"]["database"], r["metric"]["slot_name"]) for r in rows] == [
        ("primary", IDLE_SLOT)
    ]
    assert servers.prometheus.query(expr)["data"]["result"] == []

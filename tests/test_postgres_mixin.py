"""postgres_exporter's own mixin (its alerts, recording rules and overview dashboard) on
`db-exporter serve` with `compatibility: postgres_exporter`, every collector at its default.

The facts (tests/postgres_mixin_facts.py: the names the mixin reads, the labels each query
relies on, the names it joins) are checked twice, on each server version here: in the sidecar's
/metrics (each name there, on every series the labels its queries need), and in a real
Prometheus scraping it, with queries built from the facts alone, never the mixin's own
expressions: `count by (<labels>) (<name>)` finds series with every label set, and each join
finds a match (`<left> and on (<labels>) <right>`; a many-to-one join also shows each right
series serves every left one, as `group_left` requires). Its known gaps (names
postgres_exporter does not expose either) are checked to be absent, and the joins that find
nothing against postgres_exporter itself to find nothing here too, so that the facts and the
README say what users get.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from collector_helpers import dsn, execute
from compat_server import JOIN_LABEL, Scrape
from postgres_mixin_facts import BROKEN_JOINS, GAPS, JOINS, TARGET_LABELS, USES, Join, Use
from prom_helpers import Prometheus, http_get, needs_prometheus, running_prometheus
from sqlalchemy.engine import URL
from subprocesses import Running

JOB = "postgres"


@dataclass(frozen=True)
class Sidecar:
    target: str  # host:port
    version: int  # the server's major version

    def scrape(self) -> Scrape:
        status, body = http_get(f"http://{self.target}/metrics")
        assert status == 200, body
        return Scrape.parse(body)


def applies(fact: Use | Join, version: int) -> bool:
    return fact.before is None or version < fact.before


def every_collector_ran(sidecar: Sidecar) -> bool:
    """Each enabled collector's first run has ended well (and there is at least one)."""
    status, body = http_get(f"http://{sidecar.target}/metrics")
    runs = [line for line in body.splitlines() if line.startswith("exporter_collector_success{")]
    return status == 200 and bool(runs) and all(line.endswith(" 1.0") for line in runs)


@pytest.fixture(scope="module")
def sidecar(compat_server: URL) -> Iterator[Sidecar]:
    [(version,)] = execute(compat_server, "SELECT current_setting('server_version_num')::int")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DB_EXPORTER_")}
    env.pop("DATABASE_URL", None)
    env |= {
        "DB_EXPORTER_COMPATIBILITY": "postgres_exporter",
        "DB_EXPORTER_DATABASES__0__NAME": "main",
        "DB_EXPORTER_DATABASES__0__DSN": dsn(compat_server),
    }
    process = Running("serve", "--listen", "127.0.0.1:0", env=env)
    try:
        target = process.wait_for(r"serving http://(\S+)/metrics").group(1)
        served = Sidecar(target, version // 10000)
        process.wait_until("every collector ran", lambda: every_collector_ran(served))
        yield served
    finally:
        process.close()


def exporter_labels(use: Use) -> frozenset[str]:
    return frozenset(use.labels) - TARGET_LABELS


def test_every_name_the_mixin_reads_is_served_with_its_labels(sidecar: Sidecar) -> None:
    found = sidecar.scrape()
    checked: set[str] = set()
    wrong: list[str] = []
    for use in USES:
        if use.name in GAPS or not applies(use, sidecar.version):
            continue
        samples = found.labels.get(use.name, [])
        if not samples:
            wrong.append(f"{use.source} {use.readers}: no {use.name}")
        for names in samples:
            if not exporter_labels(use) <= names:
                wrong.append(f"{use.source} {use.readers}: {use.name} has only {sorted(names)}")
        checked.add(use.name)
    assert wrong == []
    assert len(checked) >= 30  # every name the mixin reads, not a lucky few
    # Every series also carries db-exporter's join label; the mixin's queries ignore it.
    assert all(JOIN_LABEL in names for name in checked for names in found.labels[name])


def test_the_known_gaps_are_what_postgres_exporter_lacks_too(sidecar: Sidecar) -> None:
    """Names postgres_exporter does not expose (the mixin reads them all the same) are absent
    here too, and so are those it stops exposing from PostgreSQL 17 on."""
    found = sidecar.scrape()
    read = {use.name for use in USES}
    assert set(GAPS) <= read
    absent = set(GAPS) | {use.name for use in USES if not applies(use, sidecar.version)}
    assert absent.isdisjoint(found.labels)
    # What postgres_exporter has instead, under its collectors' names.
    instead = {"pg_replication_lag_seconds"} | {
        name.replace("_blks_", "_blocks_") for name in GAPS if "_blks_" in name
    }
    assert instead <= set(found.labels)


@pytest.fixture(scope="module")
def prometheus(sidecar: Sidecar) -> Iterator[Prometheus]:
    names = {u.name for u in USES if u.name not in GAPS and applies(u, sidecar.version)}
    with running_prometheus([sidecar.target], JOB, []) as prom:
        # Until a scrape has been stored with every name (the queries then only read).
        every_name = f'count by (__name__) ({{__name__=~"{"|".join(sorted(names))}"}})'
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if len(prom.query(every_name)["data"]["result"]) == len(names):
                break
            time.sleep(0.5)
        yield prom


@needs_prometheus
def test_each_name_has_its_labels_in_prometheus(sidecar: Sidecar, prometheus: Prometheus) -> None:
    wrong = []
    for use in USES:
        if use.name in GAPS or not applies(use, sidecar.version):
            continue
        labels = sorted(use.labels)
        rows = prometheus.query(f"count by ({', '.join(labels)}) ({use.name})")["data"]["result"]
        if not rows:
            wrong.append(f"{use.source} {use.readers}: nothing for {use.name}")
        for row in rows:
            if not all(row["metric"].get(label) for label in labels):
                wrong.append(f"{use.source} {use.readers}: {use.name} lacks one of {labels}")
    assert wrong == []


def join_query(join: Join) -> str:
    matching = "" if join.on is None else f"on ({', '.join(join.on)}) "
    return f"{join.left} and {matching}{join.right}"


@needs_prometheus
def test_each_join_finds_its_match_in_prometheus(sidecar: Sidecar, prometheus: Prometheus) -> None:
    wrong = []
    for join in JOINS:
        if {join.left, join.right} & set(GAPS) or not applies(join, sidecar.version):
            continue
        rows = prometheus.query(join_query(join))["data"]["result"]
        broken = (join.left, join.right) in BROKEN_JOINS
        if bool(rows) == broken:
            wrong.append(f"{join.source} {join.readers}: {join_query(join)} -> {len(rows)} rows")
        if join.many_to_one and not broken:
            assert join.on is not None
            on = ", ".join(join.on)
            # group_left needs one right series per match: never two.
            answer = prometheus.query(f"count by ({on}) ({join.right}) > 1")
            assert answer["status"] == "success", answer
            if answer["data"]["result"]:
                wrong.append(f"{join.readers}: several {join.right} per ({on})")
    assert wrong == []

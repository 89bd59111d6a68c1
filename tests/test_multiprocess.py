"""Several worker processes, each with its own pool: one scrape returns the sum over workers,
and the files of workers that have ended are folded without losing or double-counting a value."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from processes import get, running
from prometheus_client import generate_latest
from prometheus_client.multiprocess import mark_process_dead
from prometheus_client.parser import text_string_to_metric_families
from sockets import free_port
from sqlalchemy.engine import URL

from exporter import Metrics, multiprocess
from exporter.dsn import sync_url
from exporter.endpoints import scraped_registry
from exporter.multiprocess import MANIFEST, FoldingCollector, commit, fold, merged

# A worker: instruments its engine, runs argv[2] statements on two connections and then one
# request of REQUEST_STATEMENTS more, says "ready" and holds both connections checked out until
# a line comes on stdin (or it is killed).
REQUEST_STATEMENTS = 3
WORKER = f"""
import sys
from sqlalchemy import create_engine, text
from exporter import instrument
from exporter.integrations.request import RequestFields, request_scope

engine = create_engine(sys.argv[1], pool_size=2)
instrument(engine, database="main")
with engine.connect() as first, engine.connect() as second:
    for _ in range(int(sys.argv[2]) - 1):
        first.execute(text("SELECT count(*) FROM pg_database"))
    second.execute(text("SELECT count(*) FROM pg_database"))
    with request_scope(RequestFields(lambda: "/report", method="GET")):
        for _ in range({REQUEST_STATEMENTS}):
            first.execute(text("SELECT count(*) FROM pg_database"))
    print("ready", flush=True)
    sys.stdin.readline()
"""
# Counts to argv[1] on a counter of db-exporter's metrics (no database: as fast as it goes).
COUNTER = """
import sys
from prometheus_client import CollectorRegistry
from exporter import Metrics

timeouts = Metrics(CollectorRegistry()).pool_timeouts.labels("main")
for _ in range(int(sys.argv[1])):
    timeouts.inc()
"""
# Records 1, forks a child that records 2 and says its pid, and waits for it; the child ends
# on a line on stdin.
FORKER = """
import os, sys
from prometheus_client import CollectorRegistry
from exporter import Metrics

timeouts = Metrics(CollectorRegistry()).pool_timeouts.labels("main")
timeouts.inc()
child = os.fork()
if child == 0:
    timeouts.inc(2)
    print(os.getpid(), flush=True)
    sys.stdin.readline()
    os._exit(0)
os.waitpid(child, 0)
"""
MAIN = frozenset({("database", "main")})
SELECTS = MAIN | {("operation", "SELECT"), ("table", "pg_database"), ("status", "ok")}
REPORT = frozenset({("route", "/report")})
GAUGES = {"db_connections_active", "exporter_build_info"}
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples_of(body: bytes | str) -> Samples:
    text = body.decode() if isinstance(body, bytes) else body
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def collected(collector: FoldingCollector | None, directory: Path) -> Samples:
    """One scrape: through `collector`, or prometheus_client's plain reading when None."""
    metrics = collector.collect() if collector else merged(str(directory))

    class Once:
        def collect(self) -> object:
            return metrics

    return samples_of(generate_latest(Once()))  # type: ignore[arg-type]


def sums(samples: Samples) -> Samples:
    """Counters and histograms: what must survive a fold exactly (gauges of ended processes
    go, as their multiprocess_mode says)."""
    return {key: value for key, value in samples.items() if key[0] not in GAUGES}


def pids(directory: Path) -> set[str]:
    """The processes that have files of values in the directory."""
    return {
        name.rsplit("_", 1)[1][: -len(".db")]
        for name in os.listdir(directory)
        if name.endswith(".db")
    }


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    path = tmp_path / "prometheus"
    path.mkdir()
    return path


@pytest.fixture
def environment(directory: Path) -> dict[str, str]:
    return os.environ | {"PROMETHEUS_MULTIPROC_DIR": str(directory)}


class Workers:
    """Worker processes against the test database, started and ended as a process manager
    (gunicorn) does."""

    def __init__(self, database_url: URL, environment: dict[str, str], statements: int) -> None:
        self.dsn = sync_url(database_url).render_as_string(hide_password=False)
        self.environment = environment
        self.statements = statements
        self.live: list[subprocess.Popen[str]] = []
        self.started = 0

    def start(self, count: int) -> None:
        for _ in range(count):
            worker = subprocess.Popen(
                [sys.executable, "-c", WORKER, self.dsn, str(self.statements)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env=self.environment,
            )
            assert worker.stdout is not None
            assert worker.stdout.readline().strip() == "ready"
            self.live.append(worker)
            self.started += 1

    def end_oldest(self, kill: bool, mark_dead: bool) -> None:
        """Ends the oldest worker: cleanly, or killed with its connections checked out (as
        gunicorn's worker timeout does)."""
        worker = self.live.pop(0)
        if kill:
            worker.kill()
        worker.communicate(None if kill else "stop\n", timeout=30)
        assert worker.returncode == (-signal.SIGKILL if kill else 0)
        if mark_dead:  # gunicorn's child_exit hook, as the README says
            mark_process_dead(worker.pid, path=self.environment["PROMETHEUS_MULTIPROC_DIR"])

    def stop(self) -> None:
        for worker in self.live:
            worker.communicate("stop\n", timeout=30)

    def expected(self) -> Samples:
        return {
            ("query_duration_seconds_count", SELECTS): self.started
            * (self.statements + REQUEST_STATEMENTS),
            ("db_request_statements_count", REPORT): self.started,
            ("db_request_statements_sum", REPORT): self.started * REQUEST_STATEMENTS,
            ("db_connections_created_total", MAIN): self.started * 2,
            ("db_connections_active", MAIN): len(self.live) * 2,
        }


@pytest.fixture
def workers(database_url: URL, environment: dict[str, str]) -> Iterator[Workers]:
    started = Workers(database_url, environment, statements=5)
    yield started
    started.stop()


def test_one_scrape_sums_every_worker(tmp_path: Path, workers: Workers) -> None:
    workers.start(2)
    config = tmp_path / "exporter.yaml"
    config.write_text("log_level: INFO\n")
    listen = f"127.0.0.1:{free_port()}"
    serve = ("serve", "--config", str(config), "--listen", listen)
    with running(*serve, env=workers.environment) as sidecar:
        sidecar.wait_for("serving")
        status, body = get(f"http://{listen}/metrics")
    assert status == 200
    samples = samples_of(body)
    for key, value in workers.expected().items():
        assert samples[key] == value, key


@pytest.mark.parametrize("mark_dead", [True, False], ids=["mark_process_dead", "unmarked"])
def test_recycled_workers_are_folded_and_every_sum_stays_exact(
    workers: Workers, directory: Path, metrics: Metrics, monkeypatch: pytest.MonkeyPatch,
    mark_dead: bool,
) -> None:  # fmt: skip
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))

    def scrape() -> Samples:
        return samples_of(generate_latest(scraped_registry(metrics)))

    def churn(ended: int) -> None:  # one in three killed mid-request
        for n in range(ended):
            workers.end_oldest(kill=n % 3 == 2, mark_dead=mark_dead)
            workers.start(1)

    workers.start(3)
    churn(3)
    before = collected(None, directory)
    samples = scrape()
    for key, value in workers.expected().items():
        assert samples[key] == value, key
    assert sums(samples) == sums(before)
    assert pids(directory) == {str(w.pid) for w in workers.live} | {"aggregate"}

    churn(3)  # folded again, into the aggregate
    before = collected(None, directory)
    samples = scrape()
    for key, value in workers.expected().items():
        assert samples[key] == value, key
    assert sums(samples) == sums(before)

    workers.stop()
    workers.live.clear()
    before = collected(None, directory)
    samples = scrape()
    assert ("db_connections_active", MAIN) not in samples  # no process left to have one
    assert sums(samples) == sums(before)
    assert pids(directory) == {"aggregate"}
    assert not [name for name in os.listdir(directory) if name.startswith("alive_")]


def test_a_fold_stopped_half_way_loses_and_double_counts_nothing(
    workers: Workers, directory: Path
) -> None:
    workers.start(3)
    ended = [str(worker.pid) for worker in workers.live[:2]]
    workers.end_oldest(kill=True, mark_dead=False)
    workers.end_oldest(kill=False, mark_dead=False)
    before = collected(None, directory)

    commit(str(directory), ended)  # the new aggregates are written, the manifest in place...
    assert collected(None, directory) == before  # ...and nothing is counted twice yet
    manifest = json.loads((directory / MANIFEST).read_text())
    new, final = next(iter(manifest["rename"].items()))
    os.replace(directory / new, directory / final)  # it stopped after its first rename

    samples = collected(FoldingCollector(str(directory)), directory)
    assert sums(samples) == sums(before)
    assert samples[("db_connections_active", MAIN)] == 2  # the live worker's only
    assert pids(directory) == {str(workers.live[0].pid), "aggregate"}
    assert fold(str(directory)) == 0


def test_folds_beside_live_writers_count_every_increment(
    directory: Path, environment: dict[str, str]
) -> None:
    each, timeouts = 20_000, ("db_pool_timeouts_total", MAIN)
    writers = [
        subprocess.Popen([sys.executable, "-c", COUNTER, str(each)], env=environment)
        for _ in range(4)
    ]
    collector = FoldingCollector(str(directory))
    seen = []
    try:
        while any(writer.poll() is None for writer in writers):  # folds while they write, end
            seen.append(collected(collector, directory).get(timeouts, 0))
    finally:
        for writer in writers:
            if writer.poll() is None:  # the loop failed: leave nothing running
                writer.kill()
            writer.wait()
    assert all(writer.returncode == 0 for writer in writers)
    seen.append(collected(collector, directory)[timeouts])
    assert seen[-1] == 4 * each
    assert seen == sorted(seen)  # never a value counted twice, then not
    assert pids(directory) == {"aggregate"}


def test_a_forked_child_is_alive_on_its_own(directory: Path, environment: dict[str, str]) -> None:
    forker = subprocess.Popen(
        [sys.executable, "-c", FORKER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=environment,
    )
    assert forker.stdout is not None
    child = forker.stdout.readline().strip()
    assert (directory / f"alive_{child}.lock").exists()
    assert fold(str(directory)) == 0  # parent and child both alive
    forker.communicate("stop\n", timeout=30)
    assert forker.returncode == 0
    assert fold(str(directory)) == 2
    timeouts = collected(None, directory)[("db_pool_timeouts_total", MAIN)]
    assert timeouts == 1 + 2


def test_a_long_backlog_is_folded_a_bounded_share_at_a_time(
    directory: Path, environment: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for _ in range(3):
        subprocess.run([sys.executable, "-c", COUNTER, "10"], env=environment, check=True)
    monkeypatch.setattr(multiprocess, "FOLD_AT_MOST", 2)
    timeouts = ("db_pool_timeouts_total", MAIN)
    assert collected(None, directory)[timeouts] == 30
    assert fold(str(directory)) == 2
    assert collected(None, directory)[timeouts] == 30
    assert len(pids(directory)) == 2  # the aggregate and the process left for the next fold
    assert fold(str(directory)) == 1
    assert collected(None, directory)[timeouts] == 30
    assert pids(directory) == {"aggregate"}


def test_a_file_being_created_is_not_read(directory: Path, environment: dict[str, str]) -> None:
    subprocess.run([sys.executable, "-c", COUNTER, "10"], env=environment, check=True)
    (directory / "counter_999999.db").touch()  # created by its process, not sized yet
    samples = collected(FoldingCollector(str(directory)), directory)
    assert samples[("db_pool_timeouts_total", MAIN)] == 10

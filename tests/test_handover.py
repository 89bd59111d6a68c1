"""Slow-query records of every worker process reach the sidecar (exporter/slowlog/handover.py,
handover_reader.py): gunicorn's workers running a Flask application against the real
PostgreSQL, `db-exporter serve` as a separate process, and the hand-over files themselves."""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from processes import Running, get, slow_queries, wait_for_slow_queries
from prometheus_client import CollectorRegistry
from sockets import free_port
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Engine

from exporter import Metrics, instrument, uninstrument
from exporter.dsn import sync_url
from exporter.settings import ConfigError, SlowQuerySettings, load_settings
from exporter.slowlog import SlowQueryLog
from exporter.slowlog.handover import prune, segments
from exporter.slowlog.handover_reader import HandoverReader

# The application: every request reports the pid of the worker that served it.
APP = """
import os
from flask import Flask
from sqlalchemy import create_engine, text
from exporter import instrument
from exporter.integrations.flask import instrument_flask

engine = create_engine(os.environ["APP_DATABASE_URL"], pool_size=2)
instrument(engine)
app = Flask(__name__)
instrument_flask(app)


@app.get("/slow")
def slow():
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_sleep(0.15)"))  # the slow statement
    return str(os.getpid())


@app.get("/orders")
def orders():
    with engine.connect() as conn:
        for number in range(12):
            conn.execute(text("SELECT :n AS order_id"), {"n": number})  # the N+1
    return str(os.getpid())
"""


def app_line(marker: str) -> int:
    """The line of APP ending in `# marker`, as a call site gives it."""
    return next(n for n, line in enumerate(APP.splitlines(), 1) if line.endswith(f"# {marker}"))


SLOW_LINE = app_line("the slow statement")
N_PLUS_ONE_LINE = app_line("the N+1")


class Deployment:
    """gunicorn with `workers` workers running APP, and the sidecar, as the README sets them up:
    PROMETHEUS_MULTIPROC_DIR in the environment of both."""

    def __init__(
        self, tmp_path: Path, database_url: URL, workers: int, app: str = APP, preload: bool = False
    ) -> None:
        self.cwd = tmp_path
        (tmp_path / "app.py").write_text(app)
        self.preload = preload
        if preload:  # the master imports the application, then forks the workers
            (tmp_path / "gunicorn.conf.py").write_text("preload_app = True\n")
        self.directory = tmp_path / "multiproc"
        self.directory.mkdir()
        dsn = sync_url(database_url).render_as_string(hide_password=False)
        self.environment = os.environ | {
            "PROMETHEUS_MULTIPROC_DIR": str(self.directory),
            "APP_DATABASE_URL": dsn,
            "DATABASE_URL": dsn,
            "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path]),
        }
        self.app_port, self.workers = free_port(), workers
        self.app: Running | None = None
        self.sidecar: Running | None = None
        self.sidecar_port = free_port()

    def start_app(self) -> None:
        config = ("-c", "gunicorn.conf.py") if self.preload else ()
        self.app = Running(
            *config, "-w", str(self.workers), "-b", f"127.0.0.1:{self.app_port}", "app:app",
            env=self.environment, cwd=self.cwd,
            command=(sys.executable, "-m", "gunicorn"),
        )  # fmt: skip
        self.app.wait_until("serving", lambda: get(f"{self.app_url}/slow")[0] == 200)

    @property
    def app_url(self) -> str:
        return f"http://127.0.0.1:{self.app_port}"

    def start_sidecar(self) -> None:
        listen = f"127.0.0.1:{self.sidecar_port}"
        self.sidecar = Running("serve", "--listen", listen, env=self.environment, cwd=self.cwd)
        self.sidecar.wait_for("serving")

    def stop_sidecar(self) -> None:
        assert self.sidecar is not None
        assert self.sidecar.stop(signal.SIGTERM) == 0
        self.sidecar.close()
        self.sidecar = None

    def request(self, path: str, request_id: str | None = None) -> int:
        """The pid of the worker that served it."""
        import urllib.request

        headers = {"X-Request-ID": request_id} if request_id else {}
        req = urllib.request.Request(self.app_url + path, headers=headers)
        with urllib.request.urlopen(req, timeout=30) as response:
            assert response.status == 200
            return int(response.read())

    def requests_until_every_worker_served(self, path: str) -> dict[str, int]:
        """Concurrent requests (gunicorn's sync workers each serve one at a time) until each
        worker served some: request id -> pid."""
        served: dict[str, int] = {}
        with ThreadPoolExecutor(self.workers * 2) as pool:
            for round_ in range(20):
                ids = [f"r{round_}-{n}" for n in range(self.workers * 2)]
                pids = pool.map(lambda i: self.request(path, i), ids)
                served.update(zip(ids, pids, strict=True))
                if len(set(served.values())) == self.workers:
                    return served
        raise AssertionError(f"not every worker served: {served}")

    def slow_queries(self) -> dict[str, Any]:
        return slow_queries(f"http://127.0.0.1:{self.sidecar_port}")

    def wait_for_sidecar(self, what: str, check: Any) -> dict[str, Any]:
        """Poll /slow-queries until `check(answer)` holds."""
        assert self.sidecar is not None
        url = f"http://127.0.0.1:{self.sidecar_port}"
        return wait_for_slow_queries(self.sidecar, url, what, check)

    def close(self) -> None:
        for process in (self.sidecar, self.app):
            if process is not None:
                process.close()


@pytest.fixture
def deployment(tmp_path: Path, database_url: URL) -> Iterator[Deployment]:
    started = Deployment(tmp_path, database_url, workers=4)
    yield started
    started.close()


def by_request(answer: dict[str, Any], kind: str = "slow_query") -> dict[str, dict[str, Any]]:
    return {
        r["context"]["request_id"]: r
        for r in answer["records"]
        if r["kind"] == kind and "request_id" in r["context"]
    }


def test_slow_statements_and_n_plus_one_of_every_worker_reach_the_sidecar(
    deployment: Deployment,
) -> None:
    deployment.start_app()
    deployment.start_sidecar()
    served = deployment.requests_until_every_worker_served("/slow")
    orders = {deployment.request("/orders", f"orders-{n}") for n in range(3)}

    def complete(answer: dict[str, Any]) -> bool:
        found = by_request(answer)
        requests = sum(finding["requests"] for finding in answer["n_plus_one"])
        return set(served) <= set(found) and requests == 3

    answer = deployment.wait_for_sidecar("every worker's records merged", complete)
    found = by_request(answer)
    for request_id, pid in served.items():
        record = found[request_id]
        assert record["pid"] == pid
        assert record["call_site"]["file"] == "app.py"
        assert record["call_site"]["line"] == SLOW_LINE
        assert record["context"]["route"] == "/slow"
    assert len({found[i]["pid"] for i in served}) == deployment.workers
    (aggregate,) = [a for a in answer["aggregates"] if a["sql"] == "SELECT pg_sleep($1)"]
    # The warm-up requests made before every worker served count too.
    assert aggregate["count"] >= len(served)
    assert aggregate["worst"]["call_site"]["line"] == SLOW_LINE
    assert 150 <= aggregate["p95_ms"] <= aggregate["max_ms"]
    (finding,) = answer["n_plus_one"]
    assert finding["call_site"]["file"] == "app.py"
    assert finding["call_site"]["line"] == N_PLUS_ONE_LINE
    assert finding["requests"] == 3
    assert finding["repeats"] == 10  # the warning comes at n_plus_one_threshold
    assert set(finding["pids"]) == orders
    assert finding["routes"] == ["/orders"]
    # The sidecar plans the statement, once for every worker, on its own connection.
    planned = deployment.wait_for_sidecar(
        "the plan taken",
        lambda a: any(x["plan_summary"] for x in a["aggregates"] if x["sql"] == aggregate["sql"]),
    )
    assert planned
    status, page = get(f"http://127.0.0.1:{deployment.sidecar_port}/")
    assert status == 200
    assert f"app.py:{SLOW_LINE}" in page


def handed_over_records(directory: Path) -> list[dict[str, Any]]:
    """The records in the hand-over files."""
    found = []
    for segment in segments(str(directory)):
        for line in (directory / segment.name).read_bytes().splitlines():
            with suppress(ValueError, KeyError):  # a line being written; a skipped line
                found.append(json.loads(line)["record"])
    return found


def handed_over(directory: Path) -> set[str]:
    """The request ids of the records in the hand-over files."""
    return {r["context"].get("request_id") for r in handed_over_records(directory)}


def test_killed_workers_and_a_restarted_sidecar_lose_nothing_handed_over(
    deployment: Deployment,
) -> None:
    deployment.start_app()  # the sidecar absent: the workers serve all the same
    served = deployment.requests_until_every_worker_served("/slow")
    assert deployment.app is not None
    deployment.app.wait_until(  # the writer threads append soon after each statement
        "every record handed over",
        lambda: set(served) <= handed_over(deployment.directory / "slow-queries"),
    )
    for pid in set(served.values()):
        os.kill(pid, signal.SIGKILL)  # gunicorn starts new workers in their place
    after = {f"after-{n}": deployment.request("/slow", f"after-{n}") for n in range(4)}
    assert not set(after.values()) & set(served.values())
    everything = served | after

    def complete(answer: dict[str, Any]) -> bool:
        return set(everything) <= set(by_request(answer))

    deployment.start_sidecar()
    first = by_request(deployment.wait_for_sidecar("killed workers' records merged", complete))
    deployment.stop_sidecar()
    deployment.start_sidecar()
    again = by_request(deployment.wait_for_sidecar("records merged again", complete))
    for request_id, pid in everything.items():
        assert first[request_id]["pid"] == again[request_id]["pid"] == pid


# gunicorn's `preload_app`: the master imports the application and runs a slow statement (the
# warm-up) before it forks the workers, so its slow-query writer thread exists at fork time.
PRELOADED_APP = (
    APP
    + """
with engine.connect() as conn:
    conn.execute(text("SELECT pg_sleep(0.15) AS warm_up"))
engine.dispose()  # the workers open connections of their own (SQLAlchemy's advice for fork)
"""
)


def test_with_preload_app_every_worker_hands_its_own_records_over(
    tmp_path: Path, database_url: URL
) -> None:
    deployment = Deployment(tmp_path, database_url, workers=3, app=PRELOADED_APP, preload=True)
    try:
        deployment.start_app()
        deployment.start_sidecar()
        assert deployment.app is not None
        master = deployment.app.process.pid
        served = deployment.requests_until_every_worker_served("/slow")
        assert master not in served.values()

        def complete(answer: dict[str, Any]) -> bool:
            return set(served) <= set(by_request(answer))

        answer = deployment.wait_for_sidecar("every worker's records merged", complete)
        found = by_request(answer)
        for request_id, pid in served.items():
            assert found[request_id]["pid"] == pid
            assert found[request_id]["call_site"]["line"] == SLOW_LINE
        # The master's record, once, as the master's: no worker wrote it again.
        warm_ups = [r for r in answer["records"] if r["sql"] == "SELECT pg_sleep($1) AS warm_up"]
        assert [r["pid"] for r in warm_ups] == [master]
        # Each worker's segments are its own, under its own pid.
        assert {s.pid for s in segments(str(deployment.directory / "slow-queries"))} == {
            master,
            *served.values(),
        }
    finally:
        deployment.close()


# Logs 400 slow statements with stdout a pipe of its own that nobody reads yet, so that the
# writer blocks on it holding its lock, the rest queued; then forks. The child sends its records
# elsewhere (apply(), which needs the writer's lock), runs its own slow statement and waits
# for it to be written; the parent then drains the pipe ("writing": from just before the fork,
# so the writer is busy as it forks; "stuck": only once the child has ended) and reports.
FORKED = """
import dataclasses, json, os, sys, threading, time
from prometheus_client import CollectorRegistry
from sqlalchemy import create_engine, text
from exporter import Metrics, instrument
from exporter.settings import SlowQuerySettings
from exporter.slowlog import SlowQueryLog

directory, dsn, mode = sys.argv[1:]
read_end, write_end = os.pipe()
os.dup2(write_end, 1)
os.close(write_end)
drained = []

def drain():
    with os.fdopen(read_end, "rb") as pipe:
        drained.extend(pipe)

drainer = threading.Thread(target=drain, daemon=True)
at_fork = {}  # runs after the slow-query log's own hook (registered later, run earlier)
os.register_at_fork(before=lambda: at_fork.update(
    queued=log._queue.qsize(), locks_taken=len(log._held_for_fork)))

settings = SlowQuerySettings(
    stdout=True, handover_dir=directory, threshold_ms=0, records_per_second=0, queue_size=1000
)
metrics = Metrics(CollectorRegistry())
log = SlowQueryLog(settings, metrics)
engine = create_engine(dsn)
instrument(engine, metrics=metrics, slow_log=log)
with engine.connect() as conn:
    for _ in range(400):
        conn.execute(text("SELECT 1 AS parent"))
engine.dispose()
deadline = time.monotonic() + 60
while True:  # until the writer is blocked on the full pipe: its queue stops shrinking
    queued = log._queue.qsize()
    time.sleep(0.2)
    if queued and queued == log._queue.qsize():
        break
    assert time.monotonic() < deadline, "the writer never blocked"

def within(seconds, work):
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(seconds)
    return not thread.is_alive()

def own_statement():
    log.apply(dataclasses.replace(settings, stdout=False))  # the pipe is the parent's
    with engine.connect() as conn:
        conn.execute(text("SELECT 2 AS child"))
    log.flush()

if mode == "writing":
    drainer.start()
child = os.fork()
if child == 0:
    os._exit(0 if within(30, own_statement) else 3)
status = os.waitpid(child, 0)[1]
if mode == "stuck":
    drainer.start()
flushed = within(30, log.flush)
sys.stdout.flush()
os.close(1)
drainer.join(30)
report = {"parent": os.getpid(), "child": child, "child_exit": os.waitstatus_to_exitcode(status),
          "flushed": flushed, "lines": len(drained), "records": len(log.records(limit=10_000))}
print(json.dumps(report | at_fork), file=sys.stderr)
"""


@pytest.mark.parametrize("writer", ["writing", "stuck"])
def test_a_child_forked_while_the_writer_is_busy_writes_its_own_records_only(
    database_url: URL, directory: Path, writer: str
) -> None:
    dsn = sync_url(database_url).render_as_string(hide_password=False)
    forker = subprocess.run(
        [sys.executable, "-c", FORKED, str(directory), dsn, writer],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert forker.returncode == 0, forker.stderr
    report = json.loads(forker.stderr.splitlines()[-1])
    assert report["child_exit"] == 0, "the child hung on the lock its parent's writer held"
    assert report["queued"] > 0  # records were waiting for the parent's writer at fork time
    # "writing": the fork waited for the writer to finish its line; "stuck": not beyond its
    # wait, and the child did not need it to.
    assert report["locks_taken"] == (2 if writer == "writing" else 1)
    assert report["flushed"]
    records = handed_over_records(directory)
    mine = [r["sql"] for r in records if r["pid"] == report["child"]]
    theirs = [r["sql"] for r in records if r["pid"] == report["parent"]]
    assert {r["pid"] for r in records} == {report["parent"], report["child"]}
    assert mine.count("SELECT $1 AS child") == 1
    assert "SELECT $1 AS parent" not in mine  # the parent's queued records are not the child's
    assert theirs.count("SELECT $1 AS parent") == 400  # each written once, by the parent
    assert len(theirs) == report["records"] == report["lines"]


def test_an_unwritable_hand_over_directory_leaves_the_application_unaffected(
    tmp_path: Path, database_url: URL
) -> None:
    deployment = Deployment(tmp_path, database_url, workers=2)
    (deployment.directory / "slow-queries").write_text("a file where the directory goes\n")
    try:
        deployment.start_app()
        served = deployment.requests_until_every_worker_served("/slow")
        assert deployment.app is not None
        warnings = [line for line in deployment.app.err_lines if "hand-over" in line]
        assert 1 <= len(warnings) <= deployment.workers, warnings
        deployment.start_sidecar()
        status, body = get(f"http://127.0.0.1:{deployment.sidecar_port}/metrics")
        assert status == 200

        def total(prefix: str) -> float:
            return sum(float(line.split()[-1]) for line in body.splitlines()
                       if line.startswith(prefix))  # fmt: skip

        # Every slow statement's record (a request the start-up check gave up on included).
        assert total("slow_queries_total{") >= len(served)
        assert total("slow_query_handover_dropped_total ") == total("slow_queries_total{")
        assert deployment.slow_queries()["records"] == []
    finally:
        deployment.close()


# -- the hand-over files, written and read in this process ----------------------------------

SMALL = {"handover_max_bytes": 64 * 1024, "handover_max_total_bytes": 256 * 1024}


def handover_settings(directory: Path, **overrides: Any) -> SlowQuerySettings:
    values: dict[str, Any] = {
        "stdout": False,
        "handover_dir": str(directory),
        "records_per_second": 0,
        "ring_buffer_size": 10_000,
    }
    return SlowQuerySettings(**(values | overrides))


class Sidecar:
    """What `db-exporter serve` does with the directory: a slow-query log of its own, fed by
    a `HandoverReader`, each pass run by the test."""

    def __init__(self, directory: Path, **overrides: Any) -> None:
        self.metrics = Metrics(CollectorRegistry())
        settings = handover_settings(directory, **overrides)
        self.log = SlowQueryLog(settings, self.metrics)
        self.reader = HandoverReader(str(directory), self.log, self.metrics, settings)

    def skipped(self, reason: str) -> float:
        return float(self.metrics.slow_query_handover_skipped.labels(reason)._value.get())

    def close(self) -> None:
        self.log.close()


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    path = tmp_path / "handover"
    path.mkdir()
    return path


@pytest.fixture
def sidecar(directory: Path) -> Iterator[Sidecar]:
    started = Sidecar(directory)
    yield started
    started.close()


class Worker:
    """An instrumented engine whose slow-query log (every statement slow) hands over."""

    def __init__(self, database_url: URL, directory: Path, **overrides: Any) -> None:
        self.metrics = Metrics(CollectorRegistry())
        self.log = SlowQueryLog(
            handover_settings(directory, threshold_ms=0, **overrides), self.metrics
        )
        self.engine: Engine = create_engine(sync_url(database_url))
        instrument(self.engine, metrics=self.metrics, slow_log=self.log)

    def run(self, sql: str, times: int = 1) -> None:
        with self.engine.connect() as conn:
            for _ in range(times):
                conn.execute(text(sql))
        self.log.flush()

    def dropped(self) -> float:
        return float(self.metrics.slow_query_handover_dropped._value.get())

    def close(self) -> None:
        uninstrument(self.engine)
        self.engine.dispose()
        self.log.close()


@pytest.fixture
def worker(database_url: URL, directory: Path) -> Iterator[Worker]:
    started = Worker(database_url, directory, **SMALL)
    yield started
    started.close()


def slow_count(log: SlowQueryLog, sql: str) -> int:
    return sum(a["count"] for a in log.aggregates.ranked() if a["sql"] == sql)


def test_a_worker_s_files_stay_within_their_bound_and_a_reader_keeping_up_misses_nothing(
    worker: Worker, sidecar: Sidecar, directory: Path
) -> None:
    for _ in range(20):  # ~1,000 records of ~500 bytes: several segments of 32 KiB
        worker.run("SELECT 1 AS one", times=50)
        sidecar.reader.poll()
        files = segments(str(directory))
        assert len(files) <= 2
        assert sum(f.size for f in files) <= SMALL["handover_max_bytes"]
    assert slow_count(sidecar.log, "SELECT $1 AS one") == 1000
    assert slow_count(sidecar.log, "SELECT $1 AS one") == slow_count(worker.log, "SELECT $1 AS one")
    assert worker.dropped() == 0
    assert {r["pid"] for r in sidecar.log.records(limit=10_000)} == {os.getpid()}


def test_workers_hand_plans_over_and_the_sidecar_plans_each_fingerprint_once(
    database_url: URL, directory: Path, sidecar: Sidecar
) -> None:
    sidecar.log.register("main", sync_url(database_url))
    workers = [Worker(database_url, directory) for _ in range(3)]
    try:
        for each in workers:
            each.run("SELECT count(*) FROM pg_class WHERE relpages > 5")
            assert each.log.plans.attempts == 0  # handing over, a worker plans nothing
        assert len({s.worker for s in segments(str(directory))}) == 3
        sidecar.reader.poll()
        sidecar.log.flush()
    finally:
        for each in workers:
            each.close()
    (aggregate,) = [
        a for a in sidecar.log.aggregates.ranked() if a["sql"].startswith("SELECT count(*)")
    ]
    assert aggregate["count"] == 3
    # One plan per fingerprint (this one, SQLAlchemy's first-connect SELECTs), not per worker.
    selects = {
        a["fingerprint"] for a in sidecar.log.aggregates.ranked() if a["operation"] == "SELECT"
    }
    assert sidecar.log.plans.attempts == len(selects)
    assert aggregate["plan_summary"].startswith("Aggregate")
    assert aggregate["plan"][0]["Plan"]["Node Type"] == "Aggregate"


def record_line(pid: int, at: str, fingerprint: str = "f1", **extra: Any) -> bytes:
    record = {
        "time": at,
        "kind": "slow_query",
        "database": "main",
        "duration_ms": 150.0,
        "operation": "SELECT",
        "table": None,
        "fingerprint": fingerprint,
        "sql": "SELECT $1",
        "call_site": {"file": "app.py", "line": 7, "function": "view", "url": None},
        "context": {},
        "pid": pid,
    } | extra
    return json.dumps({"record": record, "plan": False}).encode() + b"\n"


def write_segment(directory: Path, pid: int, data: bytes, seq: int = 0) -> Path:
    path = directory / f"worker-{pid}-0badcafe-{seq:08d}.jsonl"
    path.write_bytes(data)
    return path


def test_corrupt_lines_and_a_torn_last_line_are_skipped_and_counted(
    directory: Path, sidecar: Sidecar
) -> None:
    good = record_line(11, "2026-11-29T10:00:00.000+00:00")
    corrupt = [
        b"not json\n",
        b"[1, 2]\n",
        b"\xff\xfe\n",
        record_line(11, "2026-11-29T10:00:01.000+00:00", duration_ms="slow"),
        json.dumps({"record": {"kind": "slow_query"}}).encode() + b"\n",
        b'{"skipped": {"count": -1}}\n',
        b"[" * 100_000 + b"\n",  # deeper than the parser goes
    ]
    torn = good[: len(good) // 2]
    write_segment(directory, 11, good + b"".join(corrupt) + good + torn)
    assert sidecar.reader.poll() == 2
    assert sidecar.skipped("corrupt") == len(corrupt)
    assert sidecar.skipped("torn") == 1  # nobody holds the file: its writer ended
    assert sidecar.reader.poll() == 0
    assert (sidecar.skipped("corrupt"), sidecar.skipped("torn")) == (len(corrupt), 1)
    assert [r["pid"] for r in sidecar.log.records()] == [11, 11]


def test_a_live_worker_s_unfinished_line_is_read_once_finished(
    directory: Path, sidecar: Sidecar
) -> None:
    line = record_line(12, "2026-11-29T10:00:00.000+00:00")
    path = write_segment(directory, 12, line[:10])
    with open(path, "ab") as writer:
        fcntl.flock(writer, fcntl.LOCK_SH)  # as a live worker holds its segment
        assert sidecar.reader.poll() == 0
        assert sidecar.skipped("torn") == 0
        writer.write(line[10:])
        writer.flush()
        assert sidecar.reader.poll() == 1
    assert sidecar.skipped("torn") == sidecar.skipped("corrupt") == 0


LINES = st.one_of(
    st.builds(
        lambda pid, second: record_line(pid, f"2026-11-29T10:00:{second:02d}.000+00:00"),
        st.integers(0, 2**22),
        st.integers(0, 59),
    ),
    st.binary(max_size=200),
)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(chunks=st.lists(LINES, max_size=20))
def test_any_bytes_in_a_hand_over_file_are_merged_or_counted_never_a_crash(
    tmp_path_factory: pytest.TempPathFactory, chunks: list[bytes]
) -> None:
    directory = tmp_path_factory.mktemp("fuzz")
    data = b"".join(chunks)
    write_segment(directory, 13, data)
    sidecar = Sidecar(directory)
    try:
        merged = sidecar.reader.poll()
        lines = data.count(b"\n")
        assert merged + sidecar.skipped("corrupt") == lines
        assert sidecar.skipped("torn") == (0 if data.endswith(b"\n") or not data else 1)
        assert all(isinstance(r["pid"], int) for r in sidecar.log.records(limit=1000))
    finally:
        sidecar.close()


def test_a_full_directory_drops_records_counted_with_one_warning(
    database_url: URL, directory: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Another live worker's files take the whole total.
    other = write_segment(directory, 14, b" " * (64 * 1024 - 1) + b"\n")
    with open(other, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_SH)
        full = Worker(database_url, directory, handover_max_bytes=64 * 1024,
                      handover_max_total_bytes=64 * 1024)  # fmt: skip
        try:
            full.run("SELECT 1 AS one", times=5)
        finally:
            full.close()
    # Every record (SQLAlchemy's first-connect statements' too), each in the worker's own log.
    assert full.dropped() == len(full.log.records(limit=1000))
    assert slow_count(full.log, "SELECT $1 AS one") == 5
    warnings = [r for r in caplog.records if "hand-over" in r.getMessage()]
    assert len(warnings) == 1
    assert "handover_max_total_bytes" in warnings[0].getMessage()
    assert [s.pid for s in segments(str(directory))] == [14]


# Forks `count` short-lived workers one after the other; each hands one record over and ends.
RECYCLED = """
import json, os, sys
from prometheus_client import CollectorRegistry
from exporter import Metrics
from exporter.settings import SlowQuerySettings
from exporter.slowlog.handover import HandoverWriter

directory, count, kept = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
settings = SlowQuerySettings(handover_dir=directory, handover_max_ended_workers=kept)
dropped = Metrics(CollectorRegistry()).slow_query_handover_dropped
for n in range(count):
    child = os.fork()
    if child == 0:
        record = {"time": "2026-11-29T10:00:00.000+00:00", "kind": "slow_query",
                  "database": "main", "duration_ms": 150.0, "operation": "SELECT",
                  "table": None, "fingerprint": "f%d" % n, "sql": "SELECT 1",
                  "call_site": None, "context": {}}
        HandoverWriter(directory, settings, dropped).hand_over(json.dumps(record), plan=False)
        os._exit(0)
    os.waitpid(child, 0)
"""


def test_a_thousand_recycled_workers_leave_bounded_files(directory: Path) -> None:
    kept = 50
    subprocess.run(
        [sys.executable, "-c", RECYCLED, str(directory), "1000", str(kept)],
        check=True,
        timeout=300,
    )
    files = segments(str(directory))
    # Each new worker prunes before its first segment: the ended ones beyond `kept` are gone.
    assert len({f.worker for f in files}) == kept + 1
    assert sorted(os.listdir(directory)) == sorted(f.name for f in files)  # nothing else left
    sidecar = Sidecar(directory, handover_max_ended_workers=kept)
    try:
        assert sidecar.reader.poll() == kept + 1
        prune(str(directory), sidecar.reader.settings)
        assert len(segments(str(directory))) == kept
    finally:
        sidecar.close()


def test_ended_workers_files_expire_and_live_ones_stay(worker: Worker, directory: Path) -> None:
    worker.run("SELECT 1 AS one")
    write_segment(directory, 15, record_line(15, "2026-11-29T10:00:00.000+00:00"))
    settings = handover_settings(directory)
    prune(str(directory), settings)
    assert {s.pid for s in segments(str(directory))} == {15, os.getpid()}  # not expired yet
    prune(str(directory), settings, now=time.time() + settings.handover_keep_seconds + 1)
    assert {s.pid for s in segments(str(directory))} == {os.getpid()}  # held: alive


def test_two_sidecars_read_one_directory_and_change_nothing(
    worker: Worker, directory: Path
) -> None:
    worker.run("SELECT 1 AS one", times=30)
    first, second = Sidecar(directory), Sidecar(directory)
    try:
        written = len(worker.log.records(limit=1000))  # first-connect statements' too
        assert first.reader.poll() == second.reader.poll() == written
        worker.run("SELECT 1 AS one", times=5)
        before = {s.name: s.size for s in segments(str(directory))}
        assert first.reader.poll() == second.reader.poll() == 5
        assert {s.name: s.size for s in segments(str(directory))} == before
        assert slow_count(first.log, "SELECT $1 AS one") == 35
        assert slow_count(second.log, "SELECT $1 AS one") == 35
    finally:
        first.close()
        second.close()


def test_records_of_clocks_that_disagree_are_ordered_by_their_own_times(
    directory: Path, sidecar: Sidecar
) -> None:
    # Worker 21's clock is an hour ahead; worker 22's went back between its two records.
    write_segment(directory, 21, record_line(21, "2026-11-29T11:00:00.000+00:00"))
    write_segment(
        directory,
        22,
        record_line(22, "2026-11-29T10:00:05.000+00:00")
        + record_line(22, "2026-11-29T10:00:01.000+00:00"),
    )
    assert sidecar.reader.poll() == 3
    times = [r["time"] for r in sidecar.log.records()]
    assert times == sorted(times, reverse=True)
    assert [r["pid"] for r in sidecar.log.records()] == [21, 22, 22]
    (aggregate,) = sidecar.log.aggregates.ranked()
    assert aggregate["last_seen"] == "2026-11-29T11:00:00.000+00:00"
    assert aggregate["count"] == 3
    assert aggregate["p95_ms"] == aggregate["max_ms"] == 150.0


def test_statements_the_record_rate_left_without_a_record_still_count_on_the_sidecar(
    database_url: URL, directory: Path, sidecar: Sidecar
) -> None:
    limited = Worker(database_url, directory, records_per_second=2)
    try:
        limited.run("SELECT 2 AS two", times=40)
        sidecar.reader.poll()
    finally:
        limited.close()
    records = [r for r in sidecar.log.records(limit=1000) if r["sql"] == "SELECT $1 AS two"]
    assert 2 <= len(records) < 40  # most got no record, within the second
    assert slow_count(sidecar.log, "SELECT $1 AS two") == 40
    assert slow_count(limited.log, "SELECT $1 AS two") == 40


def test_hand_over_bounds_that_contradict_each_other_are_one_clear_error() -> None:
    env = {
        "DB_EXPORTER_SLOW_QUERIES__HANDOVER_MAX_BYTES": "1048576",
        "DB_EXPORTER_SLOW_QUERIES__HANDOVER_MAX_TOTAL_BYTES": "524288",
    }
    with pytest.raises(ConfigError) as error:
        load_settings(env=env)
    message = str(error.value)
    assert "\n" not in message
    assert "handover_max_total_bytes (524288) must be at least handover_max_bytes" in message


@settings(max_examples=100, deadline=None)
@given(
    per_worker=st.one_of(st.integers(-(2**40), 2**40), st.text(max_size=12)),
    total=st.one_of(st.integers(-(2**40), 2**40), st.text(max_size=12)),
    keep=st.one_of(st.floats(allow_nan=True), st.text(max_size=12)),
)
def test_any_hand_over_settings_from_the_environment_are_valid_or_one_error_line(
    per_worker: object, total: object, keep: object
) -> None:
    env = {
        "DB_EXPORTER_SLOW_QUERIES__HANDOVER_MAX_BYTES": str(per_worker),
        "DB_EXPORTER_SLOW_QUERIES__HANDOVER_MAX_TOTAL_BYTES": str(total),
        "DB_EXPORTER_SLOW_QUERIES__HANDOVER_KEEP_SECONDS": str(keep),
    }
    problem = None
    try:
        loaded = load_settings(env=env).slow_queries
    except ConfigError as error:
        problem = str(error)
    if problem is not None:
        assert "\n" not in problem
        assert "HANDOVER" in problem or "handover" in problem
    else:
        assert 64 * 1024 <= loaded.handover_max_bytes <= loaded.handover_max_total_bytes
        assert loaded.handover_keep_seconds >= 0


def test_hand_over_settings_applied_later_take_effect_in_engines_instrumented_before(
    database_url: URL, directory: Path, sidecar: Sidecar
) -> None:
    late = Worker(database_url, directory, handover=False)
    try:
        late.run("SELECT 3 AS three")
        assert segments(str(directory)) == []
        late.log.apply(dataclasses.replace(late.log.settings, handover=True))
        late.run("SELECT 3 AS three")
        late.log.apply(dataclasses.replace(late.log.settings, handover=False))
        late.run("SELECT 3 AS three")
    finally:
        late.close()
    sidecar.reader.poll()
    assert slow_count(sidecar.log, "SELECT $1 AS three") == 1
    assert slow_count(late.log, "SELECT $1 AS three") == 3

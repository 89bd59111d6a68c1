"""Slow-query records of every worker process reach the sidecar (exporter/slowlog/handover.py,
handover_reader.py): gunicorn's workers running a Flask application against the real
PostgreSQL, `db-exporter serve` as a separate process, and the hand-over files themselves."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from processes import Running, free_port, get
from sqlalchemy.engine import URL

from exporter.dsn import sync_url

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

    def __init__(self, tmp_path: Path, database_url: URL, workers: int) -> None:
        self.cwd = tmp_path
        (tmp_path / "app.py").write_text(APP)
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
        self.app = Running(
            "-w", str(self.workers), "-b", f"127.0.0.1:{self.app_port}", "app:app",
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
        status, body = get(f"http://127.0.0.1:{self.sidecar_port}/slow-queries?limit=1000")
        assert status == 200, body
        answer: dict[str, Any] = json.loads(body)
        return answer

    def wait_for_sidecar(self, what: str, check: Any) -> dict[str, Any]:
        """Poll /slow-queries until `check(answer)` holds."""
        assert self.sidecar is not None
        found: dict[str, Any] = {}

        def holds() -> bool:
            nonlocal found
            found = self.slow_queries()
            return bool(check(found))

        try:
            self.sidecar.wait_until(what, holds, timeout=60)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nlast answer: {json.dumps(found)[:4000]}") from None
        return found

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


def test_killed_workers_and_a_restarted_sidecar_lose_nothing_handed_over(
    deployment: Deployment,
) -> None:
    deployment.start_app()  # the sidecar absent: the workers serve all the same
    served = deployment.requests_until_every_worker_served("/slow")
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
        dropped = [
            float(line.split()[-1])
            for line in body.splitlines()
            if line.startswith("slow_query_handover_dropped_total ")
        ]
        assert dropped == [float(len(served) + 1)]  # the first request's, before the loop too
        assert deployment.slow_queries()["records"] == []
    finally:
        deployment.close()

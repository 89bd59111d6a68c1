"""`db-exporter demo --workers N`: the wallet in worker processes beside the demo's sidecar, as
real processes against a real PostgreSQL: every worker's records on the one page, /metrics
summing them, a worker's end reported, and nothing left behind however the demo stops."""

from __future__ import annotations

import argparse
import io
import logging
import os
import shutil
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import redirect_stderr
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from processes import (
    child_pids,
    get,
    is_running,
    slow_queries,
    wait_for_slow_queries,
)
from prometheus_client.multiprocess import MultiProcessCollector
from sockets import free_port
from sqlalchemy.engine import URL
from subprocesses import (
    Running,
    assert_one_line_error,
    assert_slow_query_records_only,
    log_records,
    run_cli,
)

from exporter.cli import DEMO_MAX_WORKERS, parse_args
from exporter.demo.run import back_up, demo_database_settings
from exporter.settings import BackupsCollectorSettings

STARTED = r'(\d+) worker processes \(pids ([\d, ]+)\) hand their records over in ([^\s"]+)'
SLOW_REPORT = "FROM ledger_entries"  # WalletWorkload.slow_report's statement
N_PLUS_ONE_ROUTE = "/reports/users"  # WalletWorkload.users_report's page


@dataclass
class Demo:
    running: Running
    url: str
    workers: list[int]
    shared: Path

    @property
    def pid(self) -> int:
        return self.running.process.pid

    def slow_queries(self) -> dict[str, Any]:
        return slow_queries(self.url)

    def wait_for_page(self, what: str, check: Any) -> dict[str, Any]:
        return wait_for_slow_queries(self.running, self.url, what, check)


def start_demo(database: URL, *flags: str) -> Running:
    env = {**os.environ, "DATABASE_URL": database.render_as_string(hide_password=False)}
    return Running("demo", *flags, env=env)


@pytest.fixture
def demo(fresh_database: URL, request: pytest.FixtureRequest) -> Iterator[Demo]:
    """The demo with two workers (and the flags a test gives by indirect parametrization)."""
    flags = getattr(request, "param", ())
    running = start_demo(fresh_database, *flags, "--workers", "2", "--listen", "127.0.0.1:0")
    try:
        started = running.wait_for(STARTED, timeout=120)
        url = running.wait_for(r"serving (http://\S+)/metrics").group(1)
        workers = [int(pid) for pid in started.group(2).split(", ")]
        assert int(started.group(1)) == len(workers) == 2
        yield Demo(running, url, workers, Path(started.group(3)))
    finally:
        running.close()


def slow_report_pids(answer: dict[str, Any]) -> set[int]:
    return {
        r["pid"] for r in answer["records"] if r["kind"] == "slow_query" and SLOW_REPORT in r["sql"]
    }


def n_plus_one_pids(answer: dict[str, Any]) -> set[int]:
    return {
        pid
        for finding in answer["n_plus_one"]
        if N_PLUS_ONE_ROUTE in finding["routes"]
        for pid in finding["pids"]
    }


def query_count(files: list[Path]) -> float:
    """query_duration_seconds' count over every label, as the given metric files hold it."""
    merged = MultiProcessCollector.merge([str(f) for f in files], accumulate=True)  # type: ignore[no-untyped-call]
    return sum(
        s.value
        for family in merged
        for s in family.samples
        if s.name == "query_duration_seconds_count"
    )


def scraped_query_count(url: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    status, body = get(f"{url}/metrics")
    assert status == 200
    return sum(
        s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
        if s.name == "query_duration_seconds_count"
    )


def assert_nothing_left(demo: Demo, children: set[int]) -> None:
    assert children >= set(demo.workers)
    assert [pid for pid in children if is_running(pid)] == []
    assert not demo.shared.exists()


def test_every_worker_s_records_and_metrics_reach_the_demo_s_sidecar(demo: Demo) -> None:
    both = set(demo.workers)

    def complete(answer: dict[str, Any]) -> bool:
        return slow_report_pids(answer) == both and n_plus_one_pids(answer) == both

    answer = demo.wait_for_page("slow and N+1 records of both workers", complete)
    (finding,) = [f for f in answer["n_plus_one"] if N_PLUS_ONE_ROUTE in f["routes"]]
    assert finding["call_site"]["file"].endswith("workload.py")
    assert finding["requests"] >= 2
    status, page = get(f"{demo.url}/")
    assert status == 200
    assert "ledger_entries" in page

    # Frozen, the workers write nothing: /metrics must be exactly the sum of their files.
    children = child_pids(demo.pid)
    for pid in demo.workers:
        os.kill(pid, signal.SIGSTOP)
    try:
        each = [query_count(list(demo.shared.glob(f"histogram_{pid}.db"))) for pid in demo.workers]
        scraped = scraped_query_count(demo.url)
    finally:
        for pid in demo.workers:
            os.kill(pid, signal.SIGCONT)
    assert all(count > 0 for count in each), each
    assert scraped == sum(each)

    assert demo.running.stop(signal.SIGINT) == 0
    demo.running.close()  # every line read
    assert_nothing_left(demo, children)
    assert demo.running.err_lines[-1].endswith("stopped\n")
    # The workers' records reach the demo's stdout too, as JSON lines and nothing else.
    assert_slow_query_records_only(demo.running.out_lines)


def test_a_worker_that_ends_is_one_line_and_the_last_one_ends_the_demo(demo: Demo) -> None:
    children = child_pids(demo.pid)
    first, second = demo.workers
    demo.wait_for_page("the first worker's records", lambda a: first in slow_report_pids(a))
    os.kill(first, signal.SIGKILL)
    line = demo.running.wait_for(rf"demo worker 1 \(pid {first}\) ended .*")
    assert (
        line.group(0) == f"demo worker 1 (pid {first}) ended (killed by SIGKILL); 1 worker goes on"
    )
    # The demo goes on, and the ended worker's records stay on its page.
    assert get(f"{demo.url}/healthz")[0] == 200
    assert first in slow_report_pids(demo.slow_queries())

    os.kill(second, signal.SIGKILL)
    assert demo.running.process.wait(60) == 2
    demo.running.close()
    error = demo.running.err_lines[-1]
    assert error == (
        f"db-exporter: error: the last demo worker (pid {second}) ended (killed by SIGKILL)\n"
    )
    assert_nothing_left(demo, children)


@pytest.mark.parametrize("demo", [("--log-format", "json")], indirect=True)
def test_sigterm_stops_every_process_and_removes_the_directory(demo: Demo) -> None:
    children = child_pids(demo.pid)
    assert len(children) == 3  # the sidecar and two workers
    assert demo.running.stop(signal.SIGTERM) == 0
    demo.running.close()  # every line read
    assert_nothing_left(demo, children)
    # The workers and the sidecar log in the demo's format too.
    records = log_records(demo.running.err_lines, "json")
    assert records[-1]["message"] == "stopped"


def test_a_taken_address_is_one_line_and_starts_no_worker(fresh_database: URL) -> None:
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        running = start_demo(fresh_database, "--workers", "2", "--listen", f"127.0.0.1:{port}")
        try:
            code = running.process.wait(120)
        finally:
            running.close()
    assert code == 2
    errors = [line for line in running.err_lines if " INFO " not in line]
    assert errors == [
        f"db-exporter: error: cannot listen on 127.0.0.1:{port}: address already in use\n"
    ]
    assert not any("worker processes" in line for line in running.err_lines)


@pytest.mark.parametrize(
    "value", ["0", "-1", "two", "1.5", "", str(DEMO_MAX_WORKERS + 1), "1000000"]
)
def test_a_bad_worker_count_is_one_line_and_runs_nothing(
    capsys: pytest.CaptureFixture[str], value: str
) -> None:
    with pytest.raises(SystemExit) as stop:
        run_cli(capsys, "demo", "--workers", value)
    _, err = capsys.readouterr()
    assert_one_line_error(stop.value.code, err, "--workers", repr(value))  # type: ignore[arg-type]


@given(st.text(max_size=12))
def test_any_worker_count_is_a_count_in_bounds_or_one_error_line(value: str) -> None:
    errors = io.StringIO()
    with redirect_stderr(errors):
        try:
            args = parse_args(["demo", "--workers", value])
        except SystemExit as stop:
            code = stop.code
        else:
            code = None
    if code is not None:
        assert (code, len(errors.getvalue().splitlines())) == (2, 1)
        return
    assert isinstance(args, argparse.Namespace)
    assert 1 <= args.workers <= DEMO_MAX_WORKERS
    assert args.workers == int(value)


def test_a_backup_that_cannot_be_taken_is_one_warning_and_the_demo_goes_on(
    database_url: URL, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    no_tools = tmp_path / "bin"
    no_tools.mkdir()
    not_a_directory = tmp_path / "backups"
    not_a_directory.write_text("a file where the backups go\n")
    database = demo_database_settings(database_url, tmp_path)
    for backups in (
        BackupsCollectorSettings(enabled=True, directory=str(tmp_path), pg_bin_dir=str(no_tools)),
        BackupsCollectorSettings(enabled=True, directory=str(not_a_directory)),
    ):
        caplog.clear()
        collectors = database.collectors.model_copy(update={"backups": backups})
        with caplog.at_level(logging.WARNING, logger="exporter.demo"):
            back_up(database.model_copy(update={"collectors": collectors}))  # returns
        (record,) = caplog.records
        assert record.getMessage().startswith("demo backup failed: ")
        assert "\n" not in record.getMessage()
    assert not_a_directory.read_text() == "a file where the backups go\n"


def test_the_compose_demo_runs_as_two_workers_and_its_sidecar() -> None:
    import yaml

    compose = yaml.safe_load((Path(__file__).parents[1] / "docker-compose.yml").read_text())
    args = parse_args(compose["services"]["demo"]["command"])
    assert (args.command, args.workers) == ("demo", 2)


def test_children_of_a_demo_killed_outright_stop_on_their_own(demo: Demo) -> None:
    children = child_pids(demo.pid)
    demo.running.process.kill()  # no chance to stop them: they see their stdin close
    demo.running.process.wait()
    try:
        deadline = time.monotonic() + 60
        while any(is_running(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert [pid for pid in children if is_running(pid)] == []
    finally:
        shutil.rmtree(demo.shared, ignore_errors=True)

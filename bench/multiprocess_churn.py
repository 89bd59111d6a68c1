"""`/metrics` in multi-process mode after many workers were recycled.

    .venv/bin/python bench/multiprocess_churn.py [--workers 50] [--dead 1000] [--scrapes 50]
    .venv/bin/python bench/multiprocess_churn.py --no-mark-dead

A master process (gunicorn's role, with `--preload`) keeps `--workers` worker processes alive and
recycles them, as gunicorn's `max_requests` does, until `--dead` of them have ended. Each worker
is forked from the master, instruments its own engine, runs `--statements` statements against
the real PostgreSQL, closes its connections (fifty idle workers holding them would crowd the
server) and waits; one in ten is killed (SIGKILL, as gunicorn's worker timeout does) while it
has a connection checked out, the others exit cleanly. The master calls
`prometheus_client.multiprocess.mark_process_dead(pid)` for each (its `child_exit` hook, as the
README says), or not with `--no-mark-dead`.

Then, with the live workers still running, it times `--scrapes` renderings of prometheus_client's
plain `MultiProcessCollector` over the directory (in this process); then scrapes of
`db-exporter serve`'s `/metrics` (one keep-alive connection) until one folds nothing (each folds
up to 100 ended workers' files: the backlog, each time printed), and `--scrapes` more; then the
plain collector again over what is left. It checks each answer: statements and connections
summed over every worker that ever ran, `db_connections_active` over the live workers only.
Prints the figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from instrumentation_overhead import database  # bench/ is on the path
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from exporter.dsn import sync_url

STATEMENT = "SELECT count(*) FROM pg_database"
SELECTS = (
    ("database", "main"),
    ("operation", "SELECT"),
    ("status", "ok"),
    ("table", "pg_database"),
)
MAIN = (("database", "main"),)
KILLED_EVERY = 10  # one worker in ten dies mid-request


# -- the master and its workers (run with PROMETHEUS_MULTIPROC_DIR set) --------------------


def worker(url: str, statements: int, commands: int, answers: int) -> None:
    """Runs in a forked child: instrument, work, then wait for the master's word."""
    from sqlalchemy import create_engine, text

    from exporter import instrument

    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # its slow-query records: not on our pipe
    engine = create_engine(url, pool_size=1)
    instrument(engine, database="main")
    with engine.connect() as conn:
        for _ in range(statements):
            conn.execute(text(STATEMENT))
    engine.dispose()  # idle workers hold no connection: 50 of them would crowd the server
    os.write(answers, b"r")
    word = os.read(commands, 1)
    if word == b"k":  # held mid-request when the master kills it
        conn = engine.connect()
        conn.execute(text(STATEMENT))
        os.write(answers, b"h")
        os.read(commands, 1)  # never answered: SIGKILL comes first
    os._exit(0)


class Worker:
    def __init__(self, url: str, statements: int) -> None:
        worker_commands, self.commands = os.pipe()
        self.answers, worker_answers = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            os.close(self.commands)
            os.close(self.answers)
            try:
                worker(url, statements, worker_commands, worker_answers)
            except BaseException:
                traceback.print_exc()
            os._exit(1)
        os.close(worker_commands)
        os.close(worker_answers)
        if os.read(self.answers, 1) != b"r":
            raise SystemExit(f"worker {self.pid} failed")

    def stop(self, kill: bool) -> None:
        if kill:
            os.write(self.commands, b"k")
            if os.read(self.answers, 1) != b"h":
                raise SystemExit(f"worker {self.pid} failed")
            os.kill(self.pid, signal.SIGKILL)
        else:
            os.write(self.commands, b"s")
        _, status = os.waitpid(self.pid, 0)
        os.close(self.commands)
        os.close(self.answers)
        if not kill and status != 0:
            raise SystemExit(f"worker {self.pid} exited with status {status}")


def master(url: str, workers: int, dead: int, statements: int, mark_dead: bool) -> None:
    from prometheus_client.multiprocess import mark_process_dead
    from sqlalchemy import create_engine

    from exporter.sql import identify

    # As gunicorn's --preload: what every worker needs is loaded once, here, before forking.
    create_engine(url).dispose()
    identify(STATEMENT)
    started = time.perf_counter()
    live = [Worker(url, statements) for _ in range(workers)]
    for n in range(dead):
        oldest = live.pop(0)
        oldest.stop(kill=n % KILLED_EVERY == KILLED_EVERY - 1)
        if mark_dead:
            mark_process_dead(oldest.pid)
        live.append(Worker(url, statements))
    seconds = time.perf_counter() - started
    print(f"ready {workers} {dead} {seconds:.0f}", flush=True)
    sys.stdin.readline()
    for one in live:
        one.stop(kill=False)


# -- the measuring side ----------------------------------------------------------------------


Series = tuple[str, tuple[tuple[str, str], ...]]  # sample name, sorted labels


def expected(workers: int, dead: int, statements: int) -> dict[Series, float]:
    ever = workers + dead
    killed = dead // KILLED_EVERY  # each opened one more connection for one more statement
    return {
        ("query_duration_seconds_count", SELECTS): ever * statements + killed,
        ("db_connections_created_total", MAIN): ever + killed,
        ("db_connections_active", MAIN): 0,  # live workers are idle; the killed are dead
    }


def check(body: str, wanted: dict[Series, float]) -> list[str]:
    """What differs from `wanted` in an exposition body."""
    found = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }
    return [
        f"{name} {found.get((name, labels))} (expected {value:g})"
        for (name, labels), value in wanted.items()
        if found.get((name, labels)) != value
    ]


def figures(label: str, seconds: list[float], wrong: list[str]) -> None:
    ms = sorted(s * 1000 for s in seconds)
    p95 = ms[round(0.95 * (len(ms) - 1))]
    verdict = "correct" if not wrong else "WRONG: " + "; ".join(wrong)
    print(
        f"{label:40} first {seconds[0] * 1000:7.1f} ms  median {statistics.median(ms):7.1f} ms"
        f"  p95 {p95:7.1f} ms  {verdict}",
        flush=True,
    )


def plain_collector(directory: str, scrapes: int) -> tuple[list[float], str]:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    times, body = [], b""
    for _ in range(scrapes):
        started = time.perf_counter()
        body = generate_latest(registry)
        times.append(time.perf_counter() - started)
    return times, body.decode()


def sidecar(
    directory: str, env: dict[str, str], scrapes: int
) -> tuple[list[float], list[float], str]:
    """Times of the scrapes until one folds nothing (each folds a share of the ended workers'
    files), then of `scrapes` more; the last body."""
    # tests/ helpers, put on the path below
    from processes import running
    from sockets import free_port

    config = Path(directory).parent / "exporter.yaml"
    config.write_text("log_level: WARNING\n")
    port = free_port()
    listen = f"127.0.0.1:{port}"
    backlog: list[float] = []
    times: list[float] = []
    with running("serve", "--config", str(config), "--listen", listen, env=env) as served:
        served.wait_until("listening", lambda: _answers(port))
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

        def scrape(into: list[float]) -> str:
            started = time.perf_counter()
            connection.request("GET", "/metrics")
            body = connection.getresponse().read().decode()
            into.append(time.perf_counter() - started)
            return body

        files = len(os.listdir(directory))
        while True:  # until a scrape folds nothing
            body = scrape(backlog)
            before, files = files, len(os.listdir(directory))
            if files >= before:
                break
        for _ in range(scrapes):
            body = scrape(times)
        connection.close()
    return backlog, times, body


def _answers(port: int) -> bool:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        connection.request("GET", "/healthz")
        return connection.getresponse().status == 200
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=50, help="live workers at any time")
    parser.add_argument("--dead", type=int, default=1000, help="workers recycled in all")
    parser.add_argument("--statements", type=int, default=20, help="statements per worker")
    parser.add_argument("--scrapes", type=int, default=50)
    parser.add_argument("--no-mark-dead", action="store_true", help="skip mark_process_dead")
    parser.add_argument("--master", help=argparse.SUPPRESS)  # the URL, in the master process
    args = parser.parse_args()
    if args.master:
        master(args.master, args.workers, args.dead, args.statements, not args.no_mark_dead)
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    with database() as url, tempfile.TemporaryDirectory() as scratch:
        directory = os.path.join(scratch, "prometheus")
        os.mkdir(directory)
        env = os.environ | {"PROMETHEUS_MULTIPROC_DIR": directory}
        dsn = sync_url(url).render_as_string(hide_password=False)
        command = [sys.executable, __file__, "--master", dsn, "--workers", str(args.workers)]
        command += ["--dead", str(args.dead), "--statements", str(args.statements)]
        command += ["--no-mark-dead"] if args.no_mark_dead else []
        churn = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        assert churn.stdin is not None
        assert churn.stdout is not None
        try:
            ready = churn.stdout.readline().split()
            if not ready or ready[0] != "ready":
                raise SystemExit("the master failed (see above)")
            files = len(os.listdir(directory))
            marked = "without" if args.no_mark_dead else "with"
            print(
                f"{args.workers} live workers, {args.dead} recycled ({marked} mark_process_dead, "
                f"{ready[3]} s), {args.statements} statements each: {files} files",
                flush=True,
            )
            wanted = expected(args.workers, args.dead, args.statements)
            times, body = plain_collector(directory, args.scrapes)
            figures("prometheus_client MultiProcessCollector", times, check(body, wanted))
            backlog, times, body = sidecar(directory, env, args.scrapes)
            shown = ", ".join(f"{t * 1000:.0f}" for t in backlog)
            print(f"db-exporter serve: {len(backlog)} scrapes folding the backlog: {shown} ms")
            figures("db-exporter serve /metrics, then", times, check(body, wanted))
            print(f"files left: {len(os.listdir(directory))}", flush=True)
            times, body = plain_collector(directory, args.scrapes)
            figures("MultiProcessCollector afterwards", times, check(body, wanted))
        finally:
            churn.communicate("stop\n", timeout=300)


if __name__ == "__main__":
    main()

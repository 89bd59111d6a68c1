"""`db-exporter demo --workers N`: the wallet in N worker processes beside a sidecar, as a service
under gunicorn runs with `db-exporter serve` (README, "Several worker processes").

This process prepares the database, then starts the sidecar and the workers
(exporter/demo/child.py) with `PROMETHEUS_MULTIPROC_DIR` set to a directory of its own: each
worker instruments its engine and hands its slow-query records over; the sidecar's `/metrics`
sums the workers and its `/` and `/slow-queries` merge their records. It runs nothing itself
but the backup, and watches them:

- a worker that ends is reported in one line and not replaced (its records stay on the page,
  as an ended gunicorn worker's do); the others go on. When none is left, or the sidecar ends,
  the demo stops with one line saying so.
- on SIGINT or SIGTERM every child is asked to stop (SIGTERM) and killed if it has not within
  twice `STOP_GRACE_SECONDS` (the workload's steps in flight, then its pool closing); the
  directory is removed after (by `run_demo`). A child whose demo is killed outright stops too:
  its stdin, a pipe from here, closes (the directory is then left behind, in the temporary
  directory).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from contextlib import suppress
from pathlib import Path

from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from exporter.demo.run import (
    STOP_GRACE_SECONDS,
    DemoError,
    back_up,
    demo_database_settings,
    prepare_database,
    say,
    stop_on_signals,
    wallet_engine,
)
from exporter.logs import log_format

log = logging.getLogger("exporter.demo")

Process = asyncio.subprocess.Process
# The sidecar's first line on its stdout: `ready URL`, or `error MESSAGE` when it cannot serve.
READY, ERROR = "ready ", "error "


async def serve_workers(url: URL, listen: str, backups: Path, count: int, shared: Path) -> None:
    stop = stop_on_signals()
    engine = wallet_engine(url)
    try:
        await prepare_database(engine)
        await _seed(engine)
    finally:
        await engine.dispose()
    children: dict[Process, str] = {}
    environment = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(shared),
        "DATABASE_URL": url.render_as_string(hide_password=False),  # not on a command line
    }
    if stop.is_set():
        return
    try:
        sidecar = await _start(children, "sidecar", environment, "sidecar", listen, str(backups))
        address = await _ready(sidecar)
        if stop.is_set():
            return
        for index in range(1, count + 1):
            await _start(children, f"worker {index}", environment, "worker", str(index))
        pids = ", ".join(str(p.pid) for p, role in children.items() if role != "sidecar")
        say(f"{count} worker processes (pids {pids}) hand their records over in {shared}")
        say(f"serving {address}/metrics and {address}/ for all of them (Ctrl-C to stop)")
        database = demo_database_settings(url, backups)
        backup = asyncio.create_task(asyncio.to_thread(back_up, database))
        try:
            await _watch(children, stop)
        finally:
            await backup  # a thread: it finishes its pg_dump (a small database)
        say("stopping")
    finally:
        await _stop(children)


async def _seed(engine: AsyncEngine) -> None:
    """The users and balances, once, before the workers start (each would otherwise race to
    create them)."""
    from exporter.demo.workload import WalletWorkload

    await WalletWorkload(engine).seed()


async def _start(
    children: dict[Process, str], role: str, environment: dict[str, str], *args: str
) -> Process:
    level = logging.getLevelName(logging.getLogger("exporter").getEffectiveLevel())
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "exporter.demo.child",
        "--log-level",
        level,
        "--log-format",
        log_format(),
        *args,
        stdin=asyncio.subprocess.PIPE,  # closes when this process ends, however it ends
        # Out of the terminal's process group: Ctrl-C reaches this process alone, which stops
        # the children in order (a worker seen ending first would be reported as a failure).
        start_new_session=True,
        stdout=asyncio.subprocess.PIPE if args[0] == "sidecar" else None,
        env=environment,
    )
    children[process] = role
    return process


async def _ready(sidecar: Process) -> str:
    """The sidecar's URL once it serves; DemoError with its reason when it cannot."""
    assert sidecar.stdout is not None
    line = (await sidecar.stdout.readline()).decode().rstrip("\n")
    if line.startswith(READY):
        return line.removeprefix(READY)
    if line.startswith(ERROR):
        raise DemoError(line.removeprefix(ERROR))
    raise DemoError(f"the demo's sidecar ended before serving ({_ending(await sidecar.wait())})")


def _ending(code: int) -> str:
    if code < 0:
        with suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


async def _watch(children: dict[Process, str], stop: asyncio.Event) -> None:
    """Until `stop`; a child that ends is reported, and ends the demo if it was the sidecar or
    the last worker."""
    ends = {asyncio.create_task(process.wait()): process for process in children}
    stopping = asyncio.create_task(stop.wait())
    try:
        while True:
            done, _ = await asyncio.wait([stopping, *ends], return_when=asyncio.FIRST_COMPLETED)
            if stopping in done:
                return
            for ended in done:
                process = ends.pop(ended)
                role = children.pop(process)
                how = _ending(process.returncode or 0)
                if role == "sidecar":
                    raise DemoError(f"the demo's sidecar (pid {process.pid}) ended ({how})")
                left = len(children) - 1  # the sidecar is not a worker
                if not left:
                    raise DemoError(f"the last demo worker (pid {process.pid}) ended ({how})")
                log.warning(
                    "demo %s (pid %d) ended (%s); %d worker%s go%s on",
                    role, process.pid, how, left, "s" if left > 1 else "", "" if left > 1 else "es",
                )  # fmt: skip
    finally:
        for task in (stopping, *ends):
            task.cancel()


async def _stop(children: dict[Process, str]) -> None:
    """Ask every child to stop, kill those still running after the grace time, reap them all."""
    for process in children:
        with suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
    waits = [asyncio.create_task(process.wait()) for process in children]
    if not waits:
        return
    _, late = await asyncio.wait(waits, timeout=STOP_GRACE_SECONDS * 2)
    for process in children:
        if process.returncode is None:
            log.warning("demo %s (pid %d) did not stop: killed", children[process], process.pid)
            with suppress(ProcessLookupError):
                process.kill()
    if late:
        await asyncio.wait(late)

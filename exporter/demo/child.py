"""One process of `db-exporter demo --workers N` (exporter/demo/workers.py): the sidecar, or one
worker of the wallet application.

Started with `PROMETHEUS_MULTIPROC_DIR` (set before prometheus_client loads: the reason these
are processes of their own) and `DATABASE_URL` in the environment. Stops on SIGINT or SIGTERM,
or when the demo that started it ends: its stdin, a pipe from the demo, closes.

    python -m exporter.demo.child [--log-level L] [--log-format F] sidecar HOST:PORT BACKUPS
    python -m exporter.demo.child [--log-level L] [--log-format F] worker INDEX
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
from contextlib import suppress
from pathlib import Path

from exporter.demo.run import (
    STOP_GRACE_SECONDS,
    demo_database_settings,
    instrument_wallet,
    run,
    stop_on_signals,
    wallet_engine,
)
from exporter.dsn import parse_dsn
from exporter.errors import UserError
from exporter.logs import LOG_FORMATS, LOG_LEVELS, setup_logging
from exporter.settings import ServerSettings, Settings

# Each worker's workload draws its own sequence of steps.
FIRST_SEED = 7


def _stop_event() -> asyncio.Event:
    stop = stop_on_signals()
    loop = asyncio.get_running_loop()

    def watch_demo() -> None:
        # Unbuffered: a read of sys.stdin would hold its lock as the interpreter exits.
        while os.read(sys.stdin.fileno(), 1024):
            pass
        with suppress(RuntimeError):  # the loop is closed: this process is ending anyway
            loop.call_soon_threadsafe(stop.set)  # end of file: the demo has ended

    threading.Thread(target=watch_demo, name="demo-watch", daemon=True).start()
    return stop


async def _sidecar(listen: str, backups: Path) -> int:
    from exporter.metrics import default_metrics
    from exporter.server import Exporter
    from exporter.sidecar_gc import freeze_start_up

    database = demo_database_settings(parse_dsn(os.environ["DATABASE_URL"]), backups)
    settings = Settings(server=ServerSettings(listen=listen), databases=(database,))
    exporter = Exporter.sidecar(settings, default_metrics())
    stop = _stop_event()
    try:
        await exporter.start()
    except UserError as exc:  # the demo reports it, in one line
        print(f"error {exc}", flush=True)
        return 2
    freeze_start_up()  # a process of its own: full garbage collections never scan start-up
    print(f"ready {exporter.url}", flush=True)
    try:
        await stop.wait()
    finally:
        await exporter.stop()
    return 0


async def _worker(index: int) -> int:
    from exporter.demo.workload import WalletWorkload

    engine = wallet_engine(parse_dsn(os.environ["DATABASE_URL"]))
    instrument_wallet(engine)
    stop = _stop_event()
    workload = WalletWorkload(engine, seed=FIRST_SEED + index)
    try:
        await workload.seed()  # reads the users the demo created
        task = asyncio.create_task(workload.run())
        await stop.wait()
        workload.stop()
        with suppress(TimeoutError):  # then it is cancelled
            await asyncio.wait_for(task, STOP_GRACE_SECONDS)
    finally:
        await engine.dispose()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exporter.demo.child")
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="INFO")
    parser.add_argument("--log-format", choices=LOG_FORMATS, default="text")
    roles = parser.add_subparsers(dest="role", required=True)
    sidecar = roles.add_parser("sidecar")
    sidecar.add_argument("listen")
    sidecar.add_argument("backups", type=Path)
    worker = roles.add_parser("worker")
    worker.add_argument("index", type=int)
    args = parser.parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    try:
        if args.role == "sidecar":
            return run(_sidecar(args.listen, args.backups))
        return run(_worker(args.index))
    except KeyboardInterrupt:  # Ctrl-C reached it before its loop handles signals
        return 130


if __name__ == "__main__":
    sys.exit(main())

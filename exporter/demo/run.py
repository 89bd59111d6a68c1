"""`db-exporter demo`: a database, the wallet schema, live traffic, and the endpoints serving it.

Uses `DATABASE_URL` when set; otherwise an embedded PostgreSQL in a temporary directory that is
stopped and deleted on the way out.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import tempfile
from collections.abc import Coroutine
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from exporter.demo.embedded import embedded_postgres
from exporter.demo.prepare import add_hand_made_objects, enable_statement_statistics
from exporter.demo.schema import METADATA, SCRIPT_LOCATION, apply_migrations
from exporter.dsn import DsnError, asyncpg_engine_args, masked, parse_dsn
from exporter.errors import UserError
from exporter.instrumentation import instrument
from exporter.metrics import default_metrics
from exporter.server import Exporter
from exporter.settings import (
    ActivityCollectorSettings,
    BackupsCollectorSettings,
    CollectorsSettings,
    DatabaseSettings,
    MigrationsCollectorSettings,
    StatementsCollectorSettings,
)


class DemoError(UserError, RuntimeError):
    """Something the person running the demo can fix; the message says what."""


log = logging.getLogger("exporter.demo")


def say(message: str) -> None:
    log.info("%s", message)  # on stderr: stdout carries only slow-query records


# The demo application's name on the server (asyncpg's server_settings): the activity
# collector counts its server-side connections under it, to compare with its pool's.
APPLICATION_NAME = "wallet-demo"
# How long the workload may take to finish its steps in flight when the demo stops.
STOP_GRACE_SECONDS = 5.0


def demo_database_settings(url: URL, backups: Path) -> DatabaseSettings:
    """The exporter's settings for the demo's database: every collector the dashboards and
    alerts read, including activity per application, migrations with schema drift, and the
    backups in `backups`."""
    collectors = CollectorsSettings(
        backups=BackupsCollectorSettings(enabled=True, directory=str(backups), keep=1),
        activity=ActivityCollectorSettings(application_name=APPLICATION_NAME),
        # Every 15 s rather than every minute: the top-statements panel moves while you watch.
        statements=StatementsCollectorSettings(interval_seconds=15),
        migrations=MigrationsCollectorSettings(
            enabled=True,
            script_location=str(SCRIPT_LOCATION),
            metadata=METADATA,
        ),
    )
    return DatabaseSettings(
        name="main",
        dsn=url.render_as_string(hide_password=False),
        check_interval_seconds=5,
        collectors=collectors,
    )


def back_up(database: DatabaseSettings) -> None:
    """One backup of the demo's database, as `db-exporter backup` takes it."""
    from exporter.backup_command import backup_database

    try:
        done = backup_database(database)
    except Exception as exc:  # no pg_dump for the server, a full disk...: the demo goes on
        log.warning("demo backup failed: %s", exc)
        return
    say(f"backed up the wallet to {done.path} (db-exporter backup; db_backup_* in /metrics)")


def wallet_engine(url: URL) -> AsyncEngine:
    """The wallet application's engine, with a small pool so the workload's bursts overflow it."""
    from exporter.demo.models import EngineSettings, create_engine

    async_url, connect_args = asyncpg_engine_args(
        url, server_settings={"application_name": APPLICATION_NAME}
    )
    return create_engine(
        async_url, EngineSettings(pool_size=5, max_overflow=10), connect_args=connect_args
    )


def instrument_wallet(engine: AsyncEngine) -> None:
    """As the wallet application instruments its engine (in each of its processes)."""
    from exporter.demo.models import Base

    instrument(engine, database="main", tables=Base.metadata)


async def prepare_database(engine: AsyncEngine) -> None:
    """What the demo adds to its database before the workload starts."""
    await enable_statement_statistics(engine, say)
    await add_hand_made_objects(engine, say)


T = TypeVar("T")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def stop_on_signals() -> asyncio.Event:
    """Set on SIGINT or SIGTERM, in the running loop (`run()` takes the handlers away)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    return stop


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)`, with `stop_on_signals()`'s handlers removed as soon as `main` ends.

    asyncio's loop closes its signal wakeup fd before it removes its handlers: a SIGTERM in
    between (the demo stopping a child that is already ending) printed "Exception ignored when
    trying to write to the signal wakeup fd" instead of ending the process quietly."""

    async def then_default_signals() -> T:
        try:
            return await main
        finally:
            loop = asyncio.get_running_loop()
            for signum in STOP_SIGNALS:
                loop.remove_signal_handler(signum)

    return asyncio.run(then_default_signals())


async def _serve_workload(url: URL, listen: str, backups: Path) -> None:
    from exporter.demo.workload import WalletWorkload

    stop = stop_on_signals()
    engine = wallet_engine(url)
    await prepare_database(engine)
    instrument_wallet(engine)
    database = demo_database_settings(url, backups)
    exporter = Exporter(listen=listen, databases=[database], metrics=default_metrics())
    try:
        await exporter.start()
        workload = WalletWorkload(engine)
        await workload.seed()
        say(f"serving {exporter.url}/metrics  (also /healthz, /readyz; Ctrl-C to stop)")
        task = asyncio.create_task(workload.run())
        backup = asyncio.create_task(asyncio.to_thread(back_up, database))
        await stop.wait()
        say("stopping")
        workload.stop()
        with suppress(TimeoutError):  # then it is cancelled
            await asyncio.wait_for(task, STOP_GRACE_SECONDS)
        await backup  # a thread: it finishes its pg_dump (a small database) rather than leave it
    finally:
        await exporter.stop()
        await engine.dispose()


def run_demo(listen: str, database_url: str | None, workers: int = 1) -> None:
    """The demo, its workload in this process or, with `workers` above 1, in that many worker
    processes beside a sidecar (exporter/demo/workers.py)."""
    with ExitStack() as stack:
        if database_url:
            try:
                url = parse_dsn(database_url)
            except DsnError as exc:
                raise DemoError(f"DATABASE_URL: {exc}") from None
            say(f"using DATABASE_URL {masked(url)}")
        else:
            say("starting an embedded PostgreSQL (set DATABASE_URL to use your own)")
            server = stack.enter_context(embedded_postgres())
            say(f"embedded PostgreSQL running in {server.directory} (psql '{server.url}')")
            url = parse_dsn(server.url)
        apply_migrations(url)
        say("wallet schema migrated to head")
        backups = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="db-exporter-")))
        if workers == 1:
            run(_serve_workload(url, listen, backups))
        else:
            from exporter.demo.workers import serve_workers

            shared = stack.enter_context(tempfile.TemporaryDirectory(prefix="db-exporter-workers-"))
            run(serve_workers(url, listen, backups, workers, Path(shared)))
    say("stopped")

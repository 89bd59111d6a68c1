"""Alembic environment of the wallet schema (`exporter.demo.models`), asyncpg by default.

Where the database comes from, first match wins:

1. `config.attributes["connection"]`: a sync `Connection` the calling program already holds
   (from async code: `await conn.run_sync(upgrade_with, cfg)` with `upgrade_with` setting the
   attribute and calling `alembic.command.upgrade`). Its transaction belongs to the caller.
2. The `sqlalchemy.url` option, when the caller sets it (`cfg.set_main_option(...)`).
3. The `DATABASE_URL` environment variable.

A `postgresql://`, `postgres://` or `postgresql+asyncpg://` URL gets the asyncpg driver, its
libpq parameters (`sslmode`, `sslrootcert`, several hosts, ...) translated by `exporter.dsn`; a
URL naming another driver is used as is. Without a connection, the migrations run
in `asyncio.run`, so `alembic.command` must then be called outside a running event loop (from
async code: `await asyncio.to_thread(command.upgrade, cfg, "head")`).

Logging is configured from alembic.ini only when alembic runs from the command line (or when
`config.attributes["configure_logger"]` is true): a program's own logging setup is left alone.
"""

from __future__ import annotations

import asyncio
import os
from logging.config import fileConfig
from typing import Any

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, async_engine_from_config

from exporter.demo.models import Base
from exporter.dsn import asyncpg_engine_args

config = context.config
target_metadata = Base.metadata

if config.config_file_name is not None and config.attributes.get(
    "configure_logger", config.cmd_opts is not None
):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def database_url() -> tuple[URL, dict[str, Any]] | None:
    """The URL from `sqlalchemy.url` or DATABASE_URL and its `connect_args`, with asyncpg for
    PostgreSQL URLs."""
    raw = config.get_main_option("sqlalchemy.url") or os.environ.get("DATABASE_URL")
    if not raw:
        return None
    if raw.split("://")[0] in ("postgresql", "postgres", "postgresql+asyncpg"):
        return asyncpg_engine_args(raw)
    return make_url(raw), {}


def run_migrations_offline() -> None:
    """Write the SQL to the output instead of running it; no database is needed."""
    target = database_url()
    context.configure(
        url=target[0] if target is not None else None,
        dialect_name=None if target is not None else "postgresql",
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        compare_type=True,
        compare_server_default=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        compare_server_default=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations(url: URL, connect_args: dict[str, Any]) -> None:
    engine = async_engine_from_config(
        config.get_section(config.config_ini_section, {}),
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
        url=url,
        connect_args=connect_args,
    )
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()


def _event_loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if isinstance(connection, AsyncConnection):
        raise TypeError(
            'config.attributes["connection"] must be a sync Connection: '
            "pass the one AsyncConnection.run_sync gives"
        )
    if connection is not None:
        do_run_migrations(connection)
        return
    target = database_url()
    if target is None:
        raise RuntimeError(
            "no database URL: set the sqlalchemy.url option or the DATABASE_URL variable"
        )
    if _event_loop_running():
        raise RuntimeError(
            "alembic env.py runs migrations with asyncio.run: call alembic.command outside the "
            "event loop (asyncio.to_thread) or pass a connection in "
            'config.attributes["connection"]'
        )
    asyncio.run(run_async_migrations(*target))


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

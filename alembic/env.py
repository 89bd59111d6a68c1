"""Alembic environment of the wallet schema (`exporter.demo.models`), asyncpg by default.

Where the database comes from, first match wins:

1. `config.attributes["connection"]`: a sync `Connection` the calling program already holds
   (from async code: `await conn.run_sync(upgrade_with, cfg)` with `upgrade_with` setting the
   attribute and calling `alembic.command.upgrade`). Its transaction belongs to the caller.
2. The `sqlalchemy.url` option, when the caller sets it (`cfg.set_main_option(...)`).
3. The `DATABASE_URL` environment variable.

A `postgresql://` or `postgres://` URL gets the asyncpg driver (libpq's `sslmode` becomes
asyncpg's `ssl`); a URL naming a driver is used as is. Without a connection, the migrations run
in `asyncio.run`, so `alembic.command` must then be called outside a running event loop (from
async code: `await asyncio.to_thread(command.upgrade, cfg, "head")`).

Logging is configured from alembic.ini only when alembic runs from the command line (or when
`config.attributes["configure_logger"]` is true): a program's own logging setup is left alone.
"""

from __future__ import annotations

import asyncio
import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, async_engine_from_config

from exporter.demo.models import Base

config = context.config
target_metadata = Base.metadata

if config.config_file_name is not None and config.attributes.get(
    "configure_logger", config.cmd_opts is not None
):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def database_url() -> URL | None:
    """The URL from `sqlalchemy.url` or DATABASE_URL, with asyncpg for plain PostgreSQL URLs."""
    raw = config.get_main_option("sqlalchemy.url") or os.environ.get("DATABASE_URL")
    if not raw:
        return None
    url = make_url(raw)
    if url.drivername in ("postgresql", "postgres"):
        query = dict(url.query)
        if "sslmode" in query:
            query["ssl"] = query.pop("sslmode")
        url = url.set(drivername="postgresql+asyncpg", query=query)
    return url


def run_migrations_offline() -> None:
    """Write the SQL to the output instead of running it; no database is needed."""
    url = database_url()
    context.configure(
        url=url,
        dialect_name=None if url is not None else "postgresql",
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


async def run_async_migrations(url: URL) -> None:
    engine = async_engine_from_config(
        config.get_section(config.config_ini_section, {}),
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
        url=url,
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
    url = database_url()
    if url is None:
        raise RuntimeError(
            "no database URL: set the sqlalchemy.url option or the DATABASE_URL variable"
        )
    if _event_loop_running():
        raise RuntimeError(
            "alembic env.py runs migrations with asyncio.run: call alembic.command outside the "
            "event loop (asyncio.to_thread) or pass a connection in "
            'config.attributes["connection"]'
        )
    asyncio.run(run_async_migrations(url))


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

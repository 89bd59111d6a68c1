"""The exporter's own connection to a database, and whether that database answers.

Each configured database gets one small engine of the exporter's own (never the application's
pool), tagged `application_name=db-exporter`, with server-side `statement_timeout` and
`lock_timeout`. `exporter.collectors.runner` drives it: the `SELECT` that feeds `db_up` and
`/readyz`, and every collector's queries.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from exporter.dsn import asyncpg_engine_args, without_secrets
from exporter.sqlstate import driver_error, sqlstate_of

APPLICATION_NAME = "db-exporter"


def exporter_engine(dsn: str, timeout_seconds: float, persistent: bool = True) -> AsyncEngine:
    """A small engine of the exporter's own: one connection, server-side timeouts set.

    Pre-ping: after a server restart (or a failover, or an idle connection cut by a proxy) the
    kept connection is dead; the next check replaces it instead of reporting the database down
    for one check interval. One extra round trip per use, a few per minute.

    The DSN's TLS, hosts and `options` apply; its `application_name` and `connect_timeout` give
    way to the exporter's own name (so the activity collector can leave these connections out)
    and timeouts.

    Not `persistent`: a connection per use, closed after it (a discovered database, which an
    idle connection of ours would keep its owner from dropping)."""
    timeout_ms = str(int(timeout_seconds * 1000))
    url, connect_args = asyncpg_engine_args(
        dsn,
        server_settings={
            "application_name": APPLICATION_NAME,
            "statement_timeout": timeout_ms,
            "lock_timeout": timeout_ms,
        },
        timeout=timeout_seconds,
    )
    if not persistent:
        return create_async_engine(url, poolclass=NullPool, connect_args=connect_args)
    return create_async_engine(
        url,
        pool_size=1,
        max_overflow=0,
        pool_timeout=timeout_seconds,
        pool_pre_ping=True,
        connect_args=connect_args,
    )


@dataclass(frozen=True)
class ProbeState:
    ok: bool | None = None  # None until the first check finished
    reason: str = "not checked yet"


def one_line(exc: BaseException, dsn: str | None = None) -> str:
    """`Type: first line of the message`, for logs and `/readyz`. For a database error, the
    driver's own error (with its SQLSTATE) rather than SQLAlchemy's wrapper and the SQL text.
    With `dsn`, its passwords are taken out first (a driver may quote what it was given), so
    that cutting the line short cannot leave part of one."""
    cause = driver_error(exc)
    sqlstate = sqlstate_of(exc)
    message = _first_line(cause, dsn)
    name = type(cause).__name__
    text = f"{name}: {message}" if message else name
    return (f"{text} (SQLSTATE {sqlstate})" if sqlstate else text)[:300]


def _first_line(exc: BaseException, dsn: str | None) -> str:
    text = str(exc).strip()
    if dsn is not None:
        text = without_secrets(text, dsn)
    return text.splitlines()[0] if text else ""

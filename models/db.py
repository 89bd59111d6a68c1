"""Engine and session helpers for the wallet application (asyncpg through SQLAlchemy)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine

logger = logging.getLogger(__name__)

T = TypeVar("T")

# SQLSTATEs that mean "the connection is gone or cannot be made yet": class 08 (connection
# exception), too_many_connections, admin/crash shutdown and cannot_connect_now.
_CONNECTION_SQLSTATES = frozenset({"53300", "57P01", "57P02", "57P03"})


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """Connection pool settings, passed as is to `create_async_engine`."""

    pool_size: int = 5
    max_overflow: int = 10
    pool_timeout: float = 30.0
    pool_recycle: int = 1800
    pool_pre_ping: bool = True
    echo: bool = False


def create_engine(
    url: str | URL,
    settings: EngineSettings | None = None,
    *,
    connect_args: Mapping[str, Any] | None = None,
) -> AsyncEngine:
    """An async engine for `url` (already an async driver URL, e.g. `postgresql+asyncpg://`).

    `connect_args` goes to the driver's connect call as is, e.g.
    `{"server_settings": {"application_name": "wallet"}}` for asyncpg.
    """
    settings = settings or EngineSettings()
    return _create_async_engine(
        url,
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_timeout=settings.pool_timeout,
        pool_recycle=settings.pool_recycle,
        pool_pre_ping=settings.pool_pre_ping,
        echo=settings.echo,
        connect_args=dict(connect_args or {}),
    )


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions bound to `engine`; objects stay usable after commit (no expiry, no lazy IO)."""
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def session_scope(factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session that commits when the block succeeds and rolls back (and re-raises) otherwise."""
    async with factory() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


async def health_check(engine: AsyncEngine) -> bool:
    """True if `SELECT 1` succeeds; False, never an error, if the database cannot be reached.

    To bound the wait, call it under `asyncio.timeout(...)`; the TimeoutError then comes from
    the caller's own block.
    """
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except (DBAPIError, PoolTimeoutError, OSError, TimeoutError) as exc:
        logger.warning("database health check failed: %s", type(exc).__name__)
        return False
    return True


def is_connection_error(exc: BaseException) -> bool:
    """True for errors that a new connection may cure; False for e.g. constraint violations.

    The driver's SQLSTATE decides when the server sent one: psycopg reports query_canceled and
    deadlocks as OperationalError too, and asyncpg reports an administrator's shutdown as a
    plain DBAPIError.
    """
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated or isinstance(exc, InterfaceError):
            return True
        sqlstate = getattr(exc.orig, "sqlstate", None)
        if isinstance(sqlstate, str):
            return sqlstate.startswith("08") or sqlstate in _CONNECTION_SQLSTATES
        return isinstance(exc, OperationalError)
    return isinstance(exc, OSError)  # ConnectionError and socket errors are OSErrors


async def with_retry(
    fn: Callable[[], Awaitable[T]],
    *,
    attempts: int = 5,
    base_delay: float = 0.1,
    max_delay: float = 2.0,
) -> T:
    """Await `fn()`, calling it again after connection errors, at most `attempts` times.

    The delays double from `base_delay` up to `max_delay`. Other errors propagate at once, and
    the last connection error propagates once the attempts are spent. `fn` should be a whole
    unit of work that opens its own session, since a broken connection loses its transaction.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    for attempt in range(1, attempts + 1):
        try:
            return await fn()
        except Exception as exc:
            if attempt == attempts or not is_connection_error(exc):
                raise
            delay = min(max_delay, base_delay * 2 ** (attempt - 1))
            logger.warning(
                "connection error (attempt %d of %d, retrying in %.2fs): %s",
                attempt,
                attempts,
                delay,
                type(exc).__name__,
            )
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")  # the loop returns or raises

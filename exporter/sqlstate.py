"""Where a database error keeps its SQLSTATE, for every driver and SQLAlchemy version: the one
place that reads it."""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError


def driver_error(exc: BaseException) -> BaseException:
    """The driver's own exception: behind SQLAlchemy's `DBAPIError` and, for asyncpg, behind
    SQLAlchemy's adapter (its `__cause__`); `exc` itself when nothing wraps it (SQLAlchemy 2.0
    lets some of asyncpg's connection errors through as they are)."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        orig: BaseException = exc.orig
        return orig.__cause__ or orig
    return exc


def sqlstate_of(exc: BaseException | None) -> str | None:
    """`23505` for a unique violation, ...; None when the error carries none. psycopg, asyncpg
    and SQLAlchemy's asyncpg adapter name it `sqlstate`, psycopg2 `pgcode`."""
    if exc is None:
        return None
    for candidate in (driver_error(exc), exc):
        code = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(code, str) and len(code) == 5 and code.isalnum():
            return code.upper()
    return None

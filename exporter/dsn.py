"""Database URLs: accept what platforms hand out, give SQLAlchemy what each driver needs.

`postgresql://user:pass@host:5432/db` (and `postgres://`) are accepted beside SQLAlchemy's
`postgresql+asyncpg://` and `postgresql+psycopg://` forms. Passwords are masked whenever a URL
is shown to a person.
"""

from __future__ import annotations

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

SUPPORTED_SCHEMES = ("postgresql", "postgres", "postgresql+asyncpg", "postgresql+psycopg")


class DsnError(ValueError):
    """A database URL that db-exporter cannot use; the message is safe to show."""


def parse_dsn(dsn: str) -> URL:
    """Parse and check a DSN; the message of the error raised never contains the password."""
    try:
        url = make_url(dsn)
    except ArgumentError:
        expected = "expected postgresql://user:pass@host:port/db"
        raise DsnError(f"not a database URL ({expected})") from None
    if url.drivername not in SUPPORTED_SCHEMES:
        supported = ", ".join(f"{s}://" for s in SUPPORTED_SCHEMES)
        raise DsnError(f"unsupported scheme {url.drivername}:// (use one of {supported})")
    return url


def _for_driver(dsn: str | URL, drivername: str, ssl_from: str, ssl_to: str) -> URL:
    url = parse_dsn(dsn) if isinstance(dsn, str) else dsn
    query = dict(url.query)
    if ssl_from in query:
        query[ssl_to] = query.pop(ssl_from)
    return url.set(drivername=drivername, query=query)


def async_url(dsn: str | URL) -> URL:
    """The URL for an asyncpg engine (libpq's `sslmode` becomes asyncpg's `ssl`)."""
    return _for_driver(dsn, "postgresql+asyncpg", "sslmode", "ssl")


def sync_url(dsn: str | URL) -> URL:
    """The URL for a psycopg 3 engine (asyncpg's `ssl` becomes libpq's `sslmode`)."""
    return _for_driver(dsn, "postgresql+psycopg", "ssl", "sslmode")


def masked(dsn: str | URL) -> str:
    """The URL as text with its password replaced by `***`."""
    url = make_url(dsn) if isinstance(dsn, str) else dsn
    return url.render_as_string(hide_password=True)

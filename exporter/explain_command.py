"""`db-exporter explain`: one statement explained on a configured database.

The connection is the exporter's own (`exporter.probe.exporter_engine`: one connection,
`application_name=db-exporter`, server-side `statement_timeout` and `lock_timeout`), never an
application's pool; the statement runs inside `explain()`'s transaction, always rolled back.
Whatever goes wrong is one `ExplainError` line, the DSN's passwords taken out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from exporter.errors import UserError
from exporter.explainer import DdlRefused, explain
from exporter.plan import Plan
from exporter.probe import exporter_engine, one_line
from exporter.settings import DatabaseSettings


class ExplainError(UserError):
    """The statement could not be explained on its database; the message is one line."""


def explain_sql(
    database: DatabaseSettings, sql: str, *, analyze: bool, allow_ddl: bool, timeout: float
) -> Plan:
    """The plan of `sql` on `database`; with `analyze` it runs, and is rolled back. The SQL
    goes as written, as psql sends it: `:name` is not a bind parameter."""
    as_written = text(sql.replace(":", "\\:"))

    def run(conn: Connection) -> Plan:
        return explain(conn, as_written, analyze=analyze, allow_ddl=allow_ddl)

    try:
        return asyncio.run(_on_database(database.dsn, timeout, run))
    except DdlRefused as refused:
        raise ExplainError(
            f"{refused.keyword} with ANALYZE would run it and hold its locks until the rollback:"
            " pass --allow-ddl, or --no-analyze to only plan it"
        ) from None
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        raise ExplainError(f"database {database.name}: {one_line(exc, database.dsn)}") from None


async def _on_database(dsn: str, timeout_seconds: float, run: Callable[[Connection], Plan]) -> Plan:
    engine = exporter_engine(dsn, timeout_seconds)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(run)
    finally:
        await engine.dispose()

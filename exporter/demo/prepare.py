"""What the demo adds to its database beyond the wallet migrations, so that every dashboard
panel and every alert rule has something real to show on a newcomer's first run."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

Say = Callable[[str], None]

# True when the server loads pg_stat_statements at start (the embedded server does).
PRELOADED_SQL = (
    "SELECT 'pg_stat_statements' = ANY(string_to_array("
    "replace(current_setting('shared_preload_libraries'), ' ', ''), ','))"
)

# What a change made by hand, outside the migrations, leaves behind: a table no model declares
# (schema drift), an index nothing reads that is over the unused-index size floor, and a
# unique index built CONCURRENTLY on duplicate values, which fails and stays invalid. Each
# statement is skipped when its object exists, so a second run against DATABASE_URL is a no-op.
HAND_MADE_TABLE = "archive_events"
HAND_MADE_SQL = (
    f"CREATE TABLE IF NOT EXISTS {HAND_MADE_TABLE} (id bigint, kind int)",
    f"INSERT INTO {HAND_MADE_TABLE} SELECT g, g % 7 FROM generate_series(1, 60000) AS g"
    f" WHERE NOT EXISTS (SELECT FROM {HAND_MADE_TABLE})",
    f"CREATE INDEX IF NOT EXISTS ix_{HAND_MADE_TABLE}_id ON {HAND_MADE_TABLE} (id)",
    f"CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS ix_{HAND_MADE_TABLE}_kind"
    f" ON {HAND_MADE_TABLE} (kind)",
    # Statistics and a last-vacuum time for the table panels without waiting for autovacuum.
    f"VACUUM ANALYZE {HAND_MADE_TABLE}",
)


async def enable_statement_statistics(engine: AsyncEngine, say: Say) -> None:
    """CREATE EXTENSION pg_stat_statements when the server preloads its library, so that the
    statements collector and the top-statements panel have data; says why otherwise. The demo
    goes on either way."""
    try:
        async with engine.begin() as conn:
            if not await conn.scalar(text(PRELOADED_SQL)):
                say(
                    "pg_stat_statements is not in shared_preload_libraries: the top-statements "
                    "panel stays empty"
                )
                return
            await conn.execute(text("CREATE EXTENSION IF NOT EXISTS pg_stat_statements"))
    except DBAPIError as exc:
        say(f"pg_stat_statements not enabled ({type(exc.orig).__name__}): {exc.orig}")


async def add_hand_made_objects(engine: AsyncEngine, say: Say) -> None:
    """The objects of HAND_MADE_SQL, for the index, vacuum and drift panels and alerts."""
    # CONCURRENTLY and VACUUM refuse to run inside a transaction block.
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    async with autocommit.connect() as conn:
        for statement in HAND_MADE_SQL:
            # The unique build fails on the duplicate kinds: its invalid index is the point.
            with suppress(IntegrityError):
                await conn.execute(text(statement))
    say(
        f"added the table {HAND_MADE_TABLE} by hand, with an unused and an invalid index "
        "(schema drift, index panels)"
    )

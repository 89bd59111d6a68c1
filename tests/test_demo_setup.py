"""What the demo adds to its database: repeatable, and clear when pg_stat_statements is absent."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pg_cluster import private_cluster
from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from exporter.demo.prepare import (
    HAND_MADE_TABLE,
    add_hand_made_objects,
    enable_statement_statistics,
)
from exporter.dsn import async_url

INDEXES = f"""
SELECT i.relname, x.indisvalid FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid
WHERE t.relname = '{HAND_MADE_TABLE}' ORDER BY i.relname
"""


async def engine_for(url: URL) -> AsyncEngine:
    return create_async_engine(async_url(url))


@pytest.fixture
async def engine(fresh_database: URL) -> AsyncIterator[AsyncEngine]:
    engine = await engine_for(fresh_database)
    yield engine
    await engine.dispose()


async def test_hand_made_objects_twice_leave_one_table_an_unused_and_an_invalid_index(
    engine: AsyncEngine,
) -> None:
    said: list[str] = []
    await add_hand_made_objects(engine, said.append)
    await add_hand_made_objects(engine, said.append)  # a second demo run on DATABASE_URL
    async with engine.connect() as conn:
        indexes = (await conn.execute(text(INDEXES))).all()
        rows = await conn.scalar(text(f"SELECT count(*) FROM {HAND_MADE_TABLE}"))
        vacuumed = await conn.scalar(
            text("SELECT last_vacuum IS NOT NULL FROM pg_stat_user_tables WHERE relname = :t"),
            {"t": HAND_MADE_TABLE},
        )
    assert [tuple(row) for row in indexes] == [
        (f"ix_{HAND_MADE_TABLE}_id", True),
        (f"ix_{HAND_MADE_TABLE}_kind", False),
    ]
    assert rows == 60_000
    assert vacuumed is True
    assert len(said) == 2
    assert HAND_MADE_TABLE in said[0]


async def test_without_the_preloaded_library_the_demo_says_so_and_creates_nothing() -> None:
    with private_cluster() as bare:
        engine = await engine_for(make_url(bare.url))
        try:
            said: list[str] = []
            await enable_statement_statistics(engine, said.append)
            async with engine.connect() as conn:
                installed = await conn.scalar(
                    text("SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'")
                )
        finally:
            await engine.dispose()
    assert said == [
        "pg_stat_statements is not in shared_preload_libraries: the top-statements panel "
        "stays empty"
    ]
    assert installed == 0

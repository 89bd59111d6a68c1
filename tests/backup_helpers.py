"""Helpers for the backup tests: a seeded wallet database and what every table holds."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

from collector_helpers import execute
from sqlalchemy.engine import URL

from exporter.demo.models import create_engine
from exporter.demo.workload import WalletWorkload
from exporter.dsn import async_url

TABLES = """
SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY 1
"""


def dsn(url: URL) -> str:
    return url.render_as_string(hide_password=False)


async def _seed(url: URL) -> None:
    engine = create_engine(async_url(url))
    try:
        workload = WalletWorkload(engine, seed=16)
        await workload.seed()
        for user in range(1, 11):
            await workload.deposit(user, Decimal("12.345678"))
            await workload.transfer(user, user + 1, Decimal("3.5"))
        await workload.withdraw(2, Decimal("7"))
    finally:
        await engine.dispose()


def seed_wallet(url: URL) -> None:
    """Users, balances, transfers and ledger entries, as the demo's workload writes them."""
    asyncio.run(_seed(url))


def tables_digest(url: URL) -> dict[str, tuple[int, str]]:
    """Each table of the public schema: its row count and the MD5 of its rows in order."""
    digests = {}
    for (table,) in execute(url, TABLES):
        count, md5 = execute(
            url,
            f"SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), ''))"
            f' FROM "{table}" t',
        )[0]
        digests[table] = (count, md5)
    return digests


def server_version_num(url: URL) -> int:
    return int(execute(url, "SHOW server_version_num")[0][0])


def dump_files(directory: Path) -> list[str]:
    """Names of the files in `directory` that are or may look like backups."""
    return sorted(p.name for p in directory.iterdir() if ".dump" in p.name)

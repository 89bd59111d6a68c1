"""Backup, restore, migrations and queries on a wallet database of known size, against the
reference data layer's targets: backup < 5 min, restore < 10 min, migrations < 60 s, query p95
< 100 ms.

1. A new database migrated to head (`alembic upgrade head`: timed).
2. Seeded with `--users` users (each with a balance) and `--transfers` transfers between them
   (two ledger entries each), by `generate_series`; its size is printed.
3. Query latency through the repositories, as the demo's requests run them: a user with their
   balances by id, a keyset page of users, a user's latest transfers with their entries, and a
   transfer's two balances locked in a transaction (`--queries` of each, p50/p95/max).
4. `db-exporter backup` (run_backup) beside a plain `pg_dump -Fc` of the same database (the
   baseline: what checksum, fsync and renames add), then `db-exporter restore` into a new empty
   database beside a plain `pg_restore --single-transaction`; the row counts are compared.

Uses BENCH_DATABASE_URL, else TEST_DATABASE_URL, else an embedded PostgreSQL:

    cd bench && TEST_DATABASE_URL=postgresql://... ../.venv/bin/python backup_restore.py
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from alembic import command
from instrumentation_overhead import database  # bench/ is on the path
from scratch import scratch_database
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

from exporter.backups import BackupJob, inspect_database, run_backup, run_restore
from exporter.demo.models import (
    BalanceRepository,
    TransactionManager,
    TransferRepository,
    User,
    UserRepository,
    session_factory,
)
from exporter.demo.models import create_engine as create_wallet_engine
from exporter.demo.schema import alembic_config
from exporter.dsn import async_url, parse_dsn, sync_url
from exporter.pg_tools import find_tool, libpq_environment

TARGETS = {"backup": 300.0, "restore": 600.0, "migrations": 60.0, "query p95": 0.100}

SEED = """
INSERT INTO users (email, password_hash)
  SELECT 'user' || g || '@bench.example', 'x' FROM generate_series(1, :users) g;
INSERT INTO balances (user_id, asset, amount) SELECT id, 'USDT', 1000000 FROM users;
INSERT INTO transfers (from_user_id, to_user_id, asset, amount, kind, created_at)
  SELECT s, r, 'USDT', 1 + g % 100, 'transfer', now() - g * interval '1 second'
  FROM (SELECT g, 1 + (g * 7919) % :users AS s, 1 + (g * 104729 + 1) % :users AS r
        FROM generate_series(1::bigint, :transfers) g) t WHERE s <> r;
INSERT INTO ledger_entries (transfer_id, user_id, asset, delta, created_at)
  SELECT id, from_user_id, asset, -amount, created_at FROM transfers
  UNION ALL SELECT id, to_user_id, asset, amount, created_at FROM transfers;
ANALYZE;
"""
COUNTS = "SELECT relname, n_live_tup FROM pg_stat_user_tables ORDER BY relname"


def rows(url: URL) -> dict[str, int]:
    engine = create_engine(sync_url(url))
    with engine.connect() as conn:
        tables = [r[0] for r in conn.execute(text(COUNTS))]
        found = {
            t: int(conn.execute(text(f'SELECT count(*) FROM "{t}"')).scalar_one()) for t in tables
        }
    engine.dispose()
    return found


def seed(url: URL, users: int, transfers: int) -> str:
    engine = create_engine(sync_url(url))
    with engine.begin() as conn:
        for statement in filter(str.strip, SEED.split(";")):
            conn.execute(text(statement), {"users": users, "transfers": transfers})
    with engine.connect() as conn:
        size = conn.execute(text("SELECT pg_size_pretty(pg_database_size(current_database()))"))
        pretty = str(size.scalar_one())
    engine.dispose()
    return pretty


async def query_latencies(url: URL, users: int, n: int) -> dict[str, list[float]]:
    engine = create_wallet_engine(async_url(url))
    transactions = TransactionManager(session_factory(engine))
    pick = random.Random(16)
    latest: dict[str, list[float]] = {}

    async def user_with_balances() -> None:
        async with transactions.begin() as session:
            await UserRepository(session).get(pick.randint(1, users))

    async def keyset_page() -> None:
        async with transactions.begin() as session:
            start = pick.randint(1, users)
            after = (start, start)
            await UserRepository(session).page_after(User.id, after=after, size=50)

    async def latest_transfers() -> None:
        async with transactions.begin() as session:
            await TransferRepository(session).of_user(pick.randint(1, users), limit=20)

    async def locked_balances() -> None:
        async with transactions.begin() as session:
            pair = pick.sample(range(1, users + 1), 2)
            await BalanceRepository(session).locked(pair, "USDT")

    kinds: dict[str, Callable[[], Awaitable[None]]] = {
        "user with balances (get)": user_with_balances,
        "keyset page of 50 users": keyset_page,
        "latest 20 transfers + entries": latest_transfers,
        "two balances FOR UPDATE": locked_balances,
    }
    try:
        for name, run in kinds.items():
            await run()  # warm the pool and the statement caches
            times = []
            for _ in range(n):
                started = time.perf_counter()
                await run()
                times.append(time.perf_counter() - started)
            latest[name] = times
    finally:
        await engine.dispose()
    return latest


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


def timed(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def plain_tool(program: str, argv: list[str], url: URL) -> float:
    version, _ = inspect_database(url.render_as_string(hide_password=False), "bench")
    tool = find_tool(program, version)
    env = libpq_environment(url)
    return timed(lambda: subprocess.run([str(tool.path), *argv], env=env, check=True))


def verdict(name: str, seconds: float) -> str:
    target = TARGETS[name]
    unit = "ms" if target < 1 else "s"
    scale = 1000 if unit == "ms" else 1
    ok = "within" if seconds < target else "OVER"
    return (
        f"{name:<12} {seconds * scale:9.1f} {unit}   target < {target * scale:g} {unit}: {ok} "
        f"({seconds / target:.1%} of it)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--transfers", type=int, default=500_000)
    parser.add_argument("--queries", type=int, default=300, help="runs of each query kind")
    args = parser.parse_args()
    with database() as raw:
        server = parse_dsn(raw).set(drivername="postgresql")
        with scratch_database(server, "source") as source, tempfile.TemporaryDirectory() as tmp:
            migrations = timed(lambda: command.upgrade(alembic_config(source), "head"))
            size = seed(source, args.users, args.transfers)
            counts = rows(source)
            print(f"database: {size}; rows: {counts}")

            latencies = asyncio.run(query_latencies(source, args.users, args.queries))
            print(f"\nqueries through the repositories ({args.queries} of each):")
            for name, times in latencies.items():
                print(
                    f"  {name:<32} p50 {statistics.median(times) * 1000:6.2f} ms"
                    f"  p95 {p95(times) * 1000:6.2f} ms  max {max(times) * 1000:6.2f} ms"
                )
            every = [t for times in latencies.values() for t in times]

            dsn = source.render_as_string(hide_password=False)
            job = BackupJob("bench", dsn, Path(tmp), keep=1)
            backup = run_backup(job)
            plain_dump = plain_tool(
                "pg_dump", ["--format=custom", f"--file={tmp}/plain.dump"], source
            )
            with (
                scratch_database(server, "restore") as target,
                scratch_database(server, "plain") as plain_target,
            ):
                target_dsn = target.render_as_string(hide_password=False)
                restored = run_restore(backup.path, target_dsn, str(target.database))
                into = [f"--dbname={plain_target.database}", f"{tmp}/plain.dump"]
                plain_restore = plain_tool(
                    "pg_restore", ["--single-transaction", *into], plain_target
                )
                same = rows(target) == counts

            print(f"\nbackup file {backup.size_bytes / 2**20:.1f} MiB; restored rows equal: {same}")
            for what, ours, plain in (
                ("backup / plain pg_dump -Fc", backup.duration_seconds, plain_dump),
                ("restore / plain pg_restore", restored.duration_seconds, plain_restore),
            ):
                print(f"db-exporter {what}: {ours / plain:.2f}x ({ours:.2f} s / {plain:.2f} s)")
            print("\ntargets:")
            print("  " + verdict("backup", backup.duration_seconds))
            print("  " + verdict("restore", restored.duration_seconds))
            print("  " + verdict("migrations", migrations))
            print("  " + verdict("query p95", p95(every)))


if __name__ == "__main__":
    main()

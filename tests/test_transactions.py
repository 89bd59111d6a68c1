"""`TransactionManager` on a real PostgreSQL database: savepoints, rollbacks, tasks; and the
wallet's transfers under concurrency, which must never lose a cent."""

from __future__ import annotations

import asyncio
import random
from decimal import Decimal

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from exporter.demo.models import (
    Balance,
    InsufficientFunds,
    LedgerEntry,
    TransactionManager,
    User,
    UserRepository,
)
from exporter.demo.workload import START_BALANCE, USERS, WalletWorkload

D = Decimal


async def emails(transactions: TransactionManager) -> list[str]:
    async with transactions.begin() as session:
        return [u.email for u in await UserRepository(session).list(order_by=[User.email])]


async def add(transactions: TransactionManager, email: str) -> None:
    async with transactions.begin() as session:
        await UserRepository(session).create(email=email, password_hash="x")


async def add_then_fail(
    transactions: TransactionManager, email: str, error: Exception, *, expected: object = None
) -> None:
    """A block that adds a user and raises `error`; inside it the session is `expected` (when
    given), so that the caller sees whether the block joined its transaction."""
    async with transactions.begin() as session:
        if expected is not None:
            assert session is expected
        await add(transactions, email)
        raise error


async def test_a_savepoint_rolled_back_while_the_outer_transaction_commits(
    transactions: TransactionManager,
) -> None:
    async with transactions.begin() as outer:
        await add(transactions, "before@x")
        # The same session inside: a savepoint, not a new transaction.
        failure = InsufficientFunds("the inner step fails")
        with pytest.raises(InsufficientFunds):
            await add_then_fail(transactions, "undone@x", failure, expected=outer)
        # The outer transaction carries on after the savepoint's rollback.
        await add(transactions, "after@x")
        assert transactions.current() is outer
    assert transactions.current() is None
    assert await emails(transactions) == ["after@x", "before@x"]


async def test_the_outer_rollback_undoes_released_savepoints(
    transactions: TransactionManager,
) -> None:
    async def outer() -> None:
        async with transactions.begin():
            await add(transactions, "released@x")  # a savepoint, released
            raise RuntimeError("outer fails")

    with pytest.raises(RuntimeError, match="outer fails"):
        await outer()
    assert await emails(transactions) == []


async def test_savepoints_nest_several_deep(transactions: TransactionManager) -> None:
    async with transactions.begin():
        await add(transactions, "level1@x")
        async with transactions.begin():
            await add(transactions, "level2@x")
            with pytest.raises(ValueError, match="level 3"):
                await add_then_fail(transactions, "level3@x", ValueError("level 3"))
            await add(transactions, "level2-again@x")
    assert await emails(transactions) == ["level1@x", "level2-again@x", "level2@x"]


async def test_a_task_started_inside_a_block_gets_a_transaction_of_its_own(
    wallet_engine: AsyncEngine, transactions: TransactionManager
) -> None:
    async with transactions.begin() as outer:
        await add(transactions, "outer@x")

        async def other_task() -> bool:
            async with transactions.begin() as session:
                await UserRepository(session).create(email="task@x", password_hash="x")
                return session is outer

        assert await asyncio.create_task(other_task()) is False
        # Committed on its own, before the outer block ends: visible from a third session.
        async with wallet_engine.connect() as third:
            seen = (await third.execute(text("SELECT email FROM users"))).scalars().all()
        assert seen == ["task@x"]
    assert await emails(transactions) == ["outer@x", "task@x"]


# --- concurrent transfers ------------------------------------------------------------------------


async def balances_and_ledger(engine: AsyncEngine) -> tuple[dict[int, D], dict[int, D]]:
    """Each user's balance, and the sum of each user's ledger entries."""
    ledger = select(LedgerEntry.user_id, func.sum(LedgerEntry.delta)).group_by(LedgerEntry.user_id)
    async with engine.connect() as conn:
        balances = {u: a for u, a in await conn.execute(select(Balance.user_id, Balance.amount))}
        sums = {u: total for u, total in await conn.execute(ledger)}
    return balances, sums


async def test_concurrent_transfers_never_lose_a_cent(wallet_engine: AsyncEngine) -> None:
    workload = WalletWorkload(wallet_engine)
    await workload.seed()
    await workload.seed()  # a second run reuses the users
    chooser = random.Random(16)
    # Few users, many transfers at once: the same balances are wanted by several sessions at
    # the same moment, and some transfers would overdraw their sender.
    hot = (await balances_and_ledger(wallet_engine))[0]
    assert len(hot) == USERS
    users = sorted(hot)[:4]
    transfers = []
    for _ in range(120):
        sender, receiver = chooser.sample(users, 2)
        amount = D(chooser.randint(1, 60_000)) / 100
        transfers.append(workload.transfer(sender, receiver, amount))
    await asyncio.gather(*transfers)

    balances, ledger = await balances_and_ledger(wallet_engine)
    assert sum(balances.values()) == START_BALANCE * USERS
    assert all(amount >= 0 for amount in balances.values())
    for user_id, amount in balances.items():
        assert amount == START_BALANCE + ledger.get(user_id, D(0)), user_id
    # Money moved, and the ledger balances: every transfer has two entries summing to zero.
    assert any(balances[u] != START_BALANCE for u in users)
    assert sum(ledger.values()) == 0
    async with wallet_engine.connect() as conn:
        moved = await conn.scalar(text("SELECT count(*) FROM transfers"))
        entries = await conn.scalar(text("SELECT count(*) FROM ledger_entries"))
    assert moved is not None
    assert 0 < moved <= 120
    assert entries == 2 * moved


async def test_deposits_and_withdrawals_record_their_ledger_in_a_savepoint(
    wallet_engine: AsyncEngine,
) -> None:
    workload = WalletWorkload(wallet_engine)
    await workload.seed()
    user = min((await balances_and_ledger(wallet_engine))[0])
    await asyncio.gather(
        *(workload.deposit(user, D("2.50")) for _ in range(10)),
        *(workload.withdraw(user, D("1.25")) for _ in range(10)),
    )
    await workload.withdraw(user, START_BALANCE * 2)  # refused: more than available
    balances, ledger = await balances_and_ledger(wallet_engine)
    assert balances[user] == START_BALANCE + D("12.50")
    assert ledger[user] == D("12.50")

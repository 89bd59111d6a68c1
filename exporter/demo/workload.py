"""The demo's wallet workload: the traffic a real wallet service would send.

Deposits, withdrawals with row locks, transfers between users, reports with joins and
aggregates, one deliberately slow report, a page with an N+1 query pattern, a reconciliation
job that holds a connection, now and then a withdrawal the database refuses (so
`status="error"` has data), and bursts of concurrent requests beyond `pool_size` so the pool
overflows. Each step the service would serve as a web request runs in a request scope with its
route template, as a web-framework middleware would run it. Its units of work go through the
reference data layer's repositories and transaction manager, as an application's would.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, suppress
from decimal import Decimal

from sqlalchemy import func, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from exporter.demo.models import (
    Balance,
    BalanceRepository,
    LedgerEntry,
    TransactionManager,
    TransferRepository,
    User,
    UserRepository,
    session_factory,
)
from exporter.integrations.request import RequestFields, request_scope
from exporter.slowlog.context import QueryContext

log = logging.getLogger("exporter.demo.workload")

USERS = 50
START_BALANCE = Decimal("1000")
ASSET = "USDT"


def request(method: str, route: str) -> AbstractContextManager[QueryContext]:
    """A request of the wallet's API to `route` (a template), as a middleware scopes it."""
    return request_scope(RequestFields(lambda: route, method=method))


class WalletWorkload:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        workers: int = 4,
        burst_size: int = 12,
        burst_every_seconds: float = 10.0,
        slow_report_every_seconds: float = 5.0,
        seed: int = 7,
    ) -> None:
        self._engine = engine
        self._sessions: async_sessionmaker[AsyncSession] = session_factory(engine)
        self._transactions = TransactionManager(self._sessions)
        self._workers = workers
        self._burst_size = burst_size
        self._burst_every = burst_every_seconds
        self._slow_every = slow_report_every_seconds
        self._random = random.Random(seed)
        self._user_ids: list[int] = []
        self._stopping = asyncio.Event()

    async def seed(self) -> None:
        """Create the users and their balances once; a second run reuses them."""
        async with self._transactions.begin() as session:
            users = UserRepository(session)
            existing = [user.id for user in await users.list(with_deleted=True)]
            if not existing:
                created = await users.create_many(
                    {"email": f"user{i}@wallet.example", "password_hash": "demo-hash"}
                    for i in range(USERS)
                )
                await BalanceRepository(session).create_many(
                    {"user_id": user.id, "asset": ASSET, "amount": START_BALANCE}
                    for user in created
                )
                existing = [user.id for user in created]
        self._user_ids = existing

    # -- one unit of work each -------------------------------------------------------------

    async def _record(
        self,
        session: AsyncSession,
        amount: Decimal,
        *,
        sender: int | None = None,
        receiver: int | None = None,
    ) -> None:
        """The transfer row and one ledger entry per side that moved, in a savepoint of the
        caller's transaction."""
        if sender is not None and receiver is not None:
            kind = "transfer"
        else:
            kind = "deposit" if receiver is not None else "withdrawal"
        async with self._transactions.begin():
            transfer = await TransferRepository(session).create(
                from_user_id=sender, to_user_id=receiver, asset=ASSET, amount=amount, kind=kind
            )
            entries = [(sender, -amount), (receiver, amount)]
            session.add_all(
                LedgerEntry(transfer_id=transfer.id, user_id=user_id, asset=ASSET, delta=delta)
                for user_id, delta in entries
                if user_id is not None
            )

    async def deposit(self, user_id: int, amount: Decimal) -> None:
        async with self._transactions.begin() as session:
            balance = (await BalanceRepository(session).locked([user_id], ASSET))[user_id]
            balance.amount += amount
            await self._record(session, amount, receiver=user_id)

    async def withdraw(self, user_id: int, amount: Decimal) -> None:
        async with self._transactions.begin() as session:
            balance = (await BalanceRepository(session).locked([user_id], ASSET))[user_id]
            if not balance.can_withdraw(amount):
                return
            balance.amount -= amount
            await self._record(session, amount, sender=user_id)

    async def overdraw(self, user_id: int) -> None:
        """A buggy code path that skips the balance check; the CHECK constraint refuses it."""
        with suppress(DBAPIError):
            async with self._transactions.begin() as session:
                await session.execute(
                    update(Balance)
                    .where(Balance.user_id == user_id, Balance.asset == ASSET)
                    .values(amount=Balance.amount - Decimal("1000000"))
                )

    async def transfer(self, sender: int, receiver: int, amount: Decimal) -> None:
        """Move `amount` from `sender` to `receiver` if the sender has it: both balances are
        locked (in user id order, so concurrent transfers cannot deadlock) before either is
        read, so concurrent transfers never lose a cent."""
        async with self._transactions.begin() as session:
            balances = await BalanceRepository(session).locked((sender, receiver), ASSET)
            if not balances[sender].can_withdraw(amount):
                return
            balances[sender].amount -= amount
            balances[receiver].amount += amount
            await self._record(session, amount, sender=sender, receiver=receiver)

    async def report(self) -> None:
        """Top holders by ledger movement: a join and an aggregate."""
        async with self._sessions() as session:
            query = (
                select(User.email, func.sum(LedgerEntry.delta).label("net"), func.count())
                .join(LedgerEntry, LedgerEntry.user_id == User.id)
                .group_by(User.email)
                .order_by(func.sum(LedgerEntry.delta).desc())
                .limit(10)
            )
            (await session.execute(query)).all()

    async def users_report(self) -> None:
        """A page that loads each user's balance one query at a time: an N+1 the slow-query
        log reports (counted per request)."""
        with request("GET", "/reports/users"):
            async with self._sessions() as session:
                # Not the repository, which loads the balances with the users in one query.
                users = (await session.scalars(select(User).order_by(User.id).limit(12))).all()
                for user in users:
                    await session.scalar(
                        select(Balance.amount).where(
                            Balance.user_id == user.id, Balance.asset == ASSET
                        )
                    )

    async def slow_report(self) -> None:
        """The report someone wrote without an index in mind: always slow."""
        async with self._engine.connect() as conn:
            await conn.execute(
                text("SELECT pg_sleep(0.3), count(*), sum(delta) FROM ledger_entries")
            )

    async def reconcile(self) -> None:
        """A background job that walks every balance in one transaction, doing client-side
        work between statements: a connection held for a long time, as such jobs do."""
        async with self._sessions() as session:
            for user_id in self._user_ids:
                await session.execute(
                    select(func.coalesce(func.sum(LedgerEntry.delta), 0)).where(
                        LedgerEntry.user_id == user_id
                    )
                )
                await asyncio.sleep(0.05)

    async def _hold_connection(self) -> None:
        async with self._engine.connect() as conn:
            await conn.execute(text("SELECT pg_sleep(0.5), count(*) FROM balances"))

    async def burst(self) -> None:
        """More concurrent requests than pool_size: the pool opens overflow connections."""
        await asyncio.gather(
            *(self._hold_connection() for _ in range(self._burst_size)), return_exceptions=True
        )

    # -- loops -----------------------------------------------------------------------------

    async def _step(self) -> None:
        pick = self._random.random()
        user, other = self._random.sample(self._user_ids, 2)
        amount = Decimal(self._random.randint(1, 5000)) / 100
        if pick < 0.30:
            with request("POST", "/users/{user_id}/deposits"):
                await self.deposit(user, amount)
        elif pick < 0.55:
            with request("POST", "/users/{user_id}/withdrawals"):
                await self.withdraw(user, amount)
        elif pick < 0.85:
            with request("POST", "/transfers"):
                await self.transfer(user, other, amount)
        elif pick < 0.97:
            with request("GET", "/reports/top-holders"):
                await self.report()
        else:
            with request("POST", "/users/{user_id}/withdrawals"):
                await self.overdraw(user)

    async def _repeat(
        self, action: Callable[[], Awaitable[None]], pause: Callable[[], float]
    ) -> None:
        while not self._stopping.is_set():
            try:
                await action()
            except Exception as exc:  # keep the demo running; the metrics show the errors
                log.debug("workload step failed: %s", exc)
            with suppress(TimeoutError):
                async with asyncio.timeout(pause()):
                    await self._stopping.wait()

    def stop(self) -> None:
        """End `run()` once each loop has finished its step in flight (a step cancelled halfway
        can cut off a connection while the pool closes it, which the pool logs as an error)."""
        self._stopping.set()

    async def run(self) -> None:
        """Run until `stop()` or until cancelled."""
        if not self._user_ids:
            await self.seed()
        async with asyncio.TaskGroup() as group:
            for _ in range(self._workers):
                group.create_task(
                    self._repeat(self._step, lambda: self._random.uniform(0.01, 0.05))
                )
            group.create_task(self._repeat(self.burst, lambda: self._burst_every))
            group.create_task(self._repeat(self.slow_report, lambda: self._slow_every))
            group.create_task(self._repeat(self.users_report, lambda: self._slow_every))
            group.create_task(self._repeat(self.reconcile, lambda: 0.1))

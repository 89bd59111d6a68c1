"""The wallet's repositories: which relations each lookup loads, and the wallet's own lookups."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from .balance import Balance
from .ledger import Transfer
from .repository import BaseRepository
from .user import User


class UserRepository(BaseRepository[User]):
    model = User
    eager = (User.balances,)


class BalanceRepository(BaseRepository[Balance]):
    model = Balance

    async def locked(self, user_ids: Collection[int], asset: str) -> dict[int, Balance]:
        """The balances of `user_ids` in `asset`, locked (SELECT ... FOR UPDATE) in user id
        order until the transaction ends: two transfers between the same users wait for each
        other instead of deadlocking or losing an update."""
        rows = await self.list(
            Balance.user_id.in_(user_ids),
            asset=asset,
            order_by=[Balance.user_id],
            for_update=True,
        )
        return {balance.user_id: balance for balance in rows}


class TransferRepository(BaseRepository[Transfer]):
    model = Transfer
    eager = (Transfer.entries,)

    async def of_user(self, user_id: int, *, limit: int = 50) -> Sequence[Transfer]:
        """A user's latest transfers, either side, each with its ledger entries."""
        return await self.list(
            (Transfer.from_user_id == user_id) | (Transfer.to_user_id == user_id),
            order_by=[Transfer.id.desc()],
            limit=limit,
        )

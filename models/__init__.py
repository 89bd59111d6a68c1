"""The reference application data layer: a small wallet (users, balances, a ledger).

It is what db-exporter watches in the demo and the tests; it never imports `exporter`.
"""

from .balance import Balance
from .base import Base, CreatedAtMixin, SoftDeleteMixin, TimestampMixin
from .db import (
    EngineSettings,
    create_engine,
    health_check,
    is_connection_error,
    session_factory,
    session_scope,
    with_retry,
)
from .errors import BalanceError, InsufficientFunds, InsufficientLockedFunds, InvalidAmount
from .ledger import TRANSFER_KINDS, LedgerEntry, Transfer
from .repositories import BalanceRepository, TransferRepository, UserRepository
from .repository import MAX_PAGE_SIZE, BaseRepository, KeysetPage, Page
from .transactions import TransactionManager
from .user import User

__all__ = [
    "MAX_PAGE_SIZE",
    "TRANSFER_KINDS",
    "Balance",
    "BalanceError",
    "BalanceRepository",
    "Base",
    "BaseRepository",
    "CreatedAtMixin",
    "EngineSettings",
    "InsufficientFunds",
    "InsufficientLockedFunds",
    "InvalidAmount",
    "KeysetPage",
    "LedgerEntry",
    "Page",
    "SoftDeleteMixin",
    "TimestampMixin",
    "TransactionManager",
    "Transfer",
    "TransferRepository",
    "User",
    "UserRepository",
    "create_engine",
    "health_check",
    "is_connection_error",
    "session_factory",
    "session_scope",
    "with_retry",
]

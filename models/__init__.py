"""The reference application data layer: a small wallet (users, balances, a ledger).

It is what db-exporter watches in the demo and the tests; it never imports `exporter`.
"""

from .balance import Balance
from .base import Base, CreatedAtMixin, TimestampMixin
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
from .user import User

__all__ = [
    "TRANSFER_KINDS",
    "Balance",
    "BalanceError",
    "Base",
    "CreatedAtMixin",
    "EngineSettings",
    "InsufficientFunds",
    "InsufficientLockedFunds",
    "InvalidAmount",
    "LedgerEntry",
    "TimestampMixin",
    "Transfer",
    "User",
    "create_engine",
    "health_check",
    "is_connection_error",
    "session_factory",
    "session_scope",
    "with_retry",
]

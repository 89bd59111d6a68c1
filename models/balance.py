"""Per-user, per-asset balances and the rules for locking funds (e.g. for a pending withdrawal).

The rules work on the Python object only. Two sessions changing the same balance must load it
with `select(Balance).with_for_update()`; the check constraints are the last line of defence.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Identity,
    Index,
    Numeric,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .base import Base, TimestampMixin
from .errors import InsufficientFunds, InsufficientLockedFunds, InvalidAmount

if TYPE_CHECKING:
    from .user import User

DEFAULT_ASSET = "USDT"
# Amounts are NUMERIC(18, 6): below 10**12, at most six decimal places.
AMOUNT_PRECISION = 18
AMOUNT_SCALE = 6
_QUANTUM = Decimal(1).scaleb(-AMOUNT_SCALE)
_LIMIT = Decimal(10) ** (AMOUNT_PRECISION - AMOUNT_SCALE)
_ZERO = Decimal(0)


def is_valid_amount(amount: object) -> bool:
    """True for a positive Decimal that a NUMERIC(18, 6) column stores exactly."""
    if not isinstance(amount, Decimal) or not amount.is_finite():
        return False
    return _ZERO < amount < _LIMIT and amount == amount.quantize(_QUANTUM)


def _checked(amount: Decimal) -> Decimal:
    if not is_valid_amount(amount):
        raise InvalidAmount(
            f"amount must be a positive Decimal below {_LIMIT} with at most {AMOUNT_SCALE} "
            f"decimal places, got {amount!r}"
        )
    return amount


class Balance(TimestampMixin, Base):
    __tablename__ = "balances"
    __table_args__ = (
        UniqueConstraint("user_id", "asset"),
        CheckConstraint("amount >= 0", name="amount_non_negative"),
        CheckConstraint("locked_amount >= 0", name="locked_non_negative"),
        CheckConstraint("locked_amount <= amount", name="locked_within_amount"),
        Index("ix_balances_user_id_asset", "user_id", "asset"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"))
    asset: Mapped[str] = mapped_column(
        String(16), default=DEFAULT_ASSET, server_default=DEFAULT_ASSET
    )
    amount: Mapped[Decimal] = mapped_column(
        Numeric(AMOUNT_PRECISION, AMOUNT_SCALE), default=_ZERO, server_default=text("0")
    )
    locked_amount: Mapped[Decimal] = mapped_column(
        Numeric(AMOUNT_PRECISION, AMOUNT_SCALE), default=_ZERO, server_default=text("0")
    )

    user: Mapped[User] = relationship(back_populates="balances")

    def __init__(self, **kwargs: Any) -> None:
        # Column defaults apply at INSERT; set them now so the rules work on a new object too.
        kwargs.setdefault("asset", DEFAULT_ASSET)
        kwargs.setdefault("amount", _ZERO)
        kwargs.setdefault("locked_amount", _ZERO)
        super().__init__(**kwargs)

    @property
    def available_amount(self) -> Decimal:
        """What is not locked: `amount - locked_amount`."""
        return self.amount - self.locked_amount

    def can_withdraw(self, amount: Decimal) -> bool:
        """True if `amount` is a valid amount no greater than the available amount."""
        return is_valid_amount(amount) and amount <= self.available_amount

    def lock(self, amount: Decimal) -> None:
        """Move `amount` from available to locked.

        Raises InvalidAmount (not a valid positive amount) or InsufficientFunds (more than is
        available); the balance is unchanged when it raises.
        """
        amount = _checked(amount)
        available = self.available_amount
        if amount > available:
            raise InsufficientFunds(
                f"cannot lock {amount} {self.asset}: only {available} available"
            )
        self.locked_amount += amount

    def unlock(self, amount: Decimal) -> None:
        """Move `amount` from locked back to available.

        Raises InvalidAmount (not a valid positive amount) or InsufficientLockedFunds (more than
        is locked); the balance is unchanged when it raises.
        """
        amount = _checked(amount)
        if amount > self.locked_amount:
            raise InsufficientLockedFunds(
                f"cannot unlock {amount} {self.asset}: only {self.locked_amount} locked"
            )
        self.locked_amount -= amount

"""The ledger: every movement of funds is a `Transfer` with one `LedgerEntry` per side.

A deposit has no sender (`from_user_id` is NULL), a withdrawal no receiver (`to_user_id` is
NULL). Entries carry the signed change (`delta`) of one user's balance, so a user's balance
is the sum of their deltas. Rows are never updated, hence `created_at` only.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Identity, Index, Numeric, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .balance import AMOUNT_PRECISION, AMOUNT_SCALE
from .base import Base, CreatedAtMixin
from .user import User

TRANSFER_KINDS: Final = ("deposit", "withdrawal", "transfer")
_KINDS_SQL = ", ".join(f"'{kind}'" for kind in TRANSFER_KINDS)


class Transfer(CreatedAtMixin, Base):
    __tablename__ = "transfers"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint(f"kind IN ({_KINDS_SQL})", name="kind_allowed"),
        CheckConstraint(
            "(kind = 'deposit' AND from_user_id IS NULL AND to_user_id IS NOT NULL)"
            " OR (kind = 'withdrawal' AND from_user_id IS NOT NULL AND to_user_id IS NULL)"
            " OR (kind = 'transfer' AND from_user_id IS NOT NULL AND to_user_id IS NOT NULL"
            " AND from_user_id <> to_user_id)",
            name="parties_match_kind",
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    from_user_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("users.id"), index=True)
    to_user_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("users.id"), index=True)
    asset: Mapped[str] = mapped_column(String(16))
    amount: Mapped[Decimal] = mapped_column(Numeric(AMOUNT_PRECISION, AMOUNT_SCALE))
    kind: Mapped[str] = mapped_column(String(16))

    from_user: Mapped[User | None] = relationship(foreign_keys=[from_user_id])
    to_user: Mapped[User | None] = relationship(foreign_keys=[to_user_id])
    entries: Mapped[list[LedgerEntry]] = relationship(back_populates="transfer")


class LedgerEntry(CreatedAtMixin, Base):
    __tablename__ = "ledger_entries"
    __table_args__ = (
        CheckConstraint("delta <> 0", name="delta_non_zero"),
        Index("ix_ledger_entries_user_id_created_at", "user_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    transfer_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("transfers.id"), index=True)
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id"))
    asset: Mapped[str] = mapped_column(String(16))
    delta: Mapped[Decimal] = mapped_column(Numeric(AMOUNT_PRECISION, AMOUNT_SCALE))

    transfer: Mapped[Transfer] = relationship(back_populates="entries")
    user: Mapped[User] = relationship()

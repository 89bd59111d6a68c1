"""Users of the wallet."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import BigInteger, Identity, Index, String, false, true
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .base import Base, SoftDeleteMixin, TimestampMixin

if TYPE_CHECKING:
    from .balance import Balance


class User(SoftDeleteMixin, TimestampMixin, Base):
    __tablename__ = "users"
    __table_args__ = (Index("ix_users_email_is_active", "email", "is_active"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    # unique + index: one unique index, `ix_users_email`.
    email: Mapped[str] = mapped_column(String(255), unique=True, index=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    is_active: Mapped[bool] = mapped_column(default=True, server_default=true())
    is_admin: Mapped[bool] = mapped_column(default=False, server_default=false())
    is_verified: Mapped[bool] = mapped_column(default=False, server_default=false())
    tron_address: Mapped[str | None] = mapped_column(String(42), unique=True)

    balances: Mapped[list[Balance]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True
    )

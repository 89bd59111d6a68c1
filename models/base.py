"""The declarative base: one MetaData with stable constraint names, timezone-aware timestamps."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import DateTime, MetaData, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeEngine

# Every index and constraint gets a predictable name, so migrations can refer to it and
# database errors name it (`ck_balances_amount_non_negative`, `fk_balances_user_id_users`, ...).
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Base class of every mapped class of the wallet application."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, TypeEngine[Any]]] = {datetime: DateTime(timezone=True)}


class CreatedAtMixin:
    """`created_at`, set by the database when the row is inserted (for rows never updated)."""

    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class TimestampMixin:
    """`created_at` and `updated_at`, both set by the database's clock, never by Python's.

    Eager defaults: INSERT and UPDATE read both back with RETURNING, so an async session
    never has to lazy-load them.
    """

    __mapper_args__: ClassVar[dict[str, Any]] = {"eager_defaults": True}
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class SoftDeleteMixin:
    """`deleted_at`: set instead of deleting the row, so that rows referring to it (the ledger)
    keep their history. `models.repository.BaseRepository` hides such rows unless asked."""

    deleted_at: Mapped[datetime | None] = mapped_column(default=None)

    @property
    def is_deleted(self) -> bool:
        return self.deleted_at is not None

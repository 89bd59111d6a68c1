"""Initial wallet schema: users, balances, transfers, ledger entries.

Revision ID: 0001
Revises:
Create Date: 2025-11-24 00:00:00

Written out by hand to match `models/` exactly (the autogenerate diff against the models is
empty). Names are final, hence `op.f(...)`: Alembic applies the models' naming convention to
the operations too, and would otherwise turn "ck_balances_x" into "ck_balances_ck_balances_x".
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

AMOUNT = sa.Numeric(precision=18, scale=6)


def _id() -> sa.Column[int]:
    return sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False)


def _timestamp(name: str) -> sa.Column[object]:
    return sa.Column(
        name, sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
    )


def upgrade() -> None:
    op.create_table(
        "users",
        _id(),
        sa.Column("email", sa.String(length=255), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("is_active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("is_admin", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("is_verified", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("tron_address", sa.String(length=42), nullable=True),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("tron_address", name=op.f("uq_users_tron_address")),
    )
    op.create_index(op.f("ix_users_email"), "users", ["email"], unique=True)
    op.create_index(op.f("ix_users_email_is_active"), "users", ["email", "is_active"])

    op.create_table(
        "balances",
        _id(),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("asset", sa.String(length=16), server_default="USDT", nullable=False),
        sa.Column("amount", AMOUNT, server_default=sa.text("0"), nullable=False),
        sa.Column("locked_amount", AMOUNT, server_default=sa.text("0"), nullable=False),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_balances")),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_balances_user_id_users"), ondelete="CASCADE"
        ),
        sa.UniqueConstraint("user_id", "asset", name=op.f("uq_balances_user_id_asset")),
        sa.CheckConstraint("amount >= 0", name=op.f("ck_balances_amount_non_negative")),
        sa.CheckConstraint("locked_amount >= 0", name=op.f("ck_balances_locked_non_negative")),
        sa.CheckConstraint(
            "locked_amount <= amount", name=op.f("ck_balances_locked_within_amount")
        ),
    )
    op.create_index(op.f("ix_balances_user_id_asset"), "balances", ["user_id", "asset"])

    op.create_table(
        "transfers",
        _id(),
        sa.Column("from_user_id", sa.BigInteger(), nullable=True),
        sa.Column("to_user_id", sa.BigInteger(), nullable=True),
        sa.Column("asset", sa.String(length=16), nullable=False),
        sa.Column("amount", AMOUNT, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transfers")),
        sa.ForeignKeyConstraint(
            ["from_user_id"], ["users.id"], name=op.f("fk_transfers_from_user_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["to_user_id"], ["users.id"], name=op.f("fk_transfers_to_user_id_users")
        ),
        sa.CheckConstraint("amount > 0", name=op.f("ck_transfers_amount_positive")),
        sa.CheckConstraint(
            "kind IN ('deposit', 'withdrawal', 'transfer')", name=op.f("ck_transfers_kind_allowed")
        ),
        sa.CheckConstraint(
            "(kind = 'deposit' AND from_user_id IS NULL AND to_user_id IS NOT NULL)"
            " OR (kind = 'withdrawal' AND from_user_id IS NOT NULL AND to_user_id IS NULL)"
            " OR (kind = 'transfer' AND from_user_id IS NOT NULL AND to_user_id IS NOT NULL"
            " AND from_user_id <> to_user_id)",
            name=op.f("ck_transfers_parties_match_kind"),
        ),
    )
    op.create_index(op.f("ix_transfers_from_user_id"), "transfers", ["from_user_id"])
    op.create_index(op.f("ix_transfers_to_user_id"), "transfers", ["to_user_id"])

    op.create_table(
        "ledger_entries",
        _id(),
        sa.Column("transfer_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("asset", sa.String(length=16), nullable=False),
        sa.Column("delta", AMOUNT, nullable=False),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_entries")),
        sa.ForeignKeyConstraint(
            ["transfer_id"], ["transfers.id"], name=op.f("fk_ledger_entries_transfer_id_transfers")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_ledger_entries_user_id_users")
        ),
        sa.CheckConstraint("delta <> 0", name=op.f("ck_ledger_entries_delta_non_zero")),
    )
    op.create_index(op.f("ix_ledger_entries_transfer_id"), "ledger_entries", ["transfer_id"])
    op.create_index(
        op.f("ix_ledger_entries_user_id_created_at"), "ledger_entries", ["user_id", "created_at"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_ledger_entries_user_id_created_at"), table_name="ledger_entries")
    op.drop_index(op.f("ix_ledger_entries_transfer_id"), table_name="ledger_entries")
    op.drop_table("ledger_entries")
    op.drop_index(op.f("ix_transfers_to_user_id"), table_name="transfers")
    op.drop_index(op.f("ix_transfers_from_user_id"), table_name="transfers")
    op.drop_table("transfers")
    op.drop_index(op.f("ix_balances_user_id_asset"), table_name="balances")
    op.drop_table("balances")
    op.drop_index(op.f("ix_users_email_is_active"), table_name="users")
    op.drop_index(op.f("ix_users_email"), table_name="users")
    op.drop_table("users")

"""Soft delete of users: `users.deleted_at` (NULL while the user exists).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 00:00:00

A user with ledger history cannot be deleted (the ledger's foreign keys refuse it); setting
`deleted_at` hides the user from the repositories and keeps the history. Adding a nullable
column without a default is a catalog change only: no table rewrite, a brief lock.
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("users", sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("users", "deleted_at")

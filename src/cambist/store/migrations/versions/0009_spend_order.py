"""Spend order: how each metered request was paid.

``usage.allowance_micros`` and ``usage.pool_micros`` hold the micro-dollars
of a request's price paid from its tenant's daily allowance and monthly pool
(the rest was prepaid credit). Rows written before this revision were all
prepaid; they take the server default 0.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A server default fills existing rows on both SQLite (batch copy) and
    # PostgreSQL (ADD COLUMN ... DEFAULT), so NOT NULL holds from the start.
    with op.batch_alter_table("usage") as batch:
        batch.add_column(sa.Column("allowance_micros", sa.BigInteger(), nullable=False,
                                   server_default="0"))
        batch.add_column(sa.Column("pool_micros", sa.BigInteger(), nullable=False,
                                   server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("usage") as batch:
        batch.drop_column("pool_micros")
        batch.drop_column("allowance_micros")

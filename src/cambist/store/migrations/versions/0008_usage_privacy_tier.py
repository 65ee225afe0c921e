"""Usage privacy tier: the tier each metered request was served under.

Rows written before this revision did not record a tier; they take the
server default ``standard`` (the tier a request gets when it asks for none).
The tier is metadata about how content was handled, never content.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A server default fills existing rows on both SQLite (batch copy) and
    # PostgreSQL (ADD COLUMN ... DEFAULT), so NOT NULL holds from the start.
    with op.batch_alter_table("usage") as batch:
        batch.add_column(sa.Column("privacy_tier", sa.String(32), nullable=False,
                                   server_default="standard"))


def downgrade() -> None:
    with op.batch_alter_table("usage") as batch:
        batch.drop_column("privacy_tier")

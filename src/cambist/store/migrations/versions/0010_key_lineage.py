"""Key lineage: the first key of a key's rotation chain.

``api_keys.lineage`` names the key a rotated key descends from (the first of
its chain; NULL: the key is its own first). A key's spend budget is counted
over the usage of its whole lineage, so rotating a key keeps the spend of the
current period (``cambist.ledger.budgets``).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("lineage", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("lineage")

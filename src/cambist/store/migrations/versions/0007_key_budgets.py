"""Key budgets: a spend limit per API key and calendar period (UTC day or
month), a soft alert threshold, and the period whose alert was already sent.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("budget_limit_micros", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("budget_alert_micros", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("budget_period", sa.String(8), nullable=True))
        batch.add_column(sa.Column("budget_alerted", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("budget_alerted")
        batch.drop_column("budget_period")
        batch.drop_column("budget_alert_micros")
        batch.drop_column("budget_limit_micros")

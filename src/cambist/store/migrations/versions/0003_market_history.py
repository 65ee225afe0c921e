"""Price history: OHLC and volume bars per market key and interval, and the
rollup loop's cursors.

Hand-written from ``schema.py``; ``tests/store/test_migrations.py`` fails if
the two drift apart.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "market_bars",
        sa.Column("interval_s", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("sku", sa.String(64), primary_key=True),
        sa.Column("region", sa.String(128), primary_key=True),
        sa.Column("supplier", sa.String(64), primary_key=True),
        sa.Column("start", sa.Float, primary_key=True),
        sa.Column("open_micros", sa.BigInteger, nullable=True),
        sa.Column("high_micros", sa.BigInteger, nullable=True),
        sa.Column("low_micros", sa.BigInteger, nullable=True),
        sa.Column("close_micros", sa.BigInteger, nullable=True),
        sa.Column("close_at", sa.Float, nullable=True),
        sa.Column("observations", sa.Integer, nullable=False),
        sa.Column("available_gpus", sa.Integer, nullable=False),
        sa.Column("volume_gpu_s", sa.Float, nullable=False),
        sa.Column("trades", sa.Integer, nullable=False),
    )
    op.create_index("ix_market_bars_interval_start", "market_bars", ["interval_s", "start"])
    op.create_table(
        "market_cursors",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("position", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("market_cursors")
    op.drop_index("ix_market_bars_interval_start", table_name="market_bars")
    op.drop_table("market_bars")

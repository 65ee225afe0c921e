"""Endpoints of every kind: own deployments, external providers, local engines.

Adds the endpoint's kind, its per-token prices (external and local upstreams
declare them; own deployments derive cost from their lease), the name of the
environment variable holding its API key (never the key), and quantization.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("endpoints") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False,
                                   server_default="deployment"))
        batch.add_column(sa.Column("input_micros_per_mtok", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("output_micros_per_mtok", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("api_key_env", sa.String(128), nullable=True))
        batch.add_column(sa.Column("quantization", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("endpoints") as batch:
        for col in ("quantization", "api_key_env", "output_micros_per_mtok",
                    "input_micros_per_mtok", "kind"):
            batch.drop_column(col)

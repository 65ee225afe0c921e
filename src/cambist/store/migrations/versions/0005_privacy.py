"""Privacy: attestation of endpoints for the confidential tier, and the tiers
each key and tenant may use.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "endpoint_attestations",
        sa.Column("endpoint_id", sa.String(64), primary_key=True),
        sa.Column("format", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(200), nullable=True),
        sa.Column("measurement", sa.String(128), nullable=True),
        sa.Column("checked_at", sa.Float, nullable=True),
        sa.Column("expires_at", sa.Float, nullable=True),
    )
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("privacy_tiers", sa.String(80), nullable=True))
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(sa.Column("privacy_tiers", sa.String(80), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("privacy_tiers")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("privacy_tiers")
    op.drop_table("endpoint_attestations")

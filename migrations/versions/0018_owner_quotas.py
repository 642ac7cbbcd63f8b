"""Storage quotas an admin sets through the API (`vera quota`, PUT /api/v1/owners/{owner}/quota): owner_quotas holds
one row per owner whose quota was set so, overriding the settings' (VERA_OWNER_QUOTAS, VERA_OWNER_QUOTA_BYTES)
until it is cleared. A new table; no existing row changes. On downgrade the table goes, and every owner's quota is
the settings' again.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-01 19:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "owner_quotas",
        sa.Column("owner", sa.String(64), primary_key=True),
        sa.Column("quota_bytes", sa.BigInteger(), nullable=True),
        sa.Column("set_by", sa.String(64), nullable=False),
        sa.Column("set_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("owner_quotas")

"""Adapters can move (be renamed, or transferred to another owner): adapter_moves keeps each name an adapter had, so
that a caller asking for it is told where it went (a 404 that names the new name, to whoever may read it), and a
publish to the old name is refused instead of starting a second adapter there without a word. A new table; no
existing row changes. On downgrade the table goes (adapters keep the names they have; the old names are then simply
unknown).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-01 17:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "adapter_moves",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("adapter_id", sa.Integer(), sa.ForeignKey("adapters.id", name="fk_adapter_moves_adapter_id_adapters",
                                                            ondelete="CASCADE"), nullable=False),
        sa.Column("moved_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("moved_by", sa.String(64), nullable=False),
        sa.UniqueConstraint("owner", "name", name="uq_adapter_moves_owner_name"),
    )
    op.create_index("ix_adapter_moves_adapter_id", "adapter_moves", ["adapter_id"])


def downgrade() -> None:
    op.drop_index("ix_adapter_moves_adapter_id", table_name="adapter_moves")
    op.drop_table("adapter_moves")

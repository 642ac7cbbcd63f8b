"""Model card revisions (adapter_cards): each edit of an adapter's card keeps the text it set, and the first edit also
the text it replaced (revision 0), so that a /hf commit, whose README.md carries the card, serves the same bytes for
as long as it is served. No existing row changes; the table starts empty (an adapter whose card is never edited keeps
its commit ids and has no rows). On downgrade the table goes; adapters.card keeps the newest text.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01 11:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "adapter_cards",
        sa.Column("adapter_id", sa.Integer(), sa.ForeignKey("adapters.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("revision", sa.Integer(), primary_key=True),
        sa.Column("card", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("adapter_cards")

"""Organisations and private adapters: organizations and memberships (a user's role in an organisation: read, write
or admin), adapters.visibility (public or private; 'public' for every existing adapter, so that nothing anyone could
read before becomes unreadable) and access_tokens.limited_to (the owner namespaces a token is limited to; NULL for
every existing token: no limit).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 05:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "organizations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "memberships",
        sa.Column("organization_id", sa.Integer(), nullable=False),
        sa.Column("member", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=8), nullable=False),
        sa.Column("added_by", sa.String(length=64), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["organization_id"], ["organizations.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("organization_id", "member"),
    )
    op.create_index("ix_memberships_member", "memberships", ["member"], unique=False)
    with op.batch_alter_table("adapters", schema=None) as batch_op:
        batch_op.add_column(sa.Column("visibility", sa.String(length=8), nullable=False, server_default="public"))
    with op.batch_alter_table("access_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("limited_to", sa.JSON(), nullable=True))


def downgrade() -> None:
    # in place (SQLite >= 3.35 drops a plain column): a batch rebuild of adapters would drop the old table, and
    # with foreign keys on, that cascades to every version, tag and alias
    op.drop_column("access_tokens", "limited_to")
    op.drop_column("adapters", "visibility")
    op.drop_index("ix_memberships_member", table_name="memberships")
    op.drop_table("memberships")
    op.drop_table("organizations")

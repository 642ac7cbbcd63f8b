"""Invitations to organisations (VERA_ORG_INVITATIONS): org_invitations holds one row per organisation and invited
user (the role they are invited to, who invited them, when, until when), so that an organisation's admin who adds a
user invites them instead, and the user becomes a member only by accepting. A new table; no existing row changes
(every membership stays as it is). On downgrade the table goes with the invitations still pending: the invited users
are simply not members, as before they were invited.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-02 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "org_invitations",
        sa.Column("organization_id", sa.Integer(),
                  sa.ForeignKey("organizations.id", name="fk_org_invitations_organization_id_organizations",
                                ondelete="CASCADE"), nullable=False),
        sa.Column("member", sa.String(64), nullable=False),
        sa.Column("role", sa.String(8), nullable=False),
        sa.Column("invited_by", sa.String(64), nullable=False),
        sa.Column("invited_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("organization_id", "member"),
    )
    op.create_index("ix_org_invitations_member", "org_invitations", ["member"])


def downgrade() -> None:
    op.drop_index("ix_org_invitations_member", table_name="org_invitations")
    op.drop_table("org_invitations")

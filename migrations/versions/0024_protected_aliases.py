"""Protected aliases: protected_aliases lists, per organisation, the alias names (a release alias such as `prod`) that
in every adapter of the organisation only its admins point at a version, remove, or take away by deleting the
version they name; its writers publish, tag and point other aliases as before. A new table; no existing row changes,
so nothing is protected until an admin says so (`vera org protect ORG ALIAS`). Rows go with their organisation
(ON DELETE CASCADE) and follow it through a rename (by id). On downgrade the table goes, and with it the protection:
every writer may move every alias again, as before this revision.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-03 14:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "protected_aliases",
        sa.Column("organization_id", sa.Integer(),
                  sa.ForeignKey("organizations.id", name="fk_protected_aliases_organization_id_organizations",
                                ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("organization_id", "name"),
    )


def downgrade() -> None:
    op.drop_table("protected_aliases")

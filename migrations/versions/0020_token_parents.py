"""Which token made a token: access_tokens.parent_id, the id of the token whose caller created it through the API
(`POST /api/v1/tokens`: `vera auth create-token`, the dashboard's remembered sign-in), NULL for one the operator
made on the registry's machine (`vera token create`) and for every token made before this revision. Revoking a token
then revokes the tokens made from it (a leaked token's offspring die with it), as their expiry already follows it.
A nullable column with an index; no existing row changes. On downgrade the column goes: revocations made since stay.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-01 23:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # in place (no batch rebuild of access_tokens): a plain nullable column, no foreign key (tokens are never
    # deleted, only revoked, so the parent row always exists)
    op.add_column("access_tokens", sa.Column("parent_id", sa.Integer(), nullable=True))
    op.create_index("ix_access_tokens_parent_id", "access_tokens", ["parent_id"])


def downgrade() -> None:
    op.drop_index("ix_access_tokens_parent_id", table_name="access_tokens")
    op.drop_column("access_tokens", "parent_id")  # in place: SQLite >= 3.35 drops a plain column

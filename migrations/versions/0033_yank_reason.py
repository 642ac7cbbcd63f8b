"""Why a version was yanked: adapter_versions.yank_reason, as PyPI keeps a yanked release's reason (PEP 592) and pip
shows it to whoever installs that release. `vera yank REF --reason "..."` (POST .../yank {"yanked": true, "reason"})
sets it; an unyank clears it.

One nullable column: no existing row changes (NULL: yanked without a reason, or not yanked). On downgrade it goes and
every yanked version stays yanked (the audit log's yank event still holds the reason).

Revision ID: 0033
Revises: 0032
Create Date: 2026-12-06 12:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0033"
down_revision = "0032"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("adapter_versions", sa.Column("yank_reason", sa.String(length=500), nullable=True))


def downgrade() -> None:
    op.drop_column("adapter_versions", "yank_reason")  # in place: SQLite >= 3.35 drops a plain column

"""An adapter's own retention rule: adapters.retention_keep_last and adapters.retention_keep_days, which its owner's
writers set (`vera retention owner/name --keep-last N`, PATCH /api/v1/adapters/{owner}/{name} {"retention": ...}) and
the registry applies about once an hour (housekeeping) and at each `vera gc`, as ECR's lifecycle policies and
Artifactory's cleanup policies do for a repository.

Two nullable columns: no existing row changes (NULL, NULL: no rule, as every adapter had; nothing is deleted that
was not before). On downgrade they go, and with them every rule: no version is deleted by one after that (the audit
log's adapter-edit events still say what each rule was).

Revision ID: 0034
Revises: 0033
Create Date: 2026-12-07 15:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0034"
down_revision = "0033"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("adapters", sa.Column("retention_keep_last", sa.Integer(), nullable=True))
    op.add_column("adapters", sa.Column("retention_keep_days", sa.Float(), nullable=True))


def downgrade() -> None:
    op.drop_column("adapters", "retention_keep_days")  # in place: SQLite >= 3.35 drops a plain column
    op.drop_column("adapters", "retention_keep_last")

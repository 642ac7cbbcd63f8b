"""Hub sync state: which versions were pushed to or pulled from which HuggingFace Hub repo, at which commit.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 05:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hub_syncs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("endpoint", sa.String(length=200), nullable=False),
        sa.Column("repo_id", sa.String(length=200), nullable=False),
        sa.Column("revision", sa.String(length=200), nullable=False),
        sa.Column("commit_sha", sa.String(length=64), nullable=False),
        sa.Column("with_projection", sa.Boolean(), nullable=False),
        sa.Column("format", sa.String(length=8), nullable=False),
        sa.Column("content_sha256", sa.String(length=64), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["version_id"], ["adapter_versions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("hub_syncs", schema=None) as batch_op:
        batch_op.create_index("ix_hub_syncs_repo", ["endpoint", "repo_id", "commit_sha"], unique=False)
        batch_op.create_index(batch_op.f("ix_hub_syncs_version_id"), ["version_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("hub_syncs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_hub_syncs_version_id"))
        batch_op.drop_index("ix_hub_syncs_repo")
    op.drop_table("hub_syncs")

"""Editable metadata and lineage (issue 16): adapters.card (the Markdown model card; '' for every existing adapter)
and, on adapter_versions, where a version came from: parent_version_id (the version it was fine-tuned from; set to
NULL by the registry when that one is deleted, with no foreign key, so that SQLite never rebuilds the table),
parent_ref (what the parent was called), code_revision, dataset_sha256 and dataset_bytes. Every existing adapter and
version keeps its rows (and its tags, aliases and Hub syncs); the new version columns are NULL (nothing was recorded).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 05:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

PARENT_INDEX = "ix_adapter_versions_parent_version_id"


def upgrade() -> None:
    with op.batch_alter_table("adapters", schema=None) as batch_op:
        batch_op.add_column(sa.Column("card", sa.Text(), nullable=False, server_default=""))
    with op.batch_alter_table("adapter_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("parent_version_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("parent_ref", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("code_revision", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("dataset_sha256", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("dataset_bytes", sa.BigInteger(), nullable=True))
        batch_op.create_index(PARENT_INDEX, ["parent_version_id"], unique=False)


def downgrade() -> None:
    # Not in batch mode: SQLite (3.35+) drops a column in place, where a batch would rebuild the table, and dropping
    # the old table would delete, through ON DELETE CASCADE, every tag, alias, Hub sync and version that refers to it.
    op.drop_index(PARENT_INDEX, table_name="adapter_versions")
    for column in ("dataset_bytes", "dataset_sha256", "code_revision", "parent_ref", "parent_version_id"):
        op.drop_column("adapter_versions", column)
    op.drop_column("adapters", "card")

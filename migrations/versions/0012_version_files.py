"""Derived files made once (issue 15): version_files, the files a download builds from a version in one form
(config, README and safetensors; with projections; as LoRA), each stored as a content-addressed blob of kind
``derived``. No existing row changes; the table starts empty and fills as versions are downloaded. On downgrade
only the table goes: the derived blobs' rows and bytes stay (code before 0012 neither serves nor collects them;
they are a cache that costs storage only, and an upgrade again finds them by hash).

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "version_files",
        sa.Column("version_id", sa.Integer(), sa.ForeignKey("adapter_versions.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("form", sa.String(64), primary_key=True),
        sa.Column("filename", sa.String(64), primary_key=True),
        sa.Column("sha256", sa.String(64), sa.ForeignKey("blobs.sha256"), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_version_files_sha256", "version_files", ["sha256"])


def downgrade() -> None:
    op.drop_index("ix_version_files_sha256", table_name="version_files")
    op.drop_table("version_files")

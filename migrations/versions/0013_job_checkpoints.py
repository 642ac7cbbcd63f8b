"""Job checkpoints in the registry (issue 17): job_checkpoints (one row per job, the newest checkpoint its worker
stored) and job_checkpoint_files (its files, content-addressed blobs of kind ``checkpoint``), so that a job's
attempt on another machine resumes where the last one stopped. No existing row changes; both tables start empty and
fill as workers train. On downgrade the tables go; the checkpoint blobs' rows and bytes stay until `vera gc` (code
before 0013 neither reads nor collects them; they only cost storage).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_checkpoints",
        sa.Column("job_id", sa.Integer(), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("world_size", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(100), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "job_checkpoint_files",
        sa.Column("job_id", sa.Integer(), sa.ForeignKey("job_checkpoints.job_id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("filename", sa.String(64), primary_key=True),
        sa.Column("sha256", sa.String(64), sa.ForeignKey("blobs.sha256"), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_job_checkpoint_files_sha256", "job_checkpoint_files", ["sha256"])


def downgrade() -> None:
    op.drop_index("ix_job_checkpoint_files_sha256", table_name="job_checkpoint_files")
    op.drop_table("job_checkpoint_files")
    op.drop_table("job_checkpoints")

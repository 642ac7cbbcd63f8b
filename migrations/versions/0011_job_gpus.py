"""Jobs that ask for GPUs: jobs.gpus, how many GPUs a job's training needs (0: a CPU job, as every existing job). A
worker claims only the jobs whose gpus it can give (a CPU worker: none; a worker that owns a CUDA device: up to 1).

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 07:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("gpus", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    # in place (SQLite >= 3.35 drops a plain column): a batch rebuild of jobs would drop the old table, and with
    # foreign keys on, that cascades to every job event
    op.drop_column("jobs", "gpus")

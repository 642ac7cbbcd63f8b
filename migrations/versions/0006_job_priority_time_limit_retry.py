"""Jobs that cannot wedge workers: jobs.priority (higher first; 0 for every existing job), jobs.time_limit_s (NULL:
none, as every existing job) and jobs.not_before (a job re-queued after its worker died waits until then; NULL for
every existing job).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 03:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("priority", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("time_limit_s", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("not_before", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    # in place (SQLite >= 3.35 drops a plain column): a batch rebuild of jobs would drop the old table, and with
    # foreign keys on, that cascades to every job event
    op.drop_column("jobs", "not_before")
    op.drop_column("jobs", "time_limit_s")
    op.drop_column("jobs", "priority")

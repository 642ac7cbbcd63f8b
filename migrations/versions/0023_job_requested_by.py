"""Who submitted a fine-tune job: jobs.requested_by holds the user of the token that submitted it (or `local`, the
single user of a registry without tokens; an administrator submitting for another owner), so that the version the job
publishes names who asked for it as its publisher. Before, the job's result named the member whose organisation role
allowed the submission (jobs.submitted_by, 0016) or else the target's owner: an administrator's fine-tune for alice,
and every job of local mode, was recorded as published by the owner's namespace. One nullable column; no existing
row changes (NULL: submitted before this revision, published as before). On downgrade it goes.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-03 06:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("requested_by", sa.String(64), nullable=True))  # in place: a plain column


def downgrade() -> None:
    op.drop_column("jobs", "requested_by")  # in place: SQLite >= 3.35 drops a plain column

"""What a fine-tune job's result is labelled with: jobs.result_labels holds the tags, description and key=value
properties its submitter asked for (`vera job submit --tag --description --property`, the API's ``tags``,
``description`` and ``properties`` form fields), which the version the job publishes carries beside the ``fine-tune``
tag, as MLflow runs carry their tags. One nullable JSON column: no existing row changes (NULL: none asked, or
submitted before this revision; such a job publishes as before). On downgrade it goes, and a queued job submitted
with labels then publishes without them.

Revision ID: 0030
Revises: 0029
Create Date: 2026-12-05 21:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0030"
down_revision = "0029"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("result_labels", sa.JSON(), nullable=True))  # in place: a plain nullable column


def downgrade() -> None:
    op.drop_column("jobs", "result_labels")  # in place: SQLite >= 3.35 drops a plain column

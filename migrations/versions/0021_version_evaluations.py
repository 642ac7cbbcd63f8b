"""Evaluations recorded after publish (`vera eval record`, `POST .../versions/{v}/evaluations`): version_evaluations
holds one row per version and evaluation name (who recorded it, when, and the details of how it was measured: the
harness, its version, the tasks' settings). The evaluation's numbers join the version's metrics under its name, so
that search, sort, compare and the dashboard read them as any metric. A new table; no existing row changes. On
downgrade the table goes; the numbers stay in the versions' metrics, no longer deletable as evaluations.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-02 10:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "version_evaluations",
        sa.Column("version_id", sa.Integer(),
                  sa.ForeignKey("adapter_versions.id", name="fk_version_evaluations_version_id_adapter_versions",
                                ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("recorded_by", sa.String(64), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("version_id", "name"),
    )


def downgrade() -> None:
    op.drop_table("version_evaluations")

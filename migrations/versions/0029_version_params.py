"""Version parameters: version_params holds what a version was trained with, one key=value row each (``lr=0.01``,
``epochs=3``, ``r=256``), as MLflow keeps a run's params. `vera train` and fine-tune jobs record every training
setting in metrics.json's ``params``, and a publish's ``params`` field (`vera publish --metrics`, ``--param``) keeps
them with the version; they never change after. A new table: no existing row changes, and every version published
before it has no parameter (a job's version: its job's spec still says what it asked for, `vera job show`). Rows go
with their version (ON DELETE CASCADE). On downgrade the table goes, and with it every parameter.

Revision ID: 0029
Revises: 0028
Create Date: 2026-12-05 17:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0029"
down_revision = "0028"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "version_params",
        sa.Column("version_id", sa.Integer(),
                  sa.ForeignKey("adapter_versions.id", name="fk_version_params_version_id_adapter_versions",
                                ondelete="CASCADE"), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.String(500), nullable=False),
        sa.PrimaryKeyConstraint("version_id", "key"),
    )
    op.create_index("ix_version_params_key_value", "version_params", ["key", "value"])


def downgrade() -> None:
    op.drop_index("ix_version_params_key_value", table_name="version_params")
    op.drop_table("version_params")

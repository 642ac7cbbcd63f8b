"""Version properties: version_properties holds key=value properties of a version (``validation=passed``,
``dataset=reviews-2026-11``), as MLflow's model-version tags and SageMaker's metadata properties do; the plain tags
(version_tags) stay as they are. A new table; no existing row changes, and every version has no property until one
is set (`vera property`, ``PATCH .../versions/{n}``, a publish's ``properties`` field). Rows go with their version
(ON DELETE CASCADE). On downgrade the table goes, and with it every property.

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-03 17:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "version_properties",
        sa.Column("version_id", sa.Integer(),
                  sa.ForeignKey("adapter_versions.id", name="fk_version_properties_version_id_adapter_versions",
                                ondelete="CASCADE"), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.String(500), nullable=False),
        sa.PrimaryKeyConstraint("version_id", "key"),
    )
    op.create_index("ix_version_properties_key_value", "version_properties", ["key", "value"])


def downgrade() -> None:
    op.drop_index("ix_version_properties_key_value", table_name="version_properties")
    op.drop_table("version_properties")

"""Where a copied version came from: adapter_versions.copied_from_version_id (the version it is a copy of, set to
NULL when that one is deleted; no foreign key, like parent_version_id, so that SQLite never rebuilds this table) and
adapter_versions.copied_from_ref (that version's ref when it was copied, kept after it is deleted). A copy
(`vera cp`, POST .../versions/{selector}/copy) is a new version of another adapter, or of the same one, with the
bytes, metrics, parameters, properties, tags, evaluations and lineage of the version it copies: MLflow's
copy_model_version, the promotion of a staging adapter's version into a production one.

Two nullable columns and an index: no existing row changes (NULL: not a copy). On downgrade they go, and the copies
stay, as versions that do not say where they came from (the audit log's publish event still does).

Revision ID: 0032
Revises: 0031
Create Date: 2026-12-06 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0032"
down_revision = "0031"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("adapter_versions", sa.Column("copied_from_version_id", sa.Integer(), nullable=True))
    op.add_column("adapter_versions", sa.Column("copied_from_ref", sa.String(length=200), nullable=True))
    op.create_index("ix_adapter_versions_copied_from_version_id", "adapter_versions", ["copied_from_version_id"],
                    unique=False)


def downgrade() -> None:
    op.drop_index("ix_adapter_versions_copied_from_version_id", table_name="adapter_versions")
    op.drop_column("adapter_versions", "copied_from_ref")  # in place: SQLite >= 3.35 drops a plain column
    op.drop_column("adapter_versions", "copied_from_version_id")

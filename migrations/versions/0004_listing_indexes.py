"""Indexes for sorted and filtered listings: (column, id) for each sort column, so a page is an index walk.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 05:40:00
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

INDEXES = {
    "ix_adapter_versions_r_id": ["r", "id"],
    "ix_adapter_versions_trainable_id": ["trainable_parameters", "id"],
    "ix_adapter_versions_stored_id": ["stored_bytes", "id"],
    "ix_adapter_versions_verification_id": ["verification_status", "id"],
}


def upgrade() -> None:
    with op.batch_alter_table("adapter_versions", schema=None) as batch_op:
        for name, columns in INDEXES.items():
            batch_op.create_index(name, columns, unique=False)


def downgrade() -> None:
    with op.batch_alter_table("adapter_versions", schema=None) as batch_op:
        for name in INDEXES:
            batch_op.drop_index(name)

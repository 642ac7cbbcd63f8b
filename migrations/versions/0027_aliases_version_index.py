"""An index on aliases.version_id: every listing page, version read and lookup reads a version's aliases by its id
(``WHERE version_id IN (...)``), and deleting a version checks its aliases (the foreign key), each a scan of the
whole table without it (6 ms a listing in a registry of 100,000 aliases on SQLite: bench/RESULTS.md, session 36).
An index only: no row changes; downgrade drops it.

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-05 03:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_aliases_version_id", "aliases", ["version_id"])


def downgrade() -> None:
    op.drop_index("ix_aliases_version_id", table_name="aliases")

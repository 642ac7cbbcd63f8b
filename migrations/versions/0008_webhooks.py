"""Webhooks and their delivery log (issue 16).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 05:40:00
"""

from __future__ import annotations

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass  # reserved: filled in by the change that owns this revision


def downgrade() -> None:
    pass

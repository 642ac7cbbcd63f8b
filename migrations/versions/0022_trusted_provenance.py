"""Provenance of trusted publishing: access_tokens.provenance holds what a token minted for a CI job's identity token
(`POST /api/v1/tokens/oidc`) was minted for (the trusted publisher, the issuer, the subject and the token's claims:
repository, ref, commit, workflow run), and adapter_versions.published_via copies it onto each version published with
such a token, so that a version says which CI run published it, from claims its issuer signed; jobs.submitted_via
keeps it for a job submitted with such a token, whose result records it too. Three nullable JSON columns; no
existing row changes (NULL: published or submitted otherwise, or before this revision). On downgrade they go.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-03 02:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # in place (no batch rebuild): plain nullable columns
    op.add_column("access_tokens", sa.Column("provenance", sa.JSON(), nullable=True))
    op.add_column("adapter_versions", sa.Column("published_via", sa.JSON(), nullable=True))
    op.add_column("jobs", sa.Column("submitted_via", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("jobs", "submitted_via")
    op.drop_column("adapter_versions", "published_via")  # in place: SQLite >= 3.35 drops a plain column
    op.drop_column("access_tokens", "provenance")

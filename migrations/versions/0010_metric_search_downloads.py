"""Metric search and download counts (issue 16): version_metrics (one row per numeric metric of a version, indexed
by (key, value, version_id) for filters and sorts), filled here from every existing version's metrics JSON; and
version_downloads (per-version download counters that API processes add to in batches).

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 05:40:00
"""

from __future__ import annotations

import json
import math
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# The flattening rule as of this revision (registry.services.filters.metric_rows at the time), frozen here so that
# the migration means the same whatever the live code becomes.
MAX_KEY, MAX_DEPTH, MAX_PER_VERSION = 200, 4, 1000
BATCH = 1000


def _numeric_metrics(metrics: Any) -> dict[str, float]:
    found: dict[str, float] = {}
    stack: list[tuple[str, Any, int]] = [("", metrics, 0)]
    while stack:
        prefix, value, depth = stack.pop()
        number = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        if isinstance(value, dict) and depth < MAX_DEPTH:
            stack.extend((f"{prefix}{k}.", v, depth + 1) for k, v in value.items())
        elif number and 0 < len(prefix) - 1 <= MAX_KEY:
            found[prefix[:-1]] = float(value)
    return {k: found[k] for k in sorted(found)[:MAX_PER_VERSION]}


def _backfill() -> None:
    """A version_metrics row for each numeric metric of every existing version, read in batches by id."""
    conn = op.get_bind()
    versions = sa.table("adapter_versions", sa.column("id", sa.Integer), sa.column("metrics", sa.Text))
    metrics = sa.table("version_metrics", sa.column("version_id", sa.Integer), sa.column("key", sa.String),
                       sa.column("value", sa.Float))
    last = 0
    while True:
        rows = conn.execute(sa.select(versions.c.id, versions.c.metrics).where(versions.c.id > last)
                            .order_by(versions.c.id).limit(BATCH)).all()
        if not rows:
            return
        values = []
        for version_id, text in rows:
            parsed = json.loads(text) if isinstance(text, str | bytes) else text
            values += [{"version_id": version_id, "key": k, "value": v}
                       for k, v in _numeric_metrics(parsed or {}).items()]
        if values:
            conn.execute(metrics.insert(), values)
        last = rows[-1][0]


def upgrade() -> None:
    op.create_table(
        "version_metrics",
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["version_id"], ["adapter_versions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("version_id", "key"),
    )
    op.create_index("ix_version_metrics_key_value", "version_metrics", ["key", "value", "version_id"], unique=False)
    op.create_table(
        "version_downloads",
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("downloads", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["version_id"], ["adapter_versions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("version_id"),
    )
    _backfill()


def downgrade() -> None:
    # Only the two new tables go (with their index): nothing refers to them, and no existing table is rebuilt.
    op.drop_table("version_downloads")
    op.drop_table("version_metrics")

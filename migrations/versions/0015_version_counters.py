"""Version numbers are never given twice (version_counters): the highest number each owner/name has ever had, kept
when versions, and the adapter itself, are deleted, so that a publish after deleting the newest version (or every
version) takes a new number instead of reusing one whose bytes others fetched. Filled from the versions there are
and from the publish events of the audit log (which name the versions since deleted). No existing row changes; on
downgrade the table goes and numbering is as before.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01 15:00:00
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

#: A publish event's target: owner/name:N (registry.services.lookup.version_ref).
_TARGET = re.compile(r"^([a-z0-9._-]{1,64})/([a-z0-9._-]{1,100}):([0-9]{1,9})$")


def upgrade() -> None:
    counters = op.create_table(
        "version_counters",
        sa.Column("owner", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("last_version", sa.Integer(), nullable=False),
    )
    conn = op.get_bind()
    highest: dict[tuple[str, str], int] = {}
    for owner, name, number in conn.execute(sa.text(
            "SELECT a.owner, a.name, max(v.version) FROM adapters a JOIN adapter_versions v ON v.adapter_id = a.id "
            "GROUP BY a.owner, a.name")):
        highest[(owner, name)] = int(number)
    for (target,) in conn.execute(sa.text("SELECT target FROM audit_events WHERE action = 'publish'")):
        if (found := _TARGET.match(target or "")) is not None:
            key = (found.group(1), found.group(2))
            highest[key] = max(highest.get(key, 0), int(found.group(3)))
    if highest:
        op.bulk_insert(counters, [{"owner": owner, "name": name, "last_version": number}
                                  for (owner, name), number in sorted(highest.items())])


def downgrade() -> None:
    op.drop_table("version_counters")

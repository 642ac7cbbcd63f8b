"""Who may see an audit event, stored beside it: audit_events.sight (public, webhook, namespace, adapter or admin),
audit_events.owner (the owner namespace that decides it) and audit_events.adapter_name (for an adapter's event),
derived from each row's action and target by the rules the events page applied row by row before
(registry.domain.events.sight_of, copied here as they are at this revision). The page now filters in its query, so
that the database skips what a caller may not see and the caller learns nothing of it: before, a page's
``next_after`` moved past hidden events (the newest id in the whole log, without a cursor), so a caller who could see
nothing counted the registry's activity and its timing.

Three nullable columns and an index on (owner, adapter_name); every existing row is kept and filled, a batch at a
time in id order, no other value changes. On downgrade the columns and the index go (the pages then filter row by
row again).

Revision ID: 0031
Revises: 0030
Create Date: 2026-12-06 09:30:00
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from alembic import op

revision = "0031"
down_revision = "0030"
branch_labels = None
depends_on = None

#: Rows read per query.
BATCH = 1000
_PUBLIC = frozenset({"base-register", "base-remove"})
_WEBHOOK = frozenset({"webhook-create", "webhook-update", "webhook-delete"})
_ADAPTER_TARGET = re.compile(r"(?P<owner>[^/:@]+)/(?P<name>[^/:@]+)(?:[:@][^/]*)?")
_NAMESPACE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


def sight(action: str, target: str) -> tuple[str, str | None, str | None]:
    """(sight, owner, adapter name) of an event, as registry.domain.events.sight_of said at this revision."""
    if action in _PUBLIC:
        return "public", None, None
    owner, _, rest = target.partition("/")
    if action in _WEBHOOK and rest.startswith("webhooks/"):
        return "webhook", owner, None
    if _NAMESPACE.fullmatch(target):
        return "namespace", target, None
    if match := _ADAPTER_TARGET.fullmatch(target):
        return "adapter", match["owner"], match["name"]
    return "admin", None, None


def upgrade() -> None:
    op.add_column("audit_events", sa.Column("sight", sa.String(length=12), nullable=True))
    op.add_column("audit_events", sa.Column("owner", sa.String(length=200), nullable=True))
    op.add_column("audit_events", sa.Column("adapter_name", sa.String(length=200), nullable=True))
    op.create_index("ix_audit_events_owner_adapter", "audit_events", ["owner", "adapter_name"], unique=False)
    events = sa.table("audit_events", sa.column("id", sa.Integer), sa.column("action", sa.String),
                      sa.column("target", sa.String), sa.column("sight", sa.String), sa.column("owner", sa.String),
                      sa.column("adapter_name", sa.String))
    connection = op.get_bind()
    update = (events.update().where(events.c.id == sa.bindparam("row_id"))
              .values(sight=sa.bindparam("new_sight"), owner=sa.bindparam("new_owner"),
                      adapter_name=sa.bindparam("new_name")))
    after = 0
    while rows := connection.execute(sa.select(events.c.id, events.c.action, events.c.target)
                                     .where(events.c.id > after).order_by(events.c.id).limit(BATCH)).all():
        filled = [dict(zip(("new_sight", "new_owner", "new_name"), sight(action, target), strict=True), row_id=i)
                  for i, action, target in rows]
        connection.execute(update, filled)
        after = rows[-1][0]


def downgrade() -> None:
    op.drop_index("ix_audit_events_owner_adapter", table_name="audit_events")
    op.drop_column("audit_events", "adapter_name")  # in place: SQLite >= 3.35 drops a plain column
    op.drop_column("audit_events", "owner")
    op.drop_column("audit_events", "sight")

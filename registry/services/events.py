"""Reading the audit log: the events the registry records (publish, alias moves, yanks, deletes, jobs, Hub syncs,
base models), filtered by owner, adapter, action and time, paged by id, and shown only to those who may read the
adapter each one is about.

Events are keyset paged: ``after`` is the last id seen, and a page ends with the ``next_after`` that continues it,
so that a reader can page through the whole log, or follow it, without offsets. Without ``after`` or ``since`` a
page holds the newest events. A page looks at a bounded number of rows: when many in a row are hidden from the
caller, it can hold fewer than ``limit`` events while more follow (``next_after`` continues).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import Select, and_, func, or_, select

from registry.domain.errors import InvalidInput
from registry.domain.events import (
    MAX_EVENTS_PAGE,
    PUBLIC_ACTIONS,
    EventInfo,
    EventPage,
    adapter_of,
    namespace_of,
    webhook_owner_of,
)
from registry.domain.schemas import Ref, check_name, check_text
from registry.store import models as m
from registry.store.database import Database

#: How many rows one page looks at, at most, per event it may return.
_SCAN_FACTOR = 8


class Viewer(Protocol):
    """Who reads the events (registry.services.tokens.Principal): what it may see."""

    @property
    def is_registry_admin(self) -> bool: ...

    def can_read(self, owner: str, visibility: str) -> bool: ...

    def can_write(self, owner: str) -> bool: ...


def event_info(e: m.AuditEvent) -> EventInfo:
    about = adapter_of(e.action, e.target)
    owner = about[0] if about else webhook_owner_of(e.action, e.target) or namespace_of(e.action, e.target)
    return EventInfo(id=e.id, at=e.at, actor=e.actor, action=e.action, target=e.target, owner=owner,
                     adapter=f"{about[0]}/{about[1]}" if about else None, detail=e.detail)


class Events:
    """The audit log of a registry database, for readers."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def page(self, viewer: Viewer, *, owner: str | None = None, adapter: str | None = None,
             action: str | None = None, after: int | None = None, since: datetime | None = None,
             limit: int = 50) -> EventPage:
        """The events ``viewer`` may see, oldest first: after id ``after`` and from ``since`` when given, else the
        newest ``limit``."""
        if not 1 <= limit <= MAX_EVENTS_PAGE:
            raise InvalidInput(f"limit must be from 1 to {MAX_EVENTS_PAGE}; got {limit}.")
        if since is not None:
            since = _in_utc(since)
        query = _filtered(owner=owner, adapter=adapter, action=action, since=since)
        budget = limit * _SCAN_FACTOR
        with self.db.session() as s:
            if after is None and since is None:
                return self._newest(s, viewer, query, limit, budget)
            shown: list[EventInfo] = []
            cursor, visible = after or 0, _Sight(s, viewer)
            for row in s.scalars(query.where(m.AuditEvent.id > cursor).order_by(m.AuditEvent.id).limit(budget)):
                cursor = row.id
                if visible(row):
                    shown.append(event_info(row))
                    if len(shown) == limit:
                        break
            return EventPage(events=shown, next_after=cursor)

    @staticmethod
    def _newest(s: Any, viewer: Viewer, query: Select[m.AuditEvent], limit: int, budget: int) -> EventPage:
        newest = s.scalar(select(func.max(m.AuditEvent.id))) or 0
        shown: list[EventInfo] = []
        visible = _Sight(s, viewer)
        for row in s.scalars(query.where(m.AuditEvent.id <= newest).order_by(m.AuditEvent.id.desc()).limit(budget)):
            if visible(row):
                shown.append(event_info(row))
                if len(shown) == limit:
                    break
        return EventPage(events=shown[::-1], next_after=newest)


def _filtered(*, owner: str | None, adapter: str | None, action: str | None,
              since: datetime | None) -> Select[m.AuditEvent]:
    """Audit events matching the filters, each checked first (a bad one says what is expected)."""
    query = select(m.AuditEvent)
    if owner is not None:
        check_name(owner, "owner")
        query = query.where(or_(m.AuditEvent.target.startswith(f"{owner}/", autoescape=True),
                                m.AuditEvent.target == owner),
                            m.AuditEvent.action.not_in(PUBLIC_ACTIONS))
    if adapter is not None:
        ref = Ref.parse(adapter)
        if ref.version is not None or ref.alias not in (None, "latest"):
            raise InvalidInput(f"adapter must be owner/name, without a version or alias; got {adapter!r}.")
        name = f"{ref.owner}/{ref.name}"
        query = query.where(or_(m.AuditEvent.target == name,
                                m.AuditEvent.target.startswith(f"{name}:", autoescape=True),
                                m.AuditEvent.target.startswith(f"{name}@", autoescape=True)),
                            m.AuditEvent.action.not_in(PUBLIC_ACTIONS))
    if action is not None:
        check_text(action, "action", max_length=32)
        query = query.where(m.AuditEvent.action == action)
    if since is not None:
        query = query.where(m.AuditEvent.at >= since)
    return query


class _Sight:
    """Whether ``viewer`` may see an event. One about an adapter: when it may read that adapter (one that no longer
    exists counts as private: its owner's readers only; so does an event older than the adapter that has its name
    now, from one deleted before it). About the registry (a base model): always. About an owner's
    webhooks: when it may manage them. About an owner namespace (an organisation's members): when it may read the
    owner's private adapters. Anything else (an action this module does not know): as an administrator only.
    Adapter visibilities are looked up once per page."""

    def __init__(self, s: Any, viewer: Viewer) -> None:
        self.s, self.viewer = s, viewer
        #: (owner, name) -> the visibility of the adapter called so now, and when it was created (None: no adapter)
        self.known: dict[tuple[str, str], tuple[str, datetime | None]] = {}

    def __call__(self, event: m.AuditEvent) -> bool:
        action, target = event.action, event.target
        if action in PUBLIC_ACTIONS:
            return True
        if (hook_owner := webhook_owner_of(action, target)) is not None:
            return self.viewer.can_write(hook_owner)
        if (namespace := namespace_of(action, target)) is not None:
            return self.viewer.can_read(namespace, "private")
        about = adapter_of(action, target)
        if about is None:  # tokens, registry-wide webhooks, ...: not for an admin token limited to some owners
            return self.viewer.is_registry_admin
        if self.viewer.can_read(about[0], "private"):
            return True
        if about not in self.known:
            row = self.s.execute(select(m.Adapter.visibility, m.Adapter.created_at).where(
                and_(m.Adapter.owner == about[0], m.Adapter.name == about[1]))).first()
            self.known[about] = (row[0], row[1]) if row is not None else ("private", None)
        visibility, since = self.known[about]
        if since is not None and event.at < since:  # a deleted adapter's, whose name a new one took (an outsider's
            visibility = "private"  # finding: a private adapter's history went public with a public successor)
        return self.viewer.can_read(about[0], visibility)


def _in_utc(since: datetime) -> datetime:
    """``since`` in UTC (no zone: UTC); InvalidInput for a time UTC cannot hold (0001-01-01T00:00+00:01 is in year 0
    there: it was a 500, an outsider's finding, session 43)."""
    if since.tzinfo is None:
        return since.replace(tzinfo=UTC)
    try:
        return since.astimezone(UTC)
    except OverflowError:
        raise InvalidInput(f"since={since.isoformat()} is outside the years 1 to 9999 once in UTC; give a time "
                           "between them, e.g. 2026-12-01T09:00 (UTC) or 2026-12-01T09:00+01:00.") from None


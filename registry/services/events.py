"""Reading the audit log: the events the registry records (publish, alias moves, yanks, deletes, jobs, Hub syncs,
base models), filtered by owner, adapter, action and time, paged by id, and shown only to those who may read the
adapter each one is about.

Events are keyset paged: ``after`` is the last id seen, and a page ends with the ``next_after`` that continues it,
so that a reader can page through the whole log, or follow it, without offsets. Without ``after`` or ``since`` a
page holds the newest events. Who may see an event is stored beside it (its ``sight``, owner and adapter name:
registry.domain.events.sight_of) and a page is filtered in its query: a page holds ``limit`` events while more
follow, and neither it nor its ``next_after`` (the last event on it) says anything of the events the caller may not
see (before, the cursor moved past them: a caller who saw nothing counted the registry's activity, session 45).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, Select, and_, exists, or_, select
from sqlalchemy.orm import Session, aliased

from registry.domain.errors import InvalidInput
from registry.domain.events import (
    ACCESS_DENIED,
    MAX_EVENTS_PAGE,
    EventInfo,
    EventPage,
)
from registry.domain.schemas import Ref, check_name, check_text
from registry.services.tokens import Principal
from registry.store import models as m
from registry.store.database import Database

log = logging.getLogger("vera.api")


def event_info(e: m.AuditEvent) -> EventInfo:
    """The event as readers get it: its owner and adapter as stored beside it (migration 0031: sight_of)."""
    adapter = f"{e.owner}/{e.adapter_name}" if e.sight == "adapter" and e.adapter_name is not None else None
    return EventInfo(id=e.id, at=e.at, actor=e.actor, action=e.action, target=e.target, owner=e.owner,
                     adapter=adapter, detail=e.detail)


class Events:
    """The audit log of a registry database, for readers."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def page(self, viewer: Principal, *, owner: str | None = None, adapter: str | None = None,
             action: str | None = None, after: int | None = None, since: datetime | None = None,
             limit: int = 50) -> EventPage:
        """The events ``viewer`` may see, oldest first: after id ``after`` and from ``since`` when given, else the
        newest ``limit``."""
        if not 1 <= limit <= MAX_EVENTS_PAGE:
            raise InvalidInput(f"limit must be from 1 to {MAX_EVENTS_PAGE}; got {limit}.")
        if since is not None:
            since = _in_utc(since)
        query = _filtered(owner=owner, adapter=adapter, action=action, since=since)
        if (seen := visible_to(viewer)) is not None:
            query = query.where(seen)
        with self.db.session() as s:
            if after is None and since is None:
                rows = list(s.scalars(query.order_by(m.AuditEvent.id.desc()).limit(limit)))[::-1]
            else:
                rows = list(s.scalars(query.where(m.AuditEvent.id > (after or 0))
                                      .order_by(m.AuditEvent.id).limit(limit)))
            return EventPage(events=_sources_hidden(s, viewer, [event_info(row) for row in rows]),
                             next_after=rows[-1].id if rows else after or 0)


def _sources_hidden(s: Session, viewer: Principal, events: list[EventInfo]) -> list[EventInfo]:
    """``events`` with a copy's ``copied_from`` (the source version in this registry, as the publish event stored it)
    made null where ``viewer`` may not read that adapter now, as the copy's lineage says ``copied_from_private``. The
    event named a source that was public when it was copied; made private later, its name stayed in the log for
    every reader of the copy (an outsider's finding, session 51). A source in another registry (a URL the copier
    stated) stays."""
    from registry.services.access import readable_clause  # access imports webhooks, which import this module

    if viewer.readable_owners() is None:
        return events
    sources: dict[str, tuple[str, str]] = {}
    for e in events:
        stated = e.detail.get("copied_from")
        if isinstance(stated, str) and "://" not in stated:
            try:
                source = Ref.parse(stated)
            except InvalidInput:  # (version_ref wrote it: never so)
                continue
            sources[stated] = (source.owner, source.name)
    if not sources:
        return events
    pairs = set(sources.values())
    readable = set(s.execute(select(m.Adapter.owner, m.Adapter.name).where(
        or_(*(and_(m.Adapter.owner == owner, m.Adapter.name == name) for owner, name in sorted(pairs))),
        readable_clause(viewer))).all())
    return [e.model_copy(update={"detail": {**e.detail, "copied_from": None}})
            if e.detail.get("copied_from") in sources and sources[e.detail["copied_from"]] not in readable else e
            for e in events]


def visible_to(viewer: Principal) -> ColumnElement[bool] | None:
    """The audit events ``viewer`` may see, as a condition (None: every one, for the registry's administrators).
    One about an adapter: when it may read that adapter (a job's, when it may read the owner's private adapters, as
    for the job itself; one about an adapter that no longer exists counts as private: its owner's
    readers only; so does an event older than the adapter that has its name now, from one deleted before it: an
    outsider's finding, a private adapter's history went public with a public successor). About the registry (a
    base model): when it may see that base model. About an owner's webhooks: when it may manage them. About an owner
    namespace (an organisation's members): when it may read the owner's private adapters, and the event is the
    present holder's of the name. Anything else: administrators only."""
    readable, writable = viewer.readable_owners(), viewer.writable_owners()
    if readable is None and writable is None:
        return None
    event, adapter = m.AuditEvent, m.Adapter
    public_adapter = exists().where(adapter.owner == event.owner, adapter.name == event.adapter_name,
                                    adapter.visibility == "public", adapter.created_at <= event.at)
    seen = [and_(event.sight == "public", _base_shown(viewer)),
            # a job's events are its owner's, as the job is, whatever the adapter's visibility (registry.services.
            # jobs.job_visible; a job-end carries the error: an outsider's finding, session 46)
            and_(event.sight == "adapter", ~event.action.startswith("job-"), public_adapter)]
    if readable:
        seen += [and_(event.sight == "adapter", event.owner.in_(sorted(readable))),
                 and_(event.sight == "namespace", event.owner.in_(sorted(readable)), _current_holders())]
    if writable:
        seen.append(and_(event.sight == "webhook", event.owner.in_(sorted(writable))))
    return or_(*seen)


def _base_shown(viewer: Principal) -> ColumnElement[bool]:
    """A base model's registration or removal (target ``name@revision``) is seen by whoever may see that base model
    (registry.services.access.shown_to: one that a version it reads uses, or that no version uses), so that a base
    only private versions use is not named by its event (an outsider's finding, session 46)."""
    from registry.services.access import readable_versions  # access imports webhooks, which import this module

    base = m.BaseModelShapes
    users = (select(m.AdapterVersion.id).join(base, base.id == m.AdapterVersion.base_model_id)
             .where(base.name + "@" + base.revision == m.AuditEvent.target))
    return or_(~users.exists(), users.where(m.AdapterVersion.id.in_(readable_versions(viewer))).exists())


def _current_holders() -> ColumnElement[bool]:
    """An owner namespace's event is its present holder's: not one that an organisation deleted (or renamed away
    from the name) left behind, which whoever takes the freed name next would read (its members and protected
    aliases, and a rename's new name, which the registry keeps from outsiders: an outsider's finding, session 46)."""
    event, later = m.AuditEvent, aliased(m.AuditEvent)
    left = later.action.in_(("org-delete", "org-rename"))
    renamed_away = and_(event.action == "org-rename", event.detail["from"].as_string() == event.target)
    return and_(~exists().where(later.target == event.target, later.sight == "namespace", left, later.id > event.id),
                event.action != "org-delete", ~renamed_away)


def _filtered(*, owner: str | None, adapter: str | None, action: str | None,
              since: datetime | None) -> Select[m.AuditEvent]:
    """Audit events matching the filters, each checked first (a bad one says what is expected)."""
    query = select(m.AuditEvent)
    if owner is not None:
        check_name(owner, "owner")
        query = query.where(m.AuditEvent.owner == owner)
    if adapter is not None:
        ref = Ref.parse(adapter)
        if ref.version is not None or ref.alias not in (None, "latest"):
            raise InvalidInput(f"adapter must be owner/name, without a version or alias; got {adapter!r}.")
        query = query.where(m.AuditEvent.owner == ref.owner, m.AuditEvent.adapter_name == ref.name,
                            m.AuditEvent.sight == "adapter")
    if action is not None:
        check_text(action, "action", max_length=32)
        query = query.where(m.AuditEvent.action == action)
    if since is not None:
        query = query.where(m.AuditEvent.at >= since)
    return query


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




class DeniedAccess:
    """Requests refused to a caller with a token (403: a scope, a role, a token's owner limit, a protected alias),
    recorded in the audit log as ``access-denied`` events that the registry's administrators alone see: who, what
    (method, route, path), why (the refusal's words) and with which token. Refusals were in the access log alone
    (the sessions' notes: "403s not audited"); an administrator now finds a token probing what it may not touch with
    `vera events --action access-denied`.

    At most ``per_minute`` events a user and minute per API process: a token refused in a loop cannot fill the
    database; the refusals past that are counted, and said (``detail.unrecorded``) on that user's next recorded one.
    A 401 (no token, a bad one) names nobody and is left to the access log, as are quota refusals (no access
    question). Recording never fails the request: a database that refuses writes (a read-only replica) records
    nothing."""

    def __init__(self, db: Database, *, per_minute: int = 10, clock: Callable[[], float] = time.monotonic) -> None:
        self.db, self.per_minute, self._clock = db, per_minute, clock
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[float, int, int]] = {}  # user -> (its minute's start, recorded, unrecorded)

    def _admitted(self, user: str) -> int | None:
        """How many refusals of ``user`` went unrecorded before this one, if this one is recorded; None if not."""
        now = self._clock()
        with self._lock:
            start, recorded, unrecorded = self._windows.get(user, (now, 0, 0))
            if now - start >= 60:
                start, recorded = now, 0
            if recorded >= self.per_minute:
                self._windows[user] = (start, recorded, unrecorded + 1)
                return None
            if len(self._windows) >= MAX_USERS_TRACKED and user not in self._windows:
                self._windows.clear()  # (a bound on memory: the windows start again)
            self._windows[user] = (start, recorded + 1, 0)
            return unrecorded

    def record(self, who: Principal, *, method: str, route: str, path: str, reason: str,
               request_id: str | None) -> bool:
        """Record one refusal of ``who`` (a caller with a token); whether it was recorded."""
        if who.anonymous or who.local or (unrecorded := self._admitted(who.owner)) is None:
            return False
        detail: dict[str, object] = {"method": method, "route": route, "reason": reason[:500],
                                     "token_id": who.token_id}
        if unrecorded:
            detail["unrecorded"] = unrecorded
        if request_id:
            detail["request_id"] = request_id
        try:
            with self.db.session() as s:
                s.add(m.AuditEvent(actor=who.owner[:64], action=ACCESS_DENIED, target=path[:200], detail=detail))
        except Exception as exc:  # noqa: BLE001 - the refusal stands whatever happens to its record
            log.info(f"a refusal of {who.owner} was not recorded in the audit log: {type(exc).__name__}")
            return False
        return True


#: The most users whose refusals are counted at once (a process's memory for DeniedAccess).
MAX_USERS_TRACKED = 10_000

"""Webhooks of owner namespaces: create, list, change, delete, test-deliver, and read their delivery log.

A webhook belongs to an owner (a user or an organisation) and receives the events of that owner's adapters whose
action it lists (registry.domain.events.WEBHOOK_EVENTS). Its secret signs every delivery (registry.services.delivery),
so it is stored as it is; it is returned once, by ``create``, and never again. Who may manage an owner's webhooks
is decided by the API (the publish scope for that owner). Sending is the outbox's (registry.services.outbox); a test
delivery is sent at once, once, and logged like the others.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from registry.domain.errors import Conflict, InvalidInput, NotFound
from registry.domain.events import (
    EVERY_OWNER,
    MAX_WEBHOOKS_PER_OWNER,
    PING,
    WEBHOOK_EVENTS,
    AttemptInfo,
    DeliveryInfo,
    WebhookChange,
    WebhookCreated,
    WebhookForm,
    WebhookInfo,
)
from registry.domain.schemas import check_name, check_text
from registry.services.delivery import Message, Sender, check_target
from registry.services.outbox import SENDING, payload, record
from registry.services.tokens import admin_ended
from registry.store import models as m
from registry.store.database import Database

SECRET_PREFIX = "whsec_"  # registry.logs redacts it
MAX_DESCRIPTION = 500
MAX_LOG_PAGE = 200


def _checked_events(events: list[str] | None) -> list[str]:
    if events is None:
        return list(WEBHOOK_EVENTS)
    unknown = sorted(set(events) - set(WEBHOOK_EVENTS))
    if unknown or not events:
        raise InvalidInput(f"events must be a non-empty list of {', '.join(WEBHOOK_EVENTS)}; got "
                           f"{', '.join(map(repr, unknown)) if unknown else 'none'}. Leave it out for every event.")
    return [e for e in WEBHOOK_EVENTS if e in events]


def webhook_info(row: m.Webhook) -> WebhookInfo:
    return WebhookInfo(id=row.id, owner=row.owner, url=row.url, events=list(row.events), active=row.active,
                       description=row.description, created_by=row.created_by, created_at=row.created_at,
                       updated_at=row.updated_at)


class Webhooks:
    """The webhooks of a registry database; ``sender`` sends test deliveries (and checks URLs as they are saved)."""

    def __init__(self, db: Database, sender: Sender | None = None) -> None:
        self.db, self.sender = db, sender or Sender()

    def _url(self, url: object) -> str:
        return check_target(url, allow_private=self.sender.allow_private)

    def create(self, form: WebhookForm, *, actor: str) -> WebhookCreated:
        """A new webhook for ``form.owner``'s adapter events (every owner's for EVERY_OWNER: the caller checks that
        an administrator asks), with its secret (shown this once)."""
        _check_owner(form.owner)
        events = _checked_events(form.events)
        description = check_text(form.description, "description", max_length=MAX_DESCRIPTION)
        url = self._url(form.url)
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        with self.db.session() as s:
            count = s.scalar(select(func.count()).select_from(m.Webhook).where(m.Webhook.owner == form.owner))
            if (count or 0) >= MAX_WEBHOOKS_PER_OWNER:
                raise Conflict(f"{form.owner} has {count} webhooks, the most one owner may have; remove one first "
                               f"(`vera webhook rm ID`).")
            newest = s.scalar(select(func.max(m.AuditEvent.id))) or 0
            row = m.Webhook(owner=form.owner, url=url, events=events, secret=secret, active=form.active,
                            description=description, created_by=actor, created_at=now, updated_at=now,
                            after_event_id=newest)
            s.add(row)
            s.flush()
            self._audit(s, "webhook-create", row, actor, {"url": url, "events": events})
            return WebhookCreated(**webhook_info(row).model_dump(), secret=secret)

    def for_owner(self, owner: str) -> list[WebhookInfo]:
        _check_owner(owner)
        with self.db.session() as s:
            return [webhook_info(w) for w in s.scalars(select(m.Webhook).where(m.Webhook.owner == owner)
                                                       .order_by(m.Webhook.id))]

    def get(self, webhook_id: int) -> WebhookInfo:
        with self.db.session() as s:
            return webhook_info(self._row(s, webhook_id))

    def change(self, webhook_id: int, change: WebhookChange, *, actor: str) -> WebhookInfo:
        """Change what ``change`` sets; the rest stays. Nothing changes if any part is refused."""
        fields: dict[str, Any] = {}
        if change.url is not None:
            fields["url"] = self._url(change.url)
        if change.events is not None:
            fields["events"] = _checked_events(change.events)
        if change.description is not None:
            fields["description"] = check_text(change.description, "description", max_length=MAX_DESCRIPTION)
        if change.active is not None:
            fields["active"] = change.active
        with self.db.session() as s:
            row = self._row(s, webhook_id)
            if change.active and not row.active:
                # resumed: it fires for events from now on, as a new one does. Events while it was paused are never
                # sent later, even those the dispatcher had not read yet (it reads each event once, a moment after
                # it happens: on a slow machine after the resume, which sent them: a CI run, session 37)
                row.after_event_id = max(row.after_event_id, s.scalar(select(func.max(m.AuditEvent.id))) or 0)
            for name, value in fields.items():
                setattr(row, name, value)
            row.updated_at = datetime.now(UTC)
            self._audit(s, "webhook-update", row, actor, fields)
            s.flush()
            return webhook_info(row)

    def delete(self, webhook_id: int, *, actor: str) -> None:
        """Remove a webhook with its delivery log; deliveries not yet sent are dropped."""
        with self.db.session() as s:
            row = self._row(s, webhook_id)
            self._audit(s, "webhook-delete", row, actor, {"url": row.url})
            s.delete(row)

    def deliveries(self, webhook_id: int, *, before: int | None = None, limit: int = 50) -> list[DeliveryInfo]:
        """The delivery log, newest first; ``before``: a delivery id, for the page after one already read."""
        if not 1 <= limit <= MAX_LOG_PAGE:
            raise InvalidInput(f"limit must be from 1 to {MAX_LOG_PAGE}; got {limit}.")
        query = (select(m.WebhookDelivery).where(m.WebhookDelivery.webhook_id == webhook_id)
                 .order_by(m.WebhookDelivery.id.desc()).limit(limit))
        if before is not None:
            query = query.where(m.WebhookDelivery.id < before)
        with self.db.session() as s:
            self._row(s, webhook_id)
            return _delivery_infos(s, list(s.scalars(query)))

    def test(self, webhook_id: int, *, actor: str) -> DeliveryInfo:
        """Send a ``ping`` event to the webhook now, once (no retries), and return its logged delivery."""
        now = datetime.now(UTC)
        with self.db.session() as s:
            hook = self._row(s, webhook_id)
            # "at" written as every event's (pydantic's "...Z"; it was "+00:00": an outsider's finding, session 43)
            event = {"id": None, "at": now.isoformat().replace("+00:00", "Z"), "actor": actor, "action": PING,
                     "target": hook.owner, "owner": hook.owner, "adapter": None,
                     "detail": {"message": "a test delivery"}}
            row = m.WebhookDelivery(webhook_id=hook.id, event_id=None, event=PING, payload=payload(event, hook),
                                    status=SENDING, attempts=1, claimed_by=f"test by {actor}"[:100], created_at=now)
            s.add(row)
            s.flush()
            message = Message(url=hook.url, secret=hook.secret, delivery_id=row.id, event=PING, event_id=None,
                              payload=row.payload)
        outcome = self.sender.send(message)  # outside the transaction: the receiver may take its time
        with self.db.session() as s:
            delivery = s.get(m.WebhookDelivery, message.delivery_id)
            if delivery is None:
                raise NotFound(f"Webhook {webhook_id} was deleted during its test delivery.")
            record(s, delivery, outcome, retry_at=None)
            s.flush()
            return _delivery_infos(s, [delivery])[0]

    @staticmethod
    def _row(s: Any, webhook_id: int) -> m.Webhook:
        row: m.Webhook | None = s.get(m.Webhook, webhook_id)
        if row is None:
            raise webhook_not_found(webhook_id)
        return row

    @staticmethod
    def _audit(s: Any, action: str, row: m.Webhook, actor: str, detail: dict[str, Any]) -> None:
        s.add(m.AuditEvent(actor=actor, action=action, target=f"{row.owner}/webhooks/{row.id}",
                           detail={k: v for k, v in detail.items() if k != "secret"}))


def _delivery_infos(s: Any, rows: list[m.WebhookDelivery]) -> list[DeliveryInfo]:
    """The deliveries with their attempts, in the order given."""
    attempts: dict[int, list[AttemptInfo]] = {r.id: [] for r in rows}
    for a in s.scalars(select(m.WebhookAttempt).where(m.WebhookAttempt.delivery_id.in_(attempts))
                       .order_by(m.WebhookAttempt.id)):
        attempts[a.delivery_id].append(AttemptInfo(attempt=a.attempt, at=a.at, status_code=a.status_code,
                                                   duration_ms=a.duration_ms, error=a.error))
    return [DeliveryInfo(id=r.id, webhook_id=r.webhook_id, event_id=r.event_id, event=r.event, status=r.status,
                         attempts=r.attempts, next_attempt_at=r.next_attempt_at, created_at=r.created_at,
                         finished_at=r.finished_at, payload=r.payload, log=attempts[r.id]) for r in rows]


def _check_owner(owner: str) -> None:
    """A webhook's owner is a name (check_name) or EVERY_OWNER."""
    if owner != EVERY_OWNER:
        check_name(owner, "owner")


def webhook_not_found(webhook_id: int) -> NotFound:
    """The error for a webhook that does not exist, or that the caller may not manage (one message for both)."""
    return NotFound(f"No webhook {webhook_id}; `vera webhook ls --owner OWNER` lists an owner's webhooks.")


def pause_webhooks_of(s: Session, organization: str, member: str, actor: str, why: str) -> None:
    """Pause the webhooks of the owner ``organization`` (an organisation, or EVERY_OWNER: the registry-wide ones)
    that ``member`` created or ever changed (its URL may be one it pointed elsewhere: an outsider's walk, session 29),
    now that it may no longer manage them: their URLs may be its, and the events they carry (descriptions, cards,
    private adapters' names) are the owner's. Each is audited as webhook-update (``detail.active`` false,
    ``detail.reason``); whoever manages those webhooks (the organisation's writers; the registry's administrators)
    reviews it, and resumes it (`vera webhook edit ID --active`) or removes it."""
    hooks = {h.id: h for h in s.scalars(select(m.Webhook).where(m.Webhook.owner == organization,
                                                                 m.Webhook.active.is_(True)))}
    # by id, whatever owner name the event was recorded under (an organisation renamed since keeps its webhooks,
    # and its audit events their old names: a reviewer's bypass, session 29)
    changed = {int(target.rpartition("/")[2]) for target in s.scalars(
        select(m.AuditEvent.target).where(m.AuditEvent.action == "webhook-update", m.AuditEvent.actor == member,
                                          or_(*[m.AuditEvent.target.endswith(f"/webhooks/{i}", autoescape=True)
                                                for i in hooks])))} if hooks else set()
    for hook in hooks.values():
        if hook.created_by == member or hook.id in changed:
            _pause(s, hook, organization, member, actor, f"{why} ({member})")


def _pause(s: Session, hook: m.Webhook, owner: str, member: str, actor: str, why: str) -> None:
    role = "creator" if hook.created_by == member else "editor"
    hook.active, hook.updated_at = False, datetime.now(UTC)
    s.add(m.AuditEvent(actor=actor, action="webhook-update", target=f"{owner}/webhooks/{hook.id}",
                       detail={"active": False, "reason": f"paused: its {role} {why}"}))


def pause_webhooks_of_departed_admins(db: Database, *, actor: str) -> list[int]:
    """Pause each active registry-wide webhook whose creator or an editor stopped holding an administrator's token
    (tokens.admin_ended: its last one expired; a revocation pauses them at once) since the webhook was created or
    last resumed: an administrator who resumed it after that took it over, and it stays. Whoever holds no such
    token row (the operator's commands, a registry without tokens, tokens purged long after their end) pauses
    nothing. Housekeeping runs it every round. The ids paused now."""
    now = datetime.now(UTC)
    with db.session() as s:
        hooks = {h.id: h for h in s.scalars(select(m.Webhook).where(m.Webhook.owner == EVERY_OWNER,
                                                                     m.Webhook.active.is_(True)))}
        if not hooks:
            return []
        targets = {f"{EVERY_OWNER}/webhooks/{i}": i for i in hooks}
        editors: dict[int, set[str]] = {i: {hook.created_by} for i, hook in hooks.items()}
        resumed: dict[int, datetime] = {i: hook.created_at for i, hook in hooks.items()}
        for event in s.scalars(select(m.AuditEvent).where(m.AuditEvent.action == "webhook-update",
                                                          m.AuditEvent.target.in_(targets))):
            hook_id = targets[event.target]
            editors[hook_id].add(event.actor)
            if event.detail.get("active") is True:
                resumed[hook_id] = max(resumed[hook_id], event.at)
        ended = {member: admin_ended(s, member, now) for member in sorted(set[str]().union(*editors.values()))}
        paused = []
        for hook_id, hook in hooks.items():
            gone = sorted(member for member in editors[hook_id]
                          if (end := ended[member]) is not None and end > resumed[hook_id])
            if gone:
                member = hook.created_by if hook.created_by in gone else gone[0]
                _pause(s, hook, EVERY_OWNER, member, actor,
                       f"holds no administrator's token any more, its last one expired ({member})")
                paused.append(hook_id)
        return paused

"""Audit events and webhooks as the API, the CLI and the dashboard see them (pydantic; no store, no HTTP).

An audit event says who did what to which target, when; its ``id`` only grows, so a reader pages through events
(and follows new ones) by passing the last id it saw as ``after``. A webhook belongs to an owner namespace (a user
or an organisation) and receives that owner's adapter events whose action it lists in ``events``; a registry-wide
webhook (owner ``*``, made and managed by the registry's administrators) receives every owner's.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

#: The audit actions a webhook can fire for (every one when a webhook names none): a version published, an alias
#: moved or removed, a version yanked or unyanked, a version deleted, a fine-tune job ended (succeeded, failed or
#: cancelled: ``detail.status``), an adapter moved (renamed or transferred: ``detail.from``, ``detail.to``), an
#: evaluation recorded on a version or deleted from it (``detail.name``, ``metrics``, ``details``). A webhook made
#: before "move" or the evaluation events existed keeps the list it had, without them.
WEBHOOK_EVENTS = ("publish", "alias", "alias-remove", "yank", "unyank", "delete", "job-end", "move",
                  "version-evaluate", "version-evaluation-delete", "adapter-edit", "version-edit")
#: The event a test delivery sends (never recorded as an audit event).
PING = "ping"
#: Actions whose target names no adapter but the registry as a whole: any reader may see them.
PUBLIC_ACTIONS = frozenset({"base-register", "base-remove"})
#: A request refused to a caller with a token (registry.services.events.DeniedAccess; target: the path asked).
ACCESS_DENIED = "access-denied"
#: Actions that only the registry's administrators see, whatever their target names.
ADMIN_ACTIONS = frozenset({ACCESS_DENIED})
#: Changes to an owner's webhooks (target ``owner/webhooks/ID``): seen by those who may manage them.
WEBHOOK_ACTIONS = frozenset({"webhook-create", "webhook-update", "webhook-delete"})
#: The owner of a registry-wide webhook: every owner's adapter events (not a name anyone can have: check_name).
EVERY_OWNER = "*"
#: The most events one page holds, and webhooks one owner may have.
MAX_EVENTS_PAGE = 500
MAX_WEBHOOKS_PER_OWNER = 50
#: A webhook's URL is at most this long.
MAX_URL_LENGTH = 2000

_ADAPTER_TARGET = re.compile(r"(?P<owner>[^/:@]+)/(?P<name>[^/:@]+)(?:[:@][^/]*)?")
_NAMESPACE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


def adapter_of(action: str, target: str) -> tuple[str, str] | None:
    """(owner, name) of the adapter an event is about (its target is ``owner/name``, ``owner/name:N`` or
    ``owner/name@alias``); None for an event about anything else (a base model registered, a webhook changed)."""
    if action in PUBLIC_ACTIONS:
        return None
    match = _ADAPTER_TARGET.fullmatch(target)
    return (match["owner"], match["name"]) if match else None


def webhook_owner_of(action: str, target: str) -> str | None:
    """The owner of the webhook a webhook-create, -update or -delete event is about (target ``owner/webhooks/ID``)."""
    owner, _, rest = target.partition("/")
    return owner if action in WEBHOOK_ACTIONS and rest.startswith("webhooks/") else None


def namespace_of(action: str, target: str) -> str | None:
    """The owner namespace an event is about when its target is one (an organisation created, a member added)."""
    return target if action not in PUBLIC_ACTIONS and _NAMESPACE.fullmatch(target) else None


#: Who may see an audit event, decided by its action and target alone (stored beside it, migration 0031, so that a
#: page of events is filtered in the query: the database skips what a caller may not see, and nothing of it, not
#: even how many there were, reaches the caller): ``public`` (a base model registered: anyone); ``webhook`` (an
#: owner's webhook changed: those who may manage them); ``namespace`` (an owner namespace's own events, such as an
#: organisation's members: those who may read its private adapters); ``adapter`` (about one adapter: those who may
#: read it); ``admin`` (anything else: the registry's administrators).
SIGHTS = ("public", "webhook", "namespace", "adapter", "admin")


def sight_of(action: str, target: str) -> tuple[str, str | None, str | None]:
    """(sight, owner, adapter name) of an event with ``action`` on ``target``: who may see it (one of SIGHTS), the
    owner namespace that decides it and, for an adapter's event, the adapter's name."""
    if action in PUBLIC_ACTIONS:
        return "public", None, None
    if action in ADMIN_ACTIONS:
        return "admin", None, None
    if (owner := webhook_owner_of(action, target)) is not None:
        return "webhook", owner, None
    if (owner := namespace_of(action, target)) is not None:
        return "namespace", owner, None
    if (about := adapter_of(action, target)) is not None:
        return "adapter", about[0], about[1]
    return "admin", None, None


class EventInfo(BaseModel):
    """One audit event; ``owner`` and ``adapter`` are set when it is about an adapter."""

    id: int
    at: datetime
    actor: str
    action: str
    target: str
    owner: str | None
    adapter: str | None
    detail: dict[str, Any]


class EventPage(BaseModel):
    """Events in id order, and the ``after`` that continues from them: the last event on the page (an empty page:
    the ``after`` it was asked with, or 0; the newest page of nothing: 0)."""

    events: list[EventInfo]
    next_after: int


class WebhookForm(BaseModel):
    """A new webhook: whose adapters, where to, which events (default: every one of WEBHOOK_EVENTS)."""

    # a field it has not is refused: ``event`` for ``events`` subscribed to every event, ``activ`` left it on, and
    # ``secret`` was replaced by a generated one, all unsaid (an outsider's finding, session 43)
    model_config = ConfigDict(extra="forbid")

    owner: str = Field(description="the user or organisation whose adapters' events are sent; '*': every owner's "
                                   "(a registry-wide webhook: registry administrators only)")
    url: str = Field(description="http(s) URL that receives a signed POST per event")
    events: list[str] | None = Field(default=None, description=f"any of {', '.join(WEBHOOK_EVENTS)}; default all")
    description: str = ""
    active: bool = True


class WebhookChange(BaseModel):
    """What to change of a webhook; fields left out stay as they are, a field it has not is refused."""

    model_config = ConfigDict(extra="forbid")  # `{"owner": ...}` answered 200, changing nothing (session 33)

    url: str | None = None
    events: list[str] | None = None
    description: str | None = None
    active: bool | None = None


class WebhookInfo(BaseModel):
    """A webhook, never its secret."""

    id: int
    owner: str
    url: str
    events: list[str]
    active: bool
    description: str
    created_by: str
    created_at: datetime
    updated_at: datetime


class WebhookCreated(WebhookInfo):
    """A webhook just created, with its signing secret: shown this once, never again."""

    secret: str


#: How an attempt's error begins when the attempt was refused before anything was sent (registry.services.delivery).
NOT_SENT = "refused: "


class AttemptInfo(BaseModel):
    """One HTTP attempt of a delivery: the receiver's status code (None: no answer), how long it took, what failed."""

    attempt: int
    at: datetime
    status_code: int | None
    duration_ms: int
    error: str | None

    @property
    def answer(self) -> str:
        """The receiver's answer in a few words: "answered 404", "no answer" (no connection, no status in time), or
        "not sent" (refused before anything was sent: the URL's address is an inside one now, ...; it read "no
        answer in 0 ms": a docs audit, session 53)."""
        if self.status_code is not None:
            return f"answered {self.status_code}"
        return "not sent" if (self.error or "").startswith(NOT_SENT) else "no answer"


class DeliveryInfo(BaseModel):
    """One event sent (or being sent) to one webhook, with every attempt so far.

    ``status``: pending (waiting for its next attempt, at ``next_attempt_at``), sending, succeeded, or failed (every
    attempt used). ``event_id`` is None for a test delivery."""

    id: int
    webhook_id: int
    event_id: int | None
    event: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    created_at: datetime
    finished_at: datetime | None
    payload: dict[str, Any]
    log: list[AttemptInfo]

"""The webhook outbox: audit events become deliveries, and dispatchers send them, so that a slow or failing receiver
never slows the request that caused the event (a publish only writes its audit row, as it always did).

Two steps, each safe with several dispatchers on one database (API replicas, `vera serve --workers N`):

1. **Enqueue.** The audit events after the stored cursor (table webhook_cursors) become one delivery per webhook of
   the event's owner that wants its action; the cursor moves by compare-and-set in the same transaction, so a second
   dispatcher that read the same cursor moves nothing and enqueues nothing (and a delivery is unique per webhook and
   event besides). An id that is missing below a newer event may belong to a transaction not yet committed
   (PostgreSQL hands out ids before commit): the cursor stops before such a gap until ``settle`` has passed.
2. **Deliver.** A due delivery is claimed by a row update that only succeeds while it is still due (pending, or
   sending with an expired lease); the claim sets the lease, so no other dispatcher takes it meanwhile. The HTTP
   attempt runs outside any transaction; its outcome is logged (webhook_attempts). A failed attempt is tried again
   after ``retry_backoff`` doubled per attempt, up to ``max_attempts``; then the delivery has failed.
"""

from __future__ import annotations

import logging
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from registry.domain.events import EVERY_OWNER, WEBHOOK_EVENTS
from registry.services.background import BackgroundThread
from registry.services.delivery import Message, Outcome, Sender
from registry.services.events import event_info
from registry.store import models as m
from registry.store.database import Database

log = logging.getLogger("vera.webhooks")
CURSOR = "audit"
PENDING, SENDING, SUCCEEDED, FAILED = "pending", "sending", "succeeded", "failed"


def payload(event: dict[str, Any], webhook: m.Webhook) -> dict[str, Any]:
    """What a receiver gets: the event (as GET /api/v1/events shows it) and which webhook sent it."""
    return {"event": event, "webhook": {"id": webhook.id, "owner": webhook.owner}}


def record(s: Any, row: m.WebhookDelivery, outcome: Outcome, *, retry_at: datetime | None) -> None:
    """Log an attempt of ``row`` and settle it: succeeded, pending again until ``retry_at``, or failed."""
    now = datetime.now(UTC)
    s.add(m.WebhookAttempt(delivery_id=row.id, attempt=row.attempts, at=now, status_code=outcome.status_code,
                           duration_ms=outcome.duration_ms, error=outcome.error))
    if outcome.ok or retry_at is None:
        row.status, row.next_attempt_at, row.finished_at = SUCCEEDED if outcome.ok else FAILED, None, now
    else:
        row.status, row.next_attempt_at = PENDING, retry_at


def _settled(rows: list[m.AuditEvent], start: int, settled_before: datetime) -> list[m.AuditEvent]:
    """The leading rows that no uncommitted event can precede: stop at a gap in the ids younger than the grace."""
    kept, expected = [], start + 1
    for row in rows:
        if row.id != expected and row.at > settled_before:
            break
        kept.append(row)
        expected = row.id + 1
    return kept


@dataclass(frozen=True)
class _Claim:
    message: Message
    attempt: int


def _claim_of(row: m.WebhookDelivery) -> _Claim:
    hook = row.webhook
    return _Claim(Message(url=hook.url, secret=hook.secret, delivery_id=row.id, event=row.event,
                          event_id=row.event_id, payload=row.payload), attempt=row.attempts)


class Outbox:
    """Turns audit events into deliveries and sends them (one ``run_once`` is one round of both)."""

    def __init__(self, db: Database, sender: Sender, *, max_attempts: int = 5,
                 retry_backoff: timedelta = timedelta(seconds=10), settle: timedelta = timedelta(seconds=30),
                 batch: int = 200, threads: int = 4) -> None:
        self.db, self.sender, self.max_attempts, self.retry_backoff = db, sender, max_attempts, retry_backoff
        self.settle, self.batch, self.threads = settle, batch, threads
        # a claimed delivery is due again (its dispatcher died) once every step of the attempt could have timed out
        self.lease = timedelta(seconds=4 * sender.timeout_s + 30)

    # ---- 1. enqueue ------------------------------------------------------------------------------------------
    def enqueue(self) -> int:
        """Deliveries for the audit events after the cursor; how many were made."""
        try:
            with self.db.session() as s:
                return self._enqueue(s)
        except IntegrityError:  # another dispatcher created the cursor, or enqueued the same events, first
            return 0

    def _enqueue(self, s: Any) -> int:
        now = datetime.now(UTC)
        cursor = s.get(m.WebhookCursor, CURSOR)
        if cursor is None:  # first start: events from now on (a webhook fires only for events after its creation)
            newest = s.scalar(select(func.max(m.AuditEvent.id))) or 0
            s.add(m.WebhookCursor(name=CURSOR, last_event_id=newest, updated_at=now))
            s.flush()
            return 0
        start = cursor.last_event_id
        rows = _settled(list(s.scalars(select(m.AuditEvent).where(m.AuditEvent.id > start)
                                       .order_by(m.AuditEvent.id).limit(self.batch))), start, now - self.settle)
        if not rows:
            return 0
        moved = s.execute(update(m.WebhookCursor).where(m.WebhookCursor.name == CURSOR,
                                                        m.WebhookCursor.last_event_id == start)
                          .values(last_event_id=rows[-1].id, updated_at=now)).rowcount
        if moved != 1:
            return 0  # another dispatcher took these events
        # the adapter's owner each event is about, as stored beside it (migration 0031: sight_of)
        owners = {row.owner for row in rows if row.sight == "adapter" and row.owner is not None}
        hooks = list(s.scalars(select(m.Webhook).where(m.Webhook.owner.in_(sorted(owners | {EVERY_OWNER})),
                                                       m.Webhook.active.is_(True)))) if owners else []
        made = 0
        for row in rows:
            if row.action not in WEBHOOK_EVENTS or row.sight != "adapter" or row.owner is None:
                continue
            try:
                event = event_info(row).model_dump(mode="json")
            except (ValueError, RecursionError) as exc:  # detail nested past what pydantic writes, stored before
                # check_json's depth limit: skipped and said, where the cursor stopped before it for good
                log.error("webhook event %s (%s %s) cannot be written as JSON (%s); not delivered", row.id,
                          row.action, row.target[:200], exc)
                continue
            for hook in hooks:
                if hook.owner in (row.owner, EVERY_OWNER) and row.action in hook.events and \
                        row.id > hook.after_event_id:
                    s.add(m.WebhookDelivery(webhook_id=hook.id, event_id=row.id, event=row.action,
                                            payload=payload(event, hook), status=PENDING, attempts=0,
                                            next_attempt_at=now, created_at=now))
                    made += 1
        return made

    # ---- 2. deliver ------------------------------------------------------------------------------------------
    def claim(self, worker: str, limit: int = 16) -> list[_Claim]:
        """Take up to ``limit`` due deliveries of active webhooks for ``worker``."""
        now = datetime.now(UTC)
        due = (m.WebhookDelivery.status.in_((PENDING, SENDING)), m.WebhookDelivery.next_attempt_at <= now)
        s: Any
        with self.db.session() as s:
            # a delivery whose dispatcher died during its last attempt has failed
            s.execute(update(m.WebhookDelivery).where(*due, m.WebhookDelivery.attempts >= self.max_attempts)
                      .values(status=FAILED, next_attempt_at=None, finished_at=now))
            candidates = list(s.scalars(
                select(m.WebhookDelivery.id).join(m.Webhook).where(*due, m.Webhook.active.is_(True))
                .order_by(m.WebhookDelivery.next_attempt_at, m.WebhookDelivery.id).limit(limit)))
            claims = []
            for delivery_id in candidates:
                taken = s.execute(update(m.WebhookDelivery).where(m.WebhookDelivery.id == delivery_id, *due).values(
                    status=SENDING, claimed_by=worker, next_attempt_at=now + self.lease,
                    attempts=m.WebhookDelivery.attempts + 1)).rowcount
                if taken == 1:  # nobody claimed it since it was read as due
                    claims.append(_claim_of(s.get(m.WebhookDelivery, delivery_id)))
            return claims

    def settle_claim(self, claim: _Claim, worker: str, outcome: Outcome) -> None:
        """Record the outcome of a claimed attempt (unless the claim was lost meanwhile, or the webhook deleted)."""
        with self.db.session() as s:
            row = s.get(m.WebhookDelivery, claim.message.delivery_id)
            if row is None or row.claimed_by != worker or row.attempts != claim.attempt or row.status != SENDING:
                return
            retry_at = None
            if claim.attempt < self.max_attempts:
                retry_at = datetime.now(UTC) + self.retry_backoff * 2 ** (claim.attempt - 1)
            record(s, row, outcome, retry_at=retry_at)
            if not outcome.ok:
                log.info(f"webhook delivery {row.id} (attempt {claim.attempt} of {self.max_attempts}) failed: "
                         f"{outcome.error}")

    def deliver(self, worker: str) -> int:
        """Claim due deliveries and send them, several at once; how many were attempted."""
        claims = self.claim(worker)
        if not claims:
            return 0

        def attempt(claim: _Claim) -> None:
            self.settle_claim(claim, worker, self.sender.send(claim.message))

        with ThreadPoolExecutor(max_workers=min(self.threads, len(claims)),
                                thread_name_prefix="vera-webhook") as pool:
            list(pool.map(attempt, claims))
        return len(claims)

    def run_once(self, worker: str) -> int:
        self.enqueue()
        return self.deliver(worker)


#: The longest the dispatcher waits between rounds while they fail.
MAX_BACKOFF_S = 30.0


class Dispatcher(BackgroundThread):
    """Runs an Outbox in a background thread every ``poll_s`` seconds until ``stop()`` (the API process starts one;
    tests stop it; a round's attempts end within the receivers' timeout). An error in one round is logged and the
    next round runs as usual."""

    thread_name = "vera-webhook-dispatcher"

    def __init__(self, outbox: Outbox, *, poll_s: float = 1.0, name: str | None = None) -> None:
        super().__init__()
        self.outbox, self.poll_s = outbox, poll_s
        self.name = name or f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"

    def _run(self) -> None:
        wait = self.poll_s
        while not self._stop.is_set():
            try:
                self.outbox.run_once(self.name)
                self._succeeded(log, "the webhook dispatcher")
                wait = self.poll_s
            except Exception as exc:  # noqa: BLE001 - a database hiccup must not end the dispatcher
                self._failed(log, "a webhook dispatcher round", exc)
                wait = min(2 * wait, MAX_BACKOFF_S)  # a database away or read-only: rounds come less often
            self._stop.wait(wait)

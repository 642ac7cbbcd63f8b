"""Maintenance the API runs in the background while it serves, so that an operator need not remember a cron line:
deleting the access tokens that ended (revoked or expired) more than ``token_purge_days`` ago, as `vera token purge
--days N` does by hand (each exchange of a CI job's identity token (trusted publishing) and each browser that
remembers a dashboard sign-in adds a token row that ends within minutes or a week; without this the table only
grows), and pausing the registry-wide webhooks of an administrator whose last administrator's token expired
(webhooks.pause_webhooks_of_departed_admins: a revocation pauses them at once, an expiry has no moment of its own),
and deleting the versions that their adapter's own retention rule lets go (registry.services.retention.apply_rules,
audited as deleted by ``registry:retention``; their blobs go at the next `vera gc`).

Every API process runs it (about once an hour, the first time a minute after it starts): with several replicas on
one database each round finds what the others left, and a row two of them delete at once is deleted and audited
once (``token-purge``, by ``registry``). A read-only registry (VERA_READ_ONLY) runs none. A round that fails (the
database away) is logged and the next one tries again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from registry.domain.errors import InvalidInput
from registry.domain.publishers import MIN_TOKEN_PURGE_DAYS
from registry.services.background import BackgroundThread
from registry.services.retention import RetentionResult
from registry.services.tokens import purge_tokens
from registry.services.webhooks import pause_webhooks_of_departed_admins
from registry.store.database import Database

log = logging.getLogger("vera.housekeeping")

#: The audit events' actor for what the registry does on its own.
ACTOR = "registry"
EVERY_S = 3600.0
FIRST_AFTER_S = 60.0


class Housekeeping(BackgroundThread):
    """Purges ended tokens, pauses departed administrators' registry-wide webhooks and applies adapters' retention
    rules (``retention_rules``, when given) every ``every_s`` seconds (``first_after_s`` after start) until
    ``stop()``; see the module's docstring. ``token_purge_days`` 0 purges nothing (the rest is still done)."""

    thread_name = "vera-housekeeping"

    def __init__(self, db: Database, *, token_purge_days: float, every_s: float = EVERY_S,
                 first_after_s: float = FIRST_AFTER_S,
                 retention_rules: Callable[[], RetentionResult] | None = None) -> None:
        if token_purge_days and token_purge_days < MIN_TOKEN_PURGE_DAYS:
            raise InvalidInput(f"Tokens are purged at least {MIN_TOKEN_PURGE_DAYS:g} day after they end (a CI "
                               f"job's identity token must not be exchanged twice); got {token_purge_days:g}. "
                               "Set VERA_TOKEN_PURGE_DAYS to 1 or more, or 0 to purge only by hand.")
        super().__init__()
        self.db, self.token_purge_days = db, token_purge_days
        self.every_s, self.first_after_s, self.retention_rules = every_s, first_after_s, retention_rules

    @property
    def active(self) -> bool:
        return not self.db.read_only

    def start(self) -> None:
        if self.active:
            super().start()

    def run_once(self) -> int:
        """One round now: the registry-wide webhooks of departed administrators paused, the ended tokens purged
        (with ``token_purge_days``), then the versions adapters' own retention rules let go deleted: last, so that a
        failing retention round never holds up the others (a review, session 55); the number of tokens deleted."""
        purged = self._security()
        if self.retention_rules is not None:
            retired = self.retention_rules()
            if retired.deleted:
                log.info(f"deleted {len(retired.deleted)} versions that their adapter's retention rule lets go: "
                         + ", ".join(v.ref for v in retired.deleted[:20]) + (" ..." if len(retired.deleted) > 20
                                                                            else ""))
        return purged

    def _security(self) -> int:
        paused = pause_webhooks_of_departed_admins(self.db, actor=ACTOR)
        if paused:
            log.info(f"paused registry-wide webhooks {paused}: their creator or an editor holds no administrator's "
                     "token any more (its last one expired); an administrator resumes them (`vera webhook edit ID "
                     "--active`)")
        if not self.token_purge_days:
            return 0
        before = datetime.now(UTC) - timedelta(days=self.token_purge_days)
        gone = purge_tokens(self.db, before=before, actor=ACTOR)
        if gone:
            log.info(f"purged {len(gone)} tokens that ended before {before:%Y-%m-%d %H:%M} UTC "
                     f"(VERA_TOKEN_PURGE_DAYS={self.token_purge_days:g})")
        return len(gone)

    def _run(self) -> None:
        wait = self.first_after_s
        while not self._stop.wait(wait):
            try:
                self.run_once()
                self._succeeded(log, "housekeeping")
            except Exception as exc:  # noqa: BLE001 - a database hiccup must not end housekeeping
                self._failed(log, "a housekeeping round", exc)
            wait = self.every_s

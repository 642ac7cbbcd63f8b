"""Opening the registry from settings: the one place that builds the database and the blob store."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry.domain.errors import SchemaOutOfDate
from registry.services.base_configs import HubBaseConfigs
from registry.services.downloads import DownloadCounter
from registry.services.file_cache import FileCache
from registry.services.hub import HubSync
from registry.services.hub_http import use_timeout
from registry.services.invitations import InvitationPolicy
from registry.services.quotas import Quotas
from registry.services.registry import Registry
from registry.services.validation import ProjectionBudget
from registry.settings import Settings
from registry.store.blobs import FsspecBlobStore
from registry.store.database import Database

if TYPE_CHECKING:
    from fastapi import FastAPI

    from registry.services.jobs import Jobs
    from registry.services.outbox import Dispatcher
    from registry.services.webhooks import Webhooks


log = logging.getLogger("vera.registry")


def _upgrade_embedded(db: Database) -> None:
    """Create or upgrade the embedded SQLite file; before upgrading one that holds a registry, keep a copy of it as
    it was beside it (registry.db.before-REVISION), and say so: the upgrade was silent, and a release older than it
    then refused the file, with no copy to go back to (a team admin's walk, session 34)."""
    current, head = db.current_revision(), db.head_revision()
    if current is not None and not db.knows(current):
        return  # a newer release upgraded it: refused just after, untouched
    if current is None or current == head:
        db.upgrade()  # a new file (or one at head: nothing to do)
        return
    path = Path(str(db.engine.url.database))
    kept = path.with_name(f"{path.name}.before-{head}")
    if kept.exists():
        kept = path.with_name(f"{path.name}.before-{head}.{time.strftime('%Y%m%dT%H%M%S')}")
    db.backup(kept)
    db.upgrade()
    log.warning(f"upgraded the registry database {path} from schema revision {current} to {head}; the file as it "
                f"was is kept as {kept} (a release before this one runs on that copy; delete it once this one "
                "runs well)")


def open_registry(settings: Settings | None = None, *, upgrade_embedded: bool = True,
                  create_if_empty: bool = False) -> Registry:
    """A Registry over the configured database and storage.

    The embedded default (a SQLite file under VERA_DATA_DIR, no VERA_DATABASE_URL) is created or upgraded at first
    start; with ``create_if_empty`` (the servers) so is any database without a schema, as there is nothing to lose.
    A database at an older schema must be upgraded on purpose: this refuses and names the command. A read-only
    registry (VERA_READ_ONLY) creates and upgrades nothing, and neither its database nor its storage takes writes.
    """
    settings = settings or Settings()
    read_only = settings.read_only
    db = Database(settings.resolved_database_url, settings.database_pool, read_only=read_only)
    try:
        if not read_only and settings.database_url is None and upgrade_embedded:
            _upgrade_embedded(db)
        elif not read_only and create_if_empty and db.is_empty():
            db.upgrade()
        try:
            db.check_schema()
        except SchemaOutOfDate as exc:
            if not read_only or exc.ahead:
                raise
            raise SchemaOutOfDate(f"{exc} (This registry is read-only, VERA_READ_ONLY: it creates and upgrades no "
                                  "schema; run `vera db upgrade` without it, against the primary.)") from None
        budget = ProjectionBudget(settings.max_projection_elements, settings.concurrent_generations,
                                  max_export_bytes=settings.max_export_bytes,
                                  max_compare_work=settings.max_compare_work,
                                  max_export_work=settings.max_export_work)
        base_configs = None
        if settings.hub_base_configs:
            use_timeout(settings.hub_timeout_s)
            base_configs = HubBaseConfigs(settings.hub_endpoint, timeout_s=settings.hub_timeout_s)
        return Registry(db, FsspecBlobStore(settings.resolved_storage_url, read_only=read_only), budget=budget,
                        base_configs=base_configs,
                        file_cache=FileCache(settings.file_cache_bytes),
                        scratch_bytes=settings.read_only_scratch_bytes,
                        derived_bytes=settings.derived_max_bytes,
                        default_visibility=settings.default_visibility,
                        quotas=Quotas(settings.owner_quota_bytes, settings.owner_quotas),
                        invitations=InvitationPolicy(settings.org_invitations,
                                                     timedelta(days=settings.org_invitation_days)),
                        orgs_per_user=settings.orgs_per_user,
                        downloads=DownloadCounter(db, flush_every_s=settings.download_flush_s,
                                                  flush_every=settings.download_flush_count))
    except BaseException:
        db.engine.dispose()
        raise


def open_hub(registry: Registry, settings: Settings | None = None) -> HubSync:
    """Hub sync for this registry, with the configured endpoint, default token and request timeout."""
    settings = settings or Settings()
    use_timeout(settings.hub_timeout_s)
    token = settings.hub_token.get_secret_value() if settings.hub_token is not None else None
    return HubSync(registry, endpoint=settings.hub_endpoint, token=token, timeout_s=settings.hub_timeout_s,
                   max_bytes=settings.max_upload_bytes)


def build_api(settings: Settings, *, create_if_empty: bool = True) -> tuple[FastAPI, Registry, Jobs]:
    """The API app over the configured registry, with its job queue and Hub sync; ``settings.require_tokens`` must
    be decided (the caller knows the bind address)."""
    from registry.api import ApiOptions, create_app

    registry = open_registry(settings, create_if_empty=create_if_empty)
    jobs = job_queue(registry, settings)
    options = ApiOptions(require_tokens=bool(settings.require_tokens), anonymous_read=settings.anonymous_read,
                         max_upload_bytes=settings.max_upload_bytes, max_dataset_bytes=settings.max_dataset_bytes,
                         costly_requests_per_minute=settings.costly_requests_per_minute,
                         presigned_downloads_s=settings.presigned_downloads_s, read_threads=settings.read_threads,
                         metrics_token=settings.metrics_token, read_only=settings.read_only,
                         primary_url=settings.primary_url, trusted_publishers=settings.trusted_publishers,
                         token_purge_days=settings.token_purge_days, max_token_days=settings.max_token_days,
                         retention_rules=settings.retention_rules)
    webhooks, dispatcher = webhook_services(registry, settings)
    return create_app(registry, options, jobs, open_hub(registry, settings), webhooks, dispatcher), registry, jobs


def tokens_decided(settings: Settings, host: str) -> Settings:
    """``settings`` with ``require_tokens`` decided for a server bound to ``host`` where VERA_REQUIRE_TOKENS leaves it
    open: local mode (no tokens) only for one user's own registry, on loopback over the embedded kind of storage. A
    shared database or object store is a team's, and loopback says nothing of who reaches it through a proxy."""
    from registry.api import is_loopback

    require = settings.require_tokens
    if require is None:
        require = bool(settings.shared_backend) or not is_loopback(host)
    return settings.model_copy(update={"require_tokens": require})


def server_options(host: str, port: int, settings: Settings) -> dict[str, Any]:
    """uvicorn's options for the registry API on host:port (`vera serve`, `vera up`)."""
    return {"host": host, "port": port, "log_config": None, "log_level": settings.log_level,
            "access_log": False,  # registry.logs writes the access lines
            "ws": "none",  # no websocket routes: the websockets library is never loaded
            "proxy_headers": True, "forwarded_allow_ips": settings.forwarded_allow_ips}


def webhook_services(registry: Registry, settings: Settings) -> tuple[Webhooks, Dispatcher | None]:
    """The webhooks service and, unless VERA_WEBHOOK_DISPATCH=false or the registry is read-only (a dispatcher
    records its deliveries), the dispatcher that sends deliveries (started by the app while it serves)."""
    from registry.services.delivery import Sender
    from registry.services.outbox import Dispatcher, Outbox
    from registry.services.webhooks import Webhooks

    sender = Sender(timeout_s=settings.webhook_timeout_s, allow_private=settings.webhook_allow_private)
    dispatcher = None
    if settings.webhook_dispatch and not settings.read_only:
        outbox = Outbox(registry.db, sender, max_attempts=settings.webhook_max_attempts,
                        retry_backoff=timedelta(seconds=settings.webhook_retry_backoff_s))
        dispatcher = Dispatcher(outbox, poll_s=settings.webhook_poll_s)
    return Webhooks(registry.db, sender), dispatcher


def job_queue(registry: Registry, settings: Settings) -> Jobs:
    """The fine-tune job queue with the configured lease, retries and allowed base models."""
    from registry.services.jobs import Jobs

    return Jobs(registry, lease=timedelta(seconds=settings.job_lease_s), base_models=settings.job_base_models,
                max_attempts=settings.job_max_attempts, retry_backoff=timedelta(seconds=settings.job_retry_backoff_s),
                checkpoint_max_bytes=settings.job_checkpoint_max_bytes,
                time_limits=(settings.job_default_time_limit_s, settings.job_max_time_limit_s),
                max_pending=settings.job_max_pending_per_owner)


def api_from_environment() -> FastAPI:
    """uvicorn's app factory for `vera serve --workers N`: each process builds its app from the VERA_* variables
    the parent set (registry.settings.Settings.environment), logging as the parent does."""
    from registry import logs

    settings = Settings()
    logs.configure(settings.log_level, settings.log_format)
    return build_api(settings, create_if_empty=False)[0]

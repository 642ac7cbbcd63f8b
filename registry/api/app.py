"""The registry's FastAPI application: the services in ``app.state``, problem details for every error, metrics,
and one router per resource (registry/api/routes/). Routes only translate HTTP to a service call; what they need
(the caller, its scope, the services) comes from registry/api/deps.py."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi_offline import FastAPIOffline
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from registry.api.deps import PRINCIPAL, ApiOptions
from registry.api.gate import RequestGate
from registry.api.head import HeadAsGet
from registry.api.metrics import READY_TTL_S, Recent, install_metrics
from registry.api.problems import (
    HUB_PREFIX,
    LORA_HUB_PREFIX,
    PROBLEM_RESPONSES,
    install_problem_handlers,
    is_hub_path,
    problem,
)
from registry.api.ratelimit import RateLimiter
from registry.api.routes import ROUTERS
from registry.domain.errors import MOVED_HEADER, AdapterNotFound
from registry.logs import AccessLog
from registry.services.events import DeniedAccess, Events
from registry.services.housekeeping import Housekeeping
from registry.services.hub import HubSync
from registry.services.jobs import Jobs
from registry.services.outbox import Dispatcher
from registry.services.registry import Registry
from registry.services.tokens import ANONYMOUS
from registry.services.trusted import TrustedPublishing
from registry.services.webhooks import Webhooks
from registry.store.copying import copied_away

log = logging.getLogger("vera.api")


def create_app(registry: Registry, options: ApiOptions | None = None, jobs: Jobs | None = None,
               hub: HubSync | None = None, webhooks: Webhooks | None = None,
               dispatcher: Dispatcher | None = None) -> FastAPI:
    """The API over ``registry``; with ``dispatcher``, webhooks are sent from a thread while the app serves."""
    # /docs and /redoc load Swagger UI and ReDoc from this server (/static-offline-docs/), not from a CDN: they work
    # on a machine without internet, and the browser asks no other host for anything
    app = FastAPIOffline(title="vera-registry", version="1", description="Publish, fetch and verify VeRA adapters.",
                         responses=PROBLEM_RESPONSES, lifespan=_lifespan)
    app.state.registry, app.state.options = registry, options or ApiOptions()
    app.state.jobs, app.state.hub = jobs or Jobs(registry), hub or HubSync(registry)
    app.state.events, app.state.webhooks = Events(registry.db), webhooks or Webhooks(registry.db)
    app.state.denials = DeniedAccess(registry.db)
    app.state.dispatcher = dispatcher
    app.state.rate_limiter = RateLimiter(app.state.options.costly_requests_per_minute)
    app.state.trusted = TrustedPublishing(registry.db, app.state.options.trusted_publishers)
    app.state.housekeeping = Housekeeping(registry.db, token_purge_days=app.state.options.token_purge_days,
                                          retention_rules=registry.apply_retention_rules
                                          if app.state.options.retention_rules else None)
    # middleware added later wraps what was added before: access log (outermost), metrics, the gate, HEAD as GET,
    # the app
    app.add_middleware(HeadAsGet, router=app.router)
    app.add_middleware(RequestGate, registry=registry, options=app.state.options)
    app.state.metrics = install_metrics(app, registry.status)
    app.state.readiness = Recent(registry.status.readiness, ttl_s=READY_TTL_S)
    app.state.refused_writes = Recent(registry.status.refused_writes, ttl_s=READY_TTL_S)  # /ready, whoami
    app.add_middleware(AccessLog)  # outermost: every request gets its id and one access line, refusals included
    install_problem_handlers(app)
    _install_moved_hint(app, registry)
    for router in ROUTERS:
        app.include_router(router)
    return app


def _install_moved_hint(app: FastAPI, registry: Registry) -> None:
    @app.exception_handler(AdapterNotFound)
    async def adapter_not_found(request: Request, exc: AdapterNotFound) -> Response:
        """404 as for any missing adapter; for a name an adapter had before it moved, the message (and MOVED_HEADER)
        says where it is now, to a caller that may read it there (to anyone else the name is simply not there). A
        read through the Hub protocol (/hf) is redirected there instead (307, a relative Location), as the Hub
        redirects a renamed repo: huggingface_hub follows it, so `from_pretrained("old/name")` keeps working."""
        moved, meant = None, None
        if exc.adapter is not None:
            options: ApiOptions = request.app.state.options
            viewer = (getattr(request.state, PRINCIPAL, None) or ANONYMOUS) if options.require_tokens else None
            try:
                moved = await run_in_threadpool(registry.moves.moved_to, *exc.adapter, viewer)
                if moved is None:  # a near miss of a name it may read: `you/polarty`
                    meant = await run_in_threadpool(registry.access.close_name, *exc.adapter, viewer)
            except Exception:  # noqa: BLE001 - a hint only: the 404 stands without it (the database may be down)
                moved = None
        if moved is None:
            owner, name = exc.adapter or ("", "")
            said = str(exc) if meant is None else f"{str(exc).rstrip('.')}. Did you mean {owner}/{meant}?"
            return problem(404, exc.code, said, request.url.path, exc)
        owner, name = exc.adapter or ("", "")
        path = request.url.path
        if request.method in ("GET", "HEAD") and is_hub_path(path) and \
                (renamed := renamed_location(request, (moved.owner, moved.name))) is not None:
            query = f"?{request.url.query}" if request.url.query else ""
            return Response(status_code=307, headers={"Location": renamed + query, MOVED_HEADER: moved.ref})
        response = problem(404, exc.code, f"No adapter {owner}/{name}: it was moved to {moved.ref} on "
                           f"{moved.at:%Y-%m-%d}; use that name.", path, exc)
        response.headers[MOVED_HEADER] = moved.ref
        return response


def renamed_location(request: Request, new: tuple[str, str]) -> str | None:
    """The request's path with the repo id its route matched (the ``{owner}/{name}`` segments of the route's
    template) replaced by ``new``, as a relative reference (``../../new/name/resolve/main/file``: a proxy's path
    prefix stays) with every segment percent-encoded; None for a route without them. The segments are found by
    their place in the template, not by their text: the first ``old/name`` pair of the path was replaced, which for
    an adapter named ``api/models`` is the route's own ``api/models`` (an outsider's finding, session 45), and the
    decoded path was written back as it was, a non-ASCII name a 500, a space or ``%2541`` another path."""
    route = request.scope.get("route")
    template = str(getattr(route, "path_format", "") or "").split("/")
    if "{owner}" not in template:
        return None
    at = template.index("{owner}")
    # the path as the client sent it (still encoded: an encoded '/' of a revision, refs%2Fpr%2F1, is one segment
    # where the client resolves the redirect; the decoded path counted it as three, and the redirect left /hf)
    raw: bytes = request.scope.get("raw_path") or request.scope["path"].encode()
    root = request.scope.get("root_path", "").encode()
    parts = (raw[len(root):] if root and raw.startswith(root) else raw).split(b"/")
    if f"/{template[1]}" not in (HUB_PREFIX, LORA_HUB_PREFIX):  # the route as its router declared it, without
        at += 1                                                 # the prefix it is served under (/hf, /hf-lora)
    if len(parts) < at + 2 or not is_hub_path(b"/".join(parts[:at]).decode("latin-1")):
        return None
    up = len(parts) - 1 - at  # from the request's folder to the one that holds the owner's
    # the segments after the repo id as sent, encoded where a client sent what a URL may not hold
    after = [quote(part, safe="!$&'()*+,;=:@-._~%") for part in parts[at + 2:]]
    return "../" * up + "/".join([*(quote(part, safe="") for part in new), *after])


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """While the app serves, download counts are flushed in the background (when it stops, once more), the
    webhook dispatcher, if any, sends deliveries, and housekeeping purges ended tokens; when it stops, the download
    files a read-only registry built for itself go, and the database's connections are closed (Database.close)."""
    downloads, dispatcher, housekeeping = app.state.registry.downloads, app.state.dispatcher, app.state.housekeeping
    await run_in_threadpool(_warn_if_copied_away, app.state.registry)
    downloads.start()
    if dispatcher is not None:
        dispatcher.start()
    housekeeping.start()
    try:
        yield
    finally:
        await run_in_threadpool(housekeeping.stop)
        if dispatcher is not None:
            await run_in_threadpool(dispatcher.stop)
        await run_in_threadpool(downloads.close)
        await run_in_threadpool(app.state.registry.derived.close)
        await run_in_threadpool(app.state.registry.db.close)  # last: the flush above writes (SQLite: checkpointed)


def _warn_if_copied_away(registry: Registry) -> None:
    """A warning in the log when the database was copied elsewhere (`vera db copy`) and nothing was written to it
    since: a registry started without VERA_DATABASE_URL after a move to PostgreSQL served the stale SQLite file
    unsaid (an operator's walk, session 43)."""
    try:
        copy = copied_away(registry.db)
    except SQLAlchemyError:  # the database away at start: its requests say so
        return
    if copy is not None:
        log.warning(f"this registry's database was copied into {copy.target} on {copy.at:%Y-%m-%d %H:%M} UTC (`vera "
                    "db copy`) and nothing was written to it since: if the registry runs on that copy now, this one "
                    "is stale; check VERA_DATABASE_URL.")

"""What routes need, as FastAPI dependencies: the services of the app, the caller, and the scope a route requires
(stated in the route's signature: ``who: OwnerPublisher`` needs the ``publish`` scope for the path's owner).

Every route whose path names an adapter (``{owner}/{name}``) and takes ``Reader``, ``CostlyReader`` or
``OwnerPublisher`` answers 404, exactly as for a missing adapter, to a caller that may not read it (a private
adapter of someone else: registry.services.access), before the route runs."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable, Callable
from typing import Annotated, Any
from urllib.parse import urlencode

import anyio
from fastapi import Depends, Header, Request, Response
from pydantic import BaseModel, Field, SecretStr
from starlette.concurrency import run_in_threadpool

from registry.domain.errors import Unauthorized
from registry.domain.publishers import TrustedPublisher
from registry.domain.schemas import MAX_DATASET_BYTES, MAX_UPLOAD_BYTES, Ref
from registry.logs import PRINCIPAL as PRINCIPAL  # its home: the access log reads it too
from registry.services.hub import HubSync
from registry.services.jobs import Jobs
from registry.services.registry import Registry
from registry.services.tokens import ANONYMOUS, LOCAL_USER, Principal, Scope, authenticate


class ApiOptions(BaseModel):
    """How the API authenticates and what it accepts."""

    require_tokens: bool = True
    anonymous_read: bool = False
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    max_dataset_bytes: int = MAX_DATASET_BYTES  # a job submission's dataset (VERA_MAX_DATASET_BYTES)
    costly_requests_per_minute: int = 120
    presigned_downloads_s: int = 0  # > 0: hash-addressed downloads redirect to presigned URLs valid this long
    read_threads: int = Field(default=8, ge=1)  # threads that serve downloads and file lists (VERA_READ_THREADS)
    metrics_token: SecretStr | None = None  # set: /metrics answers only 'Bearer <this>' (VERA_METRICS_TOKEN)
    read_only: bool = False  # every change refused (registry.api.gate), reads write nothing (VERA_READ_ONLY)
    primary_url: str | None = None  # where a read-only registry's refusals send changes (VERA_PRIMARY_URL)
    trusted_publishers: list[TrustedPublisher] = []  # identity tokens traded for registry tokens (VERA_TRUSTED_...)
    token_purge_days: float = 0  # > 0: tokens that ended this long ago are deleted hourly (VERA_TOKEN_PURGE_DAYS)
    retention_rules: bool = True  # adapters' own retention rules applied hourly (VERA_RETENTION_RULES)
    max_token_days: float | None = None  # the longest a new token lives (VERA_MAX_TOKEN_DAYS; None: no limit)


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bearer_token(authorization: str | None) -> str | None:
    """The secret of an ``Authorization: Bearer <secret>`` header; None when the header is absent or not one."""
    if not authorization:
        return None
    scheme, _, secret = authorization.partition(" ")
    return secret.strip() if scheme.lower() == "bearer" and secret.strip() else None


def _app_state(attribute: str) -> Callable[[Request], Awaitable[Any]]:
    """A dependency giving ``request.app.state.<attribute>`` (create_app puts the services there). The cheap
    dependencies are coroutines: FastAPI runs a plain ``def`` dependency in the thread pool, a hop per dependency
    per request that costs more than the work; what blocks (the database) is sent there explicitly."""

    async def get(request: Request) -> Any:
        return getattr(request.app.state, attribute)

    return get


async def _read_pool(request: Request) -> anyio.CapacityLimiter:
    """The threads of the hot reads (downloads, file lists): a pool of their own, ``read_threads`` wide, so that a
    burst of reads neither waits behind slow work in the default pool nor has 40 threads contend for the
    interpreter. One per event loop (a limiter belongs to the loop that first uses it; a server has one loop per
    process, and an app driven from two loops at once, as test clients can, bounds each loop's reads apart)."""
    state, loop = request.app.state, asyncio.get_running_loop()
    held = getattr(state, "read_pool", None)
    if held is None or held[0] is not loop:
        held = state.read_pool = (loop, anyio.CapacityLimiter(state.options.read_threads))
    return held[1]


RegistryDep = Annotated[Registry, Depends(_app_state("registry"))]
ReadPool = Annotated[anyio.CapacityLimiter, Depends(_read_pool)]
JobsDep = Annotated[Jobs, Depends(_app_state("jobs"))]
HubDep = Annotated[HubSync, Depends(_app_state("hub"))]
Options = Annotated[ApiOptions, Depends(_app_state("options"))]




async def _principal(request: Request, authorization: Annotated[str | None, Header()] = None) -> Principal | None:
    """The caller: the local user when tokens are off, a token's principal, or None (no token sent). The services
    come from the app's state, not from dependencies of their own: every dependency FastAPI solves costs each
    request tens of microseconds, and this chain runs on every request (bench/RESULTS.md, session 12)."""
    options: ApiOptions = request.app.state.options
    if not options.require_tokens:
        return LOCAL_USER
    if authorization is None:
        return None
    checked: Principal | None = getattr(request.state, PRINCIPAL, None)
    if checked is not None:  # the gate authenticated this request's token already
        return checked
    secret = bearer_token(authorization)
    if secret is None:
        raise Unauthorized("Authorization must be 'Bearer <token>'.")
    principal = await run_in_threadpool(authenticate, request.app.state.registry.db, secret)
    setattr(request.state, PRINCIPAL, principal)  # the access log names who called (registry.logs)
    return principal


Caller = Annotated[Principal | None, Depends(_principal)]
#: The 401 for a request without a token where tokens are required.
TOKEN_NEEDED = ("This registry requires a token: pass 'Authorization: Bearer <token>' (for the CLI, `vera login` "
                "once, or VERA_TOKEN; HF_TOKEN for HuggingFace tools).")


def authorize(caller: Principal | None, options: ApiOptions, scope: Scope, owner: str | None = None) -> Principal:
    """The caller, if it may act with ``scope`` (on ``owner``'s adapters); Unauthorized or Forbidden otherwise."""
    if caller is None:
        if scope == "read" and options.anonymous_read:
            return ANONYMOUS
        raise Unauthorized(TOKEN_NEEDED)
    caller.require(scope, owner=owner)
    return caller


def check_path_readable(request: Request, who: Principal, registry: Registry) -> None:
    """404 (AdapterNotFound) when the path names an adapter ``who`` may not read, or one that does not exist: both
    answer alike, before any other part of the request is checked, so that no other error (a bad parameter, a
    missing file) tells the two apart."""
    owner, name = request.path_params.get("owner"), request.path_params.get("name")
    if isinstance(owner, str) and isinstance(name, str) and who.readable_owners() is not None:
        registry.access.check_readable_names(who, owner, name, missing_too=True)


async def _reader(request: Request, caller: Caller) -> Principal:
    who = authorize(caller, request.app.state.options, "read")
    if who.readable_owners() is not None:  # an admin (or the local user) reads everything: no query
        await run_in_threadpool(check_path_readable, request, who, request.app.state.registry)
    return who


async def _owner_publisher(request: Request, owner: str, caller: Caller) -> Principal:
    name, registry = request.path_params.get("name"), request.app.state.registry
    if caller is not None and isinstance(name, str) and not caller.can_write(owner):
        # to a caller that may not write here, an adapter it may not read and a missing one answer alike (404);
        # one it reads is refused (403)
        await run_in_threadpool(registry.access.check_readable_names, caller, owner, name, missing_too=True)
    return authorize(caller, request.app.state.options, "publish", owner)


async def authorize_new_version(registry: Registry, options: ApiOptions, caller: Principal | None, owner: str,
                                name: str) -> Principal:
    """The publish rights a new version of ``owner/name`` (a publish, a job's result) needs. To a caller that may not
    write under ``owner`` but may where the adapter once called ``owner/name`` is now (an organisation renamed): 409
    saying where, as a writer of the old owner is told, rather than a bare 403."""
    if caller is not None and not caller.can_write(owner):
        await run_in_threadpool(registry.moves.refuse_publish_where_moved, owner, name, caller)
    return authorize(caller, options, "publish", owner)


async def _new_version_publisher(request: Request, owner: str, caller: Caller) -> Principal:
    name, options = request.path_params.get("name"), request.app.state.options
    if not isinstance(name, str):
        return authorize(caller, options, "publish", owner)
    return await authorize_new_version(request.app.state.registry, options, caller, owner, name)


async def may_publish_here(request: Request) -> None:
    """Before a publish's body is read (bodies.before_body): the path's caller may publish there, else 401/403 at
    once (NewVersionPublisher asks again, cheaply: the principal is kept on the request)."""
    caller = await _principal(request, request.headers.get("authorization"))
    await _new_version_publisher(request, request.path_params["owner"], caller)


async def may_publish(request: Request) -> None:
    """Before a job submission's body is read: the caller may publish somewhere (the target, in the body, is checked
    once it is read)."""
    authorize(await _principal(request, request.headers.get("authorization")), request.app.state.options, "publish")


#: A caller with the read scope (or anonymous, where the registry allows anonymous reads).
Reader = Annotated[Principal, Depends(_reader)]
#: A caller that may write to the path's existing adapter ``{owner}/{name}`` (or under ``{owner}``).
OwnerPublisher = Annotated[Principal, Depends(_owner_publisher)]
#: A caller that may publish under the path's ``{owner}``: refused alike (403) whether the adapter exists or not.
NewVersionPublisher = Annotated[Principal, Depends(_new_version_publisher)]


def link_next_page(response: Response, query: dict[str, Any]) -> None:
    """Name the next page of a listing in ``Link`` (RFC 8288): its query, relative to the request, so that a
    proxy's path prefix stays (GET /orgs, /invitations, /jobs)."""
    response.headers["Link"] = f'<?{urlencode(query)}>; rel="next"'


def ref_of(owner: str, name: str, selector: str) -> Ref:
    """The version a path names: ``selector`` is a version number or an alias name."""
    if selector.isascii() and selector.isdigit() and len(selector.lstrip("0")) <= 9:  # ('²'.isdigit(), and
        # int('١') is 1; leading zeros: 0000000001 is version 1, as 000000001 was)
        return Ref.of(owner, name, version=int(selector))
    return Ref.of(owner, name, alias=selector)

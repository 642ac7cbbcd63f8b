"""Who the caller is, its tokens, and organisations with their members (registry.services.access)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool

from registry.api.bodies import CheckedRoute
from registry.api.deps import ApiOptions, Caller, Options, RegistryDep, authorize, link_next_page
from registry.api.routes.adapters import RowId
from registry.domain.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthorized
from registry.domain.publishers import PublisherInfo
from registry.domain.schemas import (
    MAX_TOKEN_DAYS,
    InvitationInfo,
    OrganizationInfo,
    OwnerUsage,
    QuotaSize,
    TokenInfo,
    WhoAmI,
)
from registry.services.tokens import (
    ANONYMOUS,
    MAX_TOKEN_OWNERS,
    Principal,
    Role,
    Scope,
    create_token,
    list_tokens,
    revoke_token,
    token_info,
    token_not_found,
    within_max_life,
)
from registry.services.trusted import MAX_ID_TOKEN_CHARS, TrustedPublishing

router = APIRouter(prefix="/api/v1", route_class=CheckedRoute)

#: The most organisations (GET /orgs) or invitations (GET /invitations) one page holds, and how many by default.
MAX_NAMED_PAGE, NAMED_PAGE = 500, 100
#: Where a page of those starts: after the organisation of this name (the last of the page before).
AfterName = Annotated[str | None, Query(max_length=100, description=(
    "the page after the organisation of this name: the last of the page before, as the `Link` header's next page "
    "names it"))]
NamedPage = Annotated[int, Query(ge=1, le=MAX_NAMED_PAGE, description=(
    "the most a page holds; when there are more, the `Link` header names the next page (rel=\"next\")"))]
Named = TypeVar("Named", OrganizationInfo, InvitationInfo)


OrgAnswer = TypeVar("OrgAnswer", OrganizationInfo, list[OrganizationInfo])


def _tokens_said(route: Callable[..., OrgAnswer]) -> Callable[..., OrgAnswer]:
    """A route answering organisations, whose members' ``has_token`` is None where the registry checks no tokens
    (local mode, `vera up`): nobody has a token there, and "no token yet" made the CLI and the dashboard warn to check
    the spelling of the local user itself (a dashboard walk, session 54)."""
    @functools.wraps(route)
    def answer(*args: Any, **kwargs: Any) -> OrgAnswer:
        found = route(*args, **kwargs)
        options: ApiOptions = kwargs["options"]
        if options.require_tokens:
            return found
        orgs = [found] if isinstance(found, OrganizationInfo) else found
        unsaid = [org.model_copy(update={"members": [x.model_copy(update={"has_token": None}) for x in org.members]})
                  for org in orgs]
        return unsaid[0] if isinstance(found, OrganizationInfo) else unsaid
    return answer


def _page(rows: Sequence[Named], limit: int, response: Response, organization: Callable[[Named], str]
          ) -> list[Named]:
    """The first ``limit`` of ``rows`` (which the service read one past the page), and, when there are more, the
    next page's address in ``Link`` (RFC 8288, relative to the request, so that a proxy's path prefix stays): after
    the page's last ``organization``. Before session 44, these lists came whole: unbounded for an admin."""
    if len(rows) > limit:
        link_next_page(response, {"after": organization(rows[limit - 1]), "limit": limit})
    return list(rows[:limit])


class TokenBody(BaseModel):
    # a field this body does not know is refused, never ignored: {"owner": "acme"} made a token for the caller
    # (an operator's walk, session 14), who believed it made one for acme
    model_config = ConfigDict(extra="forbid")

    scopes: list[Scope] = Field(min_length=1, max_length=4)
    name: str = Field("", max_length=100)
    expires_days: float | None = Field(None, gt=0, le=MAX_TOKEN_DAYS, allow_inf_nan=False, description=(
        "default: never, or the registry's longest token life (VERA_MAX_TOKEN_DAYS) where it sets one"))
    limited_to: list[str] | None = Field(None, min_length=1, max_length=MAX_TOKEN_OWNERS,
                                         description="owner namespaces the token is limited to")
    user: str | None = Field(None, max_length=64, description="admins only: create the token for this user")

    @field_validator("expires_days", mode="before")
    @classmethod
    def _days_not_a_flag(cls, value: object) -> object:
        if isinstance(value, bool):  # true was taken as 1 day
            raise ValueError("expires_days is a number of days, not true or false")
        return value


class CreatedToken(BaseModel):
    """A new token: ``secret`` is shown this once; only its hash is stored."""

    token: TokenInfo
    secret: str


class OrganizationBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=64)
    description: str = Field("", max_length=2000)


class MemberBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Role


class RenameBody(BaseModel):
    model_config = ConfigDict(extra="forbid")  # {"name": ...} is refused, not read as no new name
    new_name: str = Field(max_length=64, description="the organisation's name from now on: an owner name nobody has")


@router.get("/whoami", response_model=WhoAmI)
def whoami(request: Request, caller: Caller, options: Options, registry: RegistryDep) -> WhoAmI:
    """The caller: its user, scopes, organisations and token (anonymous where the registry allows it), whether the
    registry takes changes at all (``read_only``), and how many invitations to organisations wait for its answer."""
    who = authorize(caller, options, "read") if caller is None else caller
    anonymous = who is ANONYMOUS
    return WhoAmI(user=who.owner, anonymous=anonymous, scopes=sorted(who.scopes),
                  organizations=dict(sorted(who.roles.items())), token_id=who.token_id,
                  limited_to=sorted(who.limited_to) if who.limited_to is not None else None,
                  expires_at=who.expires_at,
                  read_only=options.read_only or request.app.state.refused_writes.get() is not None,
                  pending_invitations=None if anonymous else registry.access.pending_invitations(who),
                  max_token_days=options.max_token_days, local=who.local)


def _signed_in(caller: Principal | None, options: Options) -> Principal:
    """A caller with a token (anonymous readers have no tokens or organisations): a 401 without one, as every route
    that needs a token answers (these were 403s: an outsider's finding, session 54)."""
    who = authorize(caller, options, "read")
    if who.anonymous:
        raise Unauthorized("Sign in: this needs a token (`vera login`).")
    return who


@router.get("/tokens", response_model=list[TokenInfo])
def tokens(caller: Caller, options: Options, registry: RegistryDep, user: str | None = None) -> list[TokenInfo]:
    """The caller's tokens (admins: every token, or ``user``'s); never their secrets."""
    who = _signed_in(caller, options)
    if not who.is_admin and user not in (None, who.owner):  # (it answered the caller's own tokens, unsaid: an
        # outsider's finding, session 54)
        raise Forbidden(f"Only an administrator lists another user's tokens; GET /api/v1/tokens without ?user= "
                        f"lists yours ({who.owner}).")
    if not who.is_admin:
        user = who.owner
    return [t for t in list_tokens(registry.db, owner=user) if _within_limit(who, t)]


def _within_limit(who: Principal, token: TokenInfo) -> bool:
    """Whether a token limited to some owners may see (and revoke) ``token``: only tokens limited within its own
    limit, never the user's wider ones."""
    return who.limited_to is None or (token.limited_to is not None and set(token.limited_to) <= who.limited_to)


@router.post("/tokens", response_model=CreatedToken, status_code=201)
def new_token(caller: Caller, options: Options, registry: RegistryDep, body: TokenBody) -> CreatedToken:
    """A new token for the caller, with at most the caller's own scopes, no wider limit and no longer life (the
    registry's admins, with a token not limited to some owners: for anyone, any scopes and limit)."""
    who = _signed_in(caller, options)
    user = body.user or who.owner
    expires_at = datetime.now(UTC) + timedelta(days=body.expires_days) if body.expires_days is not None else None
    if not who.is_registry_admin:  # an admin token limited to some owners mints within that limit, like any other
        _within_own_rights(who, user, body)
    expires_at = _within_own_life(who, expires_at)  # none asked: its maker's expiry (an admin's expiring one too)
    if body.expires_days is None and expires_at is not None and options.max_token_days is not None:
        expires_at = min(expires_at, datetime.now(UTC) + timedelta(days=options.max_token_days))  # the sooner
    else:
        expires_at = within_max_life(expires_at, options.max_token_days)
    token_id, secret = create_token(registry.db, owner=user, scopes=list(body.scopes), name=body.name,
                                    limited_to=body.limited_to, expires_at=expires_at, actor=who.owner,
                                    parent_id=who.token_id if user == who.owner else None)  # yours: revoked with it
    return CreatedToken(token=token_info(registry.db, token_id), secret=secret)


class IdentityTokenBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: str = Field(min_length=1, max_length=MAX_ID_TOKEN_CHARS,
                       description="an OpenID Connect identity token (a JWT) from a trusted publisher's issuer")


class ExchangedToken(CreatedToken):
    """A registry token minted for a trusted publisher's identity token: ``secret`` is shown this once."""

    publisher: str
    expires_in: int = Field(description="seconds the token lives")


@router.post("/tokens/oidc", response_model=ExchangedToken, status_code=201)
async def exchange_identity_token(request: Request, options: Options, registry: RegistryDep, body: IdentityTokenBody
                                  ) -> ExchangedToken:
    """Trusted publishing: a short-lived registry token for a CI job's OpenID Connect identity token (GitHub Actions,
    GitLab CI), for the user, owners and scopes of the trusted publisher (VERA_TRUSTED_PUBLISHERS) whose issuer,
    audience and claims it matches. No Authorization header is needed: the identity token is the credential. Each
    identity token is exchanged once; audited as `token-create` with the publisher, issuer and subject."""
    if not options.require_tokens:
        raise InvalidInput("This registry does not require tokens (single-user local mode): publish without one.")
    client = request.client.host if request.client else "unknown"
    request.app.state.rate_limiter.take(f"oidc@{client}", "identity token exchanges")
    trusted: TrustedPublishing = request.app.state.trusted
    # on the event loop: waiting on an issuer's keys holds no thread (the database work goes to the thread pool)
    token_id, secret, publisher, lifetime_s = await trusted.exchange(body.token)
    info = await run_in_threadpool(token_info, registry.db, token_id)  # a CI user holds a token per exchange
    return ExchangedToken(token=info, secret=secret, publisher=publisher.name, expires_in=round(lifetime_s))


@router.get("/trusted-publishers", response_model=list[PublisherInfo])
async def trusted_publishers(request: Request, caller: Caller, options: Options) -> list[PublisherInfo]:
    """The trusted publishers (VERA_TRUSTED_PUBLISHERS) the caller may see, with when each last minted a token and
    how many of its tokens are kept: registry administrators see every one; anyone else those that publish into an
    owner they manage (their own name, an organisation they are an admin of)."""
    who = _signed_in(caller, options)
    trusted: TrustedPublishing = request.app.state.trusted
    return await run_in_threadpool(trusted.listed, who)


def _within_own_rights(who: Principal, user: str, body: TokenBody) -> None:
    if user != who.owner:
        if who.is_admin:
            raise Forbidden(f"This admin token is limited to {sorted(who.limited_to or ())}: it creates tokens for "
                            f"{who.owner!r} alone. Create tokens for other users with an admin token without a "
                            "limit.")
        raise Forbidden(f"Only admins create tokens for other users; yours are for {who.owner!r}.")
    wider = sorted(set(body.scopes) - who.scopes)
    if wider:
        raise Forbidden(f"A token cannot grant more than the one that creates it: {wider} is not among your "
                        f"token's scopes {sorted(who.scopes)}.")
    if who.limited_to is not None and (body.limited_to is None or not set(body.limited_to) <= who.limited_to):
        raise Forbidden(f"Your token is limited to {sorted(who.limited_to)}; a token it creates must be limited "
                        "to some of those (limited_to).")


def _within_own_life(who: Principal, expires_at: datetime | None) -> datetime | None:
    """A token made by an expiring token expires no later than it (by default: with it), so that a leaked short-lived
    token cannot mint a lasting one."""
    if who.expires_at is None:
        return expires_at
    if expires_at is None:
        return who.expires_at
    if expires_at > who.expires_at:
        raise Forbidden(f"Your token expires at {who.expires_at:%Y-%m-%d %H:%M} UTC; a token it creates cannot "
                        "outlive it (ask for fewer expires_days, or create it with a token that does not expire).")
    return expires_at


@router.delete("/tokens/{token_id}", status_code=204)
def delete_token(caller: Caller, options: Options, registry: RegistryDep, token_id: RowId) -> Response:
    """Revoke one of the caller's tokens (admins: any token; an admin token limited to some owners: the tokens limited
    within its limit), and the tokens made from it through this API (its remembered dashboard sign-ins, the tokens
    `vera auth create-token` made with it); a token the caller may not revoke is not found."""
    who = _signed_in(caller, options)
    if not who.is_registry_admin and not any(t.id == token_id for t in tokens(caller, options, registry)):
        raise token_not_found(token_id)  # another user's, or one of the user's wider tokens for a limited token
    revoke_token(registry.db, token_id, owner=None if who.is_admin else who.owner, actor=who.owner)
    return Response(status_code=204)


@router.get("/orgs", response_model=list[OrganizationInfo])
@_tokens_said
def organizations(caller: Caller, options: Options, registry: RegistryDep, response: Response,
                  after: AfterName = None, limit: NamedPage = NAMED_PAGE) -> list[OrganizationInfo]:
    """The organisations the caller belongs to (admins: all), by name, a page at a time (``Link``: the next)."""
    found = registry.access.organizations(_signed_in(caller, options), after=after, limit=limit + 1)
    return _page(found, limit, response, lambda org: org.name)


@router.post("/orgs", response_model=OrganizationInfo, status_code=201)
@_tokens_said
def create_organization(request: Request, caller: Caller, options: Options, registry: RegistryDep,
                        body: OrganizationBody) -> OrganizationInfo:
    """A new organisation, with the caller as its first admin (publish scope)."""
    who = authorize(caller, options, "publish")
    _within_limit_to_name(who, body.name, f"creating the organisation {body.name!r}")
    _not_a_publishers_user(request, body.name)
    return registry.access.create_organization(body.name, creator=who.owner, description=body.description,
                                               revive=who.is_registry_admin, bounded=not who.is_registry_admin,
                                               admin=who.is_admin)


@router.get("/orgs/{org}", response_model=OrganizationInfo)
@_tokens_said
def organization(caller: Caller, options: Options, registry: RegistryDep, org: str) -> OrganizationInfo:
    return registry.access.organization(org, _signed_in(caller, options))


@router.delete("/orgs/{org}", status_code=204)
def delete_organization(caller: Caller, options: Options, registry: RegistryDep, org: str) -> Response:
    """Delete the organisation (its admins, with publish scope; the registry's admins): refused (409) while it owns
    adapters, queued or running jobs or webhooks, saying which and how to clear them; its members and the quota an
    admin set for it go with it, and its name is free again. To anyone else it is not there (404)."""
    registry.access.delete_organization(org, viewer=_signed_in(caller, options))
    return Response(status_code=204)


def _not_a_publishers_user(request: Request, name: str) -> None:
    """Conflict when ``name`` is the user a trusted publisher (VERA_TRUSTED_PUBLISHERS) mints tokens for: an
    organisation of that name would make every CI run it trusts write in the organisation's namespace, and its
    members read what the CI user publishes as its own (an outsider's finding: the name is free until the first
    exchange creates a token for it)."""
    trusted: TrustedPublishing = request.app.state.trusted
    publishers = sorted({p.name for p in trusted.publishers if p.user == name})
    if publishers:
        raise Conflict(f"The owner name {name!r} is the user that the trusted publisher(s) {', '.join(publishers)} "
                       "publish as (VERA_TRUSTED_PUBLISHERS); choose another name for the organisation.")


def _within_limit_to_name(who: Principal, name: str, doing: str) -> None:
    """A token limited to some owners (a CI job's, minted by trusted publishing, claimed names for good: a new
    organisation, an organisation renamed to a new name) makes no owner name outside its limit."""
    if who.limited_to is not None and name not in who.limited_to:
        raise Forbidden(f"This token is limited to {sorted(who.limited_to)}; {doing} makes a new owner outside that "
                        "limit. Use a token without a limit (`vera auth create-token` from one, or `vera login` "
                        "with yours).")


@router.post("/orgs/{org}/rename", response_model=OrganizationInfo)
@_tokens_said
def rename_organization(request: Request, caller: Caller, options: Options, registry: RegistryDep, org: str,
                        body: RenameBody) -> OrganizationInfo:
    """Rename the organisation (its admins, with publish scope; the registry's admins): its members, adapters (each
    to the same name under the new one), ended jobs, webhooks, quota and the tokens limited to it follow; answers
    the organisation under its new name. Its adapters' old names answer 404 with ``X-Vera-Moved-To`` (as after a
    move), publishes there are refused (409), and the old name is retired. Refused (409) while it has queued or
    running jobs, or when the new name is taken or retired (a registry admin whose token has no owner limit may take
    a retired one); 422 for an invalid name. To anyone else it is not there (404)."""
    who = _signed_in(caller, options)
    _within_limit_to_name(who, body.new_name, f"renaming {org} to {body.new_name!r}")
    _not_a_publishers_user(request, body.new_name)
    return registry.access.rename_organization(org, body.new_name, viewer=who,
                                               revive=who.is_admin and who.limited_to is None)


@router.put("/orgs/{org}/members/{member}", response_model=OrganizationInfo)
@_tokens_said
def put_member(caller: Caller, options: Options, registry: RegistryDep, org: str, member: str,
               body: MemberBody) -> OrganizationInfo:
    """Add a member with a role, or change its role (the organisation's admins). With invitations on
    (VERA_ORG_INVITATIONS), a user who is not a member is invited instead: the answer lists the pending
    invitation in ``invitations``, not in ``members``; in local mode (no tokens, where nobody else can sign in to
    accept) the user is added at once all the same."""
    return registry.access.set_member(org, member, body.role, viewer=_signed_in(caller, options))


@router.delete("/orgs/{org}/members/{member}", response_model=OrganizationInfo)
@_tokens_said
def delete_member(caller: Caller, options: Options, registry: RegistryDep, org: str,
                  member: str) -> OrganizationInfo:
    return registry.access.remove_member(org, member, viewer=_signed_in(caller, options))


@router.put("/orgs/{org}/protected-aliases/{alias}", response_model=OrganizationInfo)
@_tokens_said
def protect_alias(caller: Caller, options: Options, registry: RegistryDep, org: str, alias: str
                  ) -> OrganizationInfo:
    """Protect an alias name in every adapter of the organisation (its admins; the registry's admins): from then on
    only they point it at a version, remove it, delete the version (or the adapter) it names, rename or move an
    adapter that holds it, or move in one holding an alias of that name; its writers get 403 saying so. Answers
    the organisation, with ``protected_aliases``; protecting one already protected is a no-op. Audited as
    ``alias-protect``."""
    return registry.access.protect_alias(org, alias, viewer=_signed_in(caller, options))


@router.delete("/orgs/{org}/protected-aliases/{alias}", response_model=OrganizationInfo)
@_tokens_said
def unprotect_alias(caller: Caller, options: Options, registry: RegistryDep, org: str, alias: str
                    ) -> OrganizationInfo:
    """Let the organisation's writers move the alias again (its admins): 404 when it is not protected. Audited as
    ``alias-unprotect``."""
    return registry.access.unprotect_alias(org, alias, viewer=_signed_in(caller, options))


@router.delete("/orgs/{org}/invitations/{member}", response_model=OrganizationInfo)
@_tokens_said
def cancel_invitation(caller: Caller, options: Options, registry: RegistryDep, org: str,
                      member: str) -> OrganizationInfo:
    """Cancel a pending invitation (the organisation's admins): 404 when none is pending."""
    return registry.access.cancel_invitation(org, member, viewer=_signed_in(caller, options))


@router.get("/invitations", response_model=list[InvitationInfo])
def invitations(caller: Caller, options: Options, registry: RegistryDep, response: Response,
                after: AfterName = None, limit: NamedPage = NAMED_PAGE) -> list[InvitationInfo]:
    """The caller's pending invitations to organisations (VERA_ORG_INVITATIONS; a token limited to some owners: to
    those only), by organisation, a page at a time (``Link``: the next)."""
    found = registry.access.invitations(_signed_in(caller, options), after=after, limit=limit + 1)
    return _page(found, limit, response, lambda invitation: invitation.organization)


@router.post("/invitations/{org}", response_model=OrganizationInfo)
@_tokens_said
def accept_invitation(caller: Caller, options: Options, registry: RegistryDep, org: str) -> OrganizationInfo:
    """Accept the caller's invitation to ``org``: the caller is a member, with the role invited to; 404 when none is
    pending (never sent, expired, answered or cancelled)."""
    return registry.access.accept_invitation(org, viewer=_signed_in(caller, options))


@router.delete("/invitations/{org}", status_code=204)
def decline_invitation(caller: Caller, options: Options, registry: RegistryDep, org: str) -> Response:
    """Decline the caller's invitation to ``org``: 204; 404 when none is pending."""
    registry.access.decline_invitation(org, viewer=_signed_in(caller, options))
    return Response(status_code=204)


@router.get("/owners/{owner}/usage", response_model=OwnerUsage)
def owner_usage(caller: Caller, options: Options, registry: RegistryDep, owner: str) -> OwnerUsage:
    """What the owner namespace's adapters store, and its storage quota (null: none): for the user itself, the
    members of the organisation, and admins; to anyone else it is not there."""
    who = _signed_in(caller, options)
    owners = who.readable_owners()
    if owners is not None and owner not in owners:
        raise NotFound(f"No owner {owner!r} that you belong to: usage is shown to the user, an organisation's "
                       "members, and admins.")
    return registry.usage(owner, known=owner == who.owner)


class QuotaBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    quota_bytes: QuotaSize | None = Field(
        description="the quota: bytes, or a size with a unit (\"50GB\", \"50GiB\"); null: no quota for this owner")


def _quota_admin(caller: Caller, options: Options, owner: str) -> Principal:
    """An admin whose token may act on ``owner`` (a token limited to some owners is limited here too); a dependency,
    so that anyone else is refused before the body is read and checked."""
    who = authorize(caller, options, "admin")
    if who.limited_to is not None and owner not in who.limited_to:
        raise Forbidden(f"This token is limited to {', '.join(who.limited_to)}: it may not change the quota of "
                        f"{owner}. Use an admin token without a limit.")
    return who


QuotaAdmin = Annotated[Principal, Depends(_quota_admin)]


@router.put("/owners/{owner}/quota", response_model=OwnerUsage)
def put_quota(who: QuotaAdmin, registry: RegistryDep, owner: str, body: QuotaBody) -> OwnerUsage:
    """Set the owner's storage quota (admins), over the settings' (VERA_OWNER_QUOTAS, VERA_OWNER_QUOTA_BYTES) until
    it is cleared; nothing stored is removed by a lower one."""
    return registry.set_quota(owner, None if body.quota_bytes is None else int(body.quota_bytes), actor=who.owner)


@router.delete("/owners/{owner}/quota", response_model=OwnerUsage)
def delete_quota(who: QuotaAdmin, registry: RegistryDep, owner: str) -> OwnerUsage:
    """Drop the quota an admin set for the owner (admins): the settings' holds again."""
    return registry.clear_quota(owner, actor=who.owner)

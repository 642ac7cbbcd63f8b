"""Access tokens: random bearer secrets stored as SHA-256 only, with an owner (the user they act for), scopes (read,
publish, hub: may use the server's own HuggingFace token VERA_HUB_TOKEN, admin: everything), optionally a list of
owner namespaces they are limited to, and an expiry. A token's principal carries the user's organisation roles
(registry.services.access), read once when the token is checked, so that every permission below is decided
without another query."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast, get_args

from sqlalchemy import ColumnElement, and_, delete, exists, func, not_, or_, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from registry.domain.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthorized
from registry.domain.events import EVERY_OWNER
from registry.domain.publishers import MINTED_KEPT, MINTED_NAME_PREFIX
from registry.domain.schemas import TokenInfo, check_name, check_new_name, check_text
from registry.store import models as m
from registry.store.database import Database, refused_write

Scope = Literal["read", "publish", "hub", "admin"]
SCOPES: tuple[Scope, ...] = get_args(Scope)
#: A member's role in an organisation: read its private adapters; also publish and manage them; also manage members.
Role = Literal["read", "write", "admin"]
ROLES: tuple[Role, ...] = get_args(Role)
PREFIX = "vera_"
MAX_TOKEN_OWNERS = 20


def scope_hint(scope: str, user: str) -> str:
    """How a caller whose token lacks ``scope`` gets one: a token is made only with scopes its maker has, so
    `vera auth create-token` helps only someone holding one (it was the whole advice to a read-only token's holder,
    whom it then refused: a PEFT user's walk, session 47)."""
    return (f"use a token that has it (`vera login --token ...` stores one), make one from such a token (`vera auth "
            f"create-token --scope {scope}`), or ask a registry admin for one (`vera token create --owner {user} "
            f"--scope {scope}` on the registry's machine)")


@dataclass(frozen=True)
class Principal:
    """Who is calling: a token's user, scopes, organisation roles and namespace limit; the single local user; or an
    anonymous reader (public adapters only)."""

    owner: str
    scopes: frozenset[str]
    token_id: int | None = None
    #: organisation -> this user's role in it
    roles: Mapping[str, Role] = field(default_factory=dict, hash=False)
    #: the owner namespaces this token is limited to (None: no limit beyond the user's own rights)
    limited_to: frozenset[str] | None = None
    anonymous: bool = False
    expires_at: datetime | None = None
    #: the single user of a registry without tokens (local mode): nobody else can sign in there
    local: bool = False
    #: a token minted by trusted publishing: what for (publisher, issuer, subject, claims), recorded on what it
    #: publishes (registry.services.trusted)
    provenance: Mapping[str, Any] | None = field(default=None, hash=False, compare=False)

    @property
    def is_admin(self) -> bool:
        return "admin" in self.scopes

    @property
    def is_registry_admin(self) -> bool:
        """An administrator's token without an owner limit: what only the whole registry's administrator does
        (tokens for other users, every organisation, the events about no owner). An admin token limited to some
        owners administers those owners alone."""
        return self.is_admin and self.limited_to is None

    def _within_limit(self, owner: str) -> bool:
        return self.limited_to is None or owner in self.limited_to

    def readable_owners(self) -> frozenset[str] | None:
        """The owners whose private adapters this principal reads; None: every owner."""
        if self.anonymous:
            return frozenset()
        if self.is_admin:
            return self.limited_to
        owners = frozenset({self.owner, *self.roles})
        return owners if self.limited_to is None else owners & self.limited_to

    def can_read(self, owner: str, visibility: str) -> bool:
        """Whether this principal may see an adapter of ``owner`` with ``visibility`` (public or private)."""
        if visibility == "public":
            return True
        owners = self.readable_owners()
        return owners is None or owner in owners

    def writable_owners(self) -> frozenset[str] | None:
        """The owners under which this principal may publish, move aliases, yank, delete and edit; None: every
        owner."""
        if self.anonymous:
            return frozenset()
        if self.is_admin:
            return self.limited_to
        if "publish" not in self.scopes:
            return frozenset()
        owners = frozenset({self.owner, *(o for o, role in self.roles.items() if role in ("write", "admin"))})
        return owners if self.limited_to is None else owners & self.limited_to

    def can_write(self, owner: str) -> bool:
        """Whether this principal may publish, move aliases, yank, delete and edit under ``owner``/."""
        owners = self.writable_owners()
        return owners is None or owner in owners

    def can_manage(self, organisation: str) -> bool:
        """Whether this principal may add and remove the members of ``organisation``."""
        if not self._within_limit(organisation) or self.anonymous:
            return False
        return self.is_admin or ("publish" in self.scopes and self.roles.get(organisation) == "admin")

    def require(self, scope: Scope, *, owner: str | None = None) -> None:
        """Refuse unless this principal has ``scope`` (admin has all) and, for publish, may write under ``owner``."""
        if not self.is_admin and scope not in self.scopes:
            raise Forbidden(f"This token has scopes {sorted(self.scopes)}; {scope!r} is needed: "
                            f"{scope_hint(scope, self.owner)}.")
        if scope == "publish" and owner is not None and not self.can_write(owner):
            where = (f"{self.owner}/ and the organisations where it has the write role ("
                     f"{', '.join(sorted(o for o, r in self.roles.items() if r != 'read')) or 'none'})")
            if self.limited_to is not None:
                where = f"only {', '.join(sorted(self.limited_to))} (the token's limit)"
            raise Forbidden(f"{self.owner!r} cannot write under {owner}/: this token writes under {where}.")


LOCAL_USER = Principal(owner="local", scopes=frozenset(SCOPES), local=True)
ANONYMOUS = Principal(owner="anonymous", scopes=frozenset({"read"}), anonymous=True)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


#: The most live (neither revoked nor expired) tokens one user may hold.
MAX_LIVE_TOKENS = 100
#: The most tokens one user may create in 24 hours, short-lived ones included (each is a row of the table).
MAX_TOKENS_PER_DAY = 1000


#: The actor of token events done on the registry's machine (`vera token create|revoke`), not through the API.
OPERATOR = "operator"


def retirement(s: Session, name: str) -> tuple[bool, str | None]:
    """Whether ``name`` is retired, and the name its organisation was renamed to (when the rename is the last of
    its organisation events), from one read of that event.

    Retired: the name of a deleted organisation that left a history (``org-delete`` the last
    of its organisation events, with ``retired`` in its detail: jobs or adapter events under the name), so that no
    new owner of the name is shown what the organisation left (its ended jobs with their datasets and logs, its
    audit events, which are kept by owner name); or the old name of a renamed organisation (``org-rename`` away from
    it the last), whose adapters' old names point to the new one. An organisation that owned nothing, deleted,
    retires nothing."""
    deletion = _deletion(s, name)
    if deletion is None:
        return False, None
    return bool(deletion.get("retired", True)), str(deletion["to"]) if deletion.get("from") == name else None


#: The organisation events that begin or end an organisation's life under a name: org-rename is recorded on both
#: names (``detail``: ``from``, ``to``), ending the old one's and beginning the new one's.
_ORG_LIFE = ("org-create", "org-delete", "org-rename")


def _deletion(s: Session, name: str) -> dict[str, Any] | None:
    """The detail of the event that ended organisation ``name`` (its org-delete, or an org-rename away from it) when
    it is the last of its organisation events (None: no organisation of that name was deleted or renamed, or one
    was created, or renamed to it, since)."""
    last = s.execute(_last_org_event(name, m.AuditEvent.action, m.AuditEvent.detail)).first()
    if last is None:
        return None
    detail = dict(last.detail or {})
    ended = last.action == "org-delete" or (last.action == "org-rename" and detail.get("from") == name)
    return detail if ended else None


def _last_org_event(name: str, *columns: Any) -> Any:
    """``columns`` of the newest org-create, org-delete or org-rename event of ``name``."""
    return (select(*columns).where(m.AuditEvent.target == name, m.AuditEvent.action.in_(_ORG_LIFE))
            .order_by(m.AuditEvent.id.desc()).limit(1))


def check_new_owner(s: Session, owner: str) -> None:
    """InvalidInput when ``owner`` is made now (no organisation, user's token or adapter holds the name yet: a publish,
    a copy, a move or a job's target brings it in) with a name check_new_name refuses, as an organisation's or a
    user's first token's is (a docs audit's finding, session 52: `vera publish --name alice./x` made `alice.`)."""
    held = s.execute(select(exists().where(m.Organization.name == owner), exists().where(m.AccessToken.owner == owner),
                            exists().where(m.Adapter.owner == owner))).one()
    if not any(held):
        check_new_name(owner, "A new owner's name")


def lock_owner(s: Session, owner: str) -> None:
    """Conflict for a write (a publish, a move) under ``owner`` when ``owner`` is a deleted organisation's name that
    no user holds since (retired, or without a token made for it after), read with the organisation's row, if any,
    in share mode on PostgreSQL: a concurrent delete of the organisation waits for this transaction (and then finds
    what it wrote, and refuses), or this one waits for the delete and then sees it. On SQLite the transaction holds
    the database's write lock already (moves.lock_adapter), so the delete is before or after it whole."""
    last = _last_org_event(owner, m.AuditEvent.id).scalar_subquery()
    organization, user, deleted = s.execute(select(  # one round trip for what most publishes need to know
        exists().where(m.Organization.name == owner), exists().where(m.AccessToken.owner == owner),
        exists().where(m.AuditEvent.id == last, m.AuditEvent.action.in_(("org-delete", "org-rename"))))).one()
    if organization:
        if s.get_bind().dialect.name != "postgresql" or s.scalar(  # its row in share mode: a delete waits, or is
                select(m.Organization.id).where(m.Organization.name == owner).with_for_update(read=True)):  # seen
            return
    elif user or not deleted:
        return  # a user's: an organisation refuses a name with a token, and a retired name gets no token
    deletion = _deletion(s, owner)  # read again: a delete committed while this waited for the row is seen now
    if deletion is not None and deletion.get("from") == owner:
        raise Conflict(f"{owner} was an organisation, and it was renamed to {deletion['to']}: nothing is published "
                       f"or moved under its old name. Publish under {deletion['to']}/ instead.")
    if deletion is not None:
        raise Conflict(f"{owner} was an organisation, and it was deleted: nothing is published or moved under its "
                       f"name. Publish under another owner (a registry admin may create {owner} again: `vera org "
                       f"create {owner}`).")


def retired_refusal(name: str, *, revive: str, renamed: str | None = None) -> Conflict:
    """The refusal of retired ``name`` as a new owner's; ``renamed``: the name its organisation was renamed to ('':
    renamed, to a name the caller is not told)."""
    if renamed == "":
        return Conflict(f"{name!r} was the name of an organisation that was renamed; it is retired, so that old "
                        f"references to its adapters keep answering with their new names. Choose another "
                        f"name{revive}.")
    if renamed is not None:
        return Conflict(f"{name!r} was the name of an organisation that was renamed to {renamed!r}; it is retired, so "
                        f"that old references to its adapters keep answering with their names under {renamed}. "
                        f"Choose another name{revive}.")
    return Conflict(f"{name!r} was the name of an organisation that was deleted; it is retired, so that what that "
                    f"organisation left (its ended jobs, its audit events) is never shown to a new owner. Choose "
                    f"another name{revive}.")


def create_token(db: Database, *, owner: str, scopes: list[str], name: str = "",
                 expires_in: timedelta | None = None, limited_to: list[str] | None = None,
                 expires_at: datetime | None = None, actor: str = OPERATOR,
                 parent_id: int | None = None, audit: Mapping[str, Any] | None = None,
                 provenance: dict[str, Any] | None = None) -> tuple[int, str]:
    """Create a token and return (id, secret). The secret is shown once; only its hash is stored. With
    ``expires_in`` the token stops working after that long (or at ``expires_at``); with ``limited_to`` it reads
    private adapters and writes only under those owners; ``parent_id``: the caller's own token that made it (through
    the API, for the caller), revoked with it (revoke_token). Audited (``token-create``, by ``actor``: the operator
    for `vera token create` on the registry's machine). A token is a user's: an organisation's name is refused
    (its members act in it with their own tokens). ``audit``: more of the event's detail (how it was made);
    ``provenance``: what a trusted publisher's token was minted for, recorded on the versions it publishes."""
    check_name(owner, "Owner")
    check_text(name, "Token name", max_length=100)
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise InvalidInput(f"Scopes must be a non-empty subset of {list(SCOPES)}, got {scopes}.")
    expires_at = _expiry(expires_in, expires_at)
    if limited_to is not None:
        if not 1 <= len(limited_to) <= MAX_TOKEN_OWNERS:
            raise InvalidInput(f"A token may be limited to 1 to {MAX_TOKEN_OWNERS} owners, got {len(limited_to)}.")
        limited_to = sorted({check_name(o, "Owner") for o in limited_to})
    secret = PREFIX + secrets.token_urlsafe(32)
    with db.session() as s:
        now = datetime.now(UTC)
        live = s.scalar(select(func.count()).select_from(m.AccessToken).where(
            m.AccessToken.owner == owner, live_token(now))) or 0
        if live >= MAX_LIVE_TOKENS:
            raise Conflict(f"{owner} holds {live:,} live tokens, the most one user may (rate limits count per user, "
                           "not per token): revoke unused ones first (`vera auth tokens`, `vera auth revoke ID`).")
        recent = s.scalar(select(func.count()).select_from(m.AccessToken).where(
            m.AccessToken.owner == owner, m.AccessToken.created_at > now - timedelta(days=1))) or 0
        if recent >= MAX_TOKENS_PER_DAY:  # short-lived ones too: each is a row
            raise Conflict(f"{owner} created {recent:,} tokens in the last 24 hours, the most one user may; use "
                           "the ones you have, or ask again tomorrow.")
        if s.scalar(select(m.Organization.id).where(m.Organization.name == owner)) is not None:
            raise InvalidInput(f"{owner} is an organisation: a token acts for a user, who publishes in {owner} as a "
                               f"member (`vera org add {owner} USER --role write`). Create the token for that user.")
        ended, renamed = retirement(s, owner)
        if ended:
            raise retired_refusal(owner, revive=" for the user", renamed=renamed)
        if s.scalar(select(m.AccessToken.id).where(m.AccessToken.owner == owner).limit(1)) is None:
            check_new_name(owner, "A new user's name")  # a user's first token names the user
        row = m.AccessToken(token_hash=_hash(secret), owner=owner, name=name, scopes=sorted(set(scopes)),
                            expires_at=expires_at, limited_to=limited_to, parent_id=parent_id,
                            provenance=provenance)
        s.add(row)
        s.flush()
        s.add(m.AuditEvent(actor=actor[:64], action="token-create", target=owner, detail={
            "token": row.id, "name": name, "scopes": row.scopes, "limited_to": limited_to,
            "expires_at": expires_at.isoformat() if expires_at is not None else None, "parent": parent_id,
            **(audit or {})}))
        return row.id, secret


def _expiry(expires_in: timedelta | None, expires_at: datetime | None) -> datetime | None:
    """When a new token expires: at ``expires_at``, else ``expires_in`` from now, else never; InvalidInput for a
    time that is not in the future."""
    if expires_in is not None and expires_in <= timedelta(0):
        raise InvalidInput(f"A token must live a positive time; got {expires_in}.")
    if expires_at is None and expires_in is not None:
        expires_at = datetime.now(UTC) + expires_in
    if expires_at is not None and expires_at <= datetime.now(UTC):
        raise InvalidInput(f"A token must live a positive time; it would have expired at {expires_at:%Y-%m-%d %H:%M} "
                           "UTC.")
    return expires_at


def within_max_life(expires_at: datetime | None, max_days: float | None) -> datetime | None:
    """A new token's expiry under the registry's longest token life (VERA_MAX_TOKEN_DAYS; None: no limit): a token
    asked for without one gets that life, one asked to live longer is refused (InvalidInput, naming the limit)."""
    if max_days is None:
        return expires_at
    latest = datetime.now(UTC) + timedelta(days=max_days)
    if expires_at is None:
        return latest
    if expires_at > latest + timedelta(seconds=1):  # a second for the time between the request and this check
        raise InvalidInput(f"Tokens on this registry live at most {max_days:g} days (VERA_MAX_TOKEN_DAYS); ask for "
                           f"{max_days:g} or fewer (expires_days, --expires-days), or leave it out to get "
                           f"{max_days:g}.")
    return expires_at


def token_not_found(token_id: int) -> NotFound:
    """The error for a token that does not exist, or that the caller may not see (one message for both)."""
    return NotFound(f"No token with id {token_id}; `vera auth tokens` (or `vera token list` on the registry's "
                    "machine) shows them.")


def revoke_token(db: Database, token_id: int, *, owner: str | None = None, actor: str = OPERATOR) -> list[int]:
    """Revoke a token (only ``owner``'s, when given: another user's token is not found) and the live tokens made from
    it, and from those (``parent_id``: a leaked token's offspring go with it, as their expiry already follows it);
    each audited (``token-revoke``, by ``actor``; ``detail.with`` names the token an offspring went with) the first
    time. The ids revoked now (none when it was already)."""
    with db.session() as s:
        row = s.get(m.AccessToken, token_id)
        if row is None or (owner is not None and row.owner != owner):
            raise token_not_found(token_id)
        return _revoke(s, [row], actor)


def revoke_all(db: Database, owner: str, *, actor: str = OPERATOR) -> list[int]:
    """Revoke every live token of ``owner`` (and their offspring): signed out everywhere. The ids revoked."""
    with db.session() as s:
        return _revoke(s, list(s.scalars(select(m.AccessToken).where(
            m.AccessToken.owner == owner, m.AccessToken.revoked_at.is_(None)).order_by(m.AccessToken.id))), actor)


def _revoke(s: Session, rows: list[m.AccessToken], actor: str) -> list[int]:
    now, revoked, given = datetime.now(UTC), [], {row.id for row in rows}
    admins: set[str] = set()  # the owners of the administrators' tokens (no --owner limit) revoked now
    while rows:
        for row in rows:
            if row.revoked_at is None:
                row.revoked_at = now
                revoked.append(row.id)
                if "admin" in row.scopes and row.limited_to is None and (row.expires_at is None or
                                                                         row.expires_at > now):
                    admins.add(row.owner)  # (one that had expired ended its administrator's time before: no news)
                s.add(m.AuditEvent(actor=actor[:64], action="token-revoke", target=row.owner, detail={
                    "token": row.id, "name": row.name, **({} if row.id in given else {"with": row.parent_id})}))
        rows = list(s.scalars(select(m.AccessToken).where(  # the next generation (revoked ones' offspring too)
            m.AccessToken.parent_id.in_([row.id for row in rows]), m.AccessToken.revoked_at.is_(None))))
    _pause_registry_webhooks(s, admins, now, actor)
    return revoked


def live_token(now: datetime) -> ColumnElement[bool]:
    """A token neither revoked nor expired at ``now``."""
    return and_(m.AccessToken.revoked_at.is_(None),
                or_(m.AccessToken.expires_at.is_(None), m.AccessToken.expires_at > now))


def _pause_registry_webhooks(s: Session, admins: set[str], now: datetime, actor: str) -> None:
    """An administrator left with no live administrator's token (one that no --owner limits) may no longer manage the
    registry-wide webhooks: those it created or changed pause (webhooks.pause_webhooks_of), as an organisation's do
    when a member goes, since their URLs may be its and they carry every owner's events, private ones included."""
    from registry.services.webhooks import pause_webhooks_of  # webhooks -> outbox; kept out of the token's import

    for owner in sorted(admins):
        if not _still_admin(s, owner, now):
            pause_webhooks_of(s, EVERY_OWNER, owner, actor, "holds no administrator's token any more")


def admin_ended(s: Session, owner: str, now: datetime) -> datetime | None:
    """When ``owner`` stopped holding a live administrator's token (one that no --owner limits): the latest end
    (revocation or expiry) of its such tokens; None while one is live, and when it holds none (never did, or they
    were purged). Its tokens are locked (on PostgreSQL), as _still_admin does."""
    rows = s.scalars(select(m.AccessToken).where(m.AccessToken.owner == owner).with_for_update())
    ends: list[datetime] = []
    for row in rows:
        if "admin" not in row.scopes or row.limited_to is not None:
            continue
        end = min((t for t in (row.revoked_at, row.expires_at) if t is not None), default=None)
        if end is None or end > now:
            return None
        ends.append(end)
    return max(ends, default=None)


def _still_admin(s: Session, owner: str, now: datetime) -> bool:
    """Whether ``owner`` holds a live token of the admin scope that no --owner limits. Its tokens are locked (on
    PostgreSQL) so that two revocations at once of its last two such tokens do not each see the other one live."""
    live = s.scalars(select(m.AccessToken).where(m.AccessToken.owner == owner, live_token(now)).with_for_update())
    return any("admin" in row.scopes and row.limited_to is None for row in live)


def list_tokens(db: Database, *, owner: str | None = None) -> list[TokenInfo]:
    """Every token (or ``owner``'s), never their secrets."""
    query = select(m.AccessToken).order_by(m.AccessToken.id)
    if owner is not None:
        query = query.where(m.AccessToken.owner == owner)
    with db.session() as s:
        return [_info(t) for t in s.scalars(query)]


def token_info(db: Database, token_id: int) -> TokenInfo:
    """One token, never its secret (a token just created: one row read, not its user's every token)."""
    with db.session() as s:
        row = s.get(m.AccessToken, token_id)
        if row is None:
            raise token_not_found(token_id)
        return _info(row)


def _info(t: m.AccessToken) -> TokenInfo:
    return TokenInfo(id=t.id, owner=t.owner, name=t.name, scopes=t.scopes, created_at=t.created_at,
                     revoked=t.revoked_at is not None, last_used_at=t.last_used_at, expires_at=t.expires_at,
                     limited_to=t.limited_to, parent_id=t.parent_id)


def _ended(s: Session, before: datetime, owner: str | None = None) -> list[m.AccessToken]:
    """The rows of tokens revoked or expired before ``before`` (``owner``'s only, when given), oldest first; never
    a trusted publisher's token minted less than MINTED_KEPT ago (its name refuses a second exchange of the identity
    token it was minted from while that may still be valid: registry.services.trusted). A deleted token's id is
    never given to another (SQLite too, since 0028), so `vera auth revoke ID`, audit events and ``parent_id`` go on
    naming one token each."""
    minted_recently = and_(m.AccessToken.name.startswith(f"{MINTED_NAME_PREFIX} ", autoescape=True),
                           m.AccessToken.created_at > datetime.now(UTC) - MINTED_KEPT)
    query = select(m.AccessToken).where(
        or_(m.AccessToken.revoked_at < before, m.AccessToken.expires_at < before), not_(minted_recently))
    if owner is not None:
        query = query.where(m.AccessToken.owner == owner)
    return list(s.scalars(query.order_by(m.AccessToken.id)))


def purge_tokens(db: Database, *, before: datetime, owner: str | None = None, dry_run: bool = False,
                 actor: str = OPERATOR) -> list[TokenInfo]:
    """Delete the tokens that ended before ``before`` (revoked or expired: they authenticate nothing, and a
    dashboard's remembered sign-ins add one per browser each week), all owners' or ``owner``'s; ``dry_run`` only
    lists them. Their audit events stay (``token-revoke`` says who revoked which); each owner's purge is audited too
    (``token-purge``, ``detail.tokens``: the ids). A live token made from a purged one (none should be: revoking or
    expiring a token ends those made from it) forgets its parent. The tokens deleted (or that would be)."""
    with db.session() as s:
        rows = _ended(s, before, owner)
        gone = [_info(row) for row in rows]
        if dry_run or not rows:
            return gone
        ids = [row.id for row in rows]
        s.execute(update(m.AccessToken).where(m.AccessToken.parent_id.in_(ids)).values(parent_id=None))
        # what this purge deleted: another process purging at the same moment (each API replica does, hourly:
        # registry.services.housekeeping) may have deleted some of the same rows first; each is audited once
        deleted = set(s.scalars(delete(m.AccessToken).where(m.AccessToken.id.in_(ids)).returning(m.AccessToken.id)))
        rows = [row for row in rows if row.id in deleted]
        for name in sorted({row.owner for row in rows}):
            s.add(m.AuditEvent(actor=actor[:64], action="token-purge", target=name, detail={
                "tokens": [row.id for row in rows if row.owner == name], "ended_before": before.isoformat()}))
    return [info for info in gone if info.id in deleted]


#: How stale a token's recorded last use may get: a request within this long of the recorded one writes nothing.
LAST_USED_EVERY = timedelta(minutes=1)


def authenticate(db: Database, secret: str) -> Principal:
    """The principal of a bearer secret; compares the stored hash in constant time. Records the token's last use to
    the minute (LAST_USED_EVERY: a write, which on SQLite takes the database's write lock, once a minute per token
    instead of on every request), except on a read-only registry (VERA_READ_ONLY), which writes nothing, and on a
    database that refuses writes (a read-only SQLite file or mount, a hot standby): its reads go on, where the
    refused write failed every request of the token once a minute (an operator's walk, session 43)."""
    digest = _hash(secret)
    with db.session() as s:
        row = s.scalar(select(m.AccessToken).where(m.AccessToken.token_hash == digest))
        if row is None or not hmac.compare_digest(row.token_hash, digest) or row.revoked_at is not None:
            raise Unauthorized("The token is unknown or revoked, or another registry's; pass one of this "
                               "registry's (`vera login`, VERA_TOKEN or --token).")
        if row.expires_at is not None and row.expires_at <= datetime.now(UTC):
            raise Unauthorized(f"The token expired at {row.expires_at:%Y-%m-%d %H:%M} UTC; ask for a new one "
                               "(`vera token create ... --expires-days N`).")
        now = datetime.now(UTC)
        stale = not db.read_only and (row.last_used_at is None or now - row.last_used_at >= LAST_USED_EVERY)
        roles = {org: cast(Role, role) for org, role in s.execute(
            select(m.Organization.name, m.Membership.role).join(m.Membership).where(m.Membership.member == row.owner))}
        principal = Principal(owner=row.owner, scopes=frozenset(row.scopes), token_id=row.id, roles=roles,
                              limited_to=frozenset(row.limited_to) if row.limited_to is not None else None,
                              expires_at=row.expires_at, provenance=row.provenance)
    if stale:
        try:
            with db.session() as s:
                s.execute(update(m.AccessToken).where(m.AccessToken.id == principal.token_id)
                          .values(last_used_at=now))
        except DBAPIError as exc:
            if not refused_write(exc):
                raise
    return principal

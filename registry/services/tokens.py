"""Access tokens: random bearer secrets stored as SHA-256 only, with an owner and scopes: read, publish, hub (may
use the server's own HuggingFace token, VERA_HUB_TOKEN) and admin (everything)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, get_args

from sqlalchemy import select

from registry.domain.errors import Forbidden, InvalidInput, NotFound, Unauthorized
from registry.domain.schemas import TokenInfo, check_name, check_text
from registry.store import models as m
from registry.store.database import Database

Scope = Literal["read", "publish", "hub", "admin"]
SCOPES: tuple[Scope, ...] = get_args(Scope)
PREFIX = "vera_"


@dataclass(frozen=True)
class Principal:
    """Who is calling: a token's owner and scopes, or the single local user."""

    owner: str
    scopes: frozenset[str]
    token_id: int | None = None

    def require(self, scope: Scope, *, owner: str | None = None) -> None:
        """Refuse unless this principal has ``scope`` (admin has all) and, for publish, owns ``owner``."""
        if "admin" in self.scopes:
            return
        if scope not in self.scopes:
            raise Forbidden(f"This token has scopes {sorted(self.scopes)}; {scope!r} is needed. Create one with "
                            f"`vera token create --owner {self.owner} --scope {scope}`.")
        if scope == "publish" and owner is not None and owner != self.owner:
            raise Forbidden(f"A publish token of {self.owner!r} can write only under {self.owner}/, not {owner}/.")


LOCAL_USER = Principal(owner="local", scopes=frozenset(SCOPES))


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(db: Database, *, owner: str, scopes: list[str], name: str = "",
                 expires_in: timedelta | None = None) -> tuple[int, str]:
    """Create a token and return (id, secret). The secret is shown once; only its hash is stored. With
    ``expires_in`` the token stops working after that long."""
    check_name(owner, "Owner")
    check_text(name, "Token name", max_length=100)
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise InvalidInput(f"Scopes must be a non-empty subset of {list(SCOPES)}, got {scopes}.")
    if expires_in is not None and expires_in <= timedelta(0):
        raise InvalidInput(f"A token must live a positive time; got {expires_in}.")
    secret = PREFIX + secrets.token_urlsafe(32)
    expires_at = datetime.now(UTC) + expires_in if expires_in is not None else None
    with db.session() as s:
        row = m.AccessToken(token_hash=_hash(secret), owner=owner, name=name, scopes=sorted(set(scopes)),
                            expires_at=expires_at)
        s.add(row)
        s.flush()
        return row.id, secret


def revoke_token(db: Database, token_id: int) -> None:
    with db.session() as s:
        row = s.get(m.AccessToken, token_id)
        if row is None:
            raise NotFound(f"No token with id {token_id}; `vera token list` shows them.")
        row.revoked_at = row.revoked_at or datetime.now(UTC)


def list_tokens(db: Database) -> list[TokenInfo]:
    with db.session() as s:
        return [TokenInfo(id=t.id, owner=t.owner, name=t.name, scopes=t.scopes, created_at=t.created_at,
                          revoked=t.revoked_at is not None, last_used_at=t.last_used_at, expires_at=t.expires_at)
                for t in s.scalars(select(m.AccessToken).order_by(m.AccessToken.id))]


def authenticate(db: Database, secret: str) -> Principal:
    """The principal of a bearer secret; compares the stored hash in constant time."""
    digest = _hash(secret)
    with db.session() as s:
        row = s.scalar(select(m.AccessToken).where(m.AccessToken.token_hash == digest))
        if row is None or not hmac.compare_digest(row.token_hash, digest) or row.revoked_at is not None:
            raise Unauthorized("The token is unknown or revoked; pass a valid one with VERA_TOKEN or --token.")
        if row.expires_at is not None and row.expires_at <= datetime.now(UTC):
            raise Unauthorized(f"The token expired at {row.expires_at:%Y-%m-%d %H:%M} UTC; ask for a new one "
                               "(`vera token create ... --expires-days N`).")
        row.last_used_at = datetime.now(UTC)
        return Principal(owner=row.owner, scopes=frozenset(row.scopes), token_id=row.id)

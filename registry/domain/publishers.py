"""Trusted publishers as the operator declares them (VERA_TRUSTED_PUBLISHERS): whose CI identity tokens the registry
trades for short-lived tokens, and what those may do. The model alone, light to import (the settings read it at
every start); the exchange itself is registry.services.trusted."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from registry.domain.errors import InvalidInput
from registry.domain.schemas import check_name

MAX_PUBLISHERS, MAX_CLAIMS, MAX_CLAIM_CHARS = 100, 20, 512
#: Checked by the exchange itself, not by a publisher's ``claims``.
RESERVED = frozenset({"iss", "aud", "exp", "iat", "nbf", "jti"})
#: An ended token is kept at least this long before a purge deletes it: an identity token (its lifetime at most
#: 24 h) is refused a second exchange only while the token minted from it is kept (registry.services.trusted).
MIN_TOKEN_PURGE_DAYS = 1.0
#: How long a minted token is kept whatever a purge is told: its identity token (at most 24 hours from its iat, which
#: may be up to 60 s after the exchange, and taken until 60 s after its exp) may still be valid for 24 h and 2 min
#: after the exchange (an outsider replayed one in that last minute); 5 minutes to spare.
MINTED_KEPT = timedelta(days=MIN_TOKEN_PURGE_DAYS, minutes=5)
#: How a minted token's name begins: "trusted publisher NAME HASH", the hash of the identity token exchanged.
MINTED_NAME_PREFIX = "trusted publisher"


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_issuer(value: str) -> str:
    """An issuer URL as tokens write it (``iss``): https, or http on a loopback host (an issuer on the same machine)."""
    parts = urlsplit(value)
    if (parts.scheme not in ("https", "http") or not parts.hostname or parts.query or parts.fragment
            or (parts.scheme == "http" and not _loopback(parts.hostname)) or any(not " " < c <= "~" for c in value)):
        raise ValueError(f"issuer {value!r} must be an https URL as the identity tokens write it in 'iss' (GitHub "
                         "Actions: https://token.actions.githubusercontent.com; GitLab: https://gitlab.com); plain "
                         "http only on a loopback address")
    return value


class TrustedPublisher(BaseModel):
    """One entry of VERA_TRUSTED_PUBLISHERS: whose identity tokens are trusted, and what they are traded for."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=40, pattern=r"^[a-z0-9][a-z0-9._-]*$",
                      description="a label: in the minted tokens' names and in the audit log")
    issuer: str = Field(max_length=300)
    audience: str = Field("vera", min_length=1, max_length=200, description="what the tokens' 'aud' must name")
    claims: dict[str, str | list[str]] = Field(min_length=1, max_length=MAX_CLAIMS, description=(
        "claim -> the value it must have (a list: any of them); every one must match"))
    user: str = Field(description="the registry user the minted token acts for")
    owners: list[str] = Field(min_length=1, max_length=20, description="the owners the minted token is limited to")
    scopes: list[Literal["read", "publish"]] = Field(["read", "publish"], min_length=1)
    minutes: float = Field(15.0, gt=0, le=60, description="how long a minted token lives")
    record: list[str] = Field([], max_length=MAX_CLAIMS, description=(
        "more claims to keep in the provenance of what its tokens publish (shown to every reader of those versions), "
        "beside RUN_CLAIMS and its own claims"))

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, value: str) -> str:
        return check_issuer(value)

    @field_validator("user")
    @classmethod
    def _user(cls, value: str) -> str:
        return _name(value, "user")

    @field_validator("owners")
    @classmethod
    def _owners(cls, value: list[str]) -> list[str]:
        return sorted({_name(owner, "owner") for owner in value})

    @field_validator("claims")
    @classmethod
    def _claims(cls, value: dict[str, str | list[str]]) -> dict[str, str | list[str]]:
        for claim, wanted in value.items():
            if claim in RESERVED:
                raise ValueError(f"claim {claim!r} is checked by the exchange itself (issuer, audience, times, "
                                 "token id); name the claims that say who the caller is (sub, repository, ref, ...)")
            choices = wanted if isinstance(wanted, list) else [wanted]
            if not choices or not all(0 < len(c) <= MAX_CLAIM_CHARS for c in choices) or not 0 < len(claim) <= 100:
                raise ValueError(f"claim {claim!r} must be given one value or a non-empty list of values, each "
                                 f"1 to {MAX_CLAIM_CHARS} characters")
        return value

    @field_validator("record")
    @classmethod
    def _record(cls, value: list[str]) -> list[str]:
        if bad := [c for c in value if c in RESERVED or not 0 < len(c) <= 100]:
            raise ValueError(f"record lists {bad}: name claims of 1 to 100 characters that say who ran what, not the "
                             "ones the exchange checks (issuer, audience, times, token id)")
        return value

    def matches(self, claims: Mapping[str, Any]) -> bool:
        """Whether an identity token's verified ``claims`` are this publisher's (issuer and audience included)."""
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if claims.get("iss") != self.issuer or self.audience not in audiences:
            return False
        return all(isinstance(claims.get(claim), str) and claims[claim] in (wanted if isinstance(wanted, list)
                                                                              else [wanted])
                   for claim, wanted in self.claims.items())


def _name(value: str, what: str) -> str:
    try:
        return check_name(value, what.capitalize())
    except InvalidInput as exc:
        raise ValueError(str(exc)) from None


def check_publishers(publishers: Sequence[TrustedPublisher]) -> list[TrustedPublisher]:
    """The settings' list, its names distinct and at most MAX_PUBLISHERS of them."""
    if len(publishers) > MAX_PUBLISHERS:
        raise ValueError(f"VERA_TRUSTED_PUBLISHERS lists {len(publishers)} publishers; at most {MAX_PUBLISHERS}")
    names = [p.name for p in publishers]
    if twice := sorted({n for n in names if names.count(n) > 1}):
        raise ValueError(f"VERA_TRUSTED_PUBLISHERS names {twice} more than once; give each publisher its own name")
    return list(publishers)


class PublisherInfo(TrustedPublisher):
    """A trusted publisher as `GET /api/v1/trusted-publishers` lists it: its declaration, and its recent use (from
    the tokens it minted that are still kept: VERA_TOKEN_PURGE_DAYS)."""

    last_exchange_at: datetime | None = Field(None, description="when it last minted a token (of those kept)")
    tokens_kept: int = Field(0, description="the tokens it minted that are kept (live or ended, not yet purged)")

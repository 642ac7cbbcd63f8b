"""Trusted publishing: a CI job trades the short-lived OpenID Connect identity token its platform gives it (GitHub
Actions, GitLab CI, Google Cloud, any issuer with a discovery document) for a short-lived registry token, as PyPI's
trusted publishers do, so that no lasting registry secret is kept in CI.

An administrator declares the publishers (VERA_TRUSTED_PUBLISHERS): an issuer, the audience its tokens must name, the
claims they must carry (``repository: acme/adapters``, ``ref: refs/heads/main``), and what a token minted for them
may do: the user it acts for, the owners it is limited to, its scopes, how many minutes it lives. The identity token's
signature is checked with the issuer's published keys (fetched from its discovery document's ``jwks_uri``, kept a
few minutes), with an asymmetric algorithm only, and its issuer, audience, expiry and issue time; an issuer that no
publisher names is refused without any request to it. Each identity token is exchanged once (its ``jti``, or its
hash, is in the minted token's name). The exchange is audited as the minted token's ``token-create`` with the
publisher, issuer, subject and matched claims."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import httpx
import jwt
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from registry.domain.errors import Conflict, Forbidden, InvalidInput, IssuerUnavailable, Unauthorized
from registry.domain.publishers import MAX_CLAIM_CHARS, MINTED_NAME_PREFIX, PublisherInfo, TrustedPublisher
from registry.store import models as m
from registry.store.database import Database
from vera_core.errors import parse_json

if TYPE_CHECKING:
    from registry.services.tokens import Principal

#: The longest identity token taken (GitHub's are about 1,300 characters; Google's about 1,000).
MAX_ID_TOKEN_CHARS = 16_384
#: Signatures checked only with public keys: an HMAC ("HS256") or "none" token is refused before any key is chosen,
#: so that an issuer's public key can never be used as a shared secret.
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
#: Clock skew allowed on exp, nbf and iat, in seconds.
LEEWAY_S = 60
#: How long an issuer's discovery document and its keys are kept; a token signed with a key id not among them fetches
#: the keys again (a rotation), at most once per KEYS_REFETCH_S per issuer (tokens naming made-up key ids make the
#: registry ask the issuer no more often than that).
DISCOVERY_TTL_S, KEYS_TTL_S, KEYS_REFETCH_S = 3600.0, 300.0, 5.0
#: While the issuer cannot be reached, keys fetched within this long still verify.
KEYS_STALE_S = 3600.0
#: The longest-lived identity token taken (GitHub's live 5 to 10 minutes, GitLab's as long as the job's timeout).
MAX_ID_TOKEN_LIFE_S = 24 * 3600
MAX_DOCUMENT_BYTES = 1 << 20
#: The claims a minted token's provenance keeps besides a publisher's own (recorded_claims): those that say which run
#: of which code published, as GitHub Actions, GitLab CI and Buildkite name them; not personal ones (emails, ids).
RUN_CLAIMS = frozenset({
    "repository", "repository_owner", "ref", "ref_type", "sha", "workflow", "workflow_ref", "job_workflow_ref",
    "job_workflow_sha", "run_id", "run_number", "run_attempt", "event_name", "environment", "actor",
    "runner_environment",  # GitHub Actions
    "project_path", "namespace_path", "pipeline_id", "pipeline_source", "job_id", "user_login", "ci_config_ref_uri",
    "ci_config_sha",  # GitLab CI (ref, ref_type, sha, environment as GitHub's)
    "organization_slug", "pipeline_slug", "build_number", "build_branch", "build_commit",  # Buildkite
})
#: Claims every identity token must carry; the publisher's own claims are checked on top.
REQUIRED = ("iss", "aud", "sub", "exp", "iat")
log = logging.getLogger("vera.trusted")


@dataclass
class _Keys:
    """One issuer's signing keys as this process knows them, and the fetch under way (one at a time)."""

    keys: dict[str, jwt.PyJWK] = field(default_factory=dict)
    fetched: float = -math.inf  # time.monotonic() of the last fetch that succeeded
    attempted: float = -math.inf  # ... of the last fetch begun, whatever became of it
    error: str = ""  # why the last fetch failed ("" when it succeeded)
    jwks_uri: str = ""
    discovered: float = -math.inf
    fetching: asyncio.Future[None] | None = None


class TrustedPublishing:
    """The exchange of identity tokens for registry tokens. Each issuer's keys are fetched on the event loop, one
    fetch at a time that every request needing it awaits (a request waiting on a slow issuer holds no thread: an
    outsider's made-up key ids stalled every route while fetches held the thread pool), at most once per
    KEYS_REFETCH_S whatever became of the last (a failure is remembered as long), and used KEYS_TTL_S; while the
    issuer cannot be reached, keys fetched within KEYS_STALE_S still verify."""

    def __init__(self, db: Database, publishers: Sequence[TrustedPublisher], *, timeout_s: float = 10.0) -> None:
        self.db = db
        self.publishers = list(publishers)
        self.timeout_s = timeout_s
        self._minting = threading.Lock()
        self._issuers: dict[str, _Keys] = {}

    def listed(self, who: Principal) -> list[PublisherInfo]:
        """The publishers ``who`` may see, with their recent use: a registry administrator, every one; anyone else,
        those that publish into an owner they manage (their own name, an organisation they are an admin of), within
        their token's limit (an admin token limited to some owners manages those owners). Which CI runs may publish
        where is the administrators' to read, not every member's."""
        managed = set(who.limited_to or ()) if who.is_admin else (
            {who.owner} | {org for org, role in who.roles.items() if role == "admin"})
        if who.limited_to is not None:
            managed &= who.limited_to
        visible = [p for p in self.publishers if who.is_registry_admin or managed & set(p.owners)]
        if not visible:
            return []
        with self.db.session() as s:
            return [PublisherInfo(**p.model_dump(), **self._use(s, p)) for p in visible]

    @staticmethod
    def _use(s: Session, publisher: TrustedPublisher) -> dict[str, Any]:
        minted = s.execute(select(func.count(), func.max(m.AccessToken.created_at)).where(
            m.AccessToken.owner == publisher.user,
            m.AccessToken.name.startswith(f"{MINTED_NAME_PREFIX} {publisher.name} ", autoescape=True))).one()
        return {"tokens_kept": minted[0], "last_exchange_at": minted[1]}

    async def exchange(self, id_token: str) -> tuple[int, str, TrustedPublisher, float]:
        """A registry token (id, secret) for ``id_token``, the publisher it matched and its lifetime in seconds; or
        InvalidInput (not a JWT), Unauthorized (not a valid token of a trusted issuer), Forbidden (valid, but no
        publisher matches its claims: the message says which it carries), Conflict (exchanged already),
        IssuerUnavailable (the issuer's keys could not be read). Nothing is recorded unless a token is minted."""
        if not self.publishers:
            raise Unauthorized("This registry trusts no identity tokens: its administrator declares trusted "
                               "publishers in VERA_TRUSTED_PUBLISHERS (docs/security.md, \"Trusted publishing\").")
        issuer, header = _unverified(id_token)
        if not any(p.issuer == issuer for p in self.publishers):  # never a request to an issuer nobody trusts
            # the trusted issuers are not listed to a caller nobody has authenticated yet (an internal GitLab's
            # address); administrators read them with `vera auth publishers`
            raise Unauthorized(f"Identity tokens of {issuer[:200]!r} are not trusted here: no trusted publisher names "
                               "that issuer (VERA_TRUSTED_PUBLISHERS). Ask the registry's administrators which "
                               "issuers it trusts (`vera auth publishers`).")
        key = await self._key(issuer, header.get("kid"))
        claims = _verified(id_token, issuer, header, key)
        publisher = next((p for p in self.publishers if p.matches(claims)), None)
        if publisher is None:
            raise Forbidden(_unmatched(issuer, claims, self.publishers))
        return await run_in_threadpool(self._mint, id_token, issuer, claims, publisher)

    def _mint(self, id_token: str, issuer: str, claims: dict[str, Any], publisher: TrustedPublisher
              ) -> tuple[int, str, TrustedPublisher, float]:
        from registry.services.tokens import create_token

        # once per identity token: its jti, or what its issuer signed (header and payload: a signature can be written
        # in more than one way, padded base64 or, with ECDSA, another valid signature of the same bytes)
        once = claims["jti"] if isinstance(claims.get("jti"), str) else id_token.rsplit(".", 1)[0]
        name = f"{MINTED_NAME_PREFIX} {publisher.name} {hashlib.sha256(f'{issuer} {once}'.encode()).hexdigest()[:24]}"
        lifetime = timedelta(minutes=publisher.minutes)
        detail = {"via": "trusted-publisher", "publisher": publisher.name, "issuer": issuer,
                  "subject": str(claims["sub"])[:300], "claims": {k: claims[k] for k in publisher.claims}}
        provenance = {"publisher": publisher.name, "issuer": issuer, "subject": clean_text(str(claims["sub"]))[:300],
                      "claims": recorded_claims(claims, publisher)}
        # looked up and minted under one lock: two exchanges of one identity token at once in this process mint one
        # token (on two replicas at the same instant both may: each is still a token of the publisher's, expiring)
        with self._minting:
            with self.db.session() as s:
                used = s.scalar(select(m.AccessToken.id).where(m.AccessToken.owner == publisher.user,
                                                               m.AccessToken.name == name))
            if used is not None:
                raise Conflict(f"This identity token was exchanged already (token {used}); each is exchanged once. "
                               "Ask your CI platform for a new one (a GitHub Actions job: run `vera auth exchange` "
                               "again).")
            token_id, secret = create_token(self.db, owner=publisher.user, scopes=list(publisher.scopes), name=name,
                                            expires_in=lifetime, limited_to=list(publisher.owners),
                                            actor=f"trusted-publisher:{publisher.name}", audit=detail,
                                            provenance=provenance)
        return token_id, secret, publisher, lifetime.total_seconds()

    async def _key(self, issuer: str, kid: Any) -> jwt.PyJWK:
        """The issuer's key ``kid`` (the only key when the token names none and the issuer has one): from the keys
        kept, else after a fetch (one at a time; none sooner than KEYS_REFETCH_S after the last)."""
        known = self._issuers.setdefault(issuer, _Keys())
        now = time.monotonic()
        if now - known.fetched >= KEYS_TTL_S or _pick(known.keys, kid) is None:
            if known.fetching is None and now - known.attempted >= KEYS_REFETCH_S:
                known.attempted = now
                known.fetching = asyncio.ensure_future(self._fetch(issuer, known))
            if known.fetching is not None:
                await asyncio.shield(known.fetching)  # one fetch, however many requests wait on it
        if time.monotonic() - known.fetched >= KEYS_STALE_S:  # nothing fetched, or long ago, and the issuer is down
            raise IssuerUnavailable(f"{issuer}'s signing keys cannot be read now ({known.error or 'not yet read'}). "
                                    "Retry shortly.")
        key = _pick(known.keys, kid)
        if key is None:
            raise Unauthorized(f"The identity token is signed with key {str(kid)[:100]!r}, which is not among "
                               f"{issuer}'s published keys ({sorted(known.keys)[:10]}).")
        return key

    async def _fetch(self, issuer: str, known: _Keys) -> None:
        """Fetch ``issuer``'s keys into ``known`` (its discovery document first, kept DISCOVERY_TTL_S); a failure is
        kept in ``known.error``, never raised (every waiting request reads the outcome from ``known``)."""
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=False) as http:
                if not known.jwks_uri or time.monotonic() - known.discovered > DISCOVERY_TTL_S:
                    document = await _document(http, f"{issuer.rstrip('/')}/.well-known/openid-configuration")
                    uri = document.get("jwks_uri")
                    if document.get("issuer") != issuer or not isinstance(uri, str) or not uri.startswith(
                            ("https://", "http://")):
                        raise IssuerUnavailable(f"{issuer}'s discovery document does not name itself as the issuer "
                                                "with a jwks_uri; check the publisher's issuer in "
                                                "VERA_TRUSTED_PUBLISHERS.")
                    known.jwks_uri, known.discovered = uri, time.monotonic()
                listed = (await _document(http, known.jwks_uri)).get("keys")
            keys = _signing_keys(listed)
            if not keys:
                raise IssuerUnavailable(f"{issuer} publishes no signing key this registry can use at "
                                        f"{known.jwks_uri}.")
            known.keys, known.fetched, known.error = keys, time.monotonic(), ""
        except IssuerUnavailable as exc:
            known.error = str(exc)
            log.warning("trusted publishing: %s", exc)
        except Exception as exc:  # noqa: BLE001 - kept for the waiting requests, which answer 502
            known.error = f"{type(exc).__name__}"
            log.exception("trusted publishing: fetching %s's keys failed", issuer)
        finally:
            known.fetching = None


def _pick(keys: Mapping[str, jwt.PyJWK], kid: Any) -> jwt.PyJWK | None:
    if kid is None and len(keys) == 1:
        return next(iter(keys.values()))
    return keys.get(kid) if isinstance(kid, str) else None


def _signing_keys(listed: Any) -> dict[str, jwt.PyJWK]:
    """A key set's signing keys by key id, of the types this registry verifies with; others are skipped."""
    keys: dict[str, jwt.PyJWK] = {}
    for entry in listed if isinstance(listed, list) else []:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        try:
            key = jwt.PyJWK.from_dict(entry)
        except (jwt.PyJWTError, TypeError, ValueError, KeyError):
            continue  # a key of a type this registry does not use: skipped
        if key.algorithm_name in ALGORITHMS or entry.get("alg") is None:
            keys[str(entry.get("kid", ""))] = key
    return keys


def _key_types(algorithm: str) -> tuple[type, ...]:
    """The key types ``algorithm`` verifies with (a token whose header names another algorithm than its key's is
    refused before PyJWT sees it: an EC algorithm with the issuer's RSA key raised a TypeError, a 500). cryptography
    is imported here, not with the settings that name this module (the GPU check's machine carries no more)."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

    if algorithm.startswith(("RS", "PS")):
        return (rsa.RSAPublicKey,)
    if algorithm.startswith("ES"):
        return (ec.EllipticCurvePublicKey,)
    return (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)
_CURVES = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}


def _verified(id_token: str, issuer: str, header: Mapping[str, Any], key: jwt.PyJWK) -> dict[str, Any]:
    """``id_token``'s claims, its signature checked with ``key`` and its issuer, times and required claims."""
    algorithm = header["alg"]
    public: Any = key.key
    if not isinstance(public, _key_types(algorithm)) or (
            algorithm in _CURVES and getattr(getattr(public, "curve", None), "name", None) != _CURVES[algorithm]):
        raise Unauthorized(f"The identity token names {algorithm}, which is not the algorithm of the issuer's key "
                           f"{str(header.get('kid'))[:100]!r} ({key.algorithm_name}).")
    try:
        claims: dict[str, Any] = jwt.decode(
            id_token, key.key, algorithms=[algorithm], issuer=issuer, leeway=LEEWAY_S,
            options={"require": list(REQUIRED), "verify_aud": False})  # the audience: per publisher (matches)
    except jwt.ExpiredSignatureError:
        raise Unauthorized("The identity token has expired: ask your CI platform for a new one just before "
                           "exchanging it.") from None
    except (jwt.PyJWTError, TypeError, ValueError) as exc:  # a bad signature, issuer, time
        raise Unauthorized(f"The identity token is not valid: {str(exc)[:300]}.") from None
    if not all(isinstance(claims[k], int | float) and not isinstance(claims[k], bool) for k in ("exp", "iat")):
        # PyJWT takes numeric texts ("1767225600"); a lifetime must be counted, so numbers only (NumericDate)
        raise Unauthorized("The identity token's exp and iat must be numbers of seconds (JSON numbers, as RFC 7519's "
                           "NumericDate), not texts.")
    audience = claims.get("aud")
    if not (isinstance(audience, str) or (isinstance(audience, list) and audience
                                          and all(isinstance(a, str) for a in audience))):
        # RFC 7519: one text or a list of texts (an object or a nested list was a 500 in the refusal's words)
        raise Unauthorized("The identity token's aud must be a text or a list of texts (RFC 7519).")
    lived = claims["exp"] - claims["iat"]
    if lived > MAX_ID_TOKEN_LIFE_S:  # each is exchanged once only while its minted token's row is kept (30 days)
        raise Unauthorized(f"The identity token lives {lived / 3600:,.1f} hours; at most "
                           f"{MAX_ID_TOKEN_LIFE_S // 3600} are taken. Ask your CI platform for a shorter-lived one.")
    return claims


def _unmatched(issuer: str, claims: Mapping[str, Any], publishers: list[TrustedPublisher]) -> str:
    """Why no publisher takes a verified identity token, in the words that fix it: the audience the issuer's
    publishers expect (no secret: it is in the workflow file), or the claims they look at, as the token carries them
    (never what they must be: which repositories may publish stays the administrator's)."""
    audience = claims.get("aud")
    sent = audience if isinstance(audience, list) else [audience]
    expected = sorted({p.audience for p in publishers if p.issuer == issuer})
    if not set(expected) & set(sent):
        return (f"No trusted publisher of {issuer[:200]} takes identity tokens for the audience "
                f"{json.dumps(sent)[:300]}; they expect {' or '.join(repr(a[:200]) for a in expected)}. Ask your CI "
                f"platform for a token with that audience (`vera auth exchange --audience {expected[0][:200]}` on "
                "GitHub Actions; GitLab CI: the job's id_tokens `aud:`).")
    shown = {k: claims[k] for k in sorted({c for p in publishers if p.issuer == issuer for c in p.claims})
             if isinstance(claims.get(k), str)}
    return (f"No trusted publisher matches this identity token's claims ({json.dumps(shown)[:1000]}): it was issued "
            "to a repository, branch or workflow that may not publish here. Publish from one a trusted publisher "
            "names, or ask an administrator to add a publisher for these claims to VERA_TRUSTED_PUBLISHERS.")


def recorded_claims(claims: Mapping[str, Any], publisher: TrustedPublisher) -> dict[str, str]:
    """What a minted token's provenance keeps of its identity token's claims, which every reader of the versions it
    publishes sees: those that say which run of which code it was (RUN_CLAIMS: GitHub's repository, ref, sha,
    workflow, run_id, actor...; GitLab's project_path, pipeline_id, user_login...), the publisher's own matched
    claims and those it lists in ``record``; never the others (GitLab's user_email, an issuer's email: an outsider
    read them on a public version), in name order, text values only, each cut to MAX_CLAIM_CHARS with control
    characters replaced (a terminal's escape sequences, a Markdown paragraph break)."""
    wanted = RUN_CLAIMS | set(publisher.claims) | set(publisher.record)
    return {k: clean_text(v)[:MAX_CLAIM_CHARS] for k, v in sorted(claims.items())
            if k in wanted and isinstance(v, str)}


#: Control characters (C0, DEL, C1): replaced in what provenance keeps.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def clean_text(value: str) -> str:
    """``value`` with each control character replaced by U+FFFD: shown as itself by a terminal or a Markdown page."""
    return _CONTROL.sub("\ufffd", value)


def _unverified(id_token: str) -> tuple[str, dict[str, Any]]:
    """The issuer and header of ``id_token``, read before its signature is checked (to pick the issuer's keys);
    its form and algorithm checked."""
    if not isinstance(id_token, str) or not 0 < len(id_token) <= MAX_ID_TOKEN_CHARS or id_token.count(".") != 2:
        raise InvalidInput(f"Expected an OpenID Connect identity token (a JWT: three base64url parts joined by '.', "
                           f"at most {MAX_ID_TOKEN_CHARS:,} characters), as your CI platform issues it.")
    try:
        header = jwt.get_unverified_header(id_token)
        issuer = jwt.decode(id_token, options={"verify_signature": False}).get("iss")
    except jwt.InvalidTokenError as exc:
        raise InvalidInput(f"The identity token cannot be read: {str(exc)[:300]}. Expected a JWT as your CI "
                           "platform issues it.") from None
    if header.get("alg") not in ALGORITHMS:
        raise Unauthorized(f"The identity token is signed with {str(header.get('alg'))[:40]!r}; only public-key "
                           f"signatures are taken ({', '.join(ALGORITHMS)}).")
    if not isinstance(issuer, str) or not issuer:
        raise Unauthorized("The identity token names no issuer ('iss').")
    return issuer, header


async def _document(http: httpx.AsyncClient, url: str) -> dict[str, Any]:
    """A JSON document of a trusted issuer (at most MAX_DOCUMENT_BYTES), or IssuerUnavailable."""
    try:
        async with http.stream("GET", url) as answer:
            if answer.status_code != 200:
                raise IssuerUnavailable(f"{url} answered {answer.status_code}; the trusted issuer's keys cannot be "
                                        "read now. Retry shortly.")
            body = b""
            async for chunk in answer.aiter_bytes():
                body += chunk
                if len(body) > MAX_DOCUMENT_BYTES:
                    raise IssuerUnavailable(f"{url} answered more than {MAX_DOCUMENT_BYTES:,} bytes.")
        document = parse_json(body)
    except httpx.HTTPError as exc:
        raise IssuerUnavailable(f"Cannot reach {url} ({type(exc).__name__}); the trusted issuer's keys cannot be read "
                                "now. Retry shortly.") from None
    except ValueError:
        raise IssuerUnavailable(f"{url} did not answer a JSON document.") from None
    if not isinstance(document, dict):
        raise IssuerUnavailable(f"{url} did not answer a JSON object.")
    return document

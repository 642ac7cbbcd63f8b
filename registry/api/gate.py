"""The gate every request passes before the app reads its body: a path or query value that holds a control character
(which no name of this registry holds) is answered 422 before any route (under /hf: the Hub's 404); on a read-only
registry (VERA_READ_ONLY) a request that would change anything is answered 503 read_only before anything else (no
token is looked up, no body read); in
token mode a request that carries a body and no valid token is answered 401 from its headers; a body larger than its
route allows (announced by Content-Length, or counted as it streams) is answered 413; a body that stalls is answered
408. Nothing of a refused body is spooled.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl, quote

from fastapi import HTTPException  # FastAPI re-raises its own class from body parsing (not Starlette's)
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.concurrency import run_in_threadpool

from registry.api.deps import PRINCIPAL, TOKEN_NEEDED, ApiOptions, bearer_token
from registry.api.problems import HUB_PREFIX, READ_ONLY_RETRY_AFTER_S, database_problem, is_hub_path, problem
from registry.domain.errors import RegistryError, SchemaOutOfDate, Unauthorized, status_of
from registry.services.registry import Registry
from registry.services.tokens import authenticate

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Routes that take file uploads: up to two files of the upload limit, plus the form's other fields.
UPLOAD_ROUTES = re.compile(r"^/api/v1/(adapters/[^/]+/[^/]+/versions|jobs)/?$")
#: Every other body (JSON of a few fields) is small.
SMALL_BODY = 1 << 20
FORM_OVERHEAD = 1 << 20

log = logging.getLogger("vera.api")

#: The requests with a body that a read-only registry still serves, and why each changes nothing there. Every other
#: method than GET, HEAD and OPTIONS, on any path, is refused (tests/registry/test_read_only.py checks every route).
READ_ONLY_SAFE: tuple[tuple[str, re.Pattern[str], str], ...] = (
    ("POST", re.compile(r"^/api/v1/compare/?$"), "compares versions: computes, stores nothing"),
    ("POST", re.compile(r"^/api/v1/adapters/lookup/?$"), "resolves references: reads, stores nothing"),
    ("POST", re.compile(r"^/api/v1/adapters/[^/]+/[^/]+/versions/[^/]+/verify/?$"),
     "verifies a version: a read-only registry answers the report without recording it"),
)


#: How long a look at the database's schema revision holds for the gate (writes refused once it moved on).
SCHEMA_RECHECK_S = 2.0
#: What a server still answers while its database's schema is behind its release (`vera db downgrade` under it):
#: whether it lives, why it is not ready, its metrics (the registry's totals left out where they cannot be read:
#: vera_totals_up 0) and its API's description with the files its page loads. Every other request reads or writes
#: columns that database lacks (reads were a 500 naming a ProgrammingError: an operator's walk, session 48).
ANSWERED_WHEN_BEHIND = re.compile(r"^/((health|ready|docs|redoc|openapi\.json|metrics)/?)?$|^/static-offline-docs/")

#: The one request with a body that needs no registry token, where tokens are required: trusted publishing's exchange,
#: whose body (an identity token, registry.services.trusted) is the credential; its body is small.
TOKENLESS = re.compile(r"^/api/v1/tokens/oidc/?$")
TOKENLESS_BODY = 64 << 10
#: The read whose question is its body (a lookup of up to 500 references): asked without a token where the registry
#: lets anonymous callers read (VERA_ANONYMOUS_READ), as a GET is; it answers only public versions to them.
ANONYMOUS_BODY_READ = re.compile(r"^/api/v1/adapters/lookup/?$")


#: Control characters: C0 (U+0000-U+001F), DEL and C1 (U+0080-U+009F). No owner, adapter, alias, tag or file name
#: holds one (registry.domain.schemas.check_name), nor does a version number, selector, id, sort or cursor.
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
#: A query string that may hold one, percent-encoded (C1 as UTF-8: %C2%80-%C2%9F) or raw: only such are parsed.
_QUERY_CONTROL = re.compile(rb"%(?:[01][0-9a-f]|7f|c2%[89][0-9a-f])|[\x00-\x1f\x7f-\x9f]", re.IGNORECASE)
#: The query parameters of free text, with the C0 control characters each may hold here. The services then check
#: them as they check stored text (registry.domain.schemas.check_text, whose message names the C1 character it
#: refuses): a search (``q``) and a base model's name are one line (no tab, no C1); a ``filter`` may span lines, tabs
#: and newlines included (a dashboard text area, a query pasted from a script), and holds no C1 character that starts
#: a terminal's control sequence. Every other value (names, numbers, cursors, sorts, times) holds no control
#: character at all.
FREE_TEXT = {"q": "", "base_model": "", "filter": "\t\n"}
_TEXT_CONTROL = re.compile("[\x00-\x1f\x7f]")
NUL_REFUSAL = ("A request's path and query may not hold a NUL byte (%00): no name or parameter of this registry "
               "contains one.")


def _shown(text: str) -> str:
    """``text`` for a message: at most 100 characters, control characters written as escapes."""
    return ascii(text[:100])[1:-1] if CONTROL.search(text) else text[:100]


def control_refusal(path: str, query_string: bytes) -> str | None:
    """Why a request's path (decoded) or query values hold a character no name or value of this registry holds: a
    NUL anywhere (PostgreSQL refuses it in text: a 500 there before), or another control character in a path segment
    or a query value beyond what FREE_TEXT allows; None when neither does. Checked before any route or query runs."""
    if "\x00" in path or b"\x00" in query_string or b"%00" in query_string.lower():
        return NUL_REFUSAL
    bad = CONTROL.search(path)
    if bad is not None:
        segment = next(s for s in path.split("/") if CONTROL.search(s))
        return (f"The path segment '{_shown(segment)}' holds the control character U+{ord(bad[0]):04X}: no owner, "
                "adapter, alias or file name of this registry holds one (names are 1-64 lowercase letters, digits, "
                "'.', '_' or '-'), so nothing is there. Check the name, and percent-encode the path as URLs do.")
    if not _QUERY_CONTROL.search(query_string):
        return None
    for key, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):  # as Starlette reads it
        allowed = FREE_TEXT.get(key)
        rule = CONTROL if allowed is None else _TEXT_CONTROL
        found = next((c for c in value if rule.match(c) and c not in (allowed or "")), None)
        if found is not None:
            takes = ("a name or value without control characters (U+0000-U+001F, U+007F-U+009F)" if allowed is None
                     else "text that may span lines (tabs and newlines) but holds no other control character"
                     if allowed else "one line of text without control characters (U+0000-U+001F, U+007F)")
            return (f"The query parameter {_shown(key)} ('{_shown(value)}') holds the control character "
                    f"U+{ord(found):04X}; {_shown(key)} takes {takes}. Remove it.")
    return None


def read_only_refusal(method: str, path: str, primary_url: str | None) -> str:
    """The detail of a read-only registry's refusal: what was refused, why, and where changes go."""
    where = (f"Send changes to the primary registry, {primary_url} (for `vera`: --registry {primary_url} or "
             "VERA_REGISTRY_URL)." if primary_url else "Ask its operator which registry takes changes.")
    return (f"This registry is read-only (VERA_READ_ONLY: a read replica, a maintenance window or a mirror): {method} "
            f"{path[:200]} would change it, so it was refused and nothing was changed. {where}")


def read_only_safe(method: str, path: str) -> bool:
    return any(method == m and pattern.match(path) for m, pattern, _ in READ_ONLY_SAFE)


def schema_refusal(exc: SchemaOutOfDate) -> str:
    """What a server whose database's schema moved says to callers, before any token is checked: the revisions and
    what to do, never the database's address, which ``exc`` names for its operator (logged; an anonymous caller
    read the SQLite file's path, or PostgreSQL's user, host and database: a re-check's finding, session 48)."""
    if exc.ahead:
        return (f"This server takes no changes: its database is at schema revision {exc.current}, which this release "
                "does not know (a newer release upgraded it). Reads go on; start the release that matches the "
                "database, and send this again there.")
    return (f"This server answers no requests until its database is upgraded: the database is at schema revision "
            f"{exc.current or 'none'}, and this release needs {exc.head}. Its operator runs `vera db upgrade` (with "
            "the server's VERA_DATABASE_URL); the server answers again within seconds, no restart needed. Nothing "
            "was read or changed.")


#: The headers a request gives at most once (lower case), with the form each takes.
ONE_EACH = ((b"authorization", "Authorization: Bearer <token>"), (b"x-hub-token", "X-Hub-Token: <a HuggingFace token>"))


def _repeated_header(headers: list[tuple[bytes, bytes]]) -> str | None:
    """What is wrong where a header of ONE_EACH is given more than once, else None. Which one counted differed: the
    gate's token check read the last Authorization, the routes the first (an outsider's finding, session 51), and
    one of two X-Hub-Token headers was used unsaid (session 54); RFC 9110 gives a request one of each."""
    for header, form in ONE_EACH:
        if (given := sum(name.lower() == header for name, _ in headers)) > 1:
            return f"The request gives {given} {header.decode().title()} headers; give one: '{form}'."
    return None


class RequestGate:
    """Pure ASGI middleware (it must act before FastAPI reads the body, which happens before any dependency)."""

    def __init__(self, app: App, *, registry: Registry, options: ApiOptions, body_timeout_s: float = 60.0) -> None:
        self.app, self.registry, self.options, self.body_timeout_s = app, registry, options, body_timeout_s
        # the schema's revision as last looked at (time.monotonic() of the look, the refusal it gave or None, and
        # whether the schema was behind this release)
        self._schema: tuple[float, str | None, bool] = (-SCHEMA_RECHECK_S, None, False)
        self._schema_lock = asyncio.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        control = control_refusal(scope["path"], scope["query_string"]) if scope["type"] == "http" else None
        if control is not None:
            # said whatever exists, before any route or query; under /hf as the Hub says a repo or file is not there
            # (404 with its X-Error-Code)
            hub = is_hub_path(scope["path"])
            await _send_problem(send, 404 if hub else 422, "not_found" if hub else "invalid_input", control,
                                CONTROL.sub(lambda c: quote(c[0]), scope["path"][:200]))
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if (repeated := _repeated_header(scope["headers"])) is not None:
            # a 400 of type bad_request, as Starlette's other 400s (invalid_input is the 422s' type: one status to a
            # type)
            await _send_problem(send, 400, "bad_request", repeated, scope["path"][:200])
            return
        changed, behind = await self._schema_changed()
        if behind and changed is not None and not ANSWERED_WHEN_BEHIND.match(scope["path"]):
            await _send_problem(send, 503, SchemaOutOfDate.code, changed, scope["path"],
                                retry_after=READ_ONLY_RETRY_AFTER_S)
            return
        if scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        if is_hub_path(scope["path"]):  # the Hub protocol is read-only: no body is ever read
            await _send_problem(send, 405, "method_not_allowed", f"{HUB_PREFIX}/ is a read-only mirror of the "
                                "registry in the HuggingFace Hub's protocol; publish with `vera publish` or "
                                "POST /api/v1/adapters/{owner}/{name}/versions.", scope["path"], allow="GET, HEAD")
            return
        if self.options.read_only and not read_only_safe(scope["method"], scope["path"]):
            await _send_problem(send, 503, "read_only", read_only_refusal(
                scope["method"], scope["path"], self.options.primary_url), scope["path"],
                retry_after=READ_ONLY_RETRY_AFTER_S)
            return
        if changed is not None and not read_only_safe(scope["method"], scope["path"]):
            await _send_problem(send, 503, SchemaOutOfDate.code, changed, scope["path"],
                                retry_after=READ_ONLY_RETRY_AFTER_S)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        tokenless = scope["method"] == "POST" and TOKENLESS.match(scope["path"]) is not None
        limit = (2 * self.options.max_upload_bytes + FORM_OVERHEAD) if UPLOAD_ROUTES.match(scope["path"]) \
            else TOKENLESS_BODY if tokenless else SMALL_BODY
        refusal = await self._refusal(scope, headers, limit, tokenless=tokenless)
        if refusal is not None:
            await _send(send, refusal)
            return
        # a body from a caller no token authenticated (anonymous lookups, trusted publishing's exchange, any caller
        # where tokens are not required: a header alone proves nothing) must be whole within the time its stalls are
        # bounded by: a byte every few seconds held a connection for as long as it trickled (an outsider's and a
        # reviewer's findings, session 36); uploads, whose time grows with their size, only stall-bounded
        unsigned = PRINCIPAL not in scope.get("state", {}) and not UPLOAD_ROUTES.match(scope["path"])
        await self.app(scope, limited(receive, limit, self.body_timeout_s,
                                      whole_s=self.body_timeout_s if unsigned else None), send)

    async def _schema_changed(self) -> tuple[str | None, bool]:
        """Why this server takes no changes since its database's schema moved on, or None, and whether the schema is
        behind this release (then it answers no reads either, but /health, /ready and its docs). Ahead: a newer
        release's `vera db upgrade` while it ran (its /ready said 503, but its writes went on, behind no load
        balancer; a team admin's walk, session 34); its reads go on (the columns it reads are there). Behind: `vera db
        downgrade` while it ran (an operator's walk, session 48). Looked at no more than every SCHEMA_RECHECK_S,
        whatever the traffic."""
        looked, refusal, behind = self._schema
        if time.monotonic() - looked < SCHEMA_RECHECK_S:
            return refusal, behind
        async with self._schema_lock:  # one look at a time: a burst of requests waits for it, then shares it (each
            # ran its own, 40 for 40 requests: a re-check's finding, session 48)
            looked, refusal, behind = self._schema
            if time.monotonic() - looked < SCHEMA_RECHECK_S:
                return refusal, behind
            before, refusal, behind = refusal, None, False
            try:
                await run_in_threadpool(self.registry.db.check_schema)
            except SchemaOutOfDate as exc:
                behind = not exc.ahead
                refusal = schema_refusal(exc)
                if refusal != before:  # the operator's line (where the database is), once a change
                    log.warning("%s", exc)
            except Exception:  # noqa: BLE001 - the database unreachable: the request itself says so, as before
                pass
            self._schema = (time.monotonic(), refusal, behind)
            return refusal, behind

    async def _refusal(self, scope: Scope, headers: dict[str, str], limit: int, *, tokenless: bool = False
                       ) -> JSONResponse | None:
        """Why the request is refused from its headers, or None; a token checked here is kept in the request's
        state (``principal``), so the route's Caller dependency does not look it up again. ``tokenless``: a route
        whose body is its credential (no Authorization is looked at)."""
        authorization = headers.get("authorization")
        anonymous_read = (authorization is None and self.options.anonymous_read and scope["method"] == "POST"
                          and ANONYMOUS_BODY_READ.match(scope["path"]) is not None)
        if self.options.require_tokens and not tokenless and not anonymous_read:
            secret = bearer_token(authorization)
            if secret is None:
                return problem(401, "unauthorized", TOKEN_NEEDED if authorization is None else
                               "Authorization must be 'Bearer <token>'.", scope["path"])
            try:
                scope.setdefault("state", {})[PRINCIPAL] = await run_in_threadpool(authenticate, self.registry.db,
                                                                                   secret)
            except Unauthorized as exc:
                return problem(401, exc.code, str(exc), scope["path"])
            except RegistryError as exc:
                return problem(status_of(exc), exc.code, str(exc), scope["path"])
            except DBAPIError as exc:  # the database away while the token was looked up: a 503 as in any route, not
                # the 500 every write got during an outage (an operator's walk, session 43)
                return database_problem(exc, scope["method"], scope["path"])
        length = headers.get("content-length")
        if length is not None and (not (length.isascii() and length.isdigit()) or int(length) > limit):
            return problem(413, "content_too_large", f"The body ({length} bytes) is over this route's limit of "
                           f"{limit:,} bytes (VERA_MAX_UPLOAD_BYTES for uploads).", scope["path"])
        return None


def limited(receive: Receive, limit: int, timeout_s: float, *,
            hint: str = " (VERA_MAX_UPLOAD_BYTES for uploads)", whole_s: float | None = None) -> Receive:
    """``receive`` that ends a body over ``limit`` bytes (413, its message ending with ``hint``), one that stalls
    for ``timeout_s`` (408), and, with ``whole_s``, one not whole within ``whole_s`` of its start (408: a byte
    every few seconds would hold the connection for ever)."""
    received, whole = 0, False
    started = time.monotonic()

    async def counted() -> Message:
        nonlocal received, whole
        if whole:  # the body is in: what follows is the server watching for a disconnect (during a stream), unbounded
            return await receive()
        wait = timeout_s if whole_s is None else min(timeout_s, max(0.0, started + whole_s - time.monotonic()))
        try:
            message = await asyncio.wait_for(receive(), timeout=wait)
        except TimeoutError:
            why = f"stalled for {timeout_s:.0f} s" if whole_s is None else f"was not whole within {whole_s:.0f} s"
            raise HTTPException(408, f"The body {why}; send it again.") from None
        received += len(message.get("body", b""))
        whole = message["type"] != "http.request" or not message.get("more_body", False)
        if received > limit:
            raise HTTPException(413, f"The body is over this route's limit of {limit:,} bytes{hint}.")
        return message

    return counted


class BodyLimit:
    """Pure ASGI middleware for an app without RequestGate (`vera serve-model`): a body over ``limit`` bytes is a
    413, from its Content-Length before any of it is read, else once it has streamed past the limit; a body not
    whole within ``timeout_s`` is a 408."""

    def __init__(self, app: App, *, limit: int, timeout_s: float = 60.0) -> None:
        self.app, self.limit, self.timeout_s = app, limit, timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"").decode("latin-1")
        if length and (not (length.isascii() and length.isdigit()) or int(length) > self.limit):
            await _send_problem(send, 413, "content_too_large", f"The body ({length} bytes) is over this "
                                f"server's limit of {self.limit:,} bytes.", scope["path"])
            return
        await self.app(scope, limited(receive, self.limit, self.timeout_s, hint="", whole_s=self.timeout_s), send)


async def _send_problem(send: Send, status: int, code: str, detail: str, path: str, allow: str = "",
                        retry_after: int = 0) -> None:
    response = problem(status, code, detail, path)
    if allow:
        response.headers["Allow"] = allow
    if retry_after:
        response.headers["Retry-After"] = str(retry_after)
    await _send(send, response)


async def _send(send: Send, response: JSONResponse) -> None:
    """Send ``response`` (a refusal before any route) and close the connection (its body may be unread)."""
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.items()]
    await send({"type": "http.response.start", "status": response.status_code,
                "headers": [*headers, (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": bytes(response.body)})

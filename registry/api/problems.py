"""Errors as RFC 9457 problem details, for every app of the project (the registry API and the model server): the
exception tree maps to statuses in one table (registry.domain.errors.HTTP_STATUS), the handlers live here."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy.exc import DatabaseError, DBAPIError, InterfaceError, InternalError, OperationalError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from registry.api.head import allowed_methods
from registry.domain.errors import (
    EntryNotFound,
    Forbidden,
    RateLimited,
    ReadOnly,
    RegistryError,
    RevisionNotFound,
    damaged_sqlite,
    status_of,
)
from registry.logs import PRINCIPAL, REQUEST_ID, first_line
from registry.store.database import refused_write
from vera_core.errors import JSONTextError, parse_json

log = logging.getLogger("vera.api")
#: The status a request whose caller hung up before its body was whole is counted and logged with (nginx's).
CLIENT_CLOSED = 499
#: What a 503 for a database that dropped the connection asks clients to wait (the client retries within 10 s).
DATABASE_RETRY_AFTER_S = 2
#: What a read-only registry's refusal asks clients to wait: long, since waiting does not make a replica take changes
#: (the registry's client reports a 503 whose Retry-After is over 10 s at once instead of retrying).
READ_ONLY_RETRY_AFTER_S = 3600

#: The most problems of one request's validation a refusal names (the count of the rest is said).
MAX_SAID = 20

TITLES = {400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method not allowed",
          408: "Request timeout", 409: "Conflict", 413: "Content Too Large", 416: "Range not satisfiable",
          422: "Invalid input", 429: "Too many requests", 500: "Internal error", 502: "Bad gateway",
          503: "Service unavailable"}


class Problem(BaseModel):
    """RFC 9457 problem details, the body of every error response."""

    type: str
    title: str
    status: int
    detail: str
    instance: str
    problems: list[str] | None = Field(default=None, description=(
        "An extension member, where one refusal answers several problems at once (a job's submission): each one's "
        "message, as `detail` numbers them; absent otherwise."))


#: (its schema by reference, as ``model`` registers it: inlined, it was a fifth of the OpenAPI document)
_PROBLEM = {"model": Problem,
            "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}
#: Documented on every route: the API answers these with problem details.
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {**_PROBLEM, "description": text} for code, text in (
        (401, "No valid token"), (403, "The token may not do this"), (404, "No such adapter, version or alias"),
        (409, "Conflicts with what is stored"), (413, "Upload too large"), (422, "Invalid input"),
        (429, "Too many costly requests from this caller; retry after Retry-After seconds"),
        (500, "Stored bytes failed their hash check"), (502, "The HuggingFace Hub failed or refused"),
        (503, "Database schema out of date or unavailable, or the server is busy generating projections; retry"))
}


#: Where the HuggingFace Hub's read protocol is spoken (registry/api/routes/hf.py): VeRA by default, LoRA by default.
HUB_PREFIX, LORA_HUB_PREFIX = "/hf", "/hf-lora"


def is_hub_path(path: str) -> bool:
    return any(path == prefix or path.startswith(prefix + "/") for prefix in (HUB_PREFIX, LORA_HUB_PREFIX))


def hub_error_headers(status: int, detail: str, exc: Exception | None) -> dict[str, str]:
    """The Hub's error headers, from which ``huggingface_hub`` picks its error class and message: a repo the caller
    may not read is a RepoNotFound, as the Hub answers for a private repo."""
    if isinstance(exc, EntryNotFound):
        code = "EntryNotFound"
    elif isinstance(exc, RevisionNotFound):
        code = "RevisionNotFound"
    elif status in (401, 403, 404):
        code = "RepoNotFound"
    else:
        code = ""
    # a header value: printable ASCII only (a name in the path may hold control characters, which HTTP forbids here)
    message = "".join(c if " " <= c <= "~" else "?" for c in " ".join(detail.split())[:1000])
    return {"X-Error-Message": message, **({"X-Error-Code": code} if code else {})}


def _message(error: Any) -> str:
    """A validation error's message; an unknown query parameter's says so (pydantic's "Extra inputs are not
    permitted" reads as if the value were wrong), and a body that is not JSON says where it stops being JSON
    (FastAPI's "JSON decode error" at "body.15" read as a field's: an outsider's, session 38)."""
    if error.get("type") == "extra_forbidden" and error.get("loc", ("",))[0] == "query":
        return "not a query parameter this route takes (the API reference lists them: /docs); leave it out"
    if error.get("type") == "json_invalid":
        at, why = error.get("loc", ("body", "?"))[-1], (error.get("ctx") or {}).get("error", "")
        return f"not JSON at character {at}{f' ({why})' if why else ''}; send a whole JSON document"
    return str(error.get("msg", ""))


def _where(error: Any) -> str:
    """The part of the request a validation error is about: ``body.training.lr``; a body that is not JSON is the
    body's (its character is said in the message)."""
    loc = error.get("loc", ())
    return "body" if error.get("type") == "json_invalid" else ".".join(str(p) for p in loc)


def problem(status: int, code: str, detail: str, instance: str, exc: Exception | None = None, *,
            problems: list[str] | None = None) -> JSONResponse:
    """The problem document (with ``problems``, its extension member listing each of several); under HUB_PREFIX
    also the Hub's error headers, and the message as ``error``."""
    body: dict[str, object] = {"type": f"/problems/{code}", "title": TITLES.get(status, "Error"), "status": status,
                               "detail": detail, "instance": instance, **({"problems": problems} if problems else {})}
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    if is_hub_path(instance):
        body["error"] = detail
        headers.update(hub_error_headers(status, detail, exc))
    return JSONResponse(body, status_code=status, media_type="application/problem+json", headers=headers)


def install_problem_handlers(app: FastAPI, status: Callable[[RegistryError], int] = status_of) -> None:
    """Registry errors, request validation errors and anything unexpected become problem details (no traceback
    reaches a caller). ``status`` maps a registry error to its HTTP status."""

    @app.exception_handler(RegistryError)
    async def registry_error(request: Request, exc: RegistryError) -> JSONResponse:
        if type(exc) is Forbidden:  # (not a quota's refusal, a Forbidden too: no question of access)
            await _record_denial(request, exc)
        return _registry_problem(request, exc, status(exc))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # each once: a path parameter that a dependency reads too is checked twice (a webhook's id said its error
        # twice: an outsider's finding, session 43)
        said = list(dict.fromkeys(f"{_where(e)}: {_message(e)}" for e in exc.errors()))
        # at most MAX_SAID of them: a body of 70,000 unknown keys was answered with a 3 MB list (a re-check, session 44)
        details = "; ".join(said[:MAX_SAID]) + (f"; and {len(said) - MAX_SAID:,} more like them" if len(said) >
                                                MAX_SAID else "")
        sent = request.headers.get("content-type", "")
        if any(tuple(e["loc"]) == ("body",) for e in exc.errors()) and "json" not in sent:
            # e.g. `curl -d '{...}'`, which sends application/x-www-form-urlencoded: the JSON was never read
            details += (f" (the body was sent as {sent.split(';')[0] or 'no content type'}; send JSON with the header "
                        "'Content-Type: application/json')")
        return problem(422, "invalid_input", details, request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """400, 404 (no route), 405, 408, 413 ... from FastAPI and Starlette: problem details too."""
        return await _http_problem(request, exc)

    @app.exception_handler(UnicodeEncodeError)
    async def not_unicode(request: Request, exc: UnicodeEncodeError) -> JSONResponse:
        """Text the checks missed that is not Unicode (a lone UTF-16 surrogate, as JSON's "\\ud800" writes one),
        refused where it is written (SQLite, PostgreSQL's driver): nothing was stored, so a 422, not a 500. Any
        other encoding error is the server's (a 500, logged)."""
        bad = exc.object[exc.start:exc.end]
        if not bad or not all(0xD800 <= ord(c) <= 0xDFFF for c in bad):
            log.exception(f"unexpected error during {request.method} {request.url.path}", exc_info=exc)
            return _unexpected(exc, request.url.path)
        return problem(422, "invalid_input", "The request holds text that is not valid Unicode (half of a UTF-16 "
                       f"surrogate pair, {bad!r}); send valid Unicode.", request.url.path)

    _install_disconnect_handler(app)
    _install_database_handlers(app)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        return _unexpected(exc, request.url.path)


async def _http_problem(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """The problem document of an error FastAPI or Starlette raised; a Hub-shaped path outside /hf says where the
    Hub protocol is, in the Hub's error headers too (huggingface_hub reads them)."""
    if exc.status_code == 404 and (hint := _hub_path_hint(request)) is not None:
        response = problem(404, "not_found", hint, request.url.path)
        response.headers.update(hub_error_headers(404, hint, None))
        return response
    response = problem(exc.status_code, TITLES.get(exc.status_code, "error").lower().replace(" ", "_"),
                       await _unreadable_json_body(request, exc) or str(exc.detail), request.url.path)
    response.headers.update(exc.headers or {})
    if exc.status_code == 405 and (allowed := allowed_methods(request.app.router, request.scope)) is not None:
        response.headers["Allow"] = allowed  # every method the path takes (Starlette's: the first route's)
    return response


#: Paths huggingface_hub asks of an endpoint (a model's info, a file): asked of the registry's root, HF_ENDPOINT left
#: out /hf.
_HUB_SHAPED = re.compile(r"^/(api/models/[^/]+/[^/]+(/(revision|tree)/.+)?|[^/]+/[^/]+/resolve/[^/]+/.+)$")


def _hub_path_hint(request: Request) -> str | None:
    """For a Hub-shaped path outside /hf that no route takes: where the Hub protocol is (huggingface_hub said only
    "check your connection" when HF_ENDPOINT lacked /hf, a PEFT user's walk, session 47), else None."""
    path = request.scope.get("path", "")
    if is_hub_path(path) or not _HUB_SHAPED.match(path) or getattr(request.app.state, "registry", None) is None:
        return None  # (a model server serves no /hf)
    # (neither the path nor the Host header said back: a cache that ignores Host would keep another's URL)
    return (f"This path is not a route of this registry's API: the HuggingFace Hub protocol is served under "
            f"{HUB_PREFIX}. Set HF_ENDPOINT to this registry's URL followed by {HUB_PREFIX} "
            f"(HF_ENDPOINT=http://HOST:PORT{HUB_PREFIX}), or endpoint= in huggingface_hub.")


async def _unreadable_json_body(request: Request, exc: StarletteHTTPException) -> str | None:
    """What is wrong with a JSON body FastAPI could not read, which it answers only with "There was an error parsing
    the body" (400): an integer of over 4,300 digits, or nesting deeper than the parser goes. The body is the one
    FastAPI already read (Starlette keeps it for the request); None for any other error, a body that is not JSON or
    one that reads after all."""
    if exc.status_code != 400 or not isinstance(exc.__cause__, ValueError | RecursionError) \
            or "json" not in request.headers.get("content-type", ""):
        return None
    try:
        parse_json(await request.body())
    except JSONTextError as exc:
        return f"The JSON body {exc}; send JSON a few levels deep, its numbers of a float's size."
    except Exception:  # noqa: BLE001 - the body cannot be read again: FastAPI's own message stands
        return None
    return None


def _registry_problem(request: Request, exc: RegistryError, status: int) -> JSONResponse:
    response = problem(status, exc.code, str(exc), request.url.path, exc, problems=exc.problems)
    if isinstance(exc, RateLimited):
        response.headers["Retry-After"] = str(exc.retry_after)
    elif isinstance(exc, ReadOnly):
        response.headers["Retry-After"] = str(READ_ONLY_RETRY_AFTER_S)
    return response


async def _record_denial(request: Request, exc: Forbidden) -> None:
    """An access-denied audit event for a refusal of a caller with a token (registry.services.events.DeniedAccess),
    where the app keeps them (the registry's API; a model server has no audit log)."""
    denials = getattr(request.app.state, "denials", None)
    who = getattr(request.state, PRINCIPAL, None)
    if denials is None or who is None:
        return
    route = getattr(request.scope.get("route"), "path", None) or "unmatched"
    await run_in_threadpool(denials.record, who, method=request.method, route=route, path=request.url.path,
                            reason=str(exc), request_id=REQUEST_ID.get())


def _unexpected(exc: Exception, path: str) -> JSONResponse:
    return problem(500, "internal_error", f"Unexpected {type(exc).__name__}; see the server log.", path)


def _install_disconnect_handler(app: FastAPI) -> None:
    @app.exception_handler(ClientDisconnect)
    async def gone(request: Request, exc: ClientDisconnect) -> Response:
        """A caller that hung up before its body was whole: nothing was changed and nobody reads an answer. Counted
        and logged as 499 (nginx's "client closed request"), one line: it was a 500 with a traceback, which any
        caller, a token or none, could add to the log and the 5xx count at will (an outsider's finding, session
        54)."""
        log.info(f"{request.method} {request.url.path}: the caller closed the connection before its body was whole")
        return Response(status_code=CLIENT_CLOSED)


def _install_database_handlers(app: FastAPI) -> None:
    """A database that is away, or that refuses writes, answers 503 (problem details), never a 500."""

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    @app.exception_handler(InternalError)
    @app.exception_handler(DatabaseError)
    async def database_trouble(request: Request, exc: Exception) -> JSONResponse:
        return database_problem(exc, request.method, request.url.path)


def database_problem(exc: Exception, method: str, path: str) -> JSONResponse:
    """The answer to a database error during ``method`` ``path`` (a route's, or the token lookup before any route:
    RequestGate), logged; its text, which may name the database's address or file, goes to the log only.

    - A write the database refused because it is read-only: 503 read_only. A PostgreSQL hot standby or a database
      with default_transaction_read_only; a SQLite file the process may not write (permissions, an immutable file,
      a read-only mount), which was told to "send changes to the primary" that a single registry has not (an
      operator's walk, session 43).
    - The database dropped or refused the connection (restarted, failed over, overloaded; OperationalError,
      InterfaceError): 503 database_unavailable with Retry-After, which clients retry, not a 500.
    - A SQLite file that is damaged (SQLITE_CORRUPT, SQLITE_NOTADB): 500 database_damaged, saying so (it was an
      "Unexpected DatabaseError").
    - Anything else: the 500 of any unexpected error."""
    if refused_write(exc):
        log.warning(f"the database refused a write during {method} {path} (it is read-only): {first_line(exc)}")
        said = ("its SQLite file, or the folder it is in, is read-only to the registry's process (file permissions, "
                "an immutable file or a read-only mount): its operator must make it writable" if _sqlite_error(exc)
                else "a read-only database or a hot standby: send changes to the primary registry")
        response = problem(503, ReadOnly.code, f"The registry's database takes no writes ({said}); nothing was "
                           "changed. Reads go on.", path)
        response.headers["Retry-After"] = str(READ_ONLY_RETRY_AFTER_S)
        return response
    if damaged_sqlite(exc):
        log.error(f"the database is damaged ({method} {path}): {first_line(exc)}; restore it from a backup "
                  "(`vera fsck` checks it; docs/guide.md, \"Back up and upgrade the registry\")")
        return problem(500, "database_damaged", "The registry's database file is damaged (SQLite finds it "
                       "malformed); nothing was changed. Its operator must restore it from a backup.", path)
    if isinstance(exc, OperationalError | InterfaceError):
        log.warning(f"database unavailable during {method} {path}: {type(exc).__name__}: {first_line(exc)}")
        response = problem(503, "database_unavailable", "The registry's database is unavailable for the moment; "
                           "nothing was changed. Retry in a few seconds.", path)
        response.headers["Retry-After"] = str(DATABASE_RETRY_AFTER_S)
        return response
    log.error(f"unexpected database error during {method} {path}", exc_info=exc)
    return _unexpected(exc, path)


def _sqlite_error(exc: Exception) -> str | None:
    """SQLite's name for the error under ``exc`` (SQLITE_READONLY, SQLITE_CORRUPT, ...); None for another database."""
    return getattr(exc.orig, "sqlite_errorname", None) if isinstance(exc, DBAPIError) else None

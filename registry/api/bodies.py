"""Requests read as their sender meant them: a JSON body that gives a key twice is refused, where a JSON parser keeps
one of the values unsaid, and so is a query parameter the route does not take or one given twice, and a form field
(publish, job submission) the route does not take or one given twice (the registry's routes use CheckedRoute)."""

from __future__ import annotations

import email.message
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine
from typing import Any, get_args, get_origin

from fastapi import Request, Response, params
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import get_flat_params
from fastapi.routing import APIRoute
from starlette import formparsers
from starlette.exceptions import HTTPException

from registry.domain.errors import InvalidInput
from registry.domain.schemas import check_keys_once

#: How the refusal of a form's text that is not in its charset (UTF-8 unless the form says) begins.
NOT_DECODABLE = "A form part holds text that is not valid "


def _strict_decode(src: bytes | bytearray, codec: str) -> str:
    """A form part's value, field name or file name in the form's charset (UTF-8 unless its Content-Type names
    another), or a refusal: Starlette read bytes that are not as Latin-1, so that invalid UTF-8 (`\\xff\\xfe`, a lone
    surrogate's bytes) was stored as other text, and a base model named "ÿþ" was made (an outsider's finding,
    session 54). The parser turns the refusal into a 400, form_checked into a 422 as any text's."""
    try:
        return bytes(src).decode(codec or "utf-8")
    except LookupError:  # a charset Python does not know: Starlette's own answer (it reads such a form as Latin-1)
        return bytes(src).decode("latin-1")
    except UnicodeDecodeError as exc:
        raise formparsers.MultiPartException(
            f"{NOT_DECODABLE}{codec or 'utf-8'} (byte {bytes(src)[exc.start:exc.start + 1]!r} at offset "
            f"{exc.start:,}: {exc.reason}); send text as UTF-8.") from None


if hasattr(formparsers, "_user_safe_decode"):  # (tests/registry/test_security.py fails if a Starlette renames it)
    formparsers._user_safe_decode = _strict_decode  # noqa: SLF001 - the one decoding of every part's text


def is_json(content_type: str | None) -> bool:
    """Whether FastAPI reads a body of this content type as JSON (application/json, application/*+json)."""
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


class CheckedRoute(APIRoute):
    """A route whose JSON body may give each key of each object once, at any depth: ``{"version": 1, "version": 2}``
    is a 422 saying which key, as a body that is not JSON is, before anything else is read or decided. Before, each
    body kept the last value (an evaluation's doubled metric was recorded with its second value, an outsider's finding
    of session 43; only that route checked). The body is the one FastAPI reads next (Starlette keeps it).

    Its query string, likewise, names only the parameters the route takes, each once unless it takes a list: a
    parameter it does not know, or ``limit=2&limit=3`` (one of them read, unsaid), is a 422 naming it and what the
    route takes (session 45's finding: `/orgs` and `/invitations` ignored what they did not know, and every route
    kept the last of a repeated value; the file routes refused unknown ones already).

    A route that takes a form (a publish, a job submission) first runs its endpoint's ``before_body`` check (who may
    call it, from the path and the token alone), then reads the form with no more parts than it takes, and refuses a
    field it does not take or one given twice (form_checked). Before 2026-12-07 the form was read whole first, up to
    1,000 parts of up to 1 MiB each held in memory, from a caller then refused a 403 (an outsider held 200 MiB a
    request that way), and a misspelt field was ignored (``visiblity=private`` published a public adapter)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        names, lists = query_parameters(self)
        fields, files = form_parameters(self)
        before: BeforeBody | None = getattr(self.endpoint, BEFORE_BODY, None)
        where = f"{'/'.join(sorted(self.methods or ()))} {self.path}"

        async def checked(request: Request) -> Response:
            check_query(request, names, lists, where)
            if before is not None:
                await before(request)
            if fields or files:
                await form_checked(request, fields, files, where)
            elif is_json(request.headers.get("content-type")) and (body := await request.body()):
                check_keys_once(body, "The request body")
            return await handler(request)

        return checked


#: A check of a request run before its body is read (it may read the path, the query and the headers).
BeforeBody = Callable[[Request], Coroutine[Any, Any, None]]
BEFORE_BODY = "before_body"


def before_body(check: BeforeBody) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark an endpoint (under its route decorator) so that CheckedRoute runs ``check`` before its body is read: who
    may call it, so that a caller refused is refused before it has sent a body of hundreds of MB."""
    def mark(endpoint: Callable[..., Any]) -> Callable[..., Any]:
        setattr(endpoint, BEFORE_BODY, check)
        return endpoint
    return mark


def form_parameters(route: APIRoute) -> tuple[frozenset[str], frozenset[str]]:
    """The form fields and the files ``route`` takes (by the names a request gives); both empty if it takes no form."""
    fields, files = set(), set()
    for field in _body_params(route.dependant):
        if isinstance(field.field_info, params.File):  # (a File is a Form: asked first)
            files.add(field.alias)
        elif isinstance(field.field_info, params.Form):
            fields.add(field.alias)
    return frozenset(fields), frozenset(files)


def _body_params(dependant: Dependant) -> list[Any]:
    """The body parameters of ``dependant`` and of its dependencies (FastAPI's own flattening is private)."""
    return [*dependant.body_params, *(p for d in dependant.dependencies for p in _body_params(d))]


async def form_checked(request: Request, fields: frozenset[str], files: frozenset[str], where: str) -> None:
    """Read the request's form with at most one part per field and file the route takes (a larger one refused as
    soon as its part count passes: no part of it is kept), each given once and each one the route takes; else
    InvalidInput naming what it takes. FastAPI then reads the same form (Starlette keeps it on the request)."""
    takes = (f"the form fields {', '.join(sorted(fields))}"
             + (f" and the file{'s' if len(files) > 1 else ''} {', '.join(sorted(files))}" if files else ""))
    closing = _closing_watched(request)
    try:
        form = await request.form(max_fields=len(fields), max_files=len(files))
    except HTTPException as exc:  # Starlette's "Too many fields. Maximum number of fields is 12." (or files)
        if exc.status_code == 400 and str(exc.detail).startswith("Too many"):
            raise InvalidInput(f"{exc.detail} {where} takes {takes}, each once (a file: a part with a "
                               "filename).") from exc
        if exc.status_code == 400 and str(exc.detail).startswith(NOT_DECODABLE):
            raise InvalidInput(str(exc.detail)) from None
        raise
    if closing is not None and not closing.seen:
        await form.close()
        raise InvalidInput(f"The multipart body ended without its closing boundary ('--{closing.boundary}--'): it was "
                           f"cut short, so its last part is not there (or it was empty). Send the whole form: {where} "
                           f"takes {takes}.")
    given = Counter(key for key, _ in form.multi_items())
    unknown = sorted(key for key in given if key not in fields | files)
    twice = sorted(key for key, n in given.items() if n > 1)
    if unknown or twice:
        await form.close()
    if unknown:
        raise _not_taken(where, "form field", unknown, f"it takes {takes}",
                         "or correct their names" if len(unknown) > 1 else "or correct its name")
    if twice:
        raise InvalidInput(f"The form gives {', '.join(repr(n[:100]) for n in twice[:10])} more than once; give each "
                           "field once" + (" (several tags: comma-separated in one tags field)." if "tags" in twice
                                           else "."))


class _Closing:
    """Whether a multipart body's bytes held its close-delimiter, ``--BOUNDARY--`` at the body's start or after a
    CRLF, as the parser splits parts (RFC 2046; a part's text may hold ``--BOUNDARY--`` elsewhere: an outsider's
    finding, session 56): the parser drops the part a body cut short ends in without a word, and the route then said
    that field was missing ("adapter_model: Field required" for an upload cut short in its file, which was sent)."""

    def __init__(self, boundary: str) -> None:
        self.boundary, self.seen = boundary, False
        self._marker = b"\r\n--" + boundary.encode("latin-1") + b"--"

    async def watch(self, chunks: AsyncIterator[bytes]) -> AsyncGenerator[bytes, None]:
        tail = b"\r\n"  # (the body's start counts as a line's: an empty form is "--BOUNDARY--" alone)
        async for chunk in chunks:
            if not self.seen:  # (the marker may straddle chunks: the last len(marker) - 1 bytes are kept)
                window = tail + chunk
                self.seen = self._marker in window
                tail = window[-(len(self._marker) - 1):]
            yield chunk


def _closing_watched(request: Request) -> _Closing | None:
    """Have the form's parser read ``request``'s body through a _Closing when it is multipart with a boundary (None
    otherwise: a urlencoded form has none, and a multipart one without a boundary is refused by the parser). An
    empty boundary, which the parser takes though RFC 2046 gives it 1 to 70 characters, is refused here."""
    # Starlette's own reading of the header (python-multipart's, under either of its module names): the boundary the
    # parser splits the body at
    kind, options = formparsers.parse_options_header(request.headers.get("content-type"))  # type: ignore[attr-defined]
    if kind != b"multipart/form-data" or b"boundary" not in options:
        return None
    if not options[b"boundary"]:  # (a body cut short was taken whole under one: an outsider's finding, session 56)
        raise InvalidInput("The multipart Content-Type gives an empty boundary; a boundary has 1 to 70 characters "
                           "(RFC 2046). Let the client library write the form and its header.")
    closing, stream = _Closing(options[b"boundary"].decode("latin-1")), request.stream
    request.stream = lambda: closing.watch(stream())  # type: ignore[method-assign]  # what Request.form reads
    return closing


def query_parameters(route: APIRoute) -> tuple[frozenset[str], frozenset[str]]:
    """The query parameters ``route`` takes (by the names a request gives), and those of them that take a list."""
    names, lists = set(), set()
    for field in get_flat_params(route.dependant):
        if isinstance(field.field_info, params.Path | params.Header | params.Cookie):
            continue
        names.add(field.alias)
        if list in (get_origin(field.field_info.annotation), *map(get_origin, get_args(field.field_info.annotation))):
            lists.add(field.alias)
    return frozenset(names), frozenset(lists)


def check_query(request: Request, names: frozenset[str], lists: frozenset[str], where: str) -> None:
    """InvalidInput for a query parameter the route does not take, or one it takes once given more than once."""
    given = Counter(key for key, _ in request.query_params.multi_items())
    if unknown := sorted(key for key in given if key not in names):
        raise _not_taken(where, "query parameter", unknown,
                         f"it takes {', '.join(sorted(names))}" if names else "it takes none")
    if twice := sorted(key for key, n in given.items() if n > 1 and key not in lists):
        raise InvalidInput(f"The query gives {', '.join(repr(k) for k in twice)} more than once; {where} reads one "
                           "value of each: give each once.")


def _not_taken(where: str, kind: str, unknown: list[str], takes: str, fix: str = "") -> InvalidInput:
    """The refusal of ``unknown`` names (form fields, query parameters) that the route ``where`` does not take."""
    many = len(unknown) > 1
    return InvalidInput(f"{where} does not take the {kind}{'s' if many else ''} "
                        f"{', '.join(repr(k[:100]) for k in unknown[:10])}; {takes}. Leave {'them' if many else 'it'} "
                        f"out{' ' + fix if fix else ''} (a misspelt one would have been ignored).")

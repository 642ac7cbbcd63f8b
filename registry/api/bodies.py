"""Requests read as their sender meant them: a JSON body that gives a key twice is refused, where a JSON parser keeps
one of the values unsaid, and so is a query parameter the route does not take or one given twice (the registry's
routes use CheckedRoute)."""

from __future__ import annotations

import email.message
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any, get_args, get_origin

from fastapi import Request, Response, params
from fastapi.dependencies.utils import get_flat_params
from fastapi.routing import APIRoute

from registry.domain.errors import InvalidInput
from registry.domain.schemas import check_keys_once


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
    kept the last of a repeated value; the file routes refused unknown ones already)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        names, lists = query_parameters(self)
        where = f"{'/'.join(sorted(self.methods or ()))} {self.path}"

        async def checked(request: Request) -> Response:
            check_query(request, names, lists, where)
            if is_json(request.headers.get("content-type")) and (body := await request.body()):
                check_keys_once(body, "The request body")
            return await handler(request)

        return checked


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
        takes = f"it takes {', '.join(sorted(names))}" if names else "it takes none"
        raise InvalidInput(f"{where} does not take the query parameter{'s' if len(unknown) > 1 else ''} "
                           f"{', '.join(repr(k[:100]) for k in unknown[:10])}; {takes}. Leave "
                           f"{'them' if len(unknown) > 1 else 'it'} out (a misspelt one would have been ignored).")
    if twice := sorted(key for key, n in given.items() if n > 1 and key not in lists):
        raise InvalidInput(f"The query gives {', '.join(repr(k) for k in twice)} more than once; {where} reads one "
                           "value of each: give each once.")

"""JSON request bodies read as their sender meant them: one that gives a key twice is refused, where a JSON parser
keeps one of the values unsaid (the registry's routes use CheckedRoute)."""

from __future__ import annotations

import email.message
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

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
    of session 43; only that route checked). The body is the one FastAPI reads next (Starlette keeps it)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            if is_json(request.headers.get("content-type")) and (body := await request.body()):
                check_keys_once(body, "The request body")
            return await handler(request)

        return checked

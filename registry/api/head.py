"""HEAD on every GET route: the headers a GET would answer, without its body (RFC 9110 9.3.2).

FastAPI's routes answer only the methods they declare, so a HEAD of ``/health``, ``/api/v1/adapters`` or a version
was a 405 (session 44's finding), while monitors, link checkers and ``curl -I`` ask HEAD. The routes that declare HEAD
themselves (the file routes and ``/hf``, which answer it without reading the bytes) keep theirs; any other path a GET
route takes is served as that GET, its status and headers (Content-Length, ETag, Content-Type) kept and its body
dropped. Declaring HEAD on each route instead would list every GET twice in the OpenAPI document."""

from __future__ import annotations

from starlette.routing import Match, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HeadAsGet:
    """ASGI middleware, innermost (routing sees the request after it): a HEAD that no route takes as HEAD but a
    GET route takes is passed on as that GET, and what it sends is kept to the response's start."""

    def __init__(self, app: ASGIApp, router: Router) -> None:
        self.app, self.router = app, router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD" or _takes(self.router, scope, "HEAD") \
                or not _takes(self.router, scope, "GET"):
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":  # the GET's body: dropped, its end said once
                if not message.get("more_body", False):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            await send(message)

        as_get = {**scope, "method": "GET"}
        try:
            await self.app(as_get, receive, headers_only)
        finally:  # the route the router matched, for the metrics and the access log outside (they counted
            scope.update({k: as_get[k] for k in ROUTED if k in as_get})  # "unmatched": an outsider's finding)


def allowed_methods(router: Router, scope: Scope) -> str | None:
    """A 405's ``Allow``: every method some route takes at ``scope``'s path, HEAD wherever GET is (Starlette names
    the first matching route's methods only: PUT of an adapter said "GET" where PATCH and DELETE are taken too);
    None when no route takes any."""
    methods = [method for method in METHODS if _takes(router, scope, method)]
    if "GET" in methods:
        methods.insert(methods.index("GET") + 1, "HEAD")
    return ", ".join(methods) or None


def _takes(router: Router, scope: Scope, method: str) -> bool:
    """Whether a route takes ``method`` at ``scope``'s path, asked of the routes' own matching (FastAPI nests the
    routes of included routers, so they are not listed one by one)."""
    return any(route.matches({**scope, "method": method})[0] is Match.FULL for route in router.routes)


#: The methods a 405's Allow may name (HEAD is added wherever GET is).
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
#: What the router writes into a request's scope as it routes it.
ROUTED = ("route", "endpoint", "path_params")

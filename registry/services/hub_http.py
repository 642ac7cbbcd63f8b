"""The HTTP client ``huggingface_hub`` uses in this process: a timeout on every request (its default client has none)
and, inside ``capped_downloads``, a bound on what its downloads read (registry.services.hub's pulls, the base
configs of registry.services.base_configs)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import httpx2
from huggingface_hub import set_client_factory
from huggingface_hub.utils._http import default_client_factory

from registry.domain.errors import ContentTooLarge, HubError


def use_timeout(timeout_s: float) -> None:
    """Give every ``huggingface_hub`` request of this process a timeout (its default client has none), ask for bodies
    as they are stored (no compression: ``capped_downloads`` counts what is written), and add the bound of
    ``capped_downloads``. Again with the same timeout: nothing (a new factory closes the shared client)."""
    if _installed and _installed[-1] == timeout_s:
        return

    def factory() -> httpx2.Client:
        client: httpx2.Client = default_client_factory()
        client.timeout = httpx2.Timeout(timeout_s)
        client.headers["Accept-Encoding"] = "identity"
        client.event_hooks["response"] = [*client.event_hooks.get("response", []), _cap_body]
        return client

    set_client_factory(factory)
    _installed.append(timeout_s)


_installed: list[float] = []


@dataclass
class Budget:
    """What the downloads of one ``capped_downloads`` may still read (``left`` of ``limit`` bytes), what they are for
    and the limit's name (for the refusal), and the file being downloaded (its name in the repo: the URL's last part
    may be a CDN's hash)."""

    left: int
    limit: int
    what: str
    setting: str
    file: str = "file"


_budget: ContextVar[Budget | None] = ContextVar("vera_hub_download_budget", default=None)


@contextmanager
def capped_downloads(limit: int, what: str, setting: str = "VERA_MAX_UPLOAD_BYTES", *,
                     timeout_s: float = 60.0) -> Iterator[Budget]:
    """Every body ``huggingface_hub`` downloads in this context (this thread) counts against ``limit`` bytes in
    all: one whose metadata or headers say it is larger is refused before it is read, and one that sends more is cut
    off there (ContentTooLarge, naming ``what``, the file and ``setting``, the limit's name): the Hub's file sizes,
    which the caller checks first, are only what the Hub declares. A compressed body (not asked for) is refused
    (HubError), and files are downloaded over HTTP, never through Xet's client, which this bound would not see.
    Set ``file`` on the budget yielded to the name of each file before its download."""
    if not _installed:
        use_timeout(timeout_s)
    budget = Budget(limit, limit, what, setting)
    token = _budget.set(budget)
    try:
        yield budget
    finally:
        _budget.reset(token)


def _cap_body(response: httpx2.Response) -> None:
    budget = _budget.get()
    if budget is None or response.has_redirect_location:  # a redirect's own body is not the file's
        return
    if response.request.method == "HEAD":  # the file's metadata: its size, and Xet's headers (dropped: HTTP only)
        for header in [h for h in response.headers if h.lower().startswith("x-xet-")]:
            del response.headers[header]
        size = response.headers.get("X-Linked-Size") or response.headers.get("Content-Length")
        if size is not None and size.isdigit() and int(size) > budget.left:
            raise _too_large(budget, f"says it is {int(size):,} bytes")
        return
    if response.request.method != "GET":
        return
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    declared = response.headers.get("Content-Length")
    if encoding != "identity":
        response.close()
        raise HubError(f"{budget.what}: the Hub sent {budget.file!r} compressed ({encoding[:40]}), which was not "
                       "asked for and is not read; nothing was recorded. Check VERA_HUB_ENDPOINT.")
    if declared is not None and declared.isdigit() and int(declared) > budget.left:
        response.close()
        raise _too_large(budget, f"says it is {int(declared):,} bytes")
    response.stream = _CappedStream(response.stream, budget)


def _too_large(budget: Budget, how: str) -> ContentTooLarge:
    return ContentTooLarge(f"{budget.what}: the Hub's {budget.file[:100]!r} {how}, past the limit of "
                           f"{budget.limit:,} bytes ({budget.setting}) for what is downloaded; nothing was recorded.")


class _CappedStream(httpx2.SyncByteStream):
    """A response body that stops with ContentTooLarge once it has given more bytes than its budget has left."""

    def __init__(self, stream: Any, budget: Budget) -> None:
        self.stream, self.budget = stream, budget

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.stream:
            if len(chunk) > self.budget.left:
                raise _too_large(self.budget, "sent more than it said")
            self.budget.left -= len(chunk)
            yield chunk

    def close(self) -> None:
        self.stream.close()

"""The HTTP client ``huggingface_hub`` uses in this process: a timeout on every request (its default client has none)
and, inside ``capped_downloads``, a bound on what its downloads read and on how long their bodies may take
(registry.services.hub's pulls, the base configs of registry.services.base_configs)."""

from __future__ import annotations

import time
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

#: The slowest a downloaded body may come, on average, once its first ``timeout_s`` has passed: a Hub that sends a
#: byte just inside each read's timeout would otherwise hold a pull (and its worker thread) for as long as the body is
#: long, days for an adapter at the upload limit (an outsider's finding, session 39).
MIN_BODY_BYTES_PER_S = 2**20


@dataclass
class Budget:
    """What the downloads of one ``capped_downloads`` may still read (``left`` of ``limit`` bytes), what they are for
    and the limit's name (for the refusal), the file being downloaded (its name in the repo: the URL's last part may
    be a CDN's hash), and the timeout a body's time allowed starts from."""

    left: int
    limit: int
    what: str
    setting: str
    file: str = "file"
    timeout_s: float = 60.0


_budget: ContextVar[Budget | None] = ContextVar("vera_hub_download_budget", default=None)


@contextmanager
def capped_downloads(limit: int, what: str, setting: str = "VERA_MAX_UPLOAD_BYTES", *,
                     timeout_s: float = 60.0) -> Iterator[Budget]:
    """Every body ``huggingface_hub`` downloads in this context (this thread) counts against ``limit`` bytes in
    all: one whose metadata or headers say it is larger is refused before it is read, and one that sends more is cut
    off there (ContentTooLarge, naming ``what``, the file and ``setting``, the limit's name): the Hub's file sizes,
    which the caller checks first, are only what the Hub declares. A compressed body (not asked for) is refused
    (HubError), and files are downloaded over HTTP, never through Xet's client, which this bound would not see.
    Each body must come within ``timeout_s`` plus a second for each MIN_BODY_BYTES_PER_S of it (its declared length,
    else what the budget has left), or it is cut off (HubError): each read's timeout alone let a trickle run on.
    Set ``file`` on the budget yielded to the name of each file before its download."""
    if not _installed:
        use_timeout(timeout_s)
    budget = Budget(limit, limit, what, setting, timeout_s=timeout_s)
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
        raise RefusedBody(f"{budget.what}: the Hub sent {budget.file!r} compressed ({encoding[:40]}), which was not "
                          "asked for and is not read; nothing was recorded. Check VERA_HUB_ENDPOINT.",
                          "came compressed")
    length = int(declared) if declared is not None and declared.isdigit() else None
    if length is not None and length > budget.left:
        response.close()
        raise _too_large(budget, f"says it is {length:,} bytes")
    allowed_s = budget.timeout_s + (budget.left if length is None else length) / MIN_BODY_BYTES_PER_S
    response.stream = _CappedStream(response.stream, budget, allowed_s)


class RefusedBody(HubError):
    """A downloaded body refused for how it came, ``how`` in a few words: compressed, or too slowly."""

    def __init__(self, message: str, how: str) -> None:
        super().__init__(message)
        self.how = how


def _too_large(budget: Budget, how: str) -> ContentTooLarge:
    return ContentTooLarge(f"{budget.what}: the Hub's {budget.file[:100]!r} {how}, past the limit of "
                           f"{budget.limit:,} bytes ({budget.setting}) for what is downloaded; nothing was recorded.")


class _CappedStream(httpx2.SyncByteStream):
    """A response body that stops with ContentTooLarge once it has given more bytes than its budget has left, and
    with HubError once it has taken longer than ``allowed_s`` (counted from its headers)."""

    def __init__(self, stream: Any, budget: Budget, allowed_s: float) -> None:
        self.stream, self.budget, self.allowed_s = stream, budget, allowed_s
        self.deadline = time.monotonic() + allowed_s

    def __iter__(self) -> Iterator[bytes]:
        budget = self.budget
        for chunk in self.stream:
            if len(chunk) > budget.left:
                raise _too_large(budget, "sent more than it said")
            if time.monotonic() > self.deadline:
                raise RefusedBody(f"{budget.what}: the Hub sent {budget.file[:100]!r} too slowly (still coming after "
                                  f"{self.allowed_s:,.0f} s: the request's timeout, VERA_HUB_TIMEOUT_S, and a second "
                                  f"for each MiB); it was cut off and nothing was recorded. Try again later, or check "
                                  f"VERA_HUB_ENDPOINT.", "came too slowly")
            budget.left -= len(chunk)
            yield chunk

    def close(self) -> None:
        self.stream.close()

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

    timeout = httpx2.Timeout(timeout_s).as_dict()

    def same_timeout(request: httpx2.Request) -> None:
        # huggingface_hub passes a timeout of its own to some calls (downloads: HF_HUB_DOWNLOAD_TIMEOUT, 10 s), which
        # would stand in for this setting there; a caller's own (hub_timeout) stands in for it in its block
        chosen = _timeout.get()
        request.extensions["timeout"] = timeout if chosen is None else httpx2.Timeout(chosen).as_dict()

    def factory() -> httpx2.Client:
        client: httpx2.Client = default_client_factory()
        client.timeout = httpx2.Timeout(timeout_s)
        client.headers["Accept-Encoding"] = "identity"
        client.event_hooks["request"] = [*client.event_hooks.get("request", []), same_timeout]
        client.event_hooks["response"] = [*client.event_hooks.get("response", []), _cap_body]
        return client

    set_client_factory(factory)
    _installed.append(timeout_s)


_installed: list[float] = []
_timeout: ContextVar[float | None] = ContextVar("vera_hub_timeout", default=None)


@contextmanager
def hub_timeout(timeout_s: float) -> Iterator[None]:
    """Every ``huggingface_hub`` request in this context (this thread) within ``timeout_s``, whatever timeout the
    process was given (use_timeout, installed with this one if none was): a reader of the Hub with a timeout of its
    own (HubBaseConfigs) keeps it where another part of the process set another."""
    if not _installed:
        use_timeout(timeout_s)
    token = _timeout.set(timeout_s)
    try:
        yield
    finally:
        _timeout.reset(token)


#: The end of a refusal that the Hub's answer, or no answer, caused: the setting is the registry's, so the advice is
#: its operator's (an API caller told to "check VERA_HUB_ENDPOINT" could not).
CHECK_ENDPOINT = "The registry's operator checks the network and its VERA_HUB_ENDPOINT."
#: The slowest a downloaded body may come, on average, once its first ``timeout_s`` has passed: a Hub that sends a
#: byte just inside each read's timeout would otherwise hold a pull (and its worker thread) for as long as the body is
#: long, days for an adapter at the upload limit (an outsider's finding, session 39).
MIN_BODY_BYTES_PER_S = 2**20


@dataclass
class Budget:
    """What the downloads of one ``capped_downloads`` may still read (``left`` of ``limit`` bytes), what they are for
    and the limit's name (for the refusal), the file being downloaded (its name in the repo: the URL's last part may
    be a CDN's hash), and the timeout a file's time allowed starts from. ``reading``, ``read``, ``allowed_s`` and
    ``deadline``: the file whose GETs were answered last (a retry after a dropped connection is another GET of the
    same file), the bytes counted for it, the time it is allowed and when that ends."""

    left: int
    limit: int
    what: str
    setting: str
    file: str = "file"
    timeout_s: float = 60.0
    reading: str | None = None
    read: int = 0
    allowed_s: float = 0.0
    deadline: float = 0.0

    def body(self, status: int, length: int | None) -> None:
        """A GET of ``file`` answered with ``status`` and a body of ``length`` bytes (None: unsaid). Its first answer
        starts the file's time allowed; a later one (huggingface_hub's retry, resuming with a Range) must come within
        it, and one that sends the whole file again (200, not 206: the client writes it over what it had) gives back
        what the earlier attempts counted, which would otherwise count twice against the limit."""
        if self.reading != self.file:
            self.reading, self.read = self.file, 0
            self.allowed_s = self.timeout_s + (self.left if length is None else length) / MIN_BODY_BYTES_PER_S
            self.deadline = time.monotonic() + self.allowed_s
            return
        self.check_time()
        if status != 206:
            self.left, self.read = self.left + self.read, 0

    def count(self, chunk: bytes) -> None:
        if len(chunk) > self.left:
            raise _too_large(self, "sent more than it said")
        self.check_time()
        self.left -= len(chunk)
        self.read += len(chunk)

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise RefusedBody(f"{self.what}: the Hub sent {self.file[:100]!r} too slowly (still coming after "
                              f"{self.allowed_s:,.0f} s: the request's timeout, VERA_HUB_TIMEOUT_S, and a second "
                              "for each MiB); it was cut off and nothing was recorded. Try again later. "
                              f"{CHECK_ENDPOINT}",
                              "came too slowly")


_budget: ContextVar[Budget | None] = ContextVar("vera_hub_download_budget", default=None)


@contextmanager
def capped_downloads(limit: int, what: str, setting: str = "VERA_MAX_UPLOAD_BYTES", *,
                     timeout_s: float = 60.0) -> Iterator[Budget]:
    """Every body ``huggingface_hub`` downloads in this context (this thread) counts against ``limit`` bytes in
    all: one whose metadata or headers say it is larger is refused before it is read, and one that sends more is cut
    off there (ContentTooLarge, naming ``what``, the file and ``setting``, the limit's name): the Hub's file sizes,
    which the caller checks first, are only what the Hub declares. A compressed body (not asked for) is refused
    (HubError), and files are downloaded over HTTP, never through Xet's client, which this bound would not see.
    Each file must come within ``timeout_s`` plus a second for each MIN_BODY_BYTES_PER_S of it (the length its first
    answer declares, else what the budget has left), retries included, or it is cut off (HubError): each read's
    timeout alone let a trickle run on, and a retry after each stall would start again.
    Set ``file`` on the budget yielded to the name of each file before its download."""
    budget = Budget(limit, limit, what, setting, timeout_s=timeout_s)
    token = _budget.set(budget)
    try:
        with hub_timeout(timeout_s):
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
                          f"asked for and is not read; nothing was recorded. {CHECK_ENDPOINT}",
                          "came compressed")
    length = int(declared) if declared is not None and declared.isdigit() else None
    try:
        budget.body(response.status_code, length)
        if length is not None and length > budget.left:
            raise _too_large(budget, f"says it is {length:,} bytes")
    except (HubError, ContentTooLarge):
        response.close()
        raise
    response.stream = _CappedStream(response.stream, budget)


class RefusedBody(HubError):
    """A downloaded body refused for how it came, ``how`` in a few words: compressed, or too slowly."""

    def __init__(self, message: str, how: str) -> None:
        super().__init__(message)
        self.how = how


def _too_large(budget: Budget, how: str) -> ContentTooLarge:
    return ContentTooLarge(f"{budget.what}: the Hub's {budget.file[:100]!r} {how}, past the limit of "
                           f"{budget.limit:,} bytes ({budget.setting}) for what is downloaded; nothing was recorded.")


class _CappedStream(httpx2.SyncByteStream):
    """A response body counted against its budget as it comes (Budget.count: its bytes, and its time)."""

    def __init__(self, stream: Any, budget: Budget) -> None:
        self.stream, self.budget = stream, budget

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.stream:
            self.budget.count(chunk)
            yield chunk

    def close(self) -> None:
        self.stream.close()

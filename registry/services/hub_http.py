"""The HTTP client ``huggingface_hub`` uses in this process: a timeout on every request (its default client has none)
and, inside ``capped_downloads``, a bound on what its downloads read (registry.services.hub's pulls, the base
configs of registry.services.base_configs)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import httpx2
from huggingface_hub import set_client_factory
from huggingface_hub.utils._http import default_client_factory

from registry.domain.errors import ContentTooLarge


def use_timeout(timeout_s: float) -> None:
    """Give every ``huggingface_hub`` request of this process a timeout (its default client has none), and the
    bound of ``capped_downloads``."""

    def factory() -> httpx2.Client:
        client: httpx2.Client = default_client_factory()
        client.timeout = httpx2.Timeout(timeout_s)
        client.event_hooks["response"] = [*client.event_hooks.get("response", []), _cap_body]
        return client

    set_client_factory(factory)
    _installed.append(timeout_s)


_installed: list[float] = []
#: What the downloads of the current ``capped_downloads`` may still read: [bytes left, limit, what for, its name].
_budget: ContextVar[list[Any] | None] = ContextVar("vera_hub_download_budget", default=None)


@contextmanager
def capped_downloads(limit: int, what: str, setting: str = "VERA_MAX_UPLOAD_BYTES", *,
                     timeout_s: float = 60.0) -> Iterator[None]:
    """Every body ``huggingface_hub`` downloads in this context (this thread) counts against ``limit`` bytes in
    all: one that says it is larger is refused before it is read, and one that sends more than it said is cut off
    there (ContentTooLarge, naming ``what``, the file and ``setting``, the limit's name): the Hub's file sizes,
    which the caller checks first, are only what the Hub declares."""
    if not _installed:
        use_timeout(timeout_s)
    token = _budget.set([limit, limit, what, setting])
    try:
        yield
    finally:
        _budget.reset(token)


def _cap_body(response: httpx2.Response) -> None:
    budget = _budget.get()
    if budget is None or response.request.method != "GET":
        return
    name = response.request.url.path.rsplit("/", 1)[-1]
    declared = response.headers.get("Content-Length")
    if declared is not None and declared.isdigit() and int(declared) > budget[0]:
        response.close()
        raise _too_large(budget, name, f"says it is {int(declared):,} bytes")
    response.stream = _CappedStream(response.stream, budget, name)


def _too_large(budget: list[Any], name: str, how: str) -> ContentTooLarge:
    _, limit, what, setting = budget
    return ContentTooLarge(f"{what}: the Hub's {name[:100]!r} {how}, past the limit of {limit:,} bytes ({setting}) "
                           "for what is downloaded; nothing was recorded.")


class _CappedStream(httpx2.SyncByteStream):
    """A response body that stops with ContentTooLarge once it has given more bytes than its budget has left."""

    def __init__(self, stream: Any, budget: list[Any], name: str) -> None:
        self.stream, self.budget, self.name = stream, budget, name

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.stream:
            if len(chunk) > self.budget[0]:
                raise _too_large(self.budget, self.name, "sent more than it said")
            self.budget[0] -= len(chunk)
            yield chunk

    def close(self) -> None:
        self.stream.close()

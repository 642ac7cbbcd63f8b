"""Per-caller rate limits on the costly routes (verify, compare, file downloads): a token bucket per caller, in the
process (each API replica limits its own share)."""

from __future__ import annotations

import threading
import time
from typing import Annotated

from fastapi import Depends, Request

from registry.api.deps import Reader
from registry.domain.errors import RateLimited
from registry.services.tokens import Principal

#: What the costly requests are, as a refusal names them.
COSTLY = "costly requests (verify, compare, downloads, builds of download forms, job submissions)"


class RateLimiter:
    """``per_minute`` costly requests per caller, refilled continuously, bursts up to the same number."""

    def __init__(self, per_minute: int) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._buckets: dict[str, tuple[float, float]] = {}  # caller -> (tokens, last refill)
        self._lock = threading.Lock()

    def take(self, caller: str, what: str = COSTLY) -> None:
        """Spend one request of ``caller``'s budget, or raise RateLimited saying when to retry (``what``: the
        requests counted, in the message)."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(caller, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate)
            if tokens < 1:
                self._buckets[caller] = (tokens, now)
                retry = max(1, round((1 - tokens) / self.rate))
                raise RateLimited(f"More than {self.capacity:.0f} {what} a minute from this caller "
                                  f"(VERA_COSTLY_REQUESTS_PER_MINUTE); retry in {retry} s.",
                                  retry_after=retry)
            self._buckets[caller] = (tokens - 1, now)
            if len(self._buckets) > 100_000:  # forget callers idle long enough to be full again
                idle = now - self.capacity / self.rate
                self._buckets = {k: v for k, v in self._buckets.items() if v[1] > idle}


def spend(request: Request, who: Principal) -> None:
    """Count one costly request against the caller's per-minute budget: a token's user's, whichever of its tokens
    it sends (one user minting tokens gets no more); anonymous callers and the local user: per client address."""
    limiter: RateLimiter = request.app.state.rate_limiter
    client = request.client.host if request.client else "unknown"
    limiter.take(f"user:{who.owner}" if who.token_id is not None else f"{who.owner}@{client}")


async def _costly_reader(request: Request, who: Reader) -> Principal:
    """A reader whose request counts against its per-minute budget (``spend``)."""
    spend(request, who)
    return who


#: A reader of a costly route (verify, compare, file downloads).
CostlyReader = Annotated[Principal, Depends(_costly_reader)]

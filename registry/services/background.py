"""A service's background thread, started and stopped with the API process (its lifespan): the webhook dispatcher
(registry.services.outbox) and housekeeping (registry.services.housekeeping)."""

from __future__ import annotations

import logging
import threading
import time

from registry.logs import first_line

#: How often a background round that keeps failing the same way is logged again.
REPEAT_LOG_S = 60.0


class BackgroundThread:
    """Runs ``_run`` in a daemon thread from ``start()`` until ``stop()``; ``_run`` returns once ``self._stop`` is
    set (wait on it between rounds)."""

    thread_name = "vera-background"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing: tuple[str, float, int] | None = None  # (what failed, when it was last logged, rounds since)

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the current round (waiting for it up to ``timeout`` seconds)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        raise NotImplementedError

    def _failed(self, log: logging.Logger, what: str, exc: Exception) -> None:
        """Log that a round failed (``what``: the round, e.g. "webhook dispatcher round"): a database error in one
        line, anything else with its traceback, and the same failure again only once every REPEAT_LOG_S with how
        many rounds failed since. Every round's traceback, once a second, while the database was away or read-only,
        wrote about 4 KB a second to the log (an operator's walk, session 43)."""
        said = f"{type(exc).__name__}: {first_line(exc, 300)}"
        now = time.monotonic()
        if self._failing is not None and self._failing[0] == said and now - self._failing[1] < REPEAT_LOG_S:
            self._failing = (said, self._failing[1], self._failing[2] + 1)
            return
        since = f" ({self._failing[2]:,} more failed rounds since it was last said)" if self._failing and \
            self._failing[0] == said and self._failing[2] else ""
        if type(exc).__module__.startswith("sqlalchemy"):
            log.warning(f"{what} failed: {said}{since}; trying again")
        else:
            log.error(f"{what} failed{since}; trying again", exc_info=exc)
        self._failing = (said, now, 0)

    def _succeeded(self, log: logging.Logger, what: str) -> None:
        """A round went through: said once after failures."""
        if self._failing is not None:
            log.warning(f"{what} works again")
            self._failing = None

"""A service's background thread, started and stopped with the API process (its lifespan): the webhook dispatcher
(registry.services.outbox) and housekeeping (registry.services.housekeeping)."""

from __future__ import annotations

import threading


class BackgroundThread:
    """Runs ``_run`` in a daemon thread from ``start()`` until ``stop()``; ``_run`` returns once ``self._stop`` is
    set (wait on it between rounds)."""

    thread_name = "vera-background"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

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

"""A real HTTP webhook receiver for tests: an http.server on 127.0.0.1 in a thread that records every POST and answers
as told (a queue of status codes per path; paths that hang until released)."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    at: float  # time.monotonic()


def signature_ok(secret: str, received: Received, *, tolerance_s: float = 300) -> bool:
    """A receiver's check, as docs/webhooks.md shows it: HMAC-SHA256 of '<timestamp>.<body>', and a recent time."""
    timestamp = received.headers["x-vera-timestamp"]
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + received.body, hashlib.sha256).hexdigest()
    fresh = abs(time.time() - int(timestamp)) <= tolerance_s
    return fresh and hmac.compare_digest(f"sha256={mac}", received.headers["x-vera-signature"])


class Receiver:
    def __init__(self, port: int) -> None:
        self.port = port
        self.requests: list[Received] = []
        self.statuses: dict[str, list[int]] = {}
        self.hanging: set[str] = set()
        self.release = threading.Event()
        self.changed = threading.Condition()
        self.waiting = 0  # requests held by a hanging path right now

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def answer(self, path: str, *statuses: int) -> None:
        """Answer the next requests to ``path`` with these statuses, then 200."""
        self.statuses[path] = list(statuses)

    def at(self, path: str) -> list[Received]:
        with self.changed:
            return [r for r in self.requests if r.path == path]

    def wait_for(self, path: str, count: int, timeout: float = 30) -> list[Received]:
        """The first ``count`` requests to ``path``, waiting for them up to ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while len(got := [r for r in self.requests if r.path == path]) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{path}: {len(got)} requests in {timeout} s, expected {count}")
                self.changed.wait(left)
            return got

    def record(self, handler: BaseHTTPRequestHandler) -> int:
        body = handler.rfile.read(int(handler.headers.get("Content-Length", 0)))
        received = Received(handler.path, {k.lower(): v for k, v in handler.headers.items()}, body, time.monotonic())
        with self.changed:
            self.requests.append(received)
            queue = self.statuses.get(handler.path) or []
            status = queue.pop(0) if queue else 200
            self.changed.notify_all()
        if handler.path in self.hanging:
            with self.changed:
                self.waiting += 1
                self.changed.notify_all()
            self.release.wait(60)
            with self.changed:
                self.waiting -= 1
        return status


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            status = receiver.record(self)
            try:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
            except OSError:  # the sender gave up (a hanging path)
                pass

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def running_receiver() -> Iterator[Receiver]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(Receiver(0)))
    receiver = Receiver(int(server.server_address[1]))
    server.RequestHandlerClass = _handler(receiver)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.release.set()
        server.shutdown()
        server.server_close()

"""A real HTTP reverse proxy in front of a registry server that injects faults into chosen responses, for the client's
fault tests (each request noted as 'METHOD path'): a 503 instead of the answer, a body with one byte flipped, or a
body cut off half way (the connection closed before Content-Length bytes)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


@dataclass
class Fault:
    path_part: str
    kind: str  # "status" (answer 503), "flip" (last byte flipped) or "cut" (half the body, then close)
    times: int = 1
    status: int = 503
    headers: dict[str, str] = field(default_factory=dict)


class FaultyProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream, self.faults, self.requests = upstream, list[Fault](), list[str]()
        self.lock = threading.Lock()
        self.url = ""

    def fault_for(self, method: str, path: str) -> Fault | None:
        with self.lock:
            self.requests.append(f"{method} {path}")
            for fault in self.faults:
                if fault.path_part in path and fault.times > 0:
                    fault.times -= 1
                    return fault
        return None

    def handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                fault = proxy.fault_for(self.command, self.path)
                if fault is not None and fault.kind == "status":
                    self._answer(fault.status, {"content-type": "application/json", **fault.headers},
                                 b'{"detail": "injected"}')
                    return
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                upstream = httpx.request(self.command, proxy.upstream + self.path, headers=headers, content=body)
                data = upstream.content
                out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
                if fault is not None and fault.kind == "flip" and data:
                    data = data[:-1] + bytes([data[-1] ^ 0xFF])
                if fault is not None and fault.kind == "cut":
                    self.send_response(upstream.status_code)
                    for k, v in out_headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self._answer(upstream.status_code, out_headers, data)

            def _answer(self, status: int, headers: dict[str, str], data: bytes) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _forward

        return Handler


@contextmanager
def faulty_proxy(upstream: str) -> Iterator[FaultyProxy]:
    proxy = FaultyProxy(upstream)
    server = ThreadingHTTPServer(("127.0.0.1", 0), proxy.handler())
    proxy.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        server.shutdown()
        server.server_close()

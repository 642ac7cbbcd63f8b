"""registry.plain_http against real HTTP servers on loopback: kept-alive connections are reused, one the server
closed while idle is noticed and replaced, bodies arrive whole or fail as httpx's transport errors (which the
client's retries and messages rely on), uploads of unknown length are framed as chunks."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from registry.plain_http import READ_CHUNK, PlainHttpTransport


class Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive; what it answers is the server's ``answer(handler)``; each request's connection
    (the client's port) is recorded."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.server.seen.append(self.client_address[1])  # type: ignore[attr-defined]
        self.server.answer(self)  # type: ignore[attr-defined]

    do_POST = do_GET  # noqa: N815

    def do_HEAD(self) -> None:  # noqa: N802 - the headers a GET of the path would have, no body
        self.server.seen.append(self.client_address[1])  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.path)))
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def reply(handler: BaseHTTPRequestHandler, body: bytes, *, length: int | None = None, close: bool = False) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", str(len(body) if length is None else length))
    handler.end_headers()
    handler.wfile.write(body)
    handler.wfile.flush()
    handler.close_connection = close  # close without saying so (no Connection: close), as an idle timeout does


@contextmanager
def server(answer: Callable[[BaseHTTPRequestHandler], None]) -> Iterator[tuple[str, ThreadingHTTPServer]]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.seen, httpd.answer = [], answer  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}", httpd
    finally:
        httpd.shutdown()
        httpd.server_close()


def client(**kwargs: Any) -> httpx.Client:
    return httpx.Client(transport=PlainHttpTransport(), trust_env=False, **kwargs)


def test_a_kept_alive_connection_carries_the_next_requests() -> None:
    big = bytes(range(256)) * (3 * READ_CHUNK // 256 + 7)  # read in several pieces
    with server(lambda h: reply(h, big if h.path == "/big" else h.path.encode())) as (url, httpd), client() as c:
        assert [c.get(f"{url}/a?x=1").content for _ in range(3)] == [b"/a?x=1"] * 3
        assert c.get(f"{url}/big").content == big
        head = c.head(f"{url}/a")
        assert head.status_code == 200 and head.content == b"" and head.headers["content-length"] == "2"
        assert c.get(f"{url}/b").content == b"/b"
        assert len(set(httpd.seen)) == 1, httpd.seen  # one connection for all six


def test_a_connection_the_server_closed_while_idle_is_replaced() -> None:
    with server(lambda h: reply(h, b"ok", close=True)) as (url, httpd), client() as c:
        assert [c.get(url).text for _ in range(3)] == ["ok"] * 3
        assert len(set(httpd.seen)) == 3  # each reply closed its connection; the next request noticed


def test_a_body_cut_short_is_a_remote_protocol_error_and_the_connection_is_not_reused() -> None:
    def short(h: BaseHTTPRequestHandler) -> None:
        if h.path == "/short":
            reply(h, b"x" * 1000, length=5000, close=True)
        else:
            reply(h, b"fine")

    with server(short) as (url, _), client() as c:
        with pytest.raises(httpx.RemoteProtocolError, match="before the end of the body"):
            c.get(f"{url}/short")
        with c.stream("GET", f"{url}/short") as response, pytest.raises(httpx.RemoteProtocolError):
            response.read()  # streamed the same: what downloads do
        assert c.get(f"{url}/after").text == "fine"


def test_uploads_of_known_and_unknown_length_arrive_whole() -> None:
    received: list[bytes] = []

    def echo(h: BaseHTTPRequestHandler) -> None:
        if h.headers.get("Transfer-Encoding") == "chunked":
            body = b""
            while (size := int(h.rfile.readline().strip(), 16)) > 0:
                body += h.rfile.read(size)
                h.rfile.readline()
            h.rfile.readline()
        else:
            body = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        received.append(body)
        reply(h, str(len(body)).encode())

    with server(echo) as (url, httpd), client() as c:
        assert c.post(url, content=b"abc").text == "3"
        assert c.post(url, files={"f": ("a.bin", b"\0" * 70_000)}).status_code == 200
        assert c.post(url, content=iter([b"12", b"", b"345"])).text == "5"
        assert c.post(url, json={"a": 1}).text == str(len(received[-1]))
        assert received[0] == b"abc" and b"\0" * 70_000 in received[1] and received[2] == b"12345"
        assert received[3].replace(b" ", b"") == b'{"a":1}'
        assert len(set(httpd.seen)) == 1


def test_no_listener_no_answer_and_https_are_transport_errors() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with client() as c:
        with pytest.raises(httpx.ConnectError):
            c.get(f"http://127.0.0.1:{port}/")
        with pytest.raises(httpx.UnsupportedProtocol, match="not plain HTTP"):
            c.get("https://127.0.0.1:1/")
    silent = threading.Event()
    with server(lambda h: silent.wait(5)) as (url, _), client(timeout=0.3) as c:
        with pytest.raises(httpx.ReadTimeout):
            c.get(url)
        silent.set()

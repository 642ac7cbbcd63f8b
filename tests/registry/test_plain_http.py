"""registry.plain_http against real HTTP servers on loopback: kept-alive connections are reused, one the server
closed while idle is noticed and replaced, bodies arrive whole or fail as httpx's transport errors (which the
client's retries and messages rely on), uploads of unknown length are framed as chunks; and the cases a review
found, each run through httpx's own transport too, as the reference."""

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
from tests.registry.servers import in_thread


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


# What follows was found by a review against httpx's own transport: each case runs through both, httpx's as the
# reference.
TRANSPORTS = pytest.mark.parametrize("transport", [httpx.HTTPTransport, PlainHttpTransport],
                                     ids=["httpx", "plain_http"])


def client_of(transport: type[httpx.BaseTransport], **kwargs: Any) -> httpx.Client:
    return httpx.Client(transport=transport(), trust_env=False, **kwargs)


@TRANSPORTS
def test_a_large_body_cut_short_is_a_remote_protocol_error(transport: type[httpx.BaseTransport]) -> None:
    """Over READ_CHUNK the body is read with response.read(amt), which answers b"" at a premature end of file
    instead of raising IncompleteRead: a truncated body must not pass as whole (downloads retry on the error)."""
    def short(h: Any) -> None:
        if h.path == "/big":
            reply(h, b"x" * (READ_CHUNK + 1000), length=3 * READ_CHUNK, close=True)
        else:
            reply(h, b"fine")

    with server(short) as (url, _), client_of(transport) as c:
        with pytest.raises(httpx.RemoteProtocolError):
            c.get(f"{url}/big")
        with c.stream("GET", f"{url}/big") as response, pytest.raises(httpx.RemoteProtocolError):
            for _ in response.iter_bytes():
                pass
        assert c.get(f"{url}/after").text == "fine"


@contextmanager
def drops_second_request() -> Iterator[tuple[str, list[bytes]]]:
    """A server that answers the first request of each connection, and reads the second one whole (it was
    received, perhaps acted on) and then closes the connection without answering (a crash, a restart)."""
    posts: list[bytes] = []
    listener = socket.create_server(("127.0.0.1", 0))

    def handle(sock: socket.socket) -> None:
        with sock, sock.makefile("rb") as f:
            for n in (1, 2):
                line = f.readline()
                if not line:
                    return
                headers = {}
                while (h := f.readline()) not in (b"\r\n", b""):
                    k, v = h.decode().split(":", 1)
                    headers[k.strip().lower()] = v.strip()
                body = f.read(int(headers.get("content-length", 0)))
                if line.startswith(b"POST"):
                    posts.append(body)
                if n == 2:
                    return
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    def accept() -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(sock,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", posts
    finally:
        listener.close()


@TRANSPORTS
def test_a_post_the_server_received_is_not_sent_again(transport: type[httpx.BaseTransport]) -> None:
    """A POST with a body in memory (json=...) on a kept-alive connection, received by the server, which then
    closes without answering, is not sent again (RegistryClient never repeats a POST: tokens, organisations,
    webhooks, Hub pushes would be made twice)."""
    with drops_second_request() as (url, posts), client_of(transport) as c:
        assert c.get(url).text == "ok"  # the connection is now kept alive in the pool
        with pytest.raises(httpx.RemoteProtocolError):
            c.post(f"{url}/api/v1/tokens", json={"owner": "alice"})
        assert len(posts) == 1, f"the server received the POST {len(posts)} times"


async def refuse_from_headers(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """What registry/api/gate.py does for a body with no valid token (401) or over the limit (413): answer from
    the headers with Connection: close and never read the body."""
    if scope["type"] != "http":
        return
    body = b'{"status":413}'
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


@TRANSPORTS
def test_an_upload_refused_from_its_headers_gets_the_refusal(transport: type[httpx.BaseTransport]) -> None:
    """As httpcore does, a write error while sending the body is not the error: the answer the server sent from
    the headers is (else `vera publish` with a wrong token or an adapter over the limit would say "Cannot reach
    the registry" instead of 401/413)."""
    with in_thread(refuse_from_headers) as url, client_of(transport) as c:
        assert c.post(f"{url}/x", content=b"\0" * 40_000_000).status_code == 413
        assert c.post(f"{url}/x", files={"f": ("a.bin", b"\0" * 40_000_000)}).status_code == 413


@TRANSPORTS
def test_a_non_ascii_response_header_arrives(transport: type[httpx.BaseTransport]) -> None:
    """Header bytes over 0x7f (a Content-Disposition filename) arrive as sent, as through httpx's transport."""
    def latin1(h: Any) -> None:
        h.send_response(200)
        h.send_header("Content-Disposition", 'attachment; filename="caf\u00e9.bin"')  # sent as latin-1 bytes
        h.send_header("Content-Length", "2")
        h.end_headers()
        h.wfile.write(b"ok")

    with server(latin1) as (url, _), client_of(transport) as c:
        response = c.get(url)
        assert response.text == "ok"
        assert response.headers.raw[-2][1] == b'attachment; filename="caf\xe9.bin"'


@TRANSPORTS
@pytest.mark.parametrize("lengths", [["-1"], ["+5"], ["5", "7"], ["five"]], ids=["negative", "plus", "two", "word"])
def test_a_malformed_content_length_is_refused_as_h11_refuses_it(transport: type[httpx.BaseTransport],
                                                                 lengths: list[str]) -> None:
    """Session 13's attack round: http.client took Content-Length -1 (read to close) and the first of two that
    disagree; h11 refuses both. Framing that intermediaries could read otherwise is an error."""
    listener = socket.create_server(("127.0.0.1", 0))

    def answer() -> None:
        sock, _ = listener.accept()
        with sock:
            sock.recv(65536)
            sock.sendall(b"HTTP/1.1 200 OK\r\n" + b"".join(f"Content-Length: {n}\r\n".encode() for n in lengths)
                         + b"\r\nhello")

    threading.Thread(target=answer, daemon=True).start()
    try:
        with client_of(transport, timeout=5) as c, pytest.raises(httpx.RemoteProtocolError):
            c.get(f"http://127.0.0.1:{listener.getsockname()[1]}/")
    finally:
        listener.close()

"""The registry client's transport for http:// (a registry on loopback or inside a cluster): httpx's requests sent
over the standard library's ``http.client`` with kept-alive connections, instead of httpcore and h11. Measured on
this project's bench machine (bench/RESULTS.md, session 12): a 157 KB file list costs the client 0.53 ms of CPU
through httpcore and 0.23 ms through ``http.client`` (0.84 ms through httpx as a whole); /health 0.52 ms
through httpx and 0.15 ms through ``http.client``. https:// keeps httpx's own
transport (TLS, HTTP/2), and so does any proxy httpx takes from the environment.

What it keeps of httpcore's behaviour, since the client's retries rely on it: every failure is an
``httpx.TransportError`` (a connection that cannot be made, a timeout, a body cut short: ``RemoteProtocolError``,
as httpcore says it); an idle connection the server has closed meanwhile is noticed before it is used, and an
idempotent request (GET, HEAD, PUT, DELETE; never a POST the server may have received) whose body can be sent again
that meets a connection closed under it is sent once more on a new one; a write error while sending a body gives
way to the answer the server sent from the headers (401, 413); header bytes pass as they came; a connection goes
back to the pool only once its response was read to the end. Checked case by case against httpx's own transport
(tests/registry/test_plain_http.py).
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import io
import re
import select
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx

#: Methods that may be sent again: here when a kept-alive connection turns out closed, and by RegistryClient after
#: a connection error or a 502/503/504. A POST the server may have received is never repeated.
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
#: Idle connections kept per host and port (more are closed when their response ends).
MAX_IDLE = 64
#: The largest piece a response body is read in; a body of known length up to this size is read in one call.
READ_CHUNK = 1 << 20
#: The piece an encoded (compressed) body is read in, as httpcore reads: httpx decodes a piece whole.
ENCODED_READ_CHUNK = 1 << 16


class PlainHttpTransport(httpx.BaseTransport):
    """http:// only: ``https`` URLs are refused (mount it for ``http://``)."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme != "http":
            raise httpx.UnsupportedProtocol(f"{request.url.scheme}:// is not plain HTTP; this transport sends http://.")
        timeout = request.extensions.get("timeout", {})
        key = (request.url.host, request.url.port or 80)
        body = request.content if _replayable(request) else None
        for attempt in (0, 1):
            conn, reused = self._connection(key, timeout)
            try:
                self._send(conn, request, body, timeout)
                conn.response_class = functools.partial(  # type: ignore[assignment]  # a factory suffices
                    _Response, read_timeout=timeout.get("read"))
                response = conn.getresponse()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                conn.close()
                if reused and attempt == 0 and request.method in IDEMPOTENT and (body is not None or
                                                                               not _has_body(request)):
                    continue  # the server closed this kept-alive connection: once more on a new one
                raise httpx.RemoteProtocolError(f"The server closed the connection ({exc or type(exc).__name__}).",
                                                request=request) from exc
            except TimeoutError as exc:
                conn.close()
                raise httpx.ReadTimeout(f"No answer (status line and headers) within {timeout.get('read')} s.",
                                        request=request) from exc
            except ValueError as exc:  # a header http.client refuses (a line break in a value)
                conn.close()
                raise httpx.LocalProtocolError(str(exc), request=request) from exc
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                raise httpx.ReadError(f"{type(exc).__name__}: {exc}", request=request) from exc
            lengths = set(response.msg.get_all("content-length") or [])
            # several lengths, or one not in ASCII digits ('²'.isdigit()): as h11 refuses them
            if len(lengths) > 1 or not all(re.fullmatch(r"[0-9]+", length.strip()) for length in lengths):
                response.close()
                conn.close()
                raise httpx.RemoteProtocolError(f"bad Content-Length: {sorted(lengths)!r:.100}", request=request)
            version = b"HTTP/1.0" if response.version == 10 else b"HTTP/1.1"
            # bytes as they came (latin-1 is byte for byte): httpx decodes them as its own transport's are
            headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.getheaders()]
            return httpx.Response(response.status, headers=headers, stream=_Body(response, conn, key, self, request),
                                  extensions={"http_version": version,
                                              "reason_phrase": response.reason.encode("ascii", "replace")})
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _connection(self, key: tuple[str, int], timeout: dict[str, float | None]
                    ) -> tuple[http.client.HTTPConnection, bool]:
        """An idle connection to ``key`` that is still open (reused: True), or a new one, connected."""
        with self._lock:
            idle = self._idle.get(key, [])
            while idle:
                conn = idle.pop()
                if conn.sock is not None and not _readable(conn.sock):  # closed by the server, or not clean
                    return conn, True
                conn.close()
        conn = http.client.HTTPConnection(key[0], key[1], timeout=timeout.get("connect"))
        try:
            conn.connect()
        except TimeoutError as exc:
            conn.close()
            raise httpx.ConnectTimeout(f"No connection to {key[0]}:{key[1]} within {timeout.get('connect')} s."
                                       ) from exc
        except OSError as exc:
            conn.close()
            raise httpx.ConnectError(f"{type(exc).__name__}: {exc}") from exc
        assert conn.sock is not None
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn, False

    @staticmethod
    def _send(conn: http.client.HTTPConnection, request: httpx.Request, body: bytes | None,
              timeout: dict[str, float | None]) -> None:
        """The request line, headers and body, under the write timeout. A server may answer before it has read
        the whole body (a refused token or an upload over the limit, from the headers) and close the connection:
        a write that fails then is not the error; its answer, read next, is (as httpcore does)."""
        assert conn.sock is not None
        conn.sock.settimeout(timeout.get("write"))
        conn.putrequest(request.method, request.url.raw_path.decode("ascii"), skip_host=True,
                        skip_accept_encoding=True)
        chunked = False
        for name, value in request.headers.raw:
            conn.putheader(name, value)
            chunked |= name.lower() == b"transfer-encoding" and value.lower() == b"chunked"
        conn.endheaders()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # its answer, if any, is read next
            _send_body(conn, request, body, chunked)
        conn.sock.settimeout(timeout.get("read"))

    def release(self, key: tuple[str, int], conn: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < MAX_IDLE:
                idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()


class _Response(http.client.HTTPResponse):
    """A response whose status line and headers must all arrive within the read timeout, counted from when the
    request was sent: a server that trickles them (a byte every few seconds, each within the timeout) is cut off
    there instead of being read for as long as it likes (http.client reads up to 100 header lines of 64 KiB each, one
    socket timeout per read). The body is read under the plain per-read timeout; RegistryClient bounds it as a
    whole."""

    def __init__(self, sock: socket.socket, *args: Any, read_timeout: float | None, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)
        if read_timeout is not None:
            self._raw = _DeadlineIO(sock, time.monotonic() + read_timeout, read_timeout)
            self.fp.close()  # the reader http.client made; nothing was read from it
            self.fp = io.BufferedReader(self._raw)

    def begin(self) -> None:
        try:
            super().begin()
        finally:
            if (raw := getattr(self, "_raw", None)) is not None:
                raw.headers_read()


class _DeadlineIO(socket.SocketIO):
    """The socket's reader, each read given only the time left until ``deadline`` (time.monotonic()) until
    headers_read() is called, after which reads get the per-read ``timeout`` again."""

    def __init__(self, sock: socket.socket, deadline: float, timeout: float) -> None:
        super().__init__(sock, "rb")
        sock._io_refs += 1  # type: ignore[attr-defined]  # as socket.makefile counts the readers it hands out
        self.deadline: float | None = deadline
        self.timeout = timeout

    def readinto(self, b: Any) -> int | None:
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the status line and headers did not arrive by their deadline")
            self._sock.settimeout(min(left, self.timeout))  # type: ignore[attr-defined]
        return super().readinto(b)

    def headers_read(self) -> None:
        if self.deadline is not None:
            self.deadline = None
            if not self.closed:
                self._sock.settimeout(self.timeout)  # type: ignore[attr-defined]


class _Body(httpx.SyncByteStream):
    """A response's body, read from its connection; the connection goes back to the pool when the body was read
    to its end and the server keeps it open, else it is closed."""

    def __init__(self, response: http.client.HTTPResponse, conn: http.client.HTTPConnection, key: tuple[str, int],
                 transport: PlainHttpTransport, request: httpx.Request) -> None:
        self.response, self.conn, self.key, self.transport, self.request = response, conn, key, transport, request
        self.done = False  # read to its end, neither cut short nor broken off

    def __iter__(self) -> Iterator[bytes]:
        response = self.response
        # httpx decodes each piece whole: an encoded (compressed) body comes in httpcore's 64 KiB pieces, so that
        # one piece of a compression bomb is not a gigabyte in memory
        chunk = ENCODED_READ_CHUNK if response.getheader("content-encoding") else READ_CHUNK
        try:
            # read1: each piece as it arrives (one system call), so that the caller can stop a body that trickles
            # (read(n) would wait, read timeout after read timeout, until all n bytes came)
            while piece := response.read1(chunk):
                yield piece
            if response.length == 0:
                response.read()  # b"": read1 leaves a body read to its end open; read() marks it done
        except http.client.IncompleteRead as exc:
            raise _cut_short(self.request, exc.expected) from exc
        except TimeoutError as exc:
            raise httpx.ReadTimeout("The body stopped arriving.", request=self.request) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise httpx.ReadError(f"{type(exc).__name__}: {exc}", request=self.request) from exc
        if response.length:  # read(n) answers b"" at a premature end of file instead of raising IncompleteRead
            raise _cut_short(self.request, response.length)
        self.done = True

    def close(self) -> None:
        response, conn = self.response, self.conn
        if self.done and response.isclosed() and not response.will_close and conn.sock is not None:
            self.transport.release(self.key, conn)  # read to its end: the connection is free again
        else:
            response.close()
            conn.close()


def _cut_short(request: httpx.Request, missing: int | None) -> httpx.RemoteProtocolError:
    return httpx.RemoteProtocolError(f"The server closed the connection before the end of the body ({missing} "
                                     "bytes missing).", request=request)


def _send_body(conn: http.client.HTTPConnection, request: httpx.Request, body: bytes | None, chunked: bool) -> None:
    if body is not None:
        if body:
            conn.send(body)
        return
    assert isinstance(request.stream, httpx.SyncByteStream), "a synchronous client's request"
    for piece in request.stream:  # a streamed upload: framed as chunks when its length was not known
        if chunked and piece:
            conn.send(b"%x\r\n%b\r\n" % (len(piece), piece))
        elif piece:
            conn.send(piece)
    if chunked:
        conn.send(b"0\r\n\r\n")


def _replayable(request: httpx.Request) -> bool:
    """Whether the request's body is in memory (none, or bytes), so that it can be sent again."""
    return isinstance(request.stream, httpx.ByteStream)


def _has_body(request: httpx.Request) -> bool:
    return "content-length" in request.headers or "transfer-encoding" in request.headers


def _readable(sock: socket.socket) -> bool:
    """Whether an idle connection has something to read: the server closed it (end of file) or sent what nobody
    asked for; either way it must not carry another request. (poll, not select: select cannot watch descriptors
    above 1023, which a busy process has.)"""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))

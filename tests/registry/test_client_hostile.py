"""The client against a server that is not the registry it claims to be (session 13's attack round): what it sends
is bounded by what the listing promised, compressed answers cannot balloon in memory, and names the server gives
never become paths outside the cache. The server here is a real HTTP server answering a real registry's file list,
altered."""

from __future__ import annotations

import gzip
import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from registry.client import MAX_ANSWER_BYTES, RegistryClient, RegistryUnavailable
from registry.domain.errors import IntegrityError, InvalidInput, RegistryError
from tests.registry.adapters import make_adapter
from tests.registry.servers import registry_in_thread

Answer = Callable[[http.server.BaseHTTPRequestHandler], None]


@pytest.fixture(scope="module")
def listing(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A real registry's file list and version info for ann/real:1 (no files inline)."""
    root = tmp_path_factory.mktemp("real")
    with registry_in_thread(f"sqlite:///{root / 'r.db'}", root / "blobs") as url, RegistryClient(url, cache=False) as c:
        c.publish(make_adapter(root / "a"), "ann/real", base_model="tiny-llama")
        return {"files": json.loads(c.files("ann/real:1").model_dump_json()),
                "version": json.loads(c.get("ann/real:1").model_dump_json())}


@pytest.fixture
def hostile() -> Iterator[Callable[[dict[str, Answer]], str]]:
    """Start a server answering each path prefix with its function; yields a starter returning the server's URL."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(routes: dict[str, Answer]) -> str:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                for prefix, answer in routes.items():
                    if self.path.startswith(prefix):
                        answer(self)
                        return
                self.send_error(404)

            def log_message(self, *args: Any) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _json(body: Any, *, compressed: bool = False) -> Answer:
    def answer(handler: http.server.BaseHTTPRequestHandler) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        if compressed:
            handler.send_header("Content-Encoding", "gzip")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
    return answer


def _endless(handler: http.server.BaseHTTPRequestHandler) -> None:
    """A body that never ends (until the client hangs up)."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/octet-stream")
    handler.end_headers()
    try:
        while True:
            handler.wfile.write(b"\0" * 65536)
    except OSError:
        pass


def test_a_download_stops_at_the_size_the_listing_gave(listing: dict[str, Any], hostile: Any,
                                                       tmp_path: Path) -> None:
    """A file listed as 10 bytes that never ends: 1.5 GB were written in 4 s before."""
    files = json.loads(json.dumps(listing["files"]))
    for entry in files["files"]:
        entry.update(url="/endless", size=10, content=None)
    url = hostile({"/api/v1/adapters/ann/real/versions/1/files": _json(files), "/endless": _endless})
    with RegistryClient(url, cache=False, retries=0) as client, \
            pytest.raises(IntegrityError, match="ran past the 10 bytes the registry listed"):
        client.fetch("ann/real:1", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no folder, no partial file beside it


def _trickle(size: int, every_s: float, seen: list[float]) -> Answer:
    """A body of ``size`` bytes sent a byte every ``every_s`` seconds: each read gets a byte well within its
    timeout, so only a deadline over the whole body stops it. ``seen``: when each request came."""
    def answer(handler: http.server.BaseHTTPRequestHandler) -> None:
        seen.append(time.monotonic())
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(size))
        handler.end_headers()
        try:
            for _ in range(size):
                handler.wfile.write(b" ")
                handler.wfile.flush()
                time.sleep(every_s)
        except OSError:  # the client hung up
            pass
    return answer


def test_an_answer_that_trickles_is_cut_off_at_the_timeout_not_read_for_days(listing: dict[str, Any],
                                                                            hostile: Any, tmp_path: Path) -> None:
    """A byte every 50 ms of a 2,000-byte answer would take 100 s, and 2 MB over 120 s reads ~8 years; with a timeout
    of 0.5 s the answer is given up after about that, once, as unavailable (not retried: trickling again would only
    double the wait). A download listed at 2,000 bytes gets the same, plus a second per 64 KiB it lists."""
    files = json.loads(json.dumps(listing["files"]))
    for entry in files["files"]:
        entry.update(url="/slow-file", size=2000, content=None)
    answers: list[float] = []
    url = hostile({"/api/v1/adapters/ann/real/versions/1/files": _json(files),
                   "/api/v1/whoami": _trickle(2000, 0.05, answers), "/slow-file": _trickle(2000, 0.05, answers)})
    with RegistryClient(url, cache=False, timeout=0.5, retries=2, backoff_s=0) as client:
        started = time.monotonic()
        with pytest.raises(RegistryUnavailable, match="did not send its whole answer .*still arriving at its deadl"):
            client.whoami()
        assert time.monotonic() - started < 5 and len(answers) == 1  # a bound, far under the 100 s of the trickle
        started = time.monotonic()
        with pytest.raises(RegistryUnavailable, match="the download was too slow .* 3 times; fetch again"):
            client.fetch("ann/real:1", tmp_path / "out")
        assert time.monotonic() - started < 15 and len(answers) == 4  # each download is retried: it may be the net
    assert list(tmp_path.iterdir()) == []


def _trickled_headers(seen: list[float]) -> Answer:
    """A status line, then a header line a byte every 50 ms for ever: each read gets a byte within any timeout."""
    def answer(handler: http.server.BaseHTTPRequestHandler) -> None:
        seen.append(time.monotonic())
        try:
            handler.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            while True:
                handler.wfile.write(b"a")
                handler.wfile.flush()
                time.sleep(0.05)
        except OSError:  # the client hung up
            pass
    return answer


def test_headers_that_trickle_are_cut_off_at_the_timeout(hostile: Any) -> None:
    """The status line and headers must all come within the read timeout: a byte every 50 ms of an endless header
    kept a client reading for as long as the server liked before (each read was within its timeout). Given up after
    about the timeout, on each of the tries the client makes (it may be the network)."""
    answers: list[float] = []
    url = hostile({"/api/v1/whoami": _trickled_headers(answers)})
    with RegistryClient(url, cache=False, timeout=0.5, retries=1, backoff_s=0) as client:
        started = time.monotonic()
        with pytest.raises(RegistryUnavailable, match="status line and headers"):
            client.whoami()
        assert time.monotonic() - started < 4 and len(answers) == 2


def test_a_compressed_answer_is_not_asked_for_nor_decoded(listing: dict[str, Any], hostile: Any) -> None:
    """A gzip bomb as an API answer: 1 MB on the wire, over the answer cap once decoded (3.1 GB of memory before,
    through the plain transport); then gzip in gzip (3.9 GB). The client asks for identity and refuses any other
    encoding before reading a byte of the body."""
    seen: list[str] = []

    def bomb(handler: http.server.BaseHTTPRequestHandler) -> None:
        seen.append(handler.headers.get("Accept-Encoding", ""))
        _json(gzip.compress(b" " * (MAX_ANSWER_BYTES + (8 << 20)), compresslevel=1), compressed=True)(handler)

    def nested(handler: http.server.BaseHTTPRequestHandler) -> None:  # second round: gzip in gzip, decoded whole
        data = gzip.compress(gzip.compress(b" " * (256 << 20), compresslevel=1))
        handler.send_response(200)
        handler.send_header("Content-Encoding", "gzip, gzip")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    url = hostile({"/health": bomb, "/api/v1/whoami": nested})
    with RegistryClient(url, cache=False, retries=0) as client:
        for call in (client.health, client.whoami):
            with pytest.raises(RegistryError, match="answered with Content-Encoding 'gzip(, gzip)?' though asked"):
                call()
    assert seen == ["identity"]


def test_a_download_the_server_encoded_is_refused_undecoded(listing: dict[str, Any], hostile: Any,
                                                             tmp_path: Path) -> None:
    files = json.loads(json.dumps(listing["files"]))
    for entry in files["files"]:
        entry.update(url="/bomb", content=None)

    def bomb(handler: http.server.BaseHTTPRequestHandler) -> None:  # 64 MiB of zeros in 64 KB
        handler.send_response(200)
        handler.send_header("Content-Encoding", "gzip")
        handler.end_headers()
        handler.wfile.write(gzip.compress(b"\0" * (64 << 20), compresslevel=1))

    url = hostile({"/api/v1/adapters/ann/real/versions/1/files": _json(files), "/bomb": bomb})
    with RegistryClient(url, cache=False, retries=0) as client, \
            pytest.raises(RegistryError, match="Content-Encoding 'gzip' though asked for none"):
        client.fetch("ann/real:1", tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_names_from_the_server_never_become_paths_outside_the_cache(listing: dict[str, Any], hostile: Any,
                                                                    tmp_path: Path) -> None:
    """load_adapter built its cache folder from the owner and name the server answered: a hostile server wrote
    /tmp/attack/pwned_owner/evil/1/."""
    version = {**listing["version"], "owner": str(tmp_path / "pwned"), "name": "evil"}
    url = hostile({"/api/v1/adapters/ann/real/versions/1": _json(version)})
    with RegistryClient(url, cache=False, retries=0) as client, pytest.raises(InvalidInput, match="Owner"):
        client.load_adapter(None, "ann/real:1", cache_dir=tmp_path / "cache")  # type: ignore[arg-type]
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "cache").exists()


def test_a_load_is_cached_per_registry_and_only_for_what_was_asked(listing: dict[str, Any], hostile: Any,
                                                                   tmp_path: Path) -> None:
    """Second attack round: a registry asked for mallory/x answering alice/pub:1 filled alice/pub:1's cache entry,
    which a later load from the real registry used. The answer must name what was asked."""
    url = hostile({"/api/v1/adapters/mallory/x": _json(listing["version"])})  # answers ann/real:1
    with RegistryClient(url, cache=False, retries=0) as client, \
            pytest.raises(IntegrityError, match="answered ann/real:1 for mallory/x"):
        client.load_adapter(None, "mallory/x", cache_dir=tmp_path / "cache")  # type: ignore[arg-type]
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("body", [b"\x80abc", b"[" * 100_000, b'"a text"', b"null"],
                         ids=["not-utf8", "nested-too-deep", "a-json-text", "json-null"])
def test_an_error_answer_of_any_body_is_a_registry_error_not_a_traceback(hostile: Any, body: bytes) -> None:
    """An outsider's server answered errors whose bodies crashed the client (UnicodeDecodeError, RecursionError)."""
    def failing(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(500)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    url = hostile({"/api/v1/whoami": failing})
    with RegistryClient(url, cache=False, retries=0) as client, pytest.raises(RegistryError, match="HTTP 500"):
        client.whoami()


def test_pages_that_go_round_or_elsewhere_end(hostile: Any) -> None:
    """The client follows GET /orgs's `Link` to the next page only by its query, and stops at a page asked before: a
    server sending it round A -> B -> A read for ever; one naming another host gets no request (nor the token)."""
    asked: list[str] = []

    def organisations(handler: http.server.BaseHTTPRequestHandler) -> None:
        asked.append(handler.path)
        after = "b" if "after=a" in handler.path else "a"  # a, then b, then a again ...
        data = json.dumps([{"name": f"org-{len(asked)}", "description": "", "created_by": "ann",
                            "created_at": "2026-12-06T00:00:00Z", "members": []}]).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Link", f'<http://elsewhere.invalid/api/v1/orgs?after={after}&limit=1>; rel="next"')
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    url = hostile({"/api/v1/orgs": organisations})
    with RegistryClient(url, "vera_secret", cache=False, retries=0) as client:
        assert [o.name for o in client.organizations()] == ["org-1", "org-2", "org-3"]
    assert asked == ["/api/v1/orgs", "/api/v1/orgs?after=a&limit=1", "/api/v1/orgs?after=b&limit=1"]

"""The client's download cache and its faults, through a real server (and a real fault-injecting proxy): a second
fetch of a version is one small request and no download; damaged cache entries, damaged or broken-off downloads and
busy proxies recover or fail clearly, and nothing half-written is used or left behind."""

from __future__ import annotations

import base64
import json
import os
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from registry.client import RegistryClient, RegistryUnavailable
from registry.domain.errors import IntegrityError, RateLimited
from tests.commands import vera as run_vera
from tests.registry.adapters import make_adapter
from tests.registry.faulty_proxy import Fault, FaultyProxy, faulty_proxy
from tests.registry.servers import registry_in_thread

REF = "kim/cached"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("cache-server")
    with registry_in_thread(f"sqlite:///{tmp / 'r.db'}", tmp / "blobs") as url:
        with RegistryClient(url, cache=False) as client:
            client.publish(make_adapter(tmp / "a", seed=3), REF, base_model="tiny")
        yield url


@pytest.fixture
def proxy(server: str) -> Iterator[FaultyProxy]:
    with faulty_proxy(server) as proxy:
        yield proxy


def folder(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith((".part-", ".fetch-", ".sha256-")) or ".sha256-" in p.name]


def weights_url(proxy: FaultyProxy) -> str:
    """The hash-addressed URL of the version's safetensors (what a fault must match), through the proxy."""
    with RegistryClient(proxy.url, cache=False) as client:
        url = client.files(REF).files[1].url
    proxy.requests.clear()
    return url


def test_a_fetch_is_one_request_and_a_second_one_a_head_request(proxy: FaultyProxy, tmp_path: Path) -> None:
    with RegistryClient(proxy.url, cache=tmp_path / "cache", backoff_s=0.01) as client:
        client.fetch(REF, tmp_path / "one")
        assert len(proxy.requests) == 1  # the list, with the small files in it
        assert proxy.requests[0].startswith(f"GET /api/v1/adapters/{REF}/versions/latest/files?")
        assert "inline=1048576" in proxy.requests[0]
        proxy.requests.clear()
        client.fetch(REF, tmp_path / "two")
        assert len(proxy.requests) == 1 and proxy.requests[0].startswith("HEAD ")  # nothing downloaded
        assert folder(tmp_path / "two") == folder(tmp_path / "one")
        proxy.requests.clear()
        client.fetch(REF, tmp_path / "lora", as_lora=True)  # another form, not fetched before: its list and files
        assert len(proxy.requests) == 1 and proxy.requests[0].startswith("GET ") and "format=lora" in proxy.requests[0]
    proxy.requests.clear()
    with RegistryClient(proxy.url, cache=False, inline=0) as by_hash:  # the list, then each file by its hash
        by_hash.fetch(REF, tmp_path / "direct")
    assert len(proxy.requests) == 4 and sum("/versions/1/blobs/" in p for p in proxy.requests) == 3
    assert folder(tmp_path / "direct") == folder(tmp_path / "one")
    assert not leftovers(tmp_path)


def test_a_fetched_folder_is_written_whole_with_ordinary_permissions(proxy: FaultyProxy, tmp_path: Path) -> None:
    """A new folder is the temporary one renamed (with the permissions any new folder gets, not mkdtemp's 0700);
    into an existing one the fetched files are moved and the owner's other files stay."""
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "notes.txt").write_text("mine")
    (tmp_path / "old" / "README.md").write_text("stale")
    with RegistryClient(proxy.url, cache=False) as client:
        client.fetch(REF, tmp_path / "new")
        client.fetch(REF, tmp_path / "old")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o777 & ~umask
    assert folder(tmp_path / "old") == {**folder(tmp_path / "new"), "notes.txt": b"mine"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new", "old"]  # no temporary folder left


def test_a_moved_reference_is_noticed_and_a_damaged_list_is_not_used(server: str, proxy: FaultyProxy,
                                                                      tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with RegistryClient(proxy.url, cache=cache) as client:
        client.publish(make_adapter(tmp_path / "a1", seed=11), "kim/moving", base_model="tiny")
        assert client.fetch_files("kim/moving", tmp_path / "one").version.ref == "kim/moving:1"
        client.publish(make_adapter(tmp_path / "a2", seed=12), "kim/moving", base_model="tiny")
        proxy.requests.clear()
        assert client.fetch_files("kim/moving", tmp_path / "two").version.ref == "kim/moving:2"
        assert [p.split()[0] for p in proxy.requests] == ["HEAD", "GET"]  # latest moved: its list is fetched
        assert folder(tmp_path / "two") != folder(tmp_path / "one")
        (listing,) = [p for p in (cache / "lists").iterdir()
                      if json.loads(p.read_bytes())["version"]["ref"] == "kim/moving:2"]
        listing.write_text(listing.read_text().replace("kim/moving:2", "kim/moving:1"))  # no longer its digest
        proxy.requests.clear()
        assert client.fetch_files("kim/moving", tmp_path / "three").version.ref == "kim/moving:2"
        assert [p.split()[0] for p in proxy.requests] == ["HEAD", "GET"]  # the damaged list was not used
        assert json.loads(listing.read_bytes())["version"]["ref"] == "kim/moving:2"  # and is whole again
    assert folder(tmp_path / "three") == folder(tmp_path / "two")
    with RegistryClient(server, cache=False) as uncached:  # the same bytes as an uncached fetch of version 2
        uncached.fetch("kim/moving:2", tmp_path / "direct")
    assert folder(tmp_path / "direct") == folder(tmp_path / "two") and not leftovers(tmp_path)


def test_a_damaged_cache_entry_is_noticed_and_downloaded_again(proxy: FaultyProxy, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with RegistryClient(proxy.url, cache=cache) as client:
        client.fetch(REF, tmp_path / "one")
        biggest = max((cache / "blobs").iterdir(), key=lambda p: p.stat().st_size)
        biggest.write_bytes(biggest.read_bytes()[:-1] + b"\0")
        proxy.requests.clear()
        client.fetch(REF, tmp_path / "two")
        assert sum("/blobs/" in p for p in proxy.requests) == 1  # the damaged file alone
    assert folder(tmp_path / "two") == folder(tmp_path / "one")


def test_a_damaged_download_is_refused_and_nothing_is_kept(proxy: FaultyProxy, tmp_path: Path) -> None:
    url = weights_url(proxy)
    proxy.faults.append(Fault(url, "flip"))
    with RegistryClient(proxy.url, cache=tmp_path / "cache", inline=0) as client:
        with pytest.raises(IntegrityError, match="the registry listed; the download was damaged, fetch again"):
            client.fetch(REF, tmp_path / "out")
        assert not (tmp_path / "out").exists() and not leftovers(tmp_path)
        assert not (tmp_path / "cache" / "blobs" / url.rsplit("/", 1)[1]).exists()
        client.fetch(REF, tmp_path / "out")  # the next try is whole
    with RegistryClient(proxy.url, cache=False) as uncached:
        uncached.fetch(REF, tmp_path / "direct")
    assert folder(tmp_path / "out") == folder(tmp_path / "direct")


def test_broken_off_downloads_and_busy_proxies_are_retried(proxy: FaultyProxy, tmp_path: Path) -> None:
    proxy.faults += [Fault(weights_url(proxy), "cut", times=2), Fault("/versions/latest/files", "status")]
    with RegistryClient(proxy.url, cache=tmp_path / "cache", backoff_s=0.01, inline=0) as client:
        client.fetch(REF, tmp_path / "out")
    assert all(f.times == 0 for f in proxy.faults)
    with RegistryClient(proxy.url, cache=False) as uncached:
        uncached.fetch(REF, tmp_path / "direct")
    assert folder(tmp_path / "out") == folder(tmp_path / "direct") and not leftovers(tmp_path)


def test_retries_have_an_end_and_say_so(proxy: FaultyProxy, tmp_path: Path) -> None:
    proxy.faults.append(Fault(weights_url(proxy), "cut", times=10))
    with (RegistryClient(proxy.url, cache=tmp_path / "cache", retries=2, backoff_s=0.01, inline=0) as client,
          pytest.raises(RegistryUnavailable, match="broke off .*fetch again")):
        client.fetch(REF, tmp_path / "out")
    assert proxy.faults[0].times == 10 - 3 and not (tmp_path / "out").exists() and not leftovers(tmp_path)


def test_no_cache_when_asked(proxy: FaultyProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VERA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("VERA_NO_CACHE", "1")
    with RegistryClient(proxy.url) as client:
        assert client.cache is None
        client.fetch(REF, tmp_path / "out")
    assert not (tmp_path / "cache").exists()
    monkeypatch.delenv("VERA_NO_CACHE")
    with RegistryClient(proxy.url) as client:
        client.fetch(REF, tmp_path / "out2")
    assert list((tmp_path / "cache" / "blobs").iterdir())


def test_a_rate_limited_read_waits_as_retry_after_says_and_a_long_wait_is_reported(proxy: FaultyProxy,
                                                                                   tmp_path: Path) -> None:
    proxy.faults.append(Fault("/versions/latest", "status", status=429, headers={"Retry-After": "1"}))
    with RegistryClient(proxy.url, cache=False, backoff_s=0.01) as client:
        assert client.get(REF).ref == f"{REF}:1"  # waited a second, then sent again
        assert proxy.faults[0].times == 0
        proxy.faults.append(Fault("/versions/latest", "status", status=429, headers={"Retry-After": "3600"}))
        with pytest.raises(RateLimited):  # an hour is not waited for: the caller hears it
            client.get(REF)


@contextmanager
def answering(body: bytes) -> Iterator[str]:
    """A real HTTP server that answers every GET with ``body`` as JSON (a hostile or broken registry)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize(("field", "value", "message"), [
    ("content", base64.b64encode(b'{"r": 1}').decode(), "do not match the .* bytes and SHA-256"),
    ("content", "not base64!", "came inline as bad base64"),
    ("content", "QUFB" * 1000, "came inline as bad base64 .longer than its size"),
    ("sha256", "../../outside", "String should match pattern"),
    ("name", "../../outside.json", "not an adapter file"),
    ("url", "http://elsewhere.example/steal", "expected a path on the registry itself"),
    ("url", "//elsewhere.example/steal", "expected a path on the registry itself"),
])
def test_a_file_list_naming_paths_or_other_hosts_is_refused(server: str, tmp_path: Path, field: str, value: str,
                                                            message: str) -> None:
    """What the registry lists becomes cache paths and URLs the client sends its token to: a listing that names
    anything but adapter files under their hash, on the registry itself, is refused before anything is written."""
    manifest = httpx.get(f"{server}/api/v1/adapters/{REF}/versions/latest/files").json()
    manifest["files"][0][field] = value
    with (answering(json.dumps(manifest).encode()) as url,
          RegistryClient(url, "secret", cache=tmp_path / "cache", retries=0) as client,
          pytest.raises((IntegrityError, ValidationError), match=message)):
        client.fetch(REF, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.rglob("outside*"))


def test_a_registry_without_head_is_asked_with_get(server: str, tmp_path: Path) -> None:
    """A registry from before HEAD file lists (this stand-in answers only GET: HEAD is 501): the cached fetch
    falls back to the list itself, and still writes the same files."""
    manifest = httpx.get(f"{server}/api/v1/adapters/{REF}/versions/latest/files?inline=1048576").content
    with answering(manifest) as url, RegistryClient(url, cache=tmp_path / "cache", retries=0) as client:
        client.fetch(REF, tmp_path / "one")
        client.fetch(REF, tmp_path / "two")
    with RegistryClient(server, cache=False, inline=0) as direct:
        direct.fetch(REF, tmp_path / "direct")
    assert folder(tmp_path / "one") == folder(tmp_path / "two") == folder(tmp_path / "direct")


def test_a_form_forgotten_between_its_listing_and_its_download_is_listed_again(tmp_path: Path) -> None:
    """VERA_DERIVED_MAX_BYTES forgets the least recently built download forms (an outsider's finding, session 33):
    one forgotten after a client listed it answered the client's download with a 404. The client lists it again
    (which builds the same bytes) and fetches it, once."""
    import sqlite3

    with registry_in_thread(f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "blobs") as url, \
            RegistryClient(url, cache=False, inline=0) as client:
        client.publish(make_adapter(tmp_path / "a", seed=4), "kim/evicted", base_model="tiny")
        wanted = client.fetch_files("kim/evicted", tmp_path / "first", as_lora=True)
        obtain, forgotten = client._obtain, []

        def forget_then_obtain(*args: object, **kwargs: object) -> Path:
            if not forgotten:  # as the eviction of another version's build would, after the listing
                with sqlite3.connect(tmp_path / "r.db") as db:
                    forgotten.extend(db.execute("SELECT sha256 FROM version_files WHERE form = 'lora'").fetchall())
                    db.execute("DELETE FROM version_files WHERE form = 'lora'")
                for (digest,) in forgotten:
                    (tmp_path / "blobs" / "sha256" / digest[:2] / digest[2:4] / digest).unlink()
            return obtain(*args, **kwargs)  # type: ignore[arg-type]

        client._obtain = forget_then_obtain  # type: ignore[method-assign]
        again = client.fetch_files("kim/evicted", tmp_path / "second", as_lora=True)
        assert forgotten and again.files == wanted.files
        assert folder(tmp_path / "second") == folder(tmp_path / "first")


def test_offline_fetches_and_loads_what_this_machine_fetched_before_and_sends_nothing(
    server: str, tmp_path: Path,
) -> None:
    """VERA_OFFLINE=1, as HF_HUB_OFFLINE for huggingface_hub: no request at all (the offline client's connections
    are closed, so any request would fail); fetch and load_adapter by the reference used before (an alias or latest
    as it was pinned then), from the cache, re-hashed; anything else refused naming what to do."""
    from registry.client import RegistryOffline
    from tests.registry.adapters import LLAMA, vera_logits

    cache, models = tmp_path / "cache", tmp_path / "models"
    with RegistryClient(server, cache=cache) as online:
        online.set_alias(f"{REF}:1", "offline-test")
        online.fetch(REF, tmp_path / "online")
        want = vera_logits(online.load_adapter(LLAMA.make(), f"{REF}@offline-test", cache_dir=models))
    with RegistryClient(server, cache=cache, offline=True) as offline:
        offline.http.close()  # a request would fail here, not reach the registry
        offline.fetch(REF, tmp_path / "offline")
        assert folder(tmp_path / "offline") == folder(tmp_path / "online")
        for ref in (f"{REF}@offline-test", f"{REF}:1"):
            assert vera_logits(offline.load_adapter(LLAMA.make(), ref, cache_dir=models)).equal(want)
        fresh = tmp_path / "fresh-models"  # the version's folder not there yet: written from the cache
        assert vera_logits(offline.load_adapter(LLAMA.make(), f"{REF}@offline-test", cache_dir=fresh)).equal(want)
        with pytest.raises(RegistryOffline, match=r"kim/cached:7 was never fetched from .* into the cache at "):
            offline.fetch(f"{REF}:7", tmp_path / "never")
        with pytest.raises(RegistryOffline, match=r"Offline \(VERA_OFFLINE\): GET /api/v1/adapters was not sent"):
            offline.list_versions()
        assert not (tmp_path / "never").exists()
    # the CLI, by the environment variable alone
    env = {**os.environ, "VERA_OFFLINE": "1", "VERA_CACHE_DIR": str(cache), "VERA_REGISTRY_URL": server}
    env.pop("VERA_NO_CACHE", None)
    fetched = run_vera(["fetch", REF, "--out", str(tmp_path / "cli")], env=env)
    assert fetched.returncode == 0 and folder(tmp_path / "cli") == folder(tmp_path / "online"), fetched.stderr
    listing = run_vera(["ls"], env=env)
    assert listing.returncode == 1 and "Offline (VERA_OFFLINE)" in listing.stderr, listing.stderr
    for blob in (cache / "blobs").iterdir():  # a cache emptied meanwhile: said, not downloaded
        blob.unlink()
    with RegistryClient(server, cache=cache, offline=True) as offline, \
            pytest.raises(RegistryOffline, match="is no longer in the cache at"):
        offline.fetch(REF, tmp_path / "emptied")


def test_a_cached_list_is_told_the_versions_yank_as_it_is_now(server: str, tmp_path: Path) -> None:
    """A re-check (session 47): the cached file list, checked by its files' digest, kept the yank of its first fetch:
    a version yanked since was fetched without `vera fetch`'s warning, and one unyanked still warned."""
    with RegistryClient(server, cache=False) as owner:
        owner.publish(make_adapter(tmp_path / "y", seed=11), "kim/yanked", base_model="tiny")
    with RegistryClient(server, cache=tmp_path / "cache") as client:
        assert not client.fetch_files("kim/yanked:1", tmp_path / "a").version.yanked  # (listed: now cached)
        with RegistryClient(server, cache=False) as owner:
            owner.yank("kim/yanked:1", reason="leaks: use ñ:2 %20")
        again = client.fetch_files("kim/yanked:1", tmp_path / "b").version
        assert (again.yanked, again.yank_reason) == (True, "leaks: use ñ:2 %20")  # UTF-8 and a % as they were
        with RegistryClient(server, cache=False) as owner:
            owner.yank("kim/yanked:1", yanked=False)
        last = client.fetch_files("kim/yanked:1", tmp_path / "c").version
        assert (last.yanked, last.yank_reason) == (False, None)

"""Download counts (registry.services.downloads): counted in memory, added to the database in batches (UPSERT
increments, so processes add up), shown in listings; through real servers on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy.exc import SQLAlchemyError

from registry.client import RegistryClient
from registry.services.downloads import DownloadCounter
from registry.services.registry import Registry
from registry.store.blobs import FsspecBlobStore
from registry.store.database import Database
from tests.registry.adapters import make_adapter
from tests.registry.servers import registry_in_thread, running_server

WEIGHTS = "adapter_model.safetensors"


def downloads_of(registry: Registry) -> dict[str, int]:
    return {v.ref: v.downloads for v in registry.list_versions(limit=500).items}


def test_counts_stay_in_memory_until_flushed_and_processes_add_up(registry: Registry, tmp_path: Path) -> None:
    for i in range(2):
        registry.publish(make_adapter(tmp_path / f"s{i}", seed=i), owner="ann", name="a", base_model="tiny-llama")
    one, two = DownloadCounter(registry.db, flush_every_s=3600), DownloadCounter(registry.db, flush_every_s=3600)
    for _ in range(3):
        one.count("ann", "a", 1)
    one.count("ann", "a", 2)
    one.count("ghost", "gone", 1)  # deleted since, or never existed: dropped at the flush
    assert one.pending() == 5 and downloads_of(registry) == {"ann/a:1": 0, "ann/a:2": 0}  # no write per download
    assert one.flush() == 5 and one.pending() == 0
    assert downloads_of(registry) == {"ann/a:1": 3, "ann/a:2": 1}
    two.count("ann", "a", 1)
    two.count("ann", "a", 1)
    two.flush()
    assert one.flush() == 0  # nothing waiting: no transaction
    assert downloads_of(registry) == {"ann/a:2": 1, "ann/a:1": 5}  # added to, never overwritten
    assert registry.get("ann/a:1").downloads == 5


def test_counts_made_before_a_move_and_flushed_after_go_where_the_adapter_went(registry: Registry,
                                                                              tmp_path: Path) -> None:
    registry.publish(make_adapter(tmp_path / "s", seed=1), owner="ann", name="a", base_model="tiny-llama")
    registry.publish(make_adapter(tmp_path / "t", seed=2), owner="ann", name="b", base_model="tiny-llama")
    counter = DownloadCounter(registry.db, flush_every_s=3600)
    counter.count("ann", "a", 1)
    counter.count("ann", "a", 1)
    counter.count("ann", "b", 1)
    registry.move("ann/a", "ann/a2", actor="ann")
    registry.move("ann/a2", "bob/a3", actor="root")  # moved twice: the first name still leads to it
    registry.delete_adapter("ann/b", actor="ann")
    registry.publish(make_adapter(tmp_path / "u", seed=3), owner="ann", name="b", base_model="tiny-llama")
    assert counter.flush() == 3
    assert downloads_of(registry) == {"bob/a3:1": 2, "ann/b:2": 0}  # a deleted version's count is dropped


def test_concurrent_flushes_from_many_counters_lose_nothing(registry: Registry, tmp_path: Path) -> None:
    registry.publish(make_adapter(tmp_path / "s", seed=1), owner="ann", name="a", base_model="tiny-llama")
    errors: list[BaseException] = []

    def replica() -> None:
        counter = DownloadCounter(registry.db, flush_every_s=3600)
        try:
            for _ in range(10):
                counter.count("ann", "a", 1)
                counter.count("ann", "a", 1)
                counter.flush()
        except BaseException as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)

    threads = [threading.Thread(target=replica) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and registry.get("ann/a:1").downloads == 80


def test_a_full_batch_wakes_the_flusher_and_close_flushes_the_rest(registry: Registry, tmp_path: Path) -> None:
    registry.publish(make_adapter(tmp_path / "s", seed=1), owner="ann", name="a", base_model="tiny-llama")
    counter = DownloadCounter(registry.db, flush_every_s=3600, flush_every=3)
    counter.start()
    try:
        for _ in range(3):
            counter.count("ann", "a", 1)
        deadline = time.monotonic() + 10
        while registry.get("ann/a:1").downloads != 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert registry.get("ann/a:1").downloads == 3  # long before the hour
        counter.count("ann", "a", 1)
    finally:
        counter.close()
    assert registry.get("ann/a:1").downloads == 4 and counter.pending() == 0


def test_a_failed_flush_keeps_the_counts(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'r.db'}")  # no schema yet: the flush fails
    counter = DownloadCounter(db)
    counter.count("ann", "a", 1)
    with pytest.raises(SQLAlchemyError):
        counter.flush()
    assert counter.pending() == 1
    counter.close()  # logs, keeps, never raises
    db.engine.dispose()
    with pytest.raises(ValueError, match="flush every s > 0 seconds and n >= 1 downloads"):
        DownloadCounter(db, flush_every=0)


def test_downloads_through_a_server_appear_after_the_flush(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    with registry_in_thread(url, tmp_path / "blobs", VERA_DOWNLOAD_FLUSH_S="0.2") as base, \
            RegistryClient(base, "") as client:
        info = client.publish(make_adapter(tmp_path / "s", seed=1), "ann/a", base_model="tiny-llama")
        client.download(info.ref, WEIGHTS)
        client.download("ann/a@latest", WEIGHTS)
        client.download(info.ref, "adapter_config.json")  # not the weights: not a download
        etag = httpx.get(f"{base}/api/v1/adapters/ann/a/versions/1/files/{WEIGHTS}").headers["etag"]  # 3rd
        cached = httpx.get(f"{base}/api/v1/adapters/ann/a/versions/1/files/{WEIGHTS}",
                           headers={"If-None-Match": etag})
        assert cached.status_code == 304  # a revalidation: not a download
        hub = f"{base}/hf/ann/a/resolve/main/{WEIGHTS}"
        assert httpx.head(hub, follow_redirects=True).status_code == 200  # a HEAD: not a download
        assert httpx.get(hub, follow_redirects=True).status_code == 200  # 307 then the file: one download
        listing = f"{base}/api/v1/adapters/ann/a/versions/1/files"
        assert httpx.head(listing).status_code == 200  # a cache's check: not a download
        assert httpx.head(f"{listing}/{WEIGHTS}").status_code == 200  # a file's headers (405 before): not one
        assert httpx.head(base + httpx.get(listing).json()["files"][1]["url"]).status_code == 200  # nor by hash
        assert httpx.get(listing, params={"inline": 1 << 20}).json()["files"][1]["content"]  # the weights: 5th
        # read to be shown (the dashboard's Layers tab), by name or by hash: not a download
        assert client.download(info.ref, WEIGHTS, inspect=True) == client.download(info.ref, WEIGHTS)  # 6th
        by_hash = httpx.get(listing).json()["files"][1]["url"]
        assert httpx.get(base + by_hash, headers={"X-Vera-Purpose": "inspect"}).status_code == 200
        refused = httpx.get(base + by_hash, headers={"X-Vera-Purpose": "browse"})
        assert refused.status_code == 422 and "inspect" in refused.text  # says what it expected
        deadline = time.monotonic() + 20
        while client.get(info.ref).downloads < 6 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)  # two more flush intervals: an inspection counted by mistake would show now
        assert client.get(info.ref).downloads == 6
        assert [v.downloads for v in client.list_versions(owner="ann").items] == [6]
        assert httpx.get(f"{base}/hf/api/models/ann/a").json()["downloads"] == 6


def test_two_server_processes_on_one_database_add_up_at_shutdown(database_url: str, tmp_path: Path) -> None:
    never = {"VERA_DOWNLOAD_FLUSH_S": "3600", "VERA_DOWNLOAD_FLUSH_COUNT": "1000000"}  # only the shutdown flushes
    with running_server(database_url, tmp_path / "blobs", **never) as a, \
            running_server(database_url, tmp_path / "blobs", **never) as b, \
            RegistryClient(a, "") as first, RegistryClient(b, "") as second:
        info = first.publish(make_adapter(tmp_path / "s", seed=1), "ann/a", base_model="tiny-llama")
        for _ in range(2):
            first.download(info.ref, WEIGHTS)
        for _ in range(3):
            second.download(info.ref, WEIGHTS)
        assert first.get(info.ref).downloads == 0  # still in the processes' memory
    db = Database(database_url)
    try:
        assert Registry(db, FsspecBlobStore(str(tmp_path / "blobs"))).get(info.ref).downloads == 5
    finally:
        db.engine.dispose()


def test_a_download_in_pieces_counts_once(tmp_path: Path) -> None:
    """Each Range piece counted as a download, and so did a 416 (an outsider's finding, session 45): a download is
    counted when the answer holds the file from its first byte."""
    url = f"sqlite:///{tmp_path / 'r.db'}"
    with registry_in_thread(url, tmp_path / "blobs", VERA_DOWNLOAD_FLUSH_S="0.2") as base, \
            RegistryClient(base, "") as client:
        client.publish(make_adapter(tmp_path / "big", r=4096), "ann/big", base_model="tiny-llama")
        file = f"{base}/api/v1/adapters/ann/big/versions/1/files/{WEIGHTS}?projection=true"
        size = len(httpx.get(file, timeout=60).content)  # 1
        assert size > 1 << 20
        commit = httpx.get(f"{base}/hf/api/models/ann/big/revision/main+projection").json()["sha"]
        hub = f"{base}/hf/ann/big/resolve/{commit}/{WEIGHTS}"
        for where in (file, hub):
            for asked, status in (("bytes=0-99", 206), ("bytes=100-199", 206), ("bytes=200-", 206),
                                  (f"bytes={size}-", 416), ("bytes=-10", 206), ("bytes=5-1", 200)):
                answer = httpx.get(where, headers={"Range": asked}, timeout=60)
                assert answer.status_code == status, (where, asked, answer.status_code)
            # a Range whose If-Range is not the file's ETag is answered whole: a download (a re-check's finding)
            stale = httpx.get(where, headers={"Range": "bytes=100-", "If-Range": '"another"'}, timeout=60)
            assert stale.status_code == 200 and len(stale.content) == size
        # counted: the whole file, then 0-99, the ignored 5-1 and the stale If-Range, on each route
        deadline = time.monotonic() + 20
        while client.get("ann/big:1").downloads < 7 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)  # two more flushes: a piece counted by mistake would show now
        assert client.get("ann/big:1").downloads == 7


def test_a_large_file_answers_ranges_and_ignores_ranges_it_cannot_read(tmp_path: Path) -> None:
    """A file over 1 MiB is sent from storage as a file, which takes a Range (`Accept-Ranges: bytes`); a Range it
    cannot read (another unit, an end before its start) is ignored as RFC 9110 says, the whole file answered, where
    it was a 400 in plain text, not a problem document (an outsider's finding, session 43)."""
    url = f"sqlite:///{tmp_path / 'r.db'}"
    with registry_in_thread(url, tmp_path / "blobs") as base, RegistryClient(base, "") as client:
        client.publish(make_adapter(tmp_path / "big", r=4096), "ann/big", base_model="tiny-llama")
        file = f"{base}/api/v1/adapters/ann/big/versions/1/files/{WEIGHTS}?projection=true"
        whole = httpx.get(file, timeout=60)
        assert whole.status_code == 200 and len(whole.content) > 1 << 20, len(whole.content)
        assert whole.headers["accept-ranges"] == "bytes"
        part = httpx.get(file, headers={"Range": "bytes=8-17"}, timeout=60)
        assert part.status_code == 206 and part.content == whole.content[8:18], part.headers
        for unreadable in ("bytes=5-1", "items=0-1", "bytes=abc", "bytes", "bytes=--5", "bytes=+5-10"):
            answer = httpx.get(file, headers={"Range": unreadable}, timeout=60)
            assert answer.status_code == 200 and answer.content == whole.content, (unreadable, answer.text[:200])
        some = httpx.get(file, headers={"Range": f"bytes=0-9,{len(whole.content)}-"}, timeout=60)
        assert some.status_code == 206 and some.content == whole.content[:10]  # the range it can send is sent
        past = httpx.get(file, headers={"Range": f"bytes={len(whole.content)}-"}, timeout=60)
        assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{len(whole.content)}"
        size = len(whole.content)  # a problem document, saying the file's size (it was an empty text/plain)
        assert past.headers["content-type"] == "application/problem+json"
        assert past.json()["detail"] == (f"The Range 'bytes={size}-' asks for no byte of this file, which holds "
                                         f"{size:,} bytes: ask for bytes from 0 to {size - 1} (bytes=0-{size - 1}), "
                                         "or send no Range for the whole file.")
        stale = httpx.get(file, headers={"Range": f"bytes={size}-", "If-Range": '"another-etag"'}, timeout=60)
        assert stale.status_code == 200 and stale.content == whole.content  # If-Range not met: the whole file
        small = httpx.get(f"{base}/api/v1/adapters/ann/big/versions/1/files/adapter_config.json",
                          headers={"Range": "bytes=0-3"}, timeout=60)
        assert small.status_code == 200 and small.headers["accept-ranges"] == "none"  # read whole: said so
        # HEAD answers the GET's headers without the body (a 405 on /api, and "Accept-Ranges: none" on /hf whatever
        # the GET answered, until 2026-12-06)
        by_hash = base + httpx.get(f"{base}/api/v1/adapters/ann/big/versions/1/files?projection=true").json()[
            "files"][1]["url"]
        commit = httpx.get(f"{base}/hf/api/models/ann/big/revision/main+projection").json()["sha"]
        for url in (file, by_hash, f"{base}/hf/ann/big/resolve/{commit}/{WEIGHTS}", str(small.url)):
            got, head = httpx.get(url, timeout=60), httpx.head(url, timeout=60)
            assert got.headers["content-length"] == str(len(got.content))
            assert got.headers["accept-ranges"] == ("none" if url == small.url else "bytes")
            assert head.status_code == 200 and head.content == b"", (url, head.status_code)
            for name in ("etag", "content-length", "accept-ranges", "x-vera-version", "cache-control"):
                assert head.headers[name] == got.headers[name], (url, name)
            assert head.headers["content-type"] == got.headers["content-type"]
            assert "last-modified" not in got.headers and "last-modified" not in head.headers  # (the blob's mtime)
            # a weak tag or * matches too, as RFC 9110 says (200, the whole file, until 2026-12-06, and /hf answered
            # every If-None-Match whole)
            for tag in (head.headers["etag"], f"W/{head.headers['etag']}", f'"other", {head.headers["etag"]}', "*"):
                for method in ("GET", "HEAD"):
                    again = httpx.request(method, url, headers={"If-None-Match": tag}, timeout=60)
                    assert again.status_code == 304 and again.content == b"", (url, tag, method)
            assert httpx.get(url, headers={"If-None-Match": '"other"'}, timeout=60).status_code == 200
        if_range = httpx.get(file, headers={"Range": "bytes=0-9", "If-Range": whole.headers["etag"]}, timeout=60)
        assert if_range.status_code == 206 and if_range.content == whole.content[:10]
        by_date = httpx.get(file, headers={"Range": "bytes=0-9", "If-Range": "Sun, 06 Dec 2026 05:00:00 GMT"},
                            timeout=60)
        assert by_date.status_code == 200 and by_date.content == whole.content  # no date to match: the whole file
        missing = httpx.head(f"{base}/api/v1/adapters/ann/big/versions/1/files/notes.txt")
        assert missing.status_code == 404

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from registry.domain.errors import IntegrityError, NotFound, StorageUnavailable
from registry.store.blobs import CHUNK, FsspecBlobStore, sha256_hex


@pytest.fixture(params=["local", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> FsspecBlobStore:
    url = str(tmp_path / "blobs") if request.param == "local" else f"memory://vera-{uuid.uuid4().hex}"
    return FsspecBlobStore(url)


def test_put_get_exists_delete(store: FsspecBlobStore) -> None:
    digest = store.put(b"hello")
    assert digest == sha256_hex(b"hello") and store.exists(digest)
    assert store.put(b"hello") == digest  # idempotent
    assert store.get(digest) == b"hello"
    assert list(store.digests()) == [digest]
    store.delete(digest)
    assert not store.exists(digest)
    with pytest.raises(NotFound, match="missing from storage"):
        store.get(digest)


def test_corrupted_and_truncated_blobs_are_never_served(store: FsspecBlobStore) -> None:
    digest = store.put(b"some adapter bytes")
    path = store._path(digest)
    store.fs.pipe_file(path, b"some adapter byte")  # truncated in place
    with pytest.raises(IntegrityError, match=f"Blob {digest} is corrupted in storage"):
        store.get(digest)


def test_storing_the_same_bytes_again_repairs_a_damaged_copy(store: FsspecBlobStore, tmp_path: Path) -> None:
    """A blob cut short (a crash before its bytes reached the disk) or emptied was only freshened by a publish of
    the same bytes, which reported success and left the version unfetchable (an outsider's finding, session 26):
    storing them again writes them whole, from bytes and from a file. So is one of the right size whose bytes
    changed (a docs audit's finding, session 52: the guide's remedy, publish it again, did nothing), after a serve
    had checked it whole."""
    data = b"some adapter bytes"
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    for put in (store.put, lambda _: store.put_file(source)):
        digest = store.put(data)
        store.verified_local_path(digest)  # served once: its check remembered (for its size and time)
        for damage in (b"", b"some adapter", b"some adapter BYTES"):
            store.fs.pipe_file(store._path(digest), damage)
            with pytest.raises(IntegrityError):
                store.get(digest)
            assert put(data) == digest
            assert store.get(digest) == data


def test_names_are_checked(store: FsspecBlobStore) -> None:
    for bad in ("../../etc/passwd", "A" * 64, "abc"):
        with pytest.raises(NotFound, match="is not a blob name"):
            store.get(bad)


def test_local_writes_leave_no_temporary_files(tmp_path: Path) -> None:
    store = FsspecBlobStore(str(tmp_path / "blobs"))
    for i in range(5):
        store.put(f"blob {i}".encode())
    assert list((tmp_path / "blobs/tmp").iterdir()) == []
    assert len(list(store.digests())) == 5


def test_streamed_reads_hash_on_the_way_and_break_off_on_damage(store: FsspecBlobStore) -> None:
    data = bytes(range(256)) * (3 * CHUNK // 256)  # three pieces
    digest = store.put(data)
    reader = store.reader(digest)
    assert reader.size == len(data) and b"".join(reader) == data
    path = store._path(digest)
    store.fs.pipe_file(path, data[:-1] + b"\0")  # damaged in place
    pieces = iter(store.reader(digest))
    assert len(next(pieces)) == CHUNK  # what was read before the end went out ...
    with pytest.raises(IntegrityError, match="corrupted .* the download was cut off"):
        list(pieces)  # ... and the end never completes the download
    with pytest.raises(NotFound, match="missing from storage"):
        store.reader("0" * 64)


class FailingHandle:
    """A storage read that fails on its second piece (a connection reset half way)."""

    def __init__(self, handle: Any) -> None:
        self.handle, self.reads, self.closed = handle, 0, False

    def read(self, size: int) -> bytes:
        self.reads += 1
        if self.reads == 2:
            raise OSError("connection reset by peer")
        data: bytes = self.handle.read(size)
        return data

    def close(self) -> None:
        self.closed = True
        self.handle.close()


def test_a_read_that_fails_half_way_is_storage_unavailable_and_closes_its_handle(store: FsspecBlobStore) -> None:
    digest = store.put(b"y" * (2 * CHUNK + 1))
    reader = store.reader(digest)
    failing = reader.handle = FailingHandle(reader.handle)
    pieces = iter(reader)
    next(pieces)
    with pytest.raises(StorageUnavailable, match="failed while reading blob [0-9a-f]+ \\(OSError\\).*retry"):
        next(pieces)
    assert failing.closed


def test_a_local_blob_is_checked_once_then_trusted_until_it_changes(tmp_path: Path) -> None:
    store = FsspecBlobStore(str(tmp_path / "blobs"))
    digest = store.put(b"z" * 1000)
    path = store.verified_local_path(digest)
    assert path is not None and Path(path).read_bytes() == b"z" * 1000
    Path(path).write_bytes(b"q" * 999)  # another size: checked again
    with pytest.raises(IntegrityError):
        store.verified_local_path(digest)
    assert FsspecBlobStore(f"memory://vera-{uuid.uuid4().hex}").verified_local_path(digest) is None


def test_a_write_whose_folder_vanished_is_storage_unavailable(tmp_path: Path) -> None:
    """The blob folder removed (or a disk unmounted) under a running server: a 503 that says so, not a 500 from a
    FileNotFoundError (a re-check in session 14)."""
    import shutil

    store = FsspecBlobStore(str(tmp_path / "blobs"))
    kept = store.put(b"published before")
    shutil.rmtree(tmp_path / "blobs")
    with pytest.raises(StorageUnavailable, match="its folder is gone"):
        store.put(b"a publish's bytes")
    source = tmp_path / "file"
    source.write_bytes(b"a built download file")
    with pytest.raises(StorageUnavailable, match="its folder is gone"):
        store.put_file(source)
    # nothing made beneath the mount point: the folders of the blob were made anew before the write failed (an
    # operator's walk, session 48: "nothing was changed", and blobs/sha256/85/21 was there)
    assert not (tmp_path / "blobs").exists()
    # a read there is the storage gone, not a missing blob (it said "run vera fsck", which finds them all missing)
    for read in (store.get, store.reader):
        with pytest.raises(StorageUnavailable, match="The blob storage's folder is gone"):
            read(kept)

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from registry.domain.errors import IntegrityError, NotFound
from registry.store.blobs import FsspecBlobStore, sha256_hex


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
    with pytest.raises(IntegrityError, match=f"Blob {digest} .* is corrupted"):
        store.get(digest)


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

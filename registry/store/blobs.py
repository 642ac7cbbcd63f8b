"""Content-addressed blob storage behind one interface, through fsspec.

A blob's name is the SHA-256 of its bytes: ``<root>/sha256/ab/cd/abcd...``. Writes go to a temporary name and are
renamed into place (object stores publish whole objects anyway), so a partial blob never appears under a real
name. Every read re-hashes the bytes and refuses a blob that does not match its name.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator
from typing import Protocol

import fsspec
from fsspec.implementations.local import LocalFileSystem

from registry.domain.errors import IntegrityError, InvalidInput, NotFound

_HEX = frozenset("0123456789abcdef")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_name(digest: str) -> str:
    if len(digest) != 64 or not set(digest) <= _HEX:
        raise NotFound(f"{digest!r} is not a blob name; expected 64 lowercase hex digits (a SHA-256).")
    return digest


class BlobStore(Protocol):
    """What the registry needs from storage; ``FsspecBlobStore`` implements it for any fsspec URL."""

    url: str

    def put(self, data: bytes) -> str: ...

    def get(self, digest: str) -> bytes: ...

    def exists(self, digest: str) -> bool: ...

    def delete(self, digest: str) -> None: ...

    def digests(self) -> Iterator[str]: ...

    def check(self) -> None: ...

    def leftovers(self, min_age_s: float) -> list[str]: ...

    def remove_leftover(self, name: str) -> None: ...


class FsspecBlobStore:
    """Blobs in a local folder (the default) or any fsspec URL: s3://, gs://, memory:// (tests), ..."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            # no listing cache: another replica's writes and deletes must show in the next listing (gc, fsck)
            self.fs, root = fsspec.core.url_to_fs(url, use_listings_cache=False)
        except ImportError as exc:  # e.g. s3:// without s3fs
            raise InvalidInput(f"VERA_STORAGE_URL={url!r} needs a package that is not installed ({exc}); for S3: "
                               "pip install 'vera-registry[s3]'.") from exc
        self.root = root.rstrip("/")
        self._local = isinstance(self.fs, LocalFileSystem)
        self.fs.makedirs(f"{self.root}/sha256", exist_ok=True)
        if self._local:
            self.fs.makedirs(f"{self.root}/tmp", exist_ok=True)

    def _path(self, digest: str) -> str:
        return f"{self.root}/sha256/{digest[:2]}/{digest[2:4]}/{digest}"

    def put(self, data: bytes) -> str:
        """Store ``data`` (idempotent) and return its SHA-256."""
        digest = sha256_hex(data)
        path = self._path(digest)
        if self.fs.exists(path):
            return digest
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        if self._local:
            tmp = f"{self.root}/tmp/{uuid.uuid4().hex}"
            try:
                with self.fs.open(tmp, "wb") as handle:
                    handle.write(data)
                self.fs.mv(tmp, path)  # a rename on one filesystem: atomic
            finally:
                if self.fs.exists(tmp):
                    self.fs.rm(tmp)
        else:
            self.fs.pipe_file(path, data)  # object stores make a whole object visible at once
        return digest

    def get(self, digest: str) -> bytes:
        """The blob's bytes, re-hashed: a corrupted or truncated blob raises IntegrityError and is never served."""
        path = self._path(_check_name(digest))
        try:
            data: bytes = self.fs.cat_file(path)
        except FileNotFoundError:
            raise NotFound(f"Blob {digest} is missing from storage {self.url}; run `vera fsck` to report.") from None
        if sha256_hex(data) != digest:
            raise IntegrityError(
                f"Blob {digest} in {self.url} is corrupted ({len(data)} bytes hash to {sha256_hex(data)}); it will "
                "not be served. Run `vera fsck --repair` to quarantine it, then re-publish the version."
            )
        return data

    def exists(self, digest: str) -> bool:
        return bool(self.fs.exists(self._path(_check_name(digest))))

    def delete(self, digest: str) -> None:
        path = self._path(_check_name(digest))
        if self.fs.exists(path):
            self.fs.rm(path)

    def digests(self) -> Iterator[str]:
        """Every blob name present (for garbage collection and fsck)."""
        for path in self.fs.find(f"{self.root}/sha256"):
            name = path.rsplit("/", 1)[-1]
            if len(name) == 64 and set(name) <= _HEX:
                yield name

    def leftovers(self, min_age_s: float) -> list[str]:
        """Temporary files of writes that never finished (a process killed mid-put), older than ``min_age_s`` so
        that a write in progress is never among them. Object stores write whole objects: they leave none."""
        if not self._local:
            return []
        cutoff = time.time() - min_age_s
        return sorted(path.rsplit("/", 1)[-1] for path in self.fs.ls(f"{self.root}/tmp", detail=False)
                      if self.fs.modified(path).timestamp() < cutoff)

    def remove_leftover(self, name: str) -> None:
        if self._local and len(name) == 32 and set(name) <= _HEX:  # the uuid4 hex names put() gives them
            self.fs.rm(f"{self.root}/tmp/{name}")

    def check(self) -> None:
        """Raise if the storage cannot be reached (readiness). An object store has no folders: an empty bucket has
        no ``sha256/`` prefix yet, so there the bucket itself is what must answer."""
        if self._local:
            self.fs.ls(f"{self.root}/sha256")
        else:
            self.fs.ls(self.root.split("/", 1)[0], detail=False)

"""Content-addressed blob storage behind one interface, through fsspec.

A blob's name is the SHA-256 of its bytes: ``<root>/sha256/ab/cd/abcd...``. Writes go to a temporary name and are
renamed into place (object stores publish whole objects anyway), so a partial blob never appears under a real
name. Every read re-hashes the bytes and refuses a blob that does not match its name.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import IO, Protocol

import fsspec
from fsspec.implementations.local import LocalFileSystem

from registry.domain.errors import IntegrityError, InvalidInput, NotFound, ReadOnly, RegistryError, StorageUnavailable

log = logging.getLogger("vera.storage")
#: Below this much free space a local blob folder is not ready: publishes and download files would fail.
MIN_FREE_BYTES = 16 << 20
_HEX = frozenset("0123456789abcdef")
#: Reads stream in pieces of this size: a download holds one piece at a time, whatever the blob's size.
CHUNK = 1 << 20
#: Local blobs hashed once by this process are trusted until their size or modification time changes; at most this
#: many are remembered.
MAX_VERIFIED = 100_000


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def chunks(source: str | BlobReader) -> Iterator[bytes]:
    """The bytes of a checked local blob path or of a BlobReader, CHUNK by CHUNK."""
    if not isinstance(source, str):
        yield from source
        return
    with open(source, "rb") as handle:
        while chunk := handle.read(CHUNK):
            yield chunk


def _check_name(digest: str) -> str:
    if len(digest) != 64 or not set(digest) <= _HEX:
        raise NotFound(f"{digest!r} is not a blob name; expected 64 lowercase hex digits (a SHA-256).")
    return digest


class BlobStore(Protocol):
    """What the registry needs from storage; ``FsspecBlobStore`` implements it for any fsspec URL."""

    url: str

    def put(self, data: bytes) -> str: ...

    def put_file(self, path: str | os.PathLike[str]) -> str: ...

    def get(self, digest: str) -> bytes: ...

    def exists(self, digest: str) -> bool: ...

    def delete(self, digest: str) -> None: ...

    def digests(self) -> Iterator[str]: ...

    def age_s(self, digest: str) -> float | None: ...

    def check(self) -> None: ...

    def holds_any(self) -> bool: ...

    def leftovers(self, min_age_s: float) -> list[str]: ...

    def remove_leftover(self, name: str) -> None: ...

    def reader(self, digest: str) -> BlobReader: ...

    def verified_local_path(self, digest: str) -> str | None: ...

    def presigned_url(self, digest: str, expires_s: int) -> str | None: ...

    def guard_writes(self, names_blobs: Callable[[], bool]) -> None: ...


#: How long storage seen holding blobs is taken to be mounted before a write looks again (per process).
MOUNTED_RECHECK_S = 30.0


class BlobReader:
    """A blob read in CHUNK-sized pieces, hashed on the way: iterating yields its bytes, and a blob whose bytes do
    not match its name raises IntegrityError at its end (a download of it breaks off instead of completing). A
    storage failure part way raises StorageUnavailable. The handle is closed when iteration ends or stops."""

    def __init__(self, handle: IO[bytes], digest: str, size: int, url: str) -> None:
        self.handle, self.digest, self.size, self.url = handle, digest, size, url

    def __iter__(self) -> Iterator[bytes]:
        h = hashlib.sha256()
        try:
            with _storage(self.url, f"reading blob {self.digest}"):
                while chunk := self.handle.read(CHUNK):
                    h.update(chunk)
                    yield chunk
        finally:
            self.close()
        if h.hexdigest() != self.digest:
            log.warning("blob %s in %s is corrupted (it hashes to %s)", self.digest, self.url, h.hexdigest())
            raise IntegrityError(f"Blob {self.digest} is corrupted in storage (its bytes hash to {h.hexdigest()});"
                                 " the download was cut off. Run `vera fsck --repair`.")

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a broken connection must not hide the error that broke it
            self.handle.close()


@contextlib.contextmanager
def _storage(url: str, action: str, *, writing: bool = False) -> Iterator[None]:
    """Failures of the storage backend itself (a folder gone, an object store down or refusing) as
    StorageUnavailable: a 503 with what failed, never a 500. Missing files and the registry's own errors pass,
    except while ``writing``: a write that finds no file or folder found its own folder gone (a disk unmounted, the
    folder removed under a running server), which is storage that failed, not a missing blob. The answer names the
    kind of failure; where the storage is (a server's path, a bucket) and the error's own text go to the log only."""
    try:
        yield
    except FileNotFoundError as exc:
        if not writing:
            raise
        log.warning("blob storage %s: a write found its folder gone: %s", url, exc)
        raise StorageUnavailable("Blob storage failed while writing a blob (its folder is gone: a disk unmounted, "
                                 "or the folder removed?). Nothing was changed; check the storage (GET /ready, the "
                                 "server's log) and retry.") from exc
    except RegistryError:
        raise
    except Exception as exc:  # noqa: BLE001 - fsspec backends raise their own types (OSError, botocore, aiohttp)
        log.warning("blob storage %s failed while %s: %s: %s", url, action, type(exc).__name__, exc)
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise StorageUnavailable(f"Blob storage failed while {action} ({why}). Nothing was changed; check that the "
                                 "storage is reachable and writable (GET /ready, the server's log) and retry.") from exc


class FsspecBlobStore:
    """Blobs in a local folder (the default) or any fsspec URL: s3://, gs://, memory:// (tests), ... A ``read_only``
    store (VERA_READ_ONLY) creates no folder, refuses every write (ReadOnly) and needs no write access to be ready."""

    def __init__(self, url: str, *, read_only: bool = False) -> None:
        self.url, self.read_only = url, read_only
        try:
            # no listing cache: another replica's writes and deletes must show in the next listing (gc, fsck)
            self.fs, root = fsspec.core.url_to_fs(url, use_listings_cache=False)
        except ImportError as exc:  # e.g. s3:// without s3fs
            raise InvalidInput(f"VERA_STORAGE_URL={url!r} needs a package that is not installed ({exc}); for S3: "
                               "in the clone, `VERA_EXTRAS=s3 bash .ci/setup` (or `pip install -c requirements.lock -e "
                               "'.[s3]'`; with a wheel, its [s3] extra).") from exc
        self.root = root.rstrip("/")
        self._local = isinstance(self.fs, LocalFileSystem)
        self._verified: set[tuple[str, int, int]] = set()
        self._lock = threading.Lock()
        self._names_blobs: Callable[[], bool] | None = None
        self._mounted_until = 0.0
        if read_only:
            return
        with _storage(url, "opening the blob storage"):  # an object store that cannot be reached: one line
            self.fs.makedirs(f"{self.root}/sha256", exist_ok=True)
            if self._local:
                self.fs.makedirs(f"{self.root}/tmp", exist_ok=True)

    def _writing(self) -> None:
        """Refuse a write to a read-only store: the read-only mode's reads must write nothing, and one that tried
        fails here instead of writing. Refuse one to storage that looks unmounted too (guard_writes)."""
        if self.read_only:
            raise ReadOnly("This registry is read-only (VERA_READ_ONLY): it writes nothing to its blob storage; "
                           "nothing was changed.")
        if self._names_blobs is not None and time.monotonic() >= self._mounted_until:
            self._check_mounted(self._names_blobs)

    def guard_writes(self, names_blobs: Callable[[], bool]) -> None:
        """Refuse every write while this storage holds no blob but ``names_blobs()`` (the registry's database names
        some): a disk not mounted (the empty mount point beneath), or a VERA_STORAGE_URL that is not the registry's.
        A publish there would land where no other replica looks, and be lost when the disk comes back (an
        operator's walk, session 14). Storage seen holding blobs is not looked at again for MOUNTED_RECHECK_S."""
        self._names_blobs = names_blobs

    def _check_mounted(self, names_blobs: Callable[[], bool]) -> None:
        with _storage(self.url, "looking for blobs"):
            holds = self.holds_any()
        if holds:
            self._mounted_until = time.monotonic() + MOUNTED_RECHECK_S
        elif names_blobs():
            log.error("storage %s holds no blob, but the database names some: writes refused", self.url)
            raise StorageUnavailable("The blob storage holds no blob, but the registry's database names some: it is "
                                     "not mounted, or VERA_STORAGE_URL is not the registry's. Nothing was written; "
                                     "mount it (GET /ready says when it is back) and retry.")

    def _missing(self, digest: str) -> NotFound | StorageUnavailable:
        """The error for a blob not found: storage unavailable where a local store's whole blob folder is gone (a
        disk unmounted: it was "missing; run vera fsck", which reports every blob missing: an operator's walk,
        session 48), else NotFound."""
        if self._local and not os.path.isdir(f"{self.root}/sha256"):
            log.error("blob storage %s: its folder %s/sha256 is gone", self.url, self.root)
            return StorageUnavailable("The blob storage's folder is gone (a disk unmounted, or the folder moved or "
                                      "removed?); its operator must bring it back (GET /ready says when it is).")
        log.warning("blob %s is missing from storage %s", digest, self.url)  # where: for the operator only
        return NotFound(f"Blob {digest} is missing from storage; run `vera fsck` to report.")

    def _make_folder(self, path: str) -> None:
        """The folder of the blob ``path``. On a local disk only its two levels beneath ``sha256/`` are made, never
        the storage's own folder: a store whose folder was gone (a disk unmounted under a running server) made it
        anew beneath the mount point before the write failed (an operator's walk, session 48). A missing
        ``sha256/`` raises FileNotFoundError: storage unavailable (_storage)."""
        folder = path.rsplit("/", 1)[0]
        if not self._local:
            self.fs.makedirs(folder, exist_ok=True)  # object stores: no folders to make (fsspec's no-op)
            return
        for level in (folder.rsplit("/", 1)[0], folder):
            with contextlib.suppress(FileExistsError):
                os.mkdir(level)

    def _path(self, digest: str) -> str:
        return f"{self.root}/sha256/{digest[:2]}/{digest[2:4]}/{digest}"

    def put(self, data: bytes) -> str:
        """Store ``data`` (idempotent) and return its SHA-256. Bytes already there are freshened (their age starts
        again), as git freshens the objects it writes again: garbage collection deletes only unreferenced blobs
        older than its grace period, so a publish that reuses old unreferenced bytes does not lose them to a
        collection running meanwhile (registry.services.verification)."""
        self._writing()
        with _storage(self.url, "writing a blob", writing=True):
            return self._put(data)

    def _freshen(self, path: str, size: int, write: Callable[[], None]) -> bool:
        """True when ``path`` exists, its age restarted (touched on a local disk; ``write`` again on an object store,
        whose objects keep the time they were written). A local file of another size than the ``size`` bytes being
        stored is damaged (cut short by a crash, emptied): False, and the caller writes it again whole (a publish of
        the same bytes reported success over a 0-byte file, which fetch then refused; an outsider's finding), and so
        is one of the right size whose bytes no longer hash to its name (a publish of the same bytes reported success
        over it, and the version it made failed to verify and to download: a docs audit's finding, session 52, where
        the guide gives that publish as the remedy)."""
        if not self.fs.exists(path):
            return False
        if self._local:
            with contextlib.suppress(FileNotFoundError):  # deleted meanwhile: written below, as a new one
                if os.stat(path).st_size != size:
                    return False
                try:
                    self.verified_local_path(path.rsplit("/", 1)[-1])  # hashed once a process while unchanged
                except (IntegrityError, NotFound):
                    return False
                os.utime(path)
                return True
            return False
        write()
        return True

    @staticmethod
    def _durable(tmp: str) -> None:
        """Flush a local temporary file's bytes to the disk before it is renamed into place: after a power loss a
        blob's name never holds fewer bytes than it names (the rows that point at it are committed after)."""
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())

    def _put(self, data: bytes) -> str:
        digest = sha256_hex(data)
        path = self._path(digest)
        if self._freshen(path, len(data), lambda: self.fs.pipe_file(path, data)):
            return digest
        self._make_folder(path)
        if self._local:
            tmp = f"{self.root}/tmp/{uuid.uuid4().hex}"
            try:
                with self.fs.open(tmp, "wb") as handle:
                    handle.write(data)
                self._durable(tmp)
                self.fs.mv(tmp, path)  # a rename on one filesystem: atomic
            finally:
                if self.fs.exists(tmp):
                    self.fs.rm(tmp)
        else:
            self.fs.pipe_file(path, data)  # object stores make a whole object visible at once
        return digest

    def put_file(self, path: str | os.PathLike[str]) -> str:
        """Store the file at ``path`` (idempotent) and return its SHA-256, never reading it whole: hashed in pieces,
        then copied in (a local folder: to a temporary name, then renamed; an object store: uploaded, visible whole
        once complete)."""
        self._writing()
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while piece := handle.read(CHUNK):
                digest.update(piece)
        name = digest.hexdigest()
        target = self._path(name)
        with _storage(self.url, "writing a blob", writing=True):
            if self._freshen(target, os.path.getsize(path), lambda: self.fs.put_file(os.fspath(path), target)):
                return name
            self._make_folder(target)
            if not self._local:
                self.fs.put_file(os.fspath(path), target)
                return name
            tmp = f"{self.root}/tmp/{uuid.uuid4().hex}"
            try:
                self.fs.put_file(os.fspath(path), tmp)
                self._durable(tmp)
                self.fs.mv(tmp, target)  # a rename on one filesystem: atomic
            finally:
                if self.fs.exists(tmp):
                    self.fs.rm(tmp)
        return name

    def get(self, digest: str) -> bytes:
        """The blob's bytes, re-hashed: a corrupted or truncated blob raises IntegrityError and is never served."""
        path = self._path(_check_name(digest))
        try:
            with _storage(self.url, f"reading blob {digest}"):
                data: bytes = self.fs.cat_file(path)
        except FileNotFoundError:
            raise self._missing(digest) from None
        if sha256_hex(data) != digest:
            raise IntegrityError(
                f"Blob {digest} is corrupted in storage ({len(data)} bytes hash to {sha256_hex(data)}); it will "
                "not be served. Copy it back from a backup of the blob folder and verify the version again, or run "
                "`vera fsck --repair` (which deletes it and marks the versions using it failed) and re-publish them."
            )
        return data

    def exists(self, digest: str) -> bool:
        with _storage(self.url, f"looking for blob {digest}"):
            return bool(self.fs.exists(self._path(_check_name(digest))))

    def reader(self, digest: str) -> BlobReader:
        """The blob opened for a streamed, hash-checked read (BlobReader); NotFound if it is missing."""
        path = self._path(_check_name(digest))
        try:
            with _storage(self.url, f"opening blob {digest}"):
                size = int(self.fs.size(path))
                handle = self.fs.open(path, "rb", block_size=CHUNK)  # noqa: SIM115 - BlobReader closes it
        except FileNotFoundError:
            raise self._missing(digest) from None
        return BlobReader(handle, digest, size, self.url)

    def verified_local_path(self, digest: str) -> str | None:
        """For a local folder, the blob's path once its bytes were checked against its name (hashed in CHUNK pieces
        the first time this process serves it, again whenever its size or modification time changes), so that it
        can be sent as a file; None for other storage. IntegrityError if it does not match, NotFound if absent."""
        if not self._local:
            return None
        path = self._path(_check_name(digest))
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            raise self._missing(digest) from None
        key = (path, stat.st_size, stat.st_mtime_ns)
        if key in self._verified:
            return path
        for _ in self.reader(digest):  # raises IntegrityError at the end if the bytes do not match
            pass
        with self._lock:
            if len(self._verified) >= MAX_VERIFIED:
                self._verified.clear()
            self._verified.add(key)
        return path

    def presigned_url(self, digest: str, expires_s: int) -> str | None:
        """A URL that lets anyone holding it GET the blob for ``expires_s`` seconds, straight from the object store
        (S3 and compatible ones: s3fs's presigned GET); None where the storage cannot sign (a local folder)."""
        sign = getattr(self.fs, "url", None)  # s3fs (and gcsfs) sign; a local or in-memory filesystem cannot
        if self._local or not callable(sign):
            return None
        with _storage(self.url, f"signing a download of blob {digest}"):
            return str(sign(self._path(_check_name(digest)), expires=expires_s))

    def delete(self, digest: str) -> None:
        self._writing()
        path = self._path(_check_name(digest))
        with contextlib.suppress(FileNotFoundError):  # gone already (another collection, fsck): what was asked
            self.fs.rm(path)

    def digests(self) -> Iterator[str]:
        """Every blob name present (for garbage collection and fsck)."""
        for path in self.fs.find(f"{self.root}/sha256"):
            name = path.rsplit("/", 1)[-1]
            if len(name) == 64 and set(name) <= _HEX:
                yield name

    def age_s(self, digest: str) -> float | None:
        """Seconds since the blob was last written (or freshened by a put of the same bytes); None if it is gone."""
        try:
            with _storage(self.url, f"looking at blob {digest}"):
                written: datetime = self.fs.modified(self._path(_check_name(digest)))
                return time.time() - written.timestamp()
        except FileNotFoundError:
            return None

    def leftovers(self, min_age_s: float) -> list[str]:
        """Temporary files of writes that never finished (a process killed mid-put), older than ``min_age_s`` so
        that a write in progress is never among them. Object stores write whole objects: they leave none."""
        if not self._local:
            return []
        cutoff = time.time() - min_age_s
        old = []
        for path in self.fs.ls(f"{self.root}/tmp", detail=False):
            with contextlib.suppress(FileNotFoundError):  # a write in progress finished meanwhile (renamed)
                if self.fs.modified(path).timestamp() < cutoff:
                    old.append(path.rsplit("/", 1)[-1])
        return sorted(old)

    def remove_leftover(self, name: str) -> None:
        self._writing()
        if self._local and len(name) == 32 and set(name) <= _HEX:  # the uuid4 hex names put() gives them
            with contextlib.suppress(FileNotFoundError):  # another collection took it first
                self.fs.rm(f"{self.root}/tmp/{name}")

    def check(self) -> None:
        """Raise if the storage cannot be reached (readiness); a local folder must also be writable and have room
        (a read-only or full disk failed every publish and first download while /ready said ok). An object store
        has no folders: an empty bucket has no ``sha256/`` prefix yet, so there the bucket itself is what must
        answer (a write probe there would be a paid request a second per process). A read-only store needs only to
        be read."""
        if not self._local:
            self.fs.ls(self.root.split("/", 1)[0], detail=False)
            return
        self.fs.ls(f"{self.root}/sha256")
        if self.read_only:
            return
        if not os.access(f"{self.root}/tmp", os.W_OK):
            raise StorageUnavailable("the blob folder is not writable (a read-only disk or mount?)")
        if (free := shutil.disk_usage(self.root).free) < MIN_FREE_BYTES:
            raise StorageUnavailable(f"the blob folder's disk is full ({free:,} bytes free)")

    def holds_any(self) -> bool:
        """Whether any blob is stored: a file, not only folders (a leftover empty ``sha256/ab/cd`` is no blob)."""
        if self._local:
            return any(files for _folder, _subfolders, files in os.walk(f"{self.root}/sha256"))  # stops at one
        try:  # an object store has no empty folders: a prefix is there only while an object is under it
            return bool(self.fs.ls(f"{self.root}/sha256", detail=False))
        except FileNotFoundError:
            return False

"""Derived files made once: what a download returns (the PEFT folder's config, README and safetensors, seed-only or
with projections, or the equivalent LoRA with given options) is built at most once per version and form, stored as
content-addressed blobs (kind ``derived``) and listed in ``version_files``; every later download, on any replica and
after any restart, streams the stored blob. A version's bytes never change, so neither do these files, and their
SHA-256 addresses them for good (immutable downloads, the client's cache).

A derived blob that went missing or whose bytes no longer match its name is built again from the version's own
blobs on the next request (``source``), and `vera fsck --repair` forgets such files so that they are rebuilt; `vera
gc` removes derived blobs no version lists any more.

A read-only registry (VERA_READ_ONLY) serves the forms the registry stored, and builds one nobody asked for yet (or
one whose stored copy is missing or damaged) into a temporary folder of its own process (``Scratch``), listed in
memory: neither its database nor its blob storage is written.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import tempfile
import threading
import weakref
import zlib
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pybase64
from sqlalchemy import Select, bindparam, delete, func, select
from sqlalchemy.exc import IntegrityError as DatabaseConflict
from sqlalchemy.orm import Session

from registry.domain.errors import IntegrityError, InvalidInput, NotFound
from registry.domain.schemas import ADAPTER_FILES, DERIVED_MAX_BYTES, SCRATCH_BYTES, Ref, VersionInfo
from registry.services.file_cache import BuiltFiles
from registry.services.lookup import naming, naming_params, resolve, resolve_info
from registry.services.versions import Versions
from registry.store import models as m
from registry.store.blobs import BlobReader, BlobStore, FsspecBlobStore, chunks
from registry.store.database import Database
from vera_core.headers import metadata_of
from vera_core.lora_options import VLLM_MAX_RANK, LoraExport

DERIVED = "derived"
#: Builds of the same version and form in one process wait for each other (one lock per bucket of keys).
_LOCKS = [threading.Lock() for _ in range(64)]
#: ``read`` gives whole files up to this size (configs, READMEs); larger ones are streamed (``source``).
MAX_READ_BYTES = 16 * 2**20


@dataclass(frozen=True)
class FileForm:
    """Which files a download asks for: VeRA (default: what PEFT loads; ``with_projection``: A and B always
    materialised; ``seed_only``: never), or the equivalent LoRA with ``lora``'s options."""

    with_projection: bool = False
    seed_only: bool = False
    lora: LoraExport | None = None

    @property
    def key(self) -> str:
        """The form's name in version_files: ``vera``, ``vera+projection``, ``vera+seed-only``, ``lora`` or e.g.
        ``lora:r<=8,bfloat16,vllm<=512`` (at most 64 characters: the rank is at most MAX_RANK)."""
        if self.lora is None:
            return "vera+projection" if self.with_projection else "vera+seed-only" if self.seed_only else "vera"
        options = [f"r<={self.lora.max_rank}" if self.lora.max_rank else "",
                   self.lora.dtype if self.lora.dtype != "float32" else "",
                   # not "vllm", the name of exports for vLLM that snapped the rank down (until 2026-12-05): those
                   # stored forms are never served again (evicted as any other), and are rebuilt under this name
                   f"vllm<={VLLM_MAX_RANK}" if self.lora.for_vllm else ""]
        return ":".join(["lora", ",".join(o for o in options if o)]).rstrip(":")


class NotBuilt(NotFound):
    """The form's files were never built (``DerivedFiles.manifest(..., build=False)``; the API builds them then)."""


@dataclass(frozen=True)
class DerivedFile:
    """One stored file of a version in one form."""

    version_id: int
    form: str
    filename: str
    sha256: str
    size: int


def _lock_of(version_id: int, form: str) -> threading.Lock:
    """The lock that builds of one version and form in this process take (one per bucket of keys)."""
    return _LOCKS[zlib.crc32(f"{version_id}/{form}".encode()) % len(_LOCKS)]


#: A read-only registry's process keeps the forms it built itself (Scratch) in a temporary folder named with this
#: prefix and the process's id, at most SCRATCH_BYTES unless VERA_READ_ONLY_SCRATCH_BYTES says otherwise.
SCRATCH_PREFIX = "vera-read-only-"


class Scratch:
    """The download forms a read-only registry (VERA_READ_ONLY) built itself, because the registry stored none
    (nobody asked for them yet) or its copy is damaged: their files in a temporary folder of this process (TMPDIR),
    never in the registry's storage, and listed in memory, never in version_files. At most ``max_bytes``: the least
    recently used form is forgotten first (the one just built is always kept), and built again if asked for. The
    folder goes when the process stops (``close``; that of a process that was killed, when the next one starts)."""

    def __init__(self, max_bytes: int = SCRATCH_BYTES) -> None:
        _remove_stale_scratch()
        self.folder = tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-")
        self._finalizer = weakref.finalize(self, shutil.rmtree, self.folder, ignore_errors=True)
        self.blobs, self.max_bytes = FsspecBlobStore(self.folder), max_bytes
        self._forms: OrderedDict[tuple[int, str], list[DerivedFile]] = OrderedDict()
        self._lock = threading.Lock()

    def listed(self, version_id: int, form: str) -> list[DerivedFile]:
        with self._lock:
            files = self._forms.get((version_id, form), [])
            if files:
                self._forms.move_to_end((version_id, form))
            return list(files)

    def by_digest(self, version_id: int, digest: str) -> DerivedFile | None:
        with self._lock:
            return next((f for (held, _), files in self._forms.items() if held == version_id for f in files
                         if f.sha256 == digest), None)

    def holds(self, digest: str) -> bool:
        with self._lock:
            return any(f.sha256 == digest for files in self._forms.values() for f in files)

    def record(self, files: list[DerivedFile]) -> None:
        """List a form built into ``self.blobs``; forget the least recently used ones beyond ``max_bytes``."""
        if not files:
            return
        with self._lock:
            key = (files[0].version_id, files[0].form)
            self._forms[key] = files
            self._forms.move_to_end(key)
            forgotten: set[str] = set()
            while len(self._forms) > 1 and self._held() > self.max_bytes:
                forgotten |= {f.sha256 for f in self._forms.popitem(last=False)[1]}
            forgotten -= {f.sha256 for files in self._forms.values() for f in files}
        for digest in forgotten:  # a read that opened it goes on reading; a later one builds it again (source)
            self.blobs.delete(digest)

    def forget(self, version_id: int, form: str) -> None:
        with self._lock:
            self._forms.pop((version_id, form), None)

    def _held(self) -> int:
        return sum({f.sha256: f.size for files in self._forms.values() for f in files}.values())

    def close(self) -> None:
        """Forget every form and remove the folder."""
        with self._lock:
            self._forms.clear()
        self._finalizer()


def _remove_stale_scratch() -> None:
    """Remove the Scratch folders of processes that no longer run (killed: nothing removed them)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*-*"):
        pid = folder.name.removeprefix(SCRATCH_PREFIX).partition("-")[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except OSError:  # another user's process, alive: not ours to touch
            continue


class DerivedFiles:
    def __init__(self, db: Database, blobs: BlobStore, versions: Versions, *, scratch_bytes: int = SCRATCH_BYTES,
                 max_bytes: int = DERIVED_MAX_BYTES) -> None:
        self.db, self.blobs, self.versions, self.scratch_bytes = db, blobs, versions, scratch_bytes
        self.max_bytes = max_bytes
        self._lora_errors: dict[str, str | None] = {}
        self._git_ids: dict[str, str] = {}
        self._scratch: Scratch | None = None  # a read-only registry's own builds, made on its first one
        self._scratch_lock = threading.Lock()

    def scratch(self) -> Scratch:
        """Where this read-only registry builds the forms the registry has not stored (Scratch)."""
        with self._scratch_lock:
            if self._scratch is None:
                self._scratch = Scratch(self.scratch_bytes)
            return self._scratch

    def close(self) -> None:
        """Remove what this process built for itself (a read-only registry's Scratch), when it stops serving."""
        with self._scratch_lock:
            scratch, self._scratch = self._scratch, None
        if scratch is not None:
            scratch.close()

    def manifest(self, ref: str | Ref, form: FileForm, *, build: bool = True) -> tuple[VersionInfo, list[DerivedFile]]:
        """The version's files in ``form``, built and stored first if no download asked for them before (without
        ``build``, NotBuilt instead: the API's read threads leave a build, which may wait for a projection slot,
        to its general pool). A read-only registry builds them into its Scratch instead of storing them."""
        with self.db.session() as s:
            v, info = resolve_info(s, ref)
            version_id = v.id
            files = _listed(s, version_id, form.key)
        if not files and self._scratch is not None:
            files = self._scratch.listed(version_id, form.key)
        if files:
            return info, files
        if not build:
            raise NotBuilt(f"{info.pinned} has no {form.key} files yet.")
        return info, self._build(info.pinned, version_id, form)

    def listing(self, ref: str | Ref, form: FileForm, *, build: bool = True) -> Listing:
        """The pinned version (owner/name:N), its files in ``form`` and whether it is yanked (and why), without the
        rest of the version's metadata: one query when they were built before (a client's check that its cached copy
        is current), else ``manifest``."""
        ref = Ref.parse(ref) if isinstance(ref, str) else ref
        with self.db.session() as s:
            rows = s.execute(_listing(ref.version is not None), {**naming_params(ref), "form": form.key}).all()
        if not rows:  # not built yet, or missing: manifest builds the files or says what is missing
            info, files = self.manifest(ref, form, build=build)
            return Listing(info.pinned, files, info.yanked, info.yank_reason)
        number, yanked, reason = rows[0][:3]
        return Listing(Ref.of(ref.owner, ref.name, version=number), _in_order(_derived(row[3]) for row in rows),
                       bool(yanked), reason)

    def file(self, ref: str | Ref, form: FileForm, filename: str) -> tuple[VersionInfo, DerivedFile]:
        """One file of the version in ``form``; NotFound naming the form's files if it has no ``filename``."""
        info, files = self.manifest(ref, form)
        return info, named(info, form, files, filename)

    def by_digest(self, ref: Ref, digest: str) -> DerivedFile:
        """Version ``ref``'s (owner/name:N) stored file with this SHA-256, in any form it was built in: one indexed
        query (the hot path of every download by hash); NotFound naming what is missing."""
        if ref.version is None:
            raise InvalidInput(f"A file by hash needs a version number, not {ref}.")
        with self.db.session() as s:
            row = s.scalars(select(m.VersionFile)
                            .join(m.AdapterVersion, m.AdapterVersion.id == m.VersionFile.version_id)
                            .join(m.Adapter, m.Adapter.id == m.AdapterVersion.adapter_id)
                            .where(m.Adapter.owner == ref.owner, m.Adapter.name == ref.name,
                                   m.AdapterVersion.version == ref.version, m.VersionFile.sha256 == digest)
                            .limit(1)).first()
            if row is None:
                v = resolve(s, ref)  # NotFound if the adapter or the version is missing
                if self._scratch is not None and (built := self._scratch.by_digest(v.id, digest)) is not None:
                    return built
                raise NotFound(f"{ref} has no file with SHA-256 {digest[:64]!r}; list its files with GET "
                               f".../versions/{ref.version}/files.")
            return _derived(row)

    def source(self, ref: Ref, file: DerivedFile, *, local: bool = True) -> str | BlobReader:
        """Where to read ``file`` from: a checked local path (``local``, for a local folder) or a streamed reader.
        A stored copy that is missing or damaged is built again once from the version's own blobs (``ref``:
        owner/name:N)."""
        for attempt in range(2):
            try:
                if (store := self._store_of(file.sha256)) is not self.blobs:  # built here (read-only)
                    return store.reader(file.sha256)  # opened now: read whole even if forgotten meanwhile
                path = self.blobs.verified_local_path(file.sha256) if local else None
                return path if path is not None else self.blobs.reader(file.sha256)
            except (NotFound, IntegrityError):
                if attempt:
                    raise
                self._rebuild(ref, file)
        raise AssertionError("unreachable: the second attempt returns or raises")

    def presigned_url(self, file: DerivedFile, expires_s: int) -> str | None:
        """A URL of the object store that serves ``file`` for ``expires_s`` seconds (BlobStore.presigned_url); None
        where the storage cannot sign, and for a file this read-only registry built itself, which only it holds."""
        if self._store_of(file.sha256) is not self.blobs:
            return None
        return self.blobs.presigned_url(file.sha256, expires_s)

    def _store_of(self, digest: str) -> BlobStore:
        """Where a file's bytes are: this read-only registry's Scratch when it built them, else the storage."""
        scratch = self._scratch
        return scratch.blobs if scratch is not None and scratch.holds(digest) else self.blobs

    def read(self, ref: Ref, file: DerivedFile) -> bytes:
        """A small stored file's bytes (a config, a README), checked against its hash."""
        if file.size > MAX_READ_BYTES:
            raise InvalidInput(f"{file.filename} of {ref} is {file.size:,} bytes; only files up to "
                               f"{MAX_READ_BYTES:,} bytes are read whole.")
        return b"".join(chunks(self.source(ref, file)))

    def base64(self, ref: Ref, file: DerivedFile) -> str:
        """A small stored file's bytes in base64 (a file list's inline content), kept in the file cache by its hash:
        the text a hash names never changes, and a hot version's list is then served without reading storage."""
        key = ("base64", file.sha256)
        if (kept := self.versions.cache.get(key)) is not None:
            return kept.files["base64"].decode("ascii")
        text = pybase64.b64encode(self.read(ref, file))
        self.versions.cache.put(key, BuiltFiles(files={"base64": text}, sha256={}))
        return text.decode("ascii")

    def git_blob_id(self, ref: Ref, file: DerivedFile) -> str:
        """The stored file's git blob id (git_blob_id), computed by streaming it once per process and file."""
        if file.sha256 not in self._git_ids:
            if len(self._git_ids) > 100_000:
                self._git_ids.clear()
            self._git_ids[file.sha256] = git_blob_id(chunks(self.source(ref, file)), file.size)
        return self._git_ids[file.sha256]

    def lora_max_relative_error(self, file: DerivedFile, files: list[DerivedFile]) -> str | None:
        """The largest per-layer error a rank-capped LoRA export recorded in its safetensors metadata (read from the
        stored header once per weights file), or None."""
        weights = next((f for f in files if f.filename == ADAPTER_FILES[1]), None)
        if weights is None:
            return None
        if weights.sha256 not in self._lora_errors:
            reader = self._store_of(weights.sha256).reader(weights.sha256)
            try:
                metadata = metadata_of(reader.handle)
            except ValueError:  # not a safetensors file (a damaged blob, which verify reports): no error to say
                metadata = {}
            finally:
                reader.close()
            if len(self._lora_errors) > 10_000:
                self._lora_errors.clear()
            self._lora_errors[weights.sha256] = metadata.get("vera_core.lora_max_relative_error")
        return self._lora_errors[weights.sha256]

    def _build(self, pinned: Ref, version_id: int, form: FileForm) -> list[DerivedFile]:
        """Build the files (Versions.built), store each blob, then list them; two builds of the same version and
        form in this process run one after the other, and one on another replica at the same time stores the same
        bytes (content-addressed) and the same rows (the second insert is dropped)."""
        with _lock_of(version_id, form.key):
            with self.db.session() as s:
                if files := _listed(s, version_id, form.key):
                    return files
            if self.db.read_only:
                return self._built_here(pinned, version_id, form)
            files = self._stored(pinned, version_id, form, self.blobs)
            try:
                with self.db.session() as s:
                    _record(s, files)
                    evicted = _evict(s, version_id, keep=form.key)
                    evicted |= _evict_over(s, self.max_bytes, keep=(version_id, form.key))
            except DatabaseConflict:  # another replica listed them first, or the version was deleted meanwhile
                with self.db.session() as s:
                    if listed := _listed(s, version_id, form.key):
                        return listed
                    resolve(s, pinned)  # NotFound if it was deleted
                raise
            self._collect(evicted)
            return files

    def _collect(self, digests: set[str]) -> None:
        """Remove at once the blobs of forgotten forms that nothing lists any more (rows, then bytes), instead of
        leaving them to `vera gc`; a blob first recorded as something else (a version's vectors) is never
        touched. A build elsewhere that stores the same bytes meanwhile may find them gone: its download rebuilds
        them (by_digest), and `vera fsck` reports it."""
        if not digests:
            return
        with self.db.session() as s:
            listed = set(s.scalars(select(m.VersionFile.sha256).where(m.VersionFile.sha256.in_(digests))))
            gone = [b for b in s.scalars(select(m.Blob).where(m.Blob.sha256.in_(digests - listed)))
                    if b.kind == DERIVED]
            for blob in gone:
                s.delete(blob)
        for blob in gone:
            self.blobs.delete(blob.sha256)

    def _built_here(self, pinned: Ref, version_id: int, form: FileForm) -> list[DerivedFile]:
        """A read-only registry's build: into its Scratch, listed in memory (the caller holds the form's lock)."""
        scratch = self.scratch()
        if files := scratch.listed(version_id, form.key):
            return files
        files = self._stored(pinned, version_id, form, scratch.blobs)
        scratch.record(files)
        return files

    def _stored(self, pinned: Ref, version_id: int, form: FileForm, store: BlobStore) -> list[DerivedFile]:
        """Build the form's files and put each blob in ``store``: written to a temporary folder piece by piece where
        the form materialises projections the seed regenerates or is a LoRA export (Versions.write_streamed: a
        7B-scale export never held whole), else built in memory (Versions.built)."""
        with tempfile.TemporaryDirectory(prefix="vera-build-") as folder:
            paths = self.versions.write_streamed(pinned, Path(folder), with_projection=form.with_projection,
                                                 seed_only=form.seed_only, lora=form.lora)
            if paths is not None:
                return [DerivedFile(version_id, form.key, name, store.put_file(path), path.stat().st_size)
                        for name, path in paths.items()]
        _, built = self.versions.built(pinned, with_projection=form.with_projection, seed_only=form.seed_only,
                                       as_lora=form.lora is not None, lora=form.lora)
        for data in built.files.values():
            store.put(data)
        return [DerivedFile(version_id, form.key, name, built.sha256[name], len(data))
                for name, data in built.files.items()]

    def _rebuild(self, pinned: Ref, file: DerivedFile) -> None:
        """Store ``file``'s bytes again (a damaged copy is deleted first): the same version and form build the same
        bytes, so its name, rows and every client's cached copy stay right. A read-only registry leaves the stored
        copy and its rows as they are (`vera fsck` on the primary reports them) and builds its own (Scratch)."""
        form = _form_of(file.form)
        if self.db.read_only:
            with _lock_of(file.version_id, form.key):
                self.scratch().forget(file.version_id, file.form)
                self._built_here(pinned, file.version_id, form)
            return
        self.blobs.delete(file.sha256)
        with self.db.session() as s:
            forget(s, file.version_id, file.form)
        self._build(pinned, file.version_id, form)


def named(info: VersionInfo, form: FileForm, files: list[DerivedFile], filename: str) -> DerivedFile:
    """The file called ``filename`` among a form's ``files``; NotFound naming the files it has otherwise."""
    found = next((f for f in files if f.filename == filename), None)
    if found is None:
        raise NotFound(f"The {form.key} download of {info.ref} has no {filename}; it has "
                       f"{', '.join(f.filename for f in files)}.")
    return found


#: The most forms one version keeps stored (the default downloads, LoRA in a few dtypes and ranks): building one
#: more forgets the least recently built (its blobs, unless listed elsewhere, go at once; asked for again, it is
#: built again), so that asking for many rank-capped exports of one small adapter cannot fill the store.
MAX_FORMS_PER_VERSION = 8


def _evict(s: Session, version_id: int, *, keep: str) -> set[str]:
    """Forget the version's oldest forms beyond MAX_FORMS_PER_VERSION, never ``keep`` (the one just built); the
    digests their files had."""
    forms = s.execute(select(m.VersionFile.form).where(m.VersionFile.version_id == version_id)
                      .group_by(m.VersionFile.form).order_by(func.min(m.VersionFile.created_at),
                                                             m.VersionFile.form)).scalars().all()
    digests: set[str] = set()
    for form in [f for f in forms if f != keep][:max(0, len(forms) - MAX_FORMS_PER_VERSION)]:
        digests |= set(s.scalars(select(m.VersionFile.sha256).where(m.VersionFile.version_id == version_id,
                                                                     m.VersionFile.form == form)))
        forget(s, version_id, form)
    return digests


def _evict_over(s: Session, max_bytes: int, *, keep: tuple[int, str]) -> set[str]:
    """Forget the least recently built forms of any version while all stored forms together hold more than
    ``max_bytes``, never ``keep`` (the one just built, whatever its size); the digests their files had. A file
    listed by two forms counts twice: the bound errs on the side of storing less."""
    total = s.scalar(select(func.coalesce(func.sum(m.VersionFile.size), 0))) or 0
    digests: set[str] = set()
    if total <= max_bytes:
        return digests
    forms = s.execute(select(m.VersionFile.version_id, m.VersionFile.form, func.sum(m.VersionFile.size))
                      .group_by(m.VersionFile.version_id, m.VersionFile.form)
                      .order_by(func.min(m.VersionFile.created_at), m.VersionFile.version_id, m.VersionFile.form)).all()
    for version_id, form, size in forms:
        if total <= max_bytes:
            break
        if (version_id, form) == keep:
            continue
        digests |= set(s.scalars(select(m.VersionFile.sha256).where(m.VersionFile.version_id == version_id,
                                                                     m.VersionFile.form == form)))
        forget(s, version_id, form)
        total -= size
    return digests


def forget(s: Session, version_id: int, form: str) -> None:
    """Drop a version's listing in one form (whole: a form is listed complete or not at all); the next request
    for it builds it again."""
    s.execute(delete(m.VersionFile).where(m.VersionFile.version_id == version_id, m.VersionFile.form == form))


def git_blob_id(pieces: Iterable[bytes], size: int) -> str:
    """A file's git blob id, as the Hub reports it (``oid``, ``blobId``): SHA-1 of ``blob <size>\\0<bytes>``."""
    h = hashlib.sha1(b"blob %d\0" % size, usedforsecurity=False)
    for piece in pieces:
        h.update(piece)
    return h.hexdigest()


class Listing(NamedTuple):
    """A version's files in one form (Derived.listing), and whether it is yanked, and why."""

    pinned: Ref
    files: list[DerivedFile]
    yanked: bool
    yank_reason: str | None


@functools.cache
def _listing(by_number: bool) -> Select[int, bool, str | None, m.VersionFile]:
    """The files of the version a reference names in one form (bound parameters: lookup.naming_params and
    ``form``), each with the version's number and yank. Built once: building costs more than running it."""
    return naming(select(m.AdapterVersion.version, m.AdapterVersion.yanked, m.AdapterVersion.yank_reason,
                         m.VersionFile)
                  .join(m.Adapter, m.Adapter.id == m.AdapterVersion.adapter_id)
                  .join(m.VersionFile, (m.VersionFile.version_id == m.AdapterVersion.id)
                        & (m.VersionFile.form == bindparam("form"))), by_number)


_LISTED = select(m.VersionFile).where(m.VersionFile.version_id == bindparam("version_id"),
                                      m.VersionFile.form == bindparam("form"))


def _listed(s: Session, version_id: int, form: str) -> list[DerivedFile]:
    return _in_order(_derived(r) for r in s.scalars(_LISTED, {"version_id": version_id, "form": form}))


_ORDER = {name: i for i, name in enumerate(ADAPTER_FILES)}


def _in_order(files: Iterable[DerivedFile]) -> list[DerivedFile]:
    """A form's files in the order of ADAPTER_FILES (config, weights, README), any others after them by name."""
    return sorted(files, key=lambda f: (_ORDER.get(f.filename, len(_ORDER)), f.filename))


def _derived(row: m.VersionFile) -> DerivedFile:
    return DerivedFile(row.version_id, row.form, row.filename, row.sha256, row.size)


def _record(s: Session, files: list[DerivedFile]) -> None:
    for f in files:
        m.record_blob(s, f.sha256, f.size, DERIVED)
        s.add(m.VersionFile(version_id=f.version_id, form=f.form, filename=f.filename, sha256=f.sha256, size=f.size))
    s.flush()


def _form_of(key: str) -> FileForm:
    """The FileForm a version_files ``form`` names (the inverse of FileForm.key)."""
    if not key.startswith("lora"):
        return FileForm(with_projection=key == "vera+projection", seed_only=key == "vera+seed-only")
    options = [o for o in key.partition(":")[2].split(",") if o]
    max_rank = next((int(o[3:]) for o in options if o.startswith("r<=")), None)
    dtype = next((o for o in options if o in ("bfloat16", "float16")), "float32")
    return FileForm(lora=LoraExport(max_rank=max_rank, dtype=dtype,
                                    for_vllm=any(o.startswith("vllm") for o in options)))

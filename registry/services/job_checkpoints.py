"""A job's newest training checkpoint, kept in the registry so that an attempt on another machine resumes from it.

A worker trains a job into its folder on its own machine (registry.job_folders) and checkpoints it every
``training.save_every`` steps (vera_core.training_checkpoints: sealed with a manifest of each file's size and
SHA-256). As each checkpoint is sealed, the worker that holds the job's claim stores it here (``store``): every file
the manifest lists, and the manifest, as content-addressed blobs of kind ``checkpoint``, listed in
``job_checkpoint_files`` under one ``job_checkpoints`` row per job, which the next checkpoint replaces. A worker that
claims the job again on a machine without a newer checkpoint of its own writes the stored one into its folder
(``restore``), checks it against its manifest, and resumes from it. When the job ends the rows go with it
(``forget``) and so do the blobs no one else uses.

What is refused, before anything is stored or allocated: a caller that does not hold the job's claim (a worker
that lost its job must not overwrite its successor's checkpoint); a manifest over 64 KiB or not of the expected
shape; a file the manifest does not list, or one whose name is not a checkpoint file's (nothing the manifest says
becomes a path: names are matched against a fixed list); a checkpoint whose files add up to more than
``max_bytes`` (VERA_JOB_CHECKPOINT_MAX_BYTES); files whose size or SHA-256 differ from the manifest's (torn or
changed). Every file is safetensors or JSON: nothing stored here is ever unpickled. A restore checks the sizes it
is about to fetch against ``max_bytes`` first, fetches each blob through the blob store (which re-hashes it), and
accepts the folder only if it matches its manifest.

Bytes are shared by content: a blob's row and bytes go only when no checkpoint, version, projection, derived file or
job dataset uses the digest any more. A checkpoint that lost a blob anyway (a concurrent collection of the same
bytes) fails its restore, and the attempt starts over: never a resume from wrong data.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from registry.domain.errors import Conflict, ContentTooLarge, IntegrityError, InvalidInput, NotFound
from registry.domain.schemas import ADAPTER_FILES, MAX_JOB_CHECKPOINT_BYTES
from registry.store import models as m
from registry.store.blobs import BlobStore
from registry.store.database import Database
from vera_core import training_checkpoints as checkpoints

CHECKPOINT = "checkpoint"
#: The kind of a job's uploaded dataset's blob (registry.services.jobs), dropped when its job ends.
DATASET = "dataset"
#: The files a checkpoint may hold (vera_core.trainer.Trainer.save_checkpoint), besides its manifest.
CHECKPOINT_FILES = frozenset({*ADAPTER_FILES, checkpoints.STATE, "trainable.safetensors", "optimizer.safetensors",
                              "best.safetensors"})
#: A manifest larger than this is not read (a real one lists at most eight files: well under 2 KiB).
MAX_MANIFEST_BYTES = 64 * 1024
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class StoredCheckpoint:
    """A job's checkpoint in the registry: written after optimizer step ``step`` by ``world_size`` processes, in
    attempt ``attempt`` by ``worker``; ``files`` maps each file name (the manifest's included) to (SHA-256, size)."""

    job_id: int
    step: int
    world_size: int
    attempt: int
    worker: str
    size: int
    created_at: datetime
    files: dict[str, tuple[str, int]]


class JobCheckpoints:
    """Store, read back and forget jobs' checkpoints over a registry's database and blob store."""

    def __init__(self, db: Database, blobs: BlobStore, *, max_bytes: int = MAX_JOB_CHECKPOINT_BYTES) -> None:
        if max_bytes <= 0:
            raise InvalidInput(f"The largest job checkpoint must be a positive number of bytes; got {max_bytes!r}.")
        self.db, self.blobs, self.max_bytes = db, blobs, max_bytes

    # ---- storing -----------------------------------------------------------------------------------------------
    def store(self, job_id: int, worker: str, folder: Path) -> StoredCheckpoint:
        """Store the sealed checkpoint ``folder`` (a ``step-N`` folder) as job ``job_id``'s newest, replacing the one
        stored before; only ``worker``, holding the job's claim while it runs, may. Refused (nothing stored) with
        InvalidInput for a folder that is not an intact checkpoint, ContentTooLarge over ``max_bytes``, Conflict
        when ``worker`` does not hold the job."""
        self._holder(job_id, worker)  # before reading anything: a worker that lost the job stores nothing
        listed = self._manifest(folder)
        contents = {name: self._read(folder / name, sha256, size) for name, (sha256, size) in listed.items()}
        state = _state(contents[checkpoints.STATE])
        for data in contents.values():
            self.blobs.put(data)
        files = {name: (hashlib.sha256(data).hexdigest(), len(data)) for name, data in contents.items()}
        with self.db.session() as s:
            job = self._holder(job_id, worker, s)
            dropped = self._drop_rows(s, job_id)
            for digest, size in dict(files.values()).items():  # two files of the same bytes are one blob
                m.record_blob(s, digest, size, CHECKPOINT)
            s.flush()
            row = m.JobCheckpoint(job_id=job_id, step=state[0], world_size=state[1], attempt=job.attempts,
                                  worker=worker, size=sum(size for _, size in files.values()),
                                  created_at=datetime.now(UTC))
            s.add(row)
            s.flush()
            s.add_all(m.JobCheckpointFile(job_id=job_id, filename=name, sha256=digest, size=size)
                      for name, (digest, size) in files.items())
            s.flush()
            unused = _drop_unused_blobs(s, dropped - {digest for digest, _ in files.values()})
            stored = _stored(row, files)
        self.delete_bytes(unused)
        return stored

    def _holder(self, job_id: int, worker: str, s: Session | None = None) -> m.Job:
        """The job, if ``worker`` holds its claim and it runs; else Conflict (NotFound for no such job). In a
        session, the job's row is locked on PostgreSQL, so that a claim by another worker waits for the store."""
        if s is None:
            with self.db.session() as own:
                return self._holder(job_id, worker, own)
        query = select(m.Job).where(m.Job.id == job_id)
        job = s.scalar(query.with_for_update() if self.db.engine.dialect.name == "postgresql" else query)
        if job is None:
            raise NotFound(f"No job {job_id}; `vera job ls` lists them.")
        if job.claimed_by != worker or job.status != "running":
            raise Conflict(f"Job {job_id} is {job.status}" + (f", claimed by {job.claimed_by}" if job.claimed_by
                           else "") + f"; only the worker running it stores its checkpoints, and {worker} does not.")
        return job

    def _manifest(self, folder: Path) -> dict[str, tuple[str, int]]:
        """The checkpoint's files as its manifest lists them, the manifest included: (SHA-256, size) by name, every
        name a checkpoint file's and every size on disk as listed; the total within ``max_bytes``."""
        path = folder / checkpoints.MANIFEST
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise InvalidInput(f"{folder} is not a sealed checkpoint: {checkpoints.MANIFEST} cannot be read "
                               f"({exc.strerror}).") from exc
        if size > MAX_MANIFEST_BYTES:
            raise InvalidInput(f"{path} has {size} bytes; a checkpoint's manifest has at most {MAX_MANIFEST_BYTES}.")
        data = path.read_bytes()
        listed = {checkpoints.MANIFEST: (hashlib.sha256(data).hexdigest(), len(data))}
        listed |= _listed(data, str(path))
        total = sum(size for _, size in listed.values())
        if total > self.max_bytes:
            raise ContentTooLarge(f"The checkpoint {folder.name} has {total} bytes, over the {self.max_bytes} a job's "
                                  "checkpoint may have in the registry (VERA_JOB_CHECKPOINT_MAX_BYTES); it stays on "
                                  "this machine only.")
        for name, (_, expected) in listed.items():
            on_disk = (folder / name).stat().st_size if (folder / name).is_file() else None
            if on_disk != expected:
                raise InvalidInput(f"The checkpoint {folder.name} is not intact: {name} has "
                                   f"{'no file' if on_disk is None else f'{on_disk} bytes'}, its manifest says "
                                   f"{expected}.")
        return listed

    @staticmethod
    def _read(path: Path, sha256: str, size: int) -> bytes:
        data = path.read_bytes()
        if len(data) != size or hashlib.sha256(data).hexdigest() != sha256:
            raise InvalidInput(f"The checkpoint {path.parent.name} is not intact: {path.name} does not match its "
                               "manifest (changed or torn while being read).")
        return data

    # ---- reading back ------------------------------------------------------------------------------------------
    def latest(self, job_id: int) -> StoredCheckpoint | None:
        """Job ``job_id``'s stored checkpoint, or None."""
        with self.db.session() as s:
            row = s.get(m.JobCheckpoint, job_id)
            if row is None:
                return None
            files = {f.filename: (f.sha256, f.size) for f in s.scalars(
                select(m.JobCheckpointFile).where(m.JobCheckpointFile.job_id == job_id))}
            return _stored(row, files)

    def restore(self, stored: StoredCheckpoint, root: Path) -> Path:
        """Write ``stored`` into ``root`` (a run's ``checkpoints`` folder) as ``step-N``, checked against its
        manifest, and return the folder. Sizes are checked before anything is fetched; each blob is re-hashed as it
        is read. IntegrityError if the stored files do not make an intact checkpoint (nothing is left in
        ``root``), NotFound if a blob is missing."""
        names = set(stored.files)
        strange = sorted(names - CHECKPOINT_FILES - {checkpoints.MANIFEST})
        total = sum(size for _, size in stored.files.values())
        if strange or checkpoints.MANIFEST not in names:
            raise IntegrityError(f"Job {stored.job_id}'s stored checkpoint lists "
                                 f"{', '.join(map(repr, strange)) or 'no manifest'}: not a checkpoint's files.")
        if total > self.max_bytes:
            raise ContentTooLarge(f"Job {stored.job_id}'s stored checkpoint has {total} bytes, over this worker's "
                                  f"limit of {self.max_bytes} (VERA_JOB_CHECKPOINT_MAX_BYTES).")
        final = root / checkpoints.folder_name(stored.step)
        partial = root / f".{final.name}.restoring"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        try:
            for name, (digest, size) in sorted(stored.files.items()):
                data = self.blobs.get(digest)
                if len(data) != size:
                    raise IntegrityError(f"Blob {digest} has {len(data)} bytes; job {stored.job_id}'s checkpoint "
                                         f"lists {size} for {name}.")
                (partial / name).write_bytes(data)
            listed = _listed((partial / checkpoints.MANIFEST).read_bytes(), f"job {stored.job_id}'s stored manifest")
            reason = checkpoints.problem(partial)
            if reason is None and set(listed) != names - {checkpoints.MANIFEST}:
                reason = "its manifest lists other files than were stored"
            if reason is None and checkpoints.info(partial).step != stored.step:
                reason = f"its trainer state is at step {checkpoints.info(partial).step}, not {stored.step}"
            if reason is not None:
                raise IntegrityError(f"Job {stored.job_id}'s stored checkpoint at step {stored.step} is not intact: "
                                     f"{reason}.")
            checkpoints.publish(partial, final)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        return final

    # ---- forgetting ----------------------------------------------------------------------------------------
    def delete_bytes(self, digests: Collection[str]) -> None:
        """Delete the bytes of ``digests`` that the database no longer knows (after the transaction that dropped
        their rows committed; one a concurrent store added back is kept)."""
        if not digests:
            return
        with self.db.session() as s:
            known = set(s.scalars(select(m.Blob.sha256).where(m.Blob.sha256.in_(sorted(digests)))))
        for digest in sorted(set(digests) - known):
            self.blobs.delete(digest)

    @staticmethod
    def _drop_rows(s: Session, job_id: int) -> set[str]:
        digests = set(s.scalars(select(m.JobCheckpointFile.sha256).where(m.JobCheckpointFile.job_id == job_id)))
        s.execute(delete(m.JobCheckpointFile).where(m.JobCheckpointFile.job_id == job_id))
        s.execute(delete(m.JobCheckpoint).where(m.JobCheckpoint.job_id == job_id))
        return digests


def forget(s: Session, job_id: int) -> set[str]:
    """Drop job ``job_id``'s stored checkpoint in session ``s`` (its job ended), and its uploaded dataset (no attempt
    reads it again; kept, it was storage no quota counted and nothing ever collected: an outsider's walk, session
    29), with the rows of the blobs no one else uses; their digests, whose bytes go once ``s`` commits
    (JobCheckpoints.delete_bytes; `vera gc` otherwise)."""
    dropped = JobCheckpoints._drop_rows(s, job_id)
    job = s.get(m.Job, job_id)
    dataset = job.dataset_sha256 if job is not None else None
    if job is not None:
        job.dataset_sha256 = None
    s.flush()
    return _drop_unused_blobs(s, dropped) | (_drop_unused_blobs(s, {dataset}, DATASET) if dataset else set())


def referenced(s: Session) -> set[str]:
    """Every digest a stored checkpoint uses (`vera gc` keeps them)."""
    return set(s.scalars(select(m.JobCheckpointFile.sha256).distinct()))


def _drop_unused_blobs(s: Session, digests: set[str], kind: str = CHECKPOINT) -> set[str]:
    """Delete the rows of the blobs of ``kind`` (a checkpoint's, a job's dataset) among ``digests`` that nothing uses
    any more; their digests."""
    if not digests:
        return set()
    wanted = sorted(digests)
    used = set(s.scalars(select(m.JobCheckpointFile.sha256).where(m.JobCheckpointFile.sha256.in_(wanted))))
    used |= set(s.scalars(select(m.AdapterVersion.vectors_sha256).where(m.AdapterVersion.vectors_sha256.in_(wanted))))
    used |= {d for d in s.scalars(select(m.Projection.blob_sha256).where(m.Projection.blob_sha256.in_(wanted))) if d}
    used |= set(s.scalars(select(m.VersionFile.sha256).where(m.VersionFile.sha256.in_(wanted))))
    used |= {d for d in s.scalars(select(m.Job.dataset_sha256).where(m.Job.dataset_sha256.in_(wanted))) if d}
    unused = sorted(digests - used)
    if not unused:
        return set()
    gone = set(s.scalars(select(m.Blob.sha256).where(m.Blob.sha256.in_(unused), m.Blob.kind == kind)))
    s.execute(delete(m.Blob).where(m.Blob.sha256.in_(sorted(gone))))
    return gone


def _listed(data: bytes, where: str) -> dict[str, tuple[str, int]]:
    """The files a manifest's bytes list, (SHA-256, size) by name, refused unless every name is a checkpoint
    file's, every size a non-negative integer and every hash 64 hex digits, with the trainer state among them."""
    try:
        files = json.loads(data)["files"]
        listed = {str(name): (str(entry["sha256"]), entry["size"]) for name, entry in files.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InvalidInput(f"{where} is not a checkpoint manifest ({type(exc).__name__}: {exc}); expected "
                           '{"files": {name: {"size": N, "sha256": HEX}}}.') from exc
    strange = sorted(set(listed) - CHECKPOINT_FILES)
    if strange:
        raise InvalidInput(f"{where} lists {', '.join(repr(n[:80]) for n in strange[:5])}: not a checkpoint's "
                           f"files (expected among {', '.join(sorted(CHECKPOINT_FILES))}).")
    if checkpoints.STATE not in listed:
        raise InvalidInput(f"{where} lists no {checkpoints.STATE}.")
    for name, (digest, size) in listed.items():
        if not _SHA256.fullmatch(digest) or isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InvalidInput(f"{where}: {name}'s entry must have a 64-hex-digit sha256 and a size in bytes; got "
                               f"{digest[:80]!r} and {size!r}.")
    return listed


def _state(data: bytes) -> tuple[int, int]:
    """(step, world_size) from a checkpoint's trainer state."""
    try:
        saved: Any = json.loads(data)
        step, world_size = saved["state"]["step"], saved.get("world_size", 1)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InvalidInput(f"The checkpoint's {checkpoints.STATE} is unreadable ({type(exc).__name__}).") from exc
    for name, value, low in (("step", step, 0), ("world_size", world_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value < 2**31:
            raise InvalidInput(f"The checkpoint's {checkpoints.STATE} has {name}={value!r}; expected an integer "
                               f">= {low}.")
    return step, world_size


def _stored(row: m.JobCheckpoint, files: dict[str, tuple[str, int]]) -> StoredCheckpoint:
    return StoredCheckpoint(job_id=row.job_id, step=row.step, world_size=row.world_size, attempt=row.attempt,
                            worker=row.worker, size=row.size, created_at=row.created_at, files=dict(files))

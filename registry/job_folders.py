"""A worker's folder per job, kept between attempts of the job on this machine, so that an attempt after a lost one
(a training process killed, a worker that died or was let go) resumes from the job's last intact checkpoint.

``<state_dir>/jobs/<id>/``: the id is the one the registry assigned (an integer), never a name or path from the
job's spec. It holds ``job.json`` (the job's identity: id, target and creation time, so that a folder left by a job
of the same id in another registry's database is recognised and emptied rather than resumed) and ``adapter/``, the
training output: checkpoints under ``adapter/checkpoints`` (vera_core.training_checkpoints), then the adapter that is
published. A lock (``flock`` on ``.lock``) is held by the attempt that uses the folder, so two worker processes on
one machine never train into it at once (an attempt taken over while the old one is still stopping starts over in a
temporary folder instead). The folder is removed once the job has ended (succeeded, failed, cancelled): by the
worker that ran the last attempt, or by any worker on the machine that finds it later (``sweep``), since a job can
end elsewhere (cancelled while queued, or finished by a worker on another machine).

The newest checkpoint is also stored in the registry (registry.services.job_checkpoints), one per job, replaced as
training goes on, so that an attempt on another machine resumes too; this folder saves a machine that claims its
job again the download, and keeps checkpoints too large for the registry (docs/jobs.md).
"""

from __future__ import annotations

import fcntl
import json
import shutil
from pathlib import Path
from typing import IO

from registry.domain.errors import NotFound
from registry.domain.schemas import JobInfo
from registry.services.jobs import Jobs

IDENTITY = "job.json"
LOCK = ".lock"
ENDED = ("succeeded", "failed", "cancelled")


def _identity(job: JobInfo) -> dict[str, object]:
    return {"id": job.id, "target": job.target_name, "created_at": job.created_at.isoformat()}


class JobFolder:
    """One job's folder under a worker's state directory, locked by the attempt that holds it (``open``)."""

    def __init__(self, root: Path, job_id: int, lock: IO[bytes]) -> None:
        self.path, self.job_id, self._lock = root / "jobs" / str(job_id), job_id, lock

    @classmethod
    def open(cls, state_dir: Path, job: JobInfo) -> JobFolder | None:
        """The job's folder, locked for this attempt and holding only this job's files (a folder of another job
        with the same id is emptied); None if another process on this machine holds it."""
        path = state_dir / "jobs" / str(int(job.id))
        path.mkdir(parents=True, exist_ok=True)
        lock = _try_lock(path)
        if lock is None:
            return None
        folder = cls(state_dir, job.id, lock)
        identity = folder.path / IDENTITY
        try:
            recorded = json.loads(identity.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            recorded = None
        if recorded != _identity(job):
            folder.clear()
            identity.write_text(json.dumps(_identity(job)), encoding="utf-8")
        return folder

    @property
    def output(self) -> Path:
        """Where the job's training writes: checkpoints (``checkpoints/``), then the adapter and metrics.json."""
        return self.path / "adapter"

    def clear(self) -> None:
        """Drop everything the job's attempts wrote (its identity and lock stay)."""
        shutil.rmtree(self.output, ignore_errors=True)

    def close(self, *, remove: bool) -> None:
        """End this attempt's hold on the folder, removing it first if ``remove`` (the job has ended)."""
        if remove:
            shutil.rmtree(self.path, ignore_errors=True)
        self._lock.close()  # closing the file releases the flock


def _try_lock(path: Path) -> IO[bytes] | None:
    lock = (path / LOCK).open("ab")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return None
    return lock


def sweep(state_dir: Path, jobs: Jobs) -> list[int]:
    """Remove the folders of jobs of this registry that have ended and that no process holds; their ids. Folders of
    jobs this registry does not have, or has under another identity (another registry's), are left alone."""
    removed = []
    root = state_dir / "jobs"
    for path in sorted(root.iterdir()) if root.is_dir() else []:
        if not path.name.isdigit():
            continue
        try:
            job = jobs.get(int(path.name))
            recorded = json.loads((path / IDENTITY).read_text(encoding="utf-8"))
        except (NotFound, OSError, ValueError):
            continue
        if job.status not in ENDED or recorded != _identity(job):
            continue
        lock = _try_lock(path)
        if lock is not None:
            JobFolder(state_dir, job.id, lock).close(remove=True)
            removed.append(job.id)
    return removed

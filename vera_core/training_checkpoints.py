"""The folders of a training run's checkpoints (``output_dir/checkpoints/step-N``): written whole or not at all, and
never loaded torn.

A checkpoint is written into a hidden sibling (``.step-N.partial``), its files flushed to disk, then ``seal`` adds a
manifest (each file's size and SHA-256) and ``publish`` renames the folder into place and flushes the parent. A
reader (``latest``) takes the newest folder whose manifest is present and whose files all match it, and says why it
passed over any newer ones: a process killed while writing, a disk that lost the last writes before a crash, or a
file changed by hand all leave a checkpoint that is skipped rather than loaded. Torch-free: a job worker reads
where a job's checkpoints stand without training.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

MANIFEST = "manifest.json"
STATE = "trainer_state.json"
PREFIX = "step-"


@dataclass(frozen=True)
class CheckpointInfo:
    """An intact checkpoint: its folder, the optimizer step it was written after, and the number of processes
    that trained it (a checkpoint resumes only with as many)."""

    path: Path
    step: int
    world_size: int


def folder_name(step: int) -> str:
    return f"{PREFIX}{step:08d}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def seal(folder: Path) -> None:
    """Flush every file of ``folder`` to disk and write its manifest last (then flushed too)."""
    files: dict[str, dict[str, object]] = {}
    for path in sorted(p for p in folder.iterdir() if p.is_file() and p.name != MANIFEST):
        _fsync(path)
        files[path.name] = {"size": path.stat().st_size, "sha256": _sha256(path)}
    manifest = folder / MANIFEST
    manifest.write_text(json.dumps({"files": files}, indent=1), encoding="utf-8")
    _fsync(manifest)


def publish(partial: Path, final: Path) -> None:
    """Move a sealed folder into place (replacing ``final`` if it exists) and flush the parent folder, so the
    rename itself survives a crash."""
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    _fsync(final.parent)


def problem(folder: Path) -> str | None:
    """Why ``folder`` cannot be loaded as a checkpoint (no manifest, a file missing, of another size or hash, an
    unreadable trainer state), or None if it is intact."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        files = manifest["files"]
    except FileNotFoundError:
        return (f"it has no {MANIFEST}: it was not finished (a process stopped while writing it) or was written by "
                "a vera_core before checkpoints were sealed")
    except (ValueError, KeyError, TypeError) as exc:
        return f"its {MANIFEST} is unreadable ({type(exc).__name__}: {exc})"
    if STATE not in files:
        return f"its {MANIFEST} lists no {STATE}"
    for name, expected in sorted(files.items()):
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != expected["size"]:
            return f"{name} has {path.stat().st_size} bytes, its manifest says {expected['size']}"
        if _sha256(path) != expected["sha256"]:
            return f"{name}'s SHA-256 differs from its manifest's (the file changed or was torn)"
    return None


def info(folder: Path) -> CheckpointInfo:
    """Step and process count of an intact checkpoint (``problem`` returned None)."""
    saved = json.loads((folder / STATE).read_text(encoding="utf-8"))
    return CheckpointInfo(folder, int(saved["state"]["step"]), int(saved.get("world_size", 1)))


def latest(root: Path) -> tuple[CheckpointInfo | None, list[str]]:
    """The newest intact checkpoint under ``root`` (a ``checkpoints`` folder), or None; and, for each newer folder
    passed over, why (``step-N: reason``)."""
    skipped: list[str] = []
    for folder in sorted(root.glob(f"{PREFIX}*"), reverse=True) if root.is_dir() else []:
        reason = problem(folder)
        if reason is None:
            return info(folder), skipped
        skipped.append(f"{folder.name}: {reason}")
    return None, skipped

"""The client's cache of downloaded adapter files, content-addressed like huggingface_hub's: a second fetch of the
same version and form costs one small request (which version is it?) and no download.

    {root}/blobs/{sha256}                                        each file once, named by its SHA-256
    {root}/manifests/{owner}/{name}/{version}/{key}.json         file name -> SHA-256 for one version in one form

``key`` hashes what makes the files what they are: the version's vectors digest and creation time (a deleted
version published again is another entry) and the download options. Every file is re-hashed when used; a blob that
does not match is deleted and downloaded again. Files are written to a temporary name and renamed, so nothing
half-written is ever used. Root: VERA_CACHE_DIR, default ~/.cache/vera-registry; VERA_NO_CACHE=1 turns it off.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

CHUNK = 1 << 20


def cache_root() -> Path:
    """VERA_CACHE_DIR, default ~/.cache/vera-registry."""
    return Path(os.environ.get("VERA_CACHE_DIR") or Path.home() / ".cache" / "vera-registry")


def default_cache_dir() -> Path | None:
    """The cache folder the environment asks for; None when VERA_NO_CACHE is set."""
    if os.environ.get("VERA_NO_CACHE", "").strip().lower() in ("1", "true", "yes"):
        return None
    return cache_root()


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def new_file(folder: Path, final: Path) -> Iterator[IO[bytes]]:
    """A temporary file in ``folder`` that becomes ``final`` by a rename when the block ends without an error, and
    is removed otherwise."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".part-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.replace(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


class LocalCache:
    """Blobs and manifests under ``root`` (see the module's docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs"

    @staticmethod
    def key(vectors_sha256: str, created_at: str, options: dict[str, Any]) -> str:
        text = json.dumps({"vectors": vectors_sha256, "created": created_at, "options": options}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def _manifest(self, owner: str, name: str, version: int, key: str) -> Path:
        return self.root / "manifests" / owner / name / str(version) / f"{key}.json"  # names checked: no / or ..

    def lookup(self, owner: str, name: str, version: int, key: str) -> dict[str, Path] | None:
        """The cached files of one version in one form, each re-hashed; None if any is missing or does not match
        (a mismatching blob is deleted, so the next download replaces it)."""
        try:
            manifest = json.loads(self._manifest(owner, name, version, key).read_text())
        except (OSError, ValueError):
            return None
        files: dict[str, Path] = {}
        for filename, digest in manifest.get("files", {}).items():
            blob = self.blob(str(digest))
            if blob is None:
                return None
            files[str(filename)] = blob
        return files or None

    def blob(self, digest: str) -> Path | None:
        """The blob with this SHA-256, re-hashed; None (and the damaged copy deleted) if it is absent or damaged."""
        if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
            return None
        path = self.blobs / digest
        if not path.is_file():
            return None
        if sha256_of(path) != digest:
            path.unlink(missing_ok=True)
            return None
        return path

    def record(self, owner: str, name: str, version: int, key: str, files: dict[str, str]) -> None:
        """Remember which blobs (already stored) make up this version in this form."""
        manifest = self._manifest(owner, name, version, key)
        with new_file(manifest.parent, manifest) as f:
            f.write(json.dumps({"files": files}, sort_keys=True).encode())

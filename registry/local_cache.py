"""The client's cache of downloaded adapter files, content-addressed like huggingface_hub's: a second fetch of the
same version and form costs one small request (the registry's list of the files and their SHA-256) and no download.

    {root}/blobs/{sha256}                                        each file once, named by its SHA-256

Every file is re-hashed when used; a blob that does not match is deleted and downloaded again. Files are written to
a temporary name and renamed, so nothing half-written is ever used. Root: VERA_CACHE_DIR, default
~/.cache/vera-registry; VERA_NO_CACHE=1 turns it off.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

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
    """Blobs under ``root`` (see the module's docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs"

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

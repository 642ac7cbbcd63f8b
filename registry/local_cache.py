"""The client's cache of downloaded adapter files, content-addressed like huggingface_hub's: a second fetch of the
same version and form costs one small request (``HEAD`` of the registry's file list: the pinned version and the
list's digest) and no download.

    {root}/blobs/{sha256}          each file once, named by its SHA-256
    {root}/lists/{digest}.json     a download's file list (registry.domain.schemas.FileManifest, without contents),
                                   named by its digest (FileManifest.digest, the X-Vera-Files header)
    {root}/refs/{key}              the digest a reference last gave: key = SHA-256 of the registry's URL, the
                                   reference and the download form (nothing a registry sends becomes a path)

Every file is re-hashed when used; a blob that does not match is deleted and downloaded again, and a list whose
digest does not match its name is ignored. Files are written to a temporary name and renamed, so nothing
half-written is ever used. Root: VERA_CACHE_DIR, default ~/.cache/vera-registry; VERA_NO_CACHE=1 turns it off.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from pydantic import ValidationError

from registry.domain.schemas import FileManifest

CHUNK = 1 << 20
_DIGEST = re.compile("[0-9a-f]{64}")


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


def _is_digest(text: str) -> bool:
    return _DIGEST.fullmatch(text) is not None


def ref_key(url: str, path: str, params: dict[str, str]) -> str:
    """The refs/ name of a reference's download: its registry, path and form options, hashed."""
    text = "\n".join([url, path, *sorted(f"{k}={v}" for k, v in params.items())])
    return hashlib.sha256(text.encode()).hexdigest()


class LocalCache:
    """Blobs, file lists and references under ``root`` (see the module's docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs"
        self.lists = root / "lists"
        self.refs = root / "refs"

    def seen(self, key: str) -> bool:
        """Whether a download of this reference (``ref_key``) was cached before."""
        return (self.refs / key).is_file()

    def listing(self, digest: str) -> FileManifest | None:
        """The file list with this digest; None if absent, unreadable or not matching its name (then deleted)."""
        if not _is_digest(digest):
            return None
        path = self.lists / f"{digest}.json"
        try:
            manifest = FileManifest.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValidationError):
            manifest = None
        if manifest is None or manifest.digest != digest:
            path.unlink(missing_ok=True)
            return None
        return manifest

    def last(self, key: str) -> FileManifest | None:
        """The file list reference ``key`` gave when it was last fetched; None if it never was (or the list is gone
        or damaged). Offline clients answer from it without asking the registry."""
        try:
            digest = (self.refs / key).read_text(encoding="ascii", errors="replace").strip()
        except OSError:
            return None
        return self.listing(digest)

    def remember(self, key: str, manifest: FileManifest) -> None:
        """Keep ``manifest`` (without file contents) and note it as what reference ``key`` gave last."""
        with new_file(self.lists, self.lists / f"{manifest.digest}.json") as out:
            out.write(manifest.model_dump_json(exclude={"files": {"__all__": {"content"}}}).encode())
        with new_file(self.refs, self.refs / key) as out:
            out.write(manifest.digest.encode())

    def put(self, digest: str, data: bytes) -> Path:
        """Keep ``data`` (already checked against ``digest``, its SHA-256) as a blob."""
        if not _is_digest(digest):
            raise ValueError(f"not a SHA-256: {digest[:100]!r}")
        path = self.blobs / digest
        with new_file(self.blobs, path) as out:
            out.write(data)
        return path

    def blob(self, digest: str) -> Path | None:
        """The blob with this SHA-256, re-hashed; None (and the damaged copy deleted) if it is absent or damaged."""
        if not _is_digest(digest):
            return None
        path = self.blobs / digest
        if not path.is_file():
            return None
        if sha256_of(path) != digest:
            path.unlink(missing_ok=True)
            return None
        return path

"""Writing an adapter folder: each file moved into place by a rename, so a reader never sees a half-written one.
Torch-free, so that downloading clients (`vera fetch`, the registry client) write folders without importing torch."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path

from vera_core.errors import OutputFolderError


def write_adapter_files(root: Path, files: Mapping[str, bytes | Path]) -> None:
    """Write files into ``root`` through a temporary sibling folder (``adapter_folder``): bytes are written, a Path
    is copied (streamed, never read whole)."""
    with adapter_folder(root) as tmp:
        for name, data in files.items():
            if isinstance(data, Path):
                shutil.copyfile(data, tmp / name)
            else:
                tmp.joinpath(name).write_bytes(data)


@contextlib.contextmanager
def adapter_folder(root: Path) -> Iterator[Path]:
    """A temporary folder beside ``root`` to write an adapter's files into; when the block ends without an error, a
    new ``root`` is that folder renamed, and into an existing one each file is moved into place by a rename. The
    temporary folder and anything left in it are removed either way."""
    if root.exists() and not root.is_dir():
        raise OutputFolderError(f"{root} is a file, not a folder: write the adapter to a new folder, or to one that "
                                "holds an adapter.")
    tmp = root.parent / f".{root.name}.{secrets.token_hex(6)}"
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()  # not mkdtemp: the folder may become ``root``, with the permissions a new folder gets
    except OSError as exc:
        raise OutputFolderError(f"Cannot write an adapter folder at {root}: {exc.strerror or exc} "
                                f"({root.parent} must be a folder this user can write in).") from exc
    try:
        yield tmp
        if not root.exists():
            with contextlib.suppress(OSError):
                os.rename(tmp, root)  # fails if ``root`` appeared meanwhile: then file by file
                return
        root.mkdir(exist_ok=True)
        for item in tmp.iterdir():
            os.replace(item, root / item.name)
    finally:
        if tmp.exists():
            for item in tmp.iterdir():
                item.unlink()
            tmp.rmdir()

"""Writing an adapter folder: each file moved into place by a rename, so a reader never sees a half-written one.
Torch-free, so that downloading clients (`vera fetch`, the registry client) write folders without importing torch."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path


def write_adapter_files(root: Path, files: Mapping[str, bytes | Path]) -> None:
    """Write files into ``root`` through a temporary sibling folder, each moved into place by a rename: bytes are
    written, a Path is copied (streamed, never read whole)."""
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        for name, data in files.items():
            if isinstance(data, Path):
                shutil.copyfile(data, tmp / name)
            else:
                tmp.joinpath(name).write_bytes(data)
        root.mkdir(exist_ok=True)
        for item in tmp.iterdir():
            os.replace(item, root / item.name)
    finally:
        for item in tmp.iterdir():
            item.unlink()
        tmp.rmdir()

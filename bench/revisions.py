"""What the benchmarks that compare the working tree with an earlier git revision share: that revision checked out
in a temporary worktree, removed afterwards (its sources go on PYTHONPATH of the processes that run it)."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def trees(before: str | None, scratch: Path) -> Iterator[dict[str, Path]]:
    """{"now": the working tree} and, with ``before``, {before: a worktree of that revision under ``scratch``}."""
    found = {"now": ROOT}
    if before:
        subprocess.run(["git", "worktree", "add", "--detach", str(scratch / "before"), before], cwd=ROOT,
                       check=True, capture_output=True)
        found[before] = scratch / "before"
    try:
        yield found
    finally:
        if before:
            subprocess.run(["git", "worktree", "remove", "--force", str(scratch / "before")], cwd=ROOT, check=False)

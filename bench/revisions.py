"""What the benchmarks that compare the working tree with an earlier git revision share: that revision checked out
in a temporary worktree, removed afterwards (its sources go on PYTHONPATH of the processes that run it)."""

from __future__ import annotations

import contextlib
import statistics
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


def print_rounds(runs: dict[tuple[str, str], list[float]], *, kind: str, unit: str, scale: float, digits: int,
                 before: str | None) -> None:
    """A markdown table of alternated rounds, {(what, tree label): seconds per round}: each round, their median,
    and with ``before`` the ratio of the working tree's median ("now") to that revision's."""
    print(f"| {kind} | tree | each round, {unit} | median of rounds |" + (" now / before |" if before else ""))
    print("|---|---|---|---|" + ("---|" if before else ""))
    for (what, label), times in runs.items():
        ratio = ""
        if before:
            now = statistics.median(runs[(what, "now")])
            ratio = f" {now / statistics.median(times):.{max(2, digits)}f} |" if label != "now" else " |"
        print(f"| {what} | {label} | {', '.join(f'{t * scale:.{digits}f}' for t in times)} | "
              f"{statistics.median(times) * scale:.{digits}f} |{ratio}")

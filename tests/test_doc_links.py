"""Every relative link in the README, docs/ and bench/RESULTS.md reaches a file of the repository, and every
``#anchor`` one of its headings, spelt as GitHub spells a heading's anchor (a renamed heading broke the guide's link
to the README's set-up: found by a reader, session 27)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "RESULTS.md"]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: its text (a link's text, not its target), lower case, without punctuation
    other than ``-`` and ``_``, spaces as ``-``."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings (outside code blocks; a repeated one gets -1, -2, ...)."""
    seen: dict[str, int] = {}
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and (heading := re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)):
            name = anchor(heading.group(1))
            seen[name] = seen.get(name, -1) + 1
    return {name if i == 0 else f"{name}-{i}" for name, count in seen.items() for i in range(count + 1)}


def test_anchors_are_spelt_as_github_spells_them() -> None:
    assert anchor("Set-up (a fresh Debian machine with Python 3.11 and its `python3-venv`)") == \
        "set-up-a-fresh-debian-machine-with-python-311-and-its-python3-venv"
    assert anchor("Services (registry/services/, map in [architecture.md](architecture.md))") == \
        "services-registryservices-map-in-architecturemd"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_reaches_a_file_and_a_heading(document: Path) -> None:
    broken = []
    links = LINK.findall(document.read_text(encoding="utf-8"))
    for target in links:
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...: not the repository's
            continue
        file, _, fragment = target.partition("#")
        destination = (document.parent / file).resolve() if file else document
        if not destination.exists():
            broken.append(f"{target}: no such file")
        elif fragment and destination.suffix == ".md" and fragment not in anchors(destination):
            broken.append(f"{target}: {destination.name} has no heading with that anchor")
    assert not broken, f"{document.name}: " + "; ".join(broken)
    if document.name in {"README.md", "guide.md"}:
        assert links, "the check found no links at all: its pattern is wrong"


def test_the_guides_backup_and_upgrade_examples_show_the_newest_migration() -> None:
    """The outputs the guide shows for `vera db backup/status/upgrade` name the head revision, as a fresh registry
    prints it, and the 'behind' example the one before (they said 0023 three migrations later: found by a reader,
    session 31)."""
    head = max(int(p.name[:4]) for p in (ROOT / "migrations" / "versions").glob("[0-9][0-9][0-9][0-9]_*.py"))
    guide = (ROOT / "docs" / "guide.md").read_text(encoding="utf-8")
    at_head = [int(r) for r in re.findall(r"(?:revision|head:) (\d{4})", guide)]
    at_head += [int(r) for r in re.findall(r"current: (\d{4}); head: \d{4}; up to date", guide)]
    behind = [int(r) for r in re.findall(r"current: (\d{4}); head: \d{4}; run `vera db upgrade`", guide)]
    assert len(at_head) >= 4 and behind, "the guide's backup and upgrade examples show no revisions"
    assert set(at_head) == {head}, f"the guide's examples show revisions {sorted(set(at_head))}; the head is {head}"
    assert set(behind) == {head - 1}, f"the 'behind' example shows {behind}; one behind the head is {head - 1}"

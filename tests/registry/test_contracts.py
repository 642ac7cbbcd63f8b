"""What other software relies on stays as it is: the OpenAPI document of the registry API, and the tree of `vera`
commands with their options. Both are compared against snapshots committed in
tests/registry/snapshots/; a deliberate change regenerates them with VERA_UPDATE_SNAPSHOTS=1 and says why in the
commit message."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import typer

from registry.api import create_app
from registry.cli import app as cli_app
from registry.services.registry import Registry
from registry.store.blobs import FsspecBlobStore
from registry.store.database import Database

SNAPSHOTS = Path(__file__).parent / "snapshots"


def cli_tree() -> dict[str, Any]:
    """Every command path with its help text and its parameters (names, flags, defaults, help, required)."""
    tree: dict[str, Any] = {}

    def walk(command: Any, path: str) -> None:
        tree[path] = {
            "help": command.help, "hidden": command.hidden,
            "params": [{"name": p.name, "kind": p.param_type_name, "opts": sorted(p.opts),
                        "secondary": sorted(p.secondary_opts), "default": repr(p.default), "required": p.required,
                        "flag": getattr(p, "is_flag", False), "help": getattr(p, "help", None), "envvar": p.envvar,
                        "multiple": p.multiple, "nargs": p.nargs}
                       for p in command.params],
        }
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            walk(sub, f"{path} {name}")

    walk(typer.main.get_command(cli_app), "vera")
    return tree


def openapi_document(tmp_path: Path) -> dict[str, Any]:
    db = Database(f"sqlite:///{tmp_path / 'r.db'}")
    db.upgrade()
    try:
        return create_app(Registry(db, FsspecBlobStore(str(tmp_path / "blobs")))).openapi()
    finally:
        db.engine.dispose()


def _matches_snapshot(name: str, value: dict[str, Any]) -> None:
    path = SNAPSHOTS / name
    text = json.dumps(value, indent=1, sort_keys=True) + "\n"
    if os.environ.get("VERA_UPDATE_SNAPSHOTS") == "1":
        path.write_text(text, encoding="utf-8")
    assert path.is_file(), f"{path} is missing; run with VERA_UPDATE_SNAPSHOTS=1 once to write it"
    assert json.loads(path.read_text(encoding="utf-8")) == json.loads(text), (
        f"{name} changed. If that is deliberate (and compatible), regenerate it with VERA_UPDATE_SNAPSHOTS=1.")


def test_the_openapi_document_is_unchanged(tmp_path: Path) -> None:
    _matches_snapshot("openapi.json", openapi_document(tmp_path))


def test_the_cli_command_tree_is_unchanged() -> None:
    _matches_snapshot("cli.json", cli_tree())

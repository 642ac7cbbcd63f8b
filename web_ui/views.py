"""Readable views of what the registry answers as JSON: named values as a two-column table, reports as checklists
(a mark, what was checked, what was found), nested specs flattened to dotted names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
import streamlit as st

from web_ui import formats, tables

PASSED, FAILED, NOTE = ":green[:material/check_circle:]", ":red[:material/cancel:]", ":gray[:material/info:]"


@dataclass(frozen=True)
class Item:
    """One line of a checklist: ``ok`` True (passed), False (failed) or None (a fact, not a check)."""

    ok: bool | None
    what: str
    detail: str = ""


def flat(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dictionaries as dotted names: ``{"training": {"lr": 0.01}}`` -> ``{"training.lr": 0.01}``."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, dict) and value:
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def cell(value: Any) -> str:
    """A value as one table cell: lists joined, numbers as formats.number writes them, nothing as '—'."""
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value)) or formats.MISSING
    if isinstance(value, dict):
        return formats.MISSING if not value else ", ".join(f"{k}={cell(v)}" for k, v in value.items())
    return formats.number(value)


#: A header tile: its label, its value, and its help (None: none).
Tile = tuple[str, Any, str | None]


def tiles(items: list[Tile]) -> None:
    """A page's header numbers as tiles as wide as their values, in a row that wraps onto a second one where the
    page is narrow: in five equal columns at 1,000 px their values were cut ("26,…", "suc…": a dashboard walk,
    session 48)."""
    with st.container(horizontal=True, gap="medium"):
        for label, value, help_text in items:
            st.metric(label, value, help=help_text, width="content")


def fields(mapping: dict[str, Any]) -> None:
    """A two-column table of named values (nested names dotted)."""
    rows = [{"field": key, "value": cell(value)} for key, value in flat(mapping).items()]
    tables.show(pd.DataFrame(rows), hide_index=True, width="stretch")


def checklist(items: list[Item]) -> None:
    """One line per item: a green tick, a red cross or (among checks) an information mark, then what and what was
    found. A list of facts only is a plain list (a bullet and a mark on each line said the same twice)."""
    checks = any(i.ok is not None for i in items)

    def mark(item: Item) -> str:
        if item.ok is None:
            return f"{NOTE} " if checks else ""
        return f"{PASSED if item.ok else FAILED} "

    st.markdown("\n".join(f"- {mark(i)}**{i.what}**" + (f": {i.detail}" if i.detail else "") for i in items))


CHECK_NAMES = {"projection": "Projection regenerated from the seed", "vectors_blob": "Vectors blob re-hashed",
               "projection_blob": "Stored projection blob re-hashed", "shapes": "Layer shapes match the base model"}


#: Where the base model's layer shapes that the check compared against come from (the report's ``base_shapes``).
BASE_SHAPES = {"declared": "checked against the base model's declared shapes (`vera base register`)",
               "implied": "checked against the shapes earlier publishes implied (the base model was never "
                          "registered: `vera base register` declares its shapes)"}


def _check_detail(check: dict[str, Any]) -> str:
    """What a verification check found, in words (the report's fields, digests shortened)."""
    if check.get("error"):
        return str(check["error"])
    if check.get("problems"):
        return "; ".join(map(str, check["problems"]))
    parts = []
    if "recorded" in check and "regenerated" in check:
        same = "=" if check["recorded"] == check["regenerated"] else "!="
        parts.append(f"fingerprint {str(check['regenerated'])[:12]}... {same} "
                     f"recorded {str(check['recorded'])[:12]}...")
    if "sha256" in check:
        parts.append(f"SHA-256 {str(check['sha256'])[:12]}..."
                     + (f", {formats.size(check['bytes'])}" if isinstance(check.get("bytes"), int) else ""))
    if check.get("base_shapes"):
        parts.append(BASE_SHAPES.get(check["base_shapes"], f"the base model's shapes are {check['base_shapes']}"))
    if check.get("note"):
        parts.append(str(check["note"]))
    return "; ".join(parts)


def verification_items(checks: dict[str, dict[str, Any]]) -> list[Item]:
    """A verification report's checks as checklist items."""
    return [Item(bool(check.get("ok")), CHECK_NAMES.get(name, name.replace("_", " ")), _check_detail(check))
            for name, check in checks.items()]

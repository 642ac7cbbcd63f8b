"""How commands print: ``--json`` (what the API answers, for scripts) or tables that fit the terminal.

A listing's table keeps its most important columns and drops the others, least important first, when the terminal is
too narrow for all of them (80 columns keeps a full ``owner/name:VERSION``); it never cuts a kept cell short, and
says which columns it left out.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import typer
from pydantic import BaseModel
from rich.cells import cell_len
from rich.table import Table

from registry.cli.common import console
from registry.domain.schemas import LINE_AND_BIDI_CONTROLS

JsonOutput = Annotated[bool, typer.Option("--json", help="Print JSON (as the API answers) instead of a table.")]


def print_json(value: BaseModel | Sequence[BaseModel] | dict[str, Any]) -> None:
    """``value`` as indented JSON on stdout, plain (no colours, no wrapping), for scripts and ``jq``."""
    if isinstance(value, BaseModel):
        data: Any = value.model_dump(mode="json")
    elif isinstance(value, dict):
        data = value
    else:
        data = [v.model_dump(mode="json") for v in value]
    typer.echo(json_text(data, indent=2))


#: What JSON text may hold raw that a terminal would run or reorder (JSON escapes only C0): DEL, C1 (U+009B is a
#: terminal's CSI), line separators and bidirectional overrides, written as JSON's \u escapes (the same string).
_JSON_SHOWN = {c: f"\\u{c:04x}" for c in [0x7F, *range(0x80, 0xA0), *map(ord, LINE_AND_BIDI_CONTROLS)]}


def json_text(data: Any, indent: int | None = None) -> str:
    """``data`` as JSON, non-ASCII text kept as it is except what a terminal would run or reorder (_JSON_SHOWN)."""
    return json.dumps(data, indent=indent, ensure_ascii=False).translate(_JSON_SHOWN)


@dataclass(frozen=True)
class Column:
    """A table column; ``priority`` 0 is always shown, and higher ones are dropped first when space runs out."""

    header: str
    priority: int = 0
    justify: Literal["left", "right"] = "left"


#: What a column costs besides its text in rich's default table (one space each side and a border).
_COLUMN_OVERHEAD = 3


def fitted_table(columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int | None = None) -> Table:
    """A table of the columns that fit in ``width`` (default: the terminal's), chosen by priority, shown in their
    order; a kept column is never shortened with '…' (priority-0 cells fold onto a second line at worst)."""
    width = width or console.width
    natural = [max([cell_len(c.header), *(cell_len(row[i]) for row in rows)]) for i, c in enumerate(columns)]
    kept: set[int] = set()
    used = 1  # the table's left border
    for i in sorted(range(len(columns)), key=lambda i: (columns[i].priority, i)):
        cost = natural[i] + _COLUMN_OVERHEAD
        if columns[i].priority == 0 or used + cost <= width:
            kept.add(i)
            used += cost
    shown = sorted(kept)
    left_out = [columns[i].header for i in range(len(columns)) if i not in kept]
    caption = f"not shown (narrow terminal): {', '.join(left_out)}; --json has everything" if left_out else None
    table = Table(caption=caption, caption_justify="left")
    for i in shown:
        essential = columns[i].priority == 0
        table.add_column(columns[i].header, justify=columns[i].justify, no_wrap=not essential,
                         overflow="fold" if essential else "ellipsis",
                         min_width=min(natural[i], max(width - 4, 8)) if essential else None)
    for row in rows:
        table.add_row(*(row[i] for i in shown))
    return table

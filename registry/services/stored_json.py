"""JSON the registry stored before it refused more than MAX_JSON_DEPTH levels (2026-12): metrics, evaluation details,
audit details nested hundreds deep were taken, and pydantic cannot write replies that deep, so every listing that
showed such a row answered 500 and the webhook dispatcher skipped its event. `vera fsck` reports those rows and
`vera fsck --repair` cuts them at MAX_JSON_DEPTH levels, each container below replaced by a note (CUT), so that they
are served again; every other row, and every shallower part of a cut one, stays as it was.

Every JSON column of every table is read (streamed, a few hundred rows at a time), as fsck reads every blob.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import JSON, Column, Table, select, update
from sqlalchemy.orm import Session

from registry.domain.schemas import MAX_JSON_DEPTH, too_deep
from registry.store import models as m
from registry.store.database import Database

#: What stands where a list or object nested past MAX_JSON_DEPTH was cut.
CUT = f"(nested deeper than {MAX_JSON_DEPTH} levels: cut by vera fsck --repair)"
_BATCH = 500


def _json_columns() -> Iterator[tuple[Table, Column[Any]]]:
    for table in m.Base.metadata.sorted_tables:
        for column in table.columns:
            if isinstance(column.type, JSON):
                yield table, column


def _rows(s: Session, table: Table, column: Column[Any]) -> Iterator[tuple[dict[str, Any], Any]]:
    """Each row's primary key (column name -> value) and its value in ``column``, streamed."""
    keys = list(table.primary_key.columns)
    for *key, value in s.execute(select(*keys, column).execution_options(yield_per=_BATCH)):
        yield {c.name: v for c, v in zip(keys, key, strict=True)}, value


def too_deep_rows(db: Database) -> list[str]:
    """``table.column key=value`` of each stored JSON value nested more than MAX_JSON_DEPTH levels deep."""
    found = []
    for table, column in _json_columns():
        with db.session() as s:
            found += [f"{table.name}.{column.name} {', '.join(f'{k}={v}' for k, v in key.items())}"
                      for key, value in _rows(s, table, column) if too_deep(value)]
    return found


def cut(value: Any, depth: int = 1) -> Any:
    """``value`` with each list or object below MAX_JSON_DEPTH levels replaced by CUT (recursion no deeper than
    that)."""
    if isinstance(value, dict | list):
        if depth > MAX_JSON_DEPTH:
            return CUT
        if isinstance(value, dict):
            return {key: cut(item, depth + 1) for key, item in value.items()}
        return [cut(item, depth + 1) for item in value]
    return value


def cut_too_deep(db: Database) -> int:
    """Cut every stored JSON value nested more than MAX_JSON_DEPTH deep (one transaction per column); how many."""
    done = 0
    for table, column in _json_columns():
        with db.session() as s:
            deep = [(key, value) for key, value in _rows(s, table, column) if too_deep(value)]
            for key, value in deep:
                s.execute(update(table).where(*(table.c[k] == v for k, v in key.items()))
                          .values({column.name: cut(value)}))
            done += len(deep)
    return done

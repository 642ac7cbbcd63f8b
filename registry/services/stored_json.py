"""JSON the registry stored before it refused more than MAX_JSON_DEPTH levels (2026-12): metrics, evaluation details,
audit details nested hundreds deep were taken, and pydantic cannot write replies that deep, so every listing that
showed such a row answered 500 and the webhook dispatcher skipped its event. `vera fsck` reports those rows and
`vera fsck --repair` cuts them at MAX_JSON_DEPTH levels, each container below replaced by a note (CUT), so that they
are served again; every other row, and every shallower part of a cut one, stays as it was.

Every JSON column of every table is read (streamed, a few hundred rows at a time), as fsck reads every blob; the
repair reads again only the rows that report found.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
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


@dataclass(frozen=True)
class DeepValue:
    """Where a stored JSON value nested more than MAX_JSON_DEPTH levels is: its table, column and row key."""

    table: str
    column: str
    key: tuple[tuple[str, Any], ...]

    def __str__(self) -> str:
        return f"{self.table}.{self.column} {', '.join(f'{k}={v}' for k, v in self.key)}"


def too_deep_values(db: Database) -> list[DeepValue]:
    """Each stored JSON value nested more than MAX_JSON_DEPTH levels deep (`vera fsck`'s deep_json: their str)."""
    found = []
    for table, column in _json_columns():
        with db.session() as s:
            found += [DeepValue(table.name, column.name, tuple(key.items()))
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


def cut_too_deep(db: Database, found: list[DeepValue]) -> int:
    """Cut the values ``found`` (too_deep_values: the report's, so every column is not read again) at MAX_JSON_DEPTH
    levels, each read again by its key and cut only if it is still too deep, in one transaction; how many."""
    tables = m.Base.metadata.tables
    done = 0
    with db.session() as s:
        for where in found:
            table = tables[where.table]
            match = [table.c[k] == v for k, v in where.key]
            value = s.execute(select(table.c[where.column]).where(*match)).scalar_one_or_none()
            if too_deep(value):
                s.execute(update(table).where(*match).values({where.column: cut(value)}))
                done += 1
    return done

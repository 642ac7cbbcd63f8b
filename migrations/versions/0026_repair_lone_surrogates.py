"""Repair text that is not Unicode: before 2026-12-03 a JSON value sent to the registry could hold a lone UTF-16
surrogate (JSON's "\\ud800" decodes to half of a pair): metrics, evaluations, an adapter_config.json, a job's spec or
dataset labels, and the audit events and webhook deliveries that copy them. The JSON columns stored it escaped, and
then every response that carried it failed (a listing, a version, the audit log: a 500 for every caller). The API
now refuses such text (registry.domain.schemas); this revision replaces each lone surrogate already stored with
U+FFFD (the replacement character), in the JSON columns that hold what callers send, so that those rows read again.

Only rows whose JSON text holds a "\\ud" escape are read, and only those that really hold a lone surrogate are
written (an escaped pair, an emoji, is valid and stays). No row is added or removed, no other value changes.
Downgrade keeps the repair (the broken text is not worth restoring).

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-03 20:30:00
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None

#: (table, its key columns, its JSON columns that hold what callers send or what is copied from it)
COLUMNS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("adapter_versions", ("id",), ("config", "metrics", "published_via")),
    ("version_evaluations", ("version_id", "name"), ("details",)),
    ("jobs", ("id",), ("spec", "progress", "submitted_via")),
    ("job_events", ("id",), ("data",)),
    ("audit_events", ("id",), ("detail",)),
    ("webhook_deliveries", ("id",), ("payload",)),
    ("access_tokens", ("id",), ("provenance",)),
)
#: Rows read per query.
BATCH = 500


def repaired(value: Any) -> Any:
    """``value`` with every lone surrogate in its strings (keys too) replaced by U+FFFD."""
    if isinstance(value, str):
        return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in value)
    if isinstance(value, list):
        return [repaired(v) for v in value]
    if isinstance(value, dict):
        return {repaired(k): repaired(v) for k, v in value.items()}
    return value


def upgrade() -> None:
    connection = op.get_bind()
    for table, keys, columns in COLUMNS:
        for column in columns:
            _repair(connection, table, keys, column)


def _repair(connection: sa.Connection, table: str, keys: tuple[str, ...], column: str) -> None:
    """Rewrite the rows of ``table`` whose ``column`` holds a lone surrogate, a batch at a time (in key order)."""
    as_text = sa.cast(sa.column(column), sa.Text)
    key_columns = [sa.column(k) for k in keys]
    query = (sa.select(*key_columns, as_text).select_from(sa.table(table))
             .where(as_text.like("%!\\ud%", escape="!")).order_by(*key_columns))
    after: tuple[Any, ...] | None = None
    while True:
        page = query if after is None else query.where(sa.tuple_(*key_columns) > sa.tuple_(*after))
        rows = connection.execute(page.limit(BATCH)).all()
        for row in rows:
            stored = json.loads(row[-1])
            fixed = repaired(stored)
            if fixed != stored:
                where = sa.and_(*(sa.column(k) == row[i] for i, k in enumerate(keys)))
                connection.execute(sa.table(table, sa.column(column, sa.JSON)).update().where(where)
                                   .values({column: fixed}))
        if len(rows) < BATCH:
            return
        after = tuple(rows[-1][:len(keys)])


def downgrade() -> None:
    pass  # the repair stays: the text it replaced could not be read

"""Migration 0021 (evaluations recorded after publish: version_evaluations) keeps every row of a 0020 database, up
and down, on SQLite and PostgreSQL; an evaluation recorded after the upgrade goes with the table on downgrade, and
the version (its metrics included) stays."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import inspect, text

from registry.store.database import Database
from tests.registry.test_migration_0009 import EXPECTED, _kept, filled_at


def _metrics(db: Database) -> list[Any]:
    with db.engine.connect() as conn:
        return [json.loads(m) if isinstance(m, str) else m
                for (m,) in conn.execute(text("SELECT metrics FROM adapter_versions ORDER BY id"))]


def test_migration_0021_keeps_every_row_up_and_down(database_url: str) -> None:
    db = filled_at(database_url, "0020")
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE adapter_versions SET metrics = '{\"accuracy\": 0.9}' WHERE id = 1"))
    db.upgrade("0021")
    assert _kept(db) == EXPECTED and _metrics(db) == [{"accuracy": 0.9}]
    with db.engine.begin() as conn:
        conn.execute(text("INSERT INTO version_evaluations (version_id, name, details, recorded_by, recorded_at) "
                          "VALUES (1, 'hellaswag', '{}', 'ann', CURRENT_TIMESTAMP)"))
    assert {c["name"] for c in inspect(db.engine).get_columns("version_evaluations")} == {
        "version_id", "name", "details", "recorded_by", "recorded_at"}
    db.downgrade("0020")
    assert _kept(db) == EXPECTED and "version_evaluations" not in inspect(db.engine).get_table_names()
    assert _metrics(db) == [{"accuracy": 0.9}]
    db.upgrade()
    assert _kept(db) == EXPECTED
    db.engine.dispose()

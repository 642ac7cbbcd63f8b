"""Migration 0027 (an index on aliases.version_id) keeps every row of a 0026 database, up and down, on SQLite and
PostgreSQL: an index only, which the upgrade adds and the downgrade drops."""

from __future__ import annotations

from sqlalchemy import inspect

from registry.store.database import Database
from tests.registry.test_migration_0009 import EXPECTED, _kept, filled_at


def _indexes(db: Database) -> set[str]:
    return {index["name"] or "" for index in inspect(db.engine).get_indexes("aliases")}


def test_migration_0027_keeps_every_row_up_and_down(database_url: str) -> None:
    db = filled_at(database_url, "0026")
    assert "ix_aliases_version_id" not in _indexes(db)
    db.upgrade("0027")
    assert _kept(db) == EXPECTED and "ix_aliases_version_id" in _indexes(db)
    db.downgrade("0026")
    assert _kept(db) == EXPECTED and "ix_aliases_version_id" not in _indexes(db)
    db.upgrade()
    assert _kept(db) == EXPECTED and "ix_aliases_version_id" in _indexes(db)
    db.engine.dispose()

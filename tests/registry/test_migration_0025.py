"""Migration 0025 (version_properties: key=value properties of a version) keeps every row of a 0024 database, up and
down, on SQLite and PostgreSQL: no version has a property after the upgrade, a property goes with its version (ON
DELETE CASCADE, in the database itself), and on downgrade the table goes while the versions and tags stay."""

from __future__ import annotations

from sqlalchemy import inspect, text

from registry.store.database import Database
from tests.registry.test_migration_0009 import EXPECTED, _kept, filled_at


def _properties(db: Database) -> list[tuple[object, ...]]:
    with db.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(
            "SELECT version_id, key, value FROM version_properties ORDER BY version_id, key"))]


def test_migration_0025_keeps_every_row_up_and_down(database_url: str) -> None:
    db = filled_at(database_url, "0024")
    db.upgrade("0025")
    assert _kept(db) == EXPECTED and _properties(db) == []  # no property until one is set
    with db.engine.begin() as conn:
        conn.execute(text("INSERT INTO version_properties (version_id, key, value) VALUES "
                          "(1, 'validation', 'passed'), (1, 'ticket', 'ML-42')"))
    assert _properties(db) == [(1, "ticket", "ML-42"), (1, "validation", "passed")]
    db.downgrade("0024")
    assert "version_properties" not in inspect(db.engine).get_table_names()
    assert _kept(db) == EXPECTED
    db.upgrade()
    assert _kept(db) == EXPECTED and _properties(db) == []
    with db.engine.begin() as conn:  # the registry's SQLite connections enforce foreign keys (database.py)
        conn.execute(text("INSERT INTO version_properties (version_id, key, value) VALUES (1, 'validation', 'x')"))
        for table in ("version_tags", "aliases", "hub_syncs"):
            conn.execute(text(f"DELETE FROM {table} WHERE version_id = 1"))
        conn.execute(text("DELETE FROM adapter_versions WHERE id = 1"))
    assert _properties(db) == []  # gone with its version
    db.engine.dispose()

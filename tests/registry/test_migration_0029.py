"""Migration 0029 (version_params: what a version was trained with) keeps every row of a 0028 database, up and down,
on SQLite and PostgreSQL: no version has a parameter after the upgrade, a parameter goes with its version (ON DELETE
CASCADE, in the database itself), and on downgrade the table goes while the versions and their properties stay."""

from __future__ import annotations

from sqlalchemy import inspect, text

from registry.store.database import Database
from tests.registry.test_migration_0009 import EXPECTED, _kept, filled_at


def _rows(db: Database, table: str) -> list[tuple[object, ...]]:
    with db.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(
            f"SELECT version_id, key, value FROM {table} ORDER BY version_id, key"))]


def test_migration_0029_keeps_every_row_up_and_down(database_url: str) -> None:
    db = filled_at(database_url, "0028")
    with db.engine.begin() as conn:
        conn.execute(text("INSERT INTO version_properties (version_id, key, value) VALUES (1, 'validation', 'ok')"))
    properties = [(1, "validation", "ok")]
    db.upgrade("0029")
    assert _kept(db) == EXPECTED and _rows(db, "version_params") == []  # none recorded before it
    assert _rows(db, "version_properties") == properties
    with db.engine.begin() as conn:
        conn.execute(text("INSERT INTO version_params (version_id, key, value) VALUES (1, 'lr', '0.01'), "
                          "(1, 'epochs', '3')"))
    assert _rows(db, "version_params") == [(1, "epochs", "3"), (1, "lr", "0.01")]
    db.downgrade("0028")
    assert "version_params" not in inspect(db.engine).get_table_names()
    assert _kept(db) == EXPECTED and _rows(db, "version_properties") == properties
    db.upgrade()
    assert _kept(db) == EXPECTED and _rows(db, "version_params") == []
    with db.engine.begin() as conn:  # the registry's SQLite connections enforce foreign keys (database.py)
        conn.execute(text("INSERT INTO version_params (version_id, key, value) VALUES (1, 'lr', '0.01')"))
        for table in ("version_tags", "version_properties", "aliases", "hub_syncs"):
            conn.execute(text(f"DELETE FROM {table} WHERE version_id = 1"))
        conn.execute(text("DELETE FROM adapter_versions WHERE id = 1"))
    assert _rows(db, "version_params") == []  # gone with its version
    db.engine.dispose()

"""Migration 0012 (derived files made once) keeps every row of a 0011 database, up and down, on SQLite and
PostgreSQL; its table fills only as versions are downloaded, and going down keeps the derived blobs' rows (a cache
that an upgrade finds again by hash)."""

from __future__ import annotations

from sqlalchemy import inspect, text

from tests.registry.test_migration_0009 import EXPECTED, _kept, filled_at

DERIVED = [
    "INSERT INTO blobs (sha256, size, kind, created_at) VALUES (:derived, 3, 'derived', CURRENT_TIMESTAMP)",
    "INSERT INTO version_files (version_id, form, filename, sha256, size, created_at) VALUES "
    "(1, 'vera', 'README.md', :derived, 3, CURRENT_TIMESTAMP)",
]


def test_migration_0012_keeps_every_row_of_a_0011_database_up_and_down(database_url: str) -> None:
    values = {"sha": "a" * 64, "fp": "f" * 64, "true": True, "false": False, "derived": "d" * 64}
    db = filled_at(database_url, "0011")
    db.upgrade("0012")
    assert _kept(db) == EXPECTED
    with db.engine.begin() as conn:
        assert conn.execute(text("SELECT count(*) FROM version_files")).scalar_one() == 0  # fills on download
        for statement in DERIVED:
            conn.execute(text(statement), values)
    db.downgrade("0011")
    assert _kept(db) == EXPECTED and "version_files" not in inspect(db.engine).get_table_names()
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT kind FROM blobs WHERE sha256 = :derived"), values).scalar_one() == "derived"
    db.upgrade()
    assert _kept(db) == EXPECTED
    db.engine.dispose()

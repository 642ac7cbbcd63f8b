"""Migration 0024 (protected_aliases: the alias names only an organisation's admins move) keeps every row of a 0023
database, up and down, on SQLite and PostgreSQL, organisations and memberships included; nothing is protected after
the upgrade, a protection goes with its organisation (ON DELETE CASCADE, in the database itself), and on downgrade
the table goes while the organisation and its adapters stay."""

from __future__ import annotations

from sqlalchemy import inspect, text

from registry.store.database import Database
from tests.registry.test_migration_0009 import EXPECTED, _kept, filled_at

ORGS = [
    "INSERT INTO organizations (id, name, description, created_by, created_at) VALUES "
    "(1, 'acme', 'a team', 'ann', CURRENT_TIMESTAMP), (2, 'beta', '', 'ann', CURRENT_TIMESTAMP)",
    "INSERT INTO memberships (organization_id, member, role, added_by, added_at) VALUES "
    "(1, 'ann', 'admin', 'ann', CURRENT_TIMESTAMP), (2, 'ann', 'admin', 'ann', CURRENT_TIMESTAMP)",
]


def _orgs(db: Database) -> list[tuple[object, ...]]:
    with db.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(
            "SELECT o.name, o.description, m.member, m.role FROM organizations o "
            "JOIN memberships m ON m.organization_id = o.id ORDER BY o.name"))]


def _protected(db: Database) -> list[tuple[object, ...]]:
    with db.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(
            "SELECT organization_id, name, created_by FROM protected_aliases ORDER BY organization_id, name"))]


def test_migration_0024_keeps_every_row_up_and_down(database_url: str) -> None:
    db = filled_at(database_url, "0023", *ORGS)
    orgs = _orgs(db)
    assert orgs == [("acme", "a team", "ann", "admin"), ("beta", "", "ann", "admin")]
    db.upgrade("0024")
    assert _kept(db) == EXPECTED and _orgs(db) == orgs and _protected(db) == []  # nothing protected until asked
    with db.engine.begin() as conn:
        conn.execute(text("INSERT INTO protected_aliases (organization_id, name, created_by, created_at) VALUES "
                          "(1, 'prod', 'ann', CURRENT_TIMESTAMP), (2, 'prod', 'ann', CURRENT_TIMESTAMP)"))
    with db.engine.begin() as conn:  # the registry's SQLite connections enforce foreign keys (database.py)
        conn.execute(text("DELETE FROM memberships WHERE organization_id = 2"))
        conn.execute(text("DELETE FROM organizations WHERE id = 2"))
    assert _protected(db) == [(1, "prod", "ann")]  # beta's went with it
    db.downgrade("0023")
    assert "protected_aliases" not in inspect(db.engine).get_table_names()
    assert _kept(db) == EXPECTED and _orgs(db) == orgs[:1]
    db.upgrade()
    assert _kept(db) == EXPECTED and _orgs(db) == orgs[:1] and _protected(db) == []
    db.engine.dispose()

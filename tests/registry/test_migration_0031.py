"""Migration 0031 (who may see each audit event, stored beside it) keeps every row of a 0030 database, up and down,
on SQLite and PostgreSQL, and fills each event's sight, owner and adapter name as registry.domain.events.sight_of
says, past one batch of rows; after it the events page filters in its query."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from sqlalchemy import text

from registry.domain.events import sight_of
from tests.registry.test_migration_0009 import EXPECTED, _kept, filled_at
from tests.registry.test_migration_0022 import _columns

#: (action, target) of every kind of event a 0030 registry wrote, each once
KINDS = [
    ("base-register", "tiny@main"), ("webhook-create", "ann/webhooks/3"), ("webhook-update", "*/webhooks/4"),
    ("org-create", "acme"), ("token-create", "ann"), ("publish", "ann/old:1"), ("alias", "ann/old@prod"),
    ("adapter-edit", "ann/old"), ("move", "acme/new-name"), ("token-purge", "weird target/with/slashes"),
    ("webhook-create", "ann/not-a-hook"),
]
#: one more than a batch of the migration, so that its second query is read
MANY = 1001


def _events(db: Any) -> list[tuple[Any, ...]]:
    with db.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text("SELECT id, actor, action, target, detail FROM audit_events "
                                                    "ORDER BY id"))]


def test_migration_0031_fills_who_may_see_each_event_and_keeps_every_row(database_url: str) -> None:
    db = filled_at(database_url, "0030")
    rows = [*KINDS, *[("publish", f"ann/bulk-{i % 7}:{i}") for i in range(MANY)]]
    with db.engine.begin() as conn:
        conn.execute(text("INSERT INTO audit_events (at, actor, action, target, detail) VALUES "
                          "(CURRENT_TIMESTAMP, 'ann', :action, :target, '{\"k\": 1}')"),
                     [{"action": a, "target": t} for a, t in rows])
    before = _events(db)
    db.upgrade("0031")
    assert _kept(db) == EXPECTED and _events(db) == before
    with db.engine.connect() as conn:
        filled = conn.execute(text("SELECT action, target, sight, owner, adapter_name FROM audit_events "
                                   "ORDER BY id")).all()
    assert len(filled) == len(rows)
    assert [tuple(r[2:]) for r in filled] == [sight_of(a, t) for a, t in rows]
    assert [tuple(r[2:]) for r in filled[:len(KINDS)]] == [
        ("public", None, None), ("webhook", "ann", None), ("webhook", "*", None), ("namespace", "acme", None),
        ("namespace", "ann", None), ("adapter", "ann", "old"), ("adapter", "ann", "old"), ("adapter", "ann", "old"),
        ("adapter", "acme", "new-name"), ("admin", None, None), ("adapter", "ann", "not-a-hook")]
    db.downgrade("0030")
    assert not {"sight", "owner", "adapter_name"} & _columns(db, "audit_events")
    assert _kept(db) == EXPECTED and _events(db) == before
    db.upgrade()
    assert _kept(db) == EXPECTED and _events(db) == before
    db.engine.dispose()


def test_the_migration_keeps_the_rules_the_registry_applies() -> None:
    """The migration holds its own copy of the rules (a migration does not change with the code after it): at this
    revision both say the same of every kind of event."""
    path = Path(__file__).parents[2] / "migrations" / "versions" / "0031_audit_event_sight.py"
    spec = importlib.util.spec_from_file_location("migration_0031", path)
    assert spec is not None and spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    for action, target in [*KINDS, ("base-remove", "x@y"), ("webhook-delete", "acme/webhooks/9"),
                           ("job-submit", "acme/trained"), ("yank", "ann/old:2"), ("org-rename", "a/b:c/d")]:
        assert migration.sight(action, target) == sight_of(action, target), (action, target)

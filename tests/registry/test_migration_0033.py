"""Migration 0033 (a yank's reason: adapter_versions.yank_reason) keeps every row of a 0032 database, up and down, on
SQLite and PostgreSQL: no version gains a reason (NULL, nothing invented); a yanked version stays yanked on downgrade,
its reason going with the column."""

from __future__ import annotations

from sqlalchemy import text

from tests.registry.test_migration_0009 import EXPECTED, _kept, filled_at
from tests.registry.test_migration_0022 import _columns


def test_migration_0033_keeps_every_version_up_and_down(database_url: str) -> None:
    db = filled_at(database_url, "0032")
    db.upgrade("0033")
    assert _kept(db) == EXPECTED
    with db.engine.begin() as conn:
        assert conn.execute(text("SELECT yank_reason FROM adapter_versions")).all() == [(None,)]
        conn.execute(text("UPDATE adapter_versions SET yanked = true, yank_reason = 'leaked test split'"))
    db.downgrade("0032")
    assert "yank_reason" not in _columns(db, "adapter_versions")
    with db.engine.begin() as conn:
        assert conn.execute(text("SELECT yanked FROM adapter_versions")).scalars().all() == [True]
        conn.execute(text("UPDATE adapter_versions SET yanked = false"))
    assert _kept(db) == EXPECTED
    db.upgrade()
    assert _kept(db) == EXPECTED
    db.engine.dispose()

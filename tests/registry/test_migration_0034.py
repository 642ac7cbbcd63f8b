"""Migration 0034 (an adapter's own retention rule: adapters.retention_keep_last and retention_keep_days) keeps every
row of a 0033 database, up and down, on SQLite and PostgreSQL: no adapter gains a rule (NULL, NULL: nothing is
deleted that was not before); on downgrade the rules go with their columns and every version stays."""

from __future__ import annotations

from sqlalchemy import text

from tests.registry.test_migration_0009 import EXPECTED, _kept, filled_at
from tests.registry.test_migration_0022 import _columns


def test_migration_0034_keeps_every_adapter_and_version_up_and_down(database_url: str) -> None:
    db = filled_at(database_url, "0033")
    db.upgrade("0034")
    assert _kept(db) == EXPECTED
    with db.engine.begin() as conn:
        assert conn.execute(text("SELECT retention_keep_last, retention_keep_days FROM adapters")).all() == [
            (None, None)]
        conn.execute(text("UPDATE adapters SET retention_keep_last = 1, retention_keep_days = 2.5"))
        assert conn.execute(text("SELECT retention_keep_last, retention_keep_days FROM adapters")).all() == [(1, 2.5)]
    db.downgrade("0033")
    assert not {"retention_keep_last", "retention_keep_days"} & set(_columns(db, "adapters"))
    assert _kept(db) == EXPECTED
    db.upgrade()
    assert _kept(db) == EXPECTED
    db.engine.dispose()

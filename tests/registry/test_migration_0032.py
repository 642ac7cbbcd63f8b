"""Migration 0032 (where a copied version came from: adapter_versions.copied_from_version_id and copied_from_ref)
keeps every row of a 0031 database, up and down, on SQLite and PostgreSQL: every version is not a copy (NULL, nothing
invented); a copy recorded after the upgrade stays a version on downgrade, without saying where it came from."""

from __future__ import annotations

from sqlalchemy import text

from tests.registry.test_migration_0009 import EXPECTED, _kept, filled_at
from tests.registry.test_migration_0022 import _columns


def test_migration_0032_keeps_every_version_up_and_down(database_url: str) -> None:
    db = filled_at(database_url, "0031")
    db.upgrade("0032")
    assert _kept(db) == EXPECTED
    with db.engine.begin() as conn:
        assert conn.execute(text("SELECT copied_from_version_id, copied_from_ref FROM adapter_versions")).all() == [
            (None, None)]
        conn.execute(text("UPDATE adapter_versions SET copied_from_version_id = 1, copied_from_ref = 'ann/old:1'"))
    db.downgrade("0031")
    assert not {"copied_from_version_id", "copied_from_ref"} & _columns(db, "adapter_versions")
    assert _kept(db) == EXPECTED
    db.upgrade()
    assert _kept(db) == EXPECTED
    db.engine.dispose()

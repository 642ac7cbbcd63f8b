"""Migration 0022 (trusted publishing's provenance: access_tokens.provenance, adapter_versions.published_via,
jobs.submitted_via) keeps
every row of a 0021 database, up and down, on SQLite and PostgreSQL: every token and version as it was, with no
provenance; provenance recorded after the upgrade goes with the columns on downgrade, and the rows stay."""

from __future__ import annotations

from sqlalchemy import inspect, text

from registry.store.database import Database
from tests.registry.test_migration_0009 import EXPECTED, _kept, filled_at
from tests.registry.test_migration_0020 import TOKENS, _tokens

#: A queued job, as a 0021 registry wrote it.
JOB = ("INSERT INTO jobs (id, spec, owner, target_name, status, progress, created_at, attempts, cancel_requested, "
       "priority, gpus) VALUES (7, '{\"demo\": true}', 'ann', 'ann/new', 'queued', '{}', CURRENT_TIMESTAMP, 0, "
       ":false, 3, 0)")


def _job(db: Database) -> list[tuple[object, ...]]:
    with db.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text("SELECT id, owner, target_name, status, priority FROM jobs"))]


def _columns(db: Database, table: str) -> set[str]:
    return {c["name"] for c in inspect(db.engine).get_columns(table)}


def test_migration_0022_keeps_every_token_and_version_up_and_down(database_url: str) -> None:
    db = filled_at(database_url, "0021", *TOKENS, JOB)
    before = _tokens(db)
    job = _job(db)
    db.upgrade("0022")
    assert _kept(db) == EXPECTED and _tokens(db) == before and _job(db) == job
    with db.engine.begin() as conn:
        assert conn.execute(text("SELECT count(*) FROM access_tokens WHERE provenance IS NULL")).scalar_one() == 3
        assert conn.execute(text("SELECT count(*) FROM adapter_versions WHERE published_via IS NULL")
                            ).scalar_one() == 1
        conn.execute(text("UPDATE access_tokens SET provenance = '{\"publisher\": \"ci\"}' WHERE id = 1"))
        conn.execute(text("UPDATE adapter_versions SET published_via = '{\"publisher\": \"ci\"}' WHERE id = 1"))
        assert conn.execute(text("SELECT count(*) FROM jobs WHERE submitted_via IS NULL")).scalar_one() == 1
        conn.execute(text("UPDATE jobs SET submitted_via = '{\"publisher\": \"ci\"}'"))
    db.downgrade("0021")
    assert _kept(db) == EXPECTED and _tokens(db) == before
    assert "provenance" not in _columns(db, "access_tokens")
    assert "published_via" not in _columns(db, "adapter_versions")
    assert "submitted_via" not in _columns(db, "jobs")
    assert _job(db) == job
    db.upgrade()
    assert _kept(db) == EXPECTED and _tokens(db) == before and _job(db) == job
    db.engine.dispose()

"""Migration 0009 (model cards and lineage) keeps every row of a 0008 database, up and down, on SQLite and
PostgreSQL. It depends on the revision ids only: the rows are written as the 0001-0006 schema knew them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from registry.store.database import Database

#: One adapter with a version, a tag, an alias and a Hub sync, and a job, as a 0008 registry wrote them.
ROWS = [
    "INSERT INTO blobs (sha256, size, kind, created_at) VALUES (:sha, 10, 'vectors', CURRENT_TIMESTAMP)",
    "INSERT INTO base_models (id, name, revision, shapes, shapes_fingerprint, shapes_source, created_at) VALUES "
    "(1, 'tiny', '', '{}', :fp, 'implied', CURRENT_TIMESTAMP)",
    "INSERT INTO projections (id, generator, seed, r, max_in, max_out, fingerprint, reproducible, created_at) "
    "VALUES (1, 'philox', '7', 4, 8, 8, :fp, :true, CURRENT_TIMESTAMP)",
    "INSERT INTO adapters (id, owner, name, description, created_at) VALUES (1, 'ann', 'old', 'kept', "
    "CURRENT_TIMESTAMP)",
    "INSERT INTO adapter_versions (id, adapter_id, version, base_model_id, projection_id, r, seed, generator, config, "
    "vectors_sha256, projection_fingerprint, seed_reproducible, trainable_parameters, adapter_parameters, "
    "stored_bytes, metrics, description, published_by, created_at, yanked, verification_status, source_job_id) "
    "VALUES (1, 1, 1, 1, 1, 4, '7', 'philox', '{}', :sha, :fp, :true, 12, 12, 10, '{}', 'v1', 'ann', "
    "CURRENT_TIMESTAMP, :false, 'unverified', 5)",
    "INSERT INTO version_tags (version_id, tag) VALUES (1, 'keep-me')",
    "INSERT INTO aliases (id, adapter_id, name, version_id, updated_at) VALUES (1, 1, 'latest', 1, CURRENT_TIMESTAMP)",
    "INSERT INTO hub_syncs (version_id, direction, endpoint, repo_id, revision, commit_sha, with_projection, format, "
    "content_sha256, actor, at) VALUES (1, 'push', 'https://hub', 'ann/old', 'main', 'c0ffee', :true, 'vera', :sha, "
    "'ann', CURRENT_TIMESTAMP)",
]
KEPT = {
    "adapters": "SELECT owner, name, description FROM adapters",
    "versions": "SELECT version, description, source_job_id FROM adapter_versions",
    "tags": "SELECT tag FROM version_tags",
    "aliases": "SELECT name FROM aliases",
    "hub_syncs": "SELECT repo_id FROM hub_syncs",
}
EXPECTED: dict[str, list[tuple[Any, ...]]] = {
    "adapters": [("ann", "old", "kept")], "versions": [(1, "v1", 5)], "tags": [("keep-me",)],
    "aliases": [("latest",)], "hub_syncs": [("ann/old",)],
}


def filled_at(database_url: str, revision: str, *more: str) -> Database:
    """The database at ``database_url`` upgraded to ``revision`` and holding ROWS, then ``more`` statements (with
    ROWS' parameters), as a registry of that release left it: where a migration's test starts."""
    db = Database(database_url)
    db.upgrade(revision)
    with db.engine.begin() as conn:
        for statement in (*ROWS, *more):
            conn.execute(text(statement), {"sha": "a" * 64, "fp": "f" * 64, "true": True, "false": False})
    return db


def _kept(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    with db.engine.connect() as conn:
        return {table: [tuple(r) for r in conn.execute(text(query))] for table, query in KEPT.items()}


def test_migration_0009_keeps_every_row_of_a_0008_database_up_and_down(database_url: str) -> None:
    db = filled_at(database_url, "0008")
    db.upgrade("0009")
    assert _kept(db) == EXPECTED
    with db.engine.connect() as conn:
        card = conn.execute(text("SELECT card FROM adapters")).scalar_one()
        lineage = conn.execute(text("SELECT parent_version_id, parent_ref, code_revision, dataset_sha256, "
                                    "dataset_bytes FROM adapter_versions")).one()
    assert card == "" and tuple(lineage) == (None,) * 5  # nothing recorded then, nothing invented now
    db.downgrade("0008")
    assert _kept(db) == EXPECTED
    db.engine.dispose()

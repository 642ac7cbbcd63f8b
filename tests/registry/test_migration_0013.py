"""Migration 0013 (job checkpoints in the registry) keeps every row of a 0012 database, up and down, on SQLite and
PostgreSQL; its tables start empty and fill as workers train, and going down keeps the checkpoint blobs' rows (for
`vera gc`)."""

from __future__ import annotations

from sqlalchemy import inspect, text

from tests.registry.test_migration_0009 import EXPECTED, _kept, filled_at

JOB = ("INSERT INTO jobs (id, status, spec, owner, target_name, created_at, progress, cancel_requested, attempts, "
       "priority, gpus) VALUES (7, 'running', '{\"demo\": true}', 'ann', 'ann/x', CURRENT_TIMESTAMP, '{}', :false, 1, "
       "0, 0)")
CHECKPOINT = [
    "INSERT INTO blobs (sha256, size, kind, created_at) VALUES (:ck, 3, 'checkpoint', CURRENT_TIMESTAMP)",
    "INSERT INTO job_checkpoints (job_id, step, world_size, attempt, worker, size, created_at) VALUES "
    "(7, 50, 1, 1, 'w1', 3, CURRENT_TIMESTAMP)",
    "INSERT INTO job_checkpoint_files (job_id, filename, sha256, size) VALUES (7, 'manifest.json', :ck, 3)",
]


def test_migration_0013_keeps_every_row_of_a_0012_database_up_and_down(database_url: str) -> None:
    values = {"ck": "c" * 64}
    db = filled_at(database_url, "0012", JOB)
    db.upgrade("0013")
    assert _kept(db) == EXPECTED
    with db.engine.begin() as conn:
        assert conn.execute(text("SELECT count(*) FROM job_checkpoints")).scalar_one() == 0  # fills as jobs train
        for statement in CHECKPOINT:
            conn.execute(text(statement), values)
    db.downgrade("0012")
    assert _kept(db) == EXPECTED
    assert not {"job_checkpoints", "job_checkpoint_files"} & set(inspect(db.engine).get_table_names())
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT owner, attempts FROM jobs WHERE id = 7")).one() == ("ann", 1)
        assert conn.execute(text("SELECT kind FROM blobs WHERE sha256 = :ck"), values).scalar_one() == "checkpoint"
    db.upgrade()
    assert _kept(db) == EXPECTED
    db.engine.dispose()

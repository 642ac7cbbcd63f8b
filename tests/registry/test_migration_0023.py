"""Migration 0023 (jobs.requested_by: who submitted a job, named as the publisher of its result) keeps every job of a
0022 database, up and down, on SQLite and PostgreSQL; a job submitted before it publishes as before (its member, else
its owner)."""

from __future__ import annotations

from sqlalchemy import text

from registry.services.jobs import Jobs
from registry.services.registry import Registry
from registry.store.blobs import FsspecBlobStore
from tests.registry.test_migration_0009 import EXPECTED, _kept, filled_at
from tests.registry.test_migration_0022 import JOB, _columns, _job


def test_migration_0023_keeps_every_job_up_and_down(database_url: str, tmp_path: object) -> None:
    db = filled_at(database_url, "0022", JOB)
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET submitted_by = 'bob'"))
    job = _job(db)
    db.upgrade("0023")
    assert _kept(db) == EXPECTED and _job(db) == job
    db.upgrade()  # read by this release's code, which knows every later column (0030's result_labels)
    old = Jobs(Registry(db, FsspecBlobStore(str(tmp_path)))).get(7)
    assert old.requested_by is None and old.submitted_by == "bob"  # its result names bob, as before 0023
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET requested_by = 'root'"))
    db.downgrade("0022")
    assert "requested_by" not in _columns(db, "jobs") and _job(db) == job and _kept(db) == EXPECTED
    db.upgrade()
    assert _job(db) == job and _kept(db) == EXPECTED
    db.engine.dispose()

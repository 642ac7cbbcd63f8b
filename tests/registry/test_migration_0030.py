"""Migration 0030 (jobs.result_labels: the tags, description and properties a job's result is labelled with) keeps
every row of a 0029 database, up and down, on SQLite and PostgreSQL: a queued job as it was, with no labels (it
publishes as before); labels recorded after the upgrade go with the column on downgrade, and the job stays."""

from __future__ import annotations

from sqlalchemy import text

from tests.registry.test_migration_0009 import EXPECTED, _kept, filled_at
from tests.registry.test_migration_0022 import JOB, _columns, _job


def test_migration_0030_keeps_every_job_up_and_down(database_url: str) -> None:
    db = filled_at(database_url, "0029", JOB)
    job = _job(db)
    assert job == [(7, "ann", "ann/new", "queued", 3)]
    db.upgrade("0030")
    assert _kept(db) == EXPECTED and _job(db) == job
    with db.engine.begin() as conn:
        assert conn.execute(text("SELECT count(*) FROM jobs WHERE result_labels IS NULL")).scalar_one() == 1
        conn.execute(text("UPDATE jobs SET result_labels = '{\"tags\": [\"nightly\"]}'"))
    db.downgrade("0029")
    assert "result_labels" not in _columns(db, "jobs")
    assert _kept(db) == EXPECTED and _job(db) == job
    db.upgrade()
    assert _kept(db) == EXPECTED and _job(db) == job
    db.engine.dispose()

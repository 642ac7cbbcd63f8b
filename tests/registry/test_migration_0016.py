"""Migration 0016 (the member who submitted a job) keeps every row of a 0015 database, up and down, on SQLite and
PostgreSQL (job events included: a rebuilt jobs table would cascade to them on SQLite), and names the submitter of
existing jobs from their job-submit audit events where that submitter is a member of the owning organisation (the
owner's own jobs and an outsider's, an administrator's, stay unnamed)."""

from __future__ import annotations

from sqlalchemy import text

from tests.registry.test_migration_0009 import EXPECTED, _kept, filled_at

JOBS = [
    "INSERT INTO jobs (id, status, spec, owner, target_name, created_at, progress, cancel_requested, attempts, "
    f"priority, gpus) VALUES ({job}, 'queued', '{{}}', '{owner}', '{owner}/x', CURRENT_TIMESTAMP, '{{}}', :false, 0, "
    "0, 0)" for job, owner in ((7, "acme"), (8, "acme"), (9, "ann"))
]
ORGANISATION = [
    "INSERT INTO organizations (id, name, description, created_by, created_at) VALUES (1, 'acme', '', 'ann', "
    "CURRENT_TIMESTAMP)",
    "INSERT INTO memberships (organization_id, member, role, added_by, added_at) VALUES (1, 'bob', 'write', 'ann', "
    "CURRENT_TIMESTAMP)",
]
SUBMITTED = [  # bob (a member) submitted 7, root (an administrator) 8, ann her own 9
    "INSERT INTO audit_events (at, actor, action, target, detail) VALUES (CURRENT_TIMESTAMP, "
    f"'{actor}', 'job-submit', '{target}', '{{\"job\": {job}}}')"
    for actor, target, job in (("bob", "acme/x", 7), ("root", "acme/x", 8), ("ann", "ann/x", 9))
] + ["INSERT INTO job_events (job_id, at, kind, data) VALUES (7, CURRENT_TIMESTAMP, 'log', '{}')"]


def test_migration_0016_keeps_every_row_and_names_the_members_who_submitted_jobs(database_url: str) -> None:
    db = filled_at(database_url, "0015", *ORGANISATION, *JOBS, *SUBMITTED)
    db.upgrade("0016")
    assert _kept(db) == EXPECTED
    with db.engine.connect() as conn:
        named = sorted(tuple(r) for r in conn.execute(text("SELECT id, owner, submitted_by FROM jobs")))
    assert named == [(7, "acme", "bob"), (8, "acme", None), (9, "ann", None)]
    db.downgrade("0015")
    assert _kept(db) == EXPECTED
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM jobs")).scalar_one() == 3
        assert conn.execute(text("SELECT count(*) FROM job_events")).scalar_one() == 1
    db.upgrade()
    db.engine.dispose()

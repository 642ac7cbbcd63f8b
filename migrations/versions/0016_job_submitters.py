"""The member who submitted a job (jobs.submitted_by): a job submitted through an organisation membership publishes
only while that member still writes there, and names them as its publisher (before, a member removed from the
organisation still had their queued jobs published, as the organisation). Null for jobs submitted by the owner or an
administrator, whose rights do not come from a membership. Filled for existing jobs from their job-submit audit
events, where the submitter is, now, a member of the owning organisation. No existing row changes otherwise; on
downgrade the column goes.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-01 15:30:00
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("submitted_by", sa.String(64), nullable=True))  # in place, as 0011 drops
    conn = op.get_bind()
    members = {(org, member) for org, member in conn.execute(sa.text(
        "SELECT o.name, m.member FROM memberships m JOIN organizations o ON o.id = m.organization_id"))}
    owners = {job_id: owner for job_id, owner in conn.execute(sa.text("SELECT id, owner FROM jobs"))}
    for actor, detail in conn.execute(sa.text("SELECT actor, detail FROM audit_events WHERE action = 'job-submit'")):
        data = json.loads(detail) if isinstance(detail, str) else detail
        job = data.get("job") if isinstance(data, dict) else None
        owner = owners.get(job) if isinstance(job, int) else None
        if owner is not None and actor != owner and (owner, actor) in members:
            conn.execute(sa.text("UPDATE jobs SET submitted_by = :actor WHERE id = :job"), {"actor": actor, "job": job})


def downgrade() -> None:
    # in place (SQLite >= 3.35 drops a plain column): a batch rebuild of jobs would drop the old table, and with
    # foreign keys on, that cascades to every job event (as 0011's downgrade says)
    op.drop_column("jobs", "submitted_by")

"""The jobs a member submitted through their role in an organisation, when that role ends (removed, or made a
reader): they could never publish (Jobs.submitter_problem refuses at the start and at publish), but a queued one
was still claimed and trained for hours first (a team admin's walk, session 34). They are cancelled with the change
of role, in its transaction: a queued one at once, a running one after its training step (its worker reads
``cancel_requested``), each saying why in its log and audited as job-cancel."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from registry.domain.schemas import ACTIVE_JOB_STATUSES
from registry.services.job_checkpoints import forget
from registry.store import models as m


def cancel_jobs_of(s: Session, organization: str, member: str, actor: str, why: str) -> list[int]:
    """Cancel the active jobs ``member`` submitted as a member of ``organization`` (``why``: what changed, e.g.
    "is no longer a member"); their ids. Checkpoint bytes of the queued ones are left to `vera gc`."""
    jobs = list(s.scalars(select(m.Job).where(m.Job.owner == organization, m.Job.submitted_by == member,
                                              m.Job.status.in_(ACTIVE_JOB_STATUSES)).order_by(m.Job.id)))
    now = datetime.now(UTC)
    for job in jobs:
        reason = (f"cancelled: {member}, who submitted it as a member of {organization}, {why}, and a job publishes "
                  f"only with the rights it was submitted with; a writer of {organization} may submit it again")
        job.cancel_requested = True
        s.add(m.JobEvent(job_id=job.id, kind="log", data={"message": reason}))
        s.add(m.AuditEvent(actor=actor[:64], action="job-cancel", target=job.target_name,
                           detail={"job": job.id, "reason": reason}))
        if job.status == "queued":
            job.status, job.finished_at = "cancelled", now
            s.add(m.AuditEvent(actor=actor[:64], action="job-end", target=job.target_name,
                               detail={"job": job.id, "status": "cancelled"}))
            forget(s, job.id)
    return [job.id for job in jobs]

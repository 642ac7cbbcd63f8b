"""How a job ends, in one place: `record_end` writes the job-end audit event (what `vera events` lists and webhooks
fire on) and forgets the job's stored checkpoint, for every way a job ends (registry.services.jobs: finished,
failed, cancelled, lost for good; and the cancellations below).

The jobs a member submitted through their role in an organisation, when that role ends (removed, or made a
reader): they could never publish (Jobs.submitter_problem refuses at the start and at publish), but a queued one
was still claimed and trained for hours first (a team admin's walk, session 34). They are cancelled with the change
of role, in its transaction: a queued one at once, a running one after its training step (its worker reads
``cancel_requested``), each saying why in its log and audited as job-cancel."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from registry.domain.schemas import ACTIVE_JOB_STATUSES, Ref
from registry.services.job_checkpoints import forget
from registry.store import models as m


def record_end(s: Session, job: m.Job, *, actor: str) -> set[str]:
    """The audit event of a job that ended (succeeded, failed or cancelled): the event `vera events` lists and
    webhooks fire on (job-end); its stored checkpoint goes. Returns the digests of the checkpoint blobs dropped, whose
    bytes the caller deletes once ``s`` has committed (or `vera gc` later)."""
    detail: dict[str, Any] = {"job": job.id, "status": job.status}
    if job.error:
        detail["error"] = job.error[:1000]
    if job.result_version_id is not None and (version := s.get(m.AdapterVersion, job.result_version_id)) is not None:
        detail["result"] = str(Ref(owner=version.adapter.owner, name=version.adapter.name, version=version.version))
    s.add(m.AuditEvent(actor=actor[:64], action="job-end", target=job.target_name, detail=detail))
    return forget(s, job.id)


def cancel(s: Session, job: m.Job, *, actor: str, reason: str | None = None) -> set[str]:
    """Cancel an active ``job``: a queued one at once (it ends: `record_end`), a running one after the training step
    it is on, when its worker reads ``cancel_requested``; ``reason`` in its log and the job-cancel audit event. The
    digests of checkpoint blobs dropped (see `record_end`)."""
    job.cancel_requested = True
    if reason is not None:
        s.add(m.JobEvent(job_id=job.id, kind="log", data={"message": reason}))
    s.add(m.AuditEvent(actor=actor[:64], action="job-cancel", target=job.target_name,
                       detail={"job": job.id, **({"reason": reason} if reason else {})}))
    if job.status != "queued":
        return set()
    # the log says so, as a running job's does when its worker stops it (a queued job's log was empty: a dashboard
    # walk, session 54)
    s.add(m.JobEvent(job_id=job.id, kind="log", data={"message": (
        f"cancelled by {actor[:64]} while queued: no worker had taken it; nothing was trained or published")}))
    job.status, job.finished_at = "cancelled", datetime.now(UTC)
    return record_end(s, job, actor=actor)


def cancel_jobs_of(s: Session, organization: str, member: str, actor: str, why: str) -> list[int]:
    """Cancel the active jobs ``member`` submitted as a member of ``organization`` (``why``: what changed, e.g.
    "is no longer a member"); their ids. Checkpoint bytes of the queued ones are left to `vera gc`."""
    jobs = list(s.scalars(select(m.Job).where(m.Job.owner == organization, m.Job.submitted_by == member,
                                              m.Job.status.in_(ACTIVE_JOB_STATUSES)).order_by(m.Job.id)))
    for job in jobs:
        cancel(s, job, actor=actor, reason=(
            f"cancelled: {member}, who submitted it as a member of {organization}, {why}, and a job publishes only "
            f"with the rights it was submitted with; a writer of {organization} may submit it again"))
    return [job.id for job in jobs]

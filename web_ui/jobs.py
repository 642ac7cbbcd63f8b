"""Fine-tune jobs as the Train page shows them: a table of every job (status, duration, final metrics, a link to
each), and one job followed live (step, ETA, loss and eval curves, logs, its spec), with a Cancel that asks first
and says "cancelling" until the worker has stopped the job."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pandas as pd
import streamlit as st

from registry.client import RegistryClient
from registry.domain.errors import NotFound
from registry.domain.schemas import ACTIVE_JOB_STATUSES, JobCheckpointInfo, JobEventInfo, JobInfo
from web_ui import charts, formats, navigation, session, tables, views

#: Jobs listed in the table, newest first.
TABLE_ROWS = 50


def status(job: JobInfo) -> str:
    """The job's status as people read it: a running job whose cancellation was asked for is 'cancelling' (the
    worker stops it after its current step)."""
    return "cancelling" if job.status == "running" and job.cancel_requested else job.status


def duration(job: JobInfo, now: datetime | None = None) -> str:
    """How long it trained: start to finish, start to now while it runs, '—' before it starts."""
    if job.started_at is None:
        return formats.MISSING
    end = job.finished_at or now or datetime.now(UTC)
    seconds = max(0, round((end - job.started_at).total_seconds()))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def final_metrics(job: JobInfo) -> dict[str, float | None]:
    """Test accuracy of the published version (from its metrics) and the last eval loss (from the job's
    progress); None where there is none."""
    test = None
    if job.result_ref:
        try:
            metrics = session.read(RegistryClient.get, job.result_ref).metrics
        except NotFound:  # the version was deleted since
            metrics = {}
        found = metrics["test"].get("accuracy") if isinstance(metrics.get("test"), dict) else None
        test = found if isinstance(found, int | float) else None
    loss = job.progress.get("loss") if job.status == "succeeded" else None
    return {"test accuracy": test, "eval loss": loss if isinstance(loss, int | float) else None}


#: Where the page leaves its own listing of the jobs for the table's first drawing.
LISTED = "jobs_listed"


def live_table(listed: list[JobInfo]) -> None:
    """The jobs table, refreshed every five seconds (statuses change while the page is open): drawn from the page's
    own listing ``listed`` first, then from a listing of its own at each refresh."""
    st.session_state[LISTED] = listed
    _live_table()


@st.fragment(run_every=5)
def _live_table() -> None:
    found: list[JobInfo] | None = st.session_state.pop(LISTED, None)  # the page's listing, on the page's own run
    if found is None:
        try:
            found = session.call(lambda c: c.jobs())
        except Exception as exc:  # noqa: BLE001 - a live panel reports and keeps trying
            st.warning(f"Cannot refresh the jobs: {exc}")
            return
    table(found)


def table(jobs: list[JobInfo]) -> None:
    """Every job (the newest TABLE_ROWS), each linked to its own view (``?job=``)."""
    for ref in {j.result_ref for j in jobs[:TABLE_ROWS] if j.result_ref}:  # final_metrics reads them: side by side
        session.prefetch(RegistryClient.get, ref)
    rows = [{"job": navigation.job_link(j.id), "publishes": j.target_name, "status": status(j),
             "submitted": j.created_at, "duration": duration(j), **final_metrics(j),
             "result": navigation.version_link(j.result_ref) if j.result_ref else None} for j in jobs[:TABLE_ROWS]]
    tables.show(pd.DataFrame(rows), hide_index=True, width="stretch", key="jobs_table", column_config={
        "job": st.column_config.LinkColumn(display_text=r"train\?job=(\d+)", help="Follow this job", width=60),
        "submitted": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm"),
        "test accuracy": st.column_config.NumberColumn(format="%.3f"),
        "eval loss": st.column_config.NumberColumn(format="%.4f", help="the last evaluation's loss"),
        "result": st.column_config.LinkColumn(display_text=r"adapter\?ref=([^&]*)", help="Open the published version"),
    })
    if len(jobs) > TABLE_ROWS:
        st.caption(f"The newest {TABLE_ROWS} of {len(jobs):,} jobs; `vera job list` shows them all.")


def ask_cancel(job_id: int) -> None:
    st.session_state["cancel_asked"] = job_id


def confirm_cancel(job_id: int) -> None:
    """``on_click`` of the confirmation: asks the registry to cancel (a queued job at once, a running one after
    its current step)."""
    st.session_state.pop("cancel_asked", None)
    session.call(lambda c: c.cancel_job(job_id))


def cancel_controls(job: JobInfo) -> None:
    """Cancel, asking first; while the worker stops the job, says so instead."""
    if job.status not in ACTIVE_JOB_STATUSES:
        return
    if job.cancel_requested:
        st.info(f"Cancelling job {job.id}: the worker stops it after its current training step.",
                icon=":material/hourglass_top:")
    elif st.session_state.get("cancel_asked") == job.id:
        st.warning(f"Cancel job {job.id} ({job.target_name})? Its training so far is lost; nothing is published.")
        yes, no, _ = st.columns([1, 1, 4])
        yes.button("Yes, cancel the job", key=f"confirm-cancel-{job.id}", type="primary", on_click=confirm_cancel,
                   args=(job.id,))
        no.button("Keep it running", key=f"keep-{job.id}", on_click=st.session_state.pop, args=("cancel_asked", None))
    else:
        st.button("Cancel job", key=f"cancel-{job.id}", on_click=ask_cancel, args=(job.id,))


def header(job: JobInfo) -> None:
    p = job.progress
    cols = st.columns(5)
    cols[0].metric("Status", status(job))
    total = p.get("total_steps")
    cols[1].metric("Step", f"{p.get('step', 0):,} / {total:,}" if total else "starting")
    active = job.status in ACTIVE_JOB_STATUSES
    cols[2].metric("ETA", f"{p['eta_s']:.0f} s" if p.get("eta_s") is not None and active else formats.MISSING)
    cols[3].metric("Loss", formats.number(p["loss"]) if isinstance(p.get("loss"), int | float) else formats.MISSING)
    cols[4].metric("Duration", duration(job))
    if active and total:
        st.progress(min(1.0, p.get("step", 0) / total))
    if job.checkpoint is not None:
        st.caption(checkpoint_line(job.checkpoint))


def checkpoint_line(saved: JobCheckpointInfo) -> str:
    """What the registry keeps of a running job's training, in words (as `vera job show` says it)."""
    return (f"Checkpoint in the registry: {saved.summary(formats.size(saved.size))}; if this worker stops, another "
            "resumes from it.")


def curves(job_id: int, events: list[JobEventInfo]) -> None:
    steps = [[e.data["step"], e.data["loss"]] for e in events if e.kind == "step" and "loss" in e.data]
    evals = charts.eval_points([e.data for e in events if e.kind == "evaluate"])
    chart = charts.loss_curves({f"job {job_id}": steps}, {f"job {job_id}": evals})
    if chart is not None:
        st.altair_chart(chart, width="stretch")


@st.fragment(run_every=2)
def follow(job_id: int) -> None:
    """Live while the job runs: status, step, ETA, loss and eval curves, logs; refreshed every two seconds."""
    try:
        job: JobInfo = session.call(lambda c: c.job(job_id))
        events = session.call(lambda c: c.job_events(job_id))
    except Exception as exc:  # noqa: BLE001 - a live panel reports and keeps trying
        st.warning(f"Cannot refresh job {job_id}: {exc}")
        return
    header(job)
    cancel_controls(job)
    curves(job_id, events)
    if job.result_ref:
        st.success(f"Published {job.result_ref}")
        if st.button(f"Open {job.result_ref}", key=f"open-{job_id}"):
            navigation.open_version(job.result_ref)
    if job.error:
        st.error("The job failed:")
        st.code(job.error[-4000:])
    logs = [f"{e.at:%H:%M:%S} {e.kind:8s} {json.dumps(e.data)}" for e in events if e.kind in ("log", "evaluate")]
    with st.expander("Logs", expanded=job.status not in ACTIVE_JOB_STATUSES):
        st.code("\n".join(logs[-200:]) or "(nothing yet)")
    with st.expander("Spec"):
        views.fields({"publishes": job.target_name, "priority": job.priority, "time limit (s)": job.time_limit_s,
                      **job.spec})

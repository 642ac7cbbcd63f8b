"""Train: launch a fine-tune job, then follow it live (loss, step, ETA, logs), cancel it, open its result."""

from __future__ import annotations

import json

import streamlit as st

from registry.domain.errors import RegistryError
from registry.domain.schemas import ACTIVE_JOB_STATUSES, JobInfo, Ref
from registry.domain.training_spec import training_spec
from vera_core.config import KNOWN_GENERATORS
from web_ui import charts, navigation, session

JOB_BOX = "job_box"


def job_number(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def page() -> None:
    st.title("Fine-tune")
    launch()
    st.divider()
    jobs: list[JobInfo] = session.call(lambda c: c.jobs())
    if not jobs:
        st.caption("No jobs yet.")
        return
    labels = {j.id: f"job {j.id}: {j.target_name} (submitted {j.created_at:%Y-%m-%d %H:%M})" for j in jobs}
    ids: list[int] = list(labels)
    wanted = navigation.follow_url("job", JOB_BOX, default=str(ids[0]), decode=job_number)
    if st.session_state[JOB_BOX] not in ids:
        st.warning(f"This registry has no job {wanted!r}; showing the newest, job {ids[0]}.")
        st.session_state[JOB_BOX] = ids[0]
    job_id = st.selectbox("Job", ids, key=JOB_BOX, format_func=lambda i: labels[i], on_change=navigation.write_url,
                          args=("job", JOB_BOX))
    if job_id is not None:
        navigation.set_param("job", str(job_id))
        follow(job_id)


def target_problem(target: str) -> str | None:
    """What is wrong with the Publish as name, checked before the job is sent; None when it is owner/name."""
    if not target.strip():
        return "Publish as is empty: type the name to publish the adapter as, owner/name (e.g. alice/polarity)."
    try:
        ref = Ref.parse(target.strip())
    except RegistryError as exc:
        return f"Publish as: {exc}"
    if ref.version is not None or ref.alias is not None:
        return (f"Publish as takes owner/name without a version or alias; found {target.strip()!r}. The job "
                f"publishes the next version of {ref.owner}/{ref.name}.")
    return None


def launch() -> None:
    with st.form("train"):
        st.markdown("**New fine-tune job** (a worker trains it and publishes the adapter)")
        c1, c2 = st.columns(2)
        target = c1.text_input("Publish as", placeholder="owner/name")
        base = c2.text_input("Base model", value="minilm", help="'minilm' (offline demo model) or a local directory "
                                                                "on the worker")
        demo = st.checkbox("Demo task (word polarity, offline)", value=True)
        upload = st.file_uploader("Or a dataset (.csv or .jsonl with text and label columns)", type=["csv", "jsonl"])
        c3, c4, c5, c6 = st.columns(4)
        r = c3.number_input("Rank r", 1, 4096, 256)
        prng = c4.number_input("Projection seed", 0, 2**53 - 1, 0,
                               help="up to 2^53 - 1 here; any uint64 with `vera job submit`")
        generator = c5.selectbox("Generator", KNOWN_GENERATORS)
        d_initial = c6.number_input("d initial", 0.0, 10.0, 0.1)
        c7, c8, c9, c10 = st.columns(4)
        epochs = c7.number_input("Epochs", 0.05, 100.0, 1.0)
        lr = c8.number_input("Vector learning rate", 1e-5, 1.0, 1e-2, format="%.4f")
        head_lr = c9.number_input("Head learning rate", 1e-6, 1.0, 1e-3, format="%.5f")
        batch = c10.number_input("Batch size", 1, 1024, 32)
        if not st.form_submit_button("Launch", type="primary"):
            return
    if (problem := target_problem(target)) is not None:
        st.error(problem, icon=":material/edit:")
        return
    spec = training_spec(base_model=base, demo=demo and upload is None, r=int(r), projection_seed=int(prng),
                         generator=generator, d_initial=float(d_initial), epochs=float(epochs), lr=float(lr),
                         head_lr=float(head_lr), batch_size=int(batch))
    dataset = None if upload is None else (upload.name, upload.getvalue())
    job = session.call(lambda c: c.submit_job(target.strip(), spec, dataset=dataset))
    navigation.set_param("job", str(job.id))  # the jobs below follow it
    st.success(f"Queued job {job.id} for {job.target_name}.")


@st.fragment(run_every=2)
def follow(job_id: int) -> None:
    """Live while the job runs: status, step, ETA, loss chart, logs; refreshed every two seconds."""
    try:
        job: JobInfo = session.call(lambda c: c.job(job_id))
        events = session.call(lambda c: c.job_events(job_id))
    except Exception as exc:  # noqa: BLE001 - a live panel reports and keeps trying
        st.warning(f"Cannot refresh job {job_id}: {exc}")
        return
    p = job.progress
    cols = st.columns(4)
    cols[0].metric("Status", job.status)
    total = p.get("total_steps")
    cols[1].metric("Step", f"{p.get('step', 0):,} / {total:,}" if total else "starting")
    active = job.status in ACTIVE_JOB_STATUSES
    cols[2].metric("ETA", f"{p['eta_s']:.0f} s" if p.get("eta_s") is not None and active else "-")
    cols[3].metric("Loss", f"{p['loss']:.4f}" if isinstance(p.get("loss"), int | float) else "-")
    if job.status in ACTIVE_JOB_STATUSES and p.get("total_steps"):
        st.progress(min(1.0, p.get("step", 0) / p["total_steps"]))
    steps = [[e.data["step"], e.data["loss"]] for e in events if e.kind == "step" and "loss" in e.data]
    chart = charts.loss_curves({f"job {job_id}": steps})
    if chart is not None:
        st.altair_chart(chart, width="stretch")
    if job.status in ACTIVE_JOB_STATUSES and st.button("Cancel job", key=f"cancel-{job_id}"):
        session.call(lambda c: c.cancel_job(job_id))
        st.rerun()
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
    if events:
        st.caption(f"{len(events)} events; spec {json.dumps(job.spec)}")

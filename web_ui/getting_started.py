"""What an empty registry shows instead of an empty table: the commands that publish a first adapter, and a button
that queues the demo fine-tune (a worker trains it; `vera up` runs one)."""

from __future__ import annotations

import streamlit as st

from registry.client import RegistryClient
from registry.domain.errors import RegistryError
from registry.domain.training_spec import training_spec
from web_ui import navigation, session
from web_ui.train import target_problem


def panel() -> None:
    url, _ = session.settings()
    st.subheader("This registry has no adapters yet")
    training()
    st.markdown("Publish one you trained, or let a worker train the demo adapter (word polarity on the bundled "
                "MiniLM; a few minutes on a CPU).")
    cli, demo = st.columns([3, 2])  # the commands' longest line whole at 1,400 px (a long URL wraps)
    with cli:
        st.markdown("**From a terminal**")
        st.code(f"export VERA_REGISTRY_URL={url}\n"
                "# train the demo (or bring any PEFT VeRA adapter folder):\n"
                "vera train --demo --out polarity\n"
                "vera publish polarity --name demo/polarity \\\n"
                "    --base-model minilm --metrics polarity/metrics.json\n"
                "# or let the registry's worker train it:\n"
                "vera job submit --name demo/polarity --demo", language="bash", wrap_lines=True)
    with demo:
        st.markdown("**From here**")
        target = st.text_input("Publish the demo as", value="demo/polarity", key="demo_target")
        if st.button("Train the demo adapter", type="primary", icon=":material/model_training:"):
            queue_demo(target)


def training() -> None:
    """The jobs that will publish the first adapters: a newcomer who queued the demo from a terminal was offered
    to queue it again, its job unmentioned (a newcomer's walk, session 34)."""
    try:
        active = [*session.read(RegistryClient.jobs, status="running"), *session.read(RegistryClient.jobs,
                                                                                      status="queued")]
    except (RegistryError, ValueError):  # jobs this caller may not list, or a registry without them: nothing said
        return
    for job in sorted(active, key=lambda j: j.id)[:3]:
        st.info(f"Job {job.id} ({job.status}) will publish {job.target_name} when it ends.",
                icon=":material/model_training:")
        if st.button(f"Follow job {job.id} on Train", key=f"follow_{job.id}"):
            navigation.open_job(job.id)


def queue_demo(target: str) -> None:
    if (problem := target_problem(target)) is not None:
        st.error(problem, icon=":material/edit:")
        return
    job = session.call(lambda c: c.submit_job(target.strip(), training_spec(base_model="minilm", demo=True)))
    navigation.open_job(job.id)

"""Adapter: one version in full: versions and aliases, config, lineage, metrics and loss curve, storage, the
per-layer d/b heatmap, verification, Hub push/pull and downloads."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from registry.client import RegistryClient
from registry.domain.errors import RegistryError
from registry.domain.schemas import ADAPTER_FILES, Ref, VersionInfo
from web_ui import analysis, charts, session


def page() -> None:
    st.title("Adapter")
    ref_text = st.text_input("Version", value=st.session_state.get("adapter_ref", ""),
                             placeholder="owner/name, owner/name:3 or owner/name@prod")
    if not ref_text:
        st.info("Pick a version on the Browse page, or type one above.")
        return
    Ref.parse(ref_text)  # a malformed reference is an InvalidInput message, not a request
    info = session.read(RegistryClient.get, ref_text)
    st.session_state["adapter_ref"] = info.ref
    st.subheader(info.ref + ("  (yanked)" if info.yanked else ""))
    if info.description:
        st.write(info.description)
    cols = st.columns(5)
    cols[0].metric("Rank", info.r)
    cols[1].metric("Trainable parameters", f"{info.trainable_parameters:,}")
    cols[2].metric("Stored", f"{info.stored_bytes:,} B")
    cols[3].metric("Verification", info.verification_status)
    cols[4].metric("Base model", info.base_model)

    overview, metrics_tab, layers_tab, verify_tab, hub_tab, files_tab = st.tabs(
        ["Versions and config", "Metrics", "Layers", "Verify", "Hub", "Download"])
    with overview:
        versions(info)
    with metrics_tab:
        metrics(info)
    with layers_tab:
        layers(info)
    with verify_tab:
        verify(info)
    with hub_tab:
        hub(info)
    with files_tab:
        downloads(info)


def versions(info: VersionInfo) -> None:
    page = session.read(RegistryClient.list_versions, owner=info.owner, name=info.name, include_yanked=True, limit=100)
    st.dataframe(pd.DataFrame([{"version": v.version, "aliases": ", ".join(v.aliases), "created": v.created_at,
                                "yanked": v.yanked, "verification": v.verification_status,
                                "published by": v.published_by} for v in page.items]),
                 hide_index=True, width="stretch")
    st.markdown("**Projection**")
    st.json({"generator": info.generator, "seed": str(info.seed), "r": info.r,
             "fingerprint": info.projection_fingerprint, "seed_reproducible": info.seed_reproducible,
             "target_modules": info.target_modules}, expanded=True)
    st.markdown("**Lineage**")
    if info.lineage:
        st.json(info.lineage)
        if "job_id" in info.lineage:
            st.caption(f"Trained by job {info.lineage['job_id']} (Train page).")
    else:
        st.caption("Published directly (no job or Hub source recorded).")


def metrics(info: VersionInfo) -> None:
    flat = {k: v for k, v in info.metrics.items() if k not in ("train_loss", "eval", "labels")}
    if flat:
        st.json(flat)
    else:
        st.caption("No metrics were recorded with this version.")
    chart = charts.loss_curves({info.ref: info.metrics.get("train_loss") or []})
    if chart is not None:
        st.altair_chart(chart, width="stretch")
    st.markdown("**Storage**")
    st.json(session.read(analysis.storage, info.ref))


def layers(info: VersionInfo) -> None:
    rows = session.read(analysis.layer_magnitudes, info.ref)
    st.caption("Mean |d| and |b| per adapted layer: where the adaptation concentrates (the paper's Figure 4).")
    chart = charts.magnitude_heatmap(rows)
    if chart is not None:
        st.altair_chart(chart, width="stretch")
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")


def verify(info: VersionInfo) -> None:
    st.caption("Regenerates A and B from the seed and compares fingerprints, re-hashes the stored blobs and checks "
               "the layer shapes against the base model.")
    if st.button("Verify now", key="verify"):
        report = session.call(lambda c: c.verify(info.ref))
        (st.success if report.status == "passed" else st.error)(f"{report.ref}: {report.status}")
        st.json(report.model_dump(mode="json")["checks"])
        st.cache_data.clear()


def hub(info: VersionInfo) -> None:
    with st.form("hub_push"):
        st.markdown("**Push to the Hub** (PEFT's format and a model card; an unchanged push makes no commit)")
        repo = st.text_input("Repo id", placeholder="namespace/name")
        kind = st.radio("Format", ["VeRA with projections", "VeRA seed-only", "equivalent LoRA"], horizontal=True)
        private = st.checkbox("Private repo")
        token = st.text_input("Hub token (used once, never stored)", type="password")
        if st.form_submit_button("Push"):
            try:
                result = session.call(lambda c: c.hub_push(info.ref, repo, private=private,
                                                           with_projection=kind != "VeRA seed-only",
                                                           as_lora=kind == "equivalent LoRA", hub_token=token or None))
            except RegistryError as exc:
                session.show_error(exc)
            else:
                st.success(("Pushed" if result.changed else "Unchanged, no new commit:")
                           + f" {result.sync.repo_id}@{result.sync.commit_sha[:12]}")
                for note in result.notes:
                    st.warning(note)
                st.cache_data.clear()
    with st.form("hub_pull"):
        st.markdown(f"**Pull from the Hub** into {info.owner}/{info.name} (a PEFT VeRA adapter repo)")
        repo = st.text_input("Repo id to pull", placeholder="namespace/name")
        revision = st.text_input("Revision", value="main")
        token = st.text_input("Hub token", type="password", key="pull_token")
        if st.form_submit_button("Pull"):
            try:
                result = session.call(lambda c: c.hub_pull(repo, f"{info.owner}/{info.name}", revision=revision,
                                                           hub_token=token or None))
            except RegistryError as exc:
                session.show_error(exc)
            else:
                st.success(("Pulled as " if result.changed else "Unchanged, already ") + result.version.ref)
                st.cache_data.clear()
    st.markdown("**Sync state** (pushes and pulls of this version, newest first)")
    syncs = session.read(RegistryClient.hub_status, info.ref)
    if syncs:
        st.dataframe(pd.DataFrame([{"direction": s.direction, "repo": s.repo_id, "revision": s.revision,
                                    "commit": s.commit_sha[:12], "format": s.format if s.format == "lora" else (
                                        "vera" if s.with_projection else "vera, seed-only"),
                                    "by": s.actor, "at": s.at, "link": s.commit_url} for s in syncs]),
                     hide_index=True, width="stretch",
                     column_config={"link": st.column_config.LinkColumn()})
    else:
        st.caption("Never pushed to or pulled from the HuggingFace Hub.")


def downloads(info: VersionInfo) -> None:
    forms = {"for PEFT (default)": {}, "with A and B": {"with_projection": True},
             "seed-only (vera_core)": {"seed_only": True}, "equivalent LoRA (vLLM, LoRAX)": {"as_lora": True}}
    available = [f for f in forms if info.seed_reproducible or f != "seed-only (vera_core)"]
    form = st.radio("Form", available, horizontal=True,
                    help="The default is what PEFT loads correctly: seed-only where PEFT's own generator regenerates "
                         "A and B, A and B materialised otherwise. A seed-only copy of a portable-generator adapter "
                         "is for vera_core; PEFT refuses it with a message.")
    options = forms[form]
    for name in ADAPTER_FILES[:2] if options.get("as_lora") else ADAPTER_FILES:
        data = session.read(RegistryClient.download, info.ref, name, with_projection="with_projection" in options,
                            seed_only="seed_only" in options, as_lora="as_lora" in options)
        st.download_button(f"{name} ({len(data):,} B)", data, file_name=name, key=f"dl-{name}")
    flag = {"with_projection": " --with-projection", "seed_only": " --seed-only", "as_lora": " --as lora"}
    st.code(f"vera fetch {info.ref} --out {info.name}" + "".join(flag[k] for k in options), language="bash")
    st.caption("Load it: `vera_core.load_adapter(base, folder)` or `PeftModel.from_pretrained(base, folder)`; "
               + json.dumps(info.target_modules))

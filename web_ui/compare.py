"""Compare: two to four versions side by side."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from registry.client import RegistryClient
from web_ui import charts, session
from web_ui.browse import key_metrics


def page() -> None:
    st.title("Compare")
    recent = [v.ref for v in session.read(RegistryClient.list_versions, limit=200).items]
    default = [r for r in st.session_state.get("compare_refs", []) if r in recent] or recent[:2]
    refs = st.multiselect("Versions (2 to 4)", recent, default=default, max_selections=4)
    typed = st.text_input("Or type references, comma-separated", placeholder="alice/a:1, bob/b@prod")
    if typed.strip():
        refs = [r.strip() for r in typed.split(",") if r.strip()]
    if not 2 <= len(refs) <= 4:
        st.info("Choose two to four versions.")
        return
    st.session_state["compare_refs"] = refs
    result = session.read(RegistryClient.compare, refs)
    st.dataframe(pd.DataFrame([{
        "version": v.ref, "base model": v.base_model, "r": v.r, "seed": str(v.seed), "generator": v.generator,
        "trainable params": v.trainable_parameters, "adapter params": v.adapter_parameters,
        "stored bytes": v.stored_bytes, **key_metrics(v), "verification": v.verification_status,
    } for v in result.versions]), hide_index=True, width="stretch")
    curves = charts.loss_curves({v.ref: v.metrics.get("train_loss") or [] for v in result.versions})
    st.subheader("Loss curves")
    if curves is None:
        st.caption("None of these versions recorded a loss curve (versions trained by a job do).")
    else:
        st.altair_chart(curves, width="stretch")
    st.subheader("Per-layer cosine similarity of the weight deltas")
    layers = [layer.model_dump() for layer in result.layers]
    cosine = charts.cosine_heatmap(layers, result.refs)
    if cosine is None:
        st.caption("No adapted layer is shared by these versions.")
    else:
        st.caption(f"cos(ΔW of each version, ΔW of {result.refs[0]}) per layer; 1 = the same direction.")
        st.altair_chart(cosine, width="stretch")

"""Compare: two to four versions side by side (``?refs=a,b`` in the URL)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from registry.client import RegistryClient
from web_ui import charts, navigation, session
from web_ui.browse import COLUMNS, key_metrics

BOX = "compare_box"


def add_typed() -> None:
    """``on_change`` of the reference box: typed references join the chosen ones (at most four), then the box
    empties."""
    state = st.session_state
    chosen: list[str] = state[BOX]
    state[BOX] = (chosen + [r for r in navigation.split_refs(state["compare_typed"]) if r not in chosen])[:4]
    state["compare_typed"] = ""
    navigation.write_url("refs", BOX, navigation.join_refs)


def page() -> None:
    st.title("Compare")
    recent = [v.ref for v in session.read(RegistryClient.list_versions, limit=200).items]
    navigation.follow_url("refs", BOX, default=navigation.join_refs(recent[:2]), decode=navigation.split_refs)
    chosen: list[str] = st.session_state[BOX]
    refs = st.multiselect("Versions (2 to 4)", recent + [r for r in chosen if r not in recent], key=BOX,
                          max_selections=4, on_change=navigation.write_url, args=("refs", BOX, navigation.join_refs))
    st.text_input("Add versions by reference (comma-separated)", key="compare_typed", on_change=add_typed,
                  placeholder="alice/a:1, bob/b@prod")
    if not 2 <= len(refs) <= 4:
        st.info("Choose two to four versions.")
        return
    result = session.read(RegistryClient.compare, refs)
    navigation.set_param("refs", navigation.join_refs(refs))
    frame = pd.DataFrame([{
        "version": navigation.version_link(v.ref), "base model": v.base_model, "r": v.r, "seed": str(v.seed),
        "generator": v.generator, "trainable params (with head)": v.trainable_parameters,
        "adapter params": v.adapter_parameters, "stored bytes": v.stored_bytes, **key_metrics(v),
        "verification": v.verification_status,
    } for v in result.versions])
    st.dataframe(frame, hide_index=True, width="stretch", column_config={
        **{name: column for name, column in COLUMNS.items() if name in frame.columns},
        "adapter params": st.column_config.NumberColumn(format="localized", help="d and b: what `vera ls` counts")})
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

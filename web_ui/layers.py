"""The Adapter page's Layers tab: mean |d| and |b| per adapted layer (two depth x module grids and a table), each
layer with the entry of target_modules that adapted it, and apart from them the modules saved whole
(``modules_to_save``: a task head), which have no d and b. A layer outside the numbered blocks (``bert.pooler.dense``,
matched by ``dense``) is said to be matched by its name's end, as PEFT matches a list of names: a newcomer's walk
read it as a head listed among the VeRA layers."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from registry.domain.schemas import VersionInfo
from vera_core.patterns import list_entry
from web_ui import analysis, charts, formats, session, tables

#: The Layers table's columns: analysis.layer_magnitudes' keys, as people read them.
LAYER_COLUMNS = {"d_mean_abs": "mean |d|", "b_mean_abs": "mean |b|", "d_norm": "‖d‖", "b_norm": "‖b‖"}


def tensor_summary(info: VersionInfo) -> dict[str, Any]:
    """analysis.summary of the version (one download for the Metrics and Layers tabs)."""
    return session.read(analysis.summary, info.ref, seed_reproducible=info.seed_reproducible)


def section(info: VersionInfo) -> None:
    found = tensor_summary(info)
    rows = found["layers"]
    st.caption("Mean |d| and |b| per adapted layer: where the adaptation concentrates (the paper's Figure 4).")
    chart = charts.magnitude_heatmap(rows)
    if chart is not None:
        st.altair_chart(chart, width="stretch")
    if (outside := outside_blocks(rows, info.target_modules)) is not None:
        st.caption(outside)
    tables.show(layer_table(rows, info.target_modules), hide_index=True, width="stretch", whole=True,
                numbers=LAYER_COLUMNS.values())  # (it scrolled at ten rows inside the page: a walk in a browser)
    whole = found.get("saved_whole") or []
    if whole:
        st.markdown("**Saved whole (modules_to_save)**")
        st.caption("Trained in full and stored as they are (a task head; biases, with bias=\"all\"): no d and b, so "
                   "not among the layers above.")
        tables.show(pd.DataFrame([{"module": m["module"], "parameters": formats.count(m["parameters"])}
                                  for m in whole]), hide_index=True, width="content")


def matched_by(path: str, targets: list[str] | str | None) -> str:
    """The entry of ``target_modules`` that adapts the layer ``path``, as PEFT matches them: a name in a list matches
    the whole path or its end after a '.' (``dense``: ``bert.pooler.dense`` too); a string is a regex over the whole
    path; none: the model type's defaults."""
    if targets is None:
        return "(the model's defaults)"
    if isinstance(targets, str):
        return f"regex {targets}"
    return list_entry(targets, path) or formats.MISSING


def layer_table(rows: list[dict[str, Any]], targets: list[str] | str | None = None) -> pd.DataFrame:
    """The per-layer magnitudes in model order (as the grids above), each layer's block and module in columns of
    their own, and the target_modules entry that adapted it."""
    frame, _, _ = charts.grid_frame(rows)
    frame["target"] = [matched_by(path, targets) for path in frame["layer"]]
    return frame.rename(columns={"depth": "block", **LAYER_COLUMNS})[
        ["block", "module", "target", *LAYER_COLUMNS.values()]]


def outside_blocks(rows: list[dict[str, Any]], targets: list[str] | str | None) -> str | None:
    """A line naming the adapted layers outside the numbered blocks that a list of names matched by their end (a
    pooler's ``dense`` beside the blocks' ``dense``), or None when there are none."""
    if not isinstance(targets, list):
        return None
    named = [(row["layer"], matched_by(row["layer"], targets)) for row in rows
             if charts.layer_position(row["layer"])[0] is None]
    by_end = [f"`{path}` (by `{target}`)" for path, target in named if path != target and target != formats.MISSING]
    if not by_end:
        return None
    return (f"Adapted outside the blocks ({charts.NO_DEPTH} in the grids): {', '.join(by_end)}. A name in "
            "target_modules adapts every linear layer whose path ends in it, as PEFT matches them (a regex over "
            "whole paths, `--target-modules '^...'`, can leave such a layer out).")

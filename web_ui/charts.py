"""Altair charts of the dashboard: loss curves, per-layer magnitudes of d and b, cosine similarity of deltas."""

from __future__ import annotations

from typing import Any, cast

import altair as alt
import pandas as pd


def loss_curves(curves: dict[str, list[list[float]]]) -> alt.Chart | None:
    """One line per version: ``{ref: [[step, loss], ...]}``; None if nothing to draw."""
    rows = [{"version": ref, "step": step, "loss": loss} for ref, points in curves.items() for step, loss in points]
    if not rows:
        return None
    return cast(alt.Chart, alt.Chart(pd.DataFrame(rows)).mark_line()
            .encode(x=alt.X("step:Q", title="optimizer step"), y=alt.Y("loss:Q", title="training loss"),
                    color=alt.Color("version:N"), tooltip=["version", "step", "loss"])
            .properties(height=260))


def magnitude_heatmap(rows: list[dict[str, Any]]) -> alt.Chart | None:
    """Layers (model order) x {d, b}: mean |value|, the paper's view of where adaptation concentrates."""
    if not rows:
        return None
    order = [r["layer"] for r in rows]
    long = [{"layer": r["layer"], "vector": vec, "mean |value|": r[f"{vec}_mean_abs"]} for r in rows for vec in "db"]
    return cast(alt.Chart, alt.Chart(pd.DataFrame(long)).mark_rect()
            .encode(y=alt.Y("layer:N", sort=order, title=None, axis=alt.Axis(labelLimit=400)),
                    x=alt.X("vector:N", title=None),
                    color=alt.Color("mean |value|:Q", scale=alt.Scale(scheme="viridis")),
                    tooltip=["layer", "vector", alt.Tooltip("mean |value|:Q", format=".4f")])
            .properties(height=max(160, 14 * len(order))))


def cosine_heatmap(layers: list[dict[str, Any]], refs: list[str]) -> alt.Chart | None:
    """Per layer, cosine similarity of each other version's weight delta with the first version's."""
    rows = [{"layer": layer["module"], "version": refs[j], "cosine": layer["delta_cosine"][0][j]}
            for layer in layers for j in range(1, len(refs)) if layer["delta_cosine"][0][j] is not None]
    if not rows:
        return None
    order = [layer["module"] for layer in layers]
    return cast(alt.Chart, alt.Chart(pd.DataFrame(rows)).mark_rect()
            .encode(y=alt.Y("layer:N", sort=order, title=None, axis=alt.Axis(labelLimit=400)),
                    x=alt.X("version:N", title=f"vs {refs[0]}"),
                    color=alt.Color("cosine:Q", scale=alt.Scale(domain=[-1, 1], scheme="redblue")),
                    tooltip=["layer", "version", alt.Tooltip("cosine:Q", format=".3f")])
            .properties(height=max(160, 14 * len(order))))

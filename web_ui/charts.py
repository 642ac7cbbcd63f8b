"""Altair charts of the dashboard, each saying what it shows: loss curves (training and eval), the per-layer
magnitudes of d and b, and the cosine similarity of weight deltas, both as a depth x module grid.

Versions are told apart by a categorical, colour-blind-safe palette (Okabe and Ito), never by shades of one hue:
Streamlit's own theme gives four lines two blues and two reds."""

from __future__ import annotations

import math
import re
from typing import Any, cast

import altair as alt
import pandas as pd

#: Okabe-Ito colours, most distinct first: blue, orange, green, vermillion, purple, sky blue, yellow, black.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
ROW_PX = 24  # one grid row: tall enough for every label at Altair's 11 px font
#: the depth of a layer outside the numbered blocks (a pooler, a head): its column's heading ("-" read as nothing: a
#: walk's finding, session 31)
NO_DEPTH = "other"


def version_colours(refs: list[str]) -> alt.Color:
    """Colour by version, each version its own palette colour, in the order given."""
    return alt.Color("version:N", sort=refs, scale=alt.Scale(domain=refs, range=list(PALETTE[:len(refs)])),
                     legend=alt.Legend(title=None, orient="bottom", labelLimit=0, columns=2))  # long names wrap


def eval_points(history: list[dict[str, Any]], metric: str = "loss") -> list[list[float]]:
    """``[[step, value], ...]`` of the eval ``metric`` from an eval history (a version's ``metrics["eval"]`` or a
    job's ``evaluate`` events: ``{"step": 40.0, "eval_loss": 0.41, "eval_accuracy": 0.8}``)."""
    key = f"eval_{metric}"
    return [[float(e["step"]), float(e[key])] for e in history
            if isinstance(e, dict) and _number(e.get("step")) and _number(e.get(key))]


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


#: The most eval metrics besides the loss drawn, each a chart (a task's metrics: accuracy, or perplexity).
MAX_METRIC_CHARTS = 4


def eval_metrics(histories: list[list[dict[str, Any]]]) -> list[str]:
    """The metrics besides the loss that the eval ``histories`` record (``eval_accuracy`` -> ``accuracy``), as first
    seen, at most MAX_METRIC_CHARTS."""
    names = dict.fromkeys(key.removeprefix("eval_") for history in histories for e in history if isinstance(e, dict)
                          for key, value in e.items()
                          if key.startswith("eval_") and key != "eval_loss" and _number(value))
    return list(names)[:MAX_METRIC_CHARTS]


def step_axis(span: tuple[float, float] | None = None) -> alt.X:
    """The optimizer step on x: whole-number ticks at least 1 apart, written without decimals (never 1.5, 2.5);
    padded so a dot at the first or last step is drawn whole, not cut by the plot's edge; spanning the recorded
    steps: no zero (steps 100-200 of a resumed run start at 100) and no nice (Vega rounds the padded domain outwards
    to round ticks: steps 1-300 drew an axis from -20, a negative step). ``span``: the first and last step shown
    (a metric chart's are its loss chart's, so that a step sits at one place in both: a walk, session 42)."""
    lo, hi = span if span is not None else (alt.Undefined, alt.Undefined)
    return alt.X("step:Q", title="optimizer step", axis=alt.Axis(tickMinStep=1, format="d"),
                 scale=alt.Scale(padding=EDGE_PX, zero=False, nice=False, domainMin=lo, domainMax=hi))


def step_span(*curves: dict[str, list[list[float]]]) -> tuple[float, float] | None:
    """The first and last step of ``curves`` (``{ref: [[step, value], ...]}`` each), None when they hold none."""
    steps = [point[0] for curve in curves for points in curve.values() for point in points]
    return (min(steps), max(steps)) if steps else None


def kept_steps(metrics: dict[str, dict[str, Any]]) -> dict[str, float]:
    """The step whose weights each version published (its metrics' ``kept``, `vera train`'s), by ref; versions that
    do not say are left out."""
    return {ref: float(held["step"]) for ref, m in metrics.items()
            if isinstance(held := m.get("kept"), dict) and _number(held.get("step"))}


#: The kept step's rule: dotted, thin, in its version's colour; with several versions, each version's dots (DOT_PX
#: long) fall in the gaps of the others', and a GAP_PX gap after them all, so that rules at one step show every
#: colour and still read as dotted (one hid the other; three at one step drew a solid stripe: walks in a browser).
KEPT_DASH, DOT_PX, GAP_PX = [2, 3], 3, 3
KEPT_NOTE = "dotted: the step whose weights were published"


def kept_rules(kept: dict[str, float], refs: list[str]) -> list[alt.Chart]:
    """A dotted vertical rule at each version's kept step (of those drawn), in its colour, a layer each (none: [])."""
    shown = [ref for ref in refs if ref in kept]
    tooltip = ["version", alt.Tooltip("step:Q", title="weights published from step", format="d")]
    dash = KEPT_DASH if len(shown) == 1 else [DOT_PX, DOT_PX * (len(shown) - 1) + GAP_PX]
    return [cast(alt.Chart, alt.Chart(pd.DataFrame([{"version": ref, "step": kept[ref]}])).mark_rule(
        strokeDash=dash, strokeDashOffset=-DOT_PX * i, strokeWidth=1.5).encode(
        x="step:Q", color=version_colours(refs), tooltip=tooltip)) for i, ref in enumerate(shown)]


#: The numbers of a metric's axis: four significant digits at most, thousands separated (one tick read 0.627907).
METRIC_AXIS_FORMAT = ",.4~r"
#: The px the value axis of the loss and eval charts takes at least (its ticks and labels: "0.8125" is about 40 px), so
#: that charts drawn one above the other start their plots, and their step axes, at the same x: the accuracy chart's
#: sat about 12 px right of the loss chart's, its labels being wider (a dashboard walk, session 48).
VALUE_AXIS_PX = 48


def metric_curves(histories: dict[str, list[dict[str, Any]]], span: tuple[float, float] | None = None,
                  kept: dict[str, float] | None = None) -> list[alt.LayerChart]:
    """A chart per eval metric besides the loss (accuracy for a classifier, perplexity for a language model), a line
    with a dot per evaluation, one colour per version: ``{ref: eval history}`` (what MLflow draws of any metric
    logged by step); none where no evaluation recorded one. ``span``: the steps on x (the loss chart's);
    ``kept``: each version's published step, a dotted rule (kept_steps)."""
    charts = []
    for metric in eval_metrics(list(histories.values())):
        rows = [{"version": ref, "step": step, metric: value} for ref, history in histories.items()
                for step, value in eval_points(history, metric)]
        refs = list(dict.fromkeys(str(r["version"]) for r in rows))
        base = alt.Chart(pd.DataFrame(rows)).encode(
            x=step_axis(span), color=version_colours(refs),
            y=alt.Y(f"{metric}:Q", title=metric, scale=alt.Scale(zero=False),
                    axis=alt.Axis(format=METRIC_AXIS_FORMAT, minExtent=VALUE_AXIS_PX)),
            tooltip=["version", "step", alt.Tooltip(f"{metric}:Q", format=".4f")])
        rules = kept_rules(kept or {}, refs)
        title = alt.TitleParams(f"Eval {metric}", anchor="start", subtitle=f"{metric} on the held-out eval set at "
                                "each evaluation (a dot each)" + (f"; {KEPT_NOTE}" if rules else ""),
                                subtitleFontSize=SUBTITLE_PX, subtitleColor="#444")
        layers = [base.mark_line(strokeWidth=2), base.mark_point(filled=True, size=DOT_SIZE), *rules]
        charts.append(cast(alt.LayerChart, alt.layer(*layers).properties(
            height=PLOT_PX, title=title, autosize=alt.AutoSizeParams(type="fit-x", contains="padding"))))
    return charts


#: The loss chart's plot area in px (axes, title and legends come on top): tall enough to tell curves apart, whether
#: the chart shows one version or four.
PLOT_PX = 300
#: A legend sample's length in px (Vega's symbol size is an area: 25 px long): long enough to show a whole dash
#: pattern (6 on, 3 off) beside a solid line.
SAMPLE_SIZE = 625


#: The eval dots' area (px²) and the room kept at the plot's left and right edges (px).
DOT_SIZE, EDGE_PX = 70, 8
#: The loss chart's subtitle (what its lines mean): the size of the axis titles' text, not Vega's 10 px.
SUBTITLE_PX = 12


def loss_curves(train: dict[str, list[list[float]]], evals: dict[str, list[list[float]]] | None = None,
                kept: dict[str, float] | None = None) -> alt.LayerChart | None:
    """Training loss per optimizer step (solid lines) and eval loss (dashed, a dot per evaluation), one colour per
    version: ``{ref: [[step, loss], ...]}``; None if there is nothing to draw. ``kept``: each version's published
    step, a dotted rule (kept_steps).

    The plot area is PLOT_PX tall whatever the legends hold: the chart fits its container's width only
    ("fit-x"; Streamlit's default "fit" squeezes title, axes and legends into a fixed height, leaving four
    versions' curves 55 px). The legend names each version by its colour and each curve by a line sample."""
    # a curve of one point is a dot too: a line through one point draws nothing (a run that logged its loss once,
    # [[10, 0.686]], showed a legend and an axis up to 0.686 and no mark: a dashboard walk, session 48)
    rows = [{"version": ref, "step": step, "loss": loss, "curve": curve, "dot": curve == "eval" or len(points) == 1}
            for curve, curves in (("training", train), ("eval", evals or {}))
            for ref, points in curves.items() for step, loss in points]
    if not rows:
        return None
    refs = list(dict.fromkeys(str(r["version"]) for r in rows))  # a version without points: not in the legend
    has_eval = any(r["curve"] == "eval" for r in rows)
    # a dashed eval line (and its legend sample) only where some version was evaluated more than once: one
    # evaluation is a dot, and a legend promising a dashed line that is nowhere would mislead (session 12's walk)
    dashed = any(len(points) > 1 for points in (evals or {}).values())
    kinds = ["training", "eval"] if dashed else ["training"]
    base = alt.Chart(pd.DataFrame(rows)).encode(
        x=step_axis(),
        # the loss axis spans the losses, not down to zero: losses of 0.60-0.70 were squeezed into the plot's top
        # sixth, one version's curve hidden under the others' (session 23's walk)
        y=alt.Y("loss:Q", title="loss", scale=alt.Scale(zero=False), axis=alt.Axis(minExtent=VALUE_AXIS_PX)),
        color=version_colours(refs),
        tooltip=["version", "curve", "step", alt.Tooltip("loss:Q", format=".4f")])
    # The dash is the lines' own: the dots do not take part in its legend, whose samples are then strokes (a legend
    # merged with the filled dots draws each sample as a filled line: nothing).
    lines = base.transform_filter(alt.FieldOneOfPredicate(field="curve", oneOf=kinds)).mark_line(
        strokeWidth=2).encode(strokeDash=alt.StrokeDash(
        "curve:N", sort=kinds, title=None, scale=alt.Scale(domain=kinds, range=[[1, 0], [6, 3]][:len(kinds)]),
        legend=alt.Legend(orient="bottom", symbolType="stroke", symbolStrokeColor="#555", symbolStrokeWidth=2,
                          symbolSize=SAMPLE_SIZE)))
    # large enough to be seen alone: a run evaluated once has one dot and no dashed line (session 12's walk)
    dots = base.transform_filter(alt.datum.dot).mark_point(filled=True, size=DOT_SIZE)
    rules = kept_rules(kept or {}, refs)
    title = alt.TitleParams("Training and eval loss" if has_eval else "Training loss", anchor="start",
                            subtitle=("solid: training loss per step; "
                                      + ("dashed with dots" if dashed else "dots")
                                      + ": loss on the held-out eval set"
                                      if has_eval else "per optimizer step (no evaluation was recorded)")
                            + (f"; {KEPT_NOTE}" if rules else ""),
                            subtitleFontSize=SUBTITLE_PX, subtitleColor="#444")  # Vega's 10 px grey was hard to read
    return cast(alt.LayerChart, alt.layer(lines, dots, *rules).properties(
        height=PLOT_PX, title=title, autosize=alt.AutoSizeParams(type="fit-x", contains="padding")))


def layer_position(path: str) -> tuple[int | None, str]:
    """``model.layers.3.self_attn.q_proj`` -> ``(3, "self_attn.q_proj")``: the block's depth (the first number in
    the path) and the module within it; ``(None, path)`` for a layer outside the numbered blocks."""
    parts = path.split(".")
    for i, part in enumerate(parts):
        if part.isdigit():
            return int(part), ".".join(parts[i + 1:]) or path
    return None, path


#: The order of the usual modules within a transformer block, as the model runs them (files list tensors by name,
#: so a file's order says nothing): attention's query, key, value and output, then the MLP's in and out (BERT and
#: RoBERTa, Llama-style, GPT-2, OPT-style names). A longer name comes before one it ends with.
BLOCK_ORDER = ("query", "q_proj", "key", "k_proj", "value", "v_proj", "c_attn", "qkv_proj", "query_key_value",
               "attention.output.dense", "o_proj", "out_proj", "attn.c_proj", "dense_h_to_4h", "intermediate.dense",
               "gate_proj", "up_proj", "c_fc", "fc1", "output.dense", "down_proj", "mlp.c_proj", "dense_4h_to_h", "fc2")


def _block_rank(module: str) -> int:
    """Where ``module`` (the path within its block) runs among BLOCK_ORDER's; after them all when it is none."""
    return next((i for i, known in enumerate(BLOCK_ORDER) if module == known or module.endswith("." + known)),
                len(BLOCK_ORDER))


def _model_order(path: str) -> tuple[int, int, int, list[Any]]:
    """Sort key: numbered blocks by depth (files list them as text: 0, 1, 10, 11, 2, ...), layers outside the
    blocks after them; within a block, the usual modules in the order the model runs them (BLOCK_ORDER), others
    after them by name with numbers compared as numbers."""
    depth, module = layer_position(path)
    return (depth is None, depth or 0, _block_rank(module), [(0, int(p), "") if p.isdigit() else (1, 0, p)
                                                             for p in re.split(r"(\d+)", path) if p])


def grid_frame(rows: list[dict[str, Any]], layer_key: str = "layer") -> tuple[pd.DataFrame, list[str], list[str]]:
    """``rows`` with a depth and a module column, and the depth and module orders (model order: numbered blocks
    first to last, each block's modules in the order the model runs them, then the layers outside the blocks)."""
    ordered = sorted(rows, key=lambda r: _model_order(r[layer_key]))
    placed = []
    for row in ordered:
        depth, module = layer_position(row[layer_key])
        placed.append({**row, "depth": NO_DEPTH if depth is None else str(depth), "module": module})
    depths = list(dict.fromkeys(r["depth"] for r in placed))
    modules = list(dict.fromkeys(r["module"] for r in placed))
    return pd.DataFrame(placed), depths, modules


def _grid(frame: pd.DataFrame, value: str, title: str, depths: list[str], modules: list[str],
          scale: alt.Scale, fmt: str) -> alt.Chart:
    """One depth x module heat grid: depth across (short labels, never rotated), modules down (full names)."""
    return cast(alt.Chart, alt.Chart(frame, title=alt.TitleParams(title, anchor="start")).mark_rect(
        stroke="white", strokeWidth=1).encode(
        x=alt.X("depth:O", sort=depths, title="block (depth)" + (f"; {NO_DEPTH}: outside the blocks" if NO_DEPTH
                                                                  in depths else ""),
                axis=alt.Axis(labelAngle=0, orient="top")),
        y=alt.Y("module:N", sort=modules, title=None, axis=alt.Axis(labelLimit=0, labelOverlap=False)),
        color=alt.Color(f"{value}:Q", scale=scale, title=None, legend=alt.Legend(orient="right", format=fmt)),
        tooltip=["depth", "module", alt.Tooltip(f"{value}:Q", format=fmt)],
    ).properties(height=ROW_PX * len(modules), width=alt.Step(max(28, 480 // max(1, len(depths))))))


def magnitude_heatmap(rows: list[dict[str, Any]]) -> alt.VConcatChart | None:
    """Mean |d| and mean |b| per adapted layer, as two depth x module grids with a colour scale each (d and b
    live on different scales: one shared scale paints one of them flat)."""
    if not rows:
        return None
    frame, depths, modules = grid_frame(rows)
    scale = alt.Scale(scheme="viridis", zero=True)
    return cast(alt.VConcatChart, alt.vconcat(
        _grid(frame, "d_mean_abs", "mean |d| (scales each rank direction)", depths, modules, scale, ".3f"),
        _grid(frame, "b_mean_abs", "mean |b| (scales each output)", depths, modules, scale, ".3f"),
    ).resolve_scale(color="independent"))


def cosine_heatmap(layers: list[dict[str, Any]], refs: list[str]) -> alt.VConcatChart | None:
    """Per layer, the cosine similarity of each other version's weight delta with the first version's: one depth x
    module grid per other version that has a cosine with it, on one scale from -1 to 1. ``layers``: the
    comparison's ``with_first`` (``{"module": path, "cosine": [per version]}``, None where there is none)."""
    rows = [{"layer": layer["module"], "version": refs[j], "cosine": layer["cosine"][j]}
            for layer in layers for j in range(1, len(refs)) if layer["cosine"][j] is not None]
    if not rows:
        return None
    frame, depths, modules = grid_frame(rows)
    scale = alt.Scale(domain=[-1, 1], scheme="redblue")
    grids = [_grid(frame[frame["version"] == ref], "cosine", f"{ref}  vs  {refs[0]}", depths, modules, scale,
                   ".2f") for ref in refs[1:] if (frame["version"] == ref).any()]
    return alt.vconcat(*grids)


def without_cosine(layers: list[dict[str, Any]], count: int) -> list[int]:
    """The positions (1 to ``count`` - 1) of the versions with no cosine with the first in any layer of
    ``layers`` (as cosine_heatmap takes them): no grid is drawn for them."""
    return [j for j in range(1, count) if all(layer["cosine"][j] is None for layer in layers)]

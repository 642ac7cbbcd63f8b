"""The dashboard's charts say what they show: titles, the eval curve, model order, every label, a colour scale for d
and one for b, and distinct colours per version."""

from __future__ import annotations

from typing import Any

import pytest

from web_ui import charts


def spec(chart: Any) -> dict[str, Any]:
    return dict(chart.to_dict())


def layer_rows(depths: int = 12) -> list[dict[str, Any]]:
    """As analysis.layer_magnitudes gives them: in the file's (text) order, layers.10 before layers.2."""
    paths = sorted(f"model.layers.{i}.self_attn.{m}" for i in range(depths) for m in ("q_proj", "v_proj"))
    return [{"layer": p, "d_mean_abs": 0.1 + i, "b_mean_abs": 0.001 * i} for i, p in enumerate(paths + ["lm_head"])]


@pytest.mark.parametrize(("path", "position"), [
    ("model.layers.3.self_attn.q_proj", (3, "self_attn.q_proj")),
    ("bert.encoder.layer.11.attention.self.query", (11, "attention.self.query")),
    ("lm_head", (None, "lm_head")),
], ids=["llama", "bert", "outside-the-blocks"])
def test_a_layer_path_is_a_depth_and_a_module(path: str, position: tuple[int | None, str]) -> None:
    assert charts.layer_position(path) == position


def test_the_grid_is_in_model_order_with_every_label() -> None:
    frame, depths, modules = charts.grid_frame(layer_rows())
    assert depths == [str(i) for i in range(12)] + [charts.NO_DEPTH]  # 2 before 10, the head last
    assert modules == ["self_attn.q_proj", "self_attn.v_proj", "lm_head"]
    chart = spec(charts.magnitude_heatmap(layer_rows()))
    for grid in chart["vconcat"]:
        y, x = grid["encoding"]["y"], grid["encoding"]["x"]
        assert y["sort"] == modules and y["axis"]["labelOverlap"] is False and y["axis"]["labelLimit"] == 0
        assert x["sort"] == depths and x["axis"]["labelAngle"] == 0  # never rotated
        assert x["title"] == "block (depth); other: outside the blocks"  # the head's column, headed in words
        assert grid["height"] >= charts.ROW_PX * len(modules)  # a row per module: no label skipped


@pytest.mark.parametrize("block", [
    ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj",
     "mlp.down_proj"],  # Llama
    ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
     "intermediate.dense", "output.dense"],  # BERT, RoBERTa
    ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"],  # GPT-2
], ids=["llama", "bert", "gpt2"])
def test_a_blocks_modules_are_in_the_order_the_model_runs_them(block: list[str]) -> None:
    """Files list tensors by name (mlp.down_proj before self_attn.q_proj): within a block, the grid and the Layers
    table follow the model (attention's q, k, v, o, then the MLP's in and out), unknown modules after them."""
    paths = sorted([f"model.layers.{d}.{m}" for d in (0, 1) for m in [*block, "zz_extra"]])  # as a file lists them
    _, depths, modules = charts.grid_frame([{"layer": p, "d_mean_abs": 1.0, "b_mean_abs": 1.0} for p in paths])
    assert depths == ["0", "1"] and modules == [*block, "zz_extra"]


def test_d_and_b_have_a_colour_scale_each() -> None:
    chart = spec(charts.magnitude_heatmap(layer_rows()))
    assert chart["resolve"] == {"scale": {"color": "independent"}}
    titles = [g["title"]["text"] for g in chart["vconcat"]]
    assert titles[0].startswith("mean |d|") and titles[1].startswith("mean |b|")
    assert [g["encoding"]["color"]["field"] for g in chart["vconcat"]] == ["d_mean_abs", "b_mean_abs"]


def test_the_loss_chart_has_a_title_and_the_eval_curve_over_the_training_curve() -> None:
    history = [{"step": 2.0, "eval_loss": 0.6, "eval_accuracy": 0.7}, {"step": 4.0, "eval_loss": 0.5}, {"epoch": 1}]
    assert charts.eval_points(history) == [[2.0, 0.6], [4.0, 0.5]]
    chart = spec(charts.loss_curves({"a/b:1": [[1, 0.9], [2, 0.7], [4, 0.4]]},
                                    {"a/b:1": charts.eval_points(history)}))
    assert chart["title"]["text"] == "Training and eval loss" and "eval set" in chart["title"]["subtitle"]
    assert chart["title"]["subtitleFontSize"] == charts.SUBTITLE_PX == 12  # not Vega's 10 px (session 11's walk)
    # a lone eval point is a dot large enough to see, kept off the plot's edge (session 12's walk)
    assert chart["layer"][1]["mark"]["size"] == charts.DOT_SIZE > 40
    assert chart["layer"][0]["encoding"]["x"]["scale"]["padding"] == charts.EDGE_PX > 0
    assert chart["layer"][0]["encoding"]["y"]["scale"]["zero"] is False  # losses 0.60-0.70 filled a sixth of it
    data = next(iter(chart["datasets"].values()))
    assert sorted({r["curve"] for r in data}) == ["eval", "training"]
    assert chart["layer"][0]["encoding"]["strokeDash"]["field"] == "curve"
    alone = spec(charts.loss_curves({"a/b:1": [[1, 0.9]]}))
    assert alone["title"]["text"] == "Training loss" and "no evaluation" in alone["title"]["subtitle"]
    # a training loss logged once is a dot: a line through one point drew nothing (a dashboard walk, session 48)
    assert alone["layer"][1]["transform"] == [{"filter": "datum.dot"}]
    assert [(r["curve"], r["dot"]) for r in next(iter(alone["datasets"].values()))] == [("training", True)]
    assert {r["curve"]: r["dot"] for r in data} == {"training": False, "eval": True}  # longer curves: lines
    assert charts.loss_curves({"a/b:1": []}, {}) is None


def test_the_loss_plot_keeps_its_height_and_its_legend_shows_each_curve_as_a_line() -> None:
    """Issue 20, walk 2: Streamlit's default autosize ("fit") squeezed title, axes and two legends into 280 px,
    leaving the curves 85 px (55 with four versions), and the dash legend merged with the eval dots drew no line."""
    refs = [f"bulk/adapter-{i:02}:1" for i in range(4)]
    chart = spec(charts.loss_curves({ref: [[1, 0.9], [2, 0.5]] for ref in refs},
                                    {ref: [[1, 0.7], [2, 0.6]] for ref in refs}))
    assert chart["height"] == charts.PLOT_PX >= 280  # the plot area: title, axes and legends come on top
    assert chart["autosize"] == {"type": "fit-x", "contains": "padding"}  # only the width fits the page
    lines, dots = chart["layer"]
    dash = lines["encoding"]["strokeDash"]
    assert dash["scale"] == {"domain": ["training", "eval"], "range": [[1, 0], [6, 3]]}
    assert dash["legend"]["symbolType"] == "stroke" and dash["legend"]["symbolSize"] >= 400  # a whole 6-3 dash
    assert "strokeDash" not in dots.get("encoding", {})  # the dots stay out of the line legend


def test_versions_evaluated_once_get_dots_and_no_dashed_line_in_the_legend() -> None:
    """Session 12's walk: one evaluation per run drew a dot and no line, while the legend and the subtitle promised
    a dashed eval line."""
    once = spec(charts.loss_curves({"a/b:1": [[1, 0.9], [2, 0.5]]}, {"a/b:1": [[2, 0.6]]}))
    lines, dots = once["layer"]
    assert lines["encoding"]["strokeDash"]["scale"]["domain"] == ["training"]
    assert {"filter": {"field": "curve", "oneOf": ["training"]}} in lines["transform"]
    assert dots["mark"]["type"] == "point"  # the evaluation is still drawn
    assert "dots: loss on the held-out eval set" in once["title"]["subtitle"]
    assert "dashed" not in once["title"]["subtitle"]
    # one version evaluated twice is enough for the dashed line and its legend sample
    mixed = spec(charts.loss_curves({"a/b:1": [[1, 0.9]], "a/c:1": [[1, 0.8]]},
                                    {"a/b:1": [[1, 0.7]], "a/c:1": [[1, 0.7], [2, 0.6]]}))
    assert mixed["layer"][0]["encoding"]["strokeDash"]["scale"]["domain"] == ["training", "eval"]
    assert "dashed with dots" in mixed["title"]["subtitle"]


def test_each_eval_metric_besides_the_loss_is_a_chart_of_its_own() -> None:
    """A walk (session 40): the Metrics tab plotted the loss only, while every evaluation also records the task's
    metric (accuracy, perplexity): MLflow draws any metric logged by step. A chart each, a colour per version, the
    metric's name on the axis and in the title; the loss, flags, text and non-finite values are not charted."""
    histories = {"a/b:1": [{"step": 2.0, "eval_loss": 0.6, "eval_accuracy": 0.7},
                           {"step": 4.0, "eval_loss": 0.5, "eval_accuracy": 0.8, "eval_perplexity": float("nan")}],
                 "a/c:1": [{"step": 3, "eval_accuracy": 0.75, "eval_flag": True, "eval_task": "sst2"}, "junk"],
                 "a/d:1": []}
    assert charts.eval_metrics(list(histories.values())) == ["accuracy"]
    assert charts.eval_points(histories["a/b:1"], "accuracy") == [[2.0, 0.7], [4.0, 0.8]]
    [chart] = map(spec, charts.metric_curves(histories))
    assert chart["title"]["text"] == "Eval accuracy" and "held-out eval set" in chart["title"]["subtitle"]
    line, dots = chart["layer"]
    assert line["mark"]["type"] == "line" and dots["mark"]["type"] == "point"
    assert line["encoding"]["y"]["field"] == "accuracy" and line["encoding"]["y"]["scale"]["zero"] is False
    assert line["encoding"]["x"]["axis"]["format"] == "d"  # the loss chart's step axis
    assert line["encoding"]["color"]["scale"]["domain"] == ["a/b:1", "a/c:1"]  # a version without one: not there
    data = next(iter(chart["datasets"].values()))
    assert [(r["version"], r["step"], r["accuracy"]) for r in data] == [
        ("a/b:1", 2.0, 0.7), ("a/b:1", 4.0, 0.8), ("a/c:1", 3.0, 0.75)]
    perplexity = [{"step": s, "eval_loss": 2.0, "eval_perplexity": 7.4 - s} for s in (1, 2)]
    assert [spec(c)["title"]["text"] for c in charts.metric_curves({"lm:1": perplexity})] == ["Eval perplexity"]
    assert charts.metric_curves({"a/b:1": [{"step": 1, "eval_loss": 0.3}]}) == []  # only the loss: no chart
    many = [{"step": 1, **{f"eval_m{i}": 0.5 for i in range(10)}}]
    assert len(charts.metric_curves({"x:1": many})) == charts.MAX_METRIC_CHARTS


def test_a_metric_chart_spans_the_loss_charts_steps_and_marks_the_published_step() -> None:
    """A walk in a browser (session 42): one evaluation at step 20 drew a lone tick '20' mid-plot under a loss
    chart of steps 1-20, its axis read 0.627907; and the line ended at a lower accuracy than the published weights
    had (the best evaluation's), unmarked. The metric chart takes the loss chart's steps, its axis four significant
    digits, and both draw a dotted rule at each version's kept step."""
    train = {"a/b:1": [[1, 0.9], [10, 0.6], [20, 0.5]]}
    evals = {"a/b:1": [[20, 0.55]]}
    assert charts.step_span(train, evals) == (1, 20) and charts.step_span({}, {"x": []}) is None
    metrics = {"a/b:1": {"kept": {"step": 10, "by": "eval_accuracy"}}, "a/c:1": {"kept": "?"}, "a/d:1": {}}
    kept = charts.kept_steps(metrics)
    assert kept == {"a/b:1": 10.0}
    history = {"a/b:1": [{"step": 10, "eval_accuracy": 0.64}, {"step": 20, "eval_accuracy": 0.627907}]}
    [chart] = map(spec, charts.metric_curves(history, charts.step_span(train, evals), kept))
    line, _, rule = chart["layer"]
    assert line["encoding"]["x"]["scale"]["domainMin"] == 1 and line["encoding"]["x"]["scale"]["domainMax"] == 20
    assert line["encoding"]["y"]["axis"]["format"] == charts.METRIC_AXIS_FORMAT == ",.4~r"
    assert rule["mark"]["type"] == "rule" and rule["mark"]["strokeDash"] == charts.KEPT_DASH
    assert rule["encoding"]["color"]["scale"]["domain"] == ["a/b:1"]  # its version's colour
    assert charts.KEPT_NOTE in chart["title"]["subtitle"]
    loss = spec(charts.loss_curves(train, evals, kept))
    assert [layer["mark"]["type"] if isinstance(layer["mark"], str) else layer["mark"]["type"]
            for layer in loss["layer"]] == ["line", "point", "rule"]
    assert charts.KEPT_NOTE in loss["title"]["subtitle"]
    # both value axes take one width at least, so the plots and their step axes line up one above the other (the
    # accuracy chart's sat about 12 px right of the loss chart's: a dashboard walk, session 48)
    assert {layer["encoding"]["y"]["axis"]["minExtent"] for layer in (line, loss["layer"][0])} == {
        charts.VALUE_AXIS_PX}
    unevaluated = spec(charts.loss_curves(train, None, {"a/b:1": 20.0}))  # the last step's weights: said too
    assert unevaluated["title"]["subtitle"] == f"per optimizer step (no evaluation was recorded); {charts.KEPT_NOTE}"
    # without a kept step (a job still training, a version from before "kept"): no rule, no word of one
    # two versions kept at one step: each rule's dots fall in the other's gaps, so both colours show (one hid the
    # other: a walk in a browser, session 42)
    two = spec(charts.loss_curves({**train, "a/c:1": [[1, 0.8], [20, 0.4]]}, None, {"a/b:1": 10.0, "a/c:1": 10.0}))
    rules = [layer for layer in two["layer"] if layer["mark"]["type"] == "rule"]
    dash = [charts.DOT_PX, charts.DOT_PX + charts.GAP_PX]  # the other's dot, then a gap: still dotted
    assert [(r["mark"]["strokeDash"], r["mark"]["strokeDashOffset"]) for r in rules] == [
        (dash, 0), (dash, -charts.DOT_PX)]
    bare = spec(charts.metric_curves(history)[0])
    assert len(bare["layer"]) == 2 and charts.KEPT_NOTE not in bare["title"]["subtitle"]
    assert "domainMin" not in bare["layer"][0]["encoding"]["x"]["scale"]


def test_compared_versions_get_distinct_colours() -> None:
    refs = [f"alice/m{i}:1" for i in range(4)]
    chart = spec(charts.loss_curves({ref: [[1, 1.0], [2, 0.5]] for ref in refs}))
    scale = chart["layer"][0]["encoding"]["color"]["scale"]
    assert scale["domain"] == refs and len(set(scale["range"])) == 4
    assert scale["range"] == list(charts.PALETTE[:4])  # blue, orange, green, vermillion: not two blues, two reds


def test_the_cosine_view_is_a_labelled_grid_per_compared_version() -> None:
    refs = ["alice/first-adapter-with-a-long-name:1", "alice/b:2", "alice/c:3"]
    layers = [{"module": r["layer"], "cosine": [1.0, 0.9, None if "lm_head" in r["layer"] else 0.01]}
              for r in layer_rows(3)]
    chart = spec(charts.cosine_heatmap(layers, refs))
    titles = [g["title"]["text"] for g in chart["vconcat"]]
    assert titles == [f"{refs[1]}  vs  {refs[0]}", f"{refs[2]}  vs  {refs[0]}"]  # full names, as titles
    for grid in chart["vconcat"]:
        assert grid["encoding"]["color"]["scale"]["domain"] == [-1, 1]
        assert grid["encoding"]["x"]["axis"]["labelAngle"] == 0 and grid["encoding"]["y"]["axis"]["labelLimit"] == 0
    assert charts.cosine_heatmap([{"module": "x", "cosine": [1.0, None]}], refs[:2]) is None


def test_a_version_sharing_no_layer_with_the_first_leaves_the_others_their_grids() -> None:
    """Issue 20, walk 2: a version on another base model has no cosine in any layer; the others keep theirs."""
    refs = ["bulk/adapter-59:1", "bulk/adapter-58:1", "bulk/adapter-03:1", "alice/polarity:1"]
    layers = [{"module": r["layer"], "cosine": [1.0, 0.5, -0.2, None]} for r in layer_rows(2)]
    chart = spec(charts.cosine_heatmap(layers, refs))
    assert [g["title"]["text"] for g in chart["vconcat"]] == [f"{ref}  vs  {refs[0]}" for ref in refs[1:3]]
    assert charts.without_cosine(layers, len(refs)) == [3]
    assert charts.without_cosine([], 2) == [1]  # no shared layer at all: the one other version


def test_steps_are_whole_numbers_on_the_loss_chart() -> None:
    chart = spec(charts.loss_curves({"a/b:1": [[1, 0.9], [2, 0.5], [3, 0.4]]}))
    for layer in chart["layer"]:
        axis = (layer.get("encoding") or chart["encoding"])["x"]["axis"]
        assert axis["tickMinStep"] == 1 and axis["format"] == "d"  # ticks 1, 2, 3: never 1.5 or 2.5
    # a team lead's walk: 300 steps drew an axis from -20 (zero, then the padded domain made nice): the axis spans
    # the recorded steps, padded by a few px only
    scale = chart["layer"][0]["encoding"]["x"]["scale"]
    assert scale == {"padding": charts.EDGE_PX, "zero": False, "nice": False}


def test_a_version_without_a_curve_is_not_in_the_legend() -> None:
    chart = spec(charts.loss_curves({"a/b:1": [[1, 0.9], [2, 0.5]], "a/c:1": []}, {"a/c:1": []}))
    assert chart["layer"][0]["encoding"]["color"]["scale"]["domain"] == ["a/b:1"]  # no colour for a missing line

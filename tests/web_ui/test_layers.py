"""The Layers tab's words (web_ui/layers.py) and what analysis.saved_whole reads from a version's tensors: which
entry of target_modules adapted each layer, a layer outside the blocks matched by its name's end said so, and the
modules saved whole kept apart from the VeRA layers (a newcomer's walk read the demo's bert.pooler.dense, which
``dense`` adapts, as a head listed among them). The tab itself, against a real registry: tests/web_ui/test_pages.py."""

from __future__ import annotations

import numpy as np
import pytest

from web_ui import analysis, layers

DEMO = ["dense", "query", "value"]  # vera_core.recipes.DEMO_TARGETS, sorted as VeraConfig keeps them


@pytest.mark.parametrize(("path", "targets", "target"), [
    ("bert.encoder.layer.0.attention.self.query", DEMO, "query"),
    ("bert.pooler.dense", DEMO, "dense"),
    ("bert.pooler.dense", ["query", "value"], "—"),
    ("model.layers.0.q_proj", r".*\.q_proj", r"regex .*\.q_proj"),
    ("model.layers.0.q_proj", None, "(the model's defaults)"),
], ids=["suffix", "outside-the-blocks", "none", "regex", "defaults"])
def test_the_entry_of_target_modules_that_adapted_a_layer(path: str, targets: list[str] | str | None,
                                                          target: str) -> None:
    assert layers.matched_by(path, targets) == target


def test_a_layer_outside_the_blocks_is_said_to_be_matched_by_its_end() -> None:
    rows = [{"layer": "bert.encoder.layer.0.attention.self.query"}, {"layer": "bert.pooler.dense"}]
    said = layers.outside_blocks(rows, DEMO)
    assert said is not None and said.startswith("Adapted outside the blocks (other in the grids): "
                                                "`bert.pooler.dense` (by `dense`). A name in target_modules adapts")
    assert layers.outside_blocks(rows[:1], DEMO) is None  # all in the blocks: nothing to say
    assert layers.outside_blocks([{"layer": "pooler"}], ["pooler"]) is None  # named whole: nothing to explain
    assert layers.outside_blocks(rows, r".*\.dense") is None  # a regex names whole paths


def test_the_modules_saved_whole_are_apart_from_the_vera_layers() -> None:
    zeros = np.zeros
    found = {"base_model.model.bert.pooler.dense.vera_lambda_b": zeros(4),
             "base_model.model.bert.pooler.dense.vera_lambda_d": zeros(2),
             "base_model.model.classifier.weight": zeros((2, 4)), "base_model.model.classifier.bias": zeros(2),
             "base_model.model.classifier.modules_to_save.default.weight": zeros((2, 4)),  # the same head's copy
             "base_model.vera_A": zeros((2, 4)), "base_model.vera_B": zeros((4, 2))}
    assert analysis.saved_whole(found) == [{"module": "classifier", "parameters": 10}]
    assert [row["layer"] for row in analysis.layer_magnitudes(found)] == ["bert.pooler.dense"]

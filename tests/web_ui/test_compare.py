"""Compare (web_ui/compare.py) through AppTest against a real registry: versions on two base models side by side
(three tiny-Llama adapters and a tiny-RoBERTa one), and references typed beyond the four it takes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from registry.client import RegistryClient
from tests.conftest import TINY_MODELS
from tests.registry.adapters import make_adapter
from tests.registry.servers import registry_in_thread
from tests.web_ui.test_pages import page, texts
from web_ui import compare

LLAMAS = ["bulk/adapter-59:1", "bulk/adapter-58:1", "bulk/adapter-03:1"]
OTHER = "alice/polarity:1"  # on another base model: no layer in common with the Llama ones
TYPO = "bulk/typo:1"  # LLAMAS[1]'s adapter published on a misspelt base model: its layers have the Llama's shapes
#: What the first two were trained with (the third records nothing, as a version published before parameters)
PARAMS = {LLAMAS[0]: {"lr": "0.01", "epochs": "3"}, LLAMAS[1]: {"lr": "0.02", "epochs": "3"}}


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("compare")
    with registry_in_thread(f"sqlite:///{root / 'r.db'}", root / "blobs") as url, RegistryClient(url) as client:
        for seed, ref in enumerate(LLAMAS):
            make_adapter(root / str(seed), seed=seed)
            client.publish(root / str(seed), ref.removesuffix(":1"), base_model="tiny-llama",
                           params=PARAMS.get(ref, {}))
        client.publish(make_adapter(root / "roberta", seed=9, tiny=TINY_MODELS[0]), OTHER.removesuffix(":1"),
                       base_model="tiny-roberta")
        client.publish(root / "1", TYPO.removesuffix(":1"), base_model="tiny-lama")  # a new base: the same shapes
        yield {"url": url, "token": ""}


def grid_titles(at: AppTest) -> list[str]:
    """The titles of the cosine view's grids (one per version compared with the first), as the browser gets them."""
    specs = [json.loads(chart.proto.spec) for chart in at.get("vega_lite_chart")]
    return [grid["title"]["text"] for s in specs for grid in s.get("vconcat", [])]


def test_a_version_on_another_base_model_leaves_the_others_their_cosine_grids(registry: dict[str, Any]) -> None:
    """Issue 20, walk 2: one version sharing no layer with the first emptied the whole view ("No adapted layer is
    shared by these versions"); now the others keep their grids and that version is named with both base models."""
    at = page("compare", registry, query={"refs": ",".join([*LLAMAS, OTHER])})
    assert not at.exception
    assert grid_titles(at) == [f"{ref}  vs  {LLAMAS[0]}" for ref in LLAMAS[1:]]
    shown = texts(at)
    assert "No adapted layer is shared" not in shown
    assert (f"No cosine grid for {OTHER}: on another base model (tiny-roberta; {LLAMAS[0]} is on tiny-llama), so "
            f"it adapts no layer in common with {LLAMAS[0]}.") in shown
    assert "choose a version on tiny-roberta under Against" in shown
    assert f"All share {LLAMAS[0]}'s projection" in shown  # said of the three with a grid


def test_a_version_on_another_base_model_of_the_same_shapes_gets_its_grid_and_its_base_said(
        registry: dict[str, Any]) -> None:
    """A newcomer's walk (session 51): a version published on a misspelt base model (a new one, of the same layer
    shapes) was drawn with cosines of 1.000 under "All share ...'s projection", its base model said nowhere but the
    table."""
    at = page("compare", registry, query={"refs": f"{LLAMAS[0]},{TYPO}"})
    assert not at.exception and grid_titles(at) == [f"{TYPO}  vs  {LLAMAS[0]}"]
    assert (f"{TYPO} (tiny-lama) is on another base model than {LLAMAS[0]} (tiny-llama): the same layer shapes, so "
            "the deltas compare, but learned on different base models.") in texts(at)
    same = page("compare", registry, query={"refs": f"{LLAMAS[0]},{LLAMAS[1]}"})
    assert "on another base model" not in texts(same)


def test_first_on_another_base_model_than_all_the_others_names_each(registry: dict[str, Any]) -> None:
    at = page("compare", registry, query={"refs": f"{OTHER},{LLAMAS[0]},{LLAMAS[1]}"})
    assert not at.exception and grid_titles(at) == []
    shown = texts(at)
    # said once for both (session 11's walk: the phrase was repeated per version)
    assert (f"No cosine grid for {LLAMAS[0]} and {LLAMAS[1]}: on another base model (tiny-llama; {OTHER} is on "
            f"tiny-roberta), so they adapt no layer in common with {OTHER}.") in shown
    assert shown.count("on another base model") == 1
    assert "Compare them by the metrics above; choose a version on tiny-llama under Against" in shown
    assert "cos(ΔW of each version" not in shown
    # the base model whole where the table has room (session 12's walk: 'tiny-robe…')
    assert list(at.dataframe[0].value["base model"]) == ["tiny-roberta", "tiny-llama", "tiny-llama"]


def test_references_typed_beyond_four_are_named_as_not_added(registry: dict[str, Any]) -> None:
    """Issue 20, walk 2: typed references beyond the fourth were dropped without a word."""
    at = page("compare", registry, query={"refs": ",".join(LLAMAS)})
    at.text_input(key="compare_typed").set_value(f"{OTHER}, alice/polarity@latest, {LLAMAS[0]}").run()
    assert at.multiselect[0].value == [*LLAMAS, OTHER]  # one had room; the one already chosen is not news
    assert [w.value for w in at.warning] == [
        f"Not added: alice/polarity@latest: Compare takes at most {compare.MOST} versions and 4 are chosen; "
        "remove one above (its ×) to add another."]
    at.multiselect[0].set_value(LLAMAS).run()
    assert not at.warning  # said once, for the references just typed
    # a misspelt reference took a place of the four, and a malformed one was refused as one too many (a walk in a
    # browser, session 40): each is named with why, and neither is chosen
    at.text_input(key="compare_typed").set_value("bogus/x:1, not a ref").run()
    assert at.multiselect[0].value == LLAMAS
    assert [w.value for w in at.warning] == [
        "Not added: not a ref: not a reference (owner/name:N, owner/name@alias or owner/name); bogus/x:1: no such "
        "version (or none you may read)."]


def test_the_parameters_that_differ_are_shown_side_by_side(registry: dict[str, Any]) -> None:
    """MLflow's run comparison: the parameters whose values differ, a column per version ('-' where one lacks it),
    the shared ones counted, and a version that recorded none named."""
    at = page("compare", registry, query={"refs": ",".join(LLAMAS)})
    assert not at.exception
    [frame] = [f.value for f in at.dataframe if "parameter" in f.value.columns]
    assert frame.to_dict("records") == [{"parameter": "lr", LLAMAS[0]: "0.01", LLAMAS[1]: "0.02", LLAMAS[2]: None}]
    shown = texts(at)
    assert "The 1 parameter whose values differ; the 1 that all share are left out. — where a version does not " \
        "record the parameter." in shown
    assert f"{LLAMAS[2]} recorded no training parameters" in shown
    same = page("compare", registry, query={"refs": f"{LLAMAS[0]},{OTHER}"})
    assert not any("parameter" in f.value.columns for f in same.dataframe)
    assert f"{OTHER} recorded no training parameters" in texts(same)


def test_the_cosine_grids_compare_with_the_version_chosen_against(registry: dict[str, Any]) -> None:
    """A walk's finding (session 40): with three or four versions, the grids compared each with the first chosen
    only. The Against box (three or more) chooses the version the others are compared with; two need none."""
    at = page("compare", registry, query={"refs": ",".join(LLAMAS)})
    [box] = [b for b in at.selectbox if b.label == "Against"]
    assert box.options == LLAMAS and box.value == LLAMAS[0]
    box.set_value(LLAMAS[2]).run()
    assert not at.exception
    assert grid_titles(at) == [f"{ref}  vs  {LLAMAS[2]}" for ref in LLAMAS[:2]]
    assert at.query_params["against"] == LLAMAS[2]  # in the link, which opens the same comparison
    linked = page("compare", registry, query={"refs": ",".join(LLAMAS), "against": LLAMAS[1]})
    assert grid_titles(linked) == [f"{ref}  vs  {LLAMAS[1]}" for ref in (LLAMAS[0], LLAMAS[2])]
    stale = page("compare", registry, query={"refs": ",".join(LLAMAS), "against": "nobody/else:1"})
    assert grid_titles(stale) == [f"{ref}  vs  {LLAMAS[0]}" for ref in LLAMAS[1:]]  # not one of them: the first
    two = page("compare", registry, query={"refs": ",".join(LLAMAS[:2])})
    assert not [b for b in two.selectbox if b.label == "Against"]
    assert grid_titles(two) == [f"{LLAMAS[1]}  vs  {LLAMAS[0]}"]

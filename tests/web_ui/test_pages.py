"""Each dashboard page through streamlit.testing.v1.AppTest against a real registry server (tokens required)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import streamlit as st
from streamlit import dataframe_util
from streamlit.testing.v1 import AppTest

from registry.client import RegistryClient
from registry.domain.errors import InvalidInput
from registry.domain.training_spec import training_spec
from registry.store.database import Database
from tests.registry.adapters import make_adapter
from tests.registry.hub_standin import running_hub
from tests.registry.servers import client_calls, free_port, issued_tokens, registry_in_thread, running_vera
from vera_core.config import PEFT_GENERATOR
from web_ui import browse, formats, session, tables, train

CURVE = [[1, 0.7], [2, 0.6], [3, 0.45]]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("ui")
    url = f"sqlite:///{root / 'r.db'}"
    with running_hub() as hub, registry_in_thread(url, root / "blobs", VERA_REQUIRE_TOKENS="true",
                                                  VERA_HUB_ENDPOINT=hub.url) as base:
        hub.tokens["hf_ui"] = "alice"
        [token] = issued_tokens(url, ("alice", ["read", "publish"]))
        with RegistryClient(base, token) as client:
            for i, r in enumerate((8, 4, 8)):
                head = {"modules_to_save": ["lm_head"]} if i == 0 else {}  # trainable: d, b and a head
                client.publish(make_adapter(root / f"a{i}", seed=i, r=r, **head), f"alice/model{i}",
                               base_model="tiny-llama",
                               metrics={"test": {"accuracy": 0.8 + i / 100}, "final_eval": {"loss": 0.5 - i / 10},
                                        "train_loss": [[s, loss + i / 10] for s, loss in CURVE]},
                               tags=["demo"] if i else [])
            client.set_alias("alice/model0:1", "prod")
        yield {"url": base, "token": token, "hub": hub, "db": url, "blobs": root / "blobs"}


def page(name: str, registry: dict[str, Any], query: dict[str, str] | None = None, **state: Any) -> AppTest:
    """Run one page's function as the dashboard does (guarded), with the session's connection set and the URL's
    query parameters ``query``."""
    at = AppTest.from_string(f"from web_ui import session, {name}\nsession.guarded({name}.page)()\n",
                             default_timeout=60)
    at.session_state["registry_url"] = registry["url"]
    at.session_state["token"] = registry["token"]
    at.query_params.update(query or {})
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()


def shown(element: Any) -> pd.DataFrame:
    """What the browser draws in a table's cells where the dashboard sets it (its display values); empty when the
    table has none (each cell then shows its value)."""
    styler = element.proto.arrow_data.styler
    return dataframe_util.convert_arrow_bytes_to_pandas_df(styler.display_values) if styler.display_values \
        else pd.DataFrame()


def texts(at: AppTest) -> str:
    return " ".join(str(e.value) for kind in ("markdown", "caption", "title", "subheader", "info", "error",
                                              "warning", "success") for e in getattr(at, kind))


def filter_form(at: AppTest) -> AppTest:
    """Open Browse's Filter and sort popover: its form is built only while it is open."""
    at.session_state[browse.FILTERS] = True
    return at.run()


def field(at: AppTest, label: str) -> Any:
    """The filter form's text box or select box labelled ``label``."""
    return next(w for w in [*at.text_input, *at.selectbox] if w.label == label)


def apply(at: AppTest) -> AppTest:
    next(b for b in at.button if b.label == "Apply").click()
    return at.run()


def test_browse_lists_filters_and_sorts_through_the_registry(registry: dict[str, Any]) -> None:
    at = page("browse", registry)
    assert not at.exception
    frame = at.dataframe[0].value
    assert list(frame["version"]) == [f"adapter?ref=alice/model{i}:1" for i in (2, 1, 0)]  # names link to the page
    assert "3 versions match" in texts(at)
    assert list(frame["accuracy"]) == pytest.approx([0.82, 0.81, 0.8])
    # a version's one tag is shown whole, not as '+1' (as long as the tag: session 23's walk)
    assert list(frame["labels"]) == ["@latest, demo", "@latest, demo", "@prod, @latest"]
    field(filter_form(at), "Rank").set_value("4")
    apply(at)
    assert list(at.dataframe[0].value["version"]) == ["adapter?ref=alice/model1:1"]
    assert field(filter_form(at), "Rank").value == "4"  # opened again, the form shows what is applied
    field(at, "Rank").set_value("")
    field(at, "Sort").set_value("trainable_parameters")
    apply(at)
    assert list(at.dataframe[0].value["version"])[0] == "adapter?ref=alice/model1:1"  # r=4: fewest parameters


def test_browse_with_no_match_says_so_without_rows_to_click(registry: dict[str, Any]) -> None:
    """Filters that match nothing: "0 versions match (owner nobody)." and why, not "showing 0-0. Click a name to
    open it, tick rows..." over a table that is not there (session 23's walk)."""
    at = page("browse", registry)
    field(filter_form(at), "Owner").set_value("nobody")
    apply(at)
    assert not at.exception and not at.dataframe
    assert [c.value for c in at.caption][0] == "0 versions match (owner nobody)."
    assert [i.value for i in at.info] == ["No adapter matches these filters."]
    field(filter_form(at), "Owner").set_value("")
    field(at, "Sort by metric").set_value("test.acc")  # misspelt: no version has it
    apply(at)
    assert [i.value for i in at.info] == [
        "No version has a metric named `test.acc`. Metrics the newest versions record: `final_eval.loss`, "
        "`test.accuracy`. A metric is named by its path in a version's metrics (`test.accuracy`, `final_eval.loss`): "
        "the Adapter page's Metrics tab shows a version's."]


def test_browse_caption_says_what_the_closed_form_applies(registry: dict[str, Any]) -> None:
    """The filter form waits closed in a popover, so the caption names what it narrows and sorts by; a rank or
    seed that is not a whole number is named, on the page, and ignored."""
    at = page("browse", registry)
    assert "3 versions match;" in texts(at)  # the defaults: nothing to name
    filter_form(at)
    field(at, "Owner").set_value("alice")
    field(at, "Rank").set_value("8")
    field(at, "Sort").set_value("trainable_parameters")
    apply(at)
    assert "2 versions match (owner alice, rank 8; fewest trainable parameters first)" in texts(at)
    assert not at.text_input  # closed after Apply: the form is not built
    field(filter_form(at), "Rank").set_value("eight")
    apply(at)
    assert [w.value for w in at.warning] == ["Rank 'eight' is not a whole number; it is ignored."]
    assert "3 versions match (owner alice; fewest trainable parameters first)" in texts(at)


def test_browse_builds_its_form_and_reads_base_models_only_when_opened(registry: dict[str, Any],
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A first visit draws the table alone: no form widgets and no base-model request until the popover opens."""
    bases = counted(monkeypatch, "base_models")
    at = page("browse", registry)
    assert not at.exception and "3 versions match" in texts(at)
    assert not at.text_input and not at.selectbox and bases == []
    filter_form(at)
    assert field(at, "Base model").options == ["any", "tiny-llama"] and len(bases) == 1


def test_browse_pages_through_thousands_with_a_cursor(registry: dict[str, Any]) -> None:
    at = page("browse", registry)
    field(filter_form(at), "Rows per page").set_value(25)
    apply(at)
    # 3 rows: one page, so no pair of disabled Previous / Next buttons (session 12's walk)
    assert not [b for b in at.button if b.label in ("Previous page", "Next page")]


def tab(at: AppTest, label: str) -> AppTest:
    """Open the Adapter page's tab ``label`` (only the open tab is built)."""
    at.session_state["adapter_tab"] = label
    return at.run()


def table_heights(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The heights the dashboard's tables are given, in the order they are drawn, filled as pages run (the height
    st.dataframe is given is not in what AppTest keeps of the element: it is read at the call)."""
    heights: list[object] = []
    real = tables.st.dataframe

    def spy(*args: Any, **kwargs: Any) -> Any:
        heights.append(kwargs.get("height"))
        return real(*args, **kwargs)

    monkeypatch.setattr(tables.st, "dataframe", spy)
    return heights


def test_the_layers_table_is_shown_whole(registry: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """It scrolled at about ten rows inside the page (two blocks of seven layers here), as Browse's did (its test)."""
    heights = table_heights(monkeypatch)
    at = page("adapter", registry, adapter_ref="alice/model0@prod", adapter_tab="Layers")
    assert not at.exception and len(at.dataframe[0].value) == 14 and heights[0] == tables.whole_height(14)


def test_adapter_page_shows_config_metrics_layers_and_verifies(registry: dict[str, Any]) -> None:
    at = page("adapter", registry, adapter_ref="alice/model0@prod")
    assert not at.exception
    assert at.subheader[0].value == "alice/model0:1"
    assert {m.label: m.value for m in at.metric}["Rank"] == "8"
    assert "Published directly" in texts(tab(at, "Lineage"))
    assert "Never pushed to or pulled from the HuggingFace Hub" in texts(tab(at, "Hub"))
    table = next(d for d in tab(at, "Layers").dataframe if "mean |d|" in d.value.columns)
    layers = table.value
    assert list(layers.columns) == ["block", "module", "target", "mean |d|", "mean |b|", "‖d‖", "‖b‖"]
    assert list(layers["target"]) == [module.rpartition(".")[2] for module in layers["module"]]  # q_proj: q_proj
    # the head trained in full is apart from the VeRA layers, with what it holds (a newcomer's walk)
    whole = next(d.value for d in tab(at, "Layers").dataframe if list(d.value.columns) == ["module", "parameters"])
    assert list(whole["module"]) == ["lm_head"] and "lm_head" not in list(layers["module"])
    assert "**Saved whole (modules_to_save)**" in texts(at)
    assert list(layers["block"]) == ["0"] * 7 + ["1"] * 7 and (layers["mean |d|"] > 0).all()  # model order
    assert list(layers["module"])[:7] == list(layers["module"])[7:]  # each block's modules, in one order
    drawn = shown(table)  # four significant digits, the values themselves kept for sorting
    assert list(drawn["mean |d|"]) == [formats.number(float(v)) for v in layers["mean |d|"]]
    assert layers.dtypes["mean |d|"].kind == "f"
    assert [m.help for m in at.metric if m.label == "Base model"] == ["`tiny-llama`"]  # whole, where it is cut
    shown_text = texts(tab(at, "Metrics"))
    headings = [m.value for m in tab(at, "Metrics").markdown if m.value.startswith("**") and m.value.endswith("**")]
    assert headings == ["**Metrics**", "**Trained with**", "**Storage**"], headings  # each part named
    assert "**Projection A and B**: regenerated from the seed (0 bytes stored)" in shown_text  # as a checklist
    assert "**Task head**:" in shown_text  # model0 trains lm_head too
    metrics = next(d.value for d in at.dataframe if list(d.value.columns) == ["metric", "value"])
    assert dict(zip(metrics["metric"], metrics["value"], strict=True)) == {"test.accuracy": "0.8000",
                                                                           "final_eval.loss": "0.5000"}
    next(b for b in tab(at, "Verify").button if b.label == "Verify now").click()
    at.run()
    assert any("alice/model0:1: passed" in s.value for s in at.success)
    report = texts(at)  # a checklist, not the report's JSON
    assert ":green[:material/check_circle:] **Projection regenerated from the seed**: fingerprint " in report
    assert "**Vectors blob re-hashed**: SHA-256 " in report and "**Layer shapes match the base model**" in report
    assert not at.json


def test_adapter_page_shows_evaluations_recorded_after_publish_and_who_recorded_them(
        registry: dict[str, Any]) -> None:
    with RegistryClient(registry["url"], registry["token"]) as client:
        client.record_evaluation("alice/model2:1", "hellaswag", {"acc": 0.41, "acc_norm": 0.5},
                                 details={"harness": "lm-evaluation-harness"})
    at = tab(page("adapter", registry, query={"ref": "alice/model2:1"}), "Metrics")
    assert not at.exception
    metrics = next(d.value for d in at.dataframe if list(d.value.columns) == ["metric", "value"])
    assert dict(zip(metrics["metric"], metrics["value"], strict=True)) == {
        "test.accuracy": "0.8200", "final_eval.loss": "0.3000", "hellaswag.acc": "0.4100",
        "hellaswag.acc_norm": "0.5000"}
    caption = " ".join(c.value for c in at.caption)
    assert "Recorded after publish: **hellaswag** by alice on " in caption and "(lm-evaluation-harness)" in caption
    plain = tab(page("adapter", registry, query={"ref": "alice/model1:1"}), "Metrics")
    assert "Recorded after publish" not in " ".join(c.value for c in plain.caption)


def test_the_versions_table_shades_the_version_shown(registry: dict[str, Any], tmp_path: Path) -> None:
    """Among an adapter's versions, the row of the one the page shows is shaded and named below the table (it was
    one row among the others: a dashboard walk, session 48)."""
    with RegistryClient(registry["url"], registry["token"]) as client:
        for seed in (1, 2, 3):
            client.publish(make_adapter(tmp_path / f"s{seed}", seed=seed), "alice/shaded", base_model="tiny-llama")
        try:
            at = page("adapter", registry, query={"ref": "alice/shaded:2"})
        finally:  # the module's other tests count and compare the newest versions
            client.delete_adapter("alice/shaded")
    versions = next(d for d in at.dataframe if "published by" in d.value.columns)
    assert list(versions.value["version"]) == [f"adapter?ref=alice/shaded:{n}" for n in (3, 2, 1)]  # newest first
    styles = versions.proto.arrow_data.styler.styles  # the Styler's CSS: "#T_id_row1_col0, ... { background... }"
    assert set(re.findall(r"_row(\d+)_col\d+", styles)) == {"1"} and tables.MARKED_ROW.split(": ")[1] in styles
    assert "The shaded row is alice/shaded:2, the version this page shows." in [c.value for c in at.caption]


def test_adapter_page_builds_only_the_open_tab(registry: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """A first visit draws the header and the first tab: no chart, graph, download button or form of the others,
    and no download of the tensors (the Metrics and Layers tabs' summary) until one of those tabs is opened."""
    downloads = counted(monkeypatch, "download")
    at = page("adapter", registry, query={"ref": "alice/model0:1"})
    assert not at.exception and at.tabs[0].label == "Versions and config"
    assert "**Base model and projection**" in texts(at)
    versions = next(d for d in at.dataframe if "published by" in d.value.columns)
    created = json.loads(versions.proto.columns)["created"]["type_config"]
    assert (created["format"], created["timezone"]) == ("YYYY-MM-DD HH:mm [UTC]", "UTC")  # readable, and zoned
    # each version's rank and numbers, as Browse has them
    assert list(versions.value.columns)[:5] == ["version", "aliases", "r", "accuracy", "eval loss"]
    assert versions.value[["r", "accuracy", "eval loss"]].iloc[-1].tolist() == [8, 0.8, 0.5]  # alice/model0:1
    assert not at.get("vega_lite_chart") and not at.get("graphviz_chart") and not at.get("download_button")
    assert not [b for b in at.button if b.label == "Verify now"] and downloads == []
    assert tab(at, "Layers").get("vega_lite_chart") and len(downloads) == 1


def test_adapter_page_shows_description_and_tags_and_no_card_when_there_is_none(registry: dict[str, Any]) -> None:
    tagged = page("adapter", registry, query={"ref": "alice/model1:1"})
    assert ":blue-badge[demo]" in texts(tagged)
    assert [t.label for t in tagged.tabs][:2] == ["Versions and config", "Lineage"]  # no card sent: no card tab
    untagged = page("adapter", registry, query={"ref": "alice/model0:1"})
    assert "No tags." in texts(untagged)


def test_adapter_page_keeps_every_typed_reference(registry: dict[str, Any]) -> None:
    """Issue 20: every second reference typed into the Version box was thrown away (the box snapped back)."""
    at = page("adapter", registry)
    for ref in ("alice/model0:1", "alice/model1:1", "alice/model2:1", "alice/model0@prod"):
        at.text_input(key="adapter_box").set_value(ref).run()
        assert at.text_input(key="adapter_box").value == ref
        assert at.subheader[0].value == ref.replace("@prod", ":1")
        assert at.query_params["ref"] == ref  # the page's URL names the version shown


def test_adapter_page_opens_the_version_in_the_url(registry: dict[str, Any]) -> None:
    at = page("adapter", registry, query={"ref": "alice/model1:1"}, adapter_ref="alice/model0:1")
    assert not at.exception and at.subheader[0].value == "alice/model1:1"  # the URL wins over the last one opened
    assert at.text_input(key="adapter_box").value == "alice/model1:1"
    at.text_input(key="adapter_box").set_value("alice/model2:1").run()
    assert at.query_params["ref"] == "alice/model2:1"
    remembered = page("adapter", registry, adapter_ref="alice/model0@prod")  # no ?ref=: the last opened, written back
    assert remembered.subheader[0].value == "alice/model0:1" and remembered.query_params["ref"] == "alice/model0@prod"


def test_adapter_header_shows_the_new_status_after_verify(registry: dict[str, Any]) -> None:
    at = page("adapter", registry, query={"ref": "alice/model1:1"}, adapter_tab="Verify")
    assert {m.label: m.value for m in at.metric}["Verification"] == "not yet"  # Browse's words
    next(b for b in at.button if b.label == "Verify now").click()
    at.run()
    assert any("alice/model1:1: passed" in s.value for s in at.success)
    assert {m.label: m.value for m in at.metric}["Verification"] == "✓ passed"


def test_adapter_header_says_which_parameters_it_counts(registry: dict[str, Any]) -> None:
    at = page("adapter", registry, query={"ref": "alice/model0:1"})
    with RegistryClient(registry["url"], registry["token"]) as client:
        info = client.get("alice/model0:1")
    shown = {m.label: m.value for m in at.metric}
    assert shown["Adapter parameters"] == f"{info.adapter_parameters:,}"  # what `vera ls` shows
    assert info.trainable_parameters > info.adapter_parameters  # lm_head is trained too
    assert f"{info.trainable_parameters:,} trainable with the task head" in texts(at)
    assert shown["Stored"].endswith(" KB") and shown["Stored"] != f"{info.stored_bytes} B"


def test_adapter_page_downloads_what_peft_loads_by_default(registry: dict[str, Any]) -> None:
    at = page("adapter", registry, adapter_ref="alice/model2:1", adapter_tab="Download")
    buttons = at.get("download_button")
    assert [b.label for b in buttons] == ["alice-model2-v1.zip (the folder)", "adapter_config.json",
                                          "adapter_model.safetensors", "README.md"]
    assert all(b.proto.deferred_file_id and not b.proto.url for b in buttons)  # built when clicked, not per render
    # the folder in one zip named after the version and form: every form's files had PEFT's names, so two
    # downloads collided (a dashboard walk, session 48); unzipped, PEFT's folder with the files the registry builds
    import io
    import zipfile

    from web_ui import adapter

    with RegistryClient(registry["url"], registry["token"]) as client:
        info = client.get("alice/model2:1")
        built = zipfile.ZipFile(io.BytesIO(adapter.built_folder(
            registry["url"], registry["token"], info.ref, ("adapter_config.json", "adapter_model.safetensors"),
            {"as_lora": True}, adapter.folder_name(info, {"as_lora": True}))))
        assert built.namelist() == ["alice-model2-v1-lora/adapter_config.json",
                                    "alice-model2-v1-lora/adapter_model.safetensors"]
        assert built.read("alice-model2-v1-lora/adapter_model.safetensors") == client.download(
            info.ref, "adapter_model.safetensors", as_lora=True)
    form = next(r for r in at.radio if r.label == "Form")
    assert form.value == "for PEFT (default)"
    # its default holds A and B already: no "with A and B" beside it (the same file twice: session 51's walk); a
    # version of PEFT's generator, whose default is seed-only, is offered it
    assert list(form.options) == ["for PEFT (default)", "seed-only (vera_core)", "equivalent LoRA (vLLM, LoRAX)"]
    with RegistryClient(registry["url"], registry["token"]) as client:
        peft_made = client.get("alice/model2:1").model_copy(update={"generator": PEFT_GENERATOR})
    assert adapter.download_forms(peft_made) == {
        "for PEFT (default)": {}, "with A and B": {"with_projection": True},
        "seed-only (vera_core)": {"seed_only": True}, "equivalent LoRA (vLLM, LoRAX)": {"as_lora": True}}
    assert any(c.value == "vera fetch alice/model2:1 --out model2" for c in at.code)
    loading = next(c.value for c in at.caption if c.value.startswith("Load it"))
    assert "onto `tiny-llama`" in loading and "It adapts `" in loading and "[" not in loading  # words, not JSON
    # its generator is not PEFT's: the default carries A and B, larger than what is stored (session 23's walk)
    with RegistryClient(registry["url"], registry["token"]) as client:
        stored = formats.size(client.get("alice/model2:1").stored_bytes)
    assert (f"Each file is built by the registry when its button is clicked; this form holds the projection A and "
            f"B, so it is larger than the {stored} stored.") in [c.value for c in at.caption]
    form.set_value("seed-only (vera_core)")
    at.run()
    assert not at.exception and any(c.value.endswith("--seed-only") for c in at.code)
    assert "Each file is built by the registry when its button is clicked." in [c.value for c in at.caption]
    # each form offers the loaders that load it (a LoRA export was offered vera_core.load_adapter: a walk, session 40)
    loaders = {}
    for choice in ("for PEFT (default)", "seed-only (vera_core)", "equivalent LoRA (vLLM, LoRAX)"):
        next(r for r in at.radio if r.label == "Form").set_value(choice).run()
        loaders[choice] = next(c.value for c in at.caption if c.value.startswith("Load it")).split(". It adapts")[0]
    assert loaders == {
        "for PEFT (default)": "Load it onto `tiny-llama`: `PeftModel.from_pretrained(base, folder)` or "
                              "`vera_core.load_adapter(base, folder)`",
        "seed-only (vera_core)": "Load it onto `tiny-llama`: `vera_core.load_adapter(base, folder)` (PEFT refuses a "
                                 "seed-only copy of this generator)",
        "equivalent LoRA (vLLM, LoRAX)": "Load it onto `tiny-llama`: `PeftModel.from_pretrained(base, folder)` (a "
                                         "LoRA), or serve it with vLLM's `--enable-lora`"}


def test_adapter_page_pushes_to_the_hub_and_shows_the_sync_state(registry: dict[str, Any]) -> None:
    at = page("adapter", registry, adapter_ref="alice/model1:1", adapter_tab="Hub")
    next(t for t in at.text_input if t.label == "Repo id").set_value("alice/model1-vera")
    next(t for t in at.text_input if t.label.startswith("Hub token (used once")).set_value("hf_ui")
    next(b for b in at.button if b.label == "Push").click()
    at.run()
    head = registry["hub"].head("alice/model1-vera")
    assert any(f"Pushed alice/model1-vera@{head[:12]}" in s.value for s in at.success), texts(at)
    syncs = next(d.value for d in at.dataframe if "direction" in d.value.columns)
    assert list(syncs["repo"]) == ["alice/model1-vera"] and list(syncs["commit"]) == [head[:12]]
    next(t for t in at.text_input if t.label == "Repo id").set_value("alice/model1-vera")
    next(t for t in at.text_input if t.label.startswith("Hub token (used once")).set_value("hf_wrong")
    next(b for b in at.button if b.label == "Push").click()
    at.run()
    assert not at.exception and "refused the token (401" in texts(at)


def test_compare_page_puts_versions_side_by_side(registry: dict[str, Any]) -> None:
    at = page("compare", registry, query={"refs": "alice/model0:1,alice/model2:1"})
    assert not at.exception
    frame = at.dataframe[0].value
    assert list(frame["version"]) == ["adapter?ref=alice/model0:1", "adapter?ref=alice/model2:1"]
    assert "cos(ΔW of each version" in texts(at)
    at.multiselect[0].set_value(["alice/model0:1"])
    at.run()
    assert "Choose two to four versions" in texts(at) and at.query_params["refs"] == "alice/model0:1"


def test_a_compare_link_naming_more_than_four_versions_shows_the_first_four(registry: dict[str, Any]) -> None:
    """An outsider's link with 5 references showed a traceback (more than the picker holds), and one with 1,500
    made the dashboard read 1,500 versions: the first four are taken, saying so."""
    many = ",".join(f"alice/model{i % 3}:1" if i < 3 else f"alice/none{i}:1" for i in range(1500))
    at = page("compare", registry, query={"refs": many})
    assert not at.exception
    assert "The address names 1500 versions; Compare shows 4 at most: the first 4." in texts(at)
    assert at.multiselect[0].value == ["alice/model0:1", "alice/model1:1", "alice/model2:1", "alice/none3:1"]


def test_a_registry_url_with_a_control_character_is_refused_before_any_request(registry: dict[str, Any]) -> None:
    at = page("browse", registry, registry_url="http://127.0.0.1:9/\x00x")
    assert not at.exception and "holds a space or a control character" in texts(at)


def test_compare_url_round_trip_and_typed_references_join_the_chosen(registry: dict[str, Any]) -> None:
    at = page("compare", registry)
    assert at.query_params["refs"] == "alice/model2:1,alice/model1:1"  # the newest two, written to the URL
    at.multiselect[0].set_value(["alice/model2:1", "alice/model0:1"]).run()
    at.multiselect[0].set_value(["alice/model0:1", "alice/model1:1"]).run()  # a second change is kept too
    assert list(at.dataframe[0].value["version"]) == ["adapter?ref=alice/model0:1", "adapter?ref=alice/model1:1"]
    assert at.query_params["refs"] == "alice/model0:1,alice/model1:1"
    at.text_input(key="compare_typed").set_value("alice/model0@prod, alice/model2").run()
    assert at.multiselect[0].value == ["alice/model0:1", "alice/model1:1", "alice/model0@prod", "alice/model2"]
    assert at.query_params["refs"] == "alice/model0:1,alice/model1:1,alice/model0@prod,alice/model2"
    assert at.text_input(key="compare_typed").value == ""
    # @prod is :1, already chosen: compared once, said (the page compared a version with itself: session 23's walk)
    assert list(at.dataframe[0].value["version"]) == [f"adapter?ref=alice/model{i}:1" for i in (0, 1, 2)]
    assert "alice/model0@prod is alice/model0:1, the version alice/model0:1 names too: it is compared once" in \
        texts(at)


def test_a_compared_reference_the_registry_refuses_is_said_and_the_others_compared(registry: dict[str, Any]) -> None:
    """One typo among the chosen references (an adapter not there, a version not there) is a warning naming it and
    the way on; the others are still compared (the whole page was replaced by its error: session 23's walk)."""
    at = page("compare", registry, query={"refs": "alice/model0:1,bob/x:1,alice/model1:9,alice/model1:1"})
    assert not at.exception
    assert list(at.dataframe[0].value["version"]) == ["adapter?ref=alice/model0:1", "adapter?ref=alice/model1:1"]
    warned = [w.value for w in at.warning]
    assert "bob/x:1: No adapter bob/x; Browse (Filter and sort, Owner: bob) lists that owner's adapters. Remove it " \
           "from the box above to compare the others." in warned, warned
    assert any(w.startswith("alice/model1:9: ") and "no version 9" in w for w in warned), warned
    alone = page("compare", registry, query={"refs": "alice/model0:1,bob/x:1"})
    assert not alone.exception and "Choose two to four different versions" in texts(alone)


def test_train_page_launches_a_job_and_follows_it(registry: dict[str, Any]) -> None:
    at = page("train", registry)
    assert not at.exception
    next(t for t in at.text_input if t.label == "Publish as").set_value("alice/from-ui")
    next(n for n in at.number_input if n.label == "Epochs").set_value(0.1)
    # a trial run: the first 48 training examples, the first 20 of eval and test; empty boxes say "all"
    trial = {n.label: n for n in at.number_input if n.label in train.OPTIONAL_NUMBERS}
    assert [(n.value, n.proto.placeholder) for n in trial.values()] == [
        (None, "all"), (None, "all"), (None, "by epochs"), (None, "each epoch"), (None, "never stop early"),
        (None, "10 steps")]
    trial["Train examples"].set_value(48)
    trial["Eval examples"].set_value(20)
    next(b for b in at.button if b.label == "Launch").click()
    at.run()
    assert any("Queued job" in s.value and "alice/from-ui" in s.value for s in at.success)
    shown = {m.label: m.value for m in at.metric}
    assert shown["Status"] == "queued" and shown["Step"] == "none yet"  # no worker here: no step count yet
    assert shown["Training loss"] == "—"  # named: a finished job's tile is its eval loss (session 23's walk)
    with RegistryClient(registry["url"], registry["token"]) as client:
        job = client.jobs()[0]
        assert at.query_params["job"] == str(job.id)  # the URL follows the job just queued
        assert job.target_name == "alice/from-ui" and job.spec["demo"] and job.spec["training"]["epochs"] == 0.1
        assert (job.spec["max_train_examples"], job.spec["max_eval_examples"]) == (48, 20)
        next(b for b in at.button if b.label == "Cancel job").click()
        at.run()
        assert client.job(job.id).status == "queued"  # asked first
        assert f"Cancel job {job.id} (alice/from-ui)?" in texts(at)
        next(b for b in at.button if b.label == "Keep it running").click()
        at.run()
        assert client.job(job.id).status == "queued" and not any(b.label.startswith("Yes") for b in at.button)
        next(b for b in at.button if b.label == "Cancel job").click()
        at.run()
        next(b for b in at.button if b.label == "Yes, cancel the job").click()
        at.run()
        assert client.job(job.id).status == "cancelled"  # a queued job: at once
    assert {m.label: m.value for m in at.metric}["Status"] == "cancelled"


def test_train_page_starts_a_job_from_a_version_and_shows_a_refusal(registry: dict[str, Any]) -> None:
    """Start from reaches the registry, which takes the version's base model (the form's minilm is the default, as
    its 256 rank is: not a contradiction) and refuses it here (a base model its jobs do not train): said on the
    page, nothing queued. A warm-start job queued and run: tests/registry/test_jobs.py."""
    with RegistryClient(registry["url"], registry["token"]) as client:
        before = len(client.jobs())
        not_minilm = client.get("alice/model0:1").base_model
    at = page("train", registry)
    next(t for t in at.text_input if t.label == "Publish as").set_value("alice/warm-ui")
    next(t for t in at.text_input if t.label == "Start from (optional)").set_value("alice/model0@latest")
    next(b for b in at.button if b.label == "Launch").click()
    at.run()
    assert not at.exception and not at.success
    assert f"Jobs on this registry train only 'minilm' (VERA_JOB_BASE_MODELS); got base_model='{not_minilm}'" in \
        texts(at)
    # said beside the form; the jobs below stay (the refusal stopped the whole page: session 29's walk)
    assert "Jobs" in [h.value for h in at.subheader] or "No jobs yet." in texts(at)
    with RegistryClient(registry["url"], registry["token"]) as client:
        assert len(client.jobs()) == before


def test_train_page_says_which_version_a_queued_job_starts_from(registry: dict[str, Any], tmp_path: Path) -> None:
    """A start the registry accepts: the page names the version it was pinned to (an alias moved later changes
    nothing), and the job's spec has it."""
    from vera_core import save_adapter
    from vera_core.recipes import TrainSpec, build

    model, _ = build(TrainSpec(demo=True, r=16), num_labels=2)
    save_adapter(model, tmp_path / "start")
    with RegistryClient(registry["url"], registry["token"]) as client:
        client.publish(tmp_path / "start", "alice/warm-start", base_model="minilm",
                       metrics={"labels": ["negative", "positive"]})
    try:
        at = page("train", registry)
        next(t for t in at.text_input if t.label == "Publish as").set_value("alice/warm-ui-2")
        next(t for t in at.text_input if t.label == "Start from (optional)").set_value("alice/warm-start@latest")
        next(b for b in at.button if b.label == "Launch").click()
        at.run()
        assert not at.exception
        queued = [s.value for s in at.success if s.value.startswith("Queued job")]
        assert len(queued) == 1 and "starting from alice/warm-start:1 (its rank, projection and base)" in queued[0]
        assert any(c.value.startswith("Starts from alice/warm-start:1: its d and b vectors") for c in at.caption)
        with RegistryClient(registry["url"], registry["token"]) as client:
            job = next(j for j in client.jobs() if j.target_name == "alice/warm-ui-2")
            assert job.spec["init_from"] == "alice/warm-start:1" and job.spec["r"] == 16
            client.cancel_job(job.id)
    finally:  # the module's registry lists what its other tests published, and nothing else
        with RegistryClient(registry["url"], registry["token"]) as client:
            client.delete("alice/warm-start:1")


def test_a_refused_warm_start_is_said_in_the_forms_words() -> None:
    from web_ui.train import form_words

    said = form_words("Invalid job spec: r=8 differs from the adapter it starts from (init_from ann/clf:1: 16); "
                      "leave r out: a warm start keeps the adapter's.")
    assert said == ("Invalid job spec: r=8 differs from the adapter it starts from (Start from ann/clf:1: 16); leave "
                    "Rank r, Projection seed and Generator at their defaults: a warm start keeps the version's.")
    assert form_words("init_from ann/x@prod: no such adapter that you may read. Name a version that `vera ls` lists "
                      "(owner/name:N or owner/name@ALIAS).") == (
        "Start from ann/x@prod: no such adapter that you may read. Name a version that Browse lists (owner/name:N or "
        "owner/name@ALIAS).")


@pytest.mark.parametrize(("target", "message"), [
    ("", "Publish as is empty: type the name to publish the adapter as, owner/name"),
    ("  ", "Publish as is empty"),
    ("alice/x:2", "Publish as takes owner/name without a version or alias"),
    ("no slash", "Publish as: 'no slash' is not an adapter reference"),
], ids=["empty", "blank", "with-version", "malformed"])
def test_train_form_checks_publish_as_before_sending(registry: dict[str, Any], target: str, message: str) -> None:
    with RegistryClient(registry["url"], registry["token"]) as client:
        before = len(client.jobs())
        at = page("train", registry)
        next(t for t in at.text_input if t.label == "Publish as").set_value(target)
        next(b for b in at.button if b.label == "Launch").click()
        at.run()
        assert not at.exception and message in texts(at) and "Field required" not in texts(at)
        assert len(client.jobs()) == before  # nothing was sent


def test_train_page_follows_the_job_in_the_url(registry: dict[str, Any]) -> None:
    with RegistryClient(registry["url"], registry["token"]) as client:
        first = client.submit_job("alice/job-a", training_spec(demo=True))
        second = client.submit_job("alice/job-b", training_spec(demo=True))
    at = page("train", registry, query={"job": str(first.id)})
    assert at.selectbox(key="job_box").value == first.id
    at.selectbox(key="job_box").set_value(second.id).run()
    assert at.query_params["job"] == str(second.id)
    at.selectbox(key="job_box").set_value(first.id).run()
    assert at.query_params["job"] == str(first.id) and at.selectbox(key="job_box").value == first.id
    unknown = page("train", registry, query={"job": "9999"})
    assert not unknown.exception and "This registry has no job '9999'; showing the newest" in texts(unknown)


def test_messages_instead_of_tracebacks_when_unreachable_or_refused(registry: dict[str, Any]) -> None:
    down = page("browse", {"url": f"http://127.0.0.1:{free_port()}", "token": ""})
    assert not down.exception and "cannot be reached" in texts(down) and "vera up" in texts(down)
    refused = page("browse", {"url": registry["url"], "token": "vera_wrong"})
    assert not refused.exception and "refused the token" in texts(refused)
    anonymous = page("adapter", {"url": registry["url"], "token": ""}, adapter_ref="alice/model0")
    assert "requires a token" in texts(anonymous)
    # a new user's walk: an adapter link opened in a new tab came without the pasted token, unexplained
    assert "A link opened in a new tab starts without the token" in texts(anonymous)
    assert "Remember me on this browser" in texts(anonymous) and "Remember me" not in texts(refused)
    missing = page("adapter", registry, adapter_ref="alice/nothing")
    assert not missing.exception and "nothing" in texts(missing)
    malformed = page("adapter", registry, adapter_ref="not a ref")
    assert not malformed.exception and "not an adapter reference" in texts(malformed)


@pytest.mark.parametrize(("typed", "said"), [
    ("alice/model0 @prod", "'alice/model0 @prod' holds a space: a reference has none. Did you mean alice/model0@prod?"),
    ("alice/model0@Prod", "'alice/model0@Prod' has capital letters (alias 'Prod'): names are lowercase, so no alias is "
                          "called that. Did you mean alice/model0@prod?"),
    ("alice/model0@prdo", "alice/model0 has no alias 'prdo'; its aliases: latest, prod. Did you mean "
                          "alice/model0@prod?"),
    # an alias not set yet: where it is set, in the page's words (the registry's names `vera alias`)
    ("alice/model0@staging", "alice/model0 has no alias 'staging'; its aliases: latest, prod. An alias is set on its "
                             "version's Adapter page (**Point alias here**)."),
], ids=["space", "capitals", "typo", "unset"])
def test_a_near_miss_reference_names_what_is_wrong_and_the_one_meant(registry: dict[str, Any], typed: str,
                                                                     said: str) -> None:
    """A newcomer's walk: `alice/model0 @latest` blamed the adapter's name ("Adapter name 'model0 ' is not a valid
    name"), and `@Prod` suggested no `prod` (names are lowercase: no alias is called Prod)."""
    at = page("adapter", registry, query={"ref": typed})
    assert not at.exception and said in texts(at)


def test_the_router_runs_the_browse_page_by_default(registry: dict[str, Any], monkeypatch: pytest.MonkeyPatch
                                                    ) -> None:
    monkeypatch.setenv("VERA_REGISTRY_URL", registry["url"])
    monkeypatch.setenv("VERA_TOKEN", registry["token"])
    at = AppTest.from_file(str(Path(__file__).parents[2] / "web_ui" / "streamlit_app.py"), default_timeout=60).run()
    assert not at.exception
    assert at.title[0].value == "Browse adapters"


def test_a_session_on_another_registry_carries_it_in_links_and_a_linked_session_opens_it_without_the_token(
        registry: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Links open new tabs, which are new sessions: a session pointed at another registry than the dashboard's
    default writes it into its address and links (``registry=``), and a session opened from such an address shows
    that registry, without VERA_TOKEN (which is the default registry's: a link must not make the dashboard send it
    elsewhere)."""
    monkeypatch.setenv("VERA_REGISTRY_URL", "http://127.0.0.1:9")  # the dashboard's default: another registry
    monkeypatch.setenv("VERA_TOKEN", registry["token"])
    elsewhere = page("browse", registry)
    assert not elsewhere.exception
    carried = f"&registry={registry['url']}"
    assert list(elsewhere.dataframe[0].value["version"])[0] == f"adapter?ref=alice/model2:1{carried}"
    assert tables.link_text(f"adapter?ref=alice/model2:1{carried}") == "alice/model2:1"

    app = Path(__file__).parents[2] / "web_ui" / "streamlit_app.py"
    linked = AppTest.from_file(str(app), default_timeout=60)
    linked.query_params.update({"registry": registry["url"]})
    linked.run()
    assert not linked.exception
    assert linked.session_state["registry_url"] == registry["url"] and linked.session_state["token"] == ""
    assert "This registry requires a token" in texts(linked)  # VERA_TOKEN was not sent to it
    assert linked.query_params["registry"] == registry["url"]  # kept in the address

    monkeypatch.setenv("VERA_REGISTRY_URL", registry["url"])  # the default registry gets the default token
    default = AppTest.from_file(str(app), default_timeout=60).run()
    assert not default.exception and default.title[0].value == "Browse adapters"
    assert "registry" not in default.query_params


def test_vera_ui_serves_the_dashboard_for_a_given_registry(registry: dict[str, Any]) -> None:
    port = free_port()
    with running_vera(["ui", "--port", str(port), "--registry", registry["url"]], port,
                      health="/_stcore/health") as url:
        page = httpx.get(url, timeout=10)
        assert page.status_code == 200 and "<title>Streamlit</title>" in page.text


def test_vera_ui_on_a_shared_address_limits_the_dashboard_to_its_registry(registry: dict[str, Any],
                                                                         tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "ui.log"
    with running_vera(["ui", "--port", str(port), "--registry", registry["url"], "--host", "0.0.0.0"], port,
                      health="/_stcore/health", log_path=log, VERA_TOKEN="a-read-token") as url:
        assert httpx.get(url, timeout=10).status_code == 200
        said = " ".join(log.read_text().split())
    assert f"note: others can reach 0.0.0.0: the dashboard talks only to {registry['url']}" in said
    assert "note: VERA_TOKEN is set: every visitor reads and acts with that token" in said
    assert f"dashboard on http://0.0.0.0:{port}" in said
    # vera's own line, not Streamlit's, whose "External URL" asked checkip.amazonaws.com (offline: a warning line)
    said = " ".join(log.read_text().split())  # (once it stopped: all it wrote)
    assert "Streamlit app" not in said and "External URL" not in said and "external IP" not in said, said


def test_an_empty_registry_shows_how_to_get_started(tmp_path: Path) -> None:
    with registry_in_thread(f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "blobs") as url:
        at = page("browse", {"url": url, "token": ""})
        assert not at.exception and "This registry has no adapters yet" in texts(at)
        assert "versions match" not in texts(at) and not at.dataframe
        commands = at.code[0].value
        assert f"export VERA_REGISTRY_URL={url}" in commands
        assert "vera job submit --name demo/polarity --demo" in commands  # the name the button offers too
        at.text_input(key="demo_target").set_value("").run()
        next(b for b in at.button if b.label == "Train the demo adapter").click()
        at.run()
        assert "Publish as is empty" in texts(at)
        with RegistryClient(url, "") as client:
            assert client.jobs() == []  # the empty name was refused here, not by the server
            # a job queued from a terminal is named, with a way to follow it (it was offered to queue it again)
            job = client.submit_job("you/polarity", {"demo": True})
        st.cache_data.clear()  # (reads are cached 5 s: the first run's empty job list)
        at = page("browse", {"url": url, "token": ""})
        assert not at.exception and f"Job {job.id} (queued) will publish you/polarity when it ends." in texts(at)
        assert any(b.label == f"Follow job {job.id} on Train" for b in at.button)


class _NotARegistry(BaseHTTPRequestHandler):
    """Another HTTP server: the same answer at every path (``answer``: status, content type, body)."""

    answer = (200, "text/html", b"<!doctype html><title>Streamlit</title>")

    def do_GET(self) -> None:
        status, kind, body = self.answer
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


NOT_REGISTRIES = {
    "html-everywhere": (200, "text/html", b"<!doctype html><title>Streamlit</title>"),  # the dashboard's own port
    "404-everywhere": (404, "text/plain", b"Not Found"),
    "html-404": (404, "text/html", b"<!DOCTYPE HTML>\n<html><head><title>Error response</title></head></html>"),
}


@pytest.fixture(scope="module", params=list(NOT_REGISTRIES))
def not_a_registry(request: pytest.FixtureRequest) -> Iterator[str]:
    handler = type("Handler", (_NotARegistry,), {"answer": NOT_REGISTRIES[request.param]})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("name", ["browse", "adapter", "compare", "train"])
def test_a_server_that_is_not_a_registry_is_named_as_such(not_a_registry: str, name: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VERA_REGISTRY_URL", "http://127.0.0.1:18865")  # `vera ui --registry` of another port
    at = page(name, {"url": f"http://{not_a_registry}", "token": ""}, query={"ref": "alice/model0:1"})
    assert not at.exception
    shown = texts(at)
    assert f"http://{not_a_registry} answered, but it is not a vera registry" in shown, shown
    assert "Set the registry's API URL in the sidebar" in shown and "cannot be reached" not in shown
    assert "<" not in shown and "\\n" not in shown  # an HTML page is named, never quoted
    assert "(this dashboard's default: http://127.0.0.1:18865)." in shown
    # one message of the dashboard's: the client's own ("... it does not look like the registry's API ...") was
    # nested in it, cut mid-word (a newcomer's walk)
    assert "does not look like" not in shown and "the error '" not in shown


def test_a_registry_url_ending_in_its_api_path_says_to_drop_it(registry: dict[str, Any]) -> None:
    """http://127.0.0.1:8000/api/v1 (what the API's docs show) in the sidebar: one whole message, naming what /health
    answered there and the URL to set instead (a newcomer's walk: no word of /api/v1)."""
    for path in ("/api/v1", "/docs"):
        at = page("browse", {"url": registry["url"] + path, "token": registry["token"]})
        assert not at.exception and [e.value for e in at.error] == [
            f"{registry['url']}{path} answered, but it is not a vera registry: GET /health there gave HTTP 404 Not "
            f'Found, where a registry answers {{"status": "ok"}}. The registry\'s URL is its root, without {path}: '
            f"set {registry['url']} in the sidebar (the dashboard adds /api/v1 and the rest itself)."]
    assert session.registry_root("http://h:1/vera") is None and session.registry_root("http://h:1") is None


def test_a_dashboard_others_reach_talks_only_to_the_registries_its_operator_listed(
        registry: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """VERA_UI_REGISTRIES (set, even empty, by `vera ui --host` on a shared address): a link's ``?registry=``, or
    the sidebar, naming another server gets a message, and that server gets no request from the dashboard (which
    would otherwise fetch any address a visitor names, inside the operator's network). Listed, it is reached."""
    asked: list[str] = []

    class Recording(_NotARegistry):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            asked.append(self.path)
            super().do_GET()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Recording)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    inside = f"http://127.0.0.1:{server.server_address[1]}"
    app = str(Path(__file__).parents[2] / "web_ui" / "streamlit_app.py")
    try:
        monkeypatch.setenv("VERA_UI_REGISTRIES", "")
        linked = AppTest.from_file(app, default_timeout=60)
        linked.query_params.update({"registry": inside})
        linked.run()
        assert not linked.exception
        assert f"This dashboard talks only to {registry['url']} (VERA_UI_REGISTRIES" in texts(linked)
        assert f"not to {inside}. Set one of those in the sidebar" in texts(linked)
        linked.sidebar.text_input(key="sidebar_url").set_value(inside + "/").run()  # typed: the same refusal
        assert not linked.exception and "This dashboard talks only to" in texts(linked)
        with pytest.raises(InvalidInput, match="talks only to"):  # and no other way through the session
            session.connect(inside, "")
        assert asked == []
        default = AppTest.from_file(app, default_timeout=60).run()  # its own registry works as ever
        assert not default.exception and default.title[0].value == "Browse adapters"

        monkeypatch.setenv("VERA_UI_REGISTRIES", f" {inside}/ , http://elsewhere:1")
        assert session.allowed_registries() == {registry["url"], inside, "http://elsewhere:1"}
        listed = AppTest.from_file(app, default_timeout=60)
        listed.query_params.update({"registry": inside})
        listed.run()
        assert not listed.exception and f"{inside} answered, but it is not a vera registry" in texts(listed)
        assert asked  # reached
    finally:
        server.shutdown()
        server.server_close()


def test_a_url_without_its_scheme_says_to_add_it(registry: dict[str, Any]) -> None:
    bare = registry["url"].removeprefix("http://")
    at = page("browse", {"url": bare, "token": registry["token"]})
    assert not at.exception and "cannot be reached" not in texts(at)
    assert f"does not start with http:// or https://. Add it in the sidebar, e.g. http://{bare}" in texts(at)
    # in the dashboard, under the page's heading (the page, not run, drew none: a walk's finding)
    whole = AppTest.from_file(str(Path(__file__).parents[2] / "web_ui" / "streamlit_app.py"), default_timeout=60)
    whole.query_params["registry"] = bare
    whole.run()
    assert not whole.exception and [t.value for t in whole.title] == ["Browse adapters"]
    assert "does not start with http:// or https://" in texts(whole)


def test_browse_rows_ticked_open_one_or_compare_two_to_four(registry: dict[str, Any]) -> None:
    at = page("browse", registry)
    buttons = {b.label: b for b in at.button}
    assert buttons["Open version"].disabled and buttons["Compare selected (0)"].disabled
    for rows, label, open_ok, compare_ok in (([1], "Compare selected (1)", True, False),
                                             ([0, 2], "Compare selected (2)", False, True),
                                             ([0, 1, 2], "Compare selected (3)", False, True)):
        ticked = page("browse", registry, browse_table={"selection": {"rows": rows, "columns": [], "cells": []}})
        buttons = {b.label: b for b in ticked.button}
        assert (not buttons["Open version"].disabled, not buttons[label].disabled) == (open_ok, compare_ok), rows
    assert list(at.dataframe[0].value.columns) == ["version", "base model", "r", "stored", "accuracy", "downloads",
                                                   "verified", "labels", "created"]  # what fits 1,400 px (measured
    # by the browser test)


def test_compare_picker_searches_every_version_on_the_server(registry: dict[str, Any],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from web_ui import compare

    monkeypatch.setattr(compare, "OPTIONS", 1)  # the picker offers the newest match only
    at = page("compare", registry, query={"refs": "alice/model2:1,alice/model1:1"})
    assert at.multiselect[0].options == ["alice/model2:1", "alice/model1:1"]  # the chosen + the newest one
    assert "The newest 1 of 3 versions are offered; search to find any other." in texts(at)
    at.text_input(key="compare_search").set_value("model0").run()  # the oldest: found by the registry
    assert at.multiselect[0].options == ["alice/model2:1", "alice/model1:1", "alice/model0:1"]
    assert "1 version matches 'model0'." in texts(at)
    at.multiselect[0].set_value(["alice/model2:1", "alice/model0:1"]).run()
    assert at.query_params["refs"] == "alice/model2:1,alice/model0:1"
    at.text_input(key="compare_search").set_value("no such adapter").run()
    assert at.multiselect[0].value == ["alice/model2:1", "alice/model0:1"]  # a search keeps what is chosen
    assert "0 versions match 'no such adapter'." in texts(at)


def cosine_grids(at: AppTest) -> list[str]:
    """The titles of Compare's cosine grids (one per version drawn against the first), as the browser gets them."""
    return [grid["title"]["text"] for chart in at.get("vega_lite_chart")
            for grid in json.loads(chart.proto.spec).get("vconcat", [])]


def test_compare_draws_no_cosine_grid_for_a_version_on_another_projection(registry: dict[str, Any]) -> None:
    """A team lead's walk: the grid of a version on another projection was drawn under a caption saying its cosine
    is about 0 whatever it learned. Now only versions sharing the first's projection get a grid, captioned with
    why it means something; the others are named, in one sentence saying why they have none."""
    same = page("compare", registry, query={"refs": "alice/model0:1,alice/model2:1"})  # r 8 both, one seed
    assert "All share alice/model0:1's projection" in texts(same)
    assert cosine_grids(same) == ["alice/model2:1  vs  alice/model0:1"]
    apart = page("compare", registry, query={"refs": "alice/model0:1,alice/model1:1,alice/model2:1"})
    shown = texts(apart)
    assert cosine_grids(apart) == ["alice/model2:1  vs  alice/model0:1"]  # none for model1 (r 4)
    assert ("alice/model2:1 shares alice/model0:1's projection (generator, seed and rank), so A and B are the same "
            "matrices and the cosine compares what d and b learned.") in shown
    assert ("No cosine grid for alice/model1:1 (another rank): on another projection than alice/model0:1's "
            "(generator philox4x32-10-kaiming-uniform-v1, seed 0, r 8), its A and B are other random matrices") in shown
    assert "score about 0" not in shown and "alice/model2:1 (" not in shown
    alone = page("compare", registry, query={"refs": "alice/model1:1,alice/model0:1"})
    assert cosine_grids(alone) == [] and "cos(ΔW of each version" not in texts(alone)
    assert "No cosine grid for alice/model0:1 (another rank)" in texts(alone)


def worker_jobs(registry: dict[str, Any]) -> Any:
    """The job queue, as a worker sees it (claims, finishes), on the registry's database."""
    from registry.services.jobs import Jobs
    from registry.services.registry import Registry
    from registry.store.blobs import FsspecBlobStore

    return Jobs(Registry(Database(registry["db"]), FsspecBlobStore(str(registry["blobs"]))))


def test_a_running_job_says_cancelling_until_the_worker_stops_it(registry: dict[str, Any]) -> None:
    from web_ui.jobs import CANCELLING  # "its worker checks about twice a second": registry.worker.CANCEL_CHECK_S

    queue = worker_jobs(registry)
    with RegistryClient(registry["url"], registry["token"]) as client:
        job = client.submit_job("alice/long", training_spec(demo=True), priority=100)
        assert queue.claim("test-worker").id == job.id  # running now
        at = page("train", registry, query={"job": str(job.id)})
        assert {m.label: m.value for m in at.metric}["Status"] == "running"
        next(b for b in at.button if b.label == "Cancel job").click()
        at.run()
        next(b for b in at.button if b.label == "Yes, cancel the job").click()
        at.run()
        assert client.job(job.id).status == "running" and client.job(job.id).cancel_requested
        assert {m.label: m.value for m in at.metric}["Status"] == "cancelling"
        assert f"Cancelling job {job.id}: {CANCELLING}" in texts(at)
        assert not any(b.label in ("Cancel job", "Yes, cancel the job") for b in at.button)
        again = page("train", registry, query={"job": str(job.id)})
        table = next(d.value for d in again.dataframe if "status" in d.value.columns)
        assert table.set_index("publishes").loc["alice/long", "status"] == "cancelling"
        queue.finish(job.id, "test-worker", status="cancelled")
        at.run()
        assert {m.label: m.value for m in at.metric}["Status"] == "cancelled"
        assert "Cancelling job" not in texts(at)


def test_the_jobs_table_shows_status_duration_and_final_metrics(registry: dict[str, Any],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    queue = worker_jobs(registry)
    with RegistryClient(registry["url"], registry["token"]) as client:
        jobs = [client.submit_job(f"alice/model{i}", training_spec(demo=True, epochs=0.5), priority=100)
                for i in (0, 1)]
        for job, i in zip(jobs, (0, 1), strict=True):
            assert queue.claim("test-worker").id == job.id
            queue.heartbeat(job.id, "test-worker", progress={"phase": "done", "loss": 0.4321, "accuracy": 0.9})
            queue.finish(job.id, "test-worker", status="succeeded", result_version=(f"alice/model{i}", 1))
        job = jobs[0]
        lookups, gets = counted(monkeypatch, "lookup"), counted(monkeypatch, "get")
        at = page("train", registry, query={"job": str(job.id)})
    # the published versions' metrics in one lookup, not a GET per finished job at every refresh of the table
    assert lookups == [(("alice/model0:1", "alice/model1:1"),)] and ("alice/model1:1",) not in gets, (lookups, gets)
    table = next(d.value for d in at.dataframe if "status" in d.value.columns).set_index("job")
    row = table.loc[f"train?job={job.id}"]  # each job a link to its view
    assert row["status"] == "succeeded" and row["result"] == "adapter?ref=alice/model0:1"
    assert row["test accuracy"] == pytest.approx(0.8) and row["eval loss"] == pytest.approx(0.5)  # the version's
    assert row["duration"].endswith(" s")
    spec = next(d.value for d in at.dataframe if list(d.value.columns) == ["field", "value"])
    fields = dict(zip(spec["field"], spec["value"], strict=True))  # the spec as a table, nested names dotted
    assert fields["publishes"] == "alice/model0" and fields["demo"] == "yes" and fields["training.epochs"] == "0.5000"


def test_adapter_page_shows_the_model_card_when_the_registry_has_one(registry: dict[str, Any]) -> None:
    from registry.domain.schemas import VersionInfo
    from web_ui.adapter import model_card

    class WithCard(VersionInfo):  # a registry whose versions carry their card
        card: str

    with RegistryClient(registry["url"], registry["token"]) as client:
        info = client.get("alice/model2:1")
        assert model_card(WithCard(**info.model_dump(), card="# Card\nFor tests.")) == "# Card\nFor tests."
        if not hasattr(client, "update_adapter"):
            pytest.skip("this registry client cannot write an adapter's model card yet")
        client.update_adapter("alice/model2", card="# Polarity\n\nWord polarity on MiniLM.")
    at = page("adapter", registry, query={"ref": "alice/model2:1"})
    assert [t.label for t in at.tabs][0] == "Model card" and "Word polarity on MiniLM." in texts(at)
    # a Hub card's YAML front matter is folded away as metadata, not drawn as a rule and a giant heading (s16 walk)
    with RegistryClient(registry["url"], registry["token"]) as client:
        client.update_adapter("alice/model2", card="---\nlicense: mit\nlibrary_name: peft\n---\n# Polarity\n")
    st.cache_data.clear()  # the card read for the page above is cached for the process
    at = page("adapter", registry, query={"ref": "alice/model2:1"})
    assert [e.label for e in at.expander] == ["Card metadata"]
    assert at.code[0].value == "license: mit\nlibrary_name: peft"
    assert [m.value for m in at.markdown if "license" in m.value] == []


@pytest.mark.parametrize(("card", "parts"), [
    ("---\nlicense: mit\n---\n# Title\n", ("license: mit", "# Title\n")),
    ("\ufeff---\r\ntags: [a]\r\n---\r\nbody", ("tags: [a]", "body")),
    ("# No metadata\n---\nbelow a rule", ("", "# No metadata\n---\nbelow a rule")),
    ("---\nnever closed\n", ("", "---\nnever closed\n")),
])
def test_a_cards_front_matter_is_split_from_its_body(card: str, parts: tuple[str, str]) -> None:
    from web_ui.adapter import split_card

    assert split_card(card) == parts


def counted(monkeypatch: pytest.MonkeyPatch, method: str) -> list[tuple[Any, ...]]:
    """The arguments of every call of ``RegistryClient.<method>`` from now on (pages and their reads ahead alike),
    with Streamlit's read caches emptied first."""
    calls = client_calls(monkeypatch, method)
    st.cache_data.clear()
    return calls


def test_browse_lists_the_versions_once(registry: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    listings = counted(monkeypatch, "list_versions")
    at = page("browse", registry)
    assert not at.exception and "3 versions match" in texts(at)
    assert len(listings) == 1  # not empty: the page learns it from its own listing, not from a request of its own


def test_train_lists_the_jobs_once_per_run(registry: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    with RegistryClient(registry["url"], registry["token"]) as client:
        client.submit_job("alice/listed-once", training_spec(demo=True))
    listings = counted(monkeypatch, "jobs")
    at = page("train", registry)
    assert not at.exception and at.selectbox(key="job_box").value is not None
    assert len(listings) == 1  # the job selector and the live table share one listing


def test_adapter_downloads_the_tensors_once(registry: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    downloads = counted(monkeypatch, "download")
    at = page("adapter", registry, query={"ref": "alice/model0:1"}, adapter_tab="Metrics")
    assert not at.exception and "**Task head**:" in texts(at)  # the Metrics tab's storage checklist
    assert next(d.value for d in tab(at, "Layers").dataframe if "mean |d|" in d.value.columns) is not None
    assert len(downloads) == 1


def test_compare_computes_a_comparison_once_per_set_of_versions(registry: dict[str, Any],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-layer comparison is computed from the versions' tensors, which do not change: it is kept an hour,
    keyed by the resolved versions, while their numbers are read again after a few seconds."""
    comparisons = counted(monkeypatch, "compare")
    gets = counted(monkeypatch, "get")
    first = page("compare", registry, query={"refs": "alice/model0:1,alice/model2:1"})
    session._cached.clear()  # the few-second reads expire
    again = page("compare", registry, query={"refs": "alice/model0@prod,alice/model2:1"})  # the same two versions
    assert not first.exception and not again.exception
    assert "All share alice/model0:1's projection" in texts(first)
    assert "All share alice/model0:1's projection" in texts(again)
    assert len(comparisons) == 1 and len(gets) >= 4  # each page read both versions; one comparison for both


def test_streamlit_settings_travel_with_the_entry_script(tmp_path: Path) -> None:
    """web_ui/.streamlit/config.toml applies to web_ui/streamlit_app.py wherever Streamlit starts (a script-level
    config), so every way of starting the dashboard gets the settings that take work off each page view."""
    entry = Path(__file__).parents[2] / "web_ui" / "streamlit_app.py"
    program = ("from streamlit import config\n"
               f"config._main_script_path = {str(entry)!r}\n"
               "config.get_config_options(force_reparse=True)\n"
               "print([config.get_option(k) for k in ('server.fileWatcherType', 'runner.postScriptGC', "
               "'runner.magicEnabled', 'browser.gatherUsageStats')])")
    shown = subprocess.run([sys.executable, "-c", program], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == "['none', False, False, False]"


def chart_titles(at: AppTest) -> list[str]:
    """The titles of the page's charts (those that have one at the top), in order."""
    specs = [json.loads(chart.proto.spec) for chart in at.get("vega_lite_chart")]
    return [s["title"]["text"] for s in specs if isinstance(s.get("title"), dict)]


def test_a_version_with_only_a_loss_curve_says_so_above_its_chart_and_shows_its_params(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    with registry_in_thread(f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "blobs") as url:
        monkeypatch.setenv("VERA_REGISTRY_URL", url)
        with RegistryClient(url) as client:
            client.publish(make_adapter(tmp_path / "a"), "kim/curve", base_model="tiny-llama",
                           metrics={"train_loss": CURVE}, params={"lr": "0.01", "schedule": "cosine"})
            client.publish(make_adapter(tmp_path / "b", seed=2), "kim/none", base_model="tiny-llama")
            client.publish(make_adapter(tmp_path / "c", seed=3), "kim/evals", base_model="tiny-llama", metrics={
                "train_loss": CURVE, "eval": [{"step": s, "eval_loss": 0.7 - s / 10, "eval_accuracy": 0.6 + s / 10}
                                              for s in (1, 2)]})
        # each eval metric besides the loss gets a chart of its own, on the Adapter page and on Compare (a walk,
        # session 40: only the loss was plotted)
        evals = page("adapter", {"url": url, "token": ""}, query={"ref": "kim/evals:1"}, adapter_tab="Metrics")
        assert not evals.exception and chart_titles(evals) == ["Training and eval loss", "Eval accuracy"]
        compared = page("compare", {"url": url, "token": ""}, query={"refs": "kim/curve:1,kim/evals:1"})
        assert not compared.exception and chart_titles(compared)[:2] == ["Training and eval loss", "Eval accuracy"]
        curve = page("adapter", {"url": url, "token": ""}, query={"ref": "kim/curve:1"}, adapter_tab="Metrics")
        assert not curve.exception and curve.get("vega_lite_chart")
        assert "No final metrics (test or eval results) were recorded with this version: only the loss curve." in \
            texts(curve)
        bare = page("adapter", {"url": url, "token": ""}, query={"ref": "kim/none:1"}, adapter_tab="Metrics")
        assert not bare.exception and not bare.get("vega_lite_chart")
        assert "No metrics were recorded with this version." in texts(bare)
        # what it was trained with, under the metrics (MLflow's run Parameters), or why nothing is there
        [params] = [frame.value for frame in curve.dataframe if "parameter" in frame.value.columns]
        assert params.to_dict("list") == {"parameter": ["lr", "schedule"], "value": ["0.01", "cosine"]}
        assert "No training parameters were recorded with this version" in texts(bare)
        assert "No training parameters" not in texts(curve)

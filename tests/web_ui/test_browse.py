"""Browse (web_ui/browse.py) through AppTest against a real registry: the sorted-by metric's column and caption,
a URL that carries its filters and no other page's parameter, and Clear filters."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from registry.client import RegistryClient
from registry.domain.schemas import VersionInfo
from tests.registry.adapters import make_adapter
from tests.registry.servers import registry_in_thread
from tests.web_ui.test_pages import apply, field, filter_form, page, table_heights, texts
from web_ui import browse, formats, metric_names, navigation, tables

ACCURACY = {"alice/a": 0.846, "alice/b": 0.8355}  # what the reviewer saw: 0.846 beside 0.8355


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("browse")
    with registry_in_thread(f"sqlite:///{root / 'r.db'}", root / "blobs") as url, RegistryClient(url) as client:
        for seed, (name, accuracy) in enumerate(ACCURACY.items()):
            client.publish(make_adapter(root / name.replace("/", "-"), seed=seed), name, base_model="tiny-llama",
                           metrics={"test": {"accuracy": accuracy}, "final_eval": {"loss": 0.4 + seed / 10}})
        # a version whose run recorded no test split: its accuracy is the final evaluation's
        client.publish(make_adapter(root / "bob-eval", seed=7), "bob/eval-only", base_model="tiny-llama",
                       metrics={"final_eval": {"accuracy": 0.9}})
        yield {"url": url, "token": ""}


@pytest.mark.parametrize(("values", "fmt"), [
    ([0.846, 0.8355], "%.4f"), ([12.3, 9.2, None], "%.2f"), ([1234.5], "%.0f"), ([0.00123, 0.0004], "%.6f"),
    ([None], "%.3f"), ([0.0, 1.5], "%.3f"),
], ids=["accuracies", "losses", "thousands", "small", "none", "zero"])
def test_a_metric_column_has_one_number_of_decimals(values: list[float | None], fmt: str) -> None:
    assert formats.metric_format(values) == fmt


def test_the_sorted_metric_is_written_with_one_precision_and_its_order_said(registry: dict[str, Any]) -> None:
    """Issue 20, walk 2: '%.4g' wrote 0.846 beside 0.8355; a lowest-first sort was captioned like a highest-first."""
    at = page("browse", registry, **{browse.APPLIED_FORM: {"metric": "test.accuracy"}})
    assert not at.exception
    table = at.dataframe[0]
    assert list(table.value["test.accuracy"]) == pytest.approx(list(ACCURACY.values()))  # highest first
    assert json.loads(table.proto.columns)["test.accuracy"]["type_config"]["format"] == "%.4f"  # 0.8460, 0.8355
    # the versions without it are left out, and said to be (a walk: 9 versions became 8, unsaid; session 40)
    assert "sorted by test.accuracy, highest first, over every page; versions that do not record test.accuracy are " \
        "left out" in texts(at)
    lowest = page("browse", registry, **{browse.APPLIED_FORM: {"metric": "+final_eval.loss"}})
    assert list(lowest.dataframe[0].value["final_eval.loss"]) == pytest.approx([0.4, 0.5])
    assert "sorted by final_eval.loss, lowest first, over every page" in texts(lowest)
    chosen = page("browse", registry, **{browse.APPLIED_FORM: {"sort": "metrics.final_eval.loss"}})
    assert "sorted by final_eval.loss, lowest first, over every page" in texts(chosen)  # the Sort box's choice


def test_a_filter_naming_a_metric_no_version_has_says_so_and_names_those_there_are(registry: dict[str, Any]) -> None:
    """A newcomer's walk: a Filter on a misspelt metric matched nothing, and the page said only "No adapter matches
    these filters"."""
    at = page("browse", registry, **{browse.APPLIED_FORM: {
        "filter": "metrics.test.acc > 0.5 and metrics.final_eval.loss < 1 and metrics.`eval`.los < 1"}})
    assert not at.exception and not at.dataframe
    assert [i.value for i in at.info] == [
        "No version has a metric named `test.acc` or `eval.los`. Metrics the newest versions record: "
        "`final_eval.accuracy`, `final_eval.loss`, `test.accuracy`. A metric is named by its path in a version's "
        "metrics (`test.accuracy`, `final_eval.loss`): the Adapter page's Metrics tab shows a version's."]
    there = page("browse", registry, **{browse.APPLIED_FORM: {"filter": "metrics.test.accuracy > 0.99"}})
    assert [i.value for i in there.info] == ["No adapter matches these filters."]  # a metric there is: no more said


@pytest.mark.parametrize(("text", "sort", "keys"), [
    ("metrics.test.acc > 0.5 and r <= 8", None, ["test.acc"]),
    ("METRICS.a = 1 and metrics.`b c`.d > 0 and metrics.a < 2", "e.f", ["a", "`b c`.d", "e.f"]),
    ("name = 'metrics.x' and properties.metrics.y = 'z'", None, []),  # a text, a property's key: no metric
    (None, None, []),
], ids=["one", "quoted-repeated-and-sorted", "not-metrics", "none"])
def test_the_metrics_a_filter_names(text: str | None, sort: str | None, keys: list[str]) -> None:
    assert metric_names.named(text, sort) == keys


@pytest.mark.parametrize(("metrics", "accuracy", "source", "loss"), [
    ({"test": {"accuracy": 0.8}, "final_eval": {"accuracy": 0.9, "loss": 0.3}}, 0.8, "test", 0.3),  # vera train's
    ({"eval_accuracy": 0.91, "eval_loss": 0.25, "train_loss": 0.4, "epoch": 3.0}, 0.91, "eval", 0.25),  # Trainer's
    ({"test_accuracy": 0.87, "eval_accuracy": 0.91, "eval_loss": 0.25}, 0.87, "test", 0.25),  # all_results.json
    ({"accuracy": 0.7, "loss": 0.5}, 0.7, "", 0.5),  # flat, from nowhere said
    ({"final_eval": {"loss": 0.2}, "eval_loss": 9.0, "eval_accuracy": True}, None, "", 0.2),  # nested wins; no bool
    ({"eval_accuracy": "0.9", "eval_loss": None}, None, "", None),  # text is no number
], ids=["vera", "trainer-eval", "trainer-all", "flat", "nested-first", "not-numbers"])
def test_the_accuracy_and_loss_read_vera_train_and_huggingface_trainer_names(
        metrics: dict[str, Any], accuracy: float | None, source: str, loss: float | None) -> None:
    """A walk in a browser (session 46): a version whose metrics.json was HuggingFace Trainer's (``eval_accuracy``,
    ``eval_loss``) showed '—' in the Adapter page's Versions table while its Metrics tab listed both."""
    info = VersionInfo.model_construct(metrics=metrics)
    assert browse.accuracy_of(info) == (accuracy, source)
    assert browse.key_metrics(info) == {"accuracy": accuracy, "eval loss": loss}


def test_the_accuracy_column_is_written_as_the_adapter_page_writes_it(registry: dict[str, Any]) -> None:
    """The session-11 walk: Browse wrote 0.846 where the Adapter page writes 0.8460 (four significant digits)."""
    at = page("browse", registry, **{browse.APPLIED_FORM: {"owner": "alice"}})
    assert not at.exception
    column = json.loads(at.dataframe[0].proto.columns)["accuracy"]
    assert column["type_config"]["format"] == "%.4f" and column["label"] == "test acc."  # named for its source


def test_an_eval_accuracy_beside_test_accuracies_says_so(registry: dict[str, Any]) -> None:
    """Walks of sessions 23 and 25: an eval-only version's 0.9 stood beside test accuracies under one header (its
    help said 'test, else eval', cut off on hover): it looked like the best version."""
    at = page("browse", registry)
    assert not at.exception
    table = at.dataframe[0]
    cells = dict(zip(table.value["version"], table.value["accuracy"], strict=True))
    assert {ref.rpartition("=")[2]: cell for ref, cell in cells.items()} == {
        "bob/eval-only:1": "0.9000 eval", "alice/b:1": "0.8355", "alice/a:1": "0.8460"}
    column = json.loads(table.proto.columns)["accuracy"]
    assert column["label"] == "accuracy" and "'eval': the version records none" in column["help"]
    assert column["alignment"] == "right"  # lined up as the number columns beside it (a second walk)
    alone = page("browse", registry, **{browse.APPLIED_FORM: {"owner": "bob"}})
    assert json.loads(alone.dataframe[0].proto.columns)["accuracy"]["label"] == "eval acc."


def test_the_page_of_versions_is_shown_whole_not_in_a_ten_row_box(registry: dict[str, Any],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Session 11's walk: Browse's table scrolled at about ten rows inside the page, leaving space under it."""
    heights = table_heights(monkeypatch)
    at = page("browse", registry)
    assert not at.exception and len(at.dataframe[0].value) == len(ACCURACY) + 1  # and bob's eval-only version
    assert heights == [tables.whole_height(len(ACCURACY) + 1)]


def test_browse_drops_other_pages_parameters_from_its_url(registry: dict[str, Any]) -> None:
    """Issue 20, walk 2: Back from the Adapter page left Browse at ``?ref=...``; the registry a session shows stays
    (links opened from it show the same registry)."""
    at = page("browse", registry, query={"ref": "alice/a:1", "refs": "alice/a:1,alice/b:1", "job": "3",
                                         navigation.REGISTRY: registry["url"]})
    assert not at.exception and "3 versions match" in texts(at)
    assert dict(at.query_params) == {navigation.REGISTRY: registry["url"]}


def test_a_filtered_listing_is_a_link_and_clear_filters_lists_every_version(registry: dict[str, Any]) -> None:
    """A walk in a browser (session 40): Browse's filters were not in its URL (no link to share, Back forgot them)
    and nothing cleared them but each box by hand. Now a link gives the listing it was copied from (what the form
    cannot hold left at its default), Apply writes the URL, and Clear filters lists every version again."""
    shared = page("browse", registry, query={"owner": "alice", "sort": "nonsense", "size": "30",
                                             "filter": "r <= 8", "ref": "alice/a:1"})
    assert not shared.exception
    assert "2 versions match (owner alice, filter `r <= 8`)" in texts(shared)
    # what the form cannot hold (a size it does not offer, an unknown sort) left at its default; another page's gone
    assert dict(shared.query_params) == {"owner": "alice", "filter": "r <= 8"}
    assert shared.session_state[browse.APPLIED_FORM] == {"owner": "alice", "filter": "r <= 8"}
    next(b for b in shared.button if b.label == "Clear filters").click()
    shared.run()
    assert "3 versions match" in texts(shared) and "(owner" not in texts(shared)
    assert dict(shared.query_params) == {} and not [b for b in shared.button if b.label == "Clear filters"]

    at = filter_form(page("browse", registry))
    assert not [b for b in at.button if b.label == "Clear filters"]  # nothing to clear
    field(at, "Owner").set_value("bob")
    field(at, "Rows per page").set_value(100)
    apply(at)
    assert dict(at.query_params) == {"owner": "bob", "size": "100"} and "1 version matches (owner bob)" in texts(at)
    # Back within Browse to its address without filters: every version (it kept the filters: a walk in a browser)
    at.session_state[navigation.PAGE_BEFORE] = "home"  # (web_ui.app sets it each run; AppTest runs the page alone)
    at.query_params.clear()
    at.run()
    assert "3 versions match" in texts(at) and dict(at.query_params) == {}
    # Forward again, then to another page and back through the menu (no filters in that URL): the session's kept
    at.query_params.update({"owner": "bob", "size": "100"})
    at.run()
    assert "1 version matches (owner bob)" in texts(at)
    at.session_state[navigation.PAGE_BEFORE] = "adapter"
    at.query_params.clear()
    at.run()
    assert "1 version matches (owner bob)" in texts(at) and dict(at.query_params) == {"owner": "bob", "size": "100"}


def test_compare_marks_an_eval_accuracy_beside_test_ones_too(registry: dict[str, Any]) -> None:
    from web_ui import compare

    with RegistryClient(registry["url"]) as client:
        both = [client.get("alice/a:1"), client.get("bob/eval-only:1")]
        tested = [client.get("alice/a:1"), client.get("alice/b:1")]
    assert list(compare.table(both)["accuracy"]) == ["0.8460", "0.9000 eval"]
    assert list(compare.table(tested)["accuracy"]) == pytest.approx([0.846, 0.8355])  # numbers, sortable
    assert compare.widths(both)["accuracy"] == browse.MIXED_ACCURACY_PX  # room for "eval", taken from the version
    assert sum(compare.widths(both).values()) <= compare.TABLE_PX


def test_an_adapters_one_tag_beside_prod_and_latest_is_shown_whole_beside_a_short_base_model(
        registry: dict[str, Any]) -> None:
    """A new user's walk (session 26), the README's own flow: the demo job's `fine-tune` tag, then `prod` set:
    '@prod, @latest +1' (the labels column stopped at 186 px, 192 needed) beside a base model column of 90 px."""
    with RegistryClient(registry["url"]) as client:
        version = client.get("alice/a:1").model_copy(update={"aliases": ["latest", "prod"], "tags": ["fine-tune"],
                                                            "base_model": "minilm"})
    frame = browse.table([version])
    assert list(frame["labels"]) == ["@prod, @latest, fine-tune"]
    settings = browse.columns([version])
    assert settings["labels"]["width"] > browse.LABELS_MAX_PX
    assert settings["version"]["width"] >= browse.VERSION_MIN_PX  # the version column keeps its room in the table
    assert sum(settings[name]["width"] for name in frame.columns) <= browse.TABLE_PX
    # beside the widest base model column, as before: the most the table has room for
    wide = version.model_copy(update={"base_model": "x" * 60})
    assert browse.widths([wide]).labels == browse.LABELS_MAX_PX
    # two short tags beside room to spare, shown (they were '@latest +2': a dashboard walk, session 48), and not
    # where the page's names need the room
    tagged = version.model_copy(update={"aliases": ["latest"], "tags": ["baseline", "r64"]})
    assert list(browse.table([tagged])["labels"]) == ["@latest, baseline, r64"]
    long_name = "a-rather-long-adapter-name-of-sixty-characters-or-so-indeed"
    named = tagged.model_copy(update={"name": long_name, "ref": f"alice/{long_name}:1"})
    assert browse.widths([named]).labels == browse.WIDTHS["labels"]  # the name needs the room: the tags stay '+2'
    assert list(browse.table([named])["labels"]) == ["@latest +2"]


def test_yanked_versions_are_listed_when_asked_and_labelled(registry: dict[str, Any], tmp_path: Any) -> None:
    """`vera ls --include-yanked` had no box on Browse (a walk in a browser, session 40): ticked, yanked versions
    are listed, labelled yanked, and the caption says they are included; left unticked, they stay out."""
    with RegistryClient(registry["url"]) as client:
        client.publish(make_adapter(tmp_path / "gone", seed=9), "carol/gone", base_model="tiny-llama")
        client.yank("carol/gone:1", yanked=True)
    default = page("browse", registry)
    assert "carol/gone" not in " ".join(map(str, default.dataframe[0].value["version"]))
    shown = page("browse", registry, **{browse.APPLIED_FORM: {"yanked": True}})
    assert not shown.exception and "yanked versions included" in texts(shown)
    rows = shown.dataframe[0].value.set_index("version")
    [gone] = [v for v in rows.index if "carol/gone" in str(v)]
    assert str(rows.loc[gone, "labels"]).startswith("yanked")
    assert browse.choices({**browse.FORM_DEFAULTS, "yanked": True})["include_yanked"] is True
    assert browse.choices(browse.FORM_DEFAULTS)["include_yanked"] is None


def test_the_newest_version_of_each_adapter_is_one_toggle_and_in_the_url(registry: dict[str, Any],
                                                                          tmp_path: Any) -> None:
    """A walk in a browser (sessions 40-41): Browse listed versions, not adapters (MLflow's and the Hub's model lists
    show one row a model). The toggle beside Filter and sort lists each adapter's newest matching version, says
    'adapters match', applies at once and goes into the URL; a link with latest=true opens it on."""
    with RegistryClient(registry["url"]) as client:
        for seed in (11, 12):
            client.publish(make_adapter(tmp_path / f"two{seed}", seed=seed), "dana/two", base_model="tiny-llama")
    try:
        at = page("browse", registry, query={"owner": "dana"})
        assert "2 versions match (owner dana)" in texts(at)
        [toggle] = [t for t in at.toggle if t.label == browse.LATEST_LABEL]
        assert toggle.value is False
        toggle.set_value(True).run()
        assert not at.exception
        assert "1 adapter matches (owner dana, the newest matching version of each adapter)" in texts(at)
        assert [str(v) for v in at.dataframe[0].value["version"]] == [navigation.version_link("dana/two:2")]
        assert dict(at.query_params) == {"owner": "dana", "latest": "true"}
        # Apply keeps it on (the form does not hold it), Clear filters turns it off
        filter_form(at)
        apply(at)
        assert "the newest matching version of each adapter" in texts(at)
        linked = page("browse", registry, query={"latest": "true"})
        assert [t.value for t in linked.toggle if t.label == browse.LATEST_LABEL] == [True]
        assert "4 adapters match (the newest matching version of each adapter)" in texts(linked)
        next(b for b in linked.button if b.label == "Clear filters").click()
        linked.run()
        # (every version, as the page read them last: its reads are cached a few seconds across sessions)
        assert "versions match;" in texts(linked) and dict(linked.query_params) == {}
        assert [t.value for t in linked.toggle if t.label == browse.LATEST_LABEL] == [False]
    finally:
        with RegistryClient(registry["url"]) as client:
            for number in (1, 2):
                client.delete(f"dana/two:{number}")

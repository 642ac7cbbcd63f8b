"""How the dashboard's tables show their cells (web_ui/tables.py): a link cut to its column with '…' while it still
opens the whole reference, a missing value as '—', sizes as formats.size writes them ('6.1 KB'); then the pages
(AppTest against a real registry) with a name too long for its column and a version without accuracy."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from registry.client import RegistryClient
from registry.domain.training_spec import training_spec
from registry.services.jobs import Jobs
from registry.services.registry import Registry
from registry.store.blobs import FsspecBlobStore
from registry.store.database import Database
from tests.registry.adapters import make_adapter
from tests.registry.servers import registry_in_thread
from tests.web_ui.test_pages import page, shown
from web_ui import activity, browse, compare, formats, navigation, tables

LONG = "alice/sentiment-analysis-of-product-reviews-in-english-and-german-v3"  # 68 characters: cut everywhere


@pytest.mark.parametrize(("value", "width", "label"), [
    ("adapter?ref=alice/x:1", 200, "alice/x:1"),
    (navigation.version_link(LONG + ":1"), 200, LONG[:25] + "…"),
    ("adapter?ref=alice/x%40y", 200, "alice/x@y"),  # a link's text as it reads, not as the URL encodes it
    ("acme", 200, "acme"),  # an Activity target that is no adapter: its text
], ids=["whole", "cut", "decoded", "not-a-link"])
def test_a_link_cell_names_its_reference_whole_or_cut_with_an_ellipsis(value: str, width: int, label: str) -> None:
    assert tables.link_label(value, width) == label
    assert formats.cell_width(label) <= width


def test_only_links_of_a_fixed_width_without_display_text_are_cut() -> None:
    columns = {"version": navigation.version_column(150), "auto": st.column_config.LinkColumn(),
               "job": st.column_config.LinkColumn(display_text=r"train\?job=(\d+)", width=60),
               "base model": st.column_config.TextColumn(width=90)}
    assert tables.cut_links(columns) == {"version": 150}


def small_table() -> None:
    import pandas as pd
    import streamlit as st

    from web_ui import navigation, tables

    frame = pd.DataFrame({"version": [navigation.version_link("alice/" + "n" * 60 + ":1"),
                                      navigation.version_link("a/b:2")],
                          "stored": [6_100, 120_008], "accuracy": [None, 0.5]})
    tables.show(frame, sizes=("stored",), hide_index=True, column_config={
        "version": navigation.version_column(150), "accuracy": st.column_config.NumberColumn(format="%.3f")})
    tables.show(pd.DataFrame({"field": ["epochs", "seed"], "value": ["0.5000", None]}), hide_index=True)


def test_a_table_draws_sizes_cut_links_and_dashes_and_keeps_its_data() -> None:
    at = AppTest.from_function(small_table).run()
    assert not at.exception
    styled, plain = at.dataframe
    assert list(styled.value["version"]) == [navigation.version_link("alice/" + "n" * 60 + ":1"),
                                             "adapter?ref=a/b:2"]  # a click opens the whole reference
    assert list(styled.value["stored"]) == [6_100, 120_008]  # a click on the header sorts by bytes
    drawn = shown(styled)
    assert list(drawn["version"]) == ["alice/" + "n" * 12 + "…", "a/b:2"]  # 19 characters in 150 px
    assert list(drawn["stored"]) == ["6.1 KB", "120.0 KB"]  # not Streamlit's '6.1KB'
    assert [d.proto.placeholder for d in at.dataframe] == ["—", "—"]  # a missing value, not a grey 'None'
    assert shown(plain).empty and plain.value["value"].isna().tolist() == [False, True]  # sent as it is


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A registry holding a version whose name is too long for any link column and has no accuracy, one with a
    short name and an accuracy, and a queued job (no worker runs it: no duration, no metrics)."""
    root = tmp_path_factory.mktemp("tables")
    with registry_in_thread(f"sqlite:///{root / 'r.db'}", root / "blobs") as url, RegistryClient(url) as client:
        client.publish(make_adapter(root / "long", seed=1), LONG, base_model="tiny-llama")
        client.publish(make_adapter(root / "short", seed=2), "alice/short", base_model="tiny-llama",
                       metrics={"test": {"accuracy": 0.75}, "final_eval": {"loss": 0.5}})
        client.submit_job("alice/queued", training_spec(demo=True, epochs=0.5))
        done = client.submit_job(LONG, training_spec(demo=True, epochs=0.5), priority=100)
        queue = Jobs(Registry(Database(f"sqlite:///{root / 'r.db'}"), FsspecBlobStore(str(root / "blobs"))))
        queue.claim("test-worker")
        queue.finish(done.id, "test-worker", status="succeeded", result_version=(LONG, 1))  # published LONG:1
        queue.registry.db.engine.dispose()
        yield {"url": url, "token": "", "versions": {v.ref: v for v in client.list_versions().items}}


def test_browse_cuts_a_long_name_writes_sizes_and_a_dash_for_no_accuracy(registry: dict[str, Any]) -> None:
    at = page("browse", registry)
    assert not at.exception
    table = at.dataframe[0]
    data, drawn = table.value.set_index("version"), shown(table).set_index(table.value["version"])
    link = navigation.version_link(f"{LONG}:1")
    width = browse.columns(list(registry["versions"].values()))["version"]["width"]
    assert drawn.loc[link, "version"] == formats.fit(f"{LONG}:1", width) and drawn.loc[link, "version"].endswith("…")
    assert drawn.loc[navigation.version_link("alice/short:1"), "version"] == "alice/short:1"  # whole
    for ref, version in registry["versions"].items():
        assert drawn.loc[navigation.version_link(ref), "stored"] == formats.size(version.stored_bytes)
        assert data.loc[navigation.version_link(ref), "stored"] == version.stored_bytes
    assert pd.isna(data.loc[link, "accuracy"]) and table.proto.placeholder == "—"


def test_compare_cuts_a_long_name_writes_sizes_and_a_dash_for_no_accuracy(registry: dict[str, Any]) -> None:
    at = page("compare", registry, query={"refs": f"{LONG}:1,alice/short:1"})
    assert not at.exception
    table = at.dataframe[0]
    versions = [registry["versions"][f"{LONG}:1"], registry["versions"]["alice/short:1"]]
    assert list(shown(table)["version"]) == [formats.fit(f"{LONG}:1", compare.version_width(versions)),
                                             "alice/short:1"]
    assert shown(table)["version"][0].endswith("…")
    assert list(shown(table)["stored"]) == [formats.size(v.stored_bytes) for v in versions]
    assert table.value[["accuracy", "eval loss"]].iloc[0].isna().all() and table.proto.placeholder == "—"


def test_activity_cuts_a_long_target_with_an_ellipsis(registry: dict[str, Any]) -> None:
    at = page("activity", registry, query={"adapter": LONG})
    assert not at.exception
    table = at.dataframe[0]
    published = list(table.value["target"]).index(navigation.version_link(f"{LONG}:1"))  # (its job's events too)
    assert shown(table)["target"][published] == formats.fit(f"{LONG}:1", activity.TARGET_PX[1])
    assert shown(table)["target"][published].endswith("…")


@pytest.mark.parametrize(("name", "query"), [("browse", {}), ("compare", {"refs": f"{LONG}:1,alice/short:1"}),
                                             ("adapter", {"ref": f"{LONG}:1"}), ("activity", {}), ("train", {})])
def test_every_table_shows_a_missing_value_as_a_dash(registry: dict[str, Any], name: str,
                                                     query: dict[str, str]) -> None:
    at = page(name, registry, query=query)
    assert not at.exception and at.dataframe
    assert {d.proto.placeholder for d in at.dataframe} == {"—"}


def test_a_queued_job_has_no_duration_or_metrics_and_says_so_with_dashes(registry: dict[str, Any]) -> None:
    at = page("train", registry)
    rows = next(d.value for d in at.dataframe if "status" in d.value.columns).set_index("publishes")
    row = rows.loc["alice/queued"]
    assert row["status"] == "queued" and row["duration"] == "—"
    assert row[["test accuracy", "eval loss", "result"]].isna().all()  # drawn as the placeholder, '—'


def test_the_jobs_table_cuts_a_long_result_with_an_ellipsis(registry: dict[str, Any]) -> None:
    from web_ui.jobs import RESULT_PX

    at = page("train", registry)
    table = next(d for d in at.dataframe if "status" in d.value.columns)
    # (the publishes column cuts a long name too: jobs.PUBLISHES_PX)
    done = next(i for i, name in enumerate(table.value["publishes"]) if LONG.startswith(name.removesuffix("…")))
    assert table.value["result"][done] == navigation.version_link(f"{LONG}:1")  # the link stays whole
    assert shown(table)["result"][done] == formats.fit(f"{LONG}:1", RESULT_PX) and \
        shown(table)["result"][done].endswith("…")  # its label cut to the column (it was clipped mid-letter)


@pytest.mark.parametrize(("rows", "height"), [(2, 3 * 35 + 3), (12, 13 * 35 + 3), (500, 41 * 35 + 3)])
def test_a_whole_table_is_tall_enough_for_every_row(rows: int, height: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Streamlit's default height shows about ten rows and scrolls the rest, cutting the last one in half: a
    ``whole`` table (the Adapter page's metrics) asks for every row's 35 px and the header's, up to 40 rows."""
    asked: list[dict[str, Any]] = []
    monkeypatch.setattr(st, "dataframe", lambda data, **options: asked.append(options))
    tables.show(pd.DataFrame({"metric": [f"m{i}" for i in range(rows)], "value": range(rows)}), whole=True)
    tables.show(pd.DataFrame({"metric": ["m"]}))
    assert asked[0]["height"] == height and "height" not in asked[1]

"""The dashboard's views of search, downloads, visibility, lineage, editing, audit events and the caller, through
streamlit.testing.v1.AppTest against a real registry server (tokens required): alice publishes a base, a child
fine-tuned from it and a grandchild, a private adapter and 27 filler versions (so a metric sort has pages to cross);
bob reads only."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from streamlit.testing.v1 import AppTest

from registry.client import RegistryClient
from registry.domain.errors import NotFound
from registry.domain.schemas import AdapterInfo, LineageEdge, LineageGraph, LineageNode, WhoAmI
from registry.domain.words import ci_run
from registry.services.tokens import create_token
from registry.store.database import Database
from registry.store.models import Adapter, AdapterVersion
from tests.registry.adapters import make_adapter
from tests.registry.servers import registry_in_thread
from tests.web_ui.test_pages import field, filter_form, page, texts
from web_ui import adapter, app, browse, editing, lineage, navigation, tables

FILLERS = 27  # more than the smallest page (25)
SHA = "1a2b3c4d" * 5
#: The fixture's versions (the editing tests publish their own adapters beside them).
SEEDED = {"base:1", "child:1", "grandchild:1", "secret:1", *(f"filler:{i}" for i in range(1, FILLERS + 1))}


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("meta")
    url = f"sqlite:///{root / 'r.db'}"
    with registry_in_thread(url, root / "blobs", VERA_REQUIRE_TOKENS="true", VERA_DOWNLOAD_FLUSH_S="0.2") as base:
        db = Database(url)
        token = create_token(db, owner="alice", scopes=["read", "publish"])[1]
        bob = create_token(db, owner="bob", scopes=["read"])[1]
        db.engine.dispose()
        folder = make_adapter(root / "a", seed=1, r=4)
        with RegistryClient(base, token) as client:
            def publish(name: str, accuracy: float, **extra: Any) -> None:
                client.publish(folder, name, base_model="tiny-llama", metrics={"test": {"accuracy": accuracy}},
                               **extra)

            publish("alice/base", 0.70)  # the oldest: off the newest page, first by accuracy
            publish("alice/child", 0.95, parent="alice/base:1", code_revision="abc123")
            publish("alice/grandchild", 0.85, parent="alice/child:1")
            publish("alice/secret", 0.99, visibility="private")
            for i in range(FILLERS):
                publish("alice/filler", 0.5 + i / 1000)
            client.download("alice/child:1", "adapter_model.safetensors")
            for _ in range(100):  # downloads are counted in batches (every 0.2 s here)
                if client.get("alice/child:1").downloads:
                    break
                time.sleep(0.1)
        db = Database(url)  # as a trusted publisher's token records it (tests/registry/test_trusted_publishing.py)
        with db.session() as s:
            grandchild = select(AdapterVersion.id).join(Adapter).where(Adapter.name == "grandchild").scalar_subquery()
            s.execute(update(AdapterVersion).where(AdapterVersion.id == grandchild).values(published_via={
                "publisher": "nlp-main", "issuer": "https://token.actions.githubusercontent.com",
                "subject": "repo:acme/nlp:ref:refs/heads/main",
                "claims": {"repository": "acme/nlp", "sha": SHA, "run_id": "1234", "actor": "alice"}}))
        db.engine.dispose()
        yield {"url": base, "token": token, "bob": bob, "root": root}


def click(at: AppTest, label: str) -> AppTest:
    next(b for b in at.button if b.label == label).click()
    return at.run()


def versions(at: AppTest) -> list[str]:
    return [v.removeprefix("adapter?ref=") for v in at.dataframe[0].value["version"]]


def test_the_filter_box_sends_an_mlflow_filter_to_the_registry(registry: dict[str, Any]) -> None:
    at = page("browse", registry)
    field(filter_form(at), "Filter").set_value("metrics.test.accuracy > 0.9 and r <= 8")
    click(at, "Apply")
    assert not at.exception and sorted(versions(at)) == ["alice/child:1", "alice/secret:1"]
    assert "2 versions match" in texts(at)
    field(filter_form(at), "Filter").set_value("metrics.test.accuracy >")
    click(at, "Apply")
    assert not at.exception and not at.dataframe
    [error] = at.error
    assert error.value.startswith("The registry refused this filter or metric sort: filter, at character")
    assert "expected a literal" in error.value


def test_sort_by_metric_orders_every_page_on_the_server(registry: dict[str, Any]) -> None:
    at = page("browse", registry)
    field(filter_form(at), "Rows per page").set_value(25)
    click(at, "Apply")
    assert "alice/base:1" not in versions(at)  # newest first: the oldest is on a later page
    field(filter_form(at), "Sort by metric").set_value("test.accuracy")
    click(at, "Apply")
    assert versions(at)[:4] == ["alice/secret:1", "alice/child:1", "alice/grandchild:1", "alice/base:1"]
    frame = at.dataframe[0].value
    assert list(frame["test.accuracy"])[:4] == pytest.approx([0.99, 0.95, 0.85, 0.70])  # the sorted metric shown
    assert "sorted by test.accuracy, highest first, over every page" in texts(at)
    field(filter_form(at), "Sort by metric").set_value("+test.accuracy")
    click(at, "Apply")
    assert versions(at)[0] == "alice/filler:1"  # lowest first: 0.5
    assert "sorted by test.accuracy, lowest first, over every page" in texts(at)  # issue 20, walk 2
    click(at, "Next page")
    assert versions(at)[-1] == "alice/secret:1"  # the highest, on the last page


@pytest.mark.parametrize(("typed", "sort"), [("test.accuracy", "-metrics.test.accuracy"),
                                             ("-metrics.loss", "-metrics.loss"), ("+loss", "metrics.loss"),
                                             ("  ", None)], ids=["plain", "prefixed", "lowest", "empty"])
def test_metric_sort_text(typed: str, sort: str | None) -> None:
    assert browse.metric_sort(typed) == sort


def test_browse_shows_downloads_and_locks_private_adapters(registry: dict[str, Any]) -> None:
    at = page("browse", registry)
    field(filter_form(at), "Filter").set_value("name in ('child', 'secret', 'base')")
    click(at, "Apply")
    frame = at.dataframe[0].value.set_index("version")
    assert frame.loc["adapter?ref=alice/child:1", "downloads"] == 1
    assert frame.loc["adapter?ref=alice/base:1", "downloads"] == 0
    assert dict(frame["labels"]) == {"adapter?ref=alice/secret:1": f"{browse.LOCK}, @latest",  # private: locked
                                     "adapter?ref=alice/child:1": "@latest", "adapter?ref=alice/base:1": "@latest"}


def graph_spec(at: AppTest) -> str:
    charts = at.get("graphviz_chart")
    assert len(charts) == 1
    return str(charts[0].proto.spec)


def test_the_lineage_graph_shows_both_ways_with_links_and_the_version_highlighted(registry: dict[str, Any]) -> None:
    at = page("adapter", registry, query={"ref": "alice/child:1"}, adapter_tab="Lineage")
    assert not at.exception
    spec = graph_spec(at)
    assert '"alice/base:1" -> "alice/child:1";' in spec and '"alice/child:1" -> "alice/grandchild:1";' in spec
    assert 'URL="adapter?ref=alice/base:1"' in spec and 'URL="adapter?ref=alice/grandchild:1"' in spec
    [own] = [line for line in spec.splitlines() if line.startswith('  "alice/child:1" [')]
    assert f'fillcolor="{lineage.SELF_COLOUR}"' in own
    assert spec.count(lineage.SELF_COLOUR) == 1
    shown = texts(at)
    assert "**Parent versions**: [alice/base:1](adapter?ref=alice/base:1)" in shown
    assert "**Derived versions**: [alice/grandchild:1](adapter?ref=alice/grandchild:1)" in shown
    assert "**Fine-tuned from**: [alice/base:1](adapter?ref=alice/base:1)" in shown
    assert "**Code revision**: `abc123`" in shown
    alone = page("adapter", registry, query={"ref": "alice/secret:1"}, adapter_tab="Lineage")
    # (a new user's walk: "Came from: nothing recorded" over "Where it came from", then facts, read as a contradiction)
    assert not alone.get("graphviz_chart") and "**Parent versions**: none recorded" in texts(alone)
    assert "Published directly" in texts(alone) and "The CI run that published it" not in texts(alone)
    by_ci = texts(page("adapter", registry, query={"ref": "alice/grandchild:1"}, adapter_tab="Lineage"))
    assert "**The CI run that published it**" in by_ci
    assert f"**Commit**: [`{SHA}`](https://github.com/acme/nlp/commit/{SHA})" in by_ci
    assert "**Triggered by**: `alice`" in by_ci and "**Trusted publisher**: `nlp-main`" in by_ci
    with RegistryClient(registry["url"], registry["token"]) as client:  # the versions table says CI published it
        assert adapter.published_by(client.get("alice/grandchild:1")) == "alice (CI: nlp-main)"
        assert adapter.published_by(client.get("alice/child:1")) == "alice"


def test_lineage_facts_read_as_a_list() -> None:
    items = lineage.facts({"job_id": 7, "dataset_sha256": "ab" * 32, "dataset_bytes": 12_345,
                           "code_revision": "vera-registry 1.0 git 1234abc", "hub_repo": "acme/polarity",
                           "hub_commit": "c0ffee", "parent_deleted": "alice/old:2", "extra": [1, 2]})
    assert [(i.what, i.detail) for i in items] == [
        ("Fine-tuned from", "alice/old:2, since deleted"), ("Training job", "[job 7](train?job=7)"),
        ("Dataset", f"SHA-256 `{'ab' * 32}`, 12.3 KB"), ("Code revision", "`vera-registry 1.0 git 1234abc`"),
        ("Pulled from the Hub", "`acme/polarity` at commit `c0ffee`"), ("extra", "1, 2")]
    assert lineage.facts({"parent_private": True})[0].detail == "a private version this token may not read"
    copied = lineage.facts({"copied_from": "alice/staging:3", "parent": "alice/base:1"})
    assert [(i.what, i.detail) for i in copied] == [
        ("Copy of", f"[alice/staging:3]({navigation.version_link('alice/staging:3')})"),
        ("Fine-tuned from", f"[alice/base:1]({navigation.version_link('alice/base:1')})")]
    assert [(i.what, i.detail) for i in lineage.facts({"copied_from_deleted": "a/b:1", "copied_from_private": True})
            ] == [("Copy of", "a/b:1, since deleted")]
    [stated] = lineage.facts({"code_revision": "abc` [Sign in](https://evil.example) `def"})  # a caller's text
    assert stated.detail == "`` abc` [Sign in](https://evil.example) `def ``"  # one code span: never a link
    [elsewhere] = lineage.facts({"copied_from": "https://staging.example.org/a/b:1"})  # another registry's: no link
    assert elsewhere.detail == "`https://staging.example.org/a/b:1` (another registry)"
    via = {"publisher": "acme-main", "issuer": "https://token.actions.githubusercontent.com",
           "subject": "repo:acme/x:ref:refs/heads/main",
           "claims": {"repository": "acme/x_y", "ref": "refs/heads/main", "sha": "0123456789abcdef", "run_id": "42",
                      "workflow": "*publish*"}}
    [ci] = lineage.facts({"published_via": via})
    # the run has its own labelled section below (a new user's walk read it twice, the first time as one dense line)
    assert (ci.what, ci.detail) == ("Published by CI", "a run of trusted publisher `acme-main` (below)")
    # `vera show`'s words: the commit whole (cut to 12 characters, it could not be pasted into a published_via filter)
    assert ci_run(via) == ("acme/x_y refs/heads/main at 0123456789abcdef, workflow *publish*, run 42 (trusted "
                           "publisher acme-main, https://token.actions.githubusercontent.com)")
    assert lineage.code_span("a`b") == "`` a`b ``" and lineage.code_span("https://x.example") == "`https://x.example`"
    assert lineage.code_span("") == "(empty)"  # an empty claim was drawn as two backticks


def test_the_ci_run_is_labelled_with_the_whole_commit_and_links_to_its_pages() -> None:
    """A new user's walk: one sentence of seven unlabelled code spans, the commit cut to 12 characters, the run not
    a link, who triggered it not shown."""
    via = {"publisher": "nlp-main", "issuer": "https://token.actions.githubusercontent.com", "subject": "repo:x",
           "claims": {"repository": "acme/nlp", "ref": "refs/heads/main", "sha": SHA, "workflow": "publish",
                      "run_id": "1234", "actor": "alice", "event_name": "push", "runner_environment": "github-hosted"}}
    assert [(i.what, i.detail) for i in lineage.ci_details(via)] == [
        ("Repository", "[`acme/nlp`](https://github.com/acme/nlp)"), ("Ref", "`refs/heads/main`"),
        ("Commit", f"[`{SHA}`](https://github.com/acme/nlp/commit/{SHA})"), ("Workflow", "`publish`"),
        ("Run", "[`1234`](https://github.com/acme/nlp/actions/runs/1234)"), ("Triggered by", "`alice`"),
        ("Event", "`push`"), ("Runner environment", "`github-hosted`"), ("Trusted publisher", "`nlp-main`"),
        ("Issuer", "`https://token.actions.githubusercontent.com`")]
    gitlab = {"publisher": "p", "issuer": "https://gitlab.com", "claims": {
        "project_path": "group/sub/proj", "sha": SHA, "pipeline_id": "99", "user_login": "bob"}}
    assert {i.what: i.detail for i in lineage.ci_details(gitlab)} == {
        "Repository": "[`group/sub/proj`](https://gitlab.com/group/sub/proj)",
        "Commit": f"[`{SHA}`](https://gitlab.com/group/sub/proj/-/commit/{SHA})",
        "Run": "[`99`](https://gitlab.com/group/sub/proj/-/pipelines/99)", "Triggered by": "`bob`",
        "Trusted publisher": "`p`", "Issuer": "`https://gitlab.com`"}


@pytest.mark.parametrize("claims", [
    {"repository": "acme/nlp/../../evil.example", "sha": SHA, "run_id": "1"},  # not owner/name: no link at all
    {"repository": "acme/nlp", "sha": "javascript:alert(1)", "run_id": "1 or 2"},  # only the repository links
])
def test_only_values_of_the_hosts_forms_become_links(claims: dict[str, str]) -> None:
    via = {"publisher": "p", "issuer": "https://token.actions.githubusercontent.com", "claims": claims}
    details = {i.what: i.detail for i in lineage.ci_details(via)}
    links = [what for what, detail in details.items() if detail.startswith("[")]
    assert links == (["Repository"] if claims["repository"] == "acme/nlp" else [])
    assert details["Commit"] == lineage.code_span(claims["sha"])
    elsewhere = {**via, "issuer": "https://ghe.example.org"}  # a self-hosted issuer: its pages' addresses unknown
    assert not any(i.detail.startswith("[") for i in lineage.ci_details(elsewhere))


def test_lineage_dot_marks_yanked_versions() -> None:
    when = datetime(2026, 11, 30, tzinfo=UTC)
    nodes = [LineageNode(ref=f"a/b:{v}", owner="a", name="b", version=v, depth=v - 1, yanked=v == 2,
                         published_by="a", created_at=when, lineage={}) for v in (1, 2)]
    spec = lineage.dot(LineageGraph(ref="a/b:1", nodes=nodes, edges=[LineageEdge(parent="a/b:1", child="a/b:2")],
                                    max_depth=20, max_nodes=200, truncated=False))
    assert 'label="a/b:2 (yanked)\\na, 2026-11-30"' in spec and 'style="rounded,filled,dashed"' in spec


def test_the_adapter_page_says_private_or_public_and_counts_downloads(registry: dict[str, Any]) -> None:
    private = texts(page("adapter", registry, query={"ref": "alice/secret:1"}))
    assert ":orange-badge[:material/lock: private]" in private
    public = texts(page("adapter", registry, query={"ref": "alice/child:1"}))
    assert ":green-badge[:material/public: public]" in public and ":material/download: 1 download]" in public


def test_a_writer_edits_description_tags_and_card(registry: dict[str, Any]) -> None:
    at = page("adapter", registry, query={"ref": "alice/grandchild:1"}, adapter_tab="Edit")
    click(at, "Save version")  # nothing typed: a warning, not a green success (a team lead's walk, s16)
    assert [w.value for w in at.warning if w.value == "Nothing changed."] and not at.success
    at.text_area(key="edit-description-alice/grandchild:1").set_value("Grandchild, tuned twice.")
    at.text_input(key="edit-tags-alice/grandchild:1").set_value("prod-ready, wip")
    click(at, "Save version")
    assert not at.exception
    assert any(s.value == "Saved alice/grandchild:1: description, +prod-ready, +wip." for s in at.success)
    assert ":blue-badge[prod-ready] :blue-badge[wip]" in texts(at)  # the header shows it at once
    at.text_input(key="edit-tags-alice/grandchild:1").set_value("prod-ready")
    click(at, "Save version")
    assert any(s.value == "Saved alice/grandchild:1: -wip." for s in at.success)
    at.text_area(key="edit-card-alice/grandchild").set_value("# Grandchild\n\nA card.")
    click(at, "Save adapter")
    assert any(s.value == "Saved alice/grandchild: model card." for s in at.success)
    shown = in_order(at)  # under the adapter's form, where the click was (at the top it was out of view: a walk)
    assert shown.index("Alias") < shown.index("success") < shown.index("New name")
    assert at.tabs[0].label == "Model card"
    with RegistryClient(registry["url"], registry["token"]) as client:
        info = client.get("alice/grandchild:1")
        assert (info.description, info.tags) == ("Grandchild, tuned twice.", ["prod-ready"])
        assert client.adapter("alice/grandchild").card == "# Grandchild\n\nA card."


def test_the_adapters_description_shows_where_the_version_has_none(registry: dict[str, Any]) -> None:
    """A dashboard walk (session 48): the adapter's description (Edit, The adapter) was saved and shown nowhere
    but in its box: the header showed the version's only."""
    with RegistryClient(registry["url"], registry["token"]) as client:
        client.publish(registry["root"] / "a", "alice/described", base_model="tiny-llama")
        client.publish(registry["root"] / "a", "alice/described", base_model="tiny-llama", description="Its own.")
        client.update_adapter("alice/described", description="Sentiment of product reviews.")
    bare = page("adapter", registry, query={"ref": "alice/described:1"})
    assert not bare.exception and "Sentiment of product reviews." in [m.value for m in bare.markdown]
    assert "(the description of alice/described; this version has none of its own)" in [c.value for c in
                                                                                           bare.caption]
    own = page("adapter", registry, query={"ref": "alice/described:2"})
    assert "Its own." in [m.value for m in own.markdown] and "Sentiment of product reviews." not in texts(own)


def test_a_long_description_shows_its_first_lines_and_the_rest_behind_show_more(registry: dict[str, Any]) -> None:
    """A newcomer's walk: a long version description pushed the version's numbers and tabs out of view."""
    long = "\n".join(f"Line {i} of what was done." for i in range(1, 31))
    with RegistryClient(registry["url"], registry["token"]) as client:
        client.publish(registry["root"] / "a", "alice/wordy", base_model="tiny-llama", description=long)
    at = page("adapter", registry, query={"ref": "alice/wordy:1"})
    assert not at.exception
    head = next(m.value for m in at.markdown if m.value.startswith("Line 1 "))
    assert head == "\n".join(f"Line {i} of what was done." for i in range(1, adapter.DESCRIPTION_LINES + 1))
    [more] = [e for e in at.expander if e.label == "Show more"]
    assert more.markdown[0].value == "\n".join(f"Line {i} of what was done." for i in
                                               range(adapter.DESCRIPTION_LINES + 1, 31))
    short = page("adapter", registry, query={"ref": "alice/child:1"})  # no description: nothing folded
    assert not [e for e in short.expander if e.label == "Show more"]


LONG_LINE = "word " * 200
FENCE = "\n".join(["Before:", "```", *["code"] * 8, "```", "after", "and more", "and more still"])


@pytest.mark.parametrize(("text", "parts"), [
    ("One line.", ("One line.", "")),
    ("\n".join("abcdef"), ("\n".join("abcdef"), "")),  # one short line more: shown, not folded alone
    (LONG_LINE, (LONG_LINE[:adapter.DESCRIPTION_CHARS - 1] + " …",  # cut at the space before the 500th character
                 "… " + LONG_LINE[adapter.DESCRIPTION_CHARS:].strip())),
    (FENCE, ("\n".join(["Before:", "```", *["code"] * 8, "```"]), "after\nand more\nand more still")),
], ids=["short", "six-lines", "long-paragraph", "code-block-whole"])
def test_description_parts(text: str, parts: tuple[str, str]) -> None:
    assert adapter.description_parts(text) == parts


def test_a_writer_sets_and_removes_properties_and_the_page_shows_them(registry: dict[str, Any]) -> None:
    publish_one(registry, "propertied")
    ref = "alice/propertied:1"
    at = page("adapter", registry, query={"ref": ref}, adapter_tab="Edit")
    at.text_area(key=f"edit-properties-{ref}").set_value("validation=passed\n\nreviewer = bob [lead](x)\n")
    click(at, "Save version")
    assert not at.exception
    assert any(s.value == f"Saved {ref}: validation=passed, reviewer= bob [lead](x)." for s in at.success)
    shown = next(d.value for d in at.dataframe if list(d.value.columns) == ["property", "value"])
    assert shown.to_dict("list") == {"property": ["reviewer", "validation"], "value": [" bob [lead](x)", "passed"]}
    at.text_area(key=f"edit-properties-{ref}").set_value("validation=passed")
    click(at, "Save version")
    assert any(s.value == f"Saved {ref}: -reviewer." for s in at.success)
    at.text_area(key=f"edit-properties-{ref}").set_value("validation passed")  # no '=': nothing is sent
    click(at, "Save version")
    assert [w.value for w in at.warning if "is not KEY=VALUE" in w.value] and not at.success
    at.text_area(key=f"edit-properties-{ref}").set_value("validation=passed\nvalidation=failed")
    click(at, "Save version")
    assert [w.value for w in at.warning if "Property 'validation' is given more than once" in w.value]
    at.text_area(key=f"edit-properties-{ref}").set_value("Bad Key=1")  # the registry's refusal, shown
    click(at, "Save version")
    [refused] = at.error  # the registry's refusal, and that nothing of the save stayed
    assert refused.value.startswith("Nothing saved: Property key 'Bad Key' is not a valid name")
    with RegistryClient(registry["url"], registry["token"]) as client:
        assert client.get(ref).properties == {"validation": "passed"}


def test_a_refused_edit_shows_the_registrys_message(registry: dict[str, Any]) -> None:
    at = page("adapter", registry, query={"ref": "alice/base:1"}, adapter_tab="Edit")
    at.text_input(key="edit-tags-alice/base:1").set_value("Not A Tag!")
    click(at, "Save version")
    assert not at.exception
    [error] = at.error
    assert "Not A Tag!" in error.value
    with RegistryClient(registry["url"], registry["token"]) as client:
        assert client.get("alice/base:1").tags == []


def test_visibility_is_changed_from_the_edit_tab(registry: dict[str, Any]) -> None:
    at = page("adapter", registry, query={"ref": "alice/filler:2"}, adapter_tab="Edit")
    at.radio(key="edit-visibility-alice/filler").set_value("private")
    click(at, "Save adapter")
    assert any(s.value == "Saved alice/filler: now private." for s in at.success)
    assert ":orange-badge[:material/lock: private]" in texts(at)
    at.radio(key="edit-visibility-alice/filler").set_value("public")
    click(at, "Save adapter")
    assert ":green-badge[:material/public: public]" in texts(at)


def publish_one(registry: dict[str, Any], name: str, times: int = 1) -> None:
    """``times`` versions of ``alice/name`` (no metrics: left out of the metric sorts above)."""
    with RegistryClient(registry["url"], registry["token"]) as client:
        for _ in range(times):
            client.publish(registry["root"] / "a", f"alice/{name}", base_model="tiny-llama")


def in_order(at: AppTest) -> list[str]:
    """The Edit tab's boxes (by label) and messages (by kind), in page order."""
    return [n.label if n.type == "text_input" else n.type for n in at.main
            if n.type in ("text_input", "success", "warning", "error")]


def test_an_adapter_is_moved_from_the_edit_tab_and_the_page_follows_it(registry: dict[str, Any]) -> None:
    with RegistryClient(registry["url"], registry["token"]) as client:
        client.publish(make_adapter(registry["root"] / "mv", seed=2, r=4), "alice/to-move", base_model="tiny-llama")
    at = page("adapter", registry, query={"ref": "alice/to-move:1"}, adapter_tab="Edit")
    at.text_input(key="edit-move-alice/to-move").set_value("alice/Bad Name")
    at.checkbox(key="edit-move-ok-alice/to-move").check()
    click(at, "Move adapter")
    assert not at.exception
    [error] = at.error
    assert "Bad Name" in error.value  # the registry's refusal, shown; nothing moved
    at.text_input(key="edit-move-alice/to-move").set_value("alice/moved-here")
    with RegistryClient(registry["url"], registry["token"]) as client:
        job = client.submit_job("alice/to-move", {"demo": True}).id  # queued (no worker): retargeted
    click(at, "Move adapter")
    assert not at.exception and not at.error
    [done] = [s for s in at.success if s.value.startswith("Moved alice/to-move to alice/moved-here.")]
    assert f"Jobs {job} publish here now." in done.value
    shown = in_order(at)
    assert shown[shown.index("New name") + 1] == "success"  # under the Move form, not above the forms
    assert at.query_params["ref"] == "alice/moved-here:1"
    with RegistryClient(registry["url"], registry["token"]) as client:
        assert client.get("alice/moved-here:1").name == "moved-here"


def test_a_move_is_sent_only_once_confirmed(registry: dict[str, Any]) -> None:
    """Enter in the New name box submits the Move form: without its checkbox ticked, nothing is moved."""
    publish_one(registry, "stay-put")
    at = page("adapter", registry, query={"ref": "alice/stay-put:1"}, adapter_tab="Edit")
    at.text_input(key="edit-move-alice/stay-put").set_value("alice/gone-away")
    click(at, "Move adapter")
    assert not at.exception and not at.success
    [warning] = at.warning
    assert warning.value == (f"Nothing moved: tick '{editing.MOVE_CONFIRM}' under the New name box, then press Move "
                             "adapter to move alice/stay-put to alice/gone-away.")
    shown = in_order(at)
    assert shown[shown.index("New name") + 1] == "warning"
    assert at.query_params["ref"] == "alice/stay-put:1"
    with RegistryClient(registry["url"], registry["token"]) as client:
        assert client.get("alice/stay-put:1").name == "stay-put"
        with pytest.raises(NotFound):
            client.get("alice/gone-away")


def test_a_move_opened_through_an_alias_says_it_moved(registry: dict[str, Any]) -> None:
    publish_one(registry, "by-alias")
    with RegistryClient(registry["url"], registry["token"]) as client:
        client.set_alias("alice/by-alias:1", "prod")
    at = page("adapter", registry, query={"ref": "alice/by-alias@prod"}, adapter_tab="Edit")
    at.text_input(key="edit-move-alice/by-alias").set_value("alice/by-alias-2")
    at.checkbox(key="edit-move-ok-alice/by-alias").check()
    click(at, "Move adapter")
    assert not at.exception and not at.error
    assert at.query_params["ref"] == "alice/by-alias-2@prod"  # still an alias
    assert at.subheader[0].value == "alice/by-alias-2:1"
    [done] = at.success
    assert done.value.startswith("Moved alice/by-alias to alice/by-alias-2.")
    plain = page("adapter", registry, query={"ref": "alice/by-alias-2"}, adapter_tab="Edit")
    plain.text_input(key="edit-move-alice/by-alias-2").set_value("alice/by-alias-3")
    plain.checkbox(key="edit-move-ok-alice/by-alias-2").check()
    click(plain, "Move adapter")
    assert plain.query_params["ref"] == "alice/by-alias-3"  # no selector: the latest version, as asked
    assert [s.value.split(".")[0] for s in plain.success] == ["Moved alice/by-alias-2 to alice/by-alias-3"]


def test_an_alias_is_pointed_here_moved_and_removed(registry: dict[str, Any]) -> None:
    publish_one(registry, "aliased", times=2)
    at = page("adapter", registry, query={"ref": "alice/aliased:1"}, adapter_tab="Edit")
    assert "**Aliases** of alice/aliased:1: none" in texts(at)
    assert "Remove alias" not in [b.label for b in at.button]  # nothing to remove here
    at.text_input(key="edit-alias-alice/aliased:1").set_value("prod")
    click(at, "Point alias here")
    assert not at.exception
    assert [s.value for s in at.success] == ["alice/aliased@prod now points at alice/aliased:1."]
    shown = in_order(at)
    assert shown[shown.index("Alias") + 1] == "success"  # beside the alias form
    assert "**Aliases** of alice/aliased:1: `@prod`" in texts(at)  # read again after the change
    with RegistryClient(registry["url"], registry["token"]) as client:
        assert client.get("alice/aliased@prod").version == 1

    at = page("adapter", registry, query={"ref": "alice/aliased:2"}, adapter_tab="Edit")
    at.text_input(key="edit-alias-alice/aliased:2").set_value("@prod")  # as a reference writes it
    click(at, "Point alias here")
    assert [s.value for s in at.success] == [
        "alice/aliased@prod now points at alice/aliased:2 (it pointed at alice/aliased:1)."]
    assert "**Aliases** of alice/aliased:2: `@prod`, `@latest`" in texts(at)  # as the header orders them
    assert at.selectbox(key="edit-unalias-alice/aliased:2").options == ["prod"]  # latest is the registry's
    click(at, "Remove alias")
    assert not at.exception
    assert [s.value for s in at.success] == ["Removed alice/aliased@prod (it pointed at alice/aliased:2)."]
    assert "Remove alias" not in [b.label for b in at.button]  # only latest is left
    with RegistryClient(registry["url"], registry["token"]) as client:
        assert client.adapter("alice/aliased").aliases == {"latest": 2}


def test_a_protected_alias_is_marked_and_a_writers_move_of_it_refused(registry: dict[str, Any]) -> None:
    """In an organisation that protects @prod, its writer sees which aliases are protected and whom to ask, and a
    Point alias here of @prod shows the registry's refusal (nothing moves); the organisation's admin is told it may."""
    db = Database(f"sqlite:///{registry['root'] / 'r.db'}")
    carol = create_token(db, owner="carol", scopes=["read", "publish"])[1]
    writer = create_token(db, owner="alice", scopes=["read", "publish"])[1]  # its own whoami, not one cached
    db.engine.dispose()
    with RegistryClient(registry["url"], carol) as admin:
        admin.create_organization("guarded")
        admin.set_member("guarded", "alice", "write")
        for _ in range(2):
            admin.publish(registry["root"] / "a", "guarded/clf", base_model="tiny-llama")
        admin.set_alias("guarded/clf:1", "prod")
        admin.protect_alias("guarded", "prod")
        admin.protect_alias("guarded", "stable")  # protected, but names no version here

    at = page("adapter", {**registry, "token": writer}, query={"ref": "guarded/clf:1"}, adapter_tab="Edit")
    assert not at.exception
    assert "**Aliases** of guarded/clf:1: `@prod` :material/lock: protected" in texts(at)
    [said] = [c.value for c in at.caption if c.value.startswith("guarded protects `@prod`, `@stable`")]
    assert said.startswith("guarded protects `@prod`, `@stable`: only guarded's admins may point or remove them")
    assert "Remove alias" not in [b.label for b in at.button]  # prod is its only alias: not offered to a writer
    assert "Delete this version" not in [b.label for b in at.button]  # prod names it: said instead
    assert any(c.value.startswith("guarded protects @prod, which names guarded/clf:1: only guarded's admins delete "
                                  "it") for c in at.caption)
    assert ":green-badge[@prod]" in texts(at)  # the header says which version is prod
    # the adapter stays public and in place unless an admin changes that: said, not offered and refused after
    assert at.radio(key="edit-visibility-guarded/clf").disabled
    assert "guarded protects @prod, which names a version of it: only guarded's admins make it private." in [
        c.value for c in at.caption]
    assert "Move adapter" not in [b.label for b in at.button]
    assert "guarded protects @prod, which names a version of it: only guarded's admins move or rename it." in [
        c.value for c in at.caption]
    at = page("adapter", {**registry, "token": writer}, query={"ref": "guarded/clf:2"}, adapter_tab="Edit")
    assert "**Aliases** of guarded/clf:2: `@latest`" in texts(at)  # latest is never protected
    assert at.text_input(key="edit-alias-guarded/clf:2").placeholder == "staging"  # not prod: protected for it
    at.text_input(key="edit-alias-guarded/clf:2").set_value("prod")
    click(at, "Point alias here")
    assert not at.exception and not at.success
    assert "The alias 'prod' is protected in guarded: only its admins point it at a version" in texts(at)
    with RegistryClient(registry["url"], carol) as admin:
        assert admin.get("guarded/clf@prod").version == 1  # nothing moved

    owner_view = page("adapter", {**registry, "token": carol}, query={"ref": "guarded/clf:1"}, adapter_tab="Edit")
    assert any(c.value.endswith("you administer it, so you may point, remove, or delete what they name.")
               for c in owner_view.caption)
    assert {"Remove alias", "Delete this version", "Move adapter"} <= {b.label for b in owner_view.button}
    assert not owner_view.radio(key="edit-visibility-guarded/clf").disabled  # its admin's


def test_a_save_whose_visibility_is_refused_after_its_description_was_saved_says_both(
        registry: dict[str, Any]) -> None:
    """Description and visibility are two requests: when the second is refused (here an admin protected the alias
    naming the adapter after the writer's page was drawn), the page says what was saved and what was not, not
    "Nothing saved"."""
    db = Database(f"sqlite:///{registry['root'] / 'r.db'}")
    carol = create_token(db, owner="carol", scopes=["read", "publish"])[1]
    writer = create_token(db, owner="alice", scopes=["read", "publish"])[1]
    db.engine.dispose()
    with RegistryClient(registry["url"], carol) as admin:
        admin.create_organization("halfway")
        admin.set_member("halfway", "alice", "write")
        admin.publish(registry["root"] / "a", "halfway/clf", base_model="tiny-llama")
    at = page("adapter", {**registry, "token": writer}, query={"ref": "halfway/clf:1"}, adapter_tab="Edit")
    at.text_area(key="edit-about-halfway/clf").set_value("Half saved.")
    at.radio(key="edit-visibility-halfway/clf").set_value("private")
    with RegistryClient(registry["url"], carol) as admin:  # meanwhile
        admin.set_alias("halfway/clf:1", "prod")
        admin.protect_alias("halfway", "prod")
    click(at, "Save adapter")
    assert not at.exception and not at.success
    [partly] = [w.value for w in at.warning if w.value.startswith("Saved halfway/clf: description; its visibility "
                                                                  "was not changed: ")]
    assert "protected" in partly and not [e for e in at.error if "Nothing saved" in e.value]
    # whom to ask, in the dashboard's words (a walk's finding, session 31: it named two commands)
    assert partly.endswith("(the Organisations page lists them, under halfway), or have them unprotect it there.")
    assert "vera org" not in partly
    with RegistryClient(registry["url"], carol) as admin:
        info = admin.adapter("halfway/clf")
        assert (info.description, info.visibility) == ("Half saved.", "public")
        admin.delete("halfway/clf:1")


@pytest.mark.parametrize(("typed", "said"), [
    ("Prod!", "Nothing changed: Alias 'Prod!' is not a valid name: use 1-64 lowercase letters"),
    ("latest", "Nothing changed: 'latest' always points at the newest version that is not yanked; pick another alias."),
], ids=["bad-name", "latest"])
def test_an_alias_the_registry_refuses_shows_its_message(registry: dict[str, Any], typed: str, said: str) -> None:
    at = page("adapter", registry, query={"ref": "alice/base:1"}, adapter_tab="Edit")
    at.text_input(key="edit-alias-alice/base:1").set_value(typed)
    click(at, "Point alias here")
    assert not at.exception and not at.success
    [error] = at.error
    assert error.value.startswith(said)
    shown = in_order(at)
    assert shown[shown.index("Alias") + 1] == "error"
    with RegistryClient(registry["url"], registry["token"]) as client:
        assert client.adapter("alice/base").aliases == {"latest": 1}


def test_a_version_is_yanked_and_unyanked(registry: dict[str, Any]) -> None:
    publish_one(registry, "yankable", times=2)
    at = page("adapter", registry, query={"ref": "alice/yankable:2"}, adapter_tab="Edit")
    assert "stays downloadable by its number, alice/yankable:2" in texts(at)  # what yanking does, by the button
    click(at, "Yank this version")
    assert not at.exception
    assert [s.value for s in at.success] == ["Yanked alice/yankable:2: hidden from listings and skipped by latest; "
                                             "still downloadable as alice/yankable:2."]
    assert at.subheader[0].value == "alice/yankable:2  (yanked)"  # the header shows it at once
    # and a banner says what it means (a suffix alone: a walk in a browser, session 40)
    assert [w.value for w in at.warning] == [
        "alice/yankable:2 is yanked: its publisher took it out of listings and latest. It stays downloadable by "
        "number (and by any alias still on it); Edit unyanks it."]
    with RegistryClient(registry["url"], registry["token"]) as client:
        assert client.get("alice/yankable:2").yanked
        assert client.adapter("alice/yankable").latest_version == 1
    # the Versions table says so in words: a bool column was drawn as checkboxes, which read as ones to click
    listed = page("adapter", registry, query={"ref": "alice/yankable:1"})
    table = next(d.value for d in listed.dataframe if "yanked" in d.value.columns)
    assert dict(zip(table["version"], table["yanked"], strict=True)) == {
        "adapter?ref=alice/yankable:2": "yanked", "adapter?ref=alice/yankable:1": ""}
    assert not [t for t in at.text_input if t.label == "Reason (optional)"]  # a yanked version: no reason box
    click(at, "Unyank this version")
    assert [s.value for s in at.success] == ["Unyanked alice/yankable:2: listed again, and latest points at it "
                                             "again if it is the newest."]
    with RegistryClient(registry["url"], registry["token"]) as client:
        assert not client.get("alice/yankable:2").yanked
        assert client.adapter("alice/yankable").latest_version == 2
    # with a reason (PEP 592's): kept, said in the banner and under the form, in Markdown as typed
    next(t for t in at.text_input if t.label == "Reason (optional)").input("  leaked *test* split: use :1 ").run()
    click(at, "Yank this version")
    assert not at.exception and [w.value for w in at.warning] == [
        "alice/yankable:2 is yanked (its publisher's reason: leaked \\*test\\* split: use :1): its publisher took it "
        "out of listings and latest. It stays downloadable by number (and by any alias still on it); Edit unyanks it."]
    assert "Reason given: leaked \\*test\\* split: use :1" in [c.value for c in at.caption]
    with RegistryClient(registry["url"], registry["token"]) as client:
        assert client.get("alice/yankable:2").yank_reason == "leaked *test* split: use :1"
    # the reason where versions are scanned and chosen too: only the version's own banner said it (a dashboard
    # walk, session 48): the Versions table, and Compare, which showed a yanked version as any other
    listed = page("adapter", registry, query={"ref": "alice/yankable:1"})
    table = next(d.value for d in listed.dataframe if "yanked" in d.value.columns)
    assert dict(zip(table["version"], table["yanked"], strict=True))["adapter?ref=alice/yankable:2"] == \
        "yanked: leaked *test* split: use :1"
    compared = page("compare", registry, query={"refs": "alice/yankable:1,alice/yankable:2"})
    assert not compared.exception and [w.value for w in compared.warning] == [
        "alice/yankable:2 is yanked (its publisher's reason: leaked \\*test\\* split: use :1): its publisher took it "
        "out of listings and latest. Compared here as asked; choose another version to use."]
    click(at, "Unyank this version")
    box = next(t for t in at.text_input if t.label == "Reason (optional)")
    assert box.value == ""  # emptied once said: the next yank gives its own
    with RegistryClient(registry["url"], registry["token"]) as client:
        assert client.get("alice/yankable:2").yank_reason is None  # an unyank clears it


def delete_button(at: AppTest) -> Any:
    return next(b for b in at.button if b.label == "Delete this version")


#: The dashboard's router with Adapter first (AppTest opens the default page): where a delete goes on to Browse.
ADAPTER_FIRST = """
import streamlit as st
from web_ui import adapter, browse, session
pages = {"adapter": st.Page(session.guarded(adapter.page), title="Adapter", url_path="adapter", default=True),
         "browse": st.Page(session.guarded(browse.page), title="Browse", url_path="browse")}
st.session_state["pages"] = pages
st.navigation(list(pages.values())).run()
"""


def test_a_version_is_deleted_once_its_reference_is_typed(registry: dict[str, Any]) -> None:
    publish_one(registry, "doomed", times=2)
    with RegistryClient(registry["url"], registry["token"]) as client:
        client.set_alias("alice/doomed:2", "prod")
    at = page("adapter", registry, query={"ref": "alice/doomed@prod"}, adapter_tab="Edit")
    assert delete_button(at).disabled
    assert "Its aliases (@prod) go with it, and `latest` moves back" in texts(at)
    publish_one(registry, "twice", times=2)
    newest = page("adapter", registry, query={"ref": "alice/twice:2"}, adapter_tab="Edit")
    assert "Deleting it moves `latest` back to the newest version not yanked" in texts(newest)  # ("Then" began it)
    older = page("adapter", registry, query={"ref": "alice/doomed:1"}, adapter_tab="Edit")
    # `latest` names :2 and stays (a walk's finding, session 31: the caption of an older version said it moved back)
    assert "Versions fine-tuned from it keep its reference" in texts(older) and "moves back" not in texts(older)
    at.text_input(key="edit-delete-alice/doomed:2").set_value("alice/doomed:1").run()  # another version's
    assert delete_button(at).disabled
    at.text_input(key="edit-delete-alice/doomed:2").set_value("alice/doomed:2").run()
    assert not delete_button(at).disabled
    click(at, "Delete this version")
    assert not at.exception
    assert at.query_params["ref"] == "alice/doomed:1" and at.subheader[0].value == "alice/doomed:1"  # what is left
    [done] = at.success
    assert done.value == ("Deleted alice/doomed:2. This is what is left of alice/doomed: its latest version, "
                          "alice/doomed:1.")
    shown = in_order(at)
    assert shown[shown.index("Type alice/doomed:1 to confirm") + 1] == "success"
    with RegistryClient(registry["url"], registry["token"]) as client:
        with pytest.raises(NotFound):
            client.get("alice/doomed:2")
        assert client.adapter("alice/doomed").aliases == {"latest": 1}  # prod went with it

    last = AppTest.from_string(ADAPTER_FIRST, default_timeout=60)
    last.session_state["registry_url"], last.session_state["token"] = registry["url"], registry["token"]
    last.session_state["adapter_tab"] = "Edit"
    last.query_params["ref"] = "alice/doomed:1"
    last.run()
    # the only version: no `latest` to move back to (session 23's walk read "Then latest moves back")
    assert "It is alice/doomed's only version: alice/doomed is left with none, nothing to download. Versions " \
           "fine-tuned from it keep" in texts(last) and "moves back" not in texts(last)
    last.text_input(key="edit-delete-alice/doomed:1").set_value("alice/doomed:1").run()
    click(last, "Delete this version")
    assert not last.exception
    # a team lead's walk: going on to Browse said nothing; the page says what happened, and links back to Browse
    assert last.title[0].value == "Adapter" and last.query_params["ref"] == "alice/doomed:1"
    assert [s.value for s in last.success] == ["Deleted alice/doomed:1, the last version of alice/doomed."]
    assert [i.value for i in last.info] == ["alice/doomed has no versions left: the registry removed it with its last "
                                            "one, so there is nothing more to show here."]
    [back] = last.get("page_link")
    assert back.proto.label == "Back to Browse" and back.proto.page == "browse"
    with RegistryClient(registry["url"], registry["token"]) as client, pytest.raises(NotFound):
        client.adapter("alice/doomed")  # the registry removed the adapter with its last version


def test_an_adapter_left_without_versions_says_so(registry: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """A registry that keeps an adapter with no versions (``versions`` 0) gets the same message; an address of an
    adapter this session did not delete gets the registry's own message."""
    stale = page("adapter", registry, query={"ref": "alice/never-published:1"})
    assert not stale.exception and not stale.info
    # in the dashboard's words, not the command line's (session 23's walk)
    assert [w.value for w in stale.warning] == ["No adapter alice/never-published; Browse (Filter and sort, Owner: "
                                                "alice) lists that owner's adapters."]
    kept = AdapterInfo(owner="alice", name="emptied", description="", card="", created_at=datetime.now(UTC),
                       versions=0, latest_version=None, aliases={})
    monkeypatch.setattr(RegistryClient, "adapter", lambda self, name: kept)
    at = page("adapter", registry, query={"ref": "alice/emptied@prod"})
    assert not at.exception and not at.warning
    assert [i.value for i in at.info] == ["alice/emptied has no versions left: there is nothing to show here until "
                                          "one is published."]


def test_a_reader_is_told_it_may_not_edit(registry: dict[str, Any]) -> None:
    at = page("adapter", {**registry, "token": registry["bob"]}, query={"ref": "alice/child:1"}, adapter_tab="Edit")
    assert not at.exception
    assert "Signed in as bob, who may not edit alice's adapters: alice is neither your namespace nor an " \
        "organisation you belong to." in texts(at)  # (bob's token reads only: a publish scope would not help)
    assert not [b for b in at.button if b.label in ("Save version", "Save adapter")]


def test_a_version_is_copied_into_another_adapter_from_the_edit_tab(registry: dict[str, Any]) -> None:
    at = page("adapter", registry, query={"ref": "alice/child:1"}, adapter_tab="Edit")
    at.text_input(key="edit-copy-alice/child:1").set_value("alice/Not A Name")
    click(at, "Copy version")
    assert not at.exception and "Not A Name" in at.error[0].value  # the registry's refusal, under the form
    shown = in_order(at)
    assert shown[shown.index("Then point alias (optional)") + 1] == "error"
    at.text_input(key="edit-copy-alice/child:1").set_value("alice/promoted")
    for refused in ("latest", "v1"):  # refused before anything is copied (a walk's finding: each left a copy)
        at.text_input(key="edit-copy-alias-alice/child:1").set_value(refused)
        click(at, "Copy version")
        assert not at.exception and at.warning[0].value.startswith("Nothing changed: "), at.warning
    at.text_input(key="edit-copy-alias-alice/child:1").set_value("@prod")
    click(at, "Copy version")
    assert not at.exception and not at.error
    [done] = [s.value for s in at.success if s.value.startswith("Copied alice/child:1 to")]
    assert done == (f"Copied alice/child:1 to [alice/promoted:1]({navigation.version_link('alice/promoted:1')}) "
                    "(a new adapter). alice/promoted@prod names it now.")
    assert at.text_input(key="edit-copy-alice/child:1").value == ""  # emptied: a second click copies nothing
    with RegistryClient(registry["url"], registry["token"]) as client:
        copy = client.get("alice/promoted@prod")
    assert (copy.ref, copy.lineage["copied_from"], copy.lineage["parent"]) == ("alice/promoted:1", "alice/child:1",
                                                                               "alice/base:1")
    copied = page("adapter", registry, query={"ref": "alice/promoted:1"}, adapter_tab="Lineage")
    assert f"**Copy of**: [alice/child:1]({navigation.version_link('alice/child:1')})" in texts(copied)
    reader = page("adapter", {**registry, "token": registry["bob"]}, query={"ref": "alice/child:1"},
                  adapter_tab="Edit")
    assert not [b for b in reader.button if b.label == "Copy version"]  # bob publishes nowhere
    with RegistryClient(registry["url"], registry["token"]) as client:
        assert client.adapter("alice/promoted").versions == 1  # the refused aliases made no copy
    yanked = click(page("adapter", registry, query={"ref": "alice/promoted:1"}, adapter_tab="Edit"),
                   "Yank this version")
    assert not [b for b in yanked.button if b.label == "Copy version"]
    assert "A yanked version is not copied (a copy would promote what was withdrawn): unyank it first." in texts(
        yanked)


def test_the_lineage_tab_names_a_copys_source_and_copies_to_whoever_may_read_them() -> None:
    from registry.domain.schemas import LineageGraph

    graph = LineageGraph(ref="a/b:2", nodes=[], edges=[], max_depth=20, max_nodes=200, truncated=False,
                         copied_from="a/private:1", copies=["c/d:1", "c/d:2"])
    assert lineage.as_seen({"copied_from_private": True, "job_id": 3}, graph) == {"copied_from": "a/private:1",
                                                                                   "job_id": 3}
    assert lineage.as_seen({"copied_from_private": True}, graph.model_copy(update={"copied_from": None})) == {
        "copied_from_private": True}
    [*_, copies] = lineage.relatives(graph)
    assert (copies.what, copies.detail) == ("Copied to", ", ".join(f"[{c}]({navigation.version_link(c)})"
                                                                  for c in ("c/d:1", "c/d:2")))


def test_the_copy_form_is_offered_to_whoever_may_publish_somewhere() -> None:
    from registry.domain.schemas import WhoAmI
    from web_ui.editing import may_publish

    carol = WhoAmI(user="carol", anonymous=False, scopes=["read", "publish"], organizations={}, token_id=1,
                   limited_to=None)
    assert may_publish(carol) and may_publish(carol.model_copy(update={"scopes": ["admin"]}))
    assert not may_publish(carol.model_copy(update={"scopes": ["read"]}))
    assert not may_publish(carol.model_copy(update={"anonymous": True}))


def test_why_a_caller_may_not_edit_names_the_role_or_the_token() -> None:
    """A reader of an organisation was told to paste a token with the publish scope, which it had (session 29's
    walk): the reason is its role, which an admin changes."""
    from registry.domain.schemas import WhoAmI
    from web_ui.editing import why_not_writer

    bob = WhoAmI(user="bob", anonymous=False, scopes=["read", "publish"], organizations={"acme": "read"},
                 token_id=1, limited_to=None)
    assert why_not_writer(bob, "acme").endswith("your role in the organisation acme is read: one of its admins makes "
                                                "you a writer (Organisations page).")
    assert why_not_writer(bob.model_copy(update={"scopes": ["read"], "organizations": {"acme": "write"}}),
                          "acme").endswith("this token has no publish scope; use one that has it.")
    assert why_not_writer(bob, "carol").endswith("carol is neither your namespace nor an organisation you belong to.")
    assert why_not_writer(bob.model_copy(update={"limited_to": ["bob"]}), "acme").endswith(
        "this token is limited to bob; use one that is not, or one for acme.")
    # another user's adapters: the namespace is the reason, whatever the token's scopes (a walk, session 56)
    assert why_not_writer(bob.model_copy(update={"scopes": ["read"]}), "carol").endswith(
        "carol is neither your namespace nor an organisation you belong to.")


@pytest.mark.parametrize(("who", "owner", "allowed"), [
    (WhoAmI(user="alice", anonymous=False, scopes=["publish", "read"], organizations={}, token_id=1,
            limited_to=None), "alice", True),
    (WhoAmI(user="alice", anonymous=False, scopes=["publish", "read"], organizations={"acme": "read"}, token_id=1,
            limited_to=None), "acme", False),
    (WhoAmI(user="alice", anonymous=False, scopes=["publish", "read"], organizations={"acme": "write"},
            token_id=1, limited_to=["bob"]), "acme", False),
    (WhoAmI(user="root", anonymous=False, scopes=["admin"], organizations={}, token_id=1, limited_to=None),
     "acme", True),
    (WhoAmI(user="anonymous", anonymous=True, scopes=["read"], organizations={}, token_id=None, limited_to=None),
     "anonymous", False),
], ids=["own", "org-reader", "limited-elsewhere", "admin", "anonymous"])
def test_who_may_edit(who: WhoAmI, owner: str, allowed: bool) -> None:
    from web_ui.editing import may_write

    assert may_write(who, owner) is allowed


def test_activity_lists_the_newest_events_filtered_with_links(registry: dict[str, Any]) -> None:
    at = page("activity", registry)
    assert not at.exception
    frame = at.dataframe[0].value
    assert list(frame["when"]) == sorted(frame["when"], reverse=True)  # newest first
    columns = json.loads(at.dataframe[0].proto.columns)
    when = columns["when"]["type_config"]  # the registry's times, its zone in the header (no room in the cells)
    assert (columns["when"]["label"], when["format"], when["timezone"]) == ("when (UTC)", "YYYY-MM-DD HH:mm:ss", "UTC")
    assert {"who", "action", "target", "detail"} <= set(frame.columns)
    at.text_input(key="activity_adapter").set_value("alice/child").run()
    assert at.query_params["adapter"] == "alice/child"
    frame = at.dataframe[0].value
    assert list(frame["action"]) == ["publish"] and list(frame["who"]) == ["alice"]
    assert list(frame["target"]) == ["adapter?ref=alice/child:1"]  # a link to the version's page
    [detail] = frame["detail"]
    assert detail.startswith("vectors: ") and detail.endswith("…; base model: tiny-llama")  # words, not JSON
    at.text_input(key="activity_adapter").set_value("").run()
    at.selectbox(key="activity_action").set_value("publish").run()
    assert at.query_params["action"] == "publish"
    assert set(at.dataframe[0].value["action"]) == {"publish"}
    published = [t for t in at.dataframe[0].value["target"] if t.removeprefix("adapter?ref=alice/") in SEEDED]
    assert len(published) == 4 + FILLERS  # every publish (the newest 50: all of them)


def test_an_owners_events_are_listed_and_linked_from_their_targets(registry: dict[str, Any]) -> None:
    """A new user's walk: an organisation's name in the target column was a link to /team-nlp, "Page not found"."""
    at = page("activity", registry, query={"adapter": "alice"})  # a bare owner: everything about alice
    assert not at.exception
    frame = at.dataframe[0].value
    assert {tables.link_text(target).split("/")[0] for target in frame["target"]} == {"alice"}
    tokens = page("activity", registry, query={"adapter": "alice", "action": "token-create"}).dataframe[0].value
    assert set(tokens["action"]) == {"token-create"} and len(tokens) >= 1  # about alice herself, not an adapter
    assert {(t.split("&")[0], tables.link_text(t)) for t in tokens["target"]} == {("activity?adapter=alice", "alice")}


def test_activity_names_a_misspelt_action(registry: dict[str, Any]) -> None:
    """A link with ?action=publsh said only "No events match." (session 23's walk): the nearest action is offered."""
    at = page("activity", registry, query={"action": "publsh"})
    assert not at.exception and [i.value for i in at.info] == ["No events match."]
    assert "'publsh' is not an action this dashboard knows; did you mean 'publish'?" in [c.value for c in at.caption]
    at = page("activity", registry, query={"action": "zzzz"})
    assert "'zzzz' is not an action this dashboard knows; the Action box lists them." in [c.value for c in at.caption]


def test_activity_hides_private_adapters_from_other_readers(registry: dict[str, Any]) -> None:
    mine = page("activity", registry, query={"adapter": "alice/secret"})
    assert list(mine.dataframe[0].value["target"]) == ["adapter?ref=alice/secret:1"]
    theirs = page("activity", {**registry, "token": registry["bob"]}, query={"adapter": "alice/secret"})
    assert not theirs.exception and "No events match." in texts(theirs)


def test_the_sidebar_says_who_you_are(registry: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                      tmp_path: Path) -> None:
    monkeypatch.setenv("VERA_REGISTRY_URL", registry["url"])
    monkeypatch.setenv("VERA_TOKEN", registry["token"])
    at = AppTest.from_file(str(Path(__file__).parents[2] / "web_ui" / "streamlit_app.py"), default_timeout=60).run()
    assert not at.exception
    assert any("**alice**" in m.value and "scopes: publish, read" in m.value for m in at.sidebar.markdown)
    with registry_in_thread(f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "blobs") as local:
        monkeypatch.setenv("VERA_REGISTRY_URL", local)
        monkeypatch.setenv("VERA_TOKEN", "")
        at = AppTest.from_file(str(Path(__file__).parents[2] / "web_ui" / "streamlit_app.py"),
                               default_timeout=60).run()
        assert any("local mode" in m.value for m in at.sidebar.markdown)


def test_identity_lines() -> None:
    anonymous = WhoAmI(user="anonymous", anonymous=True, scopes=["read"], organizations={}, token_id=None,
                       limited_to=None)
    assert app.identity(anonymous).endswith("anonymous (public adapters only)")
    member = WhoAmI(user="bob", anonymous=False, scopes=["read"], organizations={"acme": "write", "lab": "read"},
                    token_id=3, limited_to=["acme"])
    assert app.identity(member) == (":material/person: **bob** · acme (write), lab (read)  \n"
                                    ":gray[scopes: read; limited to acme]")

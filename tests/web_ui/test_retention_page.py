"""An adapter's retention rule on the Adapter page (web_ui.retention), through streamlit.testing.v1.AppTest against
a real registry server (tokens required): alice, who writes alice/runs (four versions), previews, sets and removes
its rule on the Edit tab; a version the rule deletes at its next run says so in a banner and in the versions table,
to alice and to bob, who only reads; bad numbers send nothing; a registry whose operator turned rules off says
that instead."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from registry.client import RegistryClient
from registry.domain.schemas import RetentionInfo
from registry.services.tokens import create_token
from registry.store.database import Database
from tests.registry.adapters import make_adapter
from tests.registry.servers import registry_in_thread
from tests.web_ui.test_pages import page, texts
from web_ui import retention

ADAPTER = "alice/runs"


def served(root: Path, **env: str) -> Iterator[dict[str, Any]]:
    """A registry (tokens required) where alice published four versions of alice/runs; bob reads."""
    url = f"sqlite:///{root / 'r.db'}"
    with registry_in_thread(url, root / "blobs", VERA_REQUIRE_TOKENS="true", **env) as base:
        db = Database(url)
        alice = create_token(db, owner="alice", scopes=["read", "publish"])[1]
        bob = create_token(db, owner="bob", scopes=["read"])[1]
        db.engine.dispose()
        with RegistryClient(base, alice) as client:
            for seed in range(4):
                client.publish(make_adapter(root / f"v{seed}", seed=seed, r=4), ADAPTER, base_model="tiny-llama")
        yield {"url": base, "token": alice, "bob": bob, "root": root}


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    yield from served(tmp_path_factory.mktemp("retention-page"))


@pytest.fixture(autouse=True)
def no_rule(registry: dict[str, Any]) -> Iterator[None]:
    """Each test starts and ends with alice/runs ruleless, and nothing cached of it (a browser's Refresh)."""
    yield
    with RegistryClient(registry["url"], registry["token"]) as client:
        client.set_retention(ADAPTER)
        for alias, _ in client.adapter(ADAPTER).aliases.items():
            if alias != "latest":
                client.remove_alias(ADAPTER, alias)
    st.cache_data.clear()


def edit_tab(registry: dict[str, Any], version: int = 4) -> AppTest:
    return page("adapter", registry, query={"ref": f"{ADAPTER}:{version}"}, adapter_tab="Edit")


def submit(at: AppTest, label: str, last: int, days: float, confirm: bool = False) -> AppTest:
    at.number_input(key=f"retention-last-{ADAPTER}").set_value(last)
    at.number_input(key=f"retention-days-{ADAPTER}").set_value(days)
    at.checkbox(key=f"retention-ok-{ADAPTER}").set_value(confirm)
    next(b for b in at.button if b.label == label).click()
    return at.run()


def rule_now(registry: dict[str, Any]) -> RetentionInfo | None:
    with RegistryClient(registry["url"], registry["token"]) as client:
        return client.adapter(ADAPTER).retention


def words(elements: Any) -> list[str]:
    return [" ".join(str(e.value).split()) for e in elements]


def test_a_preview_says_what_a_rule_would_delete_and_saves_nothing(registry: dict[str, Any]) -> None:
    at = edit_tab(registry)
    assert ("Now: no retention rule: every version stays until someone deletes it." in words(at.caption)
            and not [b for b in at.button if b.label == "Remove rule"])
    submit(at, "Preview", 2, 0)
    assert not at.exception and words(at.info) == [
        "Nothing saved. This rule keeps the newest 2 versions and any version an alias (latest included) points at; "
        "it would delete 2 versions at its next run (within the hour): alice/runs:1, alice/runs:2 (oldest first), "
        f"and {retention.LATER}."]
    assert rule_now(registry) is None


def test_a_rule_is_saved_once_confirmed_marked_where_its_versions_are_and_removed(registry: dict[str, Any]) -> None:
    refused = ("Nothing saved: this rule would delete {} at its next run (within the hour): {}, "
               f"and {retention.LATER}. Tick '{retention.CONFIRM}' and press Save rule to save it.")
    at = submit(edit_tab(registry), "Save rule", 2, 0)  # what it deletes is shown, and the box asked for, first
    assert not at.exception and words(at.warning) == [
        refused.format("2 versions", "alice/runs:1, alice/runs:2 (oldest first)")] and rule_now(registry) is None
    # the box ticked for the rule shown does not save another one, whose deletions were not shown (a walk's finding)
    submit(at, "Save rule", 1, 0, confirm=True)
    assert words(at.warning) == [refused.format("3 versions", "alice/runs:1, alice/runs:2, alice/runs:3 (oldest "
                                                              "first)")] and rule_now(registry) is None
    assert at.checkbox(key=f"retention-ok-{ADAPTER}").value is False  # asked again, for this one
    submit(at, "Preview", 2, 0)  # a preview shows the rule's deletions too: the box then confirms it
    submit(at, "Save rule", 2, 0, confirm=True)
    assert not at.exception and words(at.success) == [
        "Saved alice/runs's rule: it keeps the newest 2 versions and any version an alias (latest included) points "
        "at (what it deletes now is said above the form)."]
    assert rule_now(registry) == RetentionInfo(keep_last=2)
    assert at.checkbox(key=f"retention-ok-{ADAPTER}").value is False  # asked again for the next rule
    assert "It deletes 2 versions at its next run (within the hour): alice/runs:1, alice/runs:2 (oldest first)." in \
        words(at.warning)  # what the saved rule does, above the form
    for token, keep in (("token", "point an alias at it, or change the rule (Edit tab)"),
                        ("bob", "ask a writer of alice to point an alias at it or to change the rule")):
        seen = page("adapter", {**registry, "token": registry[token]}, query={"ref": f"{ADAPTER}:1"})
        assert [w for w in words(seen.warning) if "due for deletion" in w] == [
            "alice/runs:1 is due for deletion within the hour: alice/runs's retention rule keeps the newest 2 versions "
            "and any version an alias (latest included) points at; the registry deletes the others about once an "
            f"hour. To keep it, {keep}."]
        table = seen.dataframe[0].value
        assert dict(zip(table["version"].str.removeprefix("adapter?ref="), table["retention"], strict=True)) == {
            f"{ADAPTER}:{v}": retention.DUE if v <= 2 else "" for v in (1, 2, 3, 4)}
    kept = page("adapter", registry, query={"ref": f"{ADAPTER}:3"})
    assert not [w for w in words(kept.warning) if "due for deletion" in w]
    with RegistryClient(registry["url"], registry["token"]) as client:  # an alias keeps what it names
        client.set_alias(f"{ADAPTER}:1", "staging")
    st.cache_data.clear()
    at = page("adapter", registry, query={"ref": f"{ADAPTER}:1"})
    assert not [w for w in words(at.warning) if "due for deletion" in w]
    table = at.dataframe[0].value
    assert list(table["retention"]) == ["", "", retention.DUE, "kept for @staging"]  # newest first
    at = edit_tab(registry, 1)
    assert ("It deletes 1 version at its next run (within the hour): alice/runs:2; alice/runs:1 stays for @staging."
            in words(at.warning))
    assert at.number_input(key=f"retention-last-{ADAPTER}").value == 2  # the saved rule, in its boxes
    next(b for b in at.button if b.label == "Remove rule").click()
    at.run()
    assert words(at.success) == ["Removed alice/runs's retention rule: every version stays until someone deletes "
                                 "it."] and rule_now(registry) is None
    assert at.number_input(key=f"retention-last-{ADAPTER}").value == 0  # the boxes follow (they kept the 2)
    listed = page("adapter", registry, query={"ref": f"{ADAPTER}:2"}).dataframe[0].value
    assert len(listed) == 4 and "retention" not in listed.columns  # no rule, nothing marked


def test_the_boxes_follow_a_rule_a_teammate_sets(registry: dict[str, Any]) -> None:
    at = edit_tab(registry)
    assert at.number_input(key=f"retention-days-{ADAPTER}").value == 0
    with RegistryClient(registry["url"], registry["token"]) as client:
        client.set_retention(ADAPTER, keep_days=30)
    st.cache_data.clear()  # (Refresh)
    at.run()
    assert at.number_input(key=f"retention-last-{ADAPTER}").value == 0
    assert at.number_input(key=f"retention-days-{ADAPTER}").value == 30
    assert "Now: keeps those published in the last 30 days, the newest version, and any version an alias (latest " \
           "included) points at; the registry deletes the others about once an hour." in words(at.caption)
    assert "It deletes no version now." in words(at.caption)
    submit(at, "Save rule", 4, 0)  # a rule that deletes nothing now is confirmed too: it deletes as versions come
    assert [w for w in words(at.warning) if w.startswith("Nothing saved: this rule would delete no version now, and "
                                                         "from then on")]
    with RegistryClient(registry["url"], registry["token"]) as client:  # removed elsewhere, then Refresh: what was
        client.set_retention(ADAPTER)  # said here of the rule before is no longer so (a walk's finding)
    st.cache_data.clear()
    at.run()
    assert not [w for w in words(at.warning) if w.startswith("Nothing saved")]
    assert at.number_input(key=f"retention-days-{ADAPTER}").value == 0


def test_the_boxes_show_the_rule_again_after_another_tab(registry: dict[str, Any]) -> None:
    """Their state goes while the Edit tab is not built; back on it they showed 0, under "Now: keeps the newest 3"
    (a reviewer's finding)."""
    with RegistryClient(registry["url"], registry["token"]) as client:
        client.set_retention(ADAPTER, keep_last=3)
    at = edit_tab(registry)
    assert at.number_input(key=f"retention-last-{ADAPTER}").value == 3
    at.session_state["adapter_tab"] = "Versions and config"
    at.run()
    at.session_state["adapter_tab"] = "Edit"
    at.run()
    assert at.number_input(key=f"retention-last-{ADAPTER}").value == 3


def test_a_long_list_says_how_many_more() -> None:
    refs = [f"a/b:{v}" for v in range(1, 13)]
    assert retention.listed(refs, 12) == ", ".join(refs[:10]) + " and 2 more"
    assert retention.listed(refs[:3], 3) == "a/b:1, a/b:2, a/b:3"
    assert retention.listed(refs[:1], 1_500) == "a/b:1 and 1,499 more"  # a preview lists the oldest 1,000 of all


@pytest.mark.parametrize(("last", "days", "said"), [
    (0, 0, "Nothing sent: give the newest N versions or the last D days to keep"),
    (3, 0.5, "Nothing sent: keep versions published in the last 1 to 36,500 days (0: no age in the rule), not 0.5."),
    (3, 40_000, "Nothing sent: keep versions published in the last 1 to 36,500 days (0: no age in the rule), not "
                "40,000."),
    (-1, 0, "Nothing sent: keep the newest N versions, N a whole number from 1 to 999,999,999 (0: no count in the "
            "rule), not -1."),
])
def test_bad_numbers_send_nothing(registry: dict[str, Any], last: int, days: float, said: str) -> None:
    for label in ("Preview", "Save rule"):
        at = submit(edit_tab(registry), label, last, days)
        assert not at.exception and [w for w in words(at.warning) if w.startswith(said)], words(at.warning)
        assert rule_now(registry) is None


def test_a_reader_sees_the_rule_but_no_form(registry: dict[str, Any]) -> None:
    at = page("adapter", {**registry, "token": registry["bob"]}, query={"ref": f"{ADAPTER}:4"}, adapter_tab="Edit")
    assert not at.exception and "Signed in as bob, who may not edit alice's adapters" in texts(at)
    assert not [n for n in at.number_input if n.key.startswith("retention-")]


def test_a_registry_that_applies_no_rule_says_so(tmp_path: Path) -> None:
    for registry in served(tmp_path, VERA_RETENTION_RULES="false"):
        with RegistryClient(registry["url"], registry["token"]) as client:
            client.set_retention(ADAPTER, keep_last=1)
        st.cache_data.clear()
        at = edit_tab(registry, 1)
        assert not [w for w in words(at.warning) if "due for deletion" in w]  # nothing will delete it
        assert any(c.endswith("Note: this registry applies no retention rule now (its operator set "
                              "VERA_RETENTION_RULES=false): nothing is deleted by a rule until it is set back.")
                   for c in words(at.caption)), words(at.caption)

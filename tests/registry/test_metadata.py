"""Editable metadata (issue 16) through a real server: an adapter's description and model card, a version's
description and tags; every change audited with before and after, bad input refused with nothing changed, version
bytes never touched, and the model card at the top of the Hub README."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from registry.client import RegistryClient
from registry.domain.errors import AdapterNotFound, NotFound
from registry.domain.schemas import Ref, VersionInfo
from registry.services.hub import model_card, stable_lineage
from registry.services.registry import Registry
from registry.store.blobs import FsspecBlobStore
from registry.store.database import Database
from tests.registry.adapters import make_adapter
from tests.registry.servers import registry_in_thread


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("metadata")
    url = f"sqlite:///{root / 'r.db'}"
    with registry_in_thread(url, root / "blobs") as base:
        registry = Registry(Database(url), FsspecBlobStore(str(root / "blobs")))
        yield {"url": base, "source": make_adapter(root / "adapter"), "registry": registry}
        registry.db.engine.dispose()


@pytest.fixture
def client(server: dict[str, Any]) -> Iterator[RegistryClient]:
    with RegistryClient(server["url"], cache=False) as c:
        yield c


def _publish(client: RegistryClient, source: Path, name: str, **kwargs: Any) -> VersionInfo:
    return client.publish(source, name, base_model="tiny-llama", **kwargs)


def test_adapter_description_and_card_are_edited_and_audited(server: dict[str, Any],
                                                             client: RegistryClient) -> None:
    _publish(client, server["source"], "alice/carded", description="first words")
    info = client.adapter("alice/carded")
    assert (info.description, info.card, info.versions, info.latest_version) == ("first words", "", 1, 1)
    assert info.aliases == {"latest": 1}
    card = "# Carded\n\nTrained on\ttabs, in *Markdown*. ünïcode ✓\n"
    edited = client.update_adapter("alice/carded", card=card, description="better words")
    assert (edited.card, edited.description) == (card, "better words")
    assert client.adapter("alice/carded") == edited
    events = server["registry"].audit("alice/carded")
    assert [e.action for e in events][:2] == ["adapter-edit", "publish"]
    assert events[0].actor == "local" and events[0].detail == {
        "before": {"description": "first words", "card": ""}, "after": {"description": "better words", "card": card}}
    client.update_adapter("alice/carded", card=card)  # the same again: nothing to record
    assert len(server["registry"].audit("alice/carded")) == len(events)
    assert client.update_adapter("alice/carded", card="").card == ""  # cleared


def test_version_description_and_tags_change_but_never_its_bytes(server: dict[str, Any],
                                                                   client: RegistryClient) -> None:
    v = _publish(client, server["source"], "alice/tagged", tags=["a", "b"])
    weights = client.download(v.ref, "adapter_model.safetensors")
    assert client.update_version(v.ref, add_tags=["c"], remove_tags=["a"]).tags == ["b", "c"]
    assert client.update_version(v.ref, remove_tags=["missing"]).tags == ["b", "c"]  # removing what is not there
    assert client.update_version(v.ref, tags=["z", "y"]).tags == ["y", "z"]
    after = client.update_version("alice/tagged@latest", description="now described")
    assert (after.description, after.tags) == ("now described", ["y", "z"])
    assert after.vectors_sha256 == v.vectors_sha256 and after.version == v.version == 1
    assert client.download(v.ref, "adapter_model.safetensors") == weights
    assert client.list_versions(tag="z").items[0].ref == v.ref  # listings see the new tags
    edits = [e for e in server["registry"].audit("alice/tagged") if e.action == "version-edit"]
    assert [e.detail for e in reversed(edits)] == [
        {"before": {"tags": ["a", "b"]}, "after": {"tags": ["b", "c"]}},
        {"before": {"tags": ["b", "c"]}, "after": {"tags": ["y", "z"]}},
        {"before": {"description": ""}, "after": {"description": "now described"}},
    ]  # (removing a missing tag changed nothing and recorded nothing)
    assert all(e.target == "alice/tagged:1" for e in edits)


BAD = [
    ("adapter", {"card": "é" * 40_000}, "80,000 bytes of UTF-8; the limit is 65,536"),
    ("adapter", {"card": "x" * 70_000}, "card must be text of at most 65,536 characters"),
    ("adapter", {"description": "bad\x00nul"}, "control character"),
    ("adapter", {"descriptoin": "typo"}, "descriptoin: Extra inputs are not permitted"),
    ("adapter", {}, "Nothing to change: send at least one of description, card"),
    ("adapter", {"card": 3}, "card: Input should be a valid string"),
    ("version", {"tags": {"set": ["a"], "add": ["b"]}}, "either set them all"),
    ("version", {"tags": {"add": ["Not A Tag"]}}, "Tag 'Not A Tag' is not a valid name"),
    ("version", {"tags": {"add": [f"t{i}" for i in range(70)]}}, "at most 64 tags; this change would leave 71"),
    ("version", {"tags": {"remove": ["t"] * 100_000}}, "tags.remove: List should have at most 256 items"),  # bounded
    ("version", {"properties": {"remove": ["k"] * 100_000}}, "properties.remove: List should have at most 256"),
    ("version", {"tags": ["a"]}, "tags: Input should be a valid dictionary"),
    ("version", {"description": "d" * 10_001}, "description must be text of at most 10,000 characters"),
    ("version", {}, "Nothing to change: send description, tags ("),
    ("version", {"properties": {"set": {"a": "x"}, "remove": ["a"]}}, "properties: a both set and removed"),
    ("version", {"properties": {"set": {"a": 1}}}, "properties.set.a: Input should be a valid string"),
    ("version", {"yanked": True}, "yanked: Extra inputs are not permitted"),
]


@pytest.mark.parametrize(("target", "body", "message"), BAD, ids=[f"{t}-{m[:24]}" for t, _, m in BAD])
def test_bad_edits_are_refused_clearly_and_change_nothing(server: dict[str, Any], client: RegistryClient,
                                                          target: str, body: dict[str, Any], message: str) -> None:
    if not client.list_versions(name="refused").items:
        _publish(client, server["source"], "alice/refused", tags=["keep"])
    before = (client.adapter("alice/refused"), client.get("alice/refused:1"),
              len(server["registry"].audit("alice/refused")))
    path = "/api/v1/adapters/alice/refused" + ("/versions/1" if target == "version" else "")
    response = httpx.patch(f"{server['url']}{path}", json=body, timeout=30)
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"]
    assert (client.adapter("alice/refused"), client.get("alice/refused:1"),
            len(server["registry"].audit("alice/refused"))) == before


def test_edits_of_what_does_not_exist_are_404(server: dict[str, Any]) -> None:
    base = f"{server['url']}/api/v1/adapters"
    assert httpx.get(f"{base}/alice/nothing", timeout=30).status_code == 404
    assert httpx.patch(f"{base}/alice/nothing", json={"card": "x"}, timeout=30).status_code == 404
    response = httpx.patch(f"{base}/alice/nothing/versions/3", json={"description": "x"}, timeout=30)
    assert response.status_code == 404 and "No adapter alice/nothing" in response.json()["detail"]
    assert httpx.patch(f"{base}/alice/x/versions/0", json={"description": "x"}, timeout=30).status_code == 422


def test_the_hub_readme_starts_with_the_adapters_card(server: dict[str, Any], client: RegistryClient) -> None:
    _publish(client, server["source"], "alice/hubcard")
    readme_url = f"{server['url']}/hf/alice/hubcard/resolve/main/README.md"
    plain = httpx.get(readme_url, timeout=30, follow_redirects=True)
    assert plain.status_code == 200 and plain.text.split("---\n", 2)[2].lstrip().startswith("# alice/hubcard")
    client.update_adapter("alice/hubcard", card="---\nlicense: mit\ntags: [sentiment]\n---\n# Polarity\n\nOurs.\n")
    readme = httpx.get(readme_url, timeout=30, follow_redirects=True).text
    _, front, body = readme.split("---\n", 2)
    assert "license: mit" in front and "- sentiment" in front and "- vera" in front and "library_name: peft" in front
    assert body.lstrip().startswith("# Polarity\n\nOurs.\n\n## alice/hubcard (VeRA, version 1)")


def test_card_edits_are_kept_as_revisions_for_the_hub_view(server: dict[str, Any], client: RegistryClient) -> None:
    """Each card edit keeps its text (adapter_cards); the first also keeps the text it replaced, as revision 0."""
    _publish(client, server["source"], "alice/revised")
    metadata, ref = server["registry"].metadata, Ref.of("alice", "revised")
    assert metadata.card_revision(ref) == (None, "") and metadata.card_revision(ref, 0) == (0, "")
    with pytest.raises(NotFound, match="no card revision 1"):
        metadata.card_revision(ref, 1)
    client.update_adapter("alice/revised", card="one")
    client.update_adapter("alice/revised", description="not the card")  # no new revision
    client.update_adapter("alice/revised", card="two")
    assert metadata.card_revision(ref) == (2, "two")
    assert [metadata.card_revision(ref, n) for n in (0, 1, 2)] == [(0, ""), (1, "one"), (2, "two")]
    with pytest.raises(AdapterNotFound):
        metadata.card_revision(Ref.of("alice", "nothing"))


def test_the_hub_readme_names_only_a_parent_that_cannot_change(server: dict[str, Any],
                                                               client: RegistryClient) -> None:
    """stable_lineage: a parent of the same adapter by its ref (also once deleted); another adapter's parent is left
    out, since it can turn private or go; what the version's row recorded stays."""
    info = _publish(client, server["source"], "alice/lineaged")
    own = info.model_copy(update={"lineage": {"parent_deleted": "alice/lineaged:1", "job_id": 4}})
    assert stable_lineage(own) == {"parent": "alice/lineaged:1", "job_id": 4}
    for other in ({"parent": "bob/base:2"}, {"parent_deleted": "bob/base:2"}, {"parent_private": True}):
        assert stable_lineage(info.model_copy(update={"lineage": {**other, "code_revision": "abc"}})) == {
            "code_revision": "abc"}
    card = model_card(info.model_copy(update={"lineage": {"parent": "bob/base:2"}}), with_projection=True,
                      stable=True)
    assert "bob/base" not in card
    # the version a copy copies, likewise (a commit's README changed with the source adapter's visibility)
    for other in ({"copied_from": "bob/src:1"}, {"copied_from_private": True}, {"copied_from_deleted": "bob/s:1"}):
        assert stable_lineage(info.model_copy(update={"lineage": {**other, "job_id": 4}})) == {"job_id": 4}
    for kept in ("alice/lineaged:1", "https://staging.example.org/bob/src:1"):
        assert stable_lineage(info.model_copy(update={"lineage": {"copied_from": kept, "parent": "alice/lineaged:1"}}
                                              )) == {"parent": "alice/lineaged:1", "copied_from": kept}


def test_a_card_whose_front_matter_is_not_yaml_is_kept_as_written(server: dict[str, Any],
                                                                  client: RegistryClient) -> None:
    info = _publish(client, server["source"], "alice/oddcard")
    text = model_card(info, with_projection=True, card="---\nlicense: [mit\n---\nBody")
    assert "license: [mit" in text and "library_name: peft" in text.split("---\n", 2)[1]

"""Key=value properties of a version (``validation=passed``), as MLflow's model-version tags and SageMaker's metadata
properties: set at publish or after, removed, audited, filtered as ``properties.<key>``, carried by a move and gone
with their version; on SQLite and PostgreSQL through the service, then through a real server, the client and `vera`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from registry.client import RegistryClient
from registry.domain.errors import InvalidInput
from registry.domain.schemas import MAX_PROPERTIES, PropertyChange, TagChange, VersionUpdate
from registry.services.derived import FileForm
from registry.services.registry import Registry
from registry.store import models as m
from tests.registry.adapters import make_adapter
from tests.registry.servers import registry_in_thread
from tests.registry.test_cli_mistakes import vera


def change(set_: dict[str, str] | None = None, remove: list[str] | None = None) -> VersionUpdate:
    return VersionUpdate(properties=PropertyChange(set=set_ or {}, remove=remove or []))


def refs(registry: Registry, text: str) -> list[str]:
    return sorted(v.ref for v in registry.list_versions(filter_text=text).items)


def test_properties_are_set_changed_removed_filtered_and_audited(registry: Registry, tmp_path: Path) -> None:
    source = make_adapter(tmp_path / "a")
    first = registry.publish(source, owner="ann", name="clf", base_model="tiny-llama",
                             properties={"validation": "passed", "ticket": "ML-42"})
    assert first.properties == {"ticket": "ML-42", "validation": "passed"}
    registry.publish(source, owner="ann", name="clf", base_model="tiny-llama", properties={"validation": "failed"})
    registry.publish(source, owner="ann", name="other", base_model="tiny-llama")

    assert refs(registry, "properties.validation = 'passed'") == ["ann/clf:1"]
    assert refs(registry, "properties.validation != 'passed'") == ["ann/clf:2"]  # only versions that have it
    assert refs(registry, "properties.validation in ('passed', 'failed')") == ["ann/clf:1", "ann/clf:2"]
    assert refs(registry, "properties.ticket like 'ml-%'") == ["ann/clf:1"]  # like ignores case, as elsewhere
    assert refs(registry, "properties.nobody = 'x'") == []
    assert refs(registry, "properties.ticket is null") == ["ann/clf:2", "ann/other:1"]  # not (yet) given one
    assert refs(registry, "properties.validation is not null and properties.ticket is null") == ["ann/clf:2"]
    listed = {v.ref: v.properties for v in registry.list_versions(owner="ann").items}
    assert listed == {"ann/clf:1": {"ticket": "ML-42", "validation": "passed"},
                      "ann/clf:2": {"validation": "failed"}, "ann/other:1": {}}
    # the fetch path reads them in the same query as the version (lookup.resolve_info)
    assert registry.derived.manifest("ann/clf:1", FileForm())[0].properties == first.properties

    edited = registry.update_version("ann/clf:2", change({"validation": "passed", "reviewer": "bob = ok"},
                                                         ["ticket", "absent"]), actor="bob")
    assert edited.properties == {"reviewer": "bob = ok", "validation": "passed"}  # the first '=' is the key's
    assert registry.get("ann/clf:2").properties == edited.properties
    [event] = [e for e in registry.audit("ann/clf:2") if e.action == "version-edit"]
    assert event.detail == {"before": {"properties": {"validation": "failed"}},
                            "after": {"properties": {"reviewer": "bob = ok", "validation": "passed"}}}
    again = registry.update_version("ann/clf:2", change({"validation": "passed"}), actor="bob")  # no change
    assert again.properties == edited.properties
    assert len([e for e in registry.audit("ann/clf:2") if e.action == "version-edit"]) == 1
    assert registry.update_version("ann/clf:2", change(remove=["reviewer"]), actor="bob").properties == {
        "validation": "passed"}

    registry.move("ann/clf", "ann/renamed", actor="ann")
    assert registry.get("ann/renamed:1").properties == first.properties  # a move keeps them
    registry.delete("ann/renamed:1", actor="ann")
    with registry.db.session() as s:  # they go with their version
        assert s.scalar(select(func.count()).select_from(m.VersionProperty)) == 1


@pytest.mark.parametrize(("given", "message"), [
    ({"Validation": "x"}, "Property key 'Validation' is not a valid name"),
    ({"a b": "x"}, "Property key 'a b' is not a valid name"),
    ({"notes": "two\nlines"}, "property 'notes' contains the control character '\\\\n'"),
    ({"notes": "x" * 501}, "property 'notes' must be text of at most 500 characters"),
    ({f"k{i}": "v" for i in range(MAX_PROPERTIES + 1)}, f"at most {MAX_PROPERTIES} properties"),
], ids=["upper-case-key", "space-in-key", "newline", "too-long", "too-many"])
def test_bad_properties_are_refused_and_change_nothing(registry: Registry, tmp_path: Path, given: dict[str, str],
                                                       message: str) -> None:
    source = make_adapter(tmp_path / "a")
    with pytest.raises(InvalidInput, match=message):
        registry.publish(source, owner="ann", name="bad", base_model="tiny-llama", properties=given)
    assert registry.list_versions(owner="ann").items == []
    registry.publish(source, owner="ann", name="ok", base_model="tiny-llama", properties={"a": "1"})
    with pytest.raises(InvalidInput, match=message):
        registry.update_version("ann/ok:1", change(given), actor="ann")
    assert registry.get("ann/ok:1").properties == {"a": "1"}


def test_every_bad_property_is_named_in_one_refusal() -> None:
    """A box of properties with several problems says them all at once (it said one a save: session 29's walk): the
    first five, and how many more; what a key may be is said once, the other bad keys named after it."""
    from registry.domain.schemas import check_properties, parse_properties

    with pytest.raises(InvalidInput) as refused:
        parse_properties(["ok=1", "novalue", "ok=2", " =x", "ok=3"])  # a key given three times: said once
    assert str(refused.value) == ("Property 'novalue' is not KEY=VALUE, e.g. validation=passed. Property 'ok' is "
                                  "given more than once ('1' and '2'); give it once. Property '=x' is not KEY=VALUE, "
                                  "e.g. validation=passed.")
    with pytest.raises(InvalidInput) as refused:  # a bad value first: the other bad keys still follow the first key's
        check_properties({"ok": "a\x01", "bad key": "x", "bad key2": "y"})
    assert str(refused.value).startswith("property 'ok' contains the control character '\\x01'; remove it. Property "
                                         "key 'bad key' is not a valid name")
    assert str(refused.value).endswith(" Nor are 'bad key2'.")
    with pytest.raises(InvalidInput) as refused:
        check_properties({"Upper": "x", "fine": "y", "notes": "two\nlines"})
    said = str(refused.value)
    assert said.startswith("Property key 'Upper' is not a valid name") and "property 'notes' contains" in said
    with pytest.raises(InvalidInput, match=r"^Property key 'K0' is not a valid name: use .* Nor are 'K1', 'K2', "
                                           r"'K3', 'K4', 'K5' and 2 more\.$"):
        check_properties({f"K{i}": "x" for i in range(8)})


def test_a_change_may_not_set_and_remove_one_key_nor_leave_too_many(registry: Registry, tmp_path: Path) -> None:
    registry.publish(make_adapter(tmp_path / "a"), owner="ann", name="full", base_model="tiny-llama",
                     properties={f"k{i}": "v" for i in range(MAX_PROPERTIES)})
    with pytest.raises(InvalidInput, match="k1 both set and removed"):
        registry.update_version("ann/full:1", change({"k1": "w"}, ["k1"]), actor="ann")
    with pytest.raises(InvalidInput, match=f"would leave {MAX_PROPERTIES + 1}. Remove some first"):
        registry.update_version("ann/full:1", change({"one-more": "v"}), actor="ann")
    kept = registry.update_version("ann/full:1", change({"one-more": "v"}, ["k0"]), actor="ann").properties
    assert len(kept) == MAX_PROPERTIES and "k0" not in kept and kept["one-more"] == "v"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("properties")
    with registry_in_thread(f"sqlite:///{root / 'r.db'}", root / "blobs") as base:
        yield {"url": base, "source": make_adapter(root / "adapter")}


def test_properties_through_http_the_client_and_vera(server: dict[str, Any]) -> None:
    published = vera("publish", str(server["source"]), "--name", "ann/http", "--base-model", "tiny-llama",
                     "--property", "validation=pending", "--property", "owner-team=nlp", url=server["url"])
    assert published.returncode == 0, published.stderr
    assert "did not record the --property" not in published.stderr
    with RegistryClient(server["url"], cache=False) as client:
        assert client.get("ann/http:1").properties == {"owner-team": "nlp", "validation": "pending"}
        assert client.update_version("ann/http:1", set_properties={"validation": "passed"}).properties[
            "validation"] == "passed"
    shown = vera("property", "ann/http:1", url=server["url"])
    assert shown.returncode == 0 and "ann/http:1 properties: owner-team=nlp, validation=passed" in shown.stdout
    removed = vera("property", "ann/http:1", "--remove", "owner-team", "reviewed-by=ann", url=server["url"])
    assert removed.returncode == 0, removed.stderr
    assert "ann/http:1 properties: reviewed-by=ann, validation=passed" in removed.stdout
    listed = vera("ls", "--filter", "properties.validation = 'passed'", "--json", url=server["url"])
    assert [v["ref"] for v in json.loads(listed.stdout)["items"]] == ["ann/http:1"]
    assert re.search(r"^properties +reviewed-by=ann, validation=passed", vera("show", "ann/http:1",
                                                                           url=server["url"]).stdout, re.M)
    malformed = vera("property", "ann/http:1", "novalue", url=server["url"])
    assert malformed.returncode == 1 and "Property 'novalue' is not KEY=VALUE, e.g. validation=passed" in \
        malformed.stderr
    twice = vera("property", "ann/http:1", "validation=failed", " validation=passed", url=server["url"])
    assert twice.returncode == 1
    assert "Property 'validation' is given more than once ('failed' and 'passed')" in twice.stderr
    refused = vera("property", "ann/http:1", "Bad Key=1", url=server["url"])
    assert refused.returncode == 1 and "Property key 'Bad Key' is not a valid name" in refused.stderr
    with RegistryClient(server["url"], cache=False) as client:
        assert client.get("ann/http:1").properties == {"reviewed-by": "ann", "validation": "passed"}


def test_every_bad_field_of_a_version_edit_is_named_in_one_refusal(registry: Registry, tmp_path: Path) -> None:
    """A walk's finding (session 31): a save with a bad tag and a bad property named only the first."""
    registry.publish(make_adapter(tmp_path / "a"), owner="ann", name="ok", base_model="tiny-llama")
    edit = VersionUpdate(description="bad\x00nul", tags=TagChange(add=["Bad Tag"]),
                         properties=PropertyChange(set={"Bad Key": "v"}, remove=["Also Bad"]))
    with pytest.raises(InvalidInput) as refused:
        registry.update_version("ann/ok:1", edit, actor="ann")
    said = str(refused.value)
    assert all(part in said for part in ("Property key 'Bad Key'", "Property key 'Also Bad'", "control character",
                                         "Tag 'Bad Tag'")), said
    assert registry.get("ann/ok:1").tags == []

"""Lineage (issue 16): a version records its parent, job, dataset, code revision and Hub source; the lineage route
gives ancestors and descendants as nodes and edges, bounded; deleting a parent keeps what it was called."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from registry.client import RegistryClient
from registry.domain.errors import InvalidInput
from registry.services.jobs import Jobs
from registry.services.lineage import running_code_revision
from registry.services.registry import Registry
from tests.registry.adapters import make_adapter
from tests.registry.servers import registry_in_thread


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("lineage")
    with registry_in_thread(f"sqlite:///{root / 'r.db'}", root / "blobs") as base:
        yield {"url": base, "source": make_adapter(root / "adapter")}


@pytest.fixture
def client(server: dict[str, Any]) -> Iterator[RegistryClient]:
    with RegistryClient(server["url"], cache=False) as c:
        yield c


def _publish(client: RegistryClient, source: Path, name: str, **kwargs: Any) -> str:
    return client.publish(source, name, base_model="tiny-llama", **kwargs).ref


def test_a_family_of_fine_tunes_is_drawn_both_ways(server: dict[str, Any], client: RegistryClient) -> None:
    src = server["source"]
    root = _publish(client, src, "ann/root")
    mid = _publish(client, src, "ann/mid", parent="ann/root@latest", code_revision="git abc123")
    leaf = _publish(client, src, "bob/leaf", parent=mid)
    twin = _publish(client, src, "bob/twin", parent=mid)
    grandchild = _publish(client, src, "bob/deep", parent=leaf)
    assert client.get(mid).lineage == {"parent": root, "code_revision": "git abc123"}
    graph = client.lineage(mid)
    assert graph.ref == mid and not graph.truncated
    assert {n.ref: n.depth for n in graph.nodes} == {root: -1, mid: 0, leaf: 1, twin: 1, grandchild: 2}
    assert {(e.parent, e.child) for e in graph.edges} == {(root, mid), (mid, leaf), (mid, twin), (leaf, grandchild)}
    assert next(n for n in graph.nodes if n.ref == leaf).lineage == {"parent": mid}
    up = client.lineage(grandchild)
    assert [n.ref for n in sorted(up.nodes, key=lambda n: n.depth)] == [root, mid, leaf, grandchild]
    near = client.lineage(mid, depth=1)
    assert near.truncated and {n.ref for n in near.nodes} == {root, mid, leaf, twin}
    few = client.lineage(mid, limit=1)
    assert few.truncated and [n.depth for n in few.nodes] == [0, -1, 1]


def test_a_deleted_parent_is_remembered_by_name_and_never_relinked(server: dict[str, Any],
                                                                   client: RegistryClient) -> None:
    src = server["source"]
    _publish(client, src, "ann/gone")
    parent = _publish(client, src, "ann/gone")  # ann/gone:2
    child = _publish(client, src, "ann/kid", parent=parent)
    client.delete(parent)
    assert client.get(child).lineage == {"parent_deleted": "ann/gone:2"}
    assert [n.ref for n in client.lineage(child).nodes] == [child]
    again = _publish(client, src, "ann/gone")  # a new number (never 2 again), and not the parent either way
    assert again == "ann/gone:3" and client.get(child).lineage == {"parent_deleted": "ann/gone:2"}
    assert [n.ref for n in client.lineage(again).nodes] == [again]


@pytest.mark.parametrize(("form", "message"), [
    ({"parent": "ann/nobody:1"}, "parent ann/nobody:1: No adapter ann/nobody"),
    ({"parent": "not a ref"}, "is not an adapter reference"),
    ({"parent": "ann/root:7"}, "parent ann/root:7: ann/root has no version 7; its version: 1."),
    ({"code_revision": "x" * 201}, "code_revision must be text of at most 200 characters"),
    ({"code_revision": "two\nlines"}, "code_revision contains the control character"),
    ({"dataset_sha256": "abc"}, "dataset_sha256 must be the training data's SHA-256: 64 hexadecimal digits"),
    ({"dataset_sha256": "g" * 64}, "64 hexadecimal digits"),
    ({"dataset_bytes": "10"}, "dataset_bytes goes with dataset_sha256"),
    ({"dataset_sha256": "a" * 64, "dataset_bytes": "-1"}, "dataset_bytes must be the training data's size in bytes"),
], ids=["missing-adapter", "malformed", "missing-version", "long-revision", "newline", "short-hash", "not-hex",
        "size-alone", "negative-size"])
def test_bad_lineage_at_publish_is_refused_and_records_nothing(server: dict[str, Any], client: RegistryClient,
                                                               form: dict[str, str], message: str) -> None:
    if not client.list_versions(name="root").items:
        _publish(client, server["source"], "ann/root")
    source = server["source"]
    files = {"adapter_config": ("adapter_config.json", (source / "adapter_config.json").read_bytes()),
             "adapter_model": ("adapter_model.safetensors", (source / "adapter_model.safetensors").read_bytes())}
    response = httpx.post(f"{server['url']}/api/v1/adapters/ann/refused/versions", files=files,
                          data={"base_model": "tiny-llama", **form}, timeout=60)
    assert response.status_code == 422 and message in response.json()["detail"], response.text
    assert client.list_versions(name="refused").items == []


@pytest.mark.parametrize("query", ["depth=0", "depth=21", "limit=0", "limit=201"])
def test_lineage_bounds_are_checked(server: dict[str, Any], client: RegistryClient, query: str) -> None:
    ref = _publish(client, server["source"], "ann/bounded")
    version = ref.split(":")[1]
    response = httpx.get(f"{server['url']}/api/v1/adapters/ann/bounded/versions/{version}/lineage?{query}",
                         timeout=30)
    assert response.status_code == 422 and query.split("=")[0] in response.json()["detail"]


def test_a_jobs_version_keeps_its_datasets_hash_and_size(registry: Registry, tmp_path: Path) -> None:
    data = b"text,label\ngood,1\nbad,0\n"
    job = Jobs(registry).submit({"base_model": "minilm", "data": "d.csv"}, owner="ann", target="ann/tuned",
                                dataset=data, dataset_name="d.csv")
    info = registry.publish(make_adapter(tmp_path / "a"), owner="ann", name="tuned", base_model="tiny-llama",
                            lineage={"job_id": job.id, "code_revision": running_code_revision()})
    assert info.lineage == {"job_id": job.id, "dataset_sha256": hashlib.sha256(data).hexdigest(),
                            "dataset_bytes": len(data), "code_revision": running_code_revision()}
    with pytest.raises(InvalidInput, match=r"Unknown lineage \['dataset'\]"):
        registry.publish(tmp_path / "a", owner="ann", name="tuned", base_model="tiny-llama",
                         lineage={"dataset": "x"})


def test_a_version_published_from_outside_records_the_data_it_names_and_is_found_by_it(
        server: dict[str, Any], client: RegistryClient, tmp_path: Path) -> None:
    data = tmp_path / "train.jsonl"
    data.write_bytes(b'{"text": "good", "label": 1}\n' * 1000)
    digest = hashlib.sha256(data.read_bytes()).hexdigest()
    ref = _publish(client, server["source"], "ann/outside", dataset=data)
    assert client.get(ref).lineage == {"dataset_sha256": digest, "dataset_bytes": data.stat().st_size}
    _publish(client, server["source"], "ann/outside")  # another version, on no stated data
    found = client.list_versions(filter=f"dataset_sha256 = '{digest}'").items
    assert [v.ref for v in found] == [ref]  # which versions were trained on this data?
    stated = {"dataset_sha256": digest.upper()}  # through the form, in capitals: recorded lower-case, no size
    source = server["source"]
    files = {"adapter_config": ("adapter_config.json", (source / "adapter_config.json").read_bytes()),
             "adapter_model": ("adapter_model.safetensors", (source / "adapter_model.safetensors").read_bytes())}
    answer = httpx.post(f"{server['url']}/api/v1/adapters/ann/outside/versions", files=files,
                        data={"base_model": "tiny-llama", **stated}, timeout=60)
    assert answer.status_code == 201 and answer.json()["lineage"] == {"dataset_sha256": digest}, answer.text
    with pytest.raises(InvalidInput, match=r"The dataset .*missing.jsonl does not exist"):
        client.publish(source, "ann/outside", base_model="tiny-llama", dataset=tmp_path / "missing.jsonl")


def test_the_running_code_revision_names_the_package_and_its_commit() -> None:
    revision = running_code_revision()
    assert re.fullmatch(r"vera-registry \S+( git [0-9a-f]{40}(\+dirty)?)?", revision), revision
    assert len(revision) <= 200


def test_a_version_number_past_the_range_is_said_to_be_one(server: dict[str, Any], client: RegistryClient) -> None:
    """A path's version of ten digits or more was read as an alias, and the answer said how to set an alias of that
    name (an outsider's finding, session 43): it says version numbers end at 999999999."""
    _publish(client, server["source"], "ann/numbered")
    for path in ("/api/v1/adapters/ann/numbered/versions/99999999999",
                 "/api/v1/adapters/ann/numbered/versions/99999999999/lineage"):
        answer = httpx.get(server["url"] + path, timeout=30)
        assert answer.status_code == 404, answer.text
        said = answer.json()["detail"]
        assert "ann/numbered has no version 99999999999: version numbers are 1 to 999999999; its version" in said
        assert "alias" not in said
    padded = httpx.get(f"{server['url']}/api/v1/adapters/ann/numbered/versions/0000000001", timeout=30)
    assert padded.status_code == 200 and padded.json()["version"] == 1  # a number by its value, not its digits
    hub = httpx.get(f"{server['url']}/hf/api/models/ann/numbered/revision/1000000000", timeout=30)
    assert hub.status_code == 404 and "version numbers are 1 to 999999999" in hub.text, hub.text

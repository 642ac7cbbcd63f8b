"""Storage quotas per owner: a publish over its owner's quota is refused before anything is stored (no row, no blob
file), deleting frees room, per-owner quotas override the default, a job for a full owner is refused at submission;
through the services on SQLite and PostgreSQL, through a real server (403 quota_exceeded, GET .../usage for the
owner, its members and admins only), and `vera usage`."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from registry.client import RegistryClient
from registry.domain.errors import Conflict, Forbidden, NotFound, QuotaExceeded
from registry.services.jobs import Jobs
from registry.services.quotas import Quotas
from registry.services.registry import Registry
from registry.services.tokens import create_token
from registry.store.blobs import FsspecBlobStore
from registry.store.database import Database
from tests.registry.adapters import make_adapter
from tests.registry.servers import VERA, running_server


@pytest.fixture(scope="module")
def size(tmp_path_factory: pytest.TempPathFactory) -> int:
    """The stored bytes of one tiny adapter version (every seed stores the same number)."""
    root = tmp_path_factory.mktemp("size")
    db = Database(f"sqlite:///{root / 'r.db'}")
    db.upgrade()
    stored = Registry(db, FsspecBlobStore(str(root / "blobs"))).publish(
        make_adapter(root / "a"), owner="x", name="y", base_model="tiny-llama").stored_bytes
    db.engine.dispose()
    return stored


def test_a_publish_over_the_quota_is_refused_and_stores_nothing(database_url: str, tmp_path: Path,
                                                                size: int) -> None:
    db = Database(database_url)
    db.upgrade()
    blobs = FsspecBlobStore(str(tmp_path / "blobs"))
    registry = Registry(db, blobs, quotas=Quotas(default=2 * size, per_owner={"big": None, "none": 0}))
    try:
        for seed in (1, 2):
            registry.publish(make_adapter(tmp_path / f"a{seed}", seed=seed), owner="ann", name="x",
                             base_model="tiny-llama")
        files = sorted(blobs.digests())
        with pytest.raises(QuotaExceeded, match=rf"ann stores {2 * size / 1e3:.1f} KB of its {2 * size / 1e3:.1f} KB "
                                                r"quota; publishing ann/y \(.*\) would take it over\. Delete versions"):
            registry.publish(make_adapter(tmp_path / "a3", seed=3), owner="ann", name="y", base_model="tiny-llama")
        assert sorted(blobs.digests()) == files  # the refused version's vectors were not left behind
        assert registry.usage("ann").model_dump() == {"owner": "ann", "adapters": 1, "versions": 2,
                                                      "stored_bytes": 2 * size, "quota_bytes": 2 * size}
        with pytest.raises(QuotaExceeded, match="all of its .* quota: the adapter job ann/z would publish would not"):
            Jobs(registry).submit({"demo": True, "r": 16}, owner="ann", target="ann/z")
        registry.delete("ann/x:1", actor="ann")  # room again, at once
        assert registry.publish(make_adapter(tmp_path / "a3", seed=3), owner="ann", name="y",
                                base_model="tiny-llama").version == 1
        for seed in (4, 5, 6):  # no quota for big, over the default
            registry.publish(make_adapter(tmp_path / f"b{seed}", seed=seed), owner="big", name="x",
                             base_model="tiny-llama")
        with pytest.raises(QuotaExceeded, match="none stores 0 B of its 0 B quota"):
            registry.publish(make_adapter(tmp_path / "c", seed=7), owner="none", name="x", base_model="tiny-llama")
        assert registry.usage("big").quota_bytes is None and registry.usage("big").versions == 3
        with pytest.raises(QuotaExceeded, match=r"moving big/x there \(.*\) would take it over. Delete versions of "
                                                r"big/x first \(it moves with every one\), delete versions ann"):
            registry.move("big/x", "ann/big", actor="root")  # a transfer brings its bytes: within the new owner's quota
        assert registry.adapter("big/x").versions == 3
        registry.move("ann/y", "ann/y2", actor="ann")  # full, and a publish to a moved name: the move is said
        with pytest.raises(Conflict, match="ann/y was moved to ann/y2"):
            registry.publish(make_adapter(tmp_path / "d", seed=8), owner="ann", name="y", base_model="tiny-llama")
    finally:
        db.engine.dispose()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, size: int) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("quotas")
    url = f"sqlite:///{root / 'r.db'}"
    with running_server(url, root / "blobs", VERA_REQUIRE_TOKENS="true", VERA_ANONYMOUS_READ="true",
                        VERA_OWNER_QUOTA_BYTES=str(size), VERA_OWNER_QUOTAS=json.dumps({"acme": 3 * size})) as base:
        db = Database(url)
        tokens = {user: create_token(db, owner=user, scopes=["read", "publish"])[1] for user in ("alice", "bob")}
        tokens["root"] = create_token(db, owner="root", scopes=["admin"])[1]
        db.engine.dispose()
        with RegistryClient(base, tokens["alice"], cache=False) as alice:
            alice.create_organization("acme")
            alice.set_member("acme", "bob", "read")
        yield {"url": base, "tokens": tokens, "source": make_adapter(root / "a")}


def test_quotas_through_the_api_and_the_cli(server: dict[str, Any], size: int, tmp_path: Path) -> None:
    url, tokens, source = server["url"], server["tokens"], server["source"]
    with RegistryClient(url, tokens["alice"], cache=False, retries=0) as alice, \
            RegistryClient(url, tokens["bob"], cache=False, retries=0) as bob:
        alice.publish(source, "alice/one", base_model="tiny-llama")
        with pytest.raises(QuotaExceeded, match="alice stores .* quota; publishing alice/two"):
            alice.publish(make_adapter(tmp_path / "b", seed=1), "alice/two", base_model="tiny-llama")
        for seed in (2, 3):  # acme's own quota: three versions
            alice.publish(make_adapter(tmp_path / f"c{seed}", seed=seed), "acme/team", base_model="tiny-llama")
        assert alice.usage("alice").model_dump() == {"owner": "alice", "adapters": 1, "versions": 1,
                                                     "stored_bytes": size, "quota_bytes": size}
        assert bob.usage("acme").quota_bytes == 3 * size and bob.usage("acme").versions == 2  # a member reads it
        with pytest.raises(NotFound, match="No owner 'alice' that you belong to"):
            bob.usage("alice")
    with RegistryClient(url, tokens["root"], cache=False) as root:
        assert root.usage("alice").stored_bytes == size
    anonymous = httpx.get(f"{url}/api/v1/owners/alice/usage", timeout=60)
    assert anonymous.status_code == 403 and "Sign in" in anonymous.text
    refused = httpx.post(f"{url}/api/v1/adapters/alice/two/versions", timeout=60,
                         headers={"Authorization": f"Bearer {tokens['alice']}"},
                         files={"adapter_config": (source / "adapter_config.json").read_bytes(),
                                "adapter_model": (source / "adapter_model.safetensors").read_bytes()},
                         data={"base_model": "tiny-llama"})
    assert refused.status_code == 403 and refused.json()["type"] == "/problems/quota_exceeded"

    env = {**os.environ, "COLUMNS": "200", "VERA_REGISTRY_URL": url, "VERA_TOKEN": tokens["alice"],
           "VERA_NO_CACHE": "1"}
    for args, said in ((["usage"], "alice: 1 adapter, 1 version"), (["usage", "acme"], "of its")):
        done = subprocess.run([str(VERA), *args], capture_output=True, text=True, timeout=120, env=env, check=False)
        assert done.returncode == 0 and said in done.stdout and "quota" in done.stdout, done.stderr
    with RegistryClient(url, tokens["bob"], cache=False, retries=0) as bob, pytest.raises(Forbidden):
        bob.publish(source, "acme/team", base_model="tiny-llama")  # a reader: refused for its role, not the quota

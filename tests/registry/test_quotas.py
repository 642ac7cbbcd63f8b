"""Storage quotas per owner: a publish over its owner's quota is refused before anything is stored (no row, no blob
file), deleting frees room, per-owner quotas override the default, a job for a full owner is refused at submission;
through the services on SQLite and PostgreSQL, through a real server (403 quota_exceeded, GET .../usage for the
owner, its members and admins only), and `vera usage`."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import inspect, select, text

from registry.client import RegistryClient
from registry.domain.errors import Conflict, Forbidden, NotFound, QuotaExceeded
from registry.domain.schemas import MAX_QUOTA_BYTES
from registry.domain.words import parse_size
from registry.services import publishing
from registry.services.jobs import Jobs
from registry.services.quotas import Quotas
from registry.services.registry import Registry
from registry.services.tokens import create_token
from registry.store import models as m
from registry.store.blobs import FsspecBlobStore
from registry.store.database import Database
from tests.commands import vera as run_vera
from tests.registry.adapters import make_adapter
from tests.registry.servers import registry_in_thread, team_tokens
from tests.registry.test_migration_0009 import EXPECTED, _kept, filled_at


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
    registry = Registry(db, blobs, quotas=Quotas(default=2 * size, per_owner={"big": None, "none": 0, "tiny": 1000,
                                                                           "roomy": 2 * size + 19_200}))
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
                                                      "stored_bytes": 2 * size, "quota_bytes": 2 * size,
                                                      "quota_from": "VERA_OWNER_QUOTA_BYTES", "quota_set_by": None,
                                                      "quota_set_at": None, "job_dataset_bytes": 0}
        with pytest.raises(QuotaExceeded, match=r"ann stores .* of its .* quota; the adapter job ann/z would publish "
                                                r"\(at least .* KB\) would take it over"):
            Jobs(registry).submit({"demo": True, "r": 16}, owner="ann", target="ann/z")
        with pytest.raises(QuotaExceeded, match=r"tiny stores 0 B of its 1.0 KB quota; the adapter job tiny/z would "
                                                r"publish \(at least 22.3 KB\) would take it over. Ask the "
                                                r"registry's admins"):  # its vectors, 12 x (16+384) x 4 B, and its
            # head's last layer, 2 labels x (384+1) x 4 B
            Jobs(registry).submit({"demo": True, "r": 16}, owner="tiny", target="tiny/z")
        assert Jobs(registry).submit({"demo": True, "r": 16}, owner="roomy", target="roomy/z").status == "queued"
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


@pytest.mark.parametrize("early", [True, False])
def test_a_refused_publish_leaves_no_blob_whether_checked_before_or_as_it_is_recorded(
        tmp_path: Path, size: int, monkeypatch: pytest.MonkeyPatch, early: bool) -> None:
    """Bytes worth sparing (publishing.EARLY_CHECK_BYTES, 1 MiB) are never written when the quota refuses them;
    fewer are written, and removed again when the publish's transaction refuses them."""
    monkeypatch.setattr(publishing, "EARLY_CHECK_BYTES", 0 if early else 1 << 40)
    db = Database(f"sqlite:///{tmp_path / 'r.db'}")
    db.upgrade()
    blobs = FsspecBlobStore(str(tmp_path / "blobs"))
    registry = Registry(db, blobs, quotas=Quotas(default=size))
    written: list[int] = []
    put = blobs.put
    monkeypatch.setattr(blobs, "put", lambda data, *a, **k: written.append(len(data)) or put(data, *a, **k))
    try:
        registry.publish(make_adapter(tmp_path / "a1", seed=1), owner="ann", name="x", base_model="tiny-llama")
        kept, written[:] = sorted(blobs.digests()), []
        with pytest.raises(QuotaExceeded, match="ann stores .* would take it over"):
            registry.publish(make_adapter(tmp_path / "a2", seed=2), owner="ann", name="x", base_model="tiny-llama")
        assert sorted(blobs.digests()) == kept and registry.usage("ann").versions == 1
        assert written == ([] if early else [size])  # stored, then removed, only when not checked first
    finally:
        db.engine.dispose()


def test_a_quota_an_admin_sets_overrides_the_settings_until_cleared(database_url: str, tmp_path: Path,
                                                                     size: int) -> None:
    db = Database(database_url)
    db.upgrade()
    registry = Registry(db, FsspecBlobStore(str(tmp_path / "blobs")),
                        quotas=Quotas(default=size, per_owner={"acme": 3 * size}))
    try:
        create_token(db, owner="ann", scopes=["publish"])
        registry.access.create_organization("acme", creator="ann")
        assert registry.usage("ann").quota_from == "VERA_OWNER_QUOTA_BYTES"
        assert registry.usage("acme").quota_from == "VERA_OWNER_QUOTAS"
        registry.publish(make_adapter(tmp_path / "a1", seed=1), owner="ann", name="x", base_model="tiny-llama")
        with pytest.raises(QuotaExceeded, match=r"ask the registry's admins to raise the quota \(`vera quota ann "):
            registry.publish(make_adapter(tmp_path / "a2", seed=2), owner="ann", name="x", base_model="tiny-llama")
        raised = registry.set_quota("ann", 2 * size, actor="root")  # no restart: the next publish sees it
        assert (raised.quota_bytes, raised.quota_from, raised.quota_set_by) == (2 * size, "admin", "root")
        assert raised.quota_set_at is not None
        registry.publish(make_adapter(tmp_path / "a2", seed=2), owner="ann", name="x", base_model="tiny-llama")
        lowered = registry.set_quota("ann", 0, actor="root")  # below what it stores: nothing is removed
        assert (lowered.quota_bytes, lowered.versions, lowered.stored_bytes) == (0, 2, 2 * size)
        with pytest.raises(QuotaExceeded, match="ann stores .* of its 0 B quota"):
            registry.publish(make_adapter(tmp_path / "a3", seed=3), owner="ann", name="y", base_model="tiny-llama")
        unlimited = registry.set_quota("ann", None, actor="admin2")  # none, over the settings' default
        assert (unlimited.quota_bytes, unlimited.quota_from, unlimited.quota_set_by) == (None, "admin", "admin2")
        registry.publish(make_adapter(tmp_path / "a3", seed=3), owner="ann", name="y", base_model="tiny-llama")
        cleared = registry.clear_quota("ann")
        assert (cleared.quota_bytes, cleared.quota_from, cleared.quota_set_by) == (size, "VERA_OWNER_QUOTA_BYTES",
                                                                                    None)
        assert registry.clear_quota("ann") == cleared  # nothing set: nothing changes
        with db.session() as s:  # each change in the audit log, as the Activity page shows it
            assert [(e.actor, e.action, e.detail) for e in s.scalars(select(m.AuditEvent).where(
                m.AuditEvent.target == "ann").order_by(m.AuditEvent.id)) if e.action.startswith("quota")] == [
                ("root", "quota-set", {"quota_bytes": 2 * size}), ("root", "quota-set", {"quota_bytes": 0}),
                ("admin2", "quota-set", {"quota_bytes": None}), ("operator", "quota-clear", {})]
        assert registry.set_quota("acme", 5 * size, actor="root").quota_from == "admin"  # over VERA_OWNER_QUOTAS
        assert registry.clear_quota("acme").quota_bytes == 3 * size
        for unknown in (lambda: registry.usage("anne"), lambda: registry.set_quota("anne", 1, actor="root")):
            with pytest.raises(NotFound, match="No user or organisation is called 'anne'"):
                unknown()
        with db.session() as s:  # a refused quota for a typo left no row
            assert s.get(m.OwnerQuota, "anne") is None
        # an owner known by its quota alone (its adapters deleted since) is still answered, and its quota cleared
        registry.publish(make_adapter(tmp_path / "g", seed=9), owner="gone", name="x", base_model="tiny-llama")
        registry.set_quota("gone", 10**6, actor="root")
        registry.delete_adapter("gone/x", actor="root")
        assert registry.clear_quota("gone").model_dump(include={"quota_bytes", "quota_from", "adapters"}) == {
            "quota_bytes": size, "quota_from": "VERA_OWNER_QUOTA_BYTES", "adapters": 0}
    finally:
        db.engine.dispose()


def test_admins_setting_and_clearing_one_quota_at_once_take_turns(database_url: str, tmp_path: Path) -> None:
    """An outsider's walk (session 16): a PUT and a DELETE of one quota at the same moment answered 500
    (StaleDataError); each is one statement now."""
    db = Database(database_url)
    db.upgrade()
    registry = Registry(db, FsspecBlobStore(str(tmp_path / "blobs")))
    create_token(db, owner="ann", scopes=["read"])
    failures: list[BaseException] = []

    def hammer(change: Callable[[], object]) -> None:
        for _ in range(15):
            try:
                change()
            except BaseException as exc:  # noqa: BLE001 - every failure is the test's finding
                failures.append(exc)

    try:
        threads = [threading.Thread(target=hammer, args=(change,)) for change in (
            lambda: registry.set_quota("ann", 10**9, actor="root"), lambda: registry.clear_quota("ann"),
            lambda: registry.set_quota("ann", None, actor="admin2"))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == []
        assert registry.usage("ann").quota_from in ("admin", "VERA_OWNER_QUOTA_BYTES", None)
    finally:
        db.engine.dispose()


def test_migration_0018_keeps_every_row_up_and_down(database_url: str) -> None:
    db = filled_at(database_url, "0017")
    db.upgrade("0018")
    assert _kept(db) == EXPECTED and "owner_quotas" in set(inspect(db.engine).get_table_names())
    with db.engine.begin() as conn:
        conn.execute(text("INSERT INTO owner_quotas (owner, quota_bytes, set_by, set_at) VALUES ('ann', :q, 'root', "
                          "CURRENT_TIMESTAMP)"), {"q": 2**62})  # a 64-bit column: quotas past 2 GiB fit
        assert conn.execute(text("SELECT quota_bytes FROM owner_quotas")).scalar_one() == 2**62
    db.downgrade("0017")
    assert _kept(db) == EXPECTED and "owner_quotas" not in set(inspect(db.engine).get_table_names())
    db.upgrade()
    assert _kept(db) == EXPECTED
    db.engine.dispose()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, size: int) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("quotas")
    url = f"sqlite:///{root / 'r.db'}"
    with registry_in_thread(url, root / "blobs", VERA_REQUIRE_TOKENS="true", VERA_ANONYMOUS_READ="true",
                            VERA_OWNER_QUOTA_BYTES=str(size),
                            VERA_OWNER_QUOTAS=json.dumps({"acme": f"{3 * size} B"})) as base:  # sizes in words too
        tokens = team_tokens(url, ("alice", "bob"), admins=("root",))
        db = Database(url)
        tokens["alices-admin"] = create_token(db, owner="root", scopes=["admin"], limited_to=["alice"])[1]
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
                                                     "stored_bytes": size, "quota_bytes": size,
                                                     "quota_from": "VERA_OWNER_QUOTA_BYTES", "quota_set_by": None,
                                                     "quota_set_at": None, "job_dataset_bytes": 0}
        assert bob.usage("acme").quota_bytes == 3 * size and bob.usage("acme").versions == 2  # a member reads it
        with pytest.raises(NotFound, match="No owner 'alice' that you belong to"):
            bob.usage("alice")
    with RegistryClient(url, tokens["root"], cache=False) as root:
        assert root.usage("alice").stored_bytes == size
    anonymous = httpx.get(f"{url}/api/v1/owners/alice/usage", timeout=60)
    assert anonymous.status_code == 401 and "Sign in" in anonymous.text  # no token: 401 (403 before session 54)
    assert anonymous.headers["www-authenticate"] == "Bearer"
    refused = httpx.post(f"{url}/api/v1/adapters/alice/two/versions", timeout=60,
                         headers={"Authorization": f"Bearer {tokens['alice']}"},
                         files={"adapter_config": (source / "adapter_config.json").read_bytes(),
                                "adapter_model": (source / "adapter_model.safetensors").read_bytes()},
                         data={"base_model": "tiny-llama"})
    assert refused.status_code == 403 and refused.json()["type"] == "/problems/quota_exceeded"

    env = {**os.environ, "COLUMNS": "200", "VERA_REGISTRY_URL": url, "VERA_TOKEN": tokens["alice"],
           "VERA_NO_CACHE": "1"}
    for args, said in ((["usage"], "alice: 1 adapter, 1 version"), (["usage", "acme"], "of its")):
        done = run_vera(args, env=env)
        assert done.returncode == 0 and said in done.stdout and "quota" in done.stdout, done.stderr
    with RegistryClient(url, tokens["bob"], cache=False, retries=0) as bob, pytest.raises(Forbidden):
        bob.publish(source, "acme/team", base_model="tiny-llama")  # a reader: refused for its role, not the quota


def test_admins_set_quotas_through_the_api_and_vera_quota(server: dict[str, Any], size: int) -> None:
    url, tokens = server["url"], server["tokens"]
    env = {**os.environ, "COLUMNS": "200", "VERA_REGISTRY_URL": url, "VERA_TOKEN": tokens["root"],
           "VERA_NO_CACHE": "1"}

    def vera(*args: str) -> subprocess.CompletedProcess[str]:
        return run_vera(args, env=env)

    try:
        with RegistryClient(url, tokens["root"], cache=False, retries=0) as root:
            assert root.set_quota("acme", "2KiB").model_dump(include={"quota_bytes", "quota_from", "quota_set_by"}) \
                == {"quota_bytes": 2048, "quota_from": "admin", "quota_set_by": "root"}
            assert root.usage("acme").quota_bytes == 2048  # what the settings said (3 versions) no longer holds
            assert root.clear_quota("acme").quota_bytes == 3 * size
            with pytest.raises(NotFound, match="No user or organisation is called 'alcie'"):
                root.set_quota("alcie", 10**9)
        with RegistryClient(url, tokens["alice"], cache=False, retries=0) as alice, pytest.raises(Forbidden):
            alice.set_quota("alice", None)  # not an admin: her own quota is not hers to lift
        with RegistryClient(url, tokens["alices-admin"], cache=False, retries=0) as limited:
            with pytest.raises(Forbidden, match="This token is limited to alice: it may not change the quota of acme"):
                limited.set_quota("acme", 0)  # an admin token limited to alice acts on alice only (outsider, s16)
            with pytest.raises(Forbidden, match="limited to alice"):
                limited.clear_quota("acme")
            assert limited.set_quota("alice", "1GB").quota_bytes == 10**9
            limited.clear_quota("alice")
        refused = httpx.put(f"{url}/api/v1/owners/alice/quota", json={"quota_bytes": "9" * 100_000 + "x"}, timeout=60,
                            headers={"Authorization": f"Bearer {tokens['alice']}"})
        assert refused.status_code == 403 and len(refused.content) < 1000  # the scope first: the body is not echoed
        nul = httpx.get(f"{url}/api/v1/owners/a%00b/usage", headers={"Authorization": f"Bearer {tokens['root']}"},
                        timeout=60)  # PostgreSQL refuses a NUL in text: a 500 there before
        assert nul.status_code == 422 and "may not hold a NUL byte" in nul.json()["detail"]
        for body, said in (({"quota_bytes": "lots"}, "'lots' is not a size: give bytes (50000000000) or a number "
                                                     "with a unit (50GB"),
                           ({"quota_bytes": -1}, "-1 is out of range: give 0 to"),
                           ({"quota_bytes": 2**63}, "is out of range"), ({"quota": 5}, "Extra inputs")):
            answer = httpx.put(f"{url}/api/v1/owners/alice/quota", json=body, timeout=60,
                               headers={"Authorization": f"Bearer {tokens['root']}"})
            assert answer.status_code == 422 and said in answer.text, (body, answer.text)
        done = vera("quota", "alice", "50GB")
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("alice: ") and "% of its 50.0 GB quota, set by root on" in done.stdout
        # as two words: Click's "Got unexpected extra argument(s) (KB)" before (an operator's walk, session 48)
        done = vera("quota", "alice", "200", "KB")
        assert done.returncode == 0 and "of its 200.0 KB quota, set by root on" in done.stdout, done.stderr
        done = vera("quota", "alice", "none")
        assert done.returncode == 0 and "(no quota, set by root on" in done.stdout, done.stderr
        shown = vera("quota", "alice", "--json")  # no SIZE: shown, not changed
        assert shown.returncode == 0 and json.loads(shown.stdout)["quota_bytes"] is None, shown.stderr
        done = vera("quota", "alice", "--clear")
        assert done.returncode == 0 and "of its" in done.stdout and "from VERA_OWNER_QUOTA_BYTES" in done.stdout
        for args, said in ((["quota", "alice", "5 parsecs"], "'5 parsecs' is not a size"),
                           (["quota", "alice", "5GB", "--clear"], "Give a SIZE or --clear, not both"),
                           (["quota", "nobody-here", "1GB"], "No user or organisation is called 'nobody-here'"),
                           (["quota", "a/b", "1GB"], "Owner 'a/b' is not a valid name"),
                           (["quota", "alice", "1,000GB"], "'1,000GB' is not a size"),  # not 1 byte (s16)
                           (["quota", "alice", "1", "50GB"], "'1 50GB': give one size"),  # not 150GB (s48)
                           (["quota", "alice", "no", "ne"], "'no ne': give one size"),
                           (["org", "delete", ".", "--yes"], "'.' is not a name"),  # a traceback before
                           (["org", "show", ""], "'' is not a name")):
            refused = vera(*args)
            assert refused.returncode == 1 and said in refused.stderr and "Traceback" not in refused.stderr, args
    finally:
        with RegistryClient(url, tokens["root"], cache=False) as root:
            root.clear_quota("alice")
            root.clear_quota("acme")


@pytest.mark.parametrize(("given", "read"), [
    ("50GB", 50 * 10**9), ("50GiB", 50 * 2**30), ("1.5 TB", 15 * 10**11), (" 7 kb ", 7000), ("50g", 50 * 10**9),
    ("512", 512), ("512 B", 512), ("1.5KiB", 1536), (0, 0), (2**63 - 1, 2**63 - 1),
])
def test_sizes_in_words(given: object, read: int) -> None:
    assert parse_size(given, most=MAX_QUOTA_BYTES) == read


@pytest.mark.parametrize("given", [
    # an outsider's walk (session 16): pydantic's ByteSize read these as 1, 1 and 50 bytes, and True as 1
    "1,000GB", "1,5TB", "50-GB", ".5", "１２", "٣", True, 1.5, "1e3", "50GBB", "-5", "9" * 30, "5" * 41, None, [],
])
def test_what_is_not_a_size_is_refused_saying_so(given: object) -> None:
    with pytest.raises(ValueError, match=r"is not a size: give bytes|is out of range: give 0 to"):
        parse_size(given, most=MAX_QUOTA_BYTES)


def test_the_local_user_of_a_registry_without_tokens_sees_its_usage(tmp_path: Path) -> None:
    """A team lead's walk (session 16): in local mode `vera usage` and the dashboard's Your storage said "No user or
    organisation is called 'local'": the caller's own name is known whatever the database holds."""
    with registry_in_thread(f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "blobs") as url:
        answer = httpx.get(f"{url}/api/v1/owners/local/usage", timeout=60)
        assert answer.status_code == 200 and answer.json()["adapters"] == 0, answer.text
        done = run_vera(["usage"], env={**os.environ, "VERA_REGISTRY_URL": url, "VERA_NO_CACHE": "1"})
        assert done.returncode == 0 and done.stdout.startswith("local: 0 adapters, 0 versions"), done.stderr

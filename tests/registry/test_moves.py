"""Moving an adapter (renaming it, transferring it to another owner): everything it has goes with it, its old name
says where it went (to whoever may read it there) and takes no publish, version numbers are never given to other
bytes, jobs follow it; through the services on SQLite and PostgreSQL, through a real server with tokens, and
`vera mv`. Migration 0017 (adapter_moves) keeps every row of a 0016 database, up and down."""

from __future__ import annotations

import logging
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, inspect, select

from registry.client import RegistryClient
from registry.domain.errors import AdapterNotFound, Conflict, Forbidden, InvalidInput, NotFound
from registry.services.jobs import Jobs
from registry.services.registry import Registry
from registry.store import models as m
from tests.commands import vera as run_vera
from tests.registry.adapters import LLAMA, make_adapter
from tests.registry.servers import registry_in_thread, team_tokens
from tests.registry.test_migration_0009 import EXPECTED, _kept, filled_at


def _publish(registry: Registry, folder: Path, ref: str, seed: int = 0) -> int:
    owner, name = ref.split("/")
    return registry.publish(make_adapter(folder, seed=seed), owner=owner, name=name, base_model="tiny-llama").version


def test_a_moved_adapter_keeps_everything_and_its_old_name_points_to_it(registry: Registry, tmp_path: Path) -> None:
    _publish(registry, tmp_path / "a", "ann/old")
    _publish(registry, tmp_path / "b", "ann/old", seed=1)
    registry.set_alias("ann/old:1", "prod", actor="ann")
    before = registry.get("ann/old:2")
    job = Jobs(registry).submit({"demo": True, "r": 16}, owner="ann", target="ann/old")  # queued: no worker here

    moved = registry.move("ann/old", "team/new", actor="ann")
    assert moved.orphaned_jobs == [job.id]  # a transfer: the API cancels them (their rights were ann's)
    info = registry.adapter("team/new")
    assert (info.versions, info.aliases) == (2, {"latest": 2, "prod": 1})
    after = registry.get("team/new:2")
    assert (after.vectors_sha256, after.projection_fingerprint) == (before.vectors_sha256,
                                                                    before.projection_fingerprint)
    assert registry.get("team/new@prod").version == 1
    with pytest.raises(AdapterNotFound, match="No adapter ann/old"):
        registry.get("ann/old:1")
    assert registry.moves.moved_to("ann", "old", None) is not None
    assert registry.moves.moved_to("ann", "old", None).ref == "team/new"  # type: ignore[union-attr]
    with pytest.raises(Conflict, match="ann/old was moved to team/new on .*: publish to team/new"):
        _publish(registry, tmp_path / "c", "ann/old", seed=2)
    with pytest.raises(Conflict, match="was moved to team/new"):
        Jobs(registry).submit({"demo": True, "r": 16}, owner="ann", target="ann/old")
    assert Jobs(registry).get(job.id).target_name == "ann/old"  # not re-homed under team: the API cancels it
    assert _publish(registry, tmp_path / "d", "team/new", seed=3) == 3  # numbers go on
    events = [(e.action, e.target, e.detail) for e in registry.audit("team/new")]
    detail = {"from": "ann/old", "to": "team/new"}
    assert ("move", "team/new", detail) in events  # a transfer: on both names, for each owner's events and webhooks
    assert ("move", "ann/old", detail) in [(e.action, e.target, e.detail) for e in registry.audit("ann/old")]
    with pytest.raises(InvalidInput, match="already called"):
        registry.move("team/new", "team/new", actor="ann")


def test_moving_back_frees_the_old_name_and_numbers_are_never_given_twice(registry: Registry,
                                                                          tmp_path: Path) -> None:
    _publish(registry, tmp_path / "a", "ann/x")
    job = Jobs(registry).submit({"demo": True, "r": 16}, owner="ann", target="ann/x")
    renamed = registry.move("ann/x", "ann/y", actor="ann")
    assert (renamed.orphaned_jobs, renamed.retargeted_jobs) == ([], [job.id])
    assert Jobs(registry).get(job.id).target_name == "ann/y"  # a rename: the job publishes to the new name
    assert "its adapter was renamed: it publishes to ann/y (was ann/x)" in [
        e.data.get("message") for e in Jobs(registry).events(job.id)]  # and its log says so
    assert _publish(registry, tmp_path / "b", "ann/y", seed=1) == 2
    registry.move("ann/y", "ann/x", actor="ann")  # its own old name: allowed, and no longer an old name
    assert _publish(registry, tmp_path / "c", "ann/x", seed=2) == 3
    with pytest.raises(Conflict, match="ann/y was moved to ann/x"):
        _publish(registry, tmp_path / "d", "ann/y", seed=3)
    # a name that had versions of another adapter (deleted since) is not a destination: ann/gone:1 meant other bytes
    _publish(registry, tmp_path / "e", "ann/gone", seed=4)
    registry.delete("ann/gone:1", actor="ann")
    with pytest.raises(Conflict, match="ann/gone had versions once"):
        registry.move("ann/x", "ann/gone", actor="ann")
    _publish(registry, tmp_path / "f", "ann/taken", seed=5)
    with pytest.raises(Conflict, match="ann/taken exists"):
        registry.move("ann/x", "ann/taken", actor="ann")
    with pytest.raises(InvalidInput, match="already called"):
        registry.move("ann/x", "ann/x", actor="ann")
    with pytest.raises(InvalidInput, match="names a version"):
        registry.move("ann/x", "ann/z:1", actor="ann")
    with pytest.raises(NotFound, match="No adapter ann/nothing"):
        registry.move("ann/nothing", "ann/z", actor="ann")
    assert registry.adapter("ann/x").versions == 3  # none of the refusals changed anything
    # deleting the adapter forgets its old names: ann/y is free again (its numbers still are not given twice)
    registry.delete_adapter("ann/x", actor="ann")
    with registry.db.session() as s:
        assert s.scalars(select(m.AdapterMove)).all() == []
    assert _publish(registry, tmp_path / "g", "ann/y", seed=6) == 3


def test_a_deleted_parent_of_its_own_stays_named_after_a_rename(registry: Registry, tmp_path: Path) -> None:
    """A version fine-tuned from a version of its own adapter, deleted since, names it (parent_deleted) under the
    name it had; after a rename it was shown as another adapter's private parent (a security review, session 15)."""
    _publish(registry, tmp_path / "a", "ann/lin")
    registry.publish(make_adapter(tmp_path / "b", seed=1), owner="ann", name="lin", base_model="tiny-llama",
                     lineage={"parent": "ann/lin:1"})
    registry.delete("ann/lin:1", actor="ann")
    registry.move("ann/lin", "ann/lin2", actor="ann")
    lineage = registry.get("ann/lin2:2").lineage
    assert lineage.get("parent_deleted") == "ann/lin:1" and "parent_private" not in lineage


def test_a_publish_racing_a_move_never_gives_a_number_twice(registry: Registry, tmp_path: Path) -> None:
    """A publish and a move of one adapter at once (a security review, session 15: 2 rounds in 40 left the new
    name's counter behind a version published meanwhile, so that after deleting it the number was given to other
    bytes). Each now waits for the other: the publish lands before the move (and its number moves with it), or is
    refused as a publish to an old name."""
    first, second = make_adapter(tmp_path / "first"), make_adapter(tmp_path / "second", seed=1)
    for round_ in range(8):
        name = f"race{round_}"
        registry.publish(first, owner="ann", name=name, base_model="tiny-llama")
        outcome: list[object] = []

        def publish(name: str = name, outcome: list[object] = outcome) -> None:
            try:
                outcome.append(registry.publish(second, owner="ann", name=name, base_model="tiny-llama").version)
            except Conflict as exc:
                outcome.append(str(exc))

        racer = threading.Thread(target=publish)
        racer.start()
        registry.move(f"ann/{name}", f"ann/{name}-moved", actor="ann")
        racer.join(timeout=120)
        assert outcome == [2] or "was moved to" in str(outcome[0]), outcome
        with registry.db.session() as s:
            counter = s.get(m.VersionCounter, ("ann", f"{name}-moved"))
            highest = s.scalar(select(func.max(m.AdapterVersion.version)).join(m.Adapter).where(
                m.Adapter.owner == "ann", m.Adapter.name == f"{name}-moved"))
        assert counter is not None and counter.last_version >= highest


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("moves")
    url = f"sqlite:///{root / 'r.db'}"
    with registry_in_thread(url, root / "blobs", VERA_REQUIRE_TOKENS="true", VERA_ANONYMOUS_READ="true") as base:
        tokens = team_tokens(url, ("alice", "bob", "mallory"))
        source = make_adapter(root / "adapter")
        with RegistryClient(base, tokens["alice"], cache=False) as alice:
            alice.create_organization("acme")
            alice.set_member("acme", "bob", "read")
        yield {"url": base, "tokens": tokens, "source": source}


def test_moving_through_the_api_needs_write_rights_on_both_owners(server: dict[str, Any],
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    url, tokens, source = server["url"], server["tokens"], server["source"]
    with RegistryClient(url, tokens["alice"], cache=False, retries=0) as alice, \
            RegistryClient(url, tokens["bob"], cache=False, retries=0) as bob, \
            RegistryClient(url, tokens["mallory"], cache=False, retries=0) as mallory:
        alice.publish(source, "alice/secret", base_model="tiny-llama", visibility="private")
        bob.publish(source, "bob/mine", base_model="tiny-llama")
        with pytest.raises(Forbidden, match="acme"):
            bob.move("bob/mine", "acme/mine")  # bob only reads in acme
        with pytest.raises(NotFound, match="No adapter alice/secret"):
            mallory.move("alice/secret", "mallory/secret")  # not there to be seen, let alone moved
        with pytest.raises(Forbidden):
            mallory.move("bob/mine", "mallory/mine")  # mallory reads it but may not write under bob
        alice.set_member("acme", "bob", "write")
        alice.publish(source, "acme/shared", base_model="tiny-llama")
        with pytest.raises(Forbidden, match="Only admins of acme transfer its adapters to another owner; your role "
                                            "there is 'write'"):
            bob.move("acme/shared", "bob/shared")  # a writer may not take an organisation's adapter for himself
        assert bob.move("acme/shared", "acme/renamed").name == "renamed"  # but renames it within acme
        alice.set_member("acme", "bob", "read")
        job = alice.submit_job("alice/secret", {"demo": True}).id  # queued (no worker): cancelled by the transfer
        moved = alice.move("alice/secret", "acme/secret")
        assert (moved.moved_from, moved.jobs_cancelled, moved.jobs_retargeted) == ("alice/secret", [job], [])
        assert alice.job(job).status == "cancelled"
        assert any("moved to another owner; submit the job again there" in e.data.get("message", "")
                   for e in alice.job_events(job))
        assert (moved.owner, moved.name, moved.visibility, moved.versions) == ("acme", "secret", "private", 1)
        assert bob.get("acme/secret:1").owner == "acme"  # acme's members read it now

        # the old name answers 404 naming the new one, to who may read it there; to others it is simply not there
        for who in (alice, bob):  # the client reads it where it is now, warning to update the reference
            assert who.get("alice/secret:1").ref == "acme/secret:1"
        with pytest.raises(NotFound, match="No adapter alice/secret: it was moved to acme/secret on"):
            httpx_get_or_raise(url, tokens["bob"], "/api/v1/adapters/alice/secret/versions/1")
        with pytest.raises(NotFound) as hidden:
            mallory.get("alice/secret:1")
        assert "acme" not in str(hidden.value)
        for who, told in (("bob", True), ("mallory", False), (None, False)):
            headers = {"Authorization": f"Bearer {tokens[who]}"} if who else {}
            for path in ("/api/v1/adapters/alice/secret/versions/1", "/hf/api/models/alice/secret"):
                answer = httpx.get(f"{url}{path}", headers=headers, timeout=60)
                assert (answer.headers.get("X-Vera-Moved-To") == "acme/secret") is told, (who, path)
                if told and path.startswith("/hf"):  # the Hub protocol redirects, as the Hub does a renamed repo
                    # relative, so a proxy's path prefix stays (it was "/hf/api/models/acme/secret")
                    assert answer.status_code == 307 and answer.headers["Location"] == "../acme/secret"
                    continue
                assert answer.status_code == 404, (who, path)
                assert ("acme/secret" in answer.text) is told and ("acme/secret" in answer.headers.get(
                    "X-Error-Message", "acme/secret" if told else "")) is told, (who, path, answer.headers)

        # a file name outside ASCII, a space or an encoded '%' (a 500, a raw byte in the header, another file: an
        # outsider's finding, session 45) is encoded again in the redirect, which a client follows to the file
        for asked, said in (("main/%E2%82%AC", "main/%E2%82%AC"), ("main/a%20b", "main/a%20b"),
                            ("main/%2541", "main/%2541"),
                            # an encoded '/' (huggingface_hub's revision refs/pr/1) is one segment where the client
                            # resolves the redirect: counted as three, it left /hf (a re-check's finding)
                            ("refs%2Fpr%2F1/adapter_config.json", "refs%2Fpr%2F1/adapter_config.json")):
            for method in ("GET", "HEAD"):
                answer = httpx.request(method, f"{url}/hf/alice/secret/resolve/{asked}",
                                       headers={"Authorization": f"Bearer {tokens['bob']}"}, timeout=60)
                assert answer.status_code == 307, (asked, answer.status_code, answer.text[:300])
                assert answer.headers["Location"] == f"../../../../acme/secret/resolve/{said}"
        followed = httpx.get(f"{url}/hf/alice/secret/resolve/main/a%20b", follow_redirects=True, timeout=60,
                             headers={"Authorization": f"Bearer {tokens['bob']}"})
        assert followed.status_code == 404 and followed.url.raw_path == b"/hf/acme/secret/resolve/main/a%20b"
        assert "'a b'" in followed.headers["X-Error-Message"]

        # a lookup of the old name: null, with moved_to to who may read it there (as the GET's header above)
        for who, told in (("bob", True), ("mallory", False), (None, False)):
            headers = {"Authorization": f"Bearer {tokens[who]}"} if who else {}
            answer = httpx.post(f"{url}/api/v1/adapters/lookup", json={"refs": ["alice/secret@latest", "bob/mine:1"]},
                                headers=headers, timeout=60)
            assert answer.status_code == 200, answer.text
            assert [(r["version"], r.get("moved_to")) for r in answer.json()["results"]][0] == (
                None, "acme/secret" if told else None), who
        caplog.clear()  # (the gets above warned too)
        with caplog.at_level(logging.WARNING, logger="vera.client"):  # the client follows it, as get does
            found = bob.lookup(["alice/secret:1", "alice/secret", "alice/secret@latest", "acme/secret:1"])
        assert {ref: v.ref if v else None for ref, v in found.items()} == {
            "alice/secret:1": "acme/secret:1", "alice/secret": "acme/secret:1", "alice/secret@latest": "acme/secret:1",
            "acme/secret:1": "acme/secret:1"}
        assert [r.getMessage() for r in caplog.records if r.name == "vera.client"] == [
            "alice/secret moved to acme/secret; update the reference (read from there now)"]  # one an adapter
        assert bob.lookup(["alice/secret:1"], follow_moves=False) == {"alice/secret:1": None}
        assert mallory.lookup(["alice/secret:1", "alice/secret"]) == {"alice/secret:1": None, "alice/secret": None}

        with pytest.raises(Conflict, match="alice/secret was moved to another owner on .*takes no publishes"):
            alice.publish(source, "alice/secret", base_model="tiny-llama")  # private elsewhere: not named here
        unknown = httpx.post(f"{url}/api/v1/adapters/acme/secret/move", json={"to": "alice/x", "owner": "bob"},
                             headers={"Authorization": f"Bearer {tokens['alice']}"}, timeout=60)
        assert unknown.status_code == 422 and "owner" in unknown.text
        moves = [(e.target, e.detail) for owner in ("acme", "alice") for e in alice.events(owner=owner).events
                 if e.action == "move" and "secret" in e.target]
        assert moves == [("acme/secret", {"from": "alice/secret", "to": "acme/secret"}),
                         ("alice/secret", {"from": "alice/secret", "to": None})]  # private: unnamed on the old
        assert not [e for e in mallory.events(owner="alice").events if e.action == "move"]  # it was private


def test_huggingface_tools_follow_a_renamed_adapter(server: dict[str, Any], tmp_path: Path) -> None:
    """`from_pretrained("old/name")` after a rename: the Hub protocol answers a read of the old name with a 307 to
    the new one (to who may read it), which huggingface_hub follows, as for a repo renamed on the Hub."""
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download

    url, tokens, source = server["url"], server["tokens"], server["source"]
    with RegistryClient(url, tokens["alice"], cache=False) as alice:
        alice.publish(source, "alice/hub-old", base_model="tiny-llama")
        alice.move("alice/hub-old", "alice/hub-new")
    endpoint = f"{url}/hf"
    assert HfApi(endpoint=endpoint, token=tokens["alice"]).model_info("alice/hub-old").id == "alice/hub-new"
    by_name = {repo: Path(hf_hub_download(repo, "adapter_model.safetensors", endpoint=endpoint,
                                          token=tokens["alice"], cache_dir=tmp_path / repo.replace("/", "-")))
               for repo in ("alice/hub-old", "alice/hub-new")}
    assert by_name["alice/hub-old"].read_bytes() == by_name["alice/hub-new"].read_bytes()
    folder = Path(snapshot_download("alice/hub-old", endpoint=endpoint, token=tokens["alice"],
                                    cache_dir=tmp_path / "snap"))
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in folder.iterdir()}
    with RegistryClient(url, tokens["alice"], cache=False) as alice:  # vera's own loader follows it too
        model = alice.load_adapter(LLAMA.make(), "alice/hub-old:1", cache_dir=tmp_path / "vera-cache")
        assert model.projection_fingerprint() == alice.get("alice/hub-new:1").projection_fingerprint
    cached = tmp_path / "vera-cache"
    assert list(cached.rglob("hub-new")) and not list(cached.rglob("hub-old"))  # cached under the name it has


def test_the_hub_redirect_of_a_moved_adapter_replaces_the_repo_id_its_route_matched() -> None:
    """The redirect replaced the first pair of path segments equal to the old name: an adapter named api/models,
    read at /hf/api/models/api/models, was sent to /hf/api/renamed/api/models (an outsider's finding, session 45).
    The route's template says where its repo id is, with the prefix it is served under or without it (as FastAPI
    gives an included router's route)."""
    from types import SimpleNamespace

    from starlette.requests import Request

    from registry.api.app import renamed_location

    def location(path: str, template: str, root_path: str = "") -> str | None:
        scope = {"type": "http", "path": root_path + path, "root_path": root_path,
                 "route": SimpleNamespace(path_format=template)}
        return renamed_location(Request(scope), ("api", "renamed"))

    for prefix in ("", "/hf"):
        assert location("/hf/api/models/api/models", f"{prefix}/api/models/{{owner}}/{{name}}") == "../api/renamed"
        resolve = f"{prefix}/{{owner}}/{{name}}/resolve/{{revision}}/{{filename:path}}"
        assert location("/hf/api/models/resolve/main/adapter_config.json", resolve) == \
            "../../../../api/renamed/resolve/main/adapter_config.json"
        assert location("/hf/api/models/resolve/main/deep/er json", resolve, root_path="/proxy") == \
            "../../../../../api/renamed/resolve/main/deep/er%20json"
    assert location("/hf-lora/api/models/resolve/main/x", "/hf-lora/{owner}/{name}/resolve/{revision}/{filename}") \
        == "../../../../api/renamed/resolve/main/x"
    assert location("/hf/api", "/{owner}/{name}/resolve/{revision}/{filename:path}") is None  # too short
    raw = {"type": "http", "path": "/hf/api/models/resolve/refs/pr/1/a.json", "root_path": "",
           "raw_path": b"/hf/api/models/resolve/refs%2Fpr%2F1/a.json",
           "route": SimpleNamespace(path_format="/{owner}/{name}/resolve/{revision}/{filename:path}")}
    assert renamed_location(Request(raw), ("api", "renamed")) == "../../../../api/renamed/resolve/refs%2Fpr%2F1/a.json"
    assert location("/hf/x", "/api/models") is None  # no repo id in the route


def test_vera_mv(server: dict[str, Any], tmp_path: Path) -> None:
    url, tokens, source = server["url"], server["tokens"], server["source"]
    with RegistryClient(url, tokens["alice"], cache=False) as alice:
        alice.publish(source, "alice/cli", base_model="tiny-llama")
        alice.set_alias("alice/cli:1", "prod")
        job = alice.submit_job("alice/cli", {"demo": True}).id  # queued (no worker): retargeted by the rename
    env = {**os.environ, "COLUMNS": "200", "VERA_REGISTRY_URL": url, "VERA_TOKEN": tokens["alice"],
           "VERA_NO_CACHE": "1"}

    def vera(*args: str) -> subprocess.CompletedProcess[str]:
        return run_vera(args, env=env)

    done = vera("mv", "alice/cli", "alice/cli-renamed")
    assert done.returncode == 0, done.stderr
    assert "moved alice/cli to alice/cli-renamed (1 version; aliases latest, prod)" in done.stdout
    assert f"job {job} publishes to alice/cli-renamed now" in done.stdout
    followed = vera("show", "alice/cli:1")  # read where it is now, with a warning to update the reference
    assert followed.returncode == 0 and "alice/cli-renamed:1" in followed.stdout, followed.stderr
    assert "alice/cli moved to alice/cli-renamed; update the reference" in followed.stderr
    pinned = vera("resolve", "alice/cli@prod", "alice/cli-renamed:1")  # a manifest's old name: the version now
    assert pinned.returncode == 0 and pinned.stdout.splitlines() == [
        "alice/cli@prod\talice/cli-renamed:1", "alice/cli-renamed:1\talice/cli-renamed:1"], pinned.stderr
    assert "alice/cli moved to alice/cli-renamed; update the reference" in pinned.stderr
    fetched = vera("fetch", "alice/cli@prod", "--out", str(tmp_path / "out"))
    assert fetched.returncode == 0 and (tmp_path / "out" / "adapter_model.safetensors").is_file(), fetched.stderr
    refused = vera("publish", str(source), "--name", "alice/cli", "--base-model", "tiny-llama")  # writes never follow
    assert refused.returncode == 1 and "alice/cli was moved to alice/cli-renamed" in refused.stderr
    wrong = vera("mv", "alice/cli-renamed", "nobody")
    assert wrong.returncode == 1 and "expected owner/name" in wrong.stderr and "Traceback" not in wrong.stderr


def test_migration_0017_keeps_every_row_up_and_down(database_url: str) -> None:
    db = filled_at(database_url, "0016")
    db.upgrade("0017")
    assert _kept(db) == EXPECTED and "adapter_moves" in set(inspect(db.engine).get_table_names())
    db.downgrade("0016")
    assert _kept(db) == EXPECTED and "adapter_moves" not in set(inspect(db.engine).get_table_names())
    db.upgrade()
    assert _kept(db) == EXPECTED
    db.engine.dispose()


def httpx_get_or_raise(url: str, token: str, path: str) -> None:
    """A GET through no client that follows moves: the registry's own answer, raised as the client would."""
    from registry.client import _raise_for

    answer = httpx.get(f"{url}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=60)
    if answer.is_error:
        _raise_for(answer)

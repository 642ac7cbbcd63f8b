"""Private adapters, organisations and tokens through a real server: whoever may not read a private adapter is told
it does not exist (404, the same answer as for a missing one) on every route that reaches it, listings leave it
out, members of its organisation read it, and tokens are created, listed and revoked through the API."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from registry.client import RegistryClient, shared_ssl_context
from registry.domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from registry.services.tokens import create_token
from registry.store.database import Database
from registry.store.models import AccessToken, AuditEvent
from tests.registry.adapters import make_adapter
from tests.registry.servers import registry_in_thread

#: user -> scopes of the token each test caller holds
USERS = {"alice": ["read", "publish"], "bob": ["read", "publish"], "carol": ["read", "publish"],
         "mallory": ["read", "publish", "hub"], "root": ["admin"]}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("visibility")
    url = f"sqlite:///{root / 'r.db'}"
    source = make_adapter(root / "adapter")
    with registry_in_thread(url, root / "blobs", VERA_REQUIRE_TOKENS="true", VERA_ANONYMOUS_READ="true") as base:
        db = Database(url)
        tokens = {user: create_token(db, owner=user, scopes=scopes)[1] for user, scopes in USERS.items()}
        tokens["alice-acme-only"] = create_token(db, owner="alice", scopes=["read", "publish"],
                                                 limited_to=["acme"])[1]
        tokens["expired-alice"] = create_token(db, owner="alice", scopes=["read", "publish"])[1]
        with db.session() as s:
            digest = hashlib.sha256(tokens["expired-alice"].encode()).hexdigest()
            s.execute(update(AccessToken).where(AccessToken.token_hash == digest)
                      .values(expires_at=datetime.now(UTC) - timedelta(minutes=1)))
        db.engine.dispose()
        with client(base, tokens["alice"]) as alice:
            alice.publish(source, "alice/secret", base_model="tiny-llama", visibility="private",
                          description="needle private")
            alice.publish(source, "alice/open", base_model="tiny-llama", description="needle public",
                          parent="alice/secret:1")
            alice.set_alias("alice/secret:1", "prod")
            alice.create_organization("acme", description="a team")
            alice.set_member("acme", "bob", "read")
            alice.set_member("acme", "carol", "write")
            alice.publish(source, "acme/team", base_model="tiny-llama", visibility="private")
            job = alice.submit_job("alice/secret", {"demo": True}).id  # no worker: it stays queued
            planned = alice.submit_job("alice/not-yet-published", {"demo": True}).id
        yield {"url": base, "tokens": tokens, "source": source, "job": job, "planned": planned, "database": url}


def client(url: str, token: str | None) -> RegistryClient:
    return RegistryClient(url, token if token is not None else "", cache=False, retries=0)


def get(server: dict[str, Any], who: str | None, path: str, method: str = "GET", **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {server['tokens'][who]}"} if who else {}
    return httpx.request(method, f"{server['url']}{path}", headers=headers, timeout=60,
                         verify=shared_ssl_context(), **kwargs)  # (a certificate store loaded once, not a call)


V = "/api/v1/adapters/alice/secret/versions/1"
#: every route that reaches alice/secret, as (method, path, body)
REACHING = [
    ("GET", "/api/v1/adapters/alice/secret", None), ("GET", V, None), ("GET", f"{V}/verification", None),
    ("GET", f"{V}/files/adapter_config.json", None), ("GET", f"{V}/files/adapter_model.safetensors", None),
    ("GET", f"{V}/files", None), ("GET", f"{V}/files?format=lora", None), ("GET", f"{V}/files?inline=1048576", None),
    ("HEAD", f"{V}/files", None),
    ("POST", f"{V}/verify", None), ("GET", f"{V}/lineage", None), ("GET", f"{V}/hub", None),
    ("GET", "/api/v1/adapters/alice/secret/versions/prod", None),
    ("GET", "/hf/api/models/alice/secret", None), ("GET", "/hf/api/models/alice/secret/revision/main", None),
    ("GET", "/hf/alice/secret/resolve/main/adapter_config.json", None),
    ("GET", "/hf-lora/api/models/alice/secret", None),
    ("POST", "/api/v1/compare", {"refs": ["alice/open:1", "alice/secret:1"]}),
    ("GET", "/api/v1/adapters/alice/secret/retention?keep_last=1", None),
    # writes: someone else's private adapter is not there to be written either (404 before 403)
    ("POST", f"{V}/hub/push", {"repo_id": "mallory/stolen"}), ("PUT", "/api/v1/adapters/alice/secret/aliases/x",
                                                                {"version": 1}),
    ("DELETE", "/api/v1/adapters/alice/secret/aliases/prod", None), ("POST", f"{V}/yank", {"yanked": True}),
    ("DELETE", V, None), ("PATCH", "/api/v1/adapters/alice/secret", {"visibility": "public"}),
    ("PATCH", "/api/v1/adapters/alice/secret", {"retention": {"keep_last": 1}}),
    ("PATCH", V, {"description": "defaced"}),
]


@pytest.mark.parametrize("who", [None, "mallory", "alice-acme-only", "bob-as-outsider"])
@pytest.mark.parametrize(("method", "path", "body"), REACHING)
def test_a_private_adapter_does_not_exist_for_outsiders(server: dict[str, Any], who: str | None, method: str,
                                                        path: str, body: Any) -> None:
    """Anonymous readers, another user (even with the hub scope), alice's own token limited to acme, and a member
    of alice's organisation (acme, not alice) all get the answer a missing adapter gets."""
    caller = "bob" if who == "bob-as-outsider" else who
    response = get(server, caller, path, method, json=body)
    if who is None and method not in ("GET", "HEAD"):
        assert response.status_code == 401  # anonymous callers never write
        return
    assert response.status_code == 404, (who, method, path, response.status_code, response.text)
    missing = get(server, caller, path.replace("alice/secret", "alice/nonexistent"), method, json=body)
    if method == "HEAD":  # no body: the same status and headers a missing adapter gets, and no list digest
        assert missing.status_code == 404 and "x-vera-files" not in response.headers
    elif "/hf" not in path and "compare" not in path:
        assert response.json()["detail"] == missing.json()["detail"].replace("nonexistent", "secret")


def test_a_near_miss_is_answered_with_a_name_the_caller_may_read(server: dict[str, Any]) -> None:
    """`vera fetch you/polarty` said no more than "No adapter" (a newcomer's walk, session 38). A name close to one
    the caller may read is offered; a private one only to who may read it: to an outsider a near miss of it is
    answered as a near miss of nothing."""
    for who in (None, "mallory", "alice"):
        said = get(server, who, "/api/v1/adapters/alice/opne").json()["detail"]
        assert said == "No adapter alice/opne; `vera ls --owner alice` lists that owner's. Did you mean alice/open?"
    outsider = get(server, "mallory", "/api/v1/adapters/alice/secre")
    nothing = get(server, "mallory", "/api/v1/adapters/alice/zzzzz")
    assert outsider.status_code == nothing.status_code == 404
    assert outsider.json()["detail"] == nothing.json()["detail"].replace("zzzzz", "secre")
    assert get(server, "alice", f"{V.replace('secret', 'secre')}").json()["detail"].endswith(
        "Did you mean alice/secret?")


def test_a_private_adapters_files_by_hash_do_not_exist_for_outsiders(server: dict[str, Any]) -> None:
    """The hash-addressed URL of a private version's weights answers its readers only: to anyone else it is a
    missing adapter, and the same hash asked for through a public adapter is not a file of that one."""
    url = get(server, "alice", f"{V}/files").json()["files"][1]["url"]
    assert get(server, "alice", url).status_code == 200
    for who in (None, "mallory", "alice-acme-only", "bob"):
        response, missing = get(server, who, url), get(server, who, url.replace("alice/secret", "alice/nonexistent"))
        assert response.status_code == missing.status_code == 404, (who, response.text)
        assert response.json()["detail"] == missing.json()["detail"].replace("nonexistent", "secret")
    stolen = get(server, "mallory", url.replace("alice/secret", "alice/open"))
    assert stolen.status_code == 404 and "has no file with SHA-256" in stolen.json()["detail"]


def test_the_owner_members_and_admins_read_it_and_it_stays_unchanged(server: dict[str, Any]) -> None:
    for who in ("alice", "root"):
        for method, path, body in REACHING:
            if method == "GET":
                response = get(server, who, path, method, json=body, follow_redirects=True)
                assert response.status_code == 200, (who, path, response.text)
    with client(server["url"], server["tokens"]["root"]) as root:
        info = root.get("alice/secret:1")
    assert info.visibility == "private" and not info.yanked and info.aliases == ["latest", "prod"]
    assert info.description == "needle private"  # the outsiders' writes above changed nothing


def test_listings_search_and_jobs_leave_private_adapters_out(server: dict[str, Any]) -> None:
    def refs(who: str | None, **params: Any) -> set[str]:
        response = get(server, who, "/api/v1/adapters", params={"limit": 500, **params})
        assert response.status_code == 200
        return {item["ref"] for item in response.json()["items"]}

    everything = {"alice/secret:1", "alice/open:1", "acme/team:1"}
    assert refs("alice") >= everything and refs("root") >= everything
    for outsider in (None, "mallory", "alice-acme-only"):
        seen = refs(outsider) | refs(outsider, q="needle") | refs(outsider, owner="alice")
        assert "alice/secret:1" not in seen and "alice/open:1" in seen, outsider
    assert refs("mallory", filter="name = 'secret'") == set()
    totals = {who: get(server, who, "/api/v1/adapters", params={"with_total": True, "q": "needle"}).json()["total"]
              for who in ("alice", "mallory")}
    assert totals == {"alice": 2, "mallory": 1}  # counts do not reveal private versions either
    assert "acme/team:1" in refs("bob") and "acme/team:1" not in refs("mallory")
    assert "acme/team:1" in refs("alice-acme-only") and "alice/secret:1" not in refs("alice-acme-only")
    job = server["job"]
    for path in (f"/api/v1/jobs/{job}", f"/api/v1/jobs/{job}/events"):
        assert get(server, "mallory", path).status_code == 404
        assert get(server, "alice", path).status_code == 200
    assert get(server, "mallory", f"/api/v1/jobs/{job}/cancel", "POST").status_code == 404
    assert job not in {j["id"] for j in get(server, "mallory", "/api/v1/jobs").json()}
    planned = server["planned"]  # a job's spec is its owner's, even before its adapter exists
    assert get(server, "mallory", f"/api/v1/jobs/{planned}").status_code == 404
    assert get(server, None, "/api/v1/jobs").json() == []
    assert job in {j["id"] for j in get(server, "alice", "/api/v1/jobs").json()}


def test_a_lookup_answers_private_versions_as_missing_to_outsiders(server: dict[str, Any]) -> None:
    """POST /api/v1/adapters/lookup: what each reference names, in one request; a private version (by number, by
    alias, as latest) is null to whoever may not read it, exactly as a missing one is, and there to its readers."""
    asked = ["alice/secret:1", "alice/secret@prod", "alice/secret", "alice/open", "acme/team:1", "alice/nope:1"]

    def found(who: str | None) -> list[str | None]:
        response = get(server, who, "/api/v1/adapters/lookup", "POST", json={"refs": asked})
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert [r["requested"] for r in results] == asked
        return [r["version"]["ref"] if r["version"] else None for r in results]

    assert found("alice") == ["alice/secret:1"] * 3 + ["alice/open:1", "acme/team:1", None]
    assert found("root") == found("alice")
    assert found("bob") == [None, None, None, "alice/open:1", "acme/team:1", None]  # a member of acme only
    for outsider in (None, "mallory"):
        assert found(outsider) == [None, None, None, "alice/open:1", None, None], outsider
    with client(server["url"], server["tokens"]["mallory"]) as mallory:
        seen = mallory.lookup(asked)
    assert [v.ref if v else None for v in seen.values()] == [None, None, None, "alice/open:1", None, None]
    assert get(server, "expired-alice", "/api/v1/adapters/lookup", "POST", json={"refs": asked}).status_code == 401


@pytest.mark.parametrize(("body", "said"), [
    ({"refs": []}, "at least 1 item"),
    ({"refs": ["alice/open:1"] * 501}, "at most 500 items"),
    ({"refs": ["alice/open:1", "alice open"]}, "refs[1]: 'alice open' is not an adapter reference; expected"),
    ({"refs": ["x" * 301]}, "at most 300 characters"),
    ({"refs": "alice/open:1"}, "valid list"),
    ({"refs": ["alice/open:1"], "limit": 5}, "Extra inputs are not permitted"),
], ids=["empty", "too-many", "malformed", "too-long", "not-a-list", "unknown-field"])
def test_a_lookup_of_bad_references_is_refused_saying_why(server: dict[str, Any], body: dict[str, Any],
                                                          said: str) -> None:
    response = get(server, "alice", "/api/v1/adapters/lookup", "POST", json=body)
    assert response.status_code == 422 and said in response.text, response.text


def test_lineage_and_parents_do_not_reveal_private_versions(server: dict[str, Any]) -> None:
    """A public version fine-tuned from a private one: outsiders see neither the parent's name in its lineage nor a
    node for it in the graph, and cannot name it as a parent (which would resolve its versions and aliases)."""
    for who in (None, "mallory", "alice-acme-only"):
        info = get(server, who, "/api/v1/adapters/alice/open/versions/1").json()
        assert info["lineage"].get("parent_private") is True and "parent" not in info["lineage"]
        graph = get(server, who, "/api/v1/adapters/alice/open/versions/1/lineage").json()
        assert [n["ref"] for n in graph["nodes"]] == ["alice/open:1"] and graph["edges"] == [], who
    graph = get(server, "alice", "/api/v1/adapters/alice/open/versions/1/lineage").json()
    assert {n["ref"] for n in graph["nodes"]} == {"alice/open:1", "alice/secret:1"}  # the owner sees both
    with client(server["url"], server["tokens"]["mallory"]) as mallory:
        for parent in ("alice/secret:1", "alice/secret:99", "alice/secret@prod", "alice/nonexistent:1"):
            with pytest.raises(NotFound, match=f"No adapter {parent.split(':')[0].split('@')[0]};"):
                mallory.publish(server["source"], "mallory/child", base_model="tiny-llama", parent=parent)
        assert mallory.list_versions(owner="mallory").items == []  # nothing was published


def test_private_descendants_neither_take_places_in_a_graph_nor_mark_it_truncated(server: dict[str, Any]) -> None:
    """Private versions made from a public one do not tell outsiders they exist: the graph's limit counts only the
    versions its caller reads (private children took places, hiding a public one), and ``truncated`` says only that
    readable versions were left out (it was true for a private grandchild; an outsider's finding, session 43)."""
    with client(server["url"], server["tokens"]["mallory"]) as mallory:
        mallory.publish(server["source"], "mallory/lin0", base_model="tiny-llama")
        mallory.publish(server["source"], "mallory/lin1", base_model="tiny-llama", parent="mallory/lin0:1")
    with client(server["url"], server["tokens"]["alice"]) as alice:
        for name in ("hidden-a", "hidden-b"):  # published after lin1, so they sort after it: a grandchild and more
            alice.publish(server["source"], f"alice/{name}", base_model="tiny-llama", visibility="private",
                          parent="mallory/lin1:1")
        for name in ("hidden-c", "hidden-d"):  # children of lin0 between lin1 and lin2
            alice.publish(server["source"], f"alice/{name}", base_model="tiny-llama", visibility="private",
                          parent="mallory/lin0:1")
    with client(server["url"], server["tokens"]["mallory"]) as mallory:
        mallory.publish(server["source"], "mallory/lin2", base_model="tiny-llama", parent="mallory/lin0:1")
    path = "/api/v1/adapters/mallory/lin0/versions/1/lineage"
    for who in (None, "mallory", "bob"):
        near = get(server, who, f"{path}?depth=1").json()
        assert [n["ref"] for n in near["nodes"]] == ["mallory/lin0:1", "mallory/lin1:1", "mallory/lin2:1"], who
        assert near["truncated"] is False, who  # lin1 has children, none of them readable
        one = get(server, who, f"{path}?limit=2").json()
        assert [n["ref"] for n in one["nodes"]] == ["mallory/lin0:1", "mallory/lin1:1", "mallory/lin2:1"], who
        assert one["truncated"] is False, who  # alice/hidden-c and -d (between lin1 and lin2) took no places
    seen = get(server, "alice", f"{path}?depth=1").json()
    assert {"alice/hidden-c:1", "alice/hidden-d:1"} < {n["ref"] for n in seen["nodes"]}  # their owner sees them
    assert seen["truncated"] is True  # and that lin1 has children beyond depth 1


def test_a_deleted_private_parent_is_not_named_either(server: dict[str, Any]) -> None:
    """Once a private parent version is deleted, the public child's lineage does not keep its name (which would say
    that the private adapter exists) for anyone: it says the parent was private."""
    with client(server["url"], server["tokens"]["alice"]) as alice:
        alice.publish(server["source"], "alice/hush", base_model="tiny-llama", visibility="private")
        alice.publish(server["source"], "alice/loud", base_model="tiny-llama", parent="alice/hush:1")
        alice.delete("alice/hush:1")
    for who in (None, "mallory", "alice"):
        info = get(server, who, "/api/v1/adapters/alice/loud/versions/1")
        assert info.status_code == 200 and "hush" not in info.text, who
        assert info.json()["lineage"] == {"parent_private": True}


def test_base_models_and_projections_of_private_versions_are_not_listed(server: dict[str, Any],
                                                                        tmp_path: Path) -> None:
    """A private publish on its own base model and projection seed shows neither to outsiders, and projections
    count only the versions the caller reads."""
    secret = make_adapter(tmp_path / "secret", projection_prng_key=4242, r=16)
    with client(server["url"], server["tokens"]["alice"]) as alice:
        alice.publish(secret, "alice/skunkworks", base_model="secret-corp/internal", visibility="private")

    def seen(who: str | None) -> tuple[set[str], dict[tuple[int, int], int]]:
        bases = {b["name"] for b in get(server, who, "/api/v1/base-models").json()}
        projections = {(p["seed"], p["r"]): p["versions"] for p in get(server, who, "/api/v1/projections").json()}
        return bases, projections

    for who in (None, "mallory", "alice-acme-only"):
        bases, projections = seen(who)
        assert "secret-corp/internal" not in bases and (4242, 16) not in projections and "tiny-llama" in bases, who
    bases, projections = seen("alice")
    assert "secret-corp/internal" in bases and projections[(4242, 16)] == 1
    outsider_count, owner_count = seen("mallory")[1][(0, 8)], seen("alice")[1][(0, 8)]
    assert outsider_count < owner_count  # alice/secret's version uses that projection too, and is not counted


def test_organisation_roles(server: dict[str, Any]) -> None:
    """read: reads the organisation's private adapters; write: also publishes under it; admin: manages members."""
    url, tokens, source = server["url"], server["tokens"], server["source"]
    with client(url, tokens["bob"]) as bob, client(url, tokens["carol"]) as carol:
        assert bob.get("acme/team:1").visibility == "private"
        with pytest.raises(Forbidden, match="cannot write under acme/"):
            bob.publish(source, "acme/team", base_model="tiny-llama")
        assert carol.publish(source, "acme/team", base_model="tiny-llama").version == 2
        with pytest.raises(Forbidden, match="Only admins of acme"):
            carol.set_member("acme", "mallory", "admin")
        assert bob.whoami().organizations == {"acme": "read"}
        assert [o.name for o in bob.organizations()] == ["acme"]
    with client(url, tokens["mallory"]) as mallory:
        with pytest.raises(NotFound, match="No organisation 'acme'"):
            mallory.organization("acme")  # an outsider learns nothing of its members
        assert mallory.organizations() == []
        with pytest.raises(Conflict, match="taken"):
            mallory.create_organization("acme")
        with pytest.raises(Conflict, match="taken .by a user"):
            mallory.create_organization("alice")
    with client(url, tokens["alice"]) as alice:
        with pytest.raises(Conflict, match="last admin"):
            alice.remove_member("acme", "alice")
        alice.set_member("acme", "dave", "read")
        assert {x.member: x.role for x in alice.remove_member("acme", "dave").members} == {
            "alice": "admin", "bob": "read", "carol": "write"}
        alice.set_member("acme", "mallory", "read")
    with client(url, tokens["mallory"]) as mallory:  # a member leaves by themself; removing another is an admin's
        with pytest.raises(Forbidden, match="Only admins of acme manage its members"):
            mallory.remove_member("acme", "bob")
        assert "mallory" not in {x.member for x in mallory.remove_member("acme", "mallory").members}
        assert mallory.organizations() == []
    with client(url, tokens["alice"]) as alice:
        assert any(e.action == "member-remove" and e.actor == "mallory" for e in alice.events(owner="acme").events)


def test_members_are_users_and_a_name_nobody_holds_a_token_for_shows(server: dict[str, Any]) -> None:
    """An organisation cannot be a member (refused, nothing changes); a name no token was ever created for is added,
    marked has_token=False (a typo shows), and `vera org add` warns about it on stderr."""
    url, tokens = server["url"], server["tokens"]
    with client(url, tokens["alice"]) as alice:
        alice.create_organization("acme-labs")
        before = alice.organization("acme").members
        with pytest.raises(InvalidInput, match="'acme-labs' is an organisation; members are users"):
            alice.set_member("acme", "acme-labs", "read")
        assert alice.organization("acme").members == before
        assert {x.member: x.has_token for x in before} == {"alice": True, "bob": True, "carol": True}
    cli = [sys.executable, "-m", "registry.cli", "org", "add", "acme", "bbo", "--registry", url,
           "--token", tokens["alice"]]
    done = subprocess.run(cli, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "bbo (no token yet)" in done.stdout
    assert "no token was ever created for 'bbo'" in done.stderr and "vera org remove acme bbo" in done.stderr
    assert "for a CI user, once its trusted publisher's first exchange" in " ".join(done.stderr.split())
    done = subprocess.run([*cli[:6], "bob", *cli[7:]], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and "warning" not in done.stderr, done.stderr
    with client(url, tokens["alice"]) as alice:
        assert {x.member: x.has_token for x in alice.remove_member("acme", "bbo").members}["bob"] is True


def test_a_registry_that_checks_no_tokens_marks_no_member_as_without_one(tmp_path: Path) -> None:
    """Local mode (`vera up`: no tokens, every caller the local user): has_token is None for every member, so that
    neither `vera org add` nor the dashboard warns to check the spelling of the local user, nobody having a token
    there (a dashboard walk, session 54)."""
    url = f"sqlite:///{tmp_path / 'r.db'}"
    with registry_in_thread(url, tmp_path / "blobs", VERA_REQUIRE_TOKENS="false") as base, \
            RegistryClient(base) as local:
        made = local.create_organization("acme")
        assert [(x.member, x.has_token) for x in made.members] == [("local", None)]
        assert [(x.member, x.has_token) for x in local.set_member("acme", "bob", "read").members] == [
            ("bob", None), ("local", None)]
        assert [x.has_token for org in local.organizations() for x in org.members] == [None, None]
        done = subprocess.run([sys.executable, "-m", "registry.cli", "org", "add", "acme", "carol", "--registry", base],
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0 and "warning" not in done.stderr and "no token yet" not in done.stdout, done
    # the same database served with tokens required: a name nobody holds a token for shows again
    with registry_in_thread(url, tmp_path / "blobs", VERA_REQUIRE_TOKENS="true") as base:
        db = Database(url)
        token = create_token(db, owner="local", scopes=["read", "publish"])[1]
        db.engine.dispose()
        with RegistryClient(base, token) as local:
            assert {x.member: x.has_token for x in local.organization("acme").members} == {
                "bob": False, "carol": False, "local": True}


def test_visibility_changes_are_audited_and_take_effect(server: dict[str, Any]) -> None:
    url, tokens, source = server["url"], server["tokens"], server["source"]
    with client(url, tokens["alice"]) as alice:
        alice.publish(source, "alice/flip", base_model="tiny-llama")
        assert get(server, "mallory", "/api/v1/adapters/alice/flip/versions/1").status_code == 200
        assert alice.set_visibility("alice/flip", "private").visibility == "private"
        assert get(server, "mallory", "/api/v1/adapters/alice/flip/versions/1").status_code == 404
        with pytest.raises(Conflict, match="is private; a publish does not change that"):
            alice.publish(source, "alice/flip", base_model="tiny-llama", visibility="public")
        assert alice.get("alice/flip").version == 1  # the refused publish left nothing
        alice.set_visibility("alice/flip", "public")
    assert get(server, None, "/api/v1/adapters/alice/flip/versions/1").status_code == 200
    bad = get(server, "alice", "/api/v1/adapters/alice/flip", "PATCH", json={"visibility": "secret"})
    assert bad.status_code == 422 and "public" in bad.text
    events = get(server, "root", "/api/v1/events", params={"adapter": "alice/flip", "action": "adapter-edit"})
    changes = [(e["detail"]["before"], e["detail"]["after"]) for e in events.json()["events"]]
    assert changes == [({"visibility": "public"}, {"visibility": "private"}),
                       ({"visibility": "private"}, {"visibility": "public"})]  # who, and from what to what
    assert {e["actor"] for e in events.json()["events"]} == {"alice"}


def test_an_admin_token_limited_to_some_owners_administers_those_alone(server: dict[str, Any]) -> None:
    """An outsider's finding: an admin token made with --limit-to minted unlimited, lasting admin tokens, revoked
    anyone's, and listed every organisation and the events about no owner."""
    url, tokens = server["url"], server["tokens"]
    with client(url, tokens["carol"]) as carol:
        carol.create_organization("carols-band")  # outside the limits below
        carol.set_member("carols-band", "alice", "read")
    with client(url, tokens["alice"]) as alice:
        alice_wide = next(t.id for t in alice.tokens() if t.limited_to is None)
        alice_ci, _ = alice.create_token(["read"], name="acme ci", limited_to=["acme"])
    with client(url, tokens["root"]) as root:
        limited_info, limited = root.create_token(["admin"], name="acme admin", limited_to=["acme"], expires_days=1)
    db = Database(server["database"])  # an event about no owner: a registry-wide webhook paused
    with db.session() as s:
        s.add(AuditEvent(actor="registry", action="webhook-pause", target="*/webhooks/999", detail={}))
    db.engine.dispose()
    with client(url, limited) as acme_admin:
        with pytest.raises(Forbidden, match="must be limited"):
            acme_admin.create_token(["admin"])  # no wider than itself
        with pytest.raises(Forbidden, match=r"limited to \['acme'\]: it creates tokens for 'root' alone"):
            acme_admin.create_token(["admin"], user="mallory", limited_to=["acme"])
        with pytest.raises(Forbidden, match="cannot outlive it"):
            acme_admin.create_token(["admin"], limited_to=["acme"], expires_days=30)
        child, _ = acme_admin.create_token(["admin"], limited_to=["acme"])
        assert child.expires_at is not None and child.expires_at <= limited_info.expires_at  # expires with its maker
        with pytest.raises(NotFound, match=f"No token with id {alice_wide}"):
            acme_admin.revoke_token(alice_wide)  # a token that reaches beyond acme
        assert alice_ci.id in {t.id for t in acme_admin.tokens(user="alice")}
        acme_admin.revoke_token(alice_ci.id)  # one limited within acme: its to revoke
        assert [o.name for o in acme_admin.organizations()] == ["acme"]
        with pytest.raises(Forbidden, match=r"limited to \['acme'\], which leaves out carols-band; use a token"):
            acme_admin.organization("carols-band")
        assert "*/webhooks/999" not in {e.target for e in acme_admin.events(limit=500).events}
    with client(url, tokens["alice-acme-only"]) as acme_only:  # a member's token limited elsewhere: not there
        assert [o.name for o in acme_only.organizations()] == ["acme"]
        with pytest.raises(Forbidden, match="which leaves out carols-band; use a token that reaches carols-band to "
                                            "read it"):
            acme_only.organization("carols-band")
        with pytest.raises(Forbidden, match="to leave it"):
            acme_only.remove_member("carols-band", "alice")
    with client(url, tokens["alice"]) as alice:
        assert next(t for t in alice.tokens() if t.id == alice_ci.id).revoked
        assert any(t.id == alice_wide and not t.revoked for t in alice.tokens())
        assert "alice" in {x.member for x in alice.organization("carols-band").members}  # still a member
        alice.remove_member("carols-band", "alice")  # her own token leaves
    with client(url, tokens["root"]) as root:
        assert {"acme", "carols-band"} <= {o.name for o in root.organizations()}
        assert "*/webhooks/999" in {e.target for e in root.events(limit=500).events}


def test_tokens_through_the_api(server: dict[str, Any]) -> None:
    url, tokens = server["url"], server["tokens"]
    with client(url, tokens["alice"]) as alice:
        info, secret = alice.create_token(["read"], name="ci", expires_days=1, limited_to=["acme"])
        assert info.owner == "alice" and info.scopes == ["read"] and info.limited_to == ["acme"]
        with pytest.raises(Forbidden, match="cannot grant more"):
            alice.create_token(["admin"])
        with pytest.raises(Forbidden, match="Only admins create tokens for other users"):
            alice.create_token(["read"], user="bob")
        alice_tokens = alice.tokens()
        assert {t.id for t in alice_tokens} >= {info.id} and {t.owner for t in alice_tokens} == {"alice"}
    with client(url, secret) as ci:
        who = ci.whoami()
        assert (who.user, who.scopes, who.limited_to) == ("alice", ["read"], ["acme"])
        assert who.expires_at is not None
        with pytest.raises(NotFound, match="No adapter alice/secret"):
            ci.get("alice/secret")  # limited to acme: alice's own private adapters are out of reach
        assert ci.get("acme/team:1").owner == "acme"
        with pytest.raises(Forbidden, match="cannot grant more"):
            ci.create_token(["publish"], limited_to=["acme"])
        with pytest.raises(Forbidden, match="must be limited"):
            ci.create_token(["read"])
        with pytest.raises(Forbidden, match="cannot outlive it"):
            ci.create_token(["read"], limited_to=["acme"], expires_days=30)  # a leaked token mints no lasting one
        child, _ = ci.create_token(["read"], limited_to=["acme"])
        assert child.expires_at is not None and child.expires_at <= who.expires_at  # expires with its maker
        seen = ci.tokens()
        assert {info.id, child.id} <= {t.id for t in seen} and all(t.limited_to == ["acme"] for t in seen)
        wider = next(t.id for t in alice_tokens if t.limited_to is None)
        with pytest.raises(NotFound, match=f"No token with id {wider}"):
            ci.revoke_token(wider)
    with client(url, tokens["mallory"]) as mallory, pytest.raises(NotFound, match=f"No token with id {info.id}"):
        mallory.revoke_token(info.id)  # someone else's token is not there to revoke
    with client(url, tokens["alice"]) as alice:
        alice.revoke_token(info.id)
    revoked = httpx.get(f"{url}/api/v1/whoami", headers={"Authorization": f"Bearer {secret}"}, timeout=60)
    assert revoked.status_code == 401
    with client(url, tokens["root"]) as root:
        made, _ = root.create_token(["read"], user="erin")
        assert made.owner == "erin" and "erin" in {t.owner for t in root.tokens()}
    for field in ("owner", "org"):  # not fields of a token: refused, naming the field, and no token is made
        with client(url, tokens["alice"]) as alice:
            before = alice.tokens()
            refused = get(server, "alice", "/api/v1/tokens", "POST", json={"scopes": ["read"], field: "acme"})
            assert refused.status_code == 422 and field in refused.text and "Extra inputs" in refused.text
            assert [t.id for t in alice.tokens()] == [t.id for t in before]
    anonymous = get(server, None, "/api/v1/whoami").json()
    assert anonymous["anonymous"] is True and anonymous["scopes"] == ["read"]
    assert get(server, None, "/api/v1/tokens").status_code == 401  # no token: 401 (403 before session 54)
    assert get(server, "expired-alice", "/api/v1/whoami").status_code == 401
    # tokens made and revoked are audited, for the user and admins to see (an operator's walk, session 14)
    with client(url, tokens["alice"]) as alice:
        mine = [(e.actor, e.action, e.detail.get("token")) for e in alice.events(owner="alice").events
                if e.action.startswith("token-")]
    assert ("alice", "token-create", info.id) in mine and ("alice", "token-revoke", info.id) in mine
    with client(url, tokens["mallory"]) as mallory:
        assert not [e for e in mallory.events(owner="alice").events if e.action.startswith("token-")]
    with client(url, tokens["root"]) as root:
        assert any(e.action == "token-create" and e.actor == "root" and e.target == "erin"
                   for e in root.events(owner="erin").events)
        with pytest.raises(InvalidInput, match="acme is an organisation: a token acts for a user"):
            root.create_token(["read"], user="acme")  # it read acme's private adapters as acme itself, unseen


def test_login_stores_a_token_the_client_then_uses(server: dict[str, Any], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from registry.credentials import credentials_path
    from tests.commands import wide_vera as vera

    monkeypatch.setenv("VERA_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.delenv("VERA_TOKEN", raising=False)
    url = server["url"]
    refused = vera("login", "--registry", url, "--token", "vera_wrong")
    assert refused.returncode == 1 and "unknown or revoked" in refused.stderr and not credentials_path().exists()
    done = vera("login", "--registry", url, "--token", server["tokens"]["bob"])
    assert "logged in" in done.stdout and "bob" in done.stdout
    # commands other than login still go to the default address: it says how to make this registry the default
    assert f"`export VERA_REGISTRY_URL={url}`" in done.stdout
    monkeypatch.setenv("VERA_REGISTRY_URL", url)
    again = vera("login", "--token", server["tokens"]["bob"])
    assert "logged in" in again.stdout and "VERA_REGISTRY_URL" not in again.stdout  # already the default: no advice
    monkeypatch.delenv("VERA_REGISTRY_URL")
    assert credentials_path().stat().st_mode & 0o777 == 0o600
    assert "bob" in vera("whoami", "--registry", url).stdout  # no --token: the stored one
    assert "acme (read)" in vera("whoami", "--registry", url).stdout
    with RegistryClient(url, cache=False) as stored:
        assert stored.get("acme/team:1").owner == "acme"
    assert "logged out" in vera("logout", "--registry", url).stdout
    assert "anonymous" in vera("whoami", "--registry", url).stdout


def test_rotating_by_a_token_made_from_the_stored_one_says_what_it_revoked(
        server: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A team admin's walk (session 34): bob made a token with his stored one (`vera auth create-token`), logged in
    with it and revoked the old one; the new one, its child, went too, unsaid, and `vera whoami` then asked for
    "VERA_TOKEN or --token", which he had not passed."""
    from tests.commands import wide_vera as vera

    monkeypatch.setenv("VERA_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.delenv("VERA_TOKEN", raising=False)
    monkeypatch.setenv("VERA_REGISTRY_URL", server["url"])
    db = Database(server["database"])
    old_id, old = create_token(db, owner="dora", scopes=["read", "publish"])
    db.engine.dispose()
    assert vera("login", "--token", old).returncode == 0
    made = vera("auth", "create-token", "--scope", "read", "--name", "laptop-2027")
    new = next(word for word in made.stdout.split() if word.startswith("vera_"))
    assert vera("login", "--token", new).returncode == 0
    # asked first, since tokens made from it go too: a CI token went unasked (an operator's walk, session 48)
    kept = vera("auth", "revoke", str(old_id))
    flat = " ".join(kept.stdout.split() + kept.stderr.split())
    assert kept.returncode == 1 and f"Revoke token {old_id} and the 1 token made from it: " in flat and \
        "(laptop-2027)?" in flat and f"Token {old_id} was not revoked; pass --yes to revoke it and them without " \
        "asking. A token that must outlive it is made by an administrator (`vera token create`), not from it." in \
        flat, flat
    assert vera("whoami").returncode == 0  # nothing revoked
    revoked = vera("auth", "revoke", str(old_id), "--yes")
    flat = " ".join(revoked.stdout.split() + revoked.stderr.split())
    assert revoked.returncode == 0 and f"revoked token {old_id} and the tokens made from it: " in flat, flat
    assert "which this command ran with (the one `vera login` stored, or VERA_TOKEN), was among them: you are " \
           "signed out" in flat and "--user YOU" in flat
    refused = vera("whoami")
    assert refused.returncode == 1 and "The token was the one `vera login` stored for" in " ".join(
        refused.stderr.split())


def test_default_visibility_private(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    source = make_adapter(tmp_path / "adapter")
    with registry_in_thread(url, tmp_path / "blobs", VERA_REQUIRE_TOKENS="true",
                            VERA_DEFAULT_VISIBILITY="private") as base:
        db = Database(url)
        alice, eve = (create_token(db, owner=o, scopes=["read", "publish"])[1] for o in ("alice", "eve"))
        db.engine.dispose()
        with client(base, alice) as c:
            assert c.publish(source, "alice/quiet", base_model="tiny-llama").visibility == "private"
            assert c.publish(source, "alice/loud", base_model="tiny-llama", visibility="public").visibility == "public"
        with client(base, eve) as c:
            assert [v.ref for v in c.list_versions().items] == ["alice/loud:1"]


def test_operator_token_commands(tmp_path: Path) -> None:
    """On the registry's machine: create (with a limit and an expiry), list as JSON, revoke."""
    import json

    from tests.commands import wide_vera as vera

    db = ["--database-url", f"sqlite:///{tmp_path / 'r.db'}"]
    assert vera("db", "upgrade", *db).returncode == 0
    made = vera("token", "create", "--owner", "ci", "--scope", "read", "--limit-to", "acme", "--expires-days", "2",
                *db)
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip().splitlines()[-1]
    assert secret.startswith("vera_")
    listed = json.loads(vera("token", "list", "--json", *db).stdout)
    assert [(t["owner"], t["scopes"], t["limited_to"], t["revoked"]) for t in listed] == [
        ("ci", ["read"], ["acme"], False)]
    assert secret not in json.dumps(listed)  # secrets are shown once, never listed
    assert vera("token", "revoke", str(listed[0]["id"]), *db).returncode == 0
    assert json.loads(vera("token", "list", "--json", *db).stdout)[0]["revoked"] is True
    refused = vera("token", "create", "--owner", "ci", "--scope", "read", "--limit-to", "Not A Name", *db)
    assert refused.returncode == 1 and "not a valid name" in refused.stderr


def test_wrong_shapes_declared_under_a_name_are_removed_by_an_admin_only(server: dict[str, Any]) -> None:
    """An outsider's finding (session 32): anyone with publish declared shapes under a name others publish with
    (a Hub id, say), and every honest publish against it was refused, with no way back. A registry admin removes
    shapes that no version uses (audited for every reader); the name then serves the next publish."""
    from tests.commands import wide_vera as vera
    from tests.registry.adapters import LLAMA

    url, tokens = server["url"], server["tokens"]
    wrong = {**LLAMA.make().config.to_dict(), "hidden_size": 128, "intermediate_size": 96}
    with client(url, tokens["mallory"]) as mallory:
        mallory.register_base_model("popular/base", wrong)
        with pytest.raises(Forbidden):
            mallory.remove_base_model("popular/base")
    with client(url, tokens["alice"]) as alice, pytest.raises(InvalidInput, match="popular/base"):
        alice.publish(server["source"], "alice/honest", base_model="popular/base")  # the squatted shapes refuse it
    with client(url, tokens["root"]) as root:
        limited = root.create_token(["admin"], limited_to=["alice"], expires_days=1)[1]
    with client(url, limited) as acme_admin, pytest.raises(Forbidden, match="base models are every owner's"):
        acme_admin.remove_base_model("popular/base")
    removed = vera("base", "rm", "popular/base", "--registry", url, "--token", tokens["root"])
    assert removed.returncode == 0 and "removed popular/base@default (" in removed.stdout, removed.stderr
    with client(url, None) as anonymous:
        assert any(e.action == "base-remove" and e.target == "popular/base" and e.actor == "root"
                   for e in anonymous.events(action="base-remove").events)  # every reader sees it, as base-register
    with client(url, tokens["alice"]) as alice:
        alice.publish(server["source"], "alice/honest", base_model="popular/base")  # now its shapes are implied
    with client(url, tokens["root"]) as root:
        with pytest.raises(Conflict, match="popular/base@default has 1 version published against it"):
            root.remove_base_model("popular/base")
        with pytest.raises(NotFound, match="No base model never/declared@default"):
            root.remove_base_model("never/declared")
        assert "popular/base" in {b.name for b in root.base_models()}

"""Deleting an organisation: its admins (with publish scope) and the registry's admins may; it is refused (409), with
what is in the way and the commands that clear it, while it owns adapters, queued or running jobs or webhooks, and
nothing changes then; its memberships, the quota set for it and the old names of adapters that moved away go with it;
its name is retired (a registry admin may revive it). Through the services on SQLite and PostgreSQL, through a real
server, and `vera org delete`.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from registry.client import RegistryClient
from registry.domain.errors import Conflict, Forbidden, NotFound
from registry.domain.events import WebhookForm
from registry.services.delivery import Sender
from registry.services.events import Events
from registry.services.jobs import Jobs
from registry.services.registry import Registry
from registry.services.tokens import Principal, authenticate, create_token
from registry.services.webhooks import Webhooks
from registry.store import models as m
from registry.store.database import Database
from tests.commands import vera as run_vera
from tests.registry.adapters import make_adapter
from tests.registry.servers import registry_in_thread, team_tokens

#: Where webhooks point: a closed loopback port (allowed by allow_private), never called here.
HOOK_URL = "http://127.0.0.1:9/hook"


def principal(db: Database, user: str, scopes: list[str], limited_to: list[str] | None = None) -> Principal:
    """``user`` as a token of theirs authenticates (with the organisation roles it has now)."""
    return authenticate(db, create_token(db, owner=user, scopes=scopes, limited_to=limited_to)[1])


def state(db: Database, org: str) -> dict[str, Any]:
    """What deleting ``org`` would change: its row and members, the quota set for it, its old names, the
    org-delete events."""
    with db.session() as s:
        row = s.scalar(select(m.Organization).where(m.Organization.name == org))
        return {"members": {x.member: x.role for x in row.members} if row else None,
                "quota": s.get(m.OwnerQuota, org) is not None,
                "old_names": sorted(s.scalars(select(m.AdapterMove.name).where(m.AdapterMove.owner == org))),
                "deleted": [(e.actor, e.detail) for e in s.scalars(select(m.AuditEvent).where(
                    m.AuditEvent.action == "org-delete", m.AuditEvent.target == org))]}


def test_an_admin_deletes_an_empty_organisation_and_its_name_is_retired(registry: Registry, tmp_path: Path) -> None:
    db, access = registry.db, registry.access
    access.create_organization("acme", creator="ann", description="the team")
    ann = principal(db, "ann", ["read", "publish"])
    access.set_member("acme", "bob", "write", viewer=ann)
    registry.publish(make_adapter(tmp_path / "a"), owner="acme", name="old", base_model="tiny-llama")
    registry.move("acme/old", "ann/kept", actor="ann")  # acme/old is now an old name, pointing at ann/kept
    registry.set_quota("acme", 10**9, actor="root")
    assert state(db, "acme") == {"members": {"ann": "admin", "bob": "write"}, "quota": True, "old_names": ["old"],
                                 "deleted": []}

    access.delete_organization("acme", viewer=ann)
    assert state(db, "acme") == {"members": None, "quota": False, "old_names": [], "deleted": [
        ("ann", {"members": {"ann": "admin", "bob": "write"}, "old_names": 1, "quota": True, "retired": True})]}
    with db.session() as s:
        assert s.scalars(select(m.Membership)).all() == []
        assert s.get(m.VersionCounter, ("acme", "old")).last_version == 1  # acme/old:1 never names other bytes
    with pytest.raises(NotFound, match="No organisation 'acme' that you belong to"):
        access.organization("acme")
    assert registry.adapter("ann/kept").versions == 1  # the adapter that moved away is untouched
    root = principal(db, "root", ["admin"])
    shown = [e for e in Events(db).page(root, owner="acme").events if e.action == "org-delete"]
    assert [(e.actor, e.owner, e.adapter) for e in shown] == [("ann", "acme", None)]  # an event about a namespace

    # the name is retired: no new organisation or user takes it (its history would show to them), unless a registry
    # admin revives it; then a publish to the old name is no longer refused as moved, and takes the next number
    with pytest.raises(Conflict, match="'acme' was the name of an organisation that was deleted; it is retired.*a "
                                       "registry admin may revive it"):
        access.create_organization("acme", creator="dave")
    with pytest.raises(Conflict, match="'acme' was the name of an organisation that was deleted.*Choose another "
                                       "name for the user"):
        create_token(db, owner="acme", scopes=["read"])
    # nor does anything land there: an in-flight publish, move or job whose rights were read before the delete
    # (an outsider's walk, session 16, saw a slow publish and a move create acme/... after it)
    said = "acme was an organisation, and it was deleted: nothing is published or moved under its name"
    with pytest.raises(Conflict, match=said):
        registry.publish(make_adapter(tmp_path / "c", seed=3), owner="acme", name="late", base_model="tiny-llama")
    with pytest.raises(Conflict, match=said):
        registry.move("ann/kept", "acme/kept", actor="root")
    with pytest.raises(Conflict, match=said):
        Jobs(registry).submit({"demo": True}, owner="acme", target="acme/job")
    assert registry.adapter("ann/kept").versions == 1
    again = access.create_organization("acme", creator="dave", revive=True)
    assert [(x.member, x.role) for x in again.members] == [("dave", "admin")]
    assert registry.publish(make_adapter(tmp_path / "b", seed=2), owner="acme", name="old",
                            base_model="tiny-llama").version == 2
    registry.delete_adapter("acme/old", actor="dave")
    access.delete_organization("acme", viewer=principal(db, "dave", ["read", "publish"]))
    with pytest.raises(Conflict, match="it is retired"):  # deleted again: retired again
        create_token(db, owner="acme", scopes=["read"])


def test_an_organisation_that_owned_nothing_leaves_its_name_free(registry: Registry, tmp_path: Path) -> None:
    """Retiring the names of organisations with no history would let any publisher take a user name for good
    (create an organisation, delete it: an outsider's walk, session 16)."""
    db, access = registry.db, registry.access
    access.create_organization("carol", creator="mallory")
    access.delete_organization("carol", viewer=principal(db, "mallory", ["read", "publish"]))
    assert state(db, "carol")["deleted"][0][1]["retired"] is False
    with pytest.raises(Conflict, match="carol was an organisation, and it was deleted"):  # no user has it yet
        registry.publish(make_adapter(tmp_path / "a"), owner="carol", name="x", base_model="tiny-llama")
    create_token(db, owner="carol", scopes=["read", "publish"])  # the user carol: her name
    assert registry.publish(make_adapter(tmp_path / "a"), owner="carol", name="x", base_model="tiny-llama").version == 1


def test_it_is_refused_while_it_owns_adapters_jobs_or_webhooks(registry: Registry, tmp_path: Path) -> None:
    db, access, jobs = registry.db, registry.access, Jobs(registry)
    access.create_organization("acme", creator="ann")
    ann = principal(db, "ann", ["read", "publish"])
    access.set_member("acme", "bob", "read", viewer=ann)
    registry.publish(make_adapter(tmp_path / "a"), owner="acme", name="a", base_model="tiny-llama")
    running = jobs.submit({"demo": True}, owner="acme", target="acme/j").id
    claimed = jobs.claim("w1")
    assert claimed is not None and claimed.id == running
    queued = jobs.submit({"demo": True}, owner="acme", target="acme/k").id
    webhooks = Webhooks(db, Sender(allow_private=True))
    hook = webhooks.create(WebhookForm(owner="acme", url=HOOK_URL), actor="ann").id
    registry.set_quota("acme", 10**9, actor="root")
    before = state(db, "acme")

    def refusal() -> str:
        with pytest.raises(Conflict) as caught:
            access.delete_organization("acme", viewer=ann)
        assert state(db, "acme") == before  # nothing changed
        return str(caught.value)

    assert refusal() == (
        f"acme still owns 1 adapter (acme/a), 2 queued or running jobs (#{running}, #{queued}) and 1 webhook "
        f"(#{hook}), which would be left without an owner: nothing was deleted. First delete or move each adapter "
        "(`vera delete acme/NAME --all`, `vera mv acme/NAME OWNER/NAME`), cancel each job (`vera job cancel ID`; a "
        "running one ends after the training step it is on) and remove each webhook (`vera webhook rm ID`); then "
        "delete acme again (`vera org delete acme`).")
    assert registry.adapter("acme/a").versions == 1
    registry.delete_adapter("acme/a", actor="ann")
    assert refusal().startswith(f"acme still owns 2 queued or running jobs (#{running}, #{queued}) and 1 webhook")
    jobs.cancel(queued, actor="ann")
    jobs.cancel(running, actor="ann")  # asked to stop: it runs until its worker stops it
    said = refusal()
    assert said.startswith(f"acme still owns 1 queued or running job (#{running}) and 1 webhook (#{hook}), ")
    assert "First cancel each job" in said and "vera delete" not in said
    jobs.finish(running, "w1", status="cancelled")
    assert refusal().startswith(f"acme still owns 1 webhook (#{hook}), which would be left without an owner")
    webhooks.delete(hook, actor="ann")

    access.delete_organization("acme", viewer=ann)  # ended jobs are history: they stay, and do not stand in the way
    assert state(db, "acme")["members"] is None
    assert sorted(j.status for j in jobs.list_jobs(owner="acme")) == ["cancelled", "cancelled"]


def test_only_its_admins_and_the_registrys_admins_may_delete_it(registry: Registry) -> None:
    db, access = registry.db, registry.access
    access.create_organization("acme", creator="ann")
    ann = principal(db, "ann", ["read", "publish"])
    for member, role in (("bob", "write"), ("carol", "read"), ("dave", "admin")):
        access.set_member("acme", member, role, viewer=ann)
    before = state(db, "acme")
    mallory = principal(db, "mallory", ["read", "publish"])
    with pytest.raises(NotFound) as missing:
        access.delete_organization("nope", viewer=mallory)
    with pytest.raises(NotFound) as hidden:  # another user's organisation answers as a missing one
        access.delete_organization("acme", viewer=mallory)
    assert str(hidden.value) == str(missing.value).replace("'nope'", "'acme'")

    said = "Only the admins of acme \\(with a token of publish scope\\) and the registry's admins may delete it; "
    for who, why in (
            (principal(db, "bob", ["read", "publish"]), "your role there is 'write' \\(an admin of acme can change "
                                                        "it: `vera org add acme bob --role admin`\\)"),
            (principal(db, "carol", ["read", "publish"]), "your role there is 'read'"),
            (principal(db, "dave", ["read"]), "your token has no publish scope \\(use a token that has it .* or ask "
                                              "a registry admin for one \\(`vera token create --owner dave --scope "
                                              "publish` on the registry's machine\\)\\)"),
            (principal(db, "ann", ["read", "publish"], limited_to=["ann"]), "this token is limited to ann"),
            (principal(db, "root", ["admin"], limited_to=["ann"]), "this token is limited to ann")):
        with pytest.raises(Forbidden, match=said + why):
            access.delete_organization("acme", viewer=who)
    assert state(db, "acme") == before

    access.delete_organization("acme", viewer=principal(db, "root", ["admin"]))  # a registry admin, no member
    assert state(db, "acme")["deleted"] == [("root", {"members": {"ann": "admin", "bob": "write", "carol": "read",
                                                                  "dave": "admin"}, "old_names": 0, "quota": False,
                                                         "retired": False})]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("org-deletion")
    url = f"sqlite:///{root / 'r.db'}"
    with registry_in_thread(url, root / "blobs", VERA_REQUIRE_TOKENS="true", VERA_WEBHOOK_ALLOW_PRIVATE="true") as base:
        tokens = team_tokens(url, ("alice", "bob", "mallory"), admins=("root",))
        yield {"url": base, "tokens": tokens, "source": make_adapter(root / "a")}


def test_delete_through_the_api(server: dict[str, Any]) -> None:
    url, tokens = server["url"], server["tokens"]

    def delete(org: str, who: str) -> httpx.Response:
        return httpx.delete(f"{url}/api/v1/orgs/{org}", headers={"Authorization": f"Bearer {tokens[who]}"},
                            timeout=60)

    with RegistryClient(url, tokens["alice"], cache=False, retries=0) as alice:
        alice.create_organization("web")
        alice.set_member("web", "bob", "write")
        alice.publish(server["source"], "web/a", base_model="tiny-llama")
        refused = delete("web", "bob")
        assert refused.status_code == 403 and refused.json()["type"] == "/problems/forbidden"
        assert "Only the admins of web" in refused.json()["detail"]
        hidden, missing = delete("web", "mallory"), delete("nope", "mallory")
        assert hidden.status_code == missing.status_code == 404
        assert hidden.json()["detail"] == missing.json()["detail"].replace("'nope'", "'web'")
        busy = delete("web", "alice")
        assert busy.status_code == 409 and busy.json()["type"] == "/problems/conflict"
        assert busy.json()["detail"].startswith("web still owns 1 adapter (web/a), which would be left without")
        assert alice.organization("web").members  # still there
        alice.delete_adapter("web/a")
        done = delete("web", "alice")
        assert (done.status_code, done.content) == (204, b"")
        with pytest.raises(NotFound):
            alice.organization("web")
    with RegistryClient(url, tokens["bob"], cache=False, retries=0) as bob, \
            pytest.raises(Conflict, match="'web' was the name of an organisation that was deleted; it is retired"):
        bob.create_organization("web")  # a user may not take a deleted organisation's name (and its history)
    with RegistryClient(url, tokens["root"], cache=False, retries=0) as root:
        assert [x.member for x in root.create_organization("web").members] == ["root"]  # an admin revives it
        root.delete_organization("web")  # a registry admin who is no member
        assert "web" not in [o.name for o in root.organizations()]


def test_vera_org_delete(server: dict[str, Any]) -> None:
    url, tokens = server["url"], server["tokens"]
    env = {**os.environ, "COLUMNS": "300", "VERA_REGISTRY_URL": url, "VERA_TOKEN": tokens["alice"],
           "VERA_NO_CACHE": "1"}

    def vera(*args: str, answer: str = "") -> subprocess.CompletedProcess[str]:
        return run_vera(["org", "delete", *args], input=answer, env=env)

    with RegistryClient(url, tokens["alice"], cache=False, retries=0) as alice:
        alice.create_organization("cli-org")
        alice.publish(server["source"], "cli-org/a", base_model="tiny-llama")
        hook = alice.create_webhook("cli-org", "http://127.0.0.1:9/hook").id
        unanswered = vera("cli-org")  # no answer (stdin closed): not deleted
        assert unanswered.returncode == 1, unanswered.stderr
        assert "Delete organisation cli-org (1 member)?" in unanswered.stdout
        assert "Organisation cli-org was not deleted; pass --yes to delete without asking." in unanswered.stderr
        refused = vera("cli-org", "--yes")
        assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
        said = " ".join(refused.stderr.split())
        assert f"cli-org still owns 1 adapter (cli-org/a) and 1 webhook (#{hook})" in said
        assert "`vera delete cli-org/NAME --all`" in said and "`vera webhook rm ID`" in said
        assert alice.organization("cli-org").members
        alice.delete_adapter("cli-org/a")
        alice.delete_webhook(hook)
    done = vera("cli-org", answer="y\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.endswith("[y/N]: deleted organisation cli-org (1 member removed)\n")  # after the question
    again = vera("cli-org", "--yes")
    assert again.returncode == 1 and "No organisation 'cli-org' that you belong to" in again.stderr
    with RegistryClient(url, tokens["alice"], cache=False, retries=0) as alice:
        alice.create_organization("cli-two")
        alice.set_member("cli-two", "bob", "read")
    asked_not = vera("cli-two", "--yes")
    assert (asked_not.returncode, asked_not.stdout) == (0, "deleted organisation cli-two (2 members removed)\n")

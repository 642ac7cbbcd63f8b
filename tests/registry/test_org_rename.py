"""Renaming an organisation: its admins (with publish scope) and the registry's admins may; its adapters move to the
same names under the new one with everything they have, their old names answer with the new ones and take no
publish, its ended jobs, webhooks, quota and the tokens limited to it follow, and its old name is retired. Refused
(nothing changes) for a member who is not an admin, a name taken or retired or invalid, and while it has queued or
running jobs. Through the services on SQLite and PostgreSQL, through a real server, and `vera org rename`.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, func, select

from registry.client import RegistryClient
from registry.domain.errors import AdapterNotFound, Conflict, Forbidden, InvalidInput, NotFound
from registry.domain.events import WebhookForm
from registry.services.delivery import Sender
from registry.services.events import Events
from registry.services.jobs import Jobs
from registry.services.registry import Registry
from registry.services.tokens import authenticate, create_token, revoke_token
from registry.services.webhooks import Webhooks
from registry.store import models as m
from registry.store.database import Database
from tests.commands import vera as run_vera
from tests.registry.adapters import make_adapter
from tests.registry.servers import registry_in_thread, team_tokens
from tests.registry.test_org_deletion import HOOK_URL, principal


def _publish(registry: Registry, folder: Path, ref: str, seed: int = 0, **kwargs: Any) -> int:
    owner, name = ref.split("/")
    return registry.publish(make_adapter(folder, seed=seed), owner=owner, name=name, base_model="tiny-llama",
                            **kwargs).version


def everything(db: Database) -> dict[str, Any]:
    """Every row a rename would change (and the number of audit events), to see that a refusal changed nothing."""
    with db.session() as s:
        return {"orgs": sorted(s.scalars(select(m.Organization.name))),
                "adapters": sorted((a.owner, a.name) for a in s.scalars(select(m.Adapter))),
                "old_names": sorted((x.owner, x.name) for x in s.scalars(select(m.AdapterMove))),
                "counters": sorted((c.owner, c.name, c.last_version) for c in s.scalars(select(m.VersionCounter))),
                "jobs": sorted((j.id, j.owner, j.target_name) for j in s.scalars(select(m.Job))),
                "quotas": sorted(s.scalars(select(m.OwnerQuota.owner))),
                "webhooks": sorted(s.scalars(select(m.Webhook.owner))),
                "limits": sorted((t.id, tuple(t.limited_to or ())) for t in s.scalars(select(m.AccessToken))),
                "events": s.scalar(select(func.count()).select_from(m.AuditEvent))}


def test_a_renamed_organisation_takes_everything_with_it(registry: Registry, tmp_path: Path) -> None:
    db, access, jobs = registry.db, registry.access, Jobs(registry)
    access.create_organization("acme", creator="ann", description="the team")
    ann = principal(db, "ann", ["read", "publish"])
    access.set_member("acme", "bob", "write", viewer=ann)
    _publish(registry, tmp_path / "a1", "acme/a", tags=["nlp"])
    _publish(registry, tmp_path / "a2", "acme/a", seed=1)
    registry.set_alias("acme/a:1", "prod", actor="ann")
    _publish(registry, tmp_path / "p", "acme/secret", seed=2, visibility="private")
    _publish(registry, tmp_path / "g", "acme/gone", seed=3)
    registry.delete_adapter("acme/gone", actor="ann")  # acme/gone:1 named bytes once
    before = {ref: registry.get(ref) for ref in ("acme/a:1", "acme/a:2", "acme/secret:1")}
    ended = jobs.submit({"demo": True}, owner="acme", target="acme/trained").id
    jobs.cancel(ended, actor="ann")  # queued: cancelled at once, an ended job (history)
    hook = Webhooks(db, Sender(allow_private=True)).create(WebhookForm(owner="acme", url=HOOK_URL), actor="ann").id
    registry.set_quota("acme", 10**9, actor="root")
    _, limited = create_token(db, owner="bob", scopes=["read", "publish"], limited_to=["acme", "bob"])
    outsider = principal(db, "mallory", ["read", "publish"])
    # an outsider's token limited to acme, to read the new name off its own limit (session 38), and an admin's
    _, spying = create_token(db, owner="mallory", scopes=["read"], limited_to=["acme", "mallory"])
    _, rooted = create_token(db, owner="root", scopes=["admin"], limited_to=["acme"])

    renamed = access.rename_organization("acme", "acme-ai", viewer=ann)
    assert (renamed.name, renamed.description, renamed.created_by) == ("acme-ai", "the team", "ann")
    assert [(x.member, x.role) for x in renamed.members] == [("ann", "admin"), ("bob", "write")]
    assert [o.name for o in access.organizations()] == ["acme-ai"]

    # every adapter under its new name, with the same versions, bytes, aliases and tags
    info = registry.adapter("acme-ai/a")
    assert (info.versions, info.aliases) == (2, {"latest": 2, "prod": 1})
    for ref, version in before.items():
        now = registry.get(ref.replace("acme/", "acme-ai/"))
        assert (now.version, now.vectors_sha256, now.projection_fingerprint, now.tags) == (
            version.version, version.vectors_sha256, version.projection_fingerprint, version.tags)
    assert registry.get("acme-ai/a@prod").version == 1
    assert registry.adapter("acme-ai/secret").visibility == "private"
    # the old names point to the new ones (for who may read there) and take no publish, as after a move
    with pytest.raises(AdapterNotFound, match="No adapter acme/a"):
        registry.get("acme/a:1")
    bob = authenticate(db, limited)
    assert registry.moves.moved_to("acme", "secret", bob).ref == "acme-ai/secret"  # type: ignore[union-attr]
    assert registry.moves.moved_to("acme", "secret", outsider) is None  # private: not named to an outsider
    with pytest.raises(Conflict, match="acme/a was moved to acme-ai/a on .*: publish to acme-ai/a"):
        _publish(registry, tmp_path / "x", "acme/a", seed=4)
    with pytest.raises(Conflict, match="acme was an organisation, and it was renamed to acme-ai: .*Publish under "
                                       "acme-ai/ instead"):
        _publish(registry, tmp_path / "x", "acme/brand-new", seed=4)
    with pytest.raises(Conflict, match="acme was an organisation, and it was renamed to acme-ai"):
        jobs.submit({"demo": True}, owner="acme", target="acme/j")
    assert _publish(registry, tmp_path / "n", "acme-ai/a", seed=5) == 3  # numbers go on under the new name

    # the rest follows: ended jobs, webhooks, quota, tokens limited to it (which now write in the new name)
    with db.session() as s:
        job = s.get(m.Job, ended)
        assert (job.owner, job.target_name) == ("acme-ai", "acme-ai/trained")
        assert s.get(m.Webhook, hook).owner == "acme-ai"
        assert s.get(m.OwnerQuota, "acme-ai").quota_bytes == 10**9 and s.get(m.OwnerQuota, "acme") is None
        assert s.get(m.VersionCounter, ("acme", "gone")).last_version == 1  # acme/gone:1 still names its bytes
    assert registry.usage("acme-ai").quota_bytes == 10**9
    assert (bob.limited_to, bob.can_write("acme-ai"), bob.can_write("acme")) == (
        frozenset({"acme-ai", "bob"}), True, False)
    # a member's and an admin's limits follow the rename; an outsider's keeps the retired name, and learns nothing
    assert authenticate(db, rooted).limited_to == frozenset({"acme-ai"})
    assert authenticate(db, spying).limited_to == frozenset({"acme", "mallory"})
    assert [j.id for j in jobs.list_jobs(owner="acme-ai")] == [ended]

    # the old name is retired: no new organisation or user takes it (a registry admin may revive it)
    with pytest.raises(Conflict, match="'acme' was the name of an organisation that was renamed; it is "
                                       "retired.*a registry admin may revive it"):  # to where: not to an outsider
        access.create_organization("acme", creator="mallory")
    with pytest.raises(Conflict, match="'acme' was the name of an organisation that was renamed to 'acme-ai'; it is "
                                       "retired.*Choose another name for the user"):
        create_token(db, owner="acme", scopes=["read"])

    # audited: org-rename on both names (the old one's for tokens.retired), and a move of each adapter
    with db.session() as s:
        renames = [(e.actor, e.target, e.detail) for e in s.scalars(
            select(m.AuditEvent).where(m.AuditEvent.action == "org-rename").order_by(m.AuditEvent.id))]
        moves = sorted((e.target, e.detail["from"]) for e in s.scalars(
            select(m.AuditEvent).where(m.AuditEvent.action == "move")))
    assert renames == [("ann", "acme-ai", {"from": "acme", "to": "acme-ai", "retired": True}),
                       ("ann", "acme", {"from": "acme", "to": "acme-ai", "retired": True})]
    assert moves == [("acme-ai/a", "acme/a"), ("acme-ai/secret", "acme/secret")]
    ann = principal(db, "ann", ["read", "publish"])  # signed in again: her roles as they are now
    shown = [e for e in Events(db).page(ann, owner="acme-ai").events if e.action == "org-rename"]
    assert [(e.owner, e.detail) for e in shown] == [("acme-ai", {"from": "acme", "to": "acme-ai", "retired": True})]

    # renamed again, and back: the name it had is its own history
    access.rename_organization("acme-ai", "acme-labs", viewer=ann)
    assert registry.moves.moved_to("acme", "a", None).ref == "acme-labs/a"  # type: ignore[union-attr]
    root = principal(db, "root", ["admin"])
    back = access.rename_organization("acme-labs", "acme", viewer=root, revive=True)
    assert back.name == "acme" and registry.get("acme/a:1").vectors_sha256 == before["acme/a:1"].vectors_sha256
    assert registry.moves.moved_to("acme", "a", None) is None  # its own name again: no longer an old one
    assert _publish(registry, tmp_path / "b", "acme/a", seed=6) == 4


def test_refusals_change_nothing(registry: Registry, tmp_path: Path) -> None:
    db, access, jobs = registry.db, registry.access, Jobs(registry)
    access.create_organization("acme", creator="ann")
    ann = principal(db, "ann", ["read", "publish"])
    for member, role in (("bob", "write"), ("carol", "read")):
        access.set_member("acme", member, role, viewer=ann)
    _publish(registry, tmp_path / "a", "acme/a")
    access.create_organization("other", creator="dave")
    create_token(db, owner="erin", scopes=["read"])  # a user's name
    access.create_organization("old-team", creator="dave")
    _publish(registry, tmp_path / "o", "old-team/x", seed=1)
    registry.delete_adapter("old-team/x", actor="dave")
    access.delete_organization("old-team", viewer=principal(db, "dave", ["read", "publish"]))  # retired
    queued = jobs.submit({"demo": True}, owner="acme", target="acme/j").id
    bob, carol = principal(db, "bob", ["read", "publish"]), principal(db, "carol", ["read", "publish"])
    ann_reading, mallory = principal(db, "ann", ["read"]), principal(db, "mallory", ["read", "publish"])
    root_limited = principal(db, "root", ["admin"], limited_to=["ann"])
    before = everything(db)

    def refused(error: type[Exception], match: str, new: str, *, who: Any = ann, org: str = "acme") -> None:
        with pytest.raises(error, match=match):
            access.rename_organization(org, new, viewer=who)
        assert everything(db) == before

    refused(Conflict, f"acme has 1 queued or running job \\(#{queued}\\), which would publish under its old name: "
                      "nothing was renamed. Wait for them to end, or cancel them \\(`vera job cancel ID`.*then rename "
                      "acme again \\(`vera org rename acme acme-ai`\\)", "acme-ai")
    jobs.cancel(queued, actor="ann")
    before = everything(db)
    refused(Conflict, "The owner name 'other' is taken \\(by an organisation\\); choose another name", "other")
    refused(Conflict, "The owner name 'erin' is taken \\(by a user\\)", "erin")
    refused(Conflict, "'old-team' was the name of an organisation that was deleted; it is retired.*`vera org rename "
                      "acme old-team` with an admin token", "old-team")
    refused(InvalidInput, "New organisation name 'Bad Name' is not a valid name", "Bad Name")
    refused(InvalidInput, "New organisation name 'a/b' is not a valid name", "a/b")
    refused(InvalidInput, "acme is already called acme; give the name it should have now", "acme")
    said = "Only the admins of acme \\(with a token of publish scope\\) and the registry's admins may rename it; "
    refused(Forbidden, said + "your role there is 'write'", "acme-ai", who=bob)
    refused(Forbidden, said + "your role there is 'read'", "acme-ai", who=carol)
    refused(Forbidden, said + "your token has no publish scope", "acme-ai", who=ann_reading)
    refused(Forbidden, said + "this token is limited to ann", "acme-ai", who=root_limited)
    with pytest.raises(NotFound) as missing:
        access.rename_organization("nope", "acme-ai", viewer=mallory)
    with pytest.raises(NotFound) as hidden:  # another's organisation answers as a missing one
        access.rename_organization("acme", "acme-ai", viewer=mallory)
    assert str(hidden.value) == str(missing.value).replace("'nope'", "'acme'")
    assert everything(db) == before
    # a registry admin renames any organisation, and may take a retired name
    assert access.rename_organization("acme", "old-team", viewer=principal(db, "root", ["admin"]),
                                      revive=True).name == "old-team"
    assert registry.get("old-team/a:1").version == 1


def test_publishes_racing_a_rename_land_before_it_or_are_refused(registry: Registry, tmp_path: Path) -> None:
    """A publish of a new version, and of a new adapter, under the organisation while it is renamed: each waits for
    the rename or the rename for it (PostgreSQL: they lock the adapter, then the organisation, as the rename does,
    so neither deadlocks), and either lands before it (and moves with it) or is refused naming the new name."""
    first, second = make_adapter(tmp_path / "first"), make_adapter(tmp_path / "second", seed=1)
    ann = "ann"
    for round_ in range(4):
        org, new = f"race{round_}", f"race{round_}-new"
        registry.access.create_organization(org, creator=ann)
        registry.publish(first, owner=org, name="a", base_model="tiny-llama")
        outcomes: dict[str, object] = {}

        def publish(name: str, org: str = org, outcomes: dict[str, object] = outcomes) -> None:
            try:
                outcomes[name] = registry.publish(second, owner=org, name=name, base_model="tiny-llama").version
            except Conflict as exc:
                outcomes[name] = str(exc)

        racers = [threading.Thread(target=publish, args=(name,)) for name in ("a", "b")]
        for racer in racers:
            racer.start()
        registry.access.rename_organization(org, new, viewer=principal(registry.db, ann, ["read", "publish"]))
        for racer in racers:
            racer.join(timeout=120)
        assert outcomes["a"] == 2 or f"{org}/a was moved to {new}/a" in str(outcomes["a"]), outcomes
        assert outcomes["b"] == 1 or f"renamed to {new}" in str(outcomes["b"]), outcomes
        with registry.db.session() as s:
            assert s.scalar(select(func.count()).select_from(m.Adapter).where(m.Adapter.owner == org)) == 0
        assert registry.adapter(f"{new}/a").versions == (2 if outcomes["a"] == 2 else 1)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("org-rename")
    url = f"sqlite:///{root / 'r.db'}"
    with registry_in_thread(url, root / "blobs", VERA_REQUIRE_TOKENS="true") as base:
        tokens = team_tokens(url, ("alice", "bob", "mallory"), admins=("root",))
        yield {"url": base, "tokens": tokens, "source": make_adapter(root / "a")}


def test_rename_through_the_api(server: dict[str, Any]) -> None:
    url, tokens = server["url"], server["tokens"]

    def rename(org: str, who: str, body: dict[str, Any]) -> httpx.Response:
        return httpx.post(f"{url}/api/v1/orgs/{org}/rename", json=body, timeout=60,
                          headers={"Authorization": f"Bearer {tokens[who]}"})

    with RegistryClient(url, tokens["alice"], cache=False, retries=0) as alice:
        alice.create_organization("web")
        alice.set_member("web", "bob", "write")
        alice.publish(server["source"], "web/a", base_model="tiny-llama")
        sha = alice.get("web/a:1").vectors_sha256
        refused = rename("web", "bob", {"new_name": "web2"})
        assert refused.status_code == 403 and refused.json()["type"] == "/problems/forbidden"
        assert "Only the admins of web" in refused.json()["detail"]
        hidden, missing = rename("web", "mallory", {"new_name": "web2"}), rename("nope", "mallory", {"new_name": "x"})
        assert hidden.status_code == missing.status_code == 404
        assert hidden.json()["detail"] == missing.json()["detail"].replace("'nope'", "'web'")
        for body in ({"new_name": "Web 2"}, {"name": "web2"}, {}):
            bad = rename("web", "alice", body)
            assert bad.status_code == 422, (body, bad.text)
        taken = rename("web", "alice", {"new_name": "bob"})
        assert taken.status_code == 409 and taken.json()["type"] == "/problems/conflict"

        done = alice.rename_organization("web", "web2")
        assert (done.name, [x.member for x in done.members]) == ("web2", ["alice", "bob"])
        assert alice.get("web2/a:1").vectors_sha256 == sha
        assert alice.get("web/a:1").ref == "web2/a:1"  # the client follows the old name, warning
        old = httpx.get(f"{url}/api/v1/adapters/web/a/versions/1", timeout=60,
                        headers={"Authorization": f"Bearer {tokens['bob']}"})
        assert old.status_code == 404 and old.headers["X-Vera-Moved-To"] == "web2/a"
        with pytest.raises(Conflict, match="web/a was moved to web2/a"):
            alice.publish(server["source"], "web/a", base_model="tiny-llama")
        with pytest.raises(Conflict, match="web/a was moved to web2/a"):  # a job too (an outsider saw a bare 403)
            alice.submit_job("web/a", {"demo": True})
        with pytest.raises(NotFound):
            alice.organization("web")
    with RegistryClient(url, tokens["bob"], cache=False, retries=0) as bob, \
            pytest.raises(Conflict, match="'web' was the name of an organisation that was renamed to 'web2'"):
        bob.create_organization("web")


def test_vera_org_rename(server: dict[str, Any]) -> None:
    url, tokens = server["url"], server["tokens"]
    env = {**os.environ, "COLUMNS": "300", "VERA_REGISTRY_URL": url, "VERA_TOKEN": tokens["alice"],
           "VERA_NO_CACHE": "1"}

    def vera(*args: str) -> subprocess.CompletedProcess[str]:
        return run_vera(["org", "rename", *args], env=env)

    with RegistryClient(url, tokens["alice"], cache=False, retries=0) as alice:
        alice.create_organization("cli-org")
        alice.publish(server["source"], "cli-org/a", base_model="tiny-llama")
    bad = vera("cli-org", "Not Valid")
    assert bad.returncode != 0 and "New organisation name 'Not Valid' is not a valid name" in bad.stderr
    assert "Traceback" not in bad.stderr
    done = vera("cli-org", "cli-team")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("renamed organisation cli-org to cli-team: its adapters are cli-team/NAME now\n")
    again = vera("cli-org", "cli-x")
    assert again.returncode == 1 and "No organisation 'cli-org' that you belong to" in again.stderr
    with RegistryClient(url, tokens["alice"], cache=False, retries=0) as alice:
        assert alice.get("cli-team/a:1").version == 1


def test_an_empty_organisation_renamed_frees_its_name_and_outsiders_are_not_told_the_new_one(
        registry: Registry, tmp_path: Path) -> None:
    """An outsider's findings: renaming an organisation that owned nothing retired its old name (so that anyone with a
    publish token could retire user names one request each, where a delete leaves such a name free), and the refusal
    of a retired name told anyone the new name of a private organisation."""
    db, access = registry.db, registry.access
    access.create_organization("dave", creator="mallory")
    mallory = principal(db, "mallory", ["read", "publish"])
    access.rename_organization("dave", "dave-tmp", viewer=mallory)
    create_token(db, owner="dave", scopes=["read"])  # a user's name again: it retired nothing
    with db.session() as s:
        assert [e.detail["retired"] for e in s.scalars(select(m.AuditEvent).where(
            m.AuditEvent.action == "org-rename"))] == [False, False]

    access.create_organization("secretorg", creator="alice")
    _publish(registry, tmp_path / "s", "secretorg/model", visibility="private")
    alice = principal(db, "alice", ["read", "publish"])
    access.rename_organization("secretorg", "stealth-lab", viewer=alice)
    with pytest.raises(Conflict) as outsider:
        access.create_organization("secretorg", creator="mallory")
    assert "renamed; it is retired" in str(outsider.value) and "stealth-lab" not in str(outsider.value)
    with pytest.raises(Conflict) as renaming_onto_it:
        access.rename_organization("dave-tmp", "secretorg", viewer=principal(db, "mallory", ["read", "publish"]))
    assert "stealth-lab" not in str(renaming_onto_it.value)
    with pytest.raises(Conflict, match="renamed to 'stealth-lab'"):  # a member is told
        access.create_organization("secretorg", creator="alice")


def test_a_job_submitted_while_its_organisation_is_renamed_or_deleted_is_refused(registry: Registry) -> None:
    """An outsider's race: a job's owner was checked, then its dataset stored, then the job written; a rename (or a
    delete) that committed while the dataset was stored left the job queued under the old name. The rename lands
    exactly there now (in the dataset's store), and the job is refused, its dataset not kept."""
    db, access, jobs = registry.db, registry.access, Jobs(registry)
    for org in ("acme", "gone"):
        access.create_organization(org, creator="ann")
    ann = principal(db, "ann", ["read", "publish"])
    dataset = b"text,label\n" + b"".join(b"example %d,%d\n" % (i, i % 2) for i in range(40))
    store = registry.blobs.put
    for org, meanwhile, refusal in (
            ("acme", lambda: access.rename_organization("acme", "acme-ai", viewer=ann), "renamed to acme-ai"),
            ("gone", lambda: access.delete_organization("gone", viewer=ann), "it was deleted")):
        def put_then_change(data: bytes, change: Any = meanwhile) -> str:
            digest = store(data)
            change()  # committed between the job's first check and its write
            return digest

        registry.blobs.put = put_then_change  # type: ignore[method-assign]
        try:
            with pytest.raises(Conflict, match=refusal):
                jobs.submit({"base_model": "minilm", "task": "classification"}, owner=org,
                            target=f"{org}/model", dataset=dataset, dataset_name="d.csv")
        finally:
            registry.blobs.put = store  # type: ignore[method-assign]
        with db.session() as s:
            assert s.scalar(select(func.count()).select_from(m.Job)) == 0
        assert not registry.blobs.exists(hashlib.sha256(dataset).hexdigest())  # stored for the job alone: removed


def test_an_organisation_cannot_take_the_name_of_a_member_or_invitee_without_a_token(registry: Registry) -> None:
    """An outsider's finding: alice added zed (no token yet) to her organisation; mallory renamed hers to zed (and
    could have created one), and zed could then never get a token. A member's or invitee's name is a user's."""
    db, access = registry.db, registry.access
    access.create_organization("lab", creator="alice")
    alice = principal(db, "alice", ["read", "publish"])
    access.set_member("lab", "zed", "admin", viewer=alice)
    with db.session() as s:  # a pending invitation (VERA_ORG_INVITATIONS) names a user too
        org = s.scalar(select(m.Organization).where(m.Organization.name == "lab"))
        s.add(m.OrgInvitation(organization_id=org.id, member="yan", role="read", invited_by="alice",
                              expires_at=datetime.now(UTC) + timedelta(days=1)))
    access.create_organization("mine", creator="mallory")
    mallory = principal(db, "mallory", ["read", "publish"])
    for name in ("zed", "yan"):
        with pytest.raises(Conflict, match=f"The owner name '{name}' is taken \\(by a user\\)"):
            access.rename_organization("mine", name, viewer=mallory)
        with pytest.raises(Conflict, match=f"The owner name '{name}' is taken \\(by a user\\)"):
            access.create_organization(name, creator="mallory")
    create_token(db, owner="zed", scopes=["read"])


def test_an_organisation_cannot_take_a_departed_users_name_and_history(registry: Registry, tmp_path: Path) -> None:
    """An outsider's finding: a user whose tokens were purged and adapters deleted held nothing under their name, so
    an organisation could be created with it, and its members read the user's old jobs and events. A name with a
    user's history is refused, except to a registry admin reviving it on purpose."""
    db, access = registry.db, registry.access
    registry.publish(make_adapter(tmp_path / "a"), owner="gone", name="old", base_model="tiny-llama")
    Jobs(registry).submit({"demo": True}, owner="gone", target="gone/next")
    registry.delete_adapter("gone/old", actor="gone")
    assert registry.list_versions(owner="gone").items == []  # nothing of theirs left to see, but the history
    for name in ("gone", "tokened"):
        if name == "tokened":  # a user who only ever held a token, since revoked and purged
            token_id, _ = create_token(db, owner="tokened", scopes=["read"])
            revoke_token(db, token_id)
            with db.session() as s:
                s.execute(delete(m.AccessToken).where(m.AccessToken.owner == "tokened"))
        with pytest.raises(Conflict, match=f"The owner name '{name}' was a user's, whose history the registry keeps"):
            access.create_organization(name, creator="mallory")
        access.create_organization("mine", creator="mallory")
        with pytest.raises(Conflict, match="was a user's"):
            access.rename_organization("mine", name, viewer=principal(db, "mallory", ["read", "publish"]))
        access.delete_organization("mine", viewer=principal(db, "mallory", ["read", "publish"]))
        access.create_organization(name, creator="root", revive=True)  # an admin's deliberate choice
    access.create_organization("never-used", creator="mallory")  # a name without a past stays free


"""Invitations to organisations (VERA_ORG_INVITATIONS): off, a user added is a member at once (as before); on, a user
who is not a member is invited instead, and joins with the invited role only by accepting before the invitation
expires; they may decline, an admin may cancel, inviting again renews it with the new role, a member's role change
stays immediate, nobody answers another's invitation, and an organisation's deletion takes its invitations. Through
the services on SQLite and PostgreSQL, migration 0019 up and down, a real server, and the `vera org` commands.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event, inspect, select, text, update

from registry.client import RegistryClient
from registry.domain.errors import Forbidden, InvalidInput, NotFound
from registry.services import access as access_module
from registry.services.access import Access
from registry.services.invitations import InvitationPolicy, Leftovers
from registry.services.registry import Registry
from registry.services.tokens import LOCAL_USER
from registry.store import models as m
from registry.store.database import Database
from tests.commands import vera as run_vera
from tests.registry.servers import issued_tokens, registry_in_thread
from tests.registry.test_migration_0009 import EXPECTED, _kept, filled_at
from tests.registry.test_migration_0016 import ORGANISATION
from tests.registry.test_org_deletion import principal

ON = InvitationPolicy(required=True, lifetime=timedelta(days=14))
PUBLISHER = ["read", "publish"]


@pytest.fixture
def access(registry: Registry) -> Access:
    """The registry's organisations with invitations on (VERA_ORG_INVITATIONS=true)."""
    return Access(registry.db, ON)


def events(db: Database, *actions: str) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(actor, action, target, detail) of the audit events of ``actions``, in order."""
    with db.session() as s:
        return [(e.actor, e.action, e.target, e.detail) for e in s.scalars(
            select(m.AuditEvent).where(m.AuditEvent.action.in_(actions)).order_by(m.AuditEvent.id))]


def expire(db: Database, org: str, member: str) -> None:
    """Set the invitation's expiry in the past, as time would."""
    with db.session() as s:
        org_id = s.scalar(select(m.Organization.id).where(m.Organization.name == org))
        s.execute(update(m.OrgInvitation).where(m.OrgInvitation.organization_id == org_id,
                                                m.OrgInvitation.member == member)
                  .values(expires_at=datetime.now(UTC) - timedelta(minutes=1)))


def test_off_a_user_added_is_a_member_at_once(registry: Registry) -> None:
    db, access = registry.db, registry.access
    access.create_organization("acme", creator="ann")
    info = access.set_member("acme", "bob", "write", viewer=principal(db, "ann", ["read", "publish"]))
    assert {x.member: x.role for x in info.members} == {"ann": "admin", "bob": "write"}
    assert info.invitations == [] and info.invited("bob") is None
    # by name in every answer: the one adding a member listed it last, the next by name (an operator's walk, 48)
    added = access.set_member("acme", "abe", "read", viewer=principal(db, "ann", ["read", "publish"]))
    assert [x.member for x in added.members] == ["abe", "ann", "bob"]
    assert events(db, "member-set", "org-invite") == [("ann", "member-set", "acme", {"member": "bob", "role": "write"}),
                                                      ("ann", "member-set", "acme", {"member": "abe", "role": "read"})]


def test_an_invited_user_accepts_and_is_a_member_with_the_invited_role(registry: Registry, access: Access) -> None:
    db = registry.db
    access.create_organization("acme", creator="ann")
    ann, bob = principal(db, "ann", ["read", "publish"]), principal(db, "bob", ["read"])
    before = datetime.now(UTC)
    info = access.set_member("acme", "bob", "read", viewer=ann)
    assert [x.member for x in info.members] == ["ann"]  # not a member yet
    invited = info.invited("bob")
    assert invited is not None and (invited.organization, invited.member, invited.role, invited.invited_by) == (
        "acme", "bob", "read", "ann")
    assert before + timedelta(days=14) <= invited.expires_at <= datetime.now(UTC) + timedelta(days=14)
    first_expiry = invited.expires_at
    info = access.set_member("acme", "bob", "write", viewer=ann)  # again: the role and the expiry are renewed
    assert [(i.member, i.role) for i in info.invitations] == [("bob", "write")]
    assert info.invitations[0].expires_at > first_expiry
    assert access.organization("acme", ann).invitations == info.invitations  # the admin sees it
    assert [(i.organization, i.role) for i in access.invitations(bob)] == [("acme", "write")]
    assert access.pending_invitations(bob) == 1
    with pytest.raises(NotFound):  # not a member before accepting: acme is not there to see
        access.organization("acme", bob)

    joined = access.accept_invitation("acme", viewer=bob)  # a read token accepts: joining is the user's consent
    assert {x.member: x.role for x in joined.members} == {"ann": "admin", "bob": "write"}
    assert joined.invitations == []  # bob is no admin there: none are shown to him
    assert access.invitations(bob) == [] and access.pending_invitations(bob) == 0
    with pytest.raises(NotFound, match="No pending invitation to 'acme' for bob; `vera org invitations` lists yours. "
                                       "An invitation expires after 14 days"):
        access.accept_invitation("acme", viewer=bob)  # answered once
    assert events(db, "org-invite", "org-join", "member-set") == [
        ("ann", "org-invite", "acme", {"member": "bob", "role": "read"}),
        ("ann", "org-invite", "acme", {"member": "bob", "role": "write"}),
        ("bob", "org-join", "acme", {"role": "write", "invited_by": "ann"})]
    with db.session() as s:
        added_by = s.scalar(select(m.Membership.added_by).where(m.Membership.member == "bob"))
    assert added_by == "ann"

    changed = access.set_member("acme", "bob", "read", viewer=ann)  # a member's role changes at once
    assert {x.member: x.role for x in changed.members}["bob"] == "read" and changed.invitations == []
    assert events(db, "member-set")[-1] == ("ann", "member-set", "acme", {"member": "bob", "role": "read"})


def test_decline_cancel_and_who_may_answer_or_invite(registry: Registry, access: Access) -> None:
    db = registry.db
    access.create_organization("acme", creator="ann")
    ann, carol = principal(db, "ann", ["read", "publish"]), principal(db, "carol", ["read", "publish"])
    for member, role in (("bob", "write"), ("carol", "read"), ("dave", "admin")):
        access.set_member("acme", member, role, viewer=ann)
    bob = principal(db, "bob", ["read", "publish"])
    access.accept_invitation("acme", viewer=bob)
    bob = principal(db, "bob", ["read", "publish"])  # a token of his now carries his role

    mallory = principal(db, "mallory", ["read", "publish"])
    with pytest.raises(NotFound) as outsider:  # another's invitation: as if there were none
        access.accept_invitation("acme", viewer=mallory)
    with pytest.raises(NotFound) as missing:
        access.accept_invitation("nope", viewer=mallory)
    assert str(outsider.value) == str(missing.value).replace("'nope'", "'acme'").replace("of nope", "of acme")
    with pytest.raises(NotFound):
        access.decline_invitation("acme", viewer=mallory)
    assert {i.member for i in access.organization("acme").invitations} == {"carol", "dave"}  # untouched

    with pytest.raises(Forbidden, match="Only admins of acme manage its members; your role is 'write'"):
        access.set_member("acme", "erin", "read", viewer=bob)  # a member who is no admin invites nobody
    with pytest.raises(Forbidden, match="Only admins of acme manage its members"):
        access.cancel_invitation("acme", "carol", viewer=bob)
    with pytest.raises(NotFound, match="No organisation 'acme' that you belong to"):
        access.cancel_invitation("acme", "carol", viewer=mallory)
    assert access.organization("acme", bob).invitations == []  # shown to admins only
    root = principal(db, "root", ["admin"])
    assert {i.member for i in access.organization("acme", root).invitations} == {"carol", "dave"}
    assert {i.member for o in access.organizations(root) for i in o.invitations} == {"carol", "dave"}
    assert [o.invitations for o in access.organizations(bob)] == [[]]

    access.decline_invitation("acme", viewer=carol)
    assert access.invitations(carol) == []
    with pytest.raises(NotFound):
        access.accept_invitation("acme", viewer=carol)
    assert "carol" not in {x.member for x in access.organization("acme").members}

    after = access.cancel_invitation("acme", "dave", viewer=ann)
    assert after.invitations == []
    with pytest.raises(NotFound, match="No pending invitation to acme for 'dave'; `vera org show acme` lists its"):
        access.cancel_invitation("acme", "dave", viewer=ann)
    with pytest.raises(NotFound):
        access.accept_invitation("acme", viewer=principal(db, "dave", ["read"]))
    assert events(db, "org-decline", "org-invite-cancel") == [
        ("carol", "org-decline", "acme", {"role": "read", "invited_by": "ann"}),
        ("ann", "org-invite-cancel", "acme", {"member": "dave", "role": "admin"})]
    assert {x.member: x.role for x in access.organization("acme").members} == {"ann": "admin", "bob": "write"}


def test_an_admin_who_leaves_or_is_demoted_takes_their_pending_invitations_along(registry: Registry,
                                                                                 access: Access) -> None:
    """An outsider's finding: a removed admin's invitations let the people they invited in afterwards. Each pending
    invitation an admin made is withdrawn (audited, saying why) when they stop being an admin; others' stay."""
    db = registry.db
    access.create_organization("acme", creator="ann")
    ann = principal(db, "ann", PUBLISHER)
    for member in ("bob", "cy"):
        access.set_member("acme", member, "admin", viewer=ann)
        access.accept_invitation("acme", viewer=principal(db, member, PUBLISHER))
    bob, cy = principal(db, "bob", PUBLISHER), principal(db, "cy", PUBLISHER)
    access.set_member("acme", "mallory", "admin", viewer=bob)
    access.set_member("acme", "trent", "write", viewer=bob)
    access.set_member("acme", "carol", "read", viewer=cy)
    access.set_member("acme", "bob", "write", viewer=ann)  # demoted: his two invitations go
    assert {i.member: i.invited_by for i in access.organization("acme").invitations} == {"carol": "cy"}
    with pytest.raises(NotFound):
        access.accept_invitation("acme", viewer=principal(db, "mallory", PUBLISHER))
    access.set_member("acme", "dan", "read", viewer=cy)
    access.remove_member("acme", "cy", viewer=ann)  # removed: hers go
    assert access.organization("acme").invitations == []
    assert [(a, t, d) for a, _, t, d in events(db, "org-invite-cancel")] == [
        ("ann", "acme", {"member": "mallory", "role": "admin",
                         "reason": "withdrawn: bob, who invited them, is no longer an admin here"}),
        ("ann", "acme", {"member": "trent", "role": "write",
                         "reason": "withdrawn: bob, who invited them, is no longer an admin here"}),
        ("ann", "acme", {"member": "carol", "role": "read",
                         "reason": "withdrawn: cy, who invited them, left the organisation"}),
        ("ann", "acme", {"member": "dan", "role": "read",
                         "reason": "withdrawn: cy, who invited them, left the organisation"})]
    access.set_member("acme", "mallory", "read", viewer=ann)  # an admin may invite them again
    assert [i.member for i in access.organization("acme").invitations] == ["mallory"]


def test_an_expired_invitation_is_not_pending_and_can_be_renewed(registry: Registry, access: Access) -> None:
    db = registry.db
    access.create_organization("acme", creator="ann")
    ann, bob = principal(db, "ann", ["read", "publish"]), principal(db, "bob", ["read"])
    access.set_member("acme", "bob", "write", viewer=ann)
    expire(db, "acme", "bob")
    assert access.invitations(bob) == [] and access.pending_invitations(bob) == 0
    assert access.organization("acme", ann).invitations == []
    with pytest.raises(NotFound, match="No pending invitation to 'acme' for bob"):
        access.accept_invitation("acme", viewer=bob)
    with pytest.raises(NotFound, match="No pending invitation to acme for 'bob'"):
        access.cancel_invitation("acme", "bob", viewer=ann)
    access.set_member("acme", "bob", "read", viewer=ann)  # invited again: pending again, with the new role
    assert [(i.organization, i.role) for i in access.invitations(bob)] == [("acme", "read")]
    assert {x.member: x.role for x in access.accept_invitation("acme", viewer=bob).members}["bob"] == "read"


def test_a_token_limited_elsewhere_neither_sees_nor_answers_an_invitation(registry: Registry, access: Access) -> None:
    db = registry.db
    access.create_organization("acme", creator="ann")
    access.set_member("acme", "bob", "write", viewer=principal(db, "ann", ["read", "publish"]))
    ci = principal(db, "bob", ["read", "publish"], limited_to=["bob"])
    assert access.invitations(ci) == [] and access.pending_invitations(ci) == 0
    with pytest.raises(NotFound, match="This token is limited to bob, so it answers no invitation to 'acme': answer "
                                       "with a token without that limit"):  # (it read as if there were none)
        access.accept_invitation("acme", viewer=ci)
    with pytest.raises(NotFound, match="limited to bob, so it answers no invitation to 'nowhere'"):  # said alike
        access.decline_invitation("nowhere", viewer=ci)
    within = principal(db, "bob", ["read"], limited_to=["acme"])
    assert [i.organization for i in access.invitations(within)] == ["acme"]
    assert "bob" in {x.member for x in access.accept_invitation("acme", viewer=within).members}


def test_invitations_count_toward_the_members_an_organisation_takes(registry: Registry, access: Access,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(access_module, "MAX_MEMBERS", 3)
    db = registry.db
    access.create_organization("acme", creator="ann")
    ann = principal(db, "ann", ["read", "publish"])
    access.set_member("acme", "bob", "read", viewer=ann)
    access.set_member("acme", "carol", "read", viewer=ann)
    access.set_member("acme", "carol", "write", viewer=ann)  # renewing one is no new one
    with pytest.raises(InvalidInput, match=r"acme has 1 member and 2 pending invitations, the most an organisation "
                                           r"takes \(3 in all\); cancel an invitation \(`vera org uninvite acme USER`"):
        access.set_member("acme", "dave", "read", viewer=ann)
    expire(db, "acme", "bob")  # an expired one makes room, and goes
    access.set_member("acme", "dave", "read", viewer=ann)
    with db.session() as s:
        assert sorted(s.scalars(select(m.OrgInvitation.member))) == ["carol", "dave"]


def test_deleting_an_organisation_takes_its_invitations(registry: Registry, access: Access) -> None:
    db = registry.db
    access.create_organization("acme", creator="ann")
    ann, bob = principal(db, "ann", ["read", "publish"]), principal(db, "bob", ["read"])
    access.set_member("acme", "bob", "admin", viewer=ann)
    access.set_member("acme", "carol", "read", viewer=ann)
    access.delete_organization("acme", viewer=ann)
    with db.session() as s:
        assert s.scalars(select(m.OrgInvitation)).all() == []
    assert access.invitations(bob) == []
    access.create_organization("acme", creator="dave")  # a new acme (the old one left no history)
    with pytest.raises(NotFound):
        access.accept_invitation("acme", viewer=bob)  # the old acme's invitation does not open the new one


def test_invitations_left_from_when_they_were_on_can_still_be_answered(registry: Registry, access: Access) -> None:
    """Turned off, a user added is a member at once, and their invitation goes; the others can still be answered."""
    db = registry.db
    access.create_organization("acme", creator="ann")
    ann = principal(db, "ann", ["read", "publish"])
    access.set_member("acme", "bob", "write", viewer=ann)
    access.set_member("acme", "carol", "write", viewer=ann)
    off = registry.access
    info = off.set_member("acme", "bob", "read", viewer=ann)
    assert {x.member: x.role for x in info.members}["bob"] == "read"
    assert [i.member for i in info.invitations] == ["carol"]
    assert [x.member for x in off.accept_invitation("acme", viewer=principal(db, "carol", ["read"])).members] == [
        "ann", "bob", "carol"]


def test_whoami_counts_with_one_indexed_query_and_none_once_invitations_are_off_and_answered(
        registry: Registry, access: Access) -> None:
    """On, a user's count (whoami, on every page of the dashboard) is one query. Off, nothing sends an invitation,
    but those left from when they were on can still be accepted, so they are counted (one query) until none is
    pending for anyone; then the count is 0 without a query, until Leftovers asks again (a process with the setting
    still on may have sent one)."""
    db = registry.db
    now = [0.0]
    off = Access(db)
    off.leftovers = Leftovers(recheck_s=60.0, clock=lambda: now[0])
    access.create_organization("acme", creator="ann")
    ann, bob, carol = (principal(db, "ann", ["read", "publish"]), principal(db, "bob", ["read"]),
                       principal(db, "carol", ["read"]))
    access.set_member("acme", "bob", "write", viewer=ann)
    statements: list[str] = []

    def seen(*args: Any) -> None:
        statements.append(args[2])

    event.listen(db.engine, "before_cursor_execute", seen)
    try:
        assert [access.pending_invitations(bob), access.pending_invitations(carol)] == [1, 0]
        assert len(statements) == 2 and "JOIN" not in statements[0]  # no join: ix_org_invitations_member alone
        statements.clear()
        assert [off.pending_invitations(bob), off.pending_invitations(carol), off.pending_invitations(bob)] == [1, 0, 1]
        assert len(statements) == 3  # a leftover is pending: counted, each call one statement
        off.accept_invitation("acme", viewer=bob)  # off, it can still be accepted
        statements.clear()
        assert off.pending_invitations(bob) == 0 and len(statements) == 1  # ... and sees that none is left
        assert [off.pending_invitations(carol) for _ in range(50)] == [0] * 50 and len(statements) == 1
        access.set_member("acme", "carol", "read", viewer=ann)  # a process with invitations still on sends one
        statements.clear()
        now[0] = 59.9
        assert off.pending_invitations(carol) == 0 and statements == []  # not seen yet ...
        now[0] = 60.0
        assert off.pending_invitations(carol) == 1 and len(statements) == 1  # ... but within a minute
        assert off.pending_invitations(carol) == 1 and len(statements) == 2
    finally:
        event.remove(db.engine, "before_cursor_execute", seen)
    assert off.pending_invitations(principal(db, "carol", ["read"], limited_to=["carol"])) == 0  # within its limit
    assert off.pending_invitations(principal(db, "carol", ["read"], limited_to=["acme"])) == 1


def test_in_local_mode_an_admin_adds_at_once_for_nobody_could_accept(registry: Registry, access: Access) -> None:
    """Without tokens every caller is the local user, so an invitation could never be accepted: the local user's add
    makes a member at once, as with invitations off, and drops an invitation left from token mode."""
    db = registry.db
    access.create_organization("lab", creator="ann")
    ann = principal(db, "ann", ["read", "publish"])
    access.set_member("lab", "bob", "write", viewer=ann)  # sent while the registry had tokens
    access.set_member("lab", "local", "admin", viewer=ann)
    access.accept_invitation("lab", viewer=LOCAL_USER)  # "local" may be a name invited in token mode
    for member in ("bob", "carol"):
        info = access.set_member("lab", member, "write", viewer=LOCAL_USER)
        assert member in {x.member for x in info.members} and info.invited(member) is None
    assert access.organization("lab").invitations == []
    assert events(db, "member-set")[-2:] == [("local", "member-set", "lab", {"member": m, "role": "write"})
                                             for m in ("bob", "carol")]


def test_local_mode_with_invitations_on_adds_members_through_the_api(tmp_path: Path) -> None:
    with registry_in_thread(f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "blobs", VERA_ORG_INVITATIONS="true") as url:
        env = {**os.environ, "COLUMNS": "300", "VERA_REGISTRY_URL": url, "VERA_NO_CACHE": "1"}
        env.pop("VERA_TOKEN", None)
        with RegistryClient(url, cache=False, retries=0) as local:
            local.create_organization("lab")
            added = run_vera(["org", "add", "lab", "bob", "--role", "write"], env=env)
            assert added.returncode == 0 and "invited" not in added.stdout, (added.stdout, added.stderr)
            org = local.organization("lab")
            assert ({x.member: x.role for x in org.members}, org.invitations) == (
                {"local": "admin", "bob": "write"}, [])
            assert local.whoami().pending_invitations == 0


def test_migration_0019_keeps_every_row_up_and_down(database_url: str) -> None:
    db = filled_at(database_url, "0018", *ORGANISATION)

    def memberships() -> list[tuple[Any, ...]]:
        with db.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(
                "SELECT o.name, m.member, m.role FROM memberships m JOIN organizations o ON o.id = m.organization_id"))]

    db.upgrade("0019")
    assert _kept(db) == EXPECTED and memberships() == [("acme", "bob", "write")]
    assert "org_invitations" in set(inspect(db.engine).get_table_names())
    with db.engine.begin() as conn:
        conn.execute(text("INSERT INTO org_invitations (organization_id, member, role, invited_by, invited_at, "
                          "expires_at) VALUES (1, 'carol', 'read', 'ann', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
    db.downgrade("0018")
    assert _kept(db) == EXPECTED and memberships() == [("acme", "bob", "write")]
    assert "org_invitations" not in set(inspect(db.engine).get_table_names())
    db.upgrade()
    assert _kept(db) == EXPECTED and memberships() == [("acme", "bob", "write")]
    db.engine.dispose()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("invitations")
    url = f"sqlite:///{root / 'r.db'}"
    grants = {"alice": ("alice", PUBLISHER), "bob": ("bob", PUBLISHER), "carol": ("carol", PUBLISHER),
              "mallory": ("mallory", PUBLISHER), "reader": ("bob", ["read"]), "root": ("root", ["admin"])}
    with registry_in_thread(url, root / "blobs", VERA_REQUIRE_TOKENS="true", VERA_ORG_INVITATIONS="true",
                            VERA_ORG_INVITATION_DAYS="7") as base:
        yield {"url": base, "db": url, "tokens": dict(zip(grants, issued_tokens(url, *grants.values()), strict=True))}


def test_invitations_through_the_api(server: dict[str, Any]) -> None:
    url, tokens = server["url"], server["tokens"]

    def call(method: str, path: str, who: str | None, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {tokens[who]}"} if who else {}
        return httpx.request(method, f"{url}/api/v1{path}", headers=headers, timeout=60, **kwargs)

    with RegistryClient(url, tokens["alice"], cache=False, retries=0) as alice:
        alice.create_organization("api-org")
    put = call("PUT", "/orgs/api-org/members/bob", "alice", json={"role": "write"})
    assert put.status_code == 200, put.text
    body = put.json()
    assert [x["member"] for x in body["members"]] == ["alice"]
    assert [(i["member"], i["role"], i["invited_by"]) for i in body["invitations"]] == [("bob", "write", "alice")]
    assert set(body["invitations"][0]) == {"organization", "member", "role", "invited_by", "invited_at", "expires_at"}
    expires = datetime.fromisoformat(body["invitations"][0]["expires_at"])
    assert timedelta(days=6.99) < expires - datetime.now(UTC) <= timedelta(days=7)  # VERA_ORG_INVITATION_DAYS
    assert call("GET", "/whoami", "reader").json()["pending_invitations"] == 1
    listed = call("GET", "/invitations", "reader")
    assert listed.status_code == 200 and [i["organization"] for i in listed.json()] == ["api-org"]
    assert call("GET", "/invitations", None).status_code == 401
    refused = call("POST", "/invitations/api-org", "mallory")  # not hers to accept
    assert refused.status_code == 404 and refused.json()["type"] == "/problems/not_found"
    assert call("DELETE", "/invitations/api-org", "mallory").status_code == 404

    accepted = call("POST", "/invitations/api-org", "reader")
    assert accepted.status_code == 200, accepted.text
    assert {x["member"]: x["role"] for x in accepted.json()["members"]} == {"alice": "admin", "bob": "write"}
    assert accepted.json()["invitations"] == []
    assert call("POST", "/invitations/api-org", "reader").status_code == 404
    assert call("GET", "/whoami", "reader").json()["pending_invitations"] == 0

    member_invites = call("PUT", "/orgs/api-org/members/carol", "bob", json={"role": "read"})
    assert member_invites.status_code == 403 and "Only admins of api-org" in member_invites.json()["detail"]
    assert call("PUT", "/orgs/api-org/members/carol", "alice", json={"role": "read"}).status_code == 200
    assert call("GET", "/orgs/api-org", "bob").json()["invitations"] == []  # a writer does not see them
    assert [i["member"] for i in call("GET", "/orgs/api-org", "root").json()["invitations"]] == ["carol"]
    assert call("DELETE", "/orgs/api-org/invitations/carol", "bob").status_code == 403
    assert call("DELETE", "/orgs/api-org/invitations/carol", "mallory").status_code == 404
    cancelled = call("DELETE", "/orgs/api-org/invitations/carol", "alice")
    assert cancelled.status_code == 200 and cancelled.json()["invitations"] == []
    assert call("DELETE", "/orgs/api-org/invitations/carol", "alice").status_code == 404
    assert call("PUT", "/orgs/api-org/members/carol", "alice", json={"role": "read"}).status_code == 200
    declined = call("DELETE", "/invitations/api-org", "carol")
    assert (declined.status_code, declined.content) == (204, b"")
    assert call("GET", "/invitations", "carol").json() == []
    changed = call("PUT", "/orgs/api-org/members/bob", "alice", json={"role": "read"})  # a member: at once
    assert {x["member"]: x["role"] for x in changed.json()["members"]}["bob"] == "read"
    with RegistryClient(url, tokens["root"], cache=False) as root:
        actions = [(e.actor, e.action) for e in root.events(owner="api-org").events
                   if e.action.startswith("org-")]
    assert actions == [("alice", "org-create"), ("alice", "org-invite"), ("bob", "org-join"), ("alice", "org-invite"),
                       ("alice", "org-invite-cancel"), ("alice", "org-invite"), ("carol", "org-decline")]


def test_the_client_and_an_expired_invitation(server: dict[str, Any]) -> None:
    url, tokens = server["url"], server["tokens"]
    with RegistryClient(url, tokens["alice"], cache=False, retries=0) as alice, \
            RegistryClient(url, tokens["carol"], cache=False, retries=0) as carol:
        alice.create_organization("client-org")
        invited = alice.set_member("client-org", "carol", "admin").invited("carol")
        assert invited is not None and invited.role == "admin"
        assert [(i.organization, i.role) for i in carol.invitations()] == [("client-org", "admin")]
        db = Database(server["db"])
        expire(db, "client-org", "carol")
        db.engine.dispose()
        assert carol.invitations() == [] and carol.whoami().pending_invitations == 0
        with pytest.raises(NotFound, match="An invitation expires after 7 days"):
            carol.accept_invitation("client-org")
        alice.set_member("client-org", "carol", "write")
        joined = carol.accept_invitation("client-org")
        assert {x.member: x.role for x in joined.members}["carol"] == "write"
        alice.set_member("client-org", "dave", "read")
        assert alice.cancel_invitation("client-org", "dave").invitations == []
        alice.set_member("client-org", "mallory", "read")
        with RegistryClient(url, tokens["mallory"], cache=False, retries=0) as mallory:
            mallory.decline_invitation("client-org")
            with pytest.raises(NotFound):
                mallory.decline_invitation("client-org")


def test_vera_org_invitation_commands(server: dict[str, Any]) -> None:
    url, tokens = server["url"], server["tokens"]

    def vera(who: str, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "COLUMNS": "300", "VERA_REGISTRY_URL": url, "VERA_TOKEN": tokens[who],
               "VERA_NO_CACHE": "1"}
        done = run_vera(args, env=env)
        assert "Traceback" not in done.stderr, done.stderr
        return done

    assert vera("alice", "org", "create", "cli-org").returncode == 0
    added = vera("alice", "org", "add", "cli-org", "carol", "--role", "write")
    assert added.returncode == 0, added.stderr
    assert "invited carol as write (pending until they accept: `vera org accept cli-org`)" in added.stdout
    assert "pending invitations" in added.stdout  # the organisation's table of them, under its members
    assert "1 invitation to organisations waiting for your answer: `vera org invitations`" in vera(
        "carol", "whoami").stdout
    listed = vera("carol", "org", "invitations")
    assert listed.returncode == 0 and "cli-org" in listed.stdout and "write" in listed.stdout
    accepted = vera("carol", "org", "accept", "cli-org")
    assert accepted.returncode == 0, accepted.stderr
    assert accepted.stdout.startswith("you joined cli-org as write\n")
    assert "no invitations to organisations wait for your answer" in vera("carol", "org", "invitations").stdout
    again = vera("carol", "org", "accept", "cli-org")
    assert again.returncode == 1 and "No pending invitation to 'cli-org' for carol" in " ".join(again.stderr.split())
    changed = vera("alice", "org", "add", "cli-org", "carol", "--role", "read")  # a member: at once, no invitation
    assert changed.returncode == 0 and "invited" not in changed.stdout

    vera("alice", "org", "add", "cli-org", "mallory")
    declined = vera("mallory", "org", "decline", "cli-org")
    assert (declined.returncode, declined.stdout) == (0, "declined the invitation to cli-org\n")
    vera("alice", "org", "add", "cli-org", "bob", "--role", "admin")
    refused = vera("carol", "org", "uninvite", "cli-org", "bob")
    assert refused.returncode == 1 and "Only admins of cli-org" in refused.stderr
    cancelled = vera("alice", "org", "uninvite", "cli-org", "bob")
    assert cancelled.returncode == 0 and cancelled.stdout.startswith("cancelled the invitation of bob to cli-org\n")
    assert "pending invitations" not in cancelled.stdout
    with RegistryClient(url, tokens["alice"], cache=False) as alice:
        org = alice.organization("cli-org")
    assert ({x.member: x.role for x in org.members}, org.invitations) == ({"alice": "admin", "carol": "read"}, [])


def test_organisations_and_invitations_come_a_page_at_a_time(server: dict[str, Any]) -> None:
    """GET /orgs and GET /invitations answer at most ``limit`` (100 by default, 500 at most), the ``Link`` header
    naming the next page; the client follows it to the end. They came whole before (unbounded for an admin)."""
    url, tokens = server["url"], server["tokens"]
    with RegistryClient(url, tokens["alice"], cache=False, retries=0) as alice, \
            RegistryClient(url, tokens["mallory"], cache=False, retries=0) as mallory, \
            RegistryClient(url, tokens["root"], cache=False, retries=0) as root:
        for name in ("page-a", "page-b", "page-c"):
            alice.create_organization(name)
            alice.set_member(name, "mallory", "read")
        for who, path, everything in (("root", "/orgs", [o.name for o in root.organizations()]),
                                      ("mallory", "/invitations", [i.organization for i in mallory.invitations()])):
            assert {"page-a", "page-b", "page-c"} <= set(everything) and everything == sorted(everything)
            headers, seen, query = {"Authorization": f"Bearer {tokens[who]}"}, [], "?limit=2"
            while query:
                page = httpx.get(f"{url}/api/v1{path}{query}", headers=headers, timeout=60)
                assert page.status_code == 200 and len(page.json()) <= 2, page.text
                key = "name" if path == "/orgs" else "organization"
                seen += [item[key] for item in page.json()]
                query = page.links.get("next", {}).get("url", "")
                if query:
                    assert query == f"?after={seen[-1]}&limit=2"
            assert seen == everything, who
            for bad in ("limit=0", "limit=501", "after=" + "x" * 101):
                refused = httpx.get(f"{url}/api/v1{path}?{bad}", headers=headers, timeout=60)
                assert refused.status_code == 422, (path, bad)
        whole = httpx.get(f"{url}/api/v1/invitations", headers={"Authorization": f"Bearer {tokens['mallory']}"})
        assert "link" not in whole.headers  # one page holds them all

"""The access-control matrix: every route x {no token, an expired token, read, publish for another owner, an admin of
another organisation, publish, admin}. The matrix's registry has invitations off (VERA_ORG_INVITATIONS): the
invitations its routes answer are written in its database (tests/registry/test_invitations.py makes them through
the API)."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from registry.api import is_loopback
from registry.client import RegistryClient, shared_ssl_context
from registry.domain.errors import Forbidden, Unauthorized
from registry.services.access import Access
from registry.services.registry import Registry
from registry.services.tokens import (
    LAST_USED_EVERY,
    authenticate,
    create_token,
    purge_tokens,
    revoke_all,
    revoke_token,
)
from registry.store.database import Database
from registry.store.models import AccessToken, AuditEvent, Organization, OrgInvitation
from tests.commands import vera as run_vera
from tests.registry.adapters import LLAMA, make_adapter
from tests.registry.hub_standin import running_hub
from tests.registry.servers import registry_in_thread, running_server

ROLES = {"none": None, "expired": ["admin"], "read": ["read"], "other-publisher": ["read", "publish"],
         "org-outsider": ["read", "publish"], "publisher": ["read", "publish", "hub"], "admin": ["admin"]}
#: whose token each role holds: alice's, but mallory's (another user) and olga's (admin of another organisation)
USER = {"other-publisher": "mallory", "org-outsider": "olga"}
#: routes where another user finds nothing rather than being refused: alice's organisation, jobs and webhooks
HIDDEN_FROM_OUTSIDERS = {"org-get", "member-put", "member-delete", "org-delete", "job", "job-events", "job-cancel",
                         "webhook-get", "webhook-update", "webhook-delete", "webhook-test", "webhook-deliveries",
                         "invitation-cancel", "alias-protect", "alias-unprotect"}
# route name -> (scope needed, owner-sensitive)
ROUTES = {
    "list": ("read", False), "get": ("read", False), "download": ("read", False), "files": ("read", False),
    "files-inline": ("read", False), "files-head": ("read", False), "blob": ("read", False), "verify": ("read", False),
    "verification": ("read", False), "compare": ("read", False), "lookup": ("read", False),
    "base-models": ("read", False),
    "projections": ("read", False), "publish": ("publish", True), "alias-put": ("publish", True),
    "alias-delete": ("publish", True), "yank": ("publish", True), "delete": ("publish", True),
    "move": ("publish", True),
    "jobs": ("read", False), "job": ("read", False), "job-events": ("read", False), "job-submit": ("publish", True),
    "job-cancel": ("publish", True), "hub-status": ("read", False), "hub-push": ("publish", True),
    "hub-pull": ("publish", True), "base-register": ("publish", False),
    "adapter-get": ("read", False), "adapter-edit": ("publish", True), "version-edit": ("publish", True),
    "lineage": ("read", False),
    "events": ("read", False), "webhooks": ("publish", True), "webhook-create": ("publish", True),
    "webhook-get": ("publish", True), "webhook-update": ("publish", True), "webhook-delete": ("publish", True),
    "webhook-test": ("publish", True), "webhook-deliveries": ("publish", True),
    "whoami": ("read", False), "tokens": ("read", False), "token-create": ("read", False),
    "token-revoke": ("read", False), "orgs": ("read", False), "org-create": ("publish", False),
    "org-get": ("read", True), "member-put": ("publish", True), "member-delete": ("publish", True),
    "org-delete": ("publish", True), "invitations": ("read", False), "invitation-accept": ("read", False),
    "invitation-decline": ("read", False), "invitation-cancel": ("publish", True),
    "alias-protect": ("publish", True), "alias-unprotect": ("publish", True),
}
#: Where the matrix's webhooks point: a closed loopback port (allowed by VERA_WEBHOOK_ALLOW_PRIVATE), so that a test
#: delivery fails at once.
HOOK_URL = "http://127.0.0.1:9/hook"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("matrix")
    url = f"sqlite:///{root / 'r.db'}"
    source = make_adapter(root / "adapter")
    with running_hub() as hub, registry_in_thread(url, root / "blobs", VERA_REQUIRE_TOKENS="true",
                                                  VERA_HUB_ENDPOINT=hub.url, VERA_HUB_TOKEN="hf_server",
                                                  VERA_WEBHOOK_ALLOW_PRIVATE="true",
                                                  # the matrix submits a job per case: more than a minute's budget,
                                                  # and more jobs for alice than one owner may have queued
                                                  VERA_COSTLY_REQUESTS_PER_MINUTE="100000",
                                                  VERA_JOB_MAX_PENDING_PER_OWNER="100000",
                                                  # and olga creates an organisation per invitation case
                                                  VERA_ORGS_PER_USER="100000") as base:
        hub.tokens["hf_server"] = "alice"
        hub.seed_repo("alice/source", {p.name: p.read_bytes() for p in source.iterdir()})
        db = Database(url)
        tokens = {role: create_token(db, owner=USER.get(role, "alice"), scopes=scopes)[1]
                  for role, scopes in ROLES.items() if scopes}
        plain_publisher = create_token(db, owner="alice", scopes=["read", "publish"])[1]
        with db.session() as s:  # an admin token whose time ran out
            digest = hashlib.sha256(tokens["expired"].encode()).hexdigest()
            s.execute(update(AccessToken).where(AccessToken.token_hash == digest)
                      .values(expires_at=datetime.now(UTC) - timedelta(minutes=1)))
        db.engine.dispose()
        with RegistryClient(base, tokens["publisher"]) as alice, RegistryClient(base, tokens["org-outsider"]) as olga:
            alice.create_organization("acme")  # alice is its admin
            olga.create_organization("beta")  # olga is an admin, of another organisation
        yield {"url": base, "tokens": tokens, "source": source, "plain_publisher": plain_publisher, "database": url}


def invite(database_url: str, org: str, member: str) -> None:
    """A pending invitation of ``member`` to ``org``, written in the registry's database."""
    db = Database(database_url)
    try:
        with db.session() as s:
            org_id = s.scalar(select(Organization.id).where(Organization.name == org))
            s.merge(OrgInvitation(organization_id=org_id, member=member, role="read", invited_by="alice",
                                  expires_at=datetime.now(UTC) + timedelta(days=1)))
    finally:
        db.engine.dispose()


def invitation_for(server: dict[str, Any], route: str, role: str) -> str:
    """What the invitation routes answer: an organisation of olga's that invited the caller's user (its name, to
    accept or decline), or zed's invitation to acme (to cancel)."""
    invited = f"inv-{uuid.uuid4().hex[:8]}" if route in ("invitation-accept", "invitation-decline") else ""
    if invited:
        with RegistryClient(server["url"], server["tokens"]["org-outsider"]) as olga:
            olga.create_organization(invited)
        invite(server["database"], invited, USER.get(role, "alice"))
    elif route == "invitation-cancel":
        invite(server["database"], "acme", "zed")
    return invited


def request_for(route: str, base: str, version: int, source: Path, job: int,
                webhook: int = 0, token: int = 0, blob: str = "", moving: str = "",
                org: str = "", invited: str = "") -> tuple[str, str, dict[str, Any]]:
    v = f"{base}/api/v1/adapters/alice/m/versions/{version}"
    hook = f"{base}/api/v1/webhooks/{webhook}"
    files = {"adapter_config": ("adapter_config.json", (source / "adapter_config.json").read_bytes()),
             "adapter_model": ("adapter_model.safetensors", (source / "adapter_model.safetensors").read_bytes())}
    return {
        "list": ("GET", f"{base}/api/v1/adapters", {}),
        "get": ("GET", v, {}),
        "move": ("POST", f"{base}/api/v1/adapters/alice/{moving}/move", {"json": {"to": f"alice/{moving}-moved"}}),
        "download": ("GET", f"{v}/files/adapter_config.json", {}),
        "files": ("GET", f"{v}/files", {}),
        "files-inline": ("GET", f"{v}/files", {"params": {"inline": 1 << 20}}),
        "files-head": ("HEAD", f"{v}/files", {}),
        "blob": ("GET", f"{base}{blob}", {}),
        "verify": ("POST", f"{v}/verify", {}),
        "verification": ("GET", f"{v}/verification", {}),
        "compare": ("POST", f"{base}/api/v1/compare", {"json": {"refs": [f"alice/m:{version}", "alice/m:1"]}}),
        "lookup": ("POST", f"{base}/api/v1/adapters/lookup", {"json": {"refs": [f"alice/m:{version}", "alice/m"]}}),
        "base-models": ("GET", f"{base}/api/v1/base-models", {}),
        "projections": ("GET", f"{base}/api/v1/projections", {}),
        "publish": ("POST", f"{base}/api/v1/adapters/alice/m/versions",
                    {"files": files, "data": {"base_model": "tiny-llama"}}),
        "alias-put": ("PUT", f"{base}/api/v1/adapters/alice/m/aliases/prod", {"json": {"version": version}}),
        "alias-delete": ("DELETE", f"{base}/api/v1/adapters/alice/m/aliases/staging", {}),
        "yank": ("POST", f"{v}/yank", {"json": {"yanked": True}}),
        "delete": ("DELETE", v, {}),
        "jobs": ("GET", f"{base}/api/v1/jobs", {}),
        "job": ("GET", f"{base}/api/v1/jobs/{job}", {}),
        "job-events": ("GET", f"{base}/api/v1/jobs/{job}/events", {}),
        "job-submit": ("POST", f"{base}/api/v1/jobs", {"data": {"target": "alice/m", "spec": '{"demo": true}'}}),
        "job-cancel": ("POST", f"{base}/api/v1/jobs/{job}/cancel", {}),
        "hub-status": ("GET", f"{v}/hub", {}),
        "hub-push": ("POST", f"{v}/hub/push", {"json": {"repo_id": "alice/pushed"}}),
        "hub-pull": ("POST", f"{base}/api/v1/hub/pull", {"json": {"repo_id": "alice/source", "target": "alice/m",
                                                                  "base_model": "tiny-llama"}}),
        "base-register": ("POST", f"{base}/api/v1/base-models", {"json": {
            "name": "tiny-llama-declared", "config": LLAMA.make().config.to_dict()}}),
        "adapter-get": ("GET", f"{base}/api/v1/adapters/alice/m", {}),
        "adapter-edit": ("PATCH", f"{base}/api/v1/adapters/alice/m", {"json": {"card": "# m\n"}}),
        "version-edit": ("PATCH", v, {"json": {"tags": {"add": ["edited"]}}}),
        "lineage": ("GET", f"{v}/lineage", {}),
        "events": ("GET", f"{base}/api/v1/events", {}),
        "webhooks": ("GET", f"{base}/api/v1/webhooks", {"params": {"owner": "alice"}}),
        "webhook-create": ("POST", f"{base}/api/v1/webhooks", {"json": {"owner": "alice", "url": HOOK_URL}}),
        "webhook-get": ("GET", hook, {}),
        "webhook-update": ("PATCH", hook, {"json": {"active": False}}),
        "webhook-delete": ("DELETE", hook, {}),
        "webhook-test": ("POST", f"{hook}/test", {}),
        "webhook-deliveries": ("GET", f"{hook}/deliveries", {}),
        "whoami": ("GET", f"{base}/api/v1/whoami", {}),
        "tokens": ("GET", f"{base}/api/v1/tokens", {}),
        "token-create": ("POST", f"{base}/api/v1/tokens", {"json": {"scopes": ["read"], "name": "matrix"}}),
        "token-revoke": ("DELETE", f"{base}/api/v1/tokens/{token}", {}),
        "orgs": ("GET", f"{base}/api/v1/orgs", {}),
        "org-create": ("POST", f"{base}/api/v1/orgs", {"json": {"name": f"org-{uuid.uuid4().hex[:12]}"}}),
        "org-get": ("GET", f"{base}/api/v1/orgs/acme", {}),
        "member-put": ("PUT", f"{base}/api/v1/orgs/acme/members/zed", {"json": {"role": "read"}}),
        "member-delete": ("DELETE", f"{base}/api/v1/orgs/acme/members/zed", {}),
        "org-delete": ("DELETE", f"{base}/api/v1/orgs/{org}", {}),
        "invitations": ("GET", f"{base}/api/v1/invitations", {}),
        "invitation-accept": ("POST", f"{base}/api/v1/invitations/{invited}", {}),
        "invitation-decline": ("DELETE", f"{base}/api/v1/invitations/{invited}", {}),
        "invitation-cancel": ("DELETE", f"{base}/api/v1/orgs/acme/invitations/zed", {}),
        "alias-protect": ("PUT", f"{base}/api/v1/orgs/acme/protected-aliases/gold", {}),
        "alias-unprotect": ("DELETE", f"{base}/api/v1/orgs/acme/protected-aliases/gold", {}),
    }[route]


@pytest.mark.parametrize("role", list(ROLES))
@pytest.mark.parametrize("route", list(ROUTES))
def test_access_matrix(server: dict[str, Any], route: str, role: str) -> None:
    tokens = server["tokens"]
    with RegistryClient(server["url"], tokens["admin"]) as admin:  # a fresh version for each case
        version = admin.publish(server["source"], "alice/m", base_model="tiny-llama").version
        admin.set_alias(f"alice/m:{version}", "staging")
        job = admin.submit_job("alice/m", {"demo": True}).id  # no worker here: it stays queued
        webhook = admin.create_webhook("alice", HOOK_URL, events=["job-end"]).id if "webhook" in route else 0
        # a token of the caller's own user to revoke, and a member to remove
        token = admin.create_token(["read"], user=USER.get(role, "alice"))[0].id if route == "token-revoke" else 0
        if route == "member-delete":
            admin.set_member("acme", "zed", "read")
        if route == "alias-unprotect":
            admin.protect_alias("acme", "gold")
        blob = admin.files(f"alice/m:{version}").files[0].url if route == "blob" else ""
        moving = f"mv-{uuid.uuid4().hex[:8]}" if route == "move" else ""  # an adapter of its own to move away
        if moving:
            admin.publish(server["source"], f"alice/{moving}", base_model="tiny-llama")
        org = f"gone-{uuid.uuid4().hex[:8]}" if route == "org-delete" else ""  # an empty one of alice's to delete
        if org:
            admin.create_organization(org)
    invited = invitation_for(server, route, role)
    method, url, kwargs = request_for(route, server["url"], version, server["source"], job, webhook, token, blob,
                                      moving, org, invited)
    headers = {"Authorization": f"Bearer {tokens[role]}"} if role in tokens else {}
    status = httpx.request(method, url, headers=headers, timeout=60, verify=shared_ssl_context(),  # (not one a case)
                           **kwargs).status_code
    if webhook:  # an owner may have only so many webhooks
        with RegistryClient(server["url"], tokens["admin"]) as admin:
            for hook in admin.webhooks("alice"):
                admin.delete_webhook(hook.id)
    scope, owner_sensitive = ROUTES[route]
    outsider = role in USER
    hidden = outsider and route in HIDDEN_FROM_OUTSIDERS
    allowed = not hidden and (role in ("admin", "publisher") or (role != "none" and (
        scope == "read" or (outsider and not owner_sensitive))))
    if role in ("none", "expired"):
        assert status == 401, f"{role} {route}: {status}"
    elif allowed:
        assert status in (200, 201, 204), f"{role} {route}: {status}"
    elif hidden:
        assert status == 404, f"{role} {route}: {status}"  # another organisation is not there to be seen
    else:
        assert status == 403, f"{role} {route}: {status}"


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("::1", True), ("localhost", True),
                                                ("0.0.0.0", False), ("10.1.2.3", False), ("example.org", False)])
def test_loopback_detection(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_a_server_on_a_non_loopback_address_requires_tokens(tmp_path: Path) -> None:
    """Bound to every interface (reached here over loopback only), the server refuses requests without a token."""
    with running_server(f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "blobs", host="0.0.0.0") as url:
        response = httpx.get(f"{url}/api/v1/adapters")
        assert response.status_code == 401 and "requires a token" in response.json()["detail"]
        assert httpx.get(f"{url}/health").status_code == 200


def test_the_servers_hub_token_is_only_for_the_hub_scope(server: dict[str, Any]) -> None:
    """A publisher without the hub scope reaches the Hub with its own token or none, never the operator's."""
    base, plain = server["url"], server["plain_publisher"]
    with RegistryClient(base, server["tokens"]["admin"]) as admin:
        version = admin.publish(server["source"], "alice/m", base_model="tiny-llama").version
    push = f"{base}/api/v1/adapters/alice/m/versions/{version}/hub/push"
    refused = httpx.post(push, json={"repo_id": "alice/by-plain"}, headers={"Authorization": f"Bearer {plain}"},
                         timeout=60)
    assert refused.status_code == 502 and "401" in refused.json()["detail"], refused.text  # no token reached the Hub
    own = httpx.post(push, json={"repo_id": "alice/by-plain"}, timeout=60,
                     headers={"Authorization": f"Bearer {plain}", "X-Hub-Token": "hf_server"})
    assert own.status_code == 200, own.text  # its own token works
    granted = httpx.post(push, json={"repo_id": "alice/by-hub-scope"}, timeout=60,
                         headers={"Authorization": f"Bearer {server['tokens']['publisher']}"})
    assert granted.status_code == 200, granted.text  # the hub scope uses the server's token
    # a Hub token sent as a field of the body (its place is X-Hub-Token) was ignored without a word (an outsider's
    # finding, session 33): fields the bodies have not are refused, before anything reaches the Hub
    for route, body in ((push, {"repo_id": "alice/x", "hub_token": "hf_mine"}),
                        (f"{base}/api/v1/hub/pull", {"repo_id": "alice/x", "target": "alice/m", "subfolder": "a"})):
        extra = httpx.post(route, json=body, timeout=60, headers={"Authorization": f"Bearer {plain}"})
        assert extra.status_code == 422 and "Extra inputs are not permitted" in extra.json()["detail"], extra.text


@pytest.mark.parametrize(("method", "path", "body", "field"), [
    ("POST", "/api/v1/webhooks", {"owner": "alice", "url": HOOK_URL, "event": ["publish"]}, "event"),
    ("POST", "/api/v1/webhooks", {"owner": "alice", "url": HOOK_URL, "activ": False}, "activ"),
    ("POST", "/api/v1/webhooks", {"owner": "alice", "url": HOOK_URL, "secret": "mine"}, "secret"),
    ("PUT", "/api/v1/adapters/alice/typo/aliases/prod", {"version": 1, "protect": True}, "protect"),
    ("POST", "/api/v1/adapters/alice/typo/versions/1/yank", {"yanked": True, "reasn": "leak"}, "reasn"),
    ("POST", "/api/v1/orgs", {"name": "typo-org", "visibility": "private"}, "visibility"),
    ("PUT", "/api/v1/orgs/acme/members/zed", {"role": "read", "roles": ["admin"]}, "roles"),
    ("POST", "/api/v1/compare", {"refs": ["alice/typo:1"], "max_work": 1}, "max_work"),
    ("POST", "/api/v1/base-models", {"name": "typo-base", "config": {}, "revison": "main"}, "revison"),
], ids=["webhook-event", "webhook-activ", "webhook-secret", "alias", "yank", "org", "member", "compare", "base"])
def test_a_body_field_a_route_has_not_is_refused_and_changes_nothing(server: dict[str, Any], method: str, path: str,
                                                                    body: dict[str, Any], field: str) -> None:
    """Every JSON body refuses a field it does not have (a misspelt ``events`` subscribed a webhook to every event,
    ``activ`` left it on, ``secret`` was replaced by a generated one; an alias's ``protect``, a yank's ``reason``
    were dropped: all answered 2xx unsaid, an outsider's finding, session 43; a yank keeps its ``reason`` since
    2026-12-06, and a misspelt ``reasn`` is refused), before anything is changed."""
    with RegistryClient(server["url"], server["tokens"]["admin"]) as admin:
        if not admin.list_versions(owner="alice", name="typo").items:
            admin.publish(server["source"], "alice/typo", base_model="tiny-llama")
        before = (admin.webhooks("alice"), admin.get("alice/typo:1"), [o.name for o in admin.organizations()],
                  admin.organization("acme"))
        answer = httpx.request(method, server["url"] + path, json=body, timeout=60,
                               headers={"Authorization": f"Bearer {server['tokens']['admin']}"})
        assert answer.status_code == 422, answer.text
        assert f"{field}: Extra inputs are not permitted" in answer.json()["detail"], answer.text
        assert (admin.webhooks("alice"), admin.get("alice/typo:1"), [o.name for o in admin.organizations()],
                admin.organization("acme")) == before


def test_job_ids_are_not_revealed_to_callers_without_a_token(server: dict[str, Any]) -> None:
    response = httpx.post(f"{server['url']}/api/v1/jobs/999999/cancel")
    assert response.status_code == 401


def test_a_tokens_last_use_is_written_once_a_minute_not_on_every_request(registry: Registry) -> None:
    """Every authenticated request wrote last_used_at (on SQLite, the database's write lock for every read): now a
    request within LAST_USED_EVERY of the recorded use writes nothing, and a later one records it."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import event, update

    from registry.store import models as m

    db = registry.db
    token_id, secret = create_token(db, owner="ann", scopes=["read"])
    authenticate(db, secret)
    with db.session() as s:
        first = s.get(m.AccessToken, token_id).last_used_at
    assert first is not None
    writes: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith(("UPDATE", "INSERT", "DELETE")):
            writes.append(statement)

    event.listen(db.engine, "before_cursor_execute", seen)
    try:
        for _ in range(5):
            authenticate(db, secret)
        assert writes == []
        with db.session() as s:  # as if the last use were older than the interval
            s.execute(update(m.AccessToken).where(m.AccessToken.id == token_id)
                      .values(last_used_at=first - LAST_USED_EVERY - timedelta(seconds=1)))
        writes.clear()
        authenticate(db, secret)
        assert len(writes) == 1
    finally:
        event.remove(db.engine, "before_cursor_execute", seen)
    with db.session() as s:
        assert s.get(m.AccessToken, token_id).last_used_at >= first - timedelta(seconds=1)
        assert datetime.now(UTC) - s.get(m.AccessToken, token_id).last_used_at < LAST_USED_EVERY


def test_revoking_a_token_revokes_the_tokens_made_from_it(registry: Registry) -> None:
    """A token a caller's token made (the dashboard's remembered sign-in, `vera auth create-token`) went on working
    after the token that made it was revoked (an outsider's finding): a leaked token's offspring now go with it,
    grandchildren too; a token made for another user by an admin's token, or by the operator, does not."""
    db = registry.db
    pasted, _ = create_token(db, owner="ann", scopes=["read", "publish"])
    signin, _ = create_token(db, owner="ann", scopes=["read"], parent_id=pasted, actor="ann")
    minted, _ = create_token(db, owner="ann", scopes=["read"], parent_id=signin, actor="ann")
    other, _ = create_token(db, owner="ann", scopes=["read"])
    assert revoke_token(db, pasted, owner="ann", actor="ann") == [pasted, signin, minted]
    assert revoke_token(db, pasted, owner="ann", actor="ann") == []  # once
    with db.session() as s:
        live = {t.id for t in s.scalars(select(AccessToken).where(AccessToken.revoked_at.is_(None)))}
        withs = [e.detail.get("with") for e in s.scalars(select(AuditEvent).where(
            AuditEvent.action == "token-revoke").order_by(AuditEvent.id))]
    assert live == {other} and withs == [None, pasted, signin]
    third, _ = create_token(db, owner="bob", scopes=["read"])
    assert revoke_all(db, "ann", actor="root") == [other] and revoke_all(db, "ann") == []
    assert revoke_all(db, "bob") == [third]


def test_purge_deletes_the_tokens_that_ended_before_the_cutoff(registry: Registry) -> None:
    """Revoked and expired tokens piled up for good (a dashboard's sign-ins add one per browser and week): `vera
    token purge` deletes those that ended before a cutoff, audited per owner; a token made from a purged one forgets
    its parent. The newest row goes too (it was kept while SQLite handed its id out again: 0028), and the next
    token's id is a new one."""
    db, now = registry.db, datetime.now(UTC)
    long_ago, lately = now - timedelta(days=40), now - timedelta(days=2)
    made = {label: create_token(db, owner=owner, scopes=["read"], name=label) for label, owner in (
        ("live", "ann"), ("revoked-long-ago", "ann"), ("revoked-lately", "ann"), ("expired-long-ago", "ann"),
        ("child", "ann"), ("bobs-revoked", "bob"), ("newest-revoked", "ann"))}
    ids = {label: token_id for label, (token_id, _) in made.items()}
    with db.session() as s:
        for label, values in (("revoked-long-ago", {"revoked_at": long_ago}),
                              ("revoked-lately", {"revoked_at": lately}),
                              ("expired-long-ago", {"expires_at": long_ago}),
                              ("bobs-revoked", {"revoked_at": long_ago}),
                              ("newest-revoked", {"revoked_at": long_ago}),
                              ("child", {"parent_id": ids["revoked-long-ago"]})):
            s.execute(update(AccessToken).where(AccessToken.id == ids[label]).values(**values))
    cutoff = now - timedelta(days=30)

    def remaining() -> set[str]:
        with db.session() as s:
            return set(s.scalars(select(AccessToken.name)))

    listed = purge_tokens(db, before=cutoff, dry_run=True)
    assert [t.name for t in listed] == ["revoked-long-ago", "expired-long-ago", "bobs-revoked", "newest-revoked"]
    assert remaining() == set(made)  # a dry run deletes nothing
    assert [t.name for t in purge_tokens(db, before=cutoff, owner="bob")] == ["bobs-revoked"]
    assert [t.name for t in purge_tokens(db, before=cutoff)] == ["revoked-long-ago", "expired-long-ago",
                                                                 "newest-revoked"]
    assert remaining() == {"live", "revoked-lately", "child"}
    assert purge_tokens(db, before=cutoff) == []
    assert create_token(db, owner="ann", scopes=["read"])[0] == ids["newest-revoked"] + 1  # not its id again
    with db.session() as s:
        assert s.scalar(select(AccessToken.parent_id).where(AccessToken.id == ids["child"])) is None
        purges = [(e.actor, e.target, e.detail["tokens"]) for e in s.scalars(select(AuditEvent).where(
            AuditEvent.action == "token-purge").order_by(AuditEvent.id))]
    assert purges == [("operator", "bob", [ids["bobs-revoked"]]),
                      ("operator", "ann", [ids["revoked-long-ago"], ids["expired-long-ago"], ids["newest-revoked"]])]
    assert authenticate(db, made["live"][1]).owner == authenticate(db, made["child"][1]).owner == "ann"


def test_a_revoked_tokens_offspring_stop_working_through_the_api(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    with registry_in_thread(url, tmp_path / "blobs", VERA_REQUIRE_TOKENS="true") as base:
        db = Database(url)
        (ann_id, ann), (_, root) = [create_token(db, owner=o, scopes=s) for o, s in
                                    (("ann", ["read", "publish"]), ("root", ["admin"]))]
        db.engine.dispose()
        with RegistryClient(base, ann) as client:
            made, made_secret = client.create_token(["read"], name="dashboard sign-in", expires_days=7)
            assert {t.id for t in client.tokens(user="ann")} == {t.id for t in client.tokens()}  # its own user
            # another user's: refused, not answered with the caller's own (an outsider's finding, session 54)
            with pytest.raises(Forbidden, match=r"Only an administrator lists another user's tokens; GET "
                                                r"/api/v1/tokens without \?user= lists yours \(ann\)\."):
                client.tokens(user="root")
        with RegistryClient(base, root) as admin:
            _, for_ann = admin.create_token(["read"], user="ann")  # an admin's, for another user: no parent
        with RegistryClient(base, made_secret) as child:
            assert child.whoami().user == "ann"
        with RegistryClient(base, ann) as client:
            client.revoke_token(ann_id)
        for secret in (ann, made_secret):
            with RegistryClient(base, secret) as gone, pytest.raises(Unauthorized):
                gone.whoami()
        with RegistryClient(base, for_ann) as kept:
            assert kept.whoami().user == "ann"
        with RegistryClient(base, root) as admin:
            assert next(t for t in admin.tokens(user="ann") if t.id == made.id).revoked


def test_vera_token_list_at_80_columns_shows_whole_cells_and_names_the_columns_left_out(tmp_path: Path) -> None:
    """An operator's walk (session 48): at 80 columns scopes read "publish,re…" and dates "2026-12-…"."""
    import os

    url = f"sqlite:///{tmp_path / 'r.db'}"
    db = Database(url)
    db.upgrade()
    create_token(db, owner="bob-the-publisher", scopes=["read", "publish"], name="laptop-of-bob",
                 expires_in=timedelta(days=30), limited_to=["team-nlp"])
    db.engine.dispose()
    listed = run_vera(["token", "list"], env={**os.environ, "VERA_DATABASE_URL": url, "COLUMNS": "80"})
    assert listed.returncode == 0, listed.stderr
    assert "…" not in listed.stdout, listed.stdout
    assert "publish,read" in listed.stdout and "bob-the-publisher" in listed.stdout, listed.stdout
    assert max(len(line) for line in listed.stdout.splitlines()) <= 80
    assert "not shown (narrow terminal): " in listed.stdout and "--json has everything" in listed.stdout
    wide = run_vera(["token", "list"], env={**os.environ, "VERA_DATABASE_URL": url, "COLUMNS": "200"})
    assert "not shown" not in wide.stdout and "laptop-of-bob" in wide.stdout and "team-nlp" in wide.stdout


def test_vera_token_revoke_a_token_with_its_offspring_or_every_token_of_a_user(tmp_path: Path) -> None:
    import os
    import subprocess

    url = f"sqlite:///{tmp_path / 'r.db'}"
    db = Database(url)
    db.upgrade()
    laptop, _ = create_token(db, owner="ann", scopes=["read"])
    signin, _ = create_token(db, owner="ann", scopes=["read"], parent_id=laptop)
    ci, _ = create_token(db, owner="ann", scopes=["read"])
    db.engine.dispose()

    def vera(*args: str) -> subprocess.CompletedProcess[str]:
        return run_vera(["token", "revoke", *args], env={**os.environ, "VERA_DATABASE_URL": url, "COLUMNS": "200",
                                                         "LOGNAME": "someone\nelse", "USER": "someone"})

    for wrong in ((), (str(laptop), "--owner", "ann")):
        refused = vera(*wrong)
        assert refused.returncode == 1 and "Give a token id" in refused.stderr, refused
    one = vera(str(laptop))
    assert one.returncode == 0 and f"revoked token {laptop} and 1 made from it (ids {signin})" in one.stdout, one
    every = vera("--owner", "ann")
    assert every.returncode == 0 and f"revoked every token of ann: ids {ci}" in every.stdout, every
    again = vera("--owner", "ann")
    assert again.returncode == 0 and "none was live" in again.stdout
    # a misspelt user's name was "none was live" too, exit 0, and ann kept every token (an operator's walk, 48)
    misspelt = vera("--owner", "anne")
    assert misspelt.returncode == 1 and "No token was ever made for 'anne' here: nothing was revoked. Did you mean " \
        "ann? `vera token list` lists every token with its user." in " ".join(misspelt.stderr.split()), misspelt
    db = Database(url)
    Access(db).create_organization("annex", creator="ann")  # an organisation: not offered a user's name
    db.engine.dispose()
    organisation = vera("--owner", "annex")
    assert organisation.returncode == 1 and "annex is an organisation: tokens are its members', each their own; " \
        "nothing was revoked. `vera org show annex` lists its members." in " ".join(organisation.stderr.split())
    # the audit log names the machine's user who ran them, not only "operator" (a team admin's walk, session 34):
    # the process's account, not LOGNAME, which a caller sets to anything (a re-check's finding)
    import pwd

    db = Database(url)
    with db.session() as s:
        actors = set(s.scalars(select(AuditEvent.actor).where(AuditEvent.action == "token-revoke")))
    db.engine.dispose()
    assert actors == {f"operator ({pwd.getpwuid(os.getuid()).pw_name})"}


def test_vera_token_purge_lists_then_deletes_and_refuses_a_negative_age(tmp_path: Path) -> None:
    import os
    import subprocess

    url = f"sqlite:///{tmp_path / 'r.db'}"
    db = Database(url)
    db.upgrade()
    old, _ = create_token(db, owner="ann", scopes=["read"], name="laptop")
    kept, _ = create_token(db, owner="ann", scopes=["read"])
    revoke_token(db, old)
    db.engine.dispose()

    def vera(*args: str) -> subprocess.CompletedProcess[str]:
        return run_vera(["token", "purge", *args], env={**os.environ, "VERA_DATABASE_URL": url, "COLUMNS": "200"})

    assert "deleted 0 tokens that ended before" in vera().stdout  # revoked a moment ago: not 30 days
    listed = vera("--days", "0", "--dry-run")
    assert listed.returncode == 0 and f"would delete token {old} of ann (laptop): revoked" in listed.stdout, listed
    assert "would delete 1 token that ended" in listed.stdout
    done = vera("--days", "0")
    assert done.returncode == 0 and f"deleted token {old} of ann (laptop): revoked" in done.stdout, done
    with Database(url).session() as s:
        assert list(s.scalars(select(AccessToken.id))) == [kept]
    negative = vera("--days", "-1")
    assert negative.returncode == 2 and "greater than or equal to 0" in negative.stderr, negative



def test_a_registry_bounds_how_long_new_tokens_live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """VERA_MAX_TOKEN_DAYS: a token made without an expiry gets that life, a longer one is refused and not made, a
    shorter one keeps its own; through the API (as a user and as an admin), the dashboard's remembered sign-in (which
    asks for no more than the registry allows) and the operator's `vera token create`, which also refuses a life
    that is not a positive number of days (it made an expired token, and NaN was a traceback)."""
    import os
    import subprocess

    from pydantic import ValidationError

    from registry.domain.errors import InvalidInput
    from registry.settings import Settings

    with pytest.raises(ValidationError, match="tokens may not be limited to less than an hour"):
        Settings(max_token_days=0.01)  # a minted CI token lives up to an hour

    url = f"sqlite:///{tmp_path / 'r.db'}"
    db = Database(url)
    db.upgrade()
    _, ann = create_token(db, owner="ann", scopes=["read", "publish"])  # made before the limit: keeps no expiry
    _, root = create_token(db, owner="root", scopes=["admin"])
    db.engine.dispose()
    with registry_in_thread(url, tmp_path / "blobs", VERA_REQUIRE_TOKENS="true", VERA_MAX_TOKEN_DAYS="90") as base:
        for secret in (ann, root):
            with RegistryClient(base, secret, cache=False, retries=0) as client:
                before = len(client.tokens())
                made, _ = client.create_token(["read"], name="laptop")
                assert made.expires_at is not None
                assert abs(made.expires_at - (datetime.now(UTC) + timedelta(days=90))) < timedelta(minutes=5)
                short, _ = client.create_token(["read"], expires_days=7)
                assert short.expires_at is not None and short.expires_at < datetime.now(UTC) + timedelta(days=8)
                with pytest.raises(InvalidInput, match=r"Tokens on this registry live at most 90 days "
                                                       r"\(VERA_MAX_TOKEN_DAYS\); ask for 90 or fewer"):
                    client.create_token(["read"], expires_days=91)
                for wrong in ("NaN", "Infinity", "true", "-1"):  # Python's json reads NaN and Infinity
                    answer = httpx.post(f"{base}/api/v1/tokens", content=f'{{"scopes": ["read"], "expires_days": '
                                        f'{wrong}}}', headers={"Authorization": f"Bearer {secret}",
                                                                "Content-Type": "application/json"}, timeout=30)
                    assert answer.status_code == 422, (wrong, answer.text)
                assert len(client.tokens()) == before + 2  # the refused ones were not made
        with RegistryClient(base, ann, cache=False, retries=0) as client:  # a child of a short-lived token
            _, short_secret = client.create_token(["read"], expires_days=7)
        with RegistryClient(base, short_secret, cache=False, retries=0) as short_lived:
            child, _ = short_lived.create_token(["read"])  # none asked: its maker's expiry, not a refusal
            assert child.expires_at is not None and child.expires_at < datetime.now(UTC) + timedelta(days=8)
        from web_ui.remember import remember

        monkeypatch.setenv("VERA_UI_REMEMBER_DAYS", "120")  # longer than the registry allows: asks for 90 at most
        with RegistryClient(base, ann, cache=False, retries=0) as client:
            who = client.whoami()
            assert who.max_token_days == 90
            _, _, until = remember(client, who)
            assert timedelta(days=89) < until - datetime.now(UTC) <= timedelta(days=90)
    env = {**os.environ, "VERA_DATABASE_URL": url, "VERA_MAX_TOKEN_DAYS": "90", "COLUMNS": "200"}

    def vera(*args: str) -> subprocess.CompletedProcess[str]:
        return run_vera(["token", "create", "--owner", "bob", "--scope", "read", *args], env=env)

    refused = vera("--expires-days", "365")
    assert refused.returncode == 1 and "live at most 90 days" in refused.stderr, refused
    for wrong in ("-5", "0", "nan", "inf", "1e10"):
        bad = vera("--expires-days", wrong)
        assert bad.returncode == 1 and "--expires-days must be more than 0 and at most 3650" in bad.stderr, bad
    before_run = datetime.now(UTC) + timedelta(days=90)
    made = vera()
    dates = {(before_run + timedelta(seconds=s)).strftime("%Y-%m-%d") for s in (0, 120)}  # across midnight too
    assert made.returncode == 0 and any(f"expires {d}" in made.stdout for d in dates), made
    db = Database(url)
    try:
        with db.session() as s:
            bob = s.scalars(select(AccessToken).where(AccessToken.owner == "bob")).all()
            assert len(bob) == 1 and bob[0].expires_at is not None
    finally:
        db.engine.dispose()

"""The audit log through GET /api/v1/events, the client and `vera events`, against a real `vera serve`: keyset paging,
filters, refusals, what each caller may see (never a private adapter it may not read), and the job-end events that
every way a job can end records."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from registry.client import RegistryClient
from registry.domain.errors import QuotaExceeded
from registry.domain.events import EventInfo
from registry.services.jobs import Jobs
from registry.services.registry import Registry
from registry.store import models as m
from tests.commands import vera as run_vera
from tests.registry.adapters import make_adapter
from tests.registry.receiver import Receiver, running_receiver
from tests.registry.servers import registry_in_thread
from tests.registry.test_webhooks import make_tokens


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with running_receiver() as r:
        yield r


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[dict[str, Any]]:
    """alice publishes alice/pub (public) and alice/priv (private); mallory publishes mallory/x."""
    root = tmp_path_factory.mktemp("events")
    url = f"sqlite:///{root / 'r.db'}"
    with registry_in_thread(url, root / "blobs", VERA_REQUIRE_TOKENS="true", VERA_ANONYMOUS_READ="true",
                            VERA_WEBHOOK_ALLOW_PRIVATE="true", VERA_WEBHOOK_POLL_S="0.1") as base:
        tokens = make_tokens(url)
        source = make_adapter(root / "adapter")
        with RegistryClient(base, tokens["alice"], cache=False) as alice, \
                RegistryClient(base, tokens["mallory"], cache=False) as mallory:
            alice.publish(source, "alice/pub", base_model="tiny-llama")
            alice.set_alias("alice/pub:1", "prod")
            alice.publish(source, "alice/priv", base_model="tiny-llama", visibility="private")
            alice.set_alias("alice/priv:1", "prod")
            mallory.publish(source, "mallory/x", base_model="tiny-llama")
            alice.publish(source, "alice/pub", base_model="tiny-llama")
        yield {"url": base, "tokens": tokens, "source": source}


def all_events(server: dict[str, Any], who: str | None, **filters: Any) -> list[EventInfo]:
    """Every event ``who`` sees, paged through from the start two at a time."""
    events, after = [], 0
    with RegistryClient(server["url"], server["tokens"][who] if who else "", cache=False) as c:
        while (page := c.events(after=after, limit=2, **filters)).events:
            events += page.events
            after = page.next_after
    return events


def test_paging_after_an_id_reads_every_event_once_in_order(server: dict[str, Any]) -> None:
    events = all_events(server, "alice")
    assert [e.id for e in events] == sorted({e.id for e in events})
    assert [(e.action, e.target) for e in events if e.owner in ("alice", "mallory")
            and not e.action.startswith("token-")][:6] == [
        ("publish", "alice/pub:1"), ("alias", "alice/pub@prod"), ("publish", "alice/priv:1"),
        ("alias", "alice/priv@prod"), ("publish", "mallory/x:1"), ("publish", "alice/pub:2")]
    first = next(e for e in events if e.target == "alice/pub:1")
    assert first.actor == "alice" and first.adapter == "alice/pub" and "vectors" in first.detail


def test_without_a_cursor_the_newest_page_comes_oldest_first(server: dict[str, Any]) -> None:
    with RegistryClient(server["url"], server["tokens"]["alice"], cache=False) as alice:
        page = alice.events(limit=2)
        everything = all_events(server, "alice")
        assert page.events == everything[-2:] and page.next_after >= everything[-1].id
        assert alice.events(after=page.next_after).events == []  # nothing newer yet: follow from here


def test_filters_by_owner_adapter_action_and_time(server: dict[str, Any]) -> None:
    assert {e.owner for e in all_events(server, "admin", owner="alice")} == {"alice"}
    assert {e.target for e in all_events(server, "alice", adapter="alice/pub")} == {
        "alice/pub:1", "alice/pub@prod", "alice/pub:2"}
    assert {e.action for e in all_events(server, "alice", action="alias")} == {"alias"}
    assert all_events(server, "alice", since=(datetime.now(UTC) + timedelta(hours=1)).isoformat()) == []
    earlier = (datetime.now(UTC) - timedelta(hours=1)).replace(tzinfo=None).isoformat()  # no zone: UTC
    assert len(all_events(server, "alice", since=earlier)) == len(all_events(server, "alice"))


@pytest.mark.parametrize("who", ["mallory", None], ids=["another-owner", "anonymous"])
def test_a_private_adapters_events_are_hidden_from_those_who_may_not_read_it(server: dict[str, Any],
                                                                             who: str | None) -> None:
    seen = all_events(server, who)
    assert "alice/priv" not in {e.adapter for e in seen}
    assert {"alice/pub", "mallory/x"} <= {e.adapter for e in seen}
    assert all_events(server, who, adapter="alice/priv") == []  # asked by name: nothing, as if it did not exist
    raw = httpx.get(f"{server['url']}/api/v1/events", params={"limit": 500},
                    headers={"Authorization": f"Bearer {server['tokens'][who]}"} if who else {})
    assert "alice/priv" not in raw.text


def test_a_page_and_its_cursor_say_nothing_of_the_events_a_caller_may_not_see(server: dict[str, Any]) -> None:
    """An outsider's finding (session 45): next_after was the newest id in the whole log, and a page's cursor moved
    past hidden events, so a caller who saw nothing counted the registry's activity and its timing. Hidden events
    are filtered out by the database now: a page holds ``limit`` events while more follow, and the cursor is the last
    one shown."""
    with RegistryClient(server["url"], server["tokens"]["mallory"], cache=False) as mallory, \
            RegistryClient(server["url"], server["tokens"]["admin"], cache=False) as admin:
        newest = mallory.events(limit=500)
        assert newest.events and newest.next_after == newest.events[-1].id
        nothing = mallory.events(adapter="alice/priv")
        assert nothing.events == [] and nothing.next_after == 0
        admin.publish(server["source"], "carol/secret", base_model="tiny-llama", visibility="private")
        for alias in ("a", "b", "c"):
            admin.set_alias("carol/secret:1", alias)
        assert admin.events(adapter="carol/secret").next_after > newest.next_after  # they happened
        assert mallory.events(limit=500) == newest  # and mallory's newest page is the same, cursor and all
        later = mallory.events(after=newest.next_after)
        assert later.events == [] and later.next_after == newest.next_after
        assert mallory.events(adapter="carol/secret", after=3).next_after == 3
        mine = [e.id for e in all_events(server, "mallory")]
        for limit in (1, 2, 3):  # hidden events in between never make a page shorter than limit while more follow
            pages, after = [], 0
            while (page := mallory.events(after=after, limit=limit)).events:
                pages.append([e.id for e in page.events])
                after = page.next_after
                assert after == page.events[-1].id
            assert [i for p in pages for i in p] == mine and all(len(p) == limit for p in pages[:-1])


def test_a_base_model_only_private_versions_use_is_not_named_by_its_event(server: dict[str, Any]) -> None:
    """An outsider's finding (session 46): base-model registrations were shown to everyone, while the base model
    list leaves out one that only private versions use."""
    from tests.registry.adapters import LLAMA

    with RegistryClient(server["url"], server["tokens"]["mallory"], cache=False) as mallory:
        mallory.register_base_model("secret-corp/falcon", LLAMA.make().config.to_dict())
        assert "secret-corp/falcon@" in {e.target for e in all_events(server, None, action="base-register")}
        mallory.publish(server["source"], "mallory/stealth", base_model="secret-corp/falcon", visibility="private")
    for who in ("alice", None):
        assert "secret-corp/falcon@" not in {e.target for e in all_events(server, who, action="base-register")}
    for who in ("mallory", "admin"):
        assert "secret-corp/falcon@" in {e.target for e in all_events(server, who, action="base-register")}


def test_who_takes_a_freed_organisation_name_does_not_read_the_old_organisations_history(
        server: dict[str, Any]) -> None:
    """An outsider's finding (session 46): an organisation that owned nothing leaves its name free when deleted
    or renamed, and its events (members, protected aliases, the rename's new name) showed to the name's next
    holder."""
    with RegistryClient(server["url"], server["tokens"]["alice"], cache=False) as alice, \
            RegistryClient(server["url"], server["tokens"]["mallory"], cache=False) as mallory:
        alice.create_organization("falcon")
        alice.protect_alias("falcon", "launch")
        alice.delete_organization("falcon")
        alice.create_organization("tmp3")
        alice.rename_organization("tmp3", "hidden-x")
        mallory.create_organization("falcon")
        mallory.create_organization("tmp3")
        for name in ("falcon", "tmp3"):
            assert [e.action for e in all_events(server, "mallory", owner=name)] == ["org-create"], name
        assert "hidden-x" not in str(mallory.events(limit=500).model_dump())
        mine = [(e.action, e.target) for e in all_events(server, "alice", owner="hidden-x")]
        assert mine == [("org-rename", "hidden-x")]  # the present organisation's: seen by its members
    assert {("alias-protect", "falcon"), ("org-delete", "falcon"), ("org-rename", "tmp3")} <= {
        (e.action, e.target) for e in all_events(server, "admin")}  # the registry's administrators see it all


@pytest.mark.parametrize("who", ["alice", "reader", "admin"])
def test_those_who_may_read_a_private_adapter_see_its_events(server: dict[str, Any], who: str) -> None:
    assert {"alice/priv:1", "alice/priv@prod"} <= {e.target for e in all_events(server, who)}


def test_a_deleted_private_adapters_history_stays_private_when_its_name_is_published_again(
        server: dict[str, Any]) -> None:
    """An outsider's finding: events were judged by the visibility of the adapter holding the name now, so a public
    adapter published under a deleted private one's name made the deleted one's history public."""
    with RegistryClient(server["url"], server["tokens"]["mallory"], cache=False) as mallory:
        mallory.publish(server["source"], "mallory/reborn", base_model="tiny-llama", visibility="private",
                        description="the secret plan")
        mallory.set_alias("mallory/reborn:1", "prod")
        mallory.delete_adapter("mallory/reborn")
        mallory.publish(server["source"], "mallory/reborn", base_model="tiny-llama")  # public: version 2
    for who in ("alice", None):
        seen = {e.target for e in all_events(server, who, adapter="mallory/reborn")}
        assert seen == {"mallory/reborn:2"}, seen  # the public one's publish, nothing of the deleted one
    assert {"mallory/reborn:1", "mallory/reborn@prod", "mallory/reborn:2"} <= {
        e.target for e in all_events(server, "mallory", adapter="mallory/reborn")}  # its owner sees the whole history


def test_webhook_changes_are_seen_by_those_who_manage_them_only(server: dict[str, Any], receiver: Receiver) -> None:
    with RegistryClient(server["url"], server["tokens"]["alice"], cache=False) as alice:
        hook = alice.create_webhook("alice", receiver.url("/audit"), events=["publish"])
        alice.delete_webhook(hook.id)
    target = f"alice/webhooks/{hook.id}"
    assert [e.action for e in all_events(server, "alice") if e.target == target] == ["webhook-create",
                                                                                    "webhook-delete"]
    for who in ("mallory", "reader"):
        assert target not in {e.target for e in all_events(server, who)}


@pytest.mark.parametrize(("params", "message"), [
    ({"limit": 0}, "limit"), ({"limit": 501}, "limit"), ({"after": -1}, "after"),
    ({"owner": "Not A Name"}, "owner 'Not A Name' is not a valid name"),
    ({"adapter": "alice/pub:1"}, "adapter must be owner/name, without a version or alias"),
    ({"adapter": "alice"}, "alice"), ({"since": "yesterday"}, "since"), ({"action": "x" * 33}, "action"),
    # a time UTC cannot hold once converted (an outsider's 500, session 43), at both ends
    ({"since": "0001-01-01T00:00:00+00:01"}, "outside the years 1 to 9999 once in UTC"),
    ({"since": "9999-12-31T23:59:59-00:01"}, "outside the years 1 to 9999 once in UTC"),
])
def test_bad_filters_are_refused_saying_what_is_expected(server: dict[str, Any], params: dict[str, Any],
                                                         message: str) -> None:
    response = httpx.get(f"{server['url']}/api/v1/events", params=params,
                         headers={"Authorization": f"Bearer {server['tokens']['alice']}"})
    assert response.status_code == 422 and message in response.json()["detail"], response.text


def test_events_need_a_token_where_the_registry_requires_one(tmp_path: Any) -> None:
    with registry_in_thread(f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "blobs", VERA_REQUIRE_TOKENS="true") as url:
        assert httpx.get(f"{url}/api/v1/events").status_code == 401


def test_vera_events_prints_a_table_or_json(server: dict[str, Any]) -> None:
    env = {**os.environ, "COLUMNS": "200", "VERA_REGISTRY_URL": server["url"], "VERA_TOKEN": server["tokens"]["alice"]}

    def vera(*args: str) -> subprocess.CompletedProcess[str]:
        return run_vera(args, env=env)

    page = json.loads(vera("events", "--owner", "alice", "--action", "publish", "--json").stdout)
    assert [e["target"] for e in page["events"]] == ["alice/pub:1", "alice/priv:1", "alice/pub:2"]
    assert page["next_after"] >= page["events"][-1]["id"]
    table = vera("events", "--adapter", "alice/pub")
    assert table.returncode == 0 and "alice/pub@prod" in table.stdout and "alice/priv" not in table.stdout
    refused = vera("events", "--adapter", "alice/pub:2")
    assert refused.returncode == 1 and "without a version or alias" in refused.stderr


def test_a_job_cancelled_in_the_queue_ends_with_an_event_and_a_webhook(server: dict[str, Any],
                                                                        receiver: Receiver) -> None:
    with RegistryClient(server["url"], server["tokens"]["alice"], cache=False) as alice:
        alice.create_webhook("alice", receiver.url("/jobs"), events=["job-end"])
        job = alice.submit_job("alice/trained", {"demo": True})
        alice.cancel_job(job.id)
        got = receiver.wait_for("/jobs", 1)
        events = all_events(server, "alice", adapter="alice/trained")
    assert [e.action for e in events] == ["job-submit", "job-cancel", "job-end"]
    assert events[-1].detail == {"job": job.id, "status": "cancelled"}
    assert json.loads(got[0].body)["event"]["detail"]["status"] == "cancelled"


def test_a_public_adapters_job_events_are_its_owners_as_its_jobs_are(server: dict[str, Any]) -> None:
    """An outsider's finding (session 46): a job's spec, dataset and log are its owner's whatever the adapter's
    visibility, but its job-submit, job-cancel and job-end events (a job-end carries the error) showed to every
    reader of a public adapter."""
    with RegistryClient(server["url"], server["tokens"]["alice"], cache=False) as alice:
        alice.cancel_job(alice.submit_job("alice/pub", {"demo": True}).id)
    jobs = {"job-submit", "job-cancel", "job-end"}
    assert jobs <= {e.action for e in all_events(server, "alice", adapter="alice/pub")}
    assert jobs <= {e.action for e in all_events(server, "reader", adapter="alice/pub")}  # a member who reads
    for who in ("mallory", None):
        seen = {e.action for e in all_events(server, who, adapter="alice/pub")}
        assert "publish" in seen and not jobs & seen, (who, seen)


def test_a_job_submitted_for_another_owner_is_audited_as_its_submitter(server: dict[str, Any]) -> None:
    """An admin (or an organisation's member) submitting a job for an owner: the job is the owner's, the audit
    event names who submitted it, as a cancel's does."""
    with RegistryClient(server["url"], server["tokens"]["admin"], cache=False) as admin:
        job = admin.submit_job("alice/on-behalf", {"demo": True})
        admin.cancel_job(job.id)
    assert job.owner == "alice"
    events = all_events(server, "alice", adapter="alice/on-behalf")
    assert [(e.action, e.actor) for e in events][:2] == [("job-submit", "root"), ("job-cancel", "root")]


def test_every_way_a_job_ends_records_a_job_end_event(registry: Registry) -> None:
    """A worker's finish (succeeded, failed), a queued job cancelled, a lost job out of attempts, and a lost job
    whose cancellation was asked: each writes one job-end event with its status."""
    jobs = Jobs(registry, lease=timedelta(seconds=0), max_attempts=1, retry_backoff=timedelta(seconds=0))
    ids = [jobs.submit({"demo": True}, owner="ann", target=f"ann/j{n}").id for n in range(5)]
    jobs.cancel(ids[0], actor="ann")  # queued: cancelled at once
    for outcome, error in (("succeeded", None), ("failed", "boom")):
        claimed = jobs.claim("w1")
        assert claimed is not None
        jobs.finish(claimed.id, "w1", status=outcome, error=error)
    lost = jobs.claim("w2")  # this worker dies: with one attempt, the next claim fails the job
    cancelled = jobs.claim("w3")
    assert lost is not None and cancelled is not None
    jobs.cancel(cancelled.id, actor="ann")  # asked while running; its worker dies too
    jobs.claim("w4")
    with registry.db.session() as s:
        ended = {e.target: (e.actor, e.detail) for e in s.scalars(select(m.AuditEvent).where(
            m.AuditEvent.action == "job-end"))}
    assert ended["ann/j0"] == ("ann", {"job": ids[0], "status": "cancelled"})
    assert ended["ann/j1"] == ("w1", {"job": ids[1], "status": "succeeded"})
    assert ended["ann/j2"] == ("w1", {"job": ids[2], "status": "failed", "error": "boom"})
    assert ended[f"ann/j{ids.index(lost.id)}"][1]["status"] == "failed"
    assert "stopped sending heartbeats" in ended[f"ann/j{ids.index(lost.id)}"][1]["error"]
    assert ended[f"ann/j{ids.index(cancelled.id)}"] == ("registry", {"job": cancelled.id, "status": "cancelled"})
    assert len(ended) == 5


def test_requests_refused_to_a_token_are_audited_for_administrators_alone(tmp_path: Any) -> None:
    """A 403 (a scope, a role, an owner the token may not write) was in the access log alone ("403s not audited",
    the sessions' notes): an access-denied event says who, what and why, with the token's id, and only the
    registry's administrators see it. A 401 names nobody and a quota's 403 is no question of access: not recorded."""
    url = f"sqlite:///{tmp_path / 'r.db'}"
    with registry_in_thread(url, tmp_path / "blobs", VERA_REQUIRE_TOKENS="true") as base:
        tokens = make_tokens(url)
        source = make_adapter(tmp_path / "adapter")
        with RegistryClient(base, tokens["admin"], cache=False) as admin:
            admin.publish(source, "alice/pub", base_model="tiny-llama")
            admin.set_quota("alice", 1)
        refused = httpx.put(f"{base}/api/v1/adapters/alice/pub/aliases/prod", json={"version": 1},
                            headers={"Authorization": f"Bearer {tokens['mallory']}"})
        assert refused.status_code == 403, refused.text
        assert httpx.get(f"{base}/api/v1/tokens", headers={"Authorization": "Bearer vera_nobody"}).status_code == 401
        with RegistryClient(base, tokens["alice"], cache=False) as alice, pytest.raises(QuotaExceeded):
            alice.publish(source, "alice/more", base_model="tiny-llama")  # a quota's 403
        server = {"url": base, "tokens": tokens}
        [denied] = all_events(server, "admin", action="access-denied")
        with RegistryClient(base, tokens["admin"], cache=False) as admin:
            [mallory_token] = admin.tokens(user="mallory")
        assert (denied.actor, denied.target, denied.owner, denied.adapter) == (
            "mallory", "/api/v1/adapters/alice/pub/aliases/prod", None, None)
        assert denied.detail["method"] == "PUT" and denied.detail["token_id"] == mallory_token.id
        assert denied.detail["route"] == "/api/v1/adapters/{owner}/{name}/aliases/{alias}"
        assert denied.detail["reason"] == refused.json()["detail"] and denied.detail["request_id"] == \
            refused.headers["x-request-id"]
        for who in ("alice", "mallory", "reader"):  # not the owner of what was asked, nor the caller refused
            assert all_events(server, who, action="access-denied") == []
        listed = run_vera(["events", "--action", "access-denied"], env={
            **os.environ, "VERA_REGISTRY_URL": base, "VERA_TOKEN": tokens["admin"], "COLUMNS": "200"})
        assert listed.returncode == 0 and "access-denied" in listed.stdout and "mallory" in listed.stdout, listed


def test_a_token_refused_in_a_loop_records_a_bounded_number_of_events(tmp_path: Any) -> None:
    """At most per_minute events a user and minute; the refusals past them are counted on the next recorded one."""
    from registry.services.events import DeniedAccess
    from registry.services.tokens import Principal
    from registry.store.database import Database

    db = Database(f"sqlite:///{tmp_path / 'r.db'}")
    db.upgrade()
    now = [0.0]
    denials = DeniedAccess(db, per_minute=3, clock=lambda: now[0])
    mallory = Principal(owner="mallory", scopes=frozenset({"read"}), token_id=7)
    said = [denials.record(mallory, method="PUT", route="/r", path="/p", reason="no", request_id=None)
            for _ in range(5)]
    assert said == [True, True, True, False, False]
    assert denials.record(Principal(owner="eve", scopes=frozenset({"read"})), method="GET", route="/r", path="/p",
                          reason="no", request_id=None)  # another user's own minute
    now[0] = 61.0
    assert denials.record(mallory, method="PUT", route="/r", path="/p", reason="no", request_id=None)
    with db.session() as s:
        rows = list(s.scalars(select(m.AuditEvent).where(m.AuditEvent.actor == "mallory").order_by(m.AuditEvent.id)))
        assert [r.detail.get("unrecorded") for r in rows] == [None, None, None, 2]
        assert {r.sight for r in rows} == {"admin"}
    db.engine.dispose()

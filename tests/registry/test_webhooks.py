"""Webhooks against a real `vera serve` and a real HTTP receiver: signed deliveries of an owner's events, retries with
backoff, a receiver that hangs (publish does not wait), the delivery log, test deliveries, URL checks, permissions,
dispatchers that share a database, and the migration that adds the tables."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event, text

from registry.client import RegistryClient
from registry.domain.errors import Forbidden, InvalidInput, NotFound, Unauthorized
from registry.domain.events import WebhookForm
from registry.services.delivery import Message, Outcome, Sender, check_target
from registry.services.outbox import Dispatcher, Outbox
from registry.services.registry import Registry
from registry.services.tokens import create_token, revoke_token
from registry.services.webhooks import Webhooks
from registry.store.database import Database
from tests.commands import vera as run_vera
from tests.registry.adapters import make_adapter
from tests.registry.receiver import Receiver, running_receiver, signature_ok
from tests.registry.servers import registry_in_thread

BACKOFF_S = 0.3
#: Fast dispatching for tests: poll often, retry soon, give a receiver 2 s.
FAST = {"VERA_REQUIRE_TOKENS": "true", "VERA_WEBHOOK_POLL_S": "0.1", "VERA_WEBHOOK_RETRY_BACKOFF_S": str(BACKOFF_S),
        "VERA_WEBHOOK_MAX_ATTEMPTS": "3", "VERA_WEBHOOK_TIMEOUT_S": "2"}


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with running_receiver() as r:
        yield r


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[dict[str, Any]]:
    """A registry whose webhooks may reach loopback (the receiver is on 127.0.0.1)."""
    root = tmp_path_factory.mktemp("webhooks")
    url = f"sqlite:///{root / 'r.db'}"
    with registry_in_thread(url, root / "blobs", VERA_WEBHOOK_ALLOW_PRIVATE="true", **FAST) as base:
        yield {"url": base, "tokens": make_tokens(url), "source": make_adapter(root / "adapter"), "database": url}


def make_tokens(database_url: str) -> dict[str, str]:
    """Tokens of alice (publisher), mallory (publisher of another owner), a reader of alice's and an admin."""
    db = Database(database_url)
    tokens = {who: create_token(db, owner=owner, scopes=scopes)[1] for who, owner, scopes in (
        ("alice", "alice", ["read", "publish"]), ("mallory", "mallory", ["read", "publish"]),
        ("reader", "alice", ["read"]), ("admin", "root", ["admin"]))}
    db.engine.dispose()
    return tokens


def client(server: dict[str, Any], who: str = "alice") -> RegistryClient:
    return RegistryClient(server["url"], server["tokens"][who], cache=False)


def test_an_owners_events_reach_its_webhook_signed(server: dict[str, Any], receiver: Receiver) -> None:
    with client(server) as alice, client(server, "mallory") as mallory:
        hook = alice.create_webhook("alice", receiver.url("/signed"))
        other = mallory.create_webhook("mallory", receiver.url("/mallory"))
        assert hook.secret.startswith("whsec_") and hook.events == ["publish", "alias", "alias-remove", "yank",
                                                                     "unyank", "delete", "job-end", "move",
                                                                     "version-evaluate", "version-evaluation-delete",
                                                                     "adapter-edit", "version-edit"]
        version = alice.publish(server["source"], "alice/signed", base_model="tiny-llama").version
        alice.set_alias(f"alice/signed:{version}", "prod")
        alice.record_evaluation("alice/signed@prod", "hellaswag", {"acc": 0.41})
        alice.update_version(f"alice/signed:{version}", add_tags=["nightly"])
        alice.update_adapter("alice/signed", description="sentiment, MiniLM")
        alice.yank(f"alice/signed:{version}")
        alice.move("alice/signed", "alice/signed-moved")
        alice.delete(f"alice/signed-moved:{version}")
        got = receiver.wait_for("/signed", 8)
    # deliveries may arrive out of order (a retried one comes later); the event ids give the order
    got = sorted(got, key=lambda r: int(r.headers["x-vera-event-id"]))
    bodies = [json.loads(r.body) for r in got]
    assert [b["event"]["action"] for b in bodies] == ["publish", "alias", "version-evaluate", "version-edit",
                                                      "adapter-edit", "yank", "move", "delete"]
    assert bodies[3]["event"]["detail"] == {"before": {"tags": []}, "after": {"tags": ["nightly"]}}
    assert bodies[4]["event"]["target"] == "alice/signed" and bodies[4]["event"]["adapter"] == "alice/signed"
    assert bodies[4]["event"]["detail"]["after"] == {"description": "sentiment, MiniLM"}
    assert bodies[2]["event"]["detail"] == {"name": "hellaswag", "metrics": {"acc": 0.41}, "details": {}}
    assert bodies[2]["event"]["target"] == f"alice/signed:{version}"
    assert bodies[6]["event"]["detail"] == {"from": "alice/signed", "to": "alice/signed-moved"}  # a rename: once
    assert bodies[0]["event"]["target"] == f"alice/signed:{version}" and bodies[0]["event"]["actor"] == "alice"
    assert bodies[0]["event"]["adapter"] == "alice/signed" and bodies[0]["webhook"] == {"id": hook.id,
                                                                                         "owner": "alice"}
    for received, body in zip(got, bodies, strict=True):
        assert signature_ok(hook.secret, received)
        assert not signature_ok(other.secret, received)  # another webhook's secret does not verify it
        assert received.headers["x-vera-event"] == body["event"]["action"]
        assert received.headers["x-vera-event-id"] == str(body["event"]["id"])
        assert received.headers["content-type"] == "application/json"
    tampered = type(got[0])(got[0].path, got[0].headers, got[0].body.replace(b"alice", b"eve"), got[0].at)
    assert not signature_ok(hook.secret, tampered)
    time.sleep(1)
    assert receiver.at("/mallory") == []  # alice's events never go to mallory's webhook
    assert len(receiver.at("/signed")) == 8  # each event once


def test_a_failing_receiver_is_retried_with_backoff_and_logged(server: dict[str, Any], receiver: Receiver) -> None:
    receiver.answer("/flaky", 500, 500, 200)
    with client(server) as alice:
        hook = alice.create_webhook("alice", receiver.url("/flaky"), events=["publish"])
        alice.publish(server["source"], "alice/flaky", base_model="tiny-llama")
        got = receiver.wait_for("/flaky", 3)
        deadline = time.monotonic() + 10
        while (log := alice.webhook_deliveries(hook.id))[0].status != "succeeded" and time.monotonic() < deadline:
            time.sleep(0.1)
    assert [a.status_code for a in log[0].log] == [500, 500, 200] and log[0].attempts == 3
    assert [a.attempt for a in log[0].log] == [1, 2, 3]
    assert "answered 500" in (log[0].log[0].error or "") and log[0].log[2].error is None
    assert all(a.duration_ms >= 0 for a in log[0].log)
    first, second = got[1].at - got[0].at, got[2].at - got[1].at
    assert first >= BACKOFF_S * 0.9 and second >= 2 * BACKOFF_S * 0.9, (first, second)  # doubling
    assert len({r.headers["x-vera-delivery"] for r in got}) == 1  # one delivery, three attempts


def test_a_delivery_fails_after_its_last_attempt(server: dict[str, Any], receiver: Receiver) -> None:
    receiver.answer("/down", 503, 503, 503, 503)
    with client(server) as alice:
        hook = alice.create_webhook("alice", receiver.url("/down"), events=["publish"])
        alice.publish(server["source"], "alice/down", base_model="tiny-llama")
        receiver.wait_for("/down", 3)
        deadline = time.monotonic() + 10
        while (log := alice.webhook_deliveries(hook.id))[0].status != "failed" and time.monotonic() < deadline:
            time.sleep(0.1)
    assert log[0].status == "failed" and [a.status_code for a in log[0].log] == [503, 503, 503]
    time.sleep(4 * BACKOFF_S)
    assert len(receiver.at("/down")) == 3  # VERA_WEBHOOK_MAX_ATTEMPTS=3: no fourth


def test_a_hanging_receiver_never_slows_publish(server: dict[str, Any], receiver: Receiver) -> None:
    receiver.hanging.add("/hang")
    with client(server) as alice:
        hook = alice.create_webhook("alice", receiver.url("/hang"), events=["publish"])
        alice.publish(server["source"], "alice/hang", base_model="tiny-llama")
        receiver.wait_for("/hang", 1)  # the dispatcher is now stuck on the receiver
        for _ in range(3):
            started = time.monotonic()
            alice.publish(server["source"], "alice/hang", base_model="tiny-llama")
            assert time.monotonic() - started < 1.5
            assert receiver.waiting >= 1  # published while the receiver still held a delivery
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            log = alice.webhook_deliveries(hook.id, limit=10)
            if any(a.error and "no answer within 2 s" in a.error for d in log for a in d.log):
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"no timed-out attempt logged: {log}")
    receiver.hanging.discard("/hang")


def test_a_test_delivery_pings_now_and_reports_the_answer(server: dict[str, Any], receiver: Receiver) -> None:
    receiver.answer("/ping", 200, 404)
    with client(server) as alice:
        hook = alice.create_webhook("alice", receiver.url("/ping"), events=["delete"])
        delivery = alice.test_webhook(hook.id)
        assert delivery.status == "succeeded" and delivery.event == "ping" and delivery.event_id is None
        assert delivery.log[0].status_code == 200 and delivery.attempts == 1
        received = receiver.wait_for("/ping", 1)[0]
        assert signature_ok(hook.secret, received) and received.headers["x-vera-event"] == "ping"
        assert json.loads(received.body)["event"]["owner"] == "alice"
        # its time written as every event's ("...Z"; "+00:00" before: an outsider's finding, session 43)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", json.loads(received.body)["event"]["at"])
        env = {"VERA_REGISTRY_URL": server["url"], "VERA_TOKEN": server["tokens"]["alice"]}
        failed = _vera(env, "webhook", "test", str(hook.id))
        assert failed.returncode == 3 and "answered 404" in failed.stdout, failed.stdout + failed.stderr
        assert [d.status for d in alice.webhook_deliveries(hook.id)] == ["failed", "succeeded"]  # newest first


def _vera(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_vera(args, env={**os.environ, "COLUMNS": "200", **env})


def test_the_cli_adds_lists_edits_tests_and_removes_webhooks(server: dict[str, Any], receiver: Receiver) -> None:
    env = {"VERA_REGISTRY_URL": server["url"], "VERA_TOKEN": server["tokens"]["alice"]}
    added = _vera(env, "webhook", "add", "alice", receiver.url("/cli"), "--event", "publish", "--event", "yank",
                  "--description", "ci")
    assert added.returncode == 0, added.stderr
    secret = added.stdout.strip().splitlines()[-1]
    assert secret.startswith("whsec_") and "shown this once" in added.stdout
    listed = json.loads(_vera(env, "webhook", "ls", "--json").stdout)
    mine = next(h for h in listed if h["url"] == receiver.url("/cli"))
    assert mine["events"] == ["publish", "yank"] and "secret" not in mine and secret not in json.dumps(listed)
    edited = _vera(env, "webhook", "edit", str(mine["id"]), "--inactive", "--json")
    assert json.loads(edited.stdout)["active"] is False
    tested = _vera(env, "webhook", "test", str(mine["id"]), "--json")
    assert tested.returncode == 0 and json.loads(tested.stdout)["log"][0]["status_code"] == 200
    log = json.loads(_vera(env, "webhook", "deliveries", str(mine["id"]), "--json").stdout)
    assert [d["event"] for d in log] == ["ping"]
    table = _vera(env, "webhook", "deliveries", str(mine["id"]))
    assert "ping" in table.stdout and "answered 200" in table.stdout
    assert _vera(env, "webhook", "rm", str(mine["id"])).returncode == 0
    gone = _vera(env, "webhook", "deliveries", str(mine["id"]))
    assert gone.returncode == 1 and f"No webhook {mine['id']}" in gone.stderr


def test_a_webhook_fires_only_while_active_and_only_for_later_events(server: dict[str, Any],
                                                                     receiver: Receiver) -> None:
    with client(server) as alice:
        alice.publish(server["source"], "alice/later", base_model="tiny-llama")  # before the webhook
        hook = alice.create_webhook("alice", receiver.url("/later"), events=["publish"])
        alice.update_webhook(hook.id, active=False)
        alice.publish(server["source"], "alice/later", base_model="tiny-llama")  # while inactive: not sent
        time.sleep(1)
        assert receiver.at("/later") == [] and alice.webhook_deliveries(hook.id) == []
        alice.update_webhook(hook.id, active=True)
        alice.publish(server["source"], "alice/later", base_model="tiny-llama")
        got = receiver.wait_for("/later", 1)
        time.sleep(0.5)
    assert [json.loads(r.body)["event"]["target"] for r in receiver.at("/later")] == ["alice/later:3"]
    assert got[0].headers["x-vera-event"] == "publish"


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data", "http://[fd00:ec2::254]/",
                                 "http://[::ffff:169.254.169.254]/", "http://168.63.129.16/",
                                 # IPv4-compatible, NAT64 local-use, SIIT (let through before: session 43)
                                 "http://[::a9fe:a9fe]/", "http://[64:ff9b:1::a9fe:a9fe]/",
                                 "http://[::ffff:0:a9fe:a9fe]/"])
def test_metadata_addresses_are_refused_even_where_private_ones_are_allowed(server: dict[str, Any],
                                                                             url: str) -> None:
    with client(server) as alice:
        before = alice.webhooks("alice")
        with pytest.raises(InvalidInput, match="cloud metadata address"):
            alice.create_webhook("alice", url)
        assert alice.webhooks("alice") == before  # nothing created


@pytest.mark.parametrize(("url", "message"), [
    ("ftp://example.org/x", "must be http:// or https://"),
    ("https://user:pw@example.org/x", "user name or password"),
    ("http://127.0.0.1:99999/x", "port 99999 is not a TCP port (1 to 65535)"),
    ("http://127.0.0.1:0/x", "port 0 is not a TCP port"),
    ("http://no-such-host.invalid/x", "does not resolve"),
    ("not a url", "must be http:// or https://"),
    ("", "must be http:// or https://"),
])
def test_bad_urls_are_refused_saying_what_is_expected(server: dict[str, Any], url: str, message: str) -> None:
    response = httpx.post(f"{server['url']}/api/v1/webhooks", json={"owner": "alice", "url": url},
                          headers={"Authorization": f"Bearer {server['tokens']['alice']}"})
    assert response.status_code == 422 and message in response.json()["detail"], response.text


@pytest.mark.parametrize(("body", "message"), [
    ({"events": ["publish", "explode"]}, "events must be a non-empty list of publish"),
    ({"events": []}, "events must be a non-empty list"),
    ({"description": "x" * 501}, "at most 500 characters"),
    ({"url": None, "owner": "alice"}, "url"),
])
def test_bad_webhook_fields_are_refused(server: dict[str, Any], receiver: Receiver, body: dict[str, Any],
                                        message: str) -> None:
    form = {"owner": "alice", "url": receiver.url("/bad"), **body}
    response = httpx.post(f"{server['url']}/api/v1/webhooks", json=form,
                          headers={"Authorization": f"Bearer {server['tokens']['alice']}"})
    assert response.status_code == 422 and message in response.json()["detail"], response.text


def test_only_the_owners_publishers_manage_its_webhooks(server: dict[str, Any], receiver: Receiver) -> None:
    with client(server) as alice:
        hook = alice.create_webhook("alice", receiver.url("/private"))
    by_owner = (lambda c: c.webhooks("alice"), lambda c: c.create_webhook("alice", receiver.url("/x")))
    by_id = (lambda c: c.webhook(hook.id), lambda c: c.test_webhook(hook.id),
             lambda c: c.webhook_deliveries(hook.id), lambda c: c.update_webhook(hook.id, active=False),
             lambda c: c.delete_webhook(hook.id))
    # a publisher of another owner is refused alice's namespace, and finds none of her webhooks by id (as for a
    # missing one: walking ids reveals neither which exist nor whose they are); a read-only token is refused all
    for who, named, numbered in (("mallory", Forbidden, NotFound), ("reader", Forbidden, Forbidden)):
        with client(server, who) as outsider:
            for calls, error in ((by_owner, named), (by_id, numbered)):
                for call in calls:
                    with pytest.raises(error):
                        call(outsider)
    with client(server, "mallory") as mallory, pytest.raises(NotFound) as missing:
        mallory.webhook(hook.id + 10_000)
    with client(server, "mallory") as mallory, pytest.raises(NotFound) as hidden:
        mallory.webhook(hook.id)
    assert str(hidden.value) == str(missing.value).replace(str(hook.id + 10_000), str(hook.id))
    with RegistryClient(server["url"], "", cache=False) as anonymous, pytest.raises(Unauthorized):
        anonymous.webhooks("alice")
    with client(server, "mallory") as mallory:
        assert all(h.owner == "mallory" for h in mallory.webhooks())  # the default owner is the caller's own
    with client(server, "admin") as admin:
        assert hook.id in [h.id for h in admin.webhooks("alice")]
    with client(server) as alice:
        assert alice.webhook(hook.id).active  # untouched by the refused calls
        listed = httpx.get(f"{server['url']}/api/v1/webhooks/{hook.id}",
                           headers={"Authorization": f"Bearer {server['tokens']['alice']}"}).json()
        assert "secret" not in listed and hook.secret not in json.dumps(listed)


def test_private_and_loopback_addresses_need_the_setting(tmp_path: Path, receiver: Receiver) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    with registry_in_thread(url, tmp_path / "blobs", **FAST) as base:
        db = Database(url)
        token = create_token(db, owner="alice", scopes=["read", "publish"])[1]
        db.engine.dispose()
        for target in (receiver.url("/x"), "http://localhost:9/x", "http://10.1.2.3/x", "http://[::1]:9/x",
                       "http://192.168.0.1/x", "http://0.0.0.0/x"):
            # (30 s, not httpx's 5: a CI run on a slow day waited over 5 s for one of these, session 54)
            response = httpx.post(f"{base}/api/v1/webhooks", json={"owner": "alice", "url": target},
                                  headers={"Authorization": f"Bearer {token}"}, timeout=30)
            assert response.status_code == 422, (target, response.text)
            assert "VERA_WEBHOOK_ALLOW_PRIVATE=true" in response.json()["detail"]
        listed = httpx.get(f"{base}/api/v1/webhooks", headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert listed.json() == []


def test_check_target_checks_every_address() -> None:
    assert check_target(" https://93.184.215.14/hook ", allow_private=False) == "https://93.184.215.14/hook"
    for address in ("127.0.0.1", "10.0.0.1", "172.16.0.1", "100.64.0.1", "169.254.1.1", "[::1]", "[fe80::1]",
                    "[::ffff:127.0.0.1]", "[64:ff9b::a00:1]", "224.0.0.1"):
        with pytest.raises(InvalidInput, match="webhooks go to public addresses only"):
            check_target(f"http://{address}/", allow_private=False)
    assert check_target("http://localhost:1/", allow_private=True) == "http://localhost:1/"


def test_a_name_that_does_not_resolve_and_one_that_resolves_inside_are_refused_alike() -> None:
    """Otherwise saving webhooks maps the operator's network: which inside names exist (session 13's attack round).
    Where the operator allows the inside, the refusal says which it was."""
    refusals = []
    for host in ("localhost", "no-such-host.invalid", "169.254.169.254"):
        with pytest.raises(InvalidInput) as refused:
            check_target(f"http://{host}:9/x", allow_private=False)
        refusals.append(str(refused.value).replace(repr(host), "HOST"))
    assert refusals == ["The webhook host HOST does not resolve to a public address; webhooks go to public addresses "
                        "only. Check the URL; for a receiver on the registry's own network, the operator sets "
                        "VERA_WEBHOOK_ALLOW_PRIVATE=true."] * 3
    with pytest.raises(InvalidInput, match="'no-such-host.invalid' does not resolve \\("):
        check_target("http://no-such-host.invalid/x", allow_private=True)


def test_two_dispatchers_on_one_database_send_each_event_once(registry: Registry, receiver: Receiver) -> None:
    """Several API processes share a database: each event is enqueued and sent once, whoever claims it (SQLite and
    PostgreSQL, dispatchers racing in threads)."""
    path = f"/race-{registry.db.engine.dialect.name}"
    hooks = Webhooks(registry.db, Sender(allow_private=True))
    outboxes = [Outbox(registry.db, Sender(allow_private=True), retry_backoff=timedelta(seconds=0.1))
                for _ in range(3)]
    outboxes[0].enqueue()  # the cursor starts at the newest event
    hooks.create(WebhookForm(owner="ann", url=receiver.url(path), events=["alias"]), actor="ann")
    source = make_adapter(Path(registry.blobs.url).parent / "adapter")
    version = registry.publish(source, owner="ann", name="race", base_model="tiny-llama", published_by="ann")
    for n in range(12):
        registry.set_alias(version.ref, f"a{n}", actor="ann")
    stop = threading.Event()

    def run(outbox: Outbox, name: str) -> None:
        while not stop.is_set():
            outbox.run_once(name)

    threads = [threading.Thread(target=run, args=(o, f"d{i}")) for i, o in enumerate(outboxes)]
    for t in threads:
        t.start()
    try:
        got = receiver.wait_for(path, 12)
        time.sleep(1)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert len(receiver.at(path)) == 12
    assert sorted(json.loads(r.body)["event"]["detail"]["version"] for r in got) == [1] * 12
    assert len({json.loads(r.body)["event"]["id"] for r in got}) == 12


def test_an_event_that_cannot_be_written_as_json_is_skipped_not_stalled_on(
    registry: Registry, receiver: Receiver, caplog: pytest.LogCaptureFixture,
) -> None:
    """Detail nested 300 deep (stored before check_json refused over 64 levels, an outsider's re-check, session 33)
    cannot be written as JSON by pydantic: the dispatcher sent nothing after it, ever. Now it says so and goes on."""
    from datetime import UTC, datetime

    from registry.store import models as m

    path = f"/deep-{registry.db.engine.dialect.name}"
    hooks = Webhooks(registry.db, Sender(allow_private=True))
    outbox = Outbox(registry.db, Sender(allow_private=True), settle=timedelta(0))
    outbox.enqueue()
    hooks.create(WebhookForm(owner="ann", url=receiver.url(path), events=["alias"]), actor="ann")
    source = make_adapter(Path(registry.blobs.url).parent / "adapter")
    version = registry.publish(source, owner="ann", name="deep", base_model="tiny-llama", published_by="ann")
    deep: dict[str, Any] = {"version": 1}
    for _ in range(300):
        deep = {"a": deep}
    with registry.db.session() as s:
        s.add(m.AuditEvent(actor="ann", action="alias", target="ann/deep@old", detail=deep, at=datetime.now(UTC)))
    registry.set_alias(version.ref, "after", actor="ann")
    with caplog.at_level("ERROR", logger="vera.webhooks"):
        outbox.run_once("d")
    got = receiver.wait_for(path, 1)
    assert [json.loads(r.body)["event"]["target"] for r in got] == ["ann/deep@after"]
    assert any("cannot be written as JSON" in r.getMessage() and "ann/deep@old" in r.getMessage()
               for r in caplog.records), caplog.text


def test_events_of_a_pause_are_not_sent_when_the_webhook_resumes_before_the_dispatcher_reads_them(
        registry: Registry, receiver: Receiver) -> None:
    """The dispatcher reads each event a moment after it happens. A webhook paused, then resumed before it read the
    events of the pause, was sent them (a CI run on a slow machine, session 37: a removed member's webhook received
    the organisation's publish after an admin resumed it). A resumed webhook fires for events from its resume on,
    as a new one does, and events while it was paused are never sent (docs/webhooks.md)."""
    from registry.domain.events import WebhookChange

    path = f"/resumed-{registry.db.engine.dialect.name}"
    hooks = Webhooks(registry.db, Sender(allow_private=True))
    outbox = Outbox(registry.db, Sender(allow_private=True), settle=timedelta(0))
    outbox.enqueue()
    hook = hooks.create(WebhookForm(owner="ann", url=receiver.url(path), events=["alias"]), actor="ann")
    version = registry.publish(make_adapter(Path(registry.blobs.url).parent / "adapter"), owner="ann",
                               name="resumed", base_model="tiny-llama", published_by="ann")
    registry.set_alias(version.ref, "before", actor="ann")
    outbox.enqueue()  # read while it was active: sent after the resume, as a delivery due then
    hooks.change(hook.id, WebhookChange(active=False), actor="ann")
    registry.set_alias(version.ref, "paused", actor="ann")  # not read by the dispatcher until after the resume
    hooks.change(hook.id, WebhookChange(active=True), actor="ann")
    registry.set_alias(version.ref, "after", actor="ann")
    outbox.run_once("d")
    receiver.wait_for(path, 2)
    time.sleep(0.2)
    assert sorted(json.loads(r.body)["event"]["target"] for r in receiver.at(path)) == [
        "ann/resumed@after", "ann/resumed@before"]


def test_a_webhook_made_again_is_never_sent_delivery_ids_its_receiver_has_seen(registry: Registry,
                                                                              receiver: Receiver) -> None:
    """A receiver drops the `X-Vera-Delivery` ids it has seen. On SQLite a webhook deleted with its deliveries and
    made again to the same receiver was sent ids from 1 again (SQLite gave the highest deleted id again), so its
    receiver dropped every one; ids are never given twice now (migration 0028), on either database."""
    path = f"/again-{registry.db.engine.dialect.name}"
    hooks = Webhooks(registry.db, Sender(allow_private=True))
    outbox = Outbox(registry.db, Sender(allow_private=True), settle=timedelta(0))
    outbox.enqueue()
    version = registry.publish(make_adapter(Path(registry.blobs.url).parent / "adapter"), owner="ann",
                               name="again", base_model="tiny-llama", published_by="ann")
    seen: list[str] = []
    for round_ in range(2):
        hook = hooks.create(WebhookForm(owner="ann", url=receiver.url(path), events=["alias"]), actor="ann")
        for n in range(3):
            registry.set_alias(version.ref, f"r{round_}-{n}", actor="ann")
        outbox.enqueue()
        outbox.run_once("d")
        got = receiver.wait_for(path, 3 * (round_ + 1))
        seen = [r.headers["x-vera-delivery"] for r in got]
        hooks.delete(hook.id, actor="ann")
    assert len(seen) == 6 and len(set(seen)) == 6, seen
    assert [int(id_) for id_ in seen[3:]] > [int(id_) for id_ in seen[:3]]


def test_migration_0008_keeps_every_row_of_a_0007_database(database_url: str) -> None:
    db = Database(database_url)
    db.upgrade("0007")
    with db.engine.begin() as conn:  # rows as the previous version wrote them
        conn.execute(text("INSERT INTO audit_events (at, actor, action, target, detail) VALUES "
                          "(CURRENT_TIMESTAMP, 'ann', 'publish', 'ann/old:1', '{}')"))
        conn.execute(text("INSERT INTO adapters (owner, name, description, created_at) VALUES "
                          "('ann', 'old', 'kept', CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO jobs (status, spec, owner, target_name, created_at, progress, "
                          "cancel_requested, attempts) VALUES ('queued', :spec, 'ann', 'ann/old', CURRENT_TIMESTAMP, "
                          "'{}', :false, 0)"), {"spec": '{"demo": true}', "false": False})
    db.upgrade("0008")

    def rows() -> list[tuple[Any, ...]]:
        with db.engine.connect() as conn:
            return [tuple(r) for q in ("SELECT actor, action, target FROM audit_events",
                                       "SELECT owner, name, description FROM adapters",
                                       "SELECT owner, target_name, status FROM jobs") for r in conn.execute(text(q))]

    kept = [("ann", "publish", "ann/old:1"), ("ann", "old", "kept"), ("ann", "ann/old", "queued")]
    assert rows() == kept
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM webhooks")).scalar() == 0
    db.downgrade("0007")
    assert rows() == kept
    db.engine.dispose()


def _message(url: str) -> Message:
    return Message(url=url, secret="whsec_x", delivery_id=1, event="test", event_id=None, payload={"ping": True})


def test_a_receiver_that_trickles_its_answer_is_cut_off_at_the_deadline() -> None:
    """Attack round of session 13: a receiver sending its status line a byte every 2 s never hit the per-read
    timeout, and 45 test deliveries held every thread of the API. The deadline is for the whole attempt."""
    def trickle(conn: socket.socket, stop: threading.Event) -> None:
        for byte in b"HTTP/1.1 200 OK\r\n" * 100:
            if stop.wait(0.2):
                return
            conn.sendall(bytes([byte]))

    started = time.monotonic()
    outcome = _sent_within_1_s(trickle)
    assert outcome.error is not None and "no answer within 1 s" in outcome.error, outcome
    assert outcome.status_code is None and time.monotonic() - started < 4  # not the 20 s the trickle lasts


def test_a_receiver_that_sends_its_status_line_and_never_ends_its_headers_fails_at_the_deadline() -> None:
    """The watchdog shut the socket mid-headers and http.client read that as their end: "answered 200" after the
    deadline (a docs audit, session 53). A status line alone is no answer."""
    def half(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\n")
        stop.wait(20)

    outcome = _sent_within_1_s(half)
    assert outcome.error is not None and "no answer within 1 s" in outcome.error, outcome
    assert outcome.status_code is None, outcome


def _sent_within_1_s(answer: Callable[[socket.socket, threading.Event], None]) -> Outcome:
    """A delivery with a 1 s deadline to a loopback receiver that reads the request and then does ``answer`` with
    the connection (told by the event when the attempt is over)."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def receive() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            answer(conn, stop)

    threading.Thread(target=receive, daemon=True).start()
    try:
        return Sender(timeout_s=1, allow_private=True).send(_message(f"http://127.0.0.1:{listener.getsockname()[1]}/"))
    finally:
        stop.set()
        listener.close()


def test_the_connection_goes_to_the_address_that_was_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS rebinding: a name that answers a public address to the check and a loopback one to the connection.
    The name is resolved once: the loopback listener is never reached."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(3)
    port = listener.getsockname()[1]
    real, lookups = socket.getaddrinfo, []

    def rebinding(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "rebind.example":
            return real(host, *args, **kwargs)
        lookups.append(host)
        address = "192.0.43.10" if len(lookups) == 1 else "127.0.0.1"  # public first (an IANA address), then inside
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    outcome = Sender(timeout_s=1).send(_message(f"http://rebind.example:{port}/hook"))
    assert lookups == ["rebind.example"] and outcome.error is not None, (lookups, outcome)
    with pytest.raises(TimeoutError):
        listener.accept()  # nothing came
    listener.close()


def test_a_name_with_many_silent_addresses_shares_one_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Second attack round: each address got the whole timeout, so a name with 6 addresses that drop connection
    attempts held an attempt for 6 x the timeout. They share the attempt's deadline now."""
    real = socket.getaddrinfo
    tried: list[float] = []

    def many(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "many.example":
            return real(host, *args, **kwargs)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (f"192.0.2.{i}", 80)) for i in range(1, 7)]

    def silent(address: Any, timeout: float | None = None, *args: Any, **kwargs: Any) -> socket.socket:
        tried.append(timeout or 0)
        time.sleep(timeout or 0)  # a dropped SYN: no answer until the timeout
        raise TimeoutError("timed out")

    monkeypatch.setattr(socket, "getaddrinfo", many)
    monkeypatch.setattr(socket, "create_connection", silent)
    started = time.monotonic()
    outcome = Sender(timeout_s=1, allow_private=True).send(_message("http://many.example/hook"))
    assert outcome.error is not None and "no answer within 1 s" in outcome.error, outcome
    assert time.monotonic() - started < 2 and sum(tried) <= 1.05, tried  # not 6 s


def test_a_members_webhooks_pause_when_it_leaves_or_may_only_read(server: dict[str, Any],
                                                                   receiver: Receiver) -> None:
    """A writer's webhook for its organisation went on receiving the organisation's events (descriptions, cards)
    after the writer was removed (an outsider's walk, session 28): removed or made a reader, its webhooks pause,
    audited with the reason; an admin resumes one."""
    with client(server) as alice, client(server, "mallory") as mallory:
        alice.create_organization("hooked")
        alice.set_member("hooked", "mallory", "write")
        removed = mallory.create_webhook("hooked", receiver.url("/removed"), events=["adapter-edit", "publish"])
        kept = alice.create_webhook("hooked", receiver.url("/kept"), events=["publish"])
        alice.remove_member("hooked", "mallory")
        alice.publish(server["source"], "hooked/secret", base_model="tiny-llama")
        alice.update_adapter("hooked/secret", description="the plan")
        receiver.wait_for("/kept", 1)
        hooks = {h.id: h for h in alice.webhooks("hooked")}
        assert not hooks[removed.id].active and hooks[kept.id].active
        events = alice.events(owner="hooked", action="webhook-update").events
        assert [(e.target, e.actor, e.detail) for e in events] == [
            (f"hooked/webhooks/{removed.id}", "alice",
             {"active": False, "reason": "paused: its creator left the organisation (mallory)"})]
        alice.set_member("hooked", "mallory", "write")
        demoted = mallory.create_webhook("hooked", receiver.url("/demoted"), events=["publish"])
        alice.set_member("hooked", "mallory", "read")
        assert not next(h for h in alice.webhooks("hooked") if h.id == demoted.id).active
        assert alice.update_webhook(removed.id, active=True).active  # an admin may resume it
        # a webhook someone else created, which the member pointed at its own URL before leaving (an outsider's
        # walk, session 29: only the creator's were paused)
        alice.set_member("hooked", "mallory", "write")
        repointed = alice.create_webhook("hooked", receiver.url("/alices"), events=["adapter-edit"])
        mallory.update_webhook(repointed.id, url=receiver.url("/repointed"))
        untouched = alice.create_webhook("hooked", receiver.url("/untouched"), events=["adapter-edit"])
        alice.remove_member("hooked", "mallory")
        hooks = {h.id: h for h in alice.webhooks("hooked")}
        assert not hooks[repointed.id].active and hooks[untouched.id].active
        assert alice.events(owner="hooked", action="webhook-update").events[-1].detail == {
            "active": False, "reason": "paused: its editor left the organisation (mallory)"}
        alice.update_adapter("hooked/secret", description="the new plan")
        receiver.wait_for("/untouched", 1)
        # the organisation renamed between the member's change and its removal: its audit events keep the old name
        alice.create_organization("renamed")
        alice.set_member("renamed", "mallory", "write")
        later = alice.create_webhook("renamed", receiver.url("/alices"), events=["adapter-edit"])
        mallory.update_webhook(later.id, url=receiver.url("/after-rename"))
        alice.rename_organization("renamed", "renamed-ai")
        alice.remove_member("renamed-ai", "mallory")
        assert not next(h for h in alice.webhooks("renamed-ai") if h.id == later.id).active
        time.sleep(1)
    assert receiver.at("/removed") == [] and receiver.at("/demoted") == [] and receiver.at("/repointed") == []
    assert receiver.at("/after-rename") == []


def test_a_registry_wide_webhook_receives_every_owners_events_and_only_admins_manage_it(
        server: dict[str, Any], receiver: Receiver) -> None:
    """Owner '*': an operator's feed of every owner's adapter events (private ones too: only the registry's
    administrators create, list, read or change such a webhook; to anyone else it does not exist)."""
    with client(server, "admin") as admin, client(server) as alice, client(server, "mallory") as mallory:
        every = admin.create_webhook("*", receiver.url("/every"), events=["publish"])
        assert every.owner == "*" and [h.id for h in admin.webhooks("*")] == [every.id]
        for who in (alice, mallory):
            with pytest.raises(Forbidden, match=r"Only the registry's administrators manage registry-wide webhooks"):
                who.create_webhook("*", receiver.url("/x"))
            with pytest.raises(Forbidden, match=r"Only the registry's administrators"):
                who.webhooks("*")
            for call in (lambda c: c.webhook(every.id), lambda c: c.update_webhook(every.id, active=False),
                         lambda c: c.test_webhook(every.id), lambda c: c.webhook_deliveries(every.id),
                         lambda c: c.delete_webhook(every.id)):
                with pytest.raises(NotFound):
                    call(who)
        alice.publish(server["source"], "alice/everywhere", base_model="tiny-llama", visibility="private")
        mallory.publish(server["source"], "mallory/everywhere", base_model="tiny-llama")
        got = receiver.wait_for("/every", 2)
        assert sorted(json.loads(r.body)["event"]["adapter"] for r in got) == ["alice/everywhere",
                                                                               "mallory/everywhere"]
        assert all(signature_ok(every.secret, r) and json.loads(r.body)["webhook"]["owner"] == "*" for r in got)
        assert [e.target for e in admin.events(action="webhook-create").events if e.target.startswith("*/")] == [
            f"*/webhooks/{every.id}"]
        assert not [e for e in alice.events(action="webhook-create").events if e.target.startswith("*/")]
        admin.delete_webhook(every.id)
    db = Database(server["database"])
    limited_token = create_token(db, owner="ops", scopes=["admin"], limited_to=["alice"])[1]
    db.engine.dispose()
    with client(server, "admin") as admin:
        kept = admin.create_webhook("*", receiver.url("/every"), events=["publish"])
    with RegistryClient(server["url"], limited_token, cache=False) as limited:  # not the whole registry's
        with pytest.raises(Forbidden, match="Only the registry's administrators"):
            limited.webhooks("*")
        with pytest.raises(NotFound):
            limited.webhook(kept.id)
    with client(server, "admin") as admin:
        admin.delete_webhook(kept.id)


def test_an_administrators_registry_wide_webhooks_pause_when_its_last_admin_token_is_revoked(
        server: dict[str, Any], receiver: Receiver) -> None:
    """An operator who leaves (its tokens revoked) keeps no feed of every owner's private events: the registry-wide
    webhooks it created or changed pause once it holds no administrator's token (one limited to some owners does
    not count), audited with the reason; another administrator's own stay active."""
    db = Database(server["database"])
    first, ops1 = create_token(db, owner="ops1", scopes=["admin"])
    second = create_token(db, owner="ops1", scopes=["admin"])[0]
    create_token(db, owner="ops1", scopes=["admin"], limited_to=["alice"])  # not the whole registry's: no matter
    ops2 = create_token(db, owner="ops2", scopes=["admin"])[1]
    try:
        with RegistryClient(server["url"], ops1, cache=False) as one, \
                RegistryClient(server["url"], ops2, cache=False) as two:
            created = one.create_webhook("*", receiver.url("/ops1"), events=["publish"])
            edited = two.create_webhook("*", receiver.url("/ops2"), events=["publish"])
            one.update_webhook(edited.id, url=receiver.url("/ops1-too"))
            untouched = two.create_webhook("*", receiver.url("/ops2-own"), events=["publish"])
            revoke_token(db, first)  # ops1 holds another administrator's token: nothing pauses
            assert all(h.active for h in two.webhooks("*"))
            revoke_token(db, second, actor="root")
            hooks = {h.id: h for h in two.webhooks("*")}
            assert (hooks[created.id].active, hooks[edited.id].active, hooks[untouched.id].active) == (
                False, False, True)
            reasons = {e.target: e.detail for e in two.events(action="webhook-update").events if e.actor == "root"}
            assert reasons == {
                f"*/webhooks/{created.id}": {"active": False, "reason": "paused: its creator holds no "
                                                                        "administrator's token any more (ops1)"},
                f"*/webhooks/{edited.id}": {"active": False, "reason": "paused: its editor holds no "
                                                                       "administrator's token any more (ops1)"}}
            for hook in hooks.values():
                two.delete_webhook(hook.id)
    finally:
        db.engine.dispose()


@pytest.mark.parametrize(("webhook_id", "said"), [
    ("99999999999999999999", "path.webhook_id: Input should be less than or equal to 2147483647"),
    ("abc", "path.webhook_id: Input should be a valid integer, unable to parse string as an integer")])
def test_a_bad_webhook_id_is_said_once(server: dict[str, Any], webhook_id: str, said: str) -> None:
    """The id is read by the route and by the dependency that checks the caller may manage it: its error was said
    twice in one message (an outsider's finding, session 43)."""
    answer = httpx.get(f"{server['url']}/api/v1/webhooks/{webhook_id}",
                       headers={"Authorization": f"Bearer {server['tokens']['alice']}"})
    assert answer.status_code == 422 and answer.json()["detail"] == said, answer.text


def test_a_change_naming_a_field_a_webhook_has_not_is_refused(server: dict[str, Any], receiver: Receiver) -> None:
    """`PATCH {"owner": "mallory"}` answered 200 and changed nothing, as if it had (an outsider's finding, session
    33): a field other than url, events, description and active is a 422 naming it, and nothing changes."""
    with client(server) as alice:
        hook = alice.create_webhook("alice", receiver.url("/kept"))
    answer = httpx.patch(f"{server['url']}/api/v1/webhooks/{hook.id}", json={"owner": "mallory", "active": False},
                         headers={"Authorization": f"Bearer {server['tokens']['alice']}"})
    assert answer.status_code == 422 and "owner: Extra inputs are not permitted" in answer.json()["detail"]
    with client(server) as alice:
        assert alice.webhook(hook.id).owner == "alice" and alice.webhook(hook.id).active


def test_a_dispatcher_on_a_database_that_refuses_writes_says_so_once_and_backs_off(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Every failed round logged a 4 KB traceback, once a second, while the database was away or read-only (an
    operator's walk, session 43): a database error is one line, said again only once a minute, and rounds back off."""
    url = f"sqlite:///{tmp_path / 'r.db'}"
    Database(url).upgrade()
    db = Database(url)
    event.listen(db.engine, "connect", lambda connection, _: connection.execute("PRAGMA query_only = ON"))
    dispatcher = Dispatcher(Outbox(db, Sender(allow_private=True)), poll_s=0.01)
    attempts: list[float] = []
    run_once = dispatcher.outbox.run_once

    def counted(worker: str) -> int:
        attempts.append(time.monotonic())
        return run_once(worker)

    dispatcher.outbox.run_once = counted  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="vera.webhooks"):
        dispatcher.start()
        time.sleep(1.0)
        dispatcher.stop()
    db.engine.dispose()
    said = [r for r in caplog.records if r.name == "vera.webhooks"]
    assert len(said) == 1 and said[0].exc_info is None, [r.getMessage() for r in said]
    assert "a webhook dispatcher round failed: OperationalError: attempt to write a readonly database" in \
        said[0].getMessage()
    assert 4 <= len(attempts) <= 8  # 0.01, 0.02, 0.04, ... s apart: about 7 in a second, not 100
    assert attempts[-1] - attempts[-2] > 4 * (attempts[1] - attempts[0])


def test_an_attempt_refused_before_sending_reads_as_not_sent() -> None:
    """An attempt whose address is refused before anything is sent (a name re-pointed inside after the webhook was
    saved) read "no answer in 0 ms: refused: ..." in `vera webhook test` and "no answer" on the dashboard (a docs
    audit, session 53): it reads "not sent" and why, and a real non-answer still reads as one."""
    from datetime import UTC, datetime

    from registry.cli.events import _outcome
    from registry.domain.events import AttemptInfo, DeliveryInfo

    def said(outcome: Outcome) -> tuple[str, str]:
        attempt = AttemptInfo(attempt=1, at=datetime.now(UTC), status_code=outcome.status_code,
                              duration_ms=outcome.duration_ms, error=outcome.error)
        delivery = DeliveryInfo(id=1, webhook_id=1, event_id=None, event="ping", status="failed", attempts=1,
                                next_attempt_at=None, created_at=datetime.now(UTC), payload={}, log=[attempt],
                                finished_at=None)
        return attempt.answer, _outcome(delivery)

    answer, line = said(Sender(timeout_s=1, allow_private=False).send(_message("http://127.0.0.1:9/hook")))
    assert answer == "not sent" and line == "not sent: The webhook host '127.0.0.1' does not resolve to a public " \
        "address; webhooks go to public addresses only. Check the URL; for a receiver on the registry's own " \
        "network, the operator sets VERA_WEBHOOK_ALLOW_PRIVATE=true.", line
    with socket.socket() as closed:  # a port nothing listens on: the connection is refused, nothing answers
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    answer, line = said(Sender(timeout_s=1, allow_private=True).send(_message(f"http://127.0.0.1:{port}/hook")))
    assert answer == "no answer" and re.fullmatch(r"no answer in \d+ ms: ConnectionRefusedError: .+", line), line

"""The Webhooks page through streamlit.testing.v1.AppTest against a real registry server and a real HTTP receiver:
add a webhook (its secret shown once), send a test delivery with the button (the receiver gets a signed POST), read
the delivery log, pause it, remove it after saying yes."""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from registry.client import RegistryClient
from registry.services.tokens import create_token
from registry.store.database import Database
from tests.registry.servers import registry_in_thread


class Receiver(BaseHTTPRequestHandler):
    """Records each POST (headers and body) and answers with the class's status."""

    received: list[tuple[dict[str, str], bytes]] = []
    status = 200

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        Receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(Receiver.status)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("hooks-ui")
    url = f"sqlite:///{root / 'r.db'}"
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        with registry_in_thread(url, root / "blobs", VERA_REQUIRE_TOKENS="true",
                                VERA_WEBHOOK_ALLOW_PRIVATE="true") as base:
            db = Database(url)
            token = create_token(db, owner="alice", scopes=["read", "publish"])[1]
            db.engine.dispose()
            with RegistryClient(base, token) as client:
                client.create_organization("acme")
            yield {"url": base, "token": token, "hook": f"http://127.0.0.1:{receiver.server_port}/hook"}
    finally:
        receiver.shutdown()
        receiver.server_close()


def page(registry: dict[str, Any]) -> AppTest:
    at = AppTest.from_string("from web_ui import session, webhooks\nsession.guarded(webhooks.page)()\n",
                             default_timeout=60)
    at.session_state["registry_url"] = registry["url"]
    at.session_state["token"] = registry["token"]
    return at.run()


def texts(at: AppTest, kind: str) -> str:
    return " ".join(str(e.value) for e in getattr(at, kind))


def api(registry: dict[str, Any], fn: Any) -> Any:
    with RegistryClient(registry["url"], registry["token"]) as client:
        return fn(client)


def button(at: AppTest, label: str) -> Any:
    return next(b for b in at.button if b.label == label)


def test_add_test_pause_and_remove_a_webhook(registry: dict[str, Any]) -> None:
    at = page(registry)
    assert not at.exception
    owner = next(s for s in at.selectbox if s.label == "Owner")
    assert owner.options == ["alice", "acme"]  # yours, and the organisation you administer
    assert "No webhooks for the adapters under " in texts(at, "info")
    next(t for t in at.text_input if t.label == "URL").set_value("ftp://nowhere")
    button(at, "Add webhook").click()
    at.run()
    assert "must start with http" in texts(at, "error")
    assert api(registry, lambda c: c.webhooks("alice")) == []  # refused: nothing made
    next(t for t in at.text_input if t.label == "URL").set_value(registry["hook"])
    next(m for m in at.multiselect if m.label == "Send when").set_value(["publish", "job-end"])
    button(at, "Add webhook").click()
    at.run()
    assert "shown this once" in texts(at, "success")
    secret = at.code[0].value
    # the list above has it at once (it said "No webhooks ... yet" over the new one: session 29's walk)
    assert "No webhooks" not in texts(at, "info") and list(at.dataframe[0].value["url"]) == [registry["hook"]]
    with RegistryClient(registry["url"], registry["token"]) as client:
        [hook] = client.webhooks("alice")
    assert hook.url == registry["hook"] and set(hook.events) == {"publish", "job-end"}
    at = page(registry)  # the secret is not shown again
    assert not at.code and list(at.dataframe[0].value["url"]) == [registry["hook"]]

    Receiver.received.clear()
    button(at, "Send a test delivery").click()
    at.run()
    assert "succeeded" in texts(at, "success")
    [(headers, body)] = Receiver.received  # a signed POST reached the receiver
    signed = f"{headers['x-vera-timestamp']}.".encode() + body
    expected = "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["x-vera-signature"], expected)
    log = at.dataframe[1].value
    assert list(log["status"]) == ["succeeded"] and list(log["last answer"]) == ["200"]

    Receiver.status = 500
    try:
        button(at, "Send a test delivery").click()
        at.run()
        assert "failed" in texts(at, "error") or "pending" in texts(at, "error")
    finally:
        Receiver.status = 200

    button(at, "Pause").click()
    at.run()
    assert api(registry, lambda c: c.webhook(hook.id)).active is False
    # the button says what a click does now: it read "Pause" still, and a second click resumed the webhook (a
    # newcomer's walk, session 54: the chosen webhook was the one the box had kept, as it was before the click)
    labels = {b.label for b in at.button}
    assert "Resume" in labels and "Pause" not in labels, labels
    assert "paused" in texts(at, "success"), texts(at, "success")
    button(at, "Resume").click()
    at.run()
    assert api(registry, lambda c: c.webhook(hook.id)).active is True
    assert "Pause" in {b.label for b in at.button} and "resumed" in texts(at, "success")
    button(at, "Remove").click()
    at.run()
    assert "Its delivery log goes with it" in texts(at, "warning")
    assert api(registry, lambda c: c.webhooks("alice"))  # not before saying yes
    button(at, "Yes, remove it").click()
    at.run()
    assert api(registry, lambda c: c.webhooks("alice")) == []


def test_anonymous_callers_are_told_to_sign_in(registry: dict[str, Any]) -> None:
    from registry.domain.schemas import WhoAmI
    from web_ui.webhooks import owners

    anonymous = WhoAmI(user="anonymous", anonymous=True, scopes=["read"], organizations={}, token_id=None,
                       limited_to=None)
    assert owners(anonymous) == []
    member = WhoAmI(user="bob", anonymous=False, scopes=["read", "publish"],
                    organizations={"acme": "read", "beta": "write"}, token_id=1, limited_to=None)
    assert owners(member) == ["bob", "beta"]  # a read role manages nothing of acme


def test_an_admin_is_offered_every_owner_that_published(registry: dict[str, Any]) -> None:
    from registry.domain.schemas import WhoAmI
    from web_ui.webhooks import owners

    admin = WhoAmI(user="ops", anonymous=False, scopes=["admin"], organizations={"acme": "admin"}, token_id=2,
                   limited_to=None)
    assert owners(admin, ["carol", "bob", "carol"]) == ["carol", "bob", "acme", "*"]  # *: registry-wide
    alone = admin.model_copy(update={"organizations": {}})
    assert owners(alone, []) == ["ops", "*"]  # its own name only when nothing else is known
    limited = admin.model_copy(update={"limited_to": ["acme"]})
    assert owners(limited, []) == ["acme"]  # a token limited to owners manages no registry-wide webhook


def test_a_registry_without_tokens_offers_the_owners_that_published_not_local(tmp_path: Any) -> None:
    """Session 11's note: in local mode (no tokens: every caller is the admin "local"), the page offered only
    "local/", a namespace nobody publishes under."""
    from tests.registry.adapters import make_adapter

    with registry_in_thread(f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "blobs") as url:
        with RegistryClient(url) as client:
            client.publish(make_adapter(tmp_path / "a"), "carol/x", base_model="tiny-llama")
        at = page({"url": url, "token": ""})
        assert not at.exception
        owner = at.selectbox(key="webhooks_owner")
        assert owner.value == "carol" and owner.options[0] == "carol", owner.options
        assert at.query_params["owner"] == "carol"  # opened from the menu, the address still names the owner
        assert "No webhooks for the adapters under carol/ yet." in texts(at, "info")
        named = AppTest.from_string("from web_ui import session, webhooks\nsession.guarded(webhooks.page)()\n",
                                    default_timeout=60)
        named.session_state["registry_url"], named.session_state["token"] = url, ""
        named.query_params["owner"] = "newteam"  # an owner nobody published under yet, as a link or typing names it
        named.run()
        assert not named.exception and named.selectbox(key="webhooks_owner").value == "newteam"
        assert "No webhooks for the adapters under newteam/ yet." in texts(named, "info")
        assert "newteam/ has published nothing here yet" in texts(named, "caption")  # a typo would show here
        assert "local" not in owner.options  # the local user publishes nothing of its own


def test_every_webhook_event_has_words_in_the_form() -> None:
    from registry.domain.events import WEBHOOK_EVENTS
    from web_ui.webhooks import EVENT_LABELS

    assert set(EVENT_LABELS) == set(WEBHOOK_EVENTS)


def test_the_table_says_every_event_for_a_webhook_that_takes_them_all() -> None:
    from datetime import UTC, datetime

    from registry.domain.events import WEBHOOK_EVENTS, WebhookInfo
    from web_ui.webhooks import hooks_table

    def hook(events: list[str]) -> WebhookInfo:
        return WebhookInfo(id=1, owner="ann", url="https://x/h", events=events, active=True, description="",
                           created_by="ann", created_at=datetime.now(UTC), updated_at=datetime.now(UTC))

    shown = hooks_table([hook(list(WEBHOOK_EVENTS)), hook(["publish", "job-end"]), hook([])])["events"].tolist()
    assert shown == ["every event", "publish, job-end", "none"]

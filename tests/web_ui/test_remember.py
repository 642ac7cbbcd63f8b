"""Signed in on this browser (web_ui.remember), in a real browser against a registry that requires tokens: a pasted
token is kept in the tab only; "Remember me" makes a new, expiring token of the same user and scopes, kept by the
dashboard's server (a file of mode 0600), and gives the browser a handle to it in a cookie, which reloads and new tabs
use, and which the registry does not take; "Forget me", typing another token over it, or revoking it on the registry
end it (revoked there, the handle and the cookie gone); a link naming the registry by another URL does not get it.
The Token box never shows a token the dashboard chose (a remembered one, or its own VERA_TOKEN)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Page, expect, sync_playwright
from streamlit.testing.v1 import AppTest

from registry.client import RegistryClient
from registry.domain.errors import Unauthorized
from registry.domain.schemas import TokenInfo
from tests.registry.servers import free_port, registry_in_thread, running_vera, team_tokens
from tests.web_ui.test_browser import ARTIFACTS, CHROMIUM, FLAGS, shot

DAYS = 2  # VERA_UI_REMEMBER_DAYS of the dashboard under test


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("remember")
    url = f"sqlite:///{root / 'r.db'}"
    with registry_in_thread(url, root / "blobs", VERA_REQUIRE_TOKENS="true", VERA_ANONYMOUS_READ="true") as base:
        tokens = team_tokens(url, ("alice", "bob"))
        port = free_port()
        with running_vera(["ui", "--port", str(port), "--registry", base], port, health="/_stcore/health",
                          VERA_UI_REMEMBER_DAYS=str(DAYS), VERA_TOKEN="", VERA_CONFIG_DIR=str(root / "ui")) as ui:
            yield {"url": base, "ui": ui, "store": root / "ui" / "dashboard-signins.json", **tokens}


@pytest.fixture()
def browser(registry: dict[str, Any]) -> Iterator[BrowserContext]:
    """A fresh browser profile per test (its own cookies)."""
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        context = chromium.new_context(viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(60_000)
        expect.set_options(timeout=60_000)
        yield context
        chromium.close()


def sidebar(page: Page) -> Any:
    return page.get_by_test_id("stSidebar")


def signed_in(page: Page, user: str) -> None:
    expect(sidebar(page).get_by_text(user, exact=True)).to_be_visible()


def anonymous(page: Page) -> None:
    expect(sidebar(page).get_by_text("anonymous (public adapters only)")).to_be_visible()


def paste(page: Page, token: str) -> None:
    box = page.get_by_role("textbox", name="Token", exact=True)
    box.fill(token)
    box.press("Enter")


def sign_in_remembered(context: BrowserContext, registry: dict[str, Any], user: str) -> tuple[Page, str, int]:
    """A tab where ``user`` pasted their token and asked to be remembered: the tab, the sign-in's secret (from the
    browser's cookie) and its token id."""
    page = context.new_page()
    page.goto(registry["ui"])
    anonymous(page)
    paste(page, registry[user])
    signed_in(page, user)
    page.get_by_role("button", name="Remember me on this browser").click()
    expect(sidebar(page).get_by_text("remembered on this browser until")).to_be_visible()
    page.wait_for_function("() => document.cookie.includes('vera_signin_')")  # written as the run's page draws
    kept = cookie(context, registry["url"])
    assert kept is not None
    expect(page.get_by_role("textbox", name="Token", exact=True)).to_have_value("")  # not the sign-in's token
    with RegistryClient(registry["url"], kept["value"]) as client, pytest.raises(Unauthorized):
        client.whoami()  # a handle, which the registry does not take
    entries = json.loads(registry["store"].read_text())["signins"]
    entry = entries[hashlib.sha256(kept["value"].encode()).hexdigest()]
    assert entry["url"] == registry["url"] and registry["store"].stat().st_mode & 0o077 == 0
    with RegistryClient(registry["url"], entry["token"]) as client:
        who = client.whoami()
    assert who.user == user and who.token_id is not None
    return page, entry["token"], who.token_id


def cookie_gone(page: Page) -> None:
    page.wait_for_function("() => !document.cookie.includes('vera_signin_')")


def cookie(context: BrowserContext, url: str) -> dict[str, Any] | None:
    name = "vera_signin_" + hashlib.sha256(url.encode()).hexdigest()[:16]
    return next((dict(c) for c in context.cookies() if c["name"] == name), None)


def sign_ins(registry: dict[str, Any], user: str) -> list[TokenInfo]:
    with RegistryClient(registry["url"], registry[user]) as client:
        return [t for t in client.tokens() if t.name == "dashboard sign-in"]


def test_a_pasted_token_lasts_the_tab_only(browser: BrowserContext, registry: dict[str, Any]) -> None:
    page = browser.new_page()
    page.goto(registry["ui"])
    paste(page, registry["bob"])
    signed_in(page, "bob")
    page.reload()
    anonymous(page)
    assert cookie(browser, registry["url"]) is None


def test_remembered_across_reloads_and_tabs_then_forgotten(browser: BrowserContext, registry: dict[str, Any]) -> None:
    before = {t.id for t in sign_ins(registry, "alice")}
    page, secret, _ = sign_in_remembered(browser, registry, "alice")
    kept = cookie(browser, registry["url"])
    assert kept is not None and secret not in kept["value"] and registry["alice"] not in json.dumps(browser.cookies())
    assert kept["sameSite"] == "Strict" and kept["path"] == "/"
    lasts = datetime.fromtimestamp(kept["expires"], UTC) - datetime.now(UTC)
    assert timedelta(days=DAYS) - timedelta(minutes=5) < lasts <= timedelta(days=DAYS)
    (made,) = [t for t in sign_ins(registry, "alice") if t.id not in before]
    assert made.expires_at is not None and not made.revoked and sorted(made.scopes) == ["publish", "read"]
    with RegistryClient(registry["url"], secret) as client:
        assert client.whoami().user == "alice"

    page.reload()
    signed_in(page, "alice")
    expect(sidebar(page).get_by_text("remembered on this browser until")).to_be_visible()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot(page, "40-signed-in-remembered-on-this-browser")
    tab = browser.new_page()
    tab.goto(registry["ui"] + "/activity")
    signed_in(tab, "alice")
    tab.close()

    page.get_by_role("button", name="Forget me on this browser").click()
    anonymous(page)
    cookie_gone(page)
    assert cookie(browser, registry["url"]) is None
    assert next(t for t in sign_ins(registry, "alice") if t.id == made.id).revoked
    assert secret not in registry["store"].read_text()  # and the dashboard no longer keeps it
    page.reload()
    anonymous(page)


def test_typing_another_token_over_a_remembered_one_signs_it_out(browser: BrowserContext,
                                                                 registry: dict[str, Any]) -> None:
    page, _, made = sign_in_remembered(browser, registry, "alice")
    paste(page, registry["bob"])
    signed_in(page, "bob")
    cookie_gone(page)
    assert next(t for t in sign_ins(registry, "alice") if t.id == made).revoked
    page.reload()
    anonymous(page)


def test_a_sign_in_revoked_on_the_registry_ends_with_a_message(browser: BrowserContext,
                                                              registry: dict[str, Any]) -> None:
    page, secret, token_id = sign_in_remembered(browser, registry, "alice")
    with RegistryClient(registry["url"], secret) as client:
        client.revoke_token(token_id)
    page.reload()
    expect(sidebar(page).get_by_text("has ended (expired or revoked); paste a token")).to_be_visible()
    anonymous(page)
    cookie_gone(page)


def test_the_token_box_never_shows_the_dashboards_own_token(registry: dict[str, Any],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A shared dashboard's VERA_TOKEN was every visitor's to read: it was the value of their Token box."""
    monkeypatch.setenv("VERA_TOKEN", registry["alice"])
    at = AppTest.from_file(str(Path(__file__).parents[2] / "web_ui" / "streamlit_app.py"), default_timeout=60).run()
    assert not at.exception and at.session_state["token"] == registry["alice"]  # used: it is the default
    assert at.sidebar.text_input(key="sidebar_token").value == ""  # not shown
    assert any("the dashboard's own token (VERA_TOKEN)" in c.value for c in at.sidebar.caption)
    assert not [b for b in at.sidebar.button if b.label == "Remember me on this browser"]
    at.sidebar.text_input(key="sidebar_token").set_value(registry["bob"]).run()  # a visitor's own, typed: theirs
    assert at.session_state["token"] == registry["bob"]
    assert [b for b in at.sidebar.button if b.label == "Remember me on this browser"]
    at.sidebar.text_input(key="sidebar_token").set_value("").run()  # emptied: back to the dashboard's
    assert at.session_state["token"] == registry["alice"]


def test_remember_me_is_offered_for_a_token_the_registry_took(registry: dict[str, Any],
                                                               monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """It was offered beside the Token box before the registry answered, for a refused token too (clicking said
    why), and on a registry in local mode, which makes no tokens."""
    monkeypatch.setenv("VERA_REGISTRY_URL", registry["url"])
    at = AppTest.from_file(str(Path(__file__).parents[2] / "web_ui" / "streamlit_app.py"), default_timeout=60).run()
    offered = lambda: [b for b in at.sidebar.button if b.label == "Remember me on this browser"]  # noqa: E731
    at.sidebar.text_input(key="sidebar_token").set_value("vera_wrong").run()
    assert not at.exception and at.session_state["token"] == "vera_wrong" and not offered()
    at.sidebar.text_input(key="sidebar_token").set_value(registry["bob"]).run()
    assert offered() and any("bob" in m.value for m in at.sidebar.markdown)  # under who you are
    with registry_in_thread(f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "blobs") as local:
        at.sidebar.text_input(key="sidebar_url").set_value(local).run()
        at.sidebar.text_input(key="sidebar_token").set_value("garbage-token").run()
        assert not at.exception and any("local" in m.value for m in at.sidebar.markdown) and not offered()


def test_a_link_to_the_registry_by_another_url_does_not_get_the_sign_in(browser: BrowserContext,
                                                                       registry: dict[str, Any]) -> None:
    sign_in_remembered(browser, registry, "alice")
    other = registry["url"].replace("127.0.0.1", "localhost")
    tab = browser.new_page()
    tab.goto(f"{registry['ui']}/?registry={other}")
    expect(tab.get_by_role("textbox", name="URL", exact=True)).to_have_value(other)
    anonymous(tab)


def test_a_local_mode_registry_has_no_sign_in_to_remember(tmp_path: Path) -> None:
    """A newcomer's walk (session 34): in local mode the Token box took "garbage-token", and Remember me turned it
    into a real token with the local user's admin scope, kept for 7 days. Refused now, saying why; no token made."""
    from registry.domain.errors import InvalidInput
    from web_ui.remember import remember

    with registry_in_thread(f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "blobs") as url, \
            RegistryClient(url, "garbage-token", cache=False) as client:
        who = client.whoami()
        assert who.user == "local" and who.token_id is None
        with pytest.raises(InvalidInput, match="runs in local mode: it takes no tokens"):
            remember(client, who)
        assert client.tokens() == []

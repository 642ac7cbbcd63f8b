"""Signed in on this browser: the sidebar's "Remember me" keeps a pasted token across reloads and new tabs, which a
Streamlit session alone does not (each tab, each reload is a new session with an empty state).

Remembering asks the registry for a new token of the same user, scopes and owner limit (``POST /api/v1/tokens``, as
`vera auth create-token` does), named "dashboard sign-in" and expiring after VERA_UI_REMEMBER_DAYS (7; never later
than the pasted token). No token goes to the browser: the dashboard's server keeps the sign-in in a file of its own
(VERA_CONFIG_DIR/dashboard-signins.json, mode 0600), under the SHA-256 of a random handle, and the browser keeps the
handle in a cookie, one per registry URL. Scripts can read that cookie (Streamlit sets no HttpOnly ones), and so can
pages of other ports of the same host name (cookies are not kept apart by port), so the handle is worth only what
this dashboard does with it: it is not a token, the registry does not take it, and "Forget me" (or revoking the
sign-in token, or the pasted token that made it: `vera auth revoke ID`) ends it. A remembered sign-in is listed
with the user's tokens (`vera auth tokens`) and ends by itself. Neither a pasted token, nor the sign-in, nor the
dashboard's own VERA_TOKEN is ever put back into the Token box, which shows only what its user typed.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import streamlit as st

from registry.client import RegistryClient
from registry.credentials import config_root, read_private_json, write_private_json
from registry.domain.errors import InvalidInput, RegistryError, Unauthorized
from registry.domain.schemas import WhoAmI
from registry.settings import ui_remember_days

#: The name every remembered sign-in's token has in the user's token list.
TOKEN_NAME = "dashboard sign-in"
#: A remembered sign-in must live at least this long to be worth one (a pasted token about to expire is not kept).
SHORTEST = timedelta(minutes=10)
#: Session-state key: the cookie to write or clear on this session's next run (a run that ends in st.rerun()
#: draws nothing, so the write waits for the next one).
PENDING = "remember_cookie_pending"


def remember_days() -> float:
    """VERA_UI_REMEMBER_DAYS (registry.settings.ui_remember_days; `vera ui` checks it before it starts)."""
    return ui_remember_days(os.environ)


def cookie_name(url: str) -> str:
    """The cookie holding the remembered sign-in for the registry at ``url`` (a digest: cookie names take few
    characters, and the URL is not the browser's business)."""
    return "vera_signin_" + hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16]


def remembered(url: str) -> tuple[str, str]:
    """The sign-in this browser remembers for ``url``: (its token, its handle), ('', '') when none (no cookie, or a
    handle this dashboard does not keep: forgotten, expired, made by another dashboard, or forged)."""
    handle = st.context.cookies.get(cookie_name(url))
    # a str only: AppTest (streamlit.testing) answers st.context with mocks
    if not (isinstance(handle, str) and HANDLE_FORMAT.fullmatch(handle)):
        return "", ""
    token = kept(url, handle)
    return (token, handle) if token else ("", "")


#: A handle: 32 random bytes, URL-safe base64 (secrets.token_urlsafe(32)).
HANDLE_FORMAT = re.compile(r"[A-Za-z0-9_-]{43}")
#: The dashboard's remembered sign-ins, in VERA_CONFIG_DIR; one process's threads take turns with it.
STORE_NAME = "dashboard-signins.json"
_STORE_LOCK = threading.Lock()


def store_path() -> Path:
    return config_root() / STORE_NAME


def _key(handle: str) -> str:
    return hashlib.sha256(handle.encode()).hexdigest()


def _entries() -> dict[str, Any]:
    return read_private_json(store_path(), "signins")


def _save(entries: dict[str, Any]) -> None:
    now = datetime.now(UTC).isoformat()
    write_private_json(store_path(), {"signins": {k: e for k, e in entries.items()
                                                  if isinstance(e, dict) and str(e.get("expires", "")) > now}})


def keep(url: str, token: str, expires_at: datetime) -> str:
    """Keep ``token`` as a sign-in for ``url`` until ``expires_at``; the handle the browser gets for it."""
    handle = secrets.token_urlsafe(32)
    with _STORE_LOCK:
        entries = _entries()
        entries[_key(handle)] = {"url": url, "token": token, "expires": expires_at.astimezone(UTC).isoformat()}
        _save(entries)  # expired ones dropped on the way
    return handle


def kept(url: str, handle: str) -> str:
    """The token kept for ``handle`` and ``url`` ('' when none, another registry's, or expired)."""
    entry = _entries().get(_key(handle))
    if not isinstance(entry, dict) or entry.get("url") != url:
        return ""
    token, expires = entry.get("token"), str(entry.get("expires", ""))
    return token if isinstance(token, str) and expires > datetime.now(UTC).isoformat() else ""


def drop(handle: str) -> None:
    """Stop keeping the sign-in of ``handle``."""
    with _STORE_LOCK:
        entries = _entries()
        if entries.pop(_key(handle), None) is not None:
            _save(entries)


def remember(client: RegistryClient, who: WhoAmI, now: datetime | None = None) -> tuple[str, int, datetime]:
    """A new sign-in token for the caller (``client``'s token, who is ``who``): its secret, id and expiry.
    InvalidInput when the pasted token expires too soon to be worth it; the registry's own refusals (a read-only
    registry, too many tokens) come through as they are."""
    if who.user == "local" and who.token_id is None:  # a made-up token "remembered" as a real admin token (a
        # newcomer's walk, session 34): a local-mode registry takes no tokens, so there is nothing to remember
        raise InvalidInput("This registry runs in local mode: it takes no tokens (whoever reaches it may do "
                           "everything), so there is no sign-in to remember; a token typed here changes nothing.")
    now = now or datetime.now(UTC)
    lasts = timedelta(days=remember_days())
    if who.max_token_days is not None:  # the registry's longest token life (VERA_MAX_TOKEN_DAYS)
        lasts = min(lasts, timedelta(days=who.max_token_days) - timedelta(minutes=1))
    if (expires := _aware(who.expires_at)) is not None:
        left = expires - now - timedelta(minutes=1)  # the registry refuses a token outliving its maker
        if left < SHORTEST:
            raise InvalidInput(f"This token expires at {expires:%Y-%m-%d %H:%M} UTC, too soon to remember a "
                               "sign-in; paste a token that lasts longer.")
        lasts = min(lasts, left)
    info, secret = client.create_token(list(who.scopes), name=TOKEN_NAME, expires_days=lasts / timedelta(days=1),
                                       limited_to=sorted(who.limited_to) if who.limited_to is not None else None)
    return secret, info.id, _aware(info.expires_at) or now + lasts


def _aware(moment: datetime | None) -> datetime | None:
    """``moment`` with its time zone; a registry's time without one is UTC (as every registry writes them)."""
    return moment if moment is None or moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def write_cookie(url: str, handle: str, expires_at: datetime) -> None:
    """Have this browser keep ``handle`` for ``url`` until ``expires_at`` (on this session's next run)."""
    seconds = int((expires_at - datetime.now(UTC)).total_seconds())
    st.session_state[PENDING] = (cookie_name(url), handle, max(0, seconds))


def clear_cookie(url: str) -> None:
    """Have this browser forget its sign-in for ``url`` (on this session's next run)."""
    st.session_state[PENDING] = (cookie_name(url), "", 0)


def flush() -> None:
    """Write or clear the cookie a previous run asked for: a script in the page itself (st.html, not an iframe)
    built from a hex name, a handle's URL-safe characters and a number only."""
    pending = st.session_state.pop(PENDING, None)
    if pending is None:
        return
    name, value, max_age = pending
    if not (re.fullmatch(r"vera_signin_[0-9a-f]{16}", name) and re.fullmatch(r"[A-Za-z0-9_-]*", value)):
        raise ValueError(f"not a sign-in cookie: {name!r}")  # never: both are made here
    st.html(f"<script>document.cookie = '{name}={value}; Path=/; Max-Age={int(max_age)}; SameSite=Strict'"
            " + (location.protocol === 'https:' ? '; Secure' : '');</script>", unsafe_allow_javascript=True)


#: Session-state keys: the remembered sign-in this session uses (its token; '' when none) and its handle, its expiry,
#: whether it came from the cookie and is not yet checked, what the user typed in the Token box, and a message for
#: the sidebar's next run.
IN_USE, HANDLE, UNTIL, UNCHECKED = "remembered_token", "remembered_handle", "remembered_until", "remembered_unchecked"
TYPED, NOTICE = "typed_token", "remember_notice"


def default_token(url: str) -> str:
    """The token a session uses for ``url`` when nobody signed in: the dashboard's VERA_TOKEN for its default
    registry, else none."""
    from web_ui.session import default_url

    return os.environ.get("VERA_TOKEN", "") if url == default_url() else ""


def adopt(url: str) -> str:
    """The token a session starts with, or takes on pointing at ``url``, from this browser's cookie ('' when none)."""
    token, handle = remembered(url)
    state = st.session_state
    state[IN_USE], state[HANDLE], state[UNCHECKED] = token, handle, bool(token)
    return token


def shown() -> str:
    """What the Token box shows: what its user typed, never a token the dashboard chose (VERA_TOKEN, which every
    visitor could read there, or a remembered sign-in)."""
    return str(st.session_state.get(TYPED, ""))


def check(url: str) -> None:
    """Once per session, before the sidebar draws: whether the registry still takes the sign-in the cookie gave
    (revoked or expired: forgotten, and the session starts signed out, saying why)."""
    state = st.session_state
    if not state.pop(UNCHECKED, False):
        return
    try:
        with RegistryClient(url, state[IN_USE], timeout=10, retries=1) as client:
            state[UNTIL] = client.whoami().expires_at
    except Unauthorized:
        _let_go(url)
        state["token"] = default_token(url)
        state[NOTICE] = "Your sign-in remembered on this browser has ended (expired or revoked); paste a token."
    except (RegistryError, ValueError):
        pass  # unreachable or not a registry: the page says so; the sign-in is checked by the next session


def controls(url: str, token: str) -> None:
    """Under the Token box: for the remembered sign-in in use, until when and "Forget me on this browser"; for the
    dashboard's own token, a line saying it is in use (for a token typed there: offer, once the registry took it)."""
    flush()
    state = st.session_state
    if (notice := state.pop(NOTICE, None)) is not None:
        st.info(notice, icon=":material/info:")
    if token and state.get(IN_USE) == token:
        until = state.get(UNTIL)
        st.caption(":material/bookmark_added: remembered on this browser"
                   + (f" until {until:%Y-%m-%d %H:%M} UTC" if until is not None else ""))
        st.button("Forget me on this browser", on_click=_forget_clicked, args=(url, token),
                  help="Revokes this browser's sign-in token and signs this session out.")
    elif token and token != shown():
        st.caption(":material/key: the dashboard's own token (VERA_TOKEN); paste yours to act as you")


def offer(url: str, token: str, who: WhoAmI) -> None:
    """"Remember me on this browser" under the line saying who you are, for a token typed in the Token box that the
    registry took (``who``, its whoami): offered beside the box before the registry answered, a refused token was
    offered it too, and a registry in local mode, which makes no tokens (clicking said why)."""
    if token and token == shown() and st.session_state.get(IN_USE) != token and not (who.anonymous or who.local):
        st.button("Remember me on this browser", on_click=_remember_clicked, args=(url, token),
                  help=f"Keeps you signed in here for {remember_days():g} days, in new tabs too, with a new token "
                       f"named {TOKEN_NAME!r} (listed by `vera auth tokens`), kept by the dashboard's server; the "
                       "browser gets only a handle to it.")


def after_change(url: str, token: str, new_url: str, box: str) -> str:
    """The token to use after the sidebar's URL or Token box changed (``box``: what the Token box holds now). Typed
    there, the user's token (emptied: the default, signing out); typed over the remembered sign-in of the same
    registry, that sign-in is forgotten and revoked, else a reload would bring it back. Only the URL changed: a typed
    token goes along as before; otherwise the new registry's own sign-in, or its default (a remembered sign-in or
    VERA_TOKEN is never sent to another registry)."""
    state = st.session_state
    if box != shown():
        state[TYPED] = box
        if token and state.get(IN_USE) == token and new_url == url:
            forget(url, token)
        return box or default_token(new_url)
    if box:
        return token
    return adopt(new_url) or default_token(new_url)


def forget(url: str, token: str) -> None:
    """Revoke the remembered sign-in ``token`` (done already when the registry refuses it), and forget it."""
    _let_go(url)
    try:
        with RegistryClient(url, token, timeout=10, retries=1) as client:
            if (token_id := client.whoami().token_id) is not None:
                client.revoke_token(token_id)
    except Unauthorized:
        pass  # revoked or expired already
    except (RegistryError, ValueError) as exc:
        st.session_state[NOTICE] = (f"Forgotten on this browser, but the registry could not revoke the token now "
                                    f"({exc}); revoke it with `vera auth tokens` and `vera auth revoke ID`.")


def _let_go(url: str) -> None:
    """Forget this session's remembered sign-in: its handle dropped from the store, the cookie cleared."""
    state = st.session_state
    if handle := state.get(HANDLE):
        drop(handle)
    state[IN_USE] = state[HANDLE] = ""
    clear_cookie(url)


def _remember_clicked(url: str, token: str) -> None:
    state = st.session_state
    try:
        with RegistryClient(url, token, timeout=30, retries=1) as client:
            secret, _, until = remember(client, client.whoami())
    except (RegistryError, ValueError) as exc:
        state[NOTICE] = f"Could not remember this sign-in: {exc}"
        return
    handle = keep(url, secret, until)
    write_cookie(url, handle, until)
    state["token"], state[IN_USE], state[HANDLE], state[UNTIL] = secret, secret, handle, until
    state[TYPED] = state["sidebar_token"] = ""  # a callback runs before the box is drawn: it may be set
    st.cache_data.clear()


def _forget_clicked(url: str, token: str) -> None:
    forget(url, token)
    state = st.session_state
    state["token"] = default_token(url)
    state[TYPED] = state["sidebar_token"] = ""
    st.cache_data.clear()

"""Signed in on this browser: the sidebar's "Remember me" keeps a pasted token across reloads and new tabs, which a
Streamlit session alone does not (each tab, each reload is a new session with an empty state).

The pasted token itself is never stored in the browser. Remembering asks the registry for a new token of the same
user, scopes and owner limit (``POST /api/v1/tokens``, as `vera auth create-token` does), named "dashboard sign-in"
and expiring after VERA_UI_REMEMBER_DAYS (7; never later than the pasted token), and keeps that one in a cookie
of this dashboard's site, one per registry URL (a link naming another registry never sends it there). So a
remembered sign-in is listed with the user's tokens (`vera auth tokens`), ends by itself, and "Forget me" (or
`vera auth revoke ID`) revokes it everywhere. The cookie is SameSite=Strict, Secure on https, and never sent to the
registry; Streamlit reads it (``st.context.cookies``) when a new session starts.
"""

from __future__ import annotations

import hashlib
import os
import re
from datetime import UTC, datetime, timedelta

import streamlit as st

from registry.client import RegistryClient
from registry.domain.errors import InvalidInput, RegistryError, Unauthorized
from registry.domain.schemas import WhoAmI
from registry.settings import ui_remember_days

#: The name every remembered sign-in's token has in the user's token list.
TOKEN_NAME = "dashboard sign-in"
#: A remembered sign-in must live at least this long to be worth one (a pasted token about to expire is not kept).
SHORTEST = timedelta(minutes=10)
#: Session-state key: the token id of this session's remembered sign-in, when the session uses one.
REMEMBERED = "remembered_token_id"
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


def remembered(url: str) -> str:
    """The sign-in this browser remembers for ``url`` ('' when none), as sent when this session started."""
    value = st.context.cookies.get(cookie_name(url))
    # a str only: AppTest (streamlit.testing) answers st.context with mocks
    return value if isinstance(value, str) and re.fullmatch(r"vera_[A-Za-z0-9_-]{1,200}", value) else ""


def remember(client: RegistryClient, who: WhoAmI, now: datetime | None = None) -> tuple[str, int, datetime]:
    """A new sign-in token for the caller (``client``'s token, who is ``who``): its secret, id and expiry.
    InvalidInput when the pasted token expires too soon to be worth it; the registry's own refusals (a read-only
    registry, too many tokens) come through as they are."""
    now = now or datetime.now(UTC)
    lasts = timedelta(days=remember_days())
    if who.expires_at is not None:
        left = who.expires_at - now - timedelta(minutes=1)  # the registry refuses a token outliving its maker
        if left < SHORTEST:
            raise InvalidInput(f"This token expires at {who.expires_at:%Y-%m-%d %H:%M} UTC, too soon to remember a "
                               "sign-in; paste a token that lasts longer.")
        lasts = min(lasts, left)
    info, secret = client.create_token(list(who.scopes), name=TOKEN_NAME, expires_days=lasts / timedelta(days=1),
                                       limited_to=sorted(who.limited_to) if who.limited_to is not None else None)
    return secret, info.id, info.expires_at or now + lasts


def write_cookie(url: str, secret: str, expires_at: datetime) -> None:
    """Have this browser keep ``secret`` for ``url`` until ``expires_at`` (on this session's next run)."""
    seconds = int((expires_at - datetime.now(UTC)).total_seconds())
    st.session_state[PENDING] = (cookie_name(url), secret, max(0, seconds))


def clear_cookie(url: str) -> None:
    """Have this browser forget its sign-in for ``url`` (on this session's next run)."""
    st.session_state[PENDING] = (cookie_name(url), "", 0)


def flush() -> None:
    """Write or clear the cookie a previous run asked for: a script in the page itself (st.html, not an iframe)
    built from a hex name, a token's URL-safe characters and a number only."""
    pending = st.session_state.pop(PENDING, None)
    if pending is None:
        return
    name, value, max_age = pending
    if not (re.fullmatch(r"vera_signin_[0-9a-f]{16}", name) and re.fullmatch(r"[A-Za-z0-9_-]*", value)):
        raise ValueError(f"not a sign-in cookie: {name!r}")  # never: both are made here
    st.html(f"<script>document.cookie = '{name}={value}; Path=/; Max-Age={int(max_age)}; SameSite=Strict'"
            " + (location.protocol === 'https:' ? '; Secure' : '');</script>", unsafe_allow_javascript=True)


#: Session-state keys: the remembered sign-in this session uses (its secret; '' when none), its expiry, whether it
#: came from the cookie and is not yet checked, and a message for the sidebar's next run.
IN_USE, UNTIL, UNCHECKED, NOTICE = "remembered_token", "remembered_until", "remembered_unchecked", "remember_notice"
#: Session-state key: what the sidebar's Token box is to show from the next run (a drawn box cannot be changed).
BOX = "sidebar_token_next"


def adopt(url: str) -> str:
    """The token a new session starts with from this browser's cookie for ``url`` ('' when none)."""
    token = remembered(url)
    if token:
        st.session_state[IN_USE], st.session_state[UNCHECKED] = token, True
    return token


def check(url: str) -> None:
    """Once per session, before the sidebar draws: whether the registry still takes the sign-in the cookie gave
    (revoked or expired: the cookie is cleared and the session starts signed out, saying why)."""
    state = st.session_state
    if not state.pop(UNCHECKED, False):
        return
    try:
        with RegistryClient(url, state[IN_USE], timeout=10, retries=1) as client:
            state[UNTIL] = client.whoami().expires_at
    except Unauthorized:
        clear_cookie(url)
        state["token"] = state[IN_USE] = ""
        state[NOTICE] = "Your sign-in remembered on this browser has ended (expired or revoked); paste a token."
    except (RegistryError, ValueError):
        pass  # unreachable or not a registry: the page says so; the sign-in is checked by the next session


def controls(url: str, token: str) -> None:
    """Under the Token box: "Remember me on this browser" for a pasted token, or, for the remembered sign-in in
    use, until when and "Forget me on this browser"."""
    flush()
    state = st.session_state
    if (notice := state.pop(NOTICE, None)) is not None:
        st.info(notice, icon=":material/info:")
    if not token or token == _operators_token(url):
        return  # nothing pasted, or the dashboard's own VERA_TOKEN: every visit has it already
    if state.get(IN_USE) == token:
        until = state.get(UNTIL)
        st.caption(":material/bookmark_added: remembered on this browser"
                   + (f" until {until:%Y-%m-%d %H:%M} UTC" if until is not None else ""))
        st.button("Forget me on this browser", on_click=_forget_clicked, args=(url, token),
                  help="Revokes this browser's sign-in token and signs this session out.")
    else:
        st.button("Remember me on this browser", on_click=_remember_clicked, args=(url, token),
                  help=f"Keeps you signed in here for {remember_days():g} days, in new tabs too, with a new token "
                       f"named {TOKEN_NAME!r} (listed by `vera auth tokens`); your pasted token is not stored.")


def switched(url: str, token: str, new_url: str, new_token: str) -> str:
    """The token to use after the sidebar's URL or token box changed. A token typed over (or cleared from) the
    remembered sign-in signs it out: revoked and forgotten, else a reload would bring it back. The remembered
    sign-in of one registry is never sent to another: a new URL takes its own (or none)."""
    state = st.session_state
    if not token or state.get(IN_USE) != token:
        return new_token
    if new_url == url:
        forget(url, token)
        return new_token
    if new_token != token:
        return new_token
    state[BOX] = adopt(new_url)  # the Token box shows it from the next run (drawn already in this one)
    return str(state[BOX])


def forget(url: str, token: str) -> None:
    """Revoke the remembered sign-in ``token`` (done already when the registry refuses it) and clear its cookie."""
    state = st.session_state
    state[IN_USE] = ""
    clear_cookie(url)
    try:
        with RegistryClient(url, token, timeout=10, retries=1) as client:
            if (token_id := client.whoami().token_id) is not None:
                client.revoke_token(token_id)
    except Unauthorized:
        pass  # revoked or expired already
    except (RegistryError, ValueError) as exc:
        state[NOTICE] = f"Forgotten on this browser, but the registry could not revoke the token now ({exc}); " \
                        f"revoke it with `vera auth tokens` and `vera auth revoke ID`."


def _operators_token(url: str) -> str:
    from web_ui.session import default_url

    return os.environ.get("VERA_TOKEN", "") if url == default_url() else ""


def _remember_clicked(url: str, token: str) -> None:
    state = st.session_state
    try:
        with RegistryClient(url, token, timeout=30, retries=1) as client:
            secret, _, until = remember(client, client.whoami())
    except (RegistryError, ValueError) as exc:
        state[NOTICE] = f"Could not remember this sign-in: {exc}"
        return
    write_cookie(url, secret, until)
    state["token"] = state["sidebar_token"] = state[IN_USE] = secret
    state[UNTIL] = until
    st.cache_data.clear()


def _forget_clicked(url: str, token: str) -> None:
    forget(url, token)
    state = st.session_state
    state["token"] = state["sidebar_token"] = ""
    st.cache_data.clear()

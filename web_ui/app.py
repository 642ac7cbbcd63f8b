"""The dashboard's router: seven pages and the connection sidebar (URL, token, who you are). Run with `vera ui` (or as
part of `vera up`)."""

from __future__ import annotations

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from registry.client import RegistryClient
from registry.domain.errors import RegistryError
from registry.domain.schemas import WhoAmI
from web_ui import activity, adapter, browse, compare, navigation, organisations, remember, session, train, webhooks

#: Under who you are, on a registry that takes no changes (VERA_READ_ONLY): its refusals say where changes go.
READ_ONLY_BANNER = ":orange[:material/lock: **read-only registry**: browse, fetch and compare; changes are refused]"


def identity(who: WhoAmI) -> str:
    """Who the registry takes this session for, in one line of Markdown (and a second on a read-only registry)."""
    return _caller(who) + (f"  \n{READ_ONLY_BANNER}" if who.read_only else "")


def _caller(who: WhoAmI) -> str:
    if who.anonymous:
        return ":material/person_off: anonymous (public adapters only)"
    if who.user == "local" and who.token_id is None:
        return ":material/computer: local mode (no tokens: you may do everything)"
    orgs = ", ".join(f"{org} ({role})" for org, role in who.organizations.items())
    return (f":material/person: **{who.user}**" + (f" · {orgs}" if orgs else "")
            + f"  \n:gray[scopes: {', '.join(who.scopes) or 'none'}"
            + (f"; limited to {', '.join(who.limited_to)}" if who.limited_to is not None else "") + "]")


def signed_in_as() -> None:
    """The sidebar's line saying who you are (nothing when the registry cannot say: the page says why)."""
    url, token = session.settings()
    if session.url_problem(url) is not None:
        return
    try:
        who = session.read(RegistryClient.whoami)
    except (RegistryError, ValueError):  # unreachable, refused token, not a registry: the page explains
        return
    st.markdown(identity(who))
    remember.offer(url, token, who)


def sidebar() -> DeltaGenerator:
    """The registry's URL and token, and Refresh; returns the place of the line saying who you are, filled after
    the page has drawn (its request, started ahead, must not hold the page up)."""
    url, token = session.settings()
    if session.url_problem(url) is None:
        remember.check(url)  # a sign-in from this browser's cookie that has ended: signed out, saying why
        url, token = session.settings()
    navigation.keep_registry()
    with st.sidebar:
        st.markdown("**Registry**")
        # keyed boxes set through session state (never value=): a box whose value= changes is a new widget, drawn
        # beside the old one until the run ends
        st.session_state.setdefault("sidebar_url", url)
        st.session_state.setdefault("sidebar_token", remember.shown())
        new_url = st.text_input("URL", key="sidebar_url")
        box = st.text_input("Token", key="sidebar_token", type="password",
                            help="Needed when the registry requires tokens. Kept in this tab only, unless you ask "
                                 "below to be remembered on this browser; empty it to sign out.")
        remember.controls(url, token)
        if (new_url.rstrip("/"), box) != (url, remember.shown()):
            new_token = remember.after_change(url, token, new_url.rstrip("/"), box)
            st.session_state["registry_url"], st.session_state["token"] = new_url.rstrip("/"), new_token
            st.cache_data.clear()
            st.session_state["browse_cursors"] = [None]
            st.rerun()
        identity = st.empty()
        if st.button("Refresh"):
            st.cache_data.clear()
    return identity


def run() -> None:
    # An emoji: Streamlit draws it into the tab's icon in the browser. A ":material/...:" favicon (the page's, or each
    # st.Page's icon when none is set here) is an SVG its frontend fetches from fonts.gstatic.com, which fails offline.
    st.set_page_config(page_title="vera-registry", page_icon="🧩", layout="wide")
    pages = {
        "browse": st.Page(session.guarded(browse.page, browse.TITLE), title="Browse", icon=":material/table_view:",
                          url_path="home", default=True),  # served at /: a default page's path is not its URL
        # the same page at /browse, as every other page is at its name (else /browse said "Page not found")
        "browse-by-name": st.Page(session.guarded(browse.page, browse.TITLE), title="Browse",
                                  icon=":material/table_view:", url_path="browse", visibility="hidden"),
        "adapter": st.Page(session.guarded(adapter.page, adapter.TITLE), title="Adapter", icon=":material/tune:",
                           url_path="adapter"),
        "compare": st.Page(session.guarded(compare.page, compare.TITLE), title="Compare",
                           icon=":material/compare_arrows:", url_path="compare"),
        "train": st.Page(session.guarded(train.page, train.TITLE), title="Train", icon=":material/model_training:",
                         url_path="train"),
        "activity": st.Page(session.guarded(activity.page, activity.TITLE), title="Activity", icon=":material/history:",
                            url_path="activity"),
        "webhooks": st.Page(session.guarded(webhooks.page, webhooks.TITLE), title="Webhooks", icon=":material/webhook:",
                            url_path="webhooks"),
        "organisations": st.Page(session.guarded(organisations.page, organisations.TITLE), title="Organisations",
                                 icon=":material/groups:", url_path="organisations"),
    }
    st.session_state["pages"] = pages
    current = st.navigation(list(pages.values()))
    # the page this run shows and the one the run before showed: Browse tells Back within it from a visit
    state = st.session_state
    state[navigation.PAGE_BEFORE], state[navigation.PAGE_SHOWN] = state.get(navigation.PAGE_SHOWN), current.url_path
    identity = sidebar()
    if session.url_problem(session.settings()[0]) is None:
        session.prefetch(RegistryClient.whoami)  # read beside the page's own reads, shown after them
    current.run()
    with identity.container():
        signed_in_as()

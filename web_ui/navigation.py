"""Shareable URLs: each page keeps what it shows in a query parameter (``?ref=owner/name:3`` on Adapter,
``?refs=a,b`` on Compare, ``?job=7`` on Train), so a view can be bookmarked, shared and reached with Back.

A page's input box follows its parameter: when the URL changes (a link, a bookmark, Back) the box takes the URL's
value; otherwise the box keeps what the user typed and writes it to the URL (``write_url`` as its ``on_change``).
Boxes are keyed widgets whose value is set through ``st.session_state`` only, never through ``value=``: a widget
whose ``value=`` changes between runs is a new widget to Streamlit, and it drops what was just typed into it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from web_ui import session


def _marker(key: str) -> str:
    return f"{key}__url"


#: st.session_state keys the app sets each run (web_ui.app.run): the url_path of the page this run shows, and of the
#: page the run before showed (Browse tells Back within it from a visit from another page).
PAGE_SHOWN, PAGE_BEFORE = "page_shown", "page_before"


def follow_url(param: str, key: str, *, default: str | Callable[[], str] = "",
               decode: Callable[[str], Any] = str) -> str:
    """Make the widget ``key`` show the URL's ``param`` when that changed since the widget last wrote it; returns
    that URL text. Without the parameter (the page reached from the menu): what the widget last wrote, else
    ``default`` (a function: called only then, e.g. when the default costs a request). Call before the widget is
    created."""
    state = st.session_state
    wanted = st.query_params.get(param)
    if wanted is None:
        wanted = state[_marker(key)] if _marker(key) in state else default() if callable(default) else default
    if key not in state or state.get(_marker(key)) != wanted:
        state[key] = decode(wanted)
        state[_marker(key)] = wanted
    return wanted


def set_param(param: str, text: str) -> None:
    """Put ``text`` in the URL as ``param`` (removed when empty); nothing is sent when it is there already."""
    if not text:
        st.query_params.pop(param, None)
    elif st.query_params.get(param) != text:
        st.query_params[param] = text


def write_url(param: str, key: str, encode: Callable[[Any], str] = str) -> None:
    """``on_change`` of the widget ``key``: its value goes to the URL as ``param``."""
    text = encode(st.session_state[key]).strip()
    st.session_state[_marker(key)] = text
    set_param(param, text)


def join_refs(refs: list[str]) -> str:
    return ",".join(refs)


def split_refs(text: str) -> list[str]:
    return [r.strip() for r in text.split(",") if r.strip()]


#: How the Adapter page's address of a version starts, relative to the dashboard's root.
ADAPTER_PAGE = "adapter?ref="
ACTIVITY_PAGE = "activity?adapter="  # the box reads an owner, or owner/name
ACTIVITY_ACTION_PAGE = "activity?action="
#: The query parameter naming the registry a view is of, when it is not the dashboard's default registry.
REGISTRY = "registry"


def carried() -> dict[str, str]:
    """The query parameters every address of this session carries: the registry (``?registry=``) when the sidebar
    points at another one than the dashboard's default, so that a link opened in a new tab, a reload or a bookmark
    shows the same registry's data (a new tab is a new session). Never the token: it stays in this session. Nothing
    outside a page's run (no session to ask)."""
    if get_script_run_ctx() is None:
        return {}
    url = session.settings()[0]
    return {REGISTRY: url} if url != session.default_url() else {}


def _suffix() -> str:
    return "".join(f"&{name}={quote(value, safe='/:')}" for name, value in carried().items())


def version_link(ref: str) -> str:
    """The Adapter page's address for ``ref``, relative to the dashboard's root (a link in a table)."""
    return ADAPTER_PAGE + quote(ref, safe="/:@") + _suffix()


def activity_link(owner: str | None, *, action: str = "", named: str = "") -> str:
    """The Activity page's address listing the events about ``owner`` (or every owner's ``action`` events, the link
    ``named`` in its fragment: what a table's link cell shows), relative to the dashboard's root."""
    if owner is not None:
        return ACTIVITY_PAGE + quote(owner, safe="") + _suffix()
    return ACTIVITY_ACTION_PAGE + quote(action, safe="") + _suffix() + "#" + quote(named, safe="")


def job_link(job_id: int) -> str:
    """The Train page's address following job ``job_id``, relative to the dashboard's root."""
    return f"train?job={job_id}" + _suffix()


def keep_registry() -> None:
    """Write this session's registry to the URL (``?registry=``; none for the default): once per run, so that the
    address stays shareable after the menu switched pages (which drops query parameters)."""
    set_param(REGISTRY, carried().get(REGISTRY, ""))


def version_column(width: int) -> Any:
    """A table column of version_link addresses, pinned left, ``width`` px wide: each shows its reference (cut with
    '…' when longer than the column: web_ui.tables) and opens its page."""
    return st.column_config.LinkColumn(help="Open the version", pinned=True, width=width)


def open_version(ref: str) -> None:
    """Go to the Adapter page showing ``ref`` (its URL says so)."""
    st.switch_page(st.session_state["pages"]["adapter"], query_params={"ref": ref, **carried()})


def version_page_link(ref: str, label: str) -> None:
    """A link to the Adapter page showing ``ref``: the browser goes there at once, as from the sidebar. (A button
    whose run called ``open_version`` from the Train page's live panel, a fragment refreshed every 2 s, left the
    page empty for the 3 minutes a browser walk waited after the click, in a CI run on a loaded machine: session
    37.) Nothing outside the dashboard's navigation (a page's function run alone)."""
    if "adapter" in (pages := st.session_state.get("pages", {})):
        st.page_link(pages["adapter"], label=label, icon=":material/open_in_new:",
                     query_params={"ref": ref, **carried()})


def open_compare(refs: list[str]) -> None:
    """Go to the Compare page showing ``refs`` (``?refs=a,b``)."""
    st.switch_page(st.session_state["pages"]["compare"], query_params={"refs": join_refs(refs), **carried()})


def open_job(job_id: int) -> None:
    """Go to the Train page following job ``job_id``."""
    st.switch_page(st.session_state["pages"]["train"], query_params={"job": str(job_id), **carried()})

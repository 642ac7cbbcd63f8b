"""Activity: the registry's newest audit events (who did what to which target, when), newest first, filtered by
adapter and action on the server; a target that names an adapter links to its Adapter page. The filters live in the
URL (``?adapter=alice/polarity&action=publish``), so a view can be shared."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import Any

import pandas as pd
import streamlit as st

from registry.client import RegistryClient
from registry.domain.events import EVERY_OWNER, EventInfo
from web_ui import formats, navigation, session, tables

#: The page's heading (also shown above a message that its registry URL is wrong: session.guarded).
TITLE = "Activity"

#: Actions offered in the filter (others can be typed): what the registry records today.
ACTIONS = ("publish", "alias", "alias-remove", "yank", "unyank", "delete", "adapter-edit", "version-edit",
           "version-evaluate", "version-evaluation-delete",
           "hub_push", "hub_pull", "job-submit", "job-cancel", "job-end", "base-register", "org-create",
           "org-delete", "member-set", "member-remove", "org-invite", "org-join", "org-decline", "org-invite-cancel",
           "quota-set", "quota-clear",
           "webhook-create", "webhook-update", "webhook-delete")
ANY = "any"


def target_link(event: EventInfo) -> str:
    """Where the event's target leads: an adapter or version to its Adapter page, anything else about an owner (an
    organisation, a user's tokens or quota) to this page filtered to that owner's events, anything else (a base
    model registered) to this page's events of that kind. (A bare name in the link column was a link to /NAME:
    "Page not found".)"""
    if event.adapter is not None:
        return navigation.version_link(event.target)
    if event.owner is not None and event.owner != EVERY_OWNER:  # '*': a registry-wide webhook, no owner's page
        return navigation.activity_link(event.owner)
    return navigation.activity_link(None, action=event.action, named=event.target)


#: A content digest (SHA-256, a git commit): shortened in the table, whole in an event's detail.
DIGEST = re.compile(r"^[0-9a-f]{40}(?:[0-9a-f]{24})?$")
#: The table's room at 1,400 px beside the sidebar, less its tick column (measured in chromium: 939 px); the target
#: takes what its longest name needs (within TARGET_PX), the detail the rest, at least DETAIL_PX (the whole detail
#: is under the table when its row is ticked).
TABLE_PX, TARGET_PX, DETAIL_PX, WHO_PX = 890, (140, 300), 240, (90, 200)


def value_text(value: Any, *, short: bool = True) -> str:
    """One value of an event's detail in words: numbers with separators, lists joined, nothing as '—'; ``short``
    (for a table cell): digests shortened and a text's lines on one."""
    if isinstance(value, str):
        if not value:
            return "(empty)"
        return (value[:8] + "…" if DIGEST.match(value) else value.replace("\n", " ↵ ")) if short else value
    if isinstance(value, list | tuple):
        return ", ".join(value_text(v, short=short) for v in value) or "none"
    if isinstance(value, dict):
        return ", ".join(f"{label(k)} {value_text(v, short=short)}" for k, v in value.items()) or formats.MISSING
    return formats.number(value)


def label(key: str) -> str:
    """A detail's key as words: ``previous_version_id`` -> 'previous version id'."""
    return key.replace("_", " ")


def field_text(key: str, value: Any, *, short: bool) -> str:
    """``value_text``, but an identifier (a job, a version number, an id) as written, without separators."""
    if isinstance(value, int) and not isinstance(value, bool) and (key in ("job", "version") or key.endswith("id")):
        return str(value)
    return value_text(value, short=short)


def changes(value: dict[str, Any]) -> list[str] | None:
    """The fields an edit changed (its detail is ``{"before": {...}, "after": {...}}``), None for other details."""
    before, after = value.get("before"), value.get("after")
    if set(value) != {"before", "after"} or not isinstance(before, dict) or not isinstance(after, dict):
        return None
    return list(dict.fromkeys([*before, *after]))


def lines(value: dict[str, Any], *, short: bool) -> list[str]:
    """An event's detail as 'name: value' lines; an edit's as 'name: before → after'."""
    if (changed := changes(value)) is not None:
        return [f"{label(k)}: {field_text(k, value['before'].get(k), short=short)} → "
                f"{field_text(k, value['after'].get(k), short=short)}" for k in changed]
    return [f"{label(k)}: {field_text(k, v, short=short)}" for k, v in value.items()]


def detail(value: dict[str, Any], width: int = DETAIL_PX) -> str:
    """An event's detail in one readable line (digests shortened), cut with '…' to what a column ``width`` px wide
    shows."""
    return formats.fit("; ".join(lines(value, short=True)), width)


def widths(events: list[EventInfo]) -> tuple[int, int, int]:
    """The who's, the target's and the detail's px: who and the target as wide as their longest names need (within
    WHO_PX and TARGET_PX: "trusted-publisher:nlp-main" was cut to "trusted-publisl" with no sign of it), the detail
    the rest."""
    def fitted(texts: Iterable[str], bounds: tuple[int, int]) -> int:
        return max(bounds[0], min(max((formats.cell_width(t) for t in texts), default=bounds[0]), bounds[1]))

    # the target as its link's label reads (a webhook's event, 'alice/webhooks/12', links to alice's events and
    # reads 'alice': sized by the target, the column kept width the detail lacked: a walk's finding, session 31)
    labels = (tables.link_text(target_link(e)) for e in events)
    who, target = fitted((e.actor for e in events), WHO_PX), fitted(labels, TARGET_PX)
    return who, target, TABLE_PX - sum(c["width"] for c in COLUMNS.values()) - who - target


def show_event(event: EventInfo) -> None:
    """One event in full, under the table: what, on which target, by whom and when, then its detail as a list."""
    st.markdown(f"**{event.action}** on `{event.target}` by **{event.actor}**, {event.at:%Y-%m-%d %H:%M:%S %Z}")
    found = lines(event.detail, short=False)
    st.markdown("\n".join(f"- {markdown_text(line)}".replace("\n", "  \n  ") for line in found)
                if found else "No detail recorded.")


def markdown_text(text: str) -> str:
    """Text shown as itself in Markdown (a tag, a description or an error may hold *, _, ` or [)."""
    return re.sub(r"([\\`*_{}\[\]<>()#+!|~$-])", r"\\\1", text)


def table(events: list[EventInfo], detail_px: int = DETAIL_PX, who_px: int | None = None) -> pd.DataFrame:
    """One row per event, in the order given: when, who (cut with '…' to ``who_px``), what, the target (a link),
    the detail in words, cut to ``detail_px``."""
    return pd.DataFrame([{"when": e.at, "who": formats.fit(e.actor, who_px or WHO_PX[1]), "action": e.action,
                          "target": target_link(e),
                          "detail": detail(e.detail, detail_px)} for e in events])


COLUMNS: dict[str, Any] = {
    "when": formats.moment_column("YYYY-MM-DD HH:mm:ss", header="when", width=150),
    "action": st.column_config.TextColumn(width=110),
}
WHO_HELP = ("a user (a token's); local: the one user of a registry without tokens; registry: the registry itself (an "
            "expired job lease, the hourly purge of ended tokens); trusted-publisher:NAME: a CI run's token exchange; "
            "any other name: the job worker that ended a job")


def columns(who_px: int, target_px: int, detail_px: int) -> dict[str, Any]:
    """The table's column settings, who, the target and the detail ``widths`` wide."""
    return COLUMNS | {
        "who": st.column_config.TextColumn(width=who_px, help=WHO_HELP),
        "target": st.column_config.LinkColumn(width=target_px, help=(
            "an adapter or version opens its page; an organisation or user, its events here")),
        "detail": st.column_config.TextColumn(width=detail_px, help="what changed (before → after for edits); tick "
                                                                    "the row to read it whole")}


def filters() -> dict[str, Any]:
    """The adapter and action boxes (their values in the URL) and how many events to show."""
    navigation.follow_url("adapter", "activity_adapter")
    navigation.follow_url("action", "activity_action", default=ANY, decode=lambda text: text or ANY)
    adapter_box, action_box, size_box = st.columns([3, 2, 1])
    adapter = adapter_box.text_input("Adapter or owner", key="activity_adapter",
                                     placeholder="owner/name, or an owner (any when empty)",
                                     on_change=navigation.write_url, args=("adapter", "activity_adapter"))
    action = action_box.selectbox("Action", [ANY, *ACTIONS], key="activity_action", accept_new_options=True,
                                  on_change=navigation.write_url, args=("action", "activity_action",
                                                                        lambda a: "" if a == ANY else a))
    limit = size_box.selectbox("Events", [50, 100, 200, 500])
    about = adapter.strip() or None
    return {"adapter": about if about and "/" in about else None, "owner": about if about and "/" not in about
            else None, "action": None if action in (ANY, None) else action.strip(), "limit": limit}


def page() -> None:
    st.title(TITLE)
    chosen = filters()
    found = session.read(RegistryClient.events, **chosen)
    if not found.events:
        st.info("No events match." if chosen["adapter"] or chosen["owner"] or chosen["action"]
                else "Nothing has happened yet.")
        if chosen["action"] and chosen["action"] not in ACTIONS:  # typed, or from a link: a misspelt one said
            close = difflib.get_close_matches(chosen["action"], ACTIONS, n=1)
            st.caption(f"{chosen['action']!r} is not an action this dashboard knows"
                       + (f"; did you mean {close[0]!r}?" if close else "; the Action box lists them."))
        return
    # short: the table's hover toolbar covers the right end of the line above it (a walk read "pages through t")
    st.caption(f"The newest {formats.counted(len(found.events), 'event')} you may see, newest first.")
    events = sorted(found.events, key=lambda e: e.id, reverse=True)
    who_px, target_px, detail_px = widths(events)
    shown = tables.show(table(events, detail_px, who_px), hide_index=True, width="stretch", whole=True,
                        key="events_table", column_config=columns(who_px, target_px, detail_px), on_select="rerun",
                        selection_mode="single-row")
    st.caption("An adapter's target opens its page, an owner's its events; tick a row to read its detail in full; "
               "`vera events` pages through them all.")
    for row in shown.selection.rows if shown is not None else []:
        show_event(events[row])

"""Activity: the registry's newest audit events (who did what to which target, when), newest first, filtered by
adapter and action on the server; a target that names an adapter links to its Adapter page. The filters live in the
URL (``?adapter=alice/polarity&action=publish``), so a view can be shared."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import streamlit as st

from registry.client import RegistryClient
from registry.domain.events import EventInfo
from web_ui import navigation, session

#: Actions offered in the filter (others can be typed): what the registry records today.
ACTIONS = ("publish", "alias", "alias-remove", "yank", "unyank", "delete", "adapter-edit", "version-edit",
           "hub_push", "hub_pull", "job-submit", "job-cancel", "job-end", "base-register", "org-create",
           "member-set", "member-remove", "webhook-create", "webhook-update", "webhook-delete")
ANY = "any"


def target_link(event: EventInfo) -> str | None:
    """The Adapter page of the event's target when it names an adapter or one of its versions, else None."""
    return navigation.version_link(event.target) if event.adapter is not None else None


def detail(value: dict[str, Any]) -> str:
    """An event's detail in one line (JSON, cut at 160 characters)."""
    text = json.dumps(value, separators=(", ", ": "), default=str) if value else ""
    return text if len(text) <= 160 else text[:157] + "..."


def table(events: list[EventInfo]) -> pd.DataFrame:
    """Newest first: when, who, what, the target (a link when it is an adapter), the detail."""
    return pd.DataFrame([{"when": e.at, "who": e.actor, "action": e.action,
                          "target": target_link(e) or e.target, "detail": detail(e.detail)}
                         for e in sorted(events, key=lambda e: e.id, reverse=True)])


COLUMNS = {
    "when": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss", width=150),
    "who": st.column_config.TextColumn(width=100),
    "action": st.column_config.TextColumn(width=110),
    "target": st.column_config.LinkColumn(display_text=r"^(?:adapter\?ref=)?(.*)$", width=220,
                                          help="an adapter or version opens its page"),
    "detail": st.column_config.TextColumn(help="what changed (before and after for edits)"),
}


def filters() -> dict[str, Any]:
    """The adapter and action boxes (their values in the URL) and how many events to show."""
    navigation.follow_url("adapter", "activity_adapter")
    navigation.follow_url("action", "activity_action", default=ANY, decode=lambda text: text or ANY)
    adapter_box, action_box, size_box = st.columns([3, 2, 1])
    adapter = adapter_box.text_input("Adapter", key="activity_adapter", placeholder="owner/name (any when empty)",
                                     on_change=navigation.write_url, args=("adapter", "activity_adapter"))
    action = action_box.selectbox("Action", [ANY, *ACTIONS], key="activity_action", accept_new_options=True,
                                  on_change=navigation.write_url, args=("action", "activity_action",
                                                                        lambda a: "" if a == ANY else a))
    limit = size_box.selectbox("Events", [50, 100, 200, 500])
    return {"adapter": adapter.strip() or None, "action": None if action in (ANY, None) else action.strip(),
            "limit": limit}


def page() -> None:
    st.title("Activity")
    chosen = filters()
    found = session.read(RegistryClient.events, **chosen)
    if not found.events:
        st.info("No events match." if chosen["adapter"] or chosen["action"] else "Nothing has happened yet.")
        return
    st.caption(f"The newest {len(found.events):,} events you may see, newest first. An adapter's target opens its "
               "page; `vera events` pages through them all.")
    st.dataframe(table(found.events), hide_index=True, width="stretch", column_config=COLUMNS, key="events_table")

"""Webhooks: an owner's webhooks (yours, or an organisation's where you may write), adding one (its signing secret
shown once), a test delivery at the press of a button, each webhook's delivery log with every attempt, pausing and
removing (asked first). The owner lives in the URL (``?owner=acme``)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from registry.client import RegistryClient
from registry.domain.errors import RegistryError
from registry.domain.events import EVERY_OWNER, WEBHOOK_EVENTS, DeliveryInfo, WebhookInfo
from registry.domain.schemas import WhoAmI
from web_ui import formats, navigation, session, tables

#: The page's heading (also shown above a message that its registry URL is wrong: session.guarded).
TITLE = "Webhooks"

#: What to call each event in the form.
EVENT_LABELS = {"publish": "a version is published", "alias": "an alias moves", "alias-remove": "an alias is removed",
                "yank": "a version is yanked", "unyank": "a version is unyanked", "delete": "a version is deleted",
                "job-end": "a fine-tune job ends", "move": "an adapter is renamed or transferred",
                "version-evaluate": "an evaluation is recorded on a version",
                "version-evaluation-delete": "an evaluation is deleted from a version",
                "adapter-edit": "an adapter's description, card or visibility changes",
                "version-edit": "a version's description, tags or properties change"}


def owners(who: WhoAmI, published: list[str] | None = None) -> list[str]:
    """The namespaces whose webhooks this caller may manage: its own and its organisations where it may write. An
    admin (as the local user of a registry without tokens is) manages every owner's: those that ``published``
    first, newest first, then its organisations (its own name when there is neither), then the registry-wide webhooks
    (EVERY_OWNER, unless its token is limited to some owners); it may also type another."""
    own = [] if who.anonymous else [who.user]
    writable = [org for org, role in who.organizations.items() if role in ("write", "admin")]
    if "admin" in who.scopes:  # its own name only when nothing else is known ("local" publishes nothing)
        every = [EVERY_OWNER] if who.limited_to is None else []
        return (list(dict.fromkeys([*(published or []), *writable])) or own) + every
    return own + writable


def under(owner: str) -> str:
    """Whose adapters a webhook of ``owner`` is about, in words."""
    return "every owner's adapters (registry-wide)" if owner == EVERY_OWNER else f"the adapters under {owner}/"


#: How many of the newest versions name the owners an admin is offered (anyone else's can be typed).
OWNERS_FROM = 200


def hooks_table(hooks: list[WebhookInfo]) -> pd.DataFrame:
    """One row a webhook; its events "every event" where it takes all there are (the twelve names made the table
    wider than the page: a dashboard walk, session 54), else their names."""
    return pd.DataFrame([{"id": h.id, "url": h.url, "events": _events(h.events), "active": h.active,
                          "description": h.description, "created by": h.created_by} for h in hooks])


def _events(events: list[str]) -> str:
    return "every event" if set(events) >= set(WEBHOOK_EVENTS) else ", ".join(events) or "none"


def deliveries_table(deliveries: list[DeliveryInfo]) -> pd.DataFrame:
    """Newest first: when, which event, its status, the last attempt's answer (status code or error) and time, and
    when the next attempt is due; before a first attempt, its answer, time and error are missing ('—')."""
    rows = []
    for d in deliveries:
        last = d.log[-1] if d.log else None
        answer = None if last is None else (str(last.status_code) if last.status_code is not None else last.answer)
        rows.append({"id": d.id, "created": d.created_at, "event": d.event, "status": d.status,
                     "attempts": d.attempts, "last answer": answer,
                     "ms": last.duration_ms if last is not None else None,
                     "error": (last.error or "") if last is not None else None, "next attempt": d.next_attempt_at})
    return pd.DataFrame(rows)


def choose_owner() -> str | None:
    who = session.read(RegistryClient.whoami)
    admin = "admin" in who.scopes
    published = [v.owner for v in session.read(RegistryClient.list_versions, limit=OWNERS_FROM).items] if admin else []
    known = choices = owners(who, published)
    if not choices:
        st.info("Sign in with a token (sidebar) to manage webhooks: anonymous callers have none.")
        return None
    navigation.follow_url("owner", "webhooks_owner", default=choices[0])
    if st.session_state.get("webhooks_owner") not in choices and not (admin and st.session_state.get("webhooks_owner")):
        st.session_state["webhooks_owner"] = choices[0]
    if admin and st.session_state["webhooks_owner"] not in choices:
        choices = [st.session_state["webhooks_owner"], *choices]  # typed, or named by the URL
    chosen: str | None = st.selectbox(
        "Owner", choices, key="webhooks_owner", on_change=navigation.write_url, args=("owner", "webhooks_owner"),
        accept_new_options=admin, format_func=lambda o: "* (every owner: registry-wide)" if o == EVERY_OWNER else o,
        help="Any owner: those that published here are listed, another can be typed; * (every owner): the "
        "registry-wide webhooks, which receive every owner's adapter events." if admin else
        "Your namespace, or an organisation where your role is write or admin.")
    if admin and chosen is not None and chosen not in known and chosen != EVERY_OWNER:
        st.caption(f"{chosen}/ has published nothing here yet (among the newest {OWNERS_FROM} versions): a webhook "
                   "added for it fires once it does. Check the name if you meant one of the owners listed.")
    if chosen is not None:
        navigation.set_param("owner", chosen)  # the URL names the owner shown, also when opened from the menu
    return chosen


def add_form(owner: str) -> None:
    with st.form("add_webhook", clear_on_submit=True):
        st.markdown(f"**Add a webhook for {under(owner)}**")
        url = st.text_input("URL", placeholder="https://ci.example.org/hooks/vera")
        events = st.multiselect("Send when", list(WEBHOOK_EVENTS), default=list(WEBHOOK_EVENTS),
                                format_func=lambda e: EVENT_LABELS.get(e, e))
        description = st.text_input("Description", placeholder="what receives it")
        if not st.form_submit_button("Add webhook"):
            return
    if not url.strip().startswith(("http://", "https://")):
        st.error("The URL must start with http:// or https://.")
        return
    if not events:
        st.error("Choose at least one event.")
        return
    try:
        created = session.call(lambda c: c.create_webhook(owner, url.strip(), events=events,
                                                          description=description))
    except RegistryError as exc:
        st.error(str(exc))
        return
    # drawn again, the list above has it (it said "No webhooks ... yet" over the new one: session 29's walk); the
    # secret is shown once, where the form was sent
    st.session_state[ADDED] = (owner, created.id, created.secret)
    st.cache_data.clear()
    st.rerun()


#: The webhook the Add form just created, and its secret, for the page's next drawing (once).
ADDED = "webhooks_added"


#: The session key of a Pause or Resume just done: (the webhook's id, what became of it), said once after the rerun.
TOGGLED = "webhook_toggled"


def added(owner: str) -> None:
    """The webhook just added for ``owner`` and its secret, shown this once, above the Add form."""
    shown = st.session_state.pop(ADDED, None)
    if shown is None or shown[0] != owner:
        return
    st.success(f"Webhook {shown[1]} added. Its signing secret is shown this once: keep it with the receiver "
               "(docs/webhooks.md says how to check the X-Vera-Signature header with it).")
    st.code(shown[2], language=None)


def send_test(hook: WebhookInfo) -> None:
    try:
        sent = session.call(lambda c: c.test_webhook(hook.id))
    except RegistryError as exc:
        st.error(str(exc))
        return
    (st.success if sent.status == "succeeded" else st.error)(
        f"Test delivery {sent.id}: {sent.status} after {sent.attempts} attempt(s). The log below shows what the "
        "receiver answered.")
    st.cache_data.clear()


def confirm_removal(hook: WebhookInfo) -> None:
    """Asked first; removing takes the delivery log with it."""
    confirm_key = f"confirm_remove_{hook.id}"
    if not st.session_state.get(confirm_key):
        return
    st.warning(f"Remove webhook {hook.id} ({hook.url})? Its delivery log goes with it.")
    yes, no = st.columns(2)
    if yes.button("Yes, remove it", key=f"yes_{hook.id}"):
        session.call(lambda c: c.delete_webhook(hook.id))
        st.session_state[confirm_key] = False
        st.cache_data.clear()
        st.rerun()
    if no.button("Keep it", key=f"no_{hook.id}"):
        st.session_state[confirm_key] = False
        st.rerun()


def delivery_log(hook: WebhookInfo) -> None:
    deliveries = session.read(RegistryClient.webhook_deliveries, hook.id)
    if not deliveries:
        st.caption("No deliveries yet: send a test delivery, or publish " + (
            "anywhere." if hook.owner == EVERY_OWNER else f"under {hook.owner}/."))
        return
    tables.show(deliveries_table(deliveries), hide_index=True, width="stretch", column_config={
        "created": formats.moment_column("YYYY-MM-DD HH:mm:ss"),
        "next attempt": formats.moment_column("YYYY-MM-DD HH:mm:ss")})
    failed = sum(d.status == "failed" for d in deliveries)
    if failed:
        st.caption(f"{failed} deliveries failed after every attempt; `vera webhook deliveries {hook.id}` shows each "
                   "attempt.")


def manage(hook: WebhookInfo) -> None:
    """Test, pause or resume, remove (asked first), and the delivery log of one webhook."""
    test, toggle, remove = st.columns(3)
    if test.button("Send a test delivery", key=f"test_{hook.id}", type="primary"):
        send_test(hook)
    if toggle.button("Pause" if hook.active else "Resume", key=f"toggle_{hook.id}"):
        changed = session.call(lambda c: c.update_webhook(hook.id, active=not hook.active))
        st.session_state[TOGGLED] = (changed.id, "resumed: it receives events again" if changed.active else
                                     "paused: it receives no events until it is resumed")
        st.cache_data.clear()
        st.rerun()
    if (said := st.session_state.pop(TOGGLED, None)) is not None and said[0] == hook.id:
        st.success(f"Webhook {hook.id} {said[1]}.")
    if remove.button("Remove", key=f"remove_{hook.id}"):
        st.session_state[f"confirm_remove_{hook.id}"] = True
    confirm_removal(hook)
    delivery_log(hook)


def page() -> None:
    st.title(TITLE)
    owner = choose_owner()
    if owner is None:
        return
    hooks = session.read(RegistryClient.webhooks, owner)
    if hooks:
        tables.show(hooks_table(hooks), hide_index=True, width="stretch")
        # chosen by id, and read from this run's list: the box kept the webhook it was given before a Pause, so the
        # button still said "Pause" of a paused one, and a second click resumed it (a newcomer's walk, session 54)
        by_id = {h.id: h for h in hooks}
        chosen = st.selectbox("Webhook", list(by_id), format_func=lambda i: f"{i}: {by_id[i].url}",
                              key="webhooks_chosen")
        if chosen is not None:
            manage(by_id[chosen])
    else:
        # "you/ has no webhooks ... each event of you's adapters" read oddly (session 23's walk)
        st.info(f"No webhooks for {under(owner)} yet. Add one below: it receives a signed POST for each of their "
                "events that it is sent.")
    added(owner)
    add_form(owner)

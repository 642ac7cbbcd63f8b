"""An adapter's own retention rule on the Adapter page (registry.services.retention: about once an hour the registry
deletes the versions the rule lets go, never the newest nor one an alias points at): the Edit tab says the rule and
what it lets go now, and previews, sets or removes one; a version the rule is about to delete says so in a banner,
and the versions table marks it (a rule set by a teammate deleted versions nobody on their pages was told of)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

import streamlit as st

from registry.client import RegistryClient
from registry.domain.errors import RegistryError
from registry.domain.schemas import MAX_RETENTION_DAYS, MAX_VERSION, RetentionInfo, RetentionPreview, VersionInfo
from registry.domain.words import RULES_OFF, counted, kept_by
from web_ui import session
from web_ui.outcomes import RETENTION_FORM, Note, Unsent, done, result

#: The value of the versions table's retention column for a version the rule deletes at its next run.
DUE = "due for deletion"
#: How many references a message lists before "and N more".
LISTED = 10

T = TypeVar("T")


def due(adapter: str, rule: RetentionInfo | None) -> RetentionPreview | None:
    """What ``adapter``'s own rule deletes at its next run, when it has one and the registry applies rules (None
    otherwise, or from a registry that cannot say)."""
    if rule is None:
        return None
    try:
        preview = session.read(RegistryClient.retention_preview, adapter)
    except RegistryError:
        return None
    return preview if preview.applied is not False else None


def banner(info: VersionInfo, rule: RetentionInfo | None) -> None:
    """A warning on the page of a version the adapter's rule deletes at its next run, and how to keep it."""
    adapter = f"{info.owner}/{info.name}"
    preview = due(adapter, rule)
    if preview is None or info.ref not in preview.would_delete:
        return
    st.warning(f"{info.ref} is due for deletion: {adapter}'s retention rule {kept_by(rule)}. To keep it, point an "
               "alias at it, or change the rule (Edit tab).", icon=":material/auto_delete:")


def listed(refs: list[str]) -> str:
    """'a:1, a:2' or, past LISTED, the first ones and how many more."""
    more = len(refs) - LISTED
    return ", ".join(refs[:LISTED]) + (f" and {counted(more, 'more')}" if more > 0 else "")


def said(preview: RetentionPreview) -> str:
    """What a rule lets go now and what aliases keep, in a sentence."""
    going = (f"it lets go of {counted(len(preview.would_delete), 'version')} now ({listed(preview.would_delete)}, "
             "oldest first)" if preview.would_delete else "it lets go of no version now")
    kept = "; ".join(f"{ref} stays for {', '.join(f'@{a}' for a in aliases)}"
                     for ref, aliases in preview.kept_for_aliases.items())
    return going + (f"; {kept}" if kept else "") + (f". Note: {RULES_OFF}" if preview.applied is False else "")


def asked(adapter: str) -> tuple[int | None, float | None] | Unsent:
    """The rule the form's boxes give (0: that part is not in the rule), or why it is not sent."""
    last = int(st.session_state[f"retention-last-{adapter}"] or 0)
    days = float(st.session_state[f"retention-days-{adapter}"] or 0)
    if not math.isfinite(days) or (days and not 1 <= days <= MAX_RETENTION_DAYS):
        return Unsent(f"Nothing sent: keep versions published in the last 1 to {MAX_RETENTION_DAYS:,} days (0: no age "
                      f"in the rule), not {days:g}.")
    if not last and not days:
        return Unsent("Nothing sent: give the newest N versions or the last D days to keep (Remove rule, under the "
                      "form, leaves the adapter without one).")
    return last or None, days or None


def sent(ref: str, adapter: str, send: Callable[[RegistryClient, int | None, float | None], T]) -> T | None:
    """``send(client, keep_last, keep_days)`` with the rule the form's boxes give, or None once why not is kept for
    the form to show (the boxes, or the registry's refusal)."""
    rule = asked(adapter)
    if isinstance(rule, Unsent):
        done(ref, rule, RETENTION_FORM)
        return None
    try:
        return session.call(lambda c: send(c, *rule))
    except RegistryError as exc:
        done(ref, exc, RETENTION_FORM)
        return None


def preview_rule(ref: str, adapter: str) -> None:
    """``on_click`` of Preview: what the rule in the boxes would delete now; nothing is saved."""
    preview = sent(ref, adapter, lambda c, last, days: c.retention_preview(adapter, keep_last=last, keep_days=days))
    if preview is not None:
        words = kept_by(preview.rule).removeprefix("keeps ")
        done(ref, Note(f"Nothing saved. This rule keeps {words}; {said(preview)}."), RETENTION_FORM)


def save_rule(ref: str, adapter: str) -> None:
    """``on_click`` of Save rule: the adapter's rule becomes the one in the boxes (a rule is set whole), and what it
    lets go now is said."""
    answer = sent(ref, adapter, lambda c, last, days: (c.set_retention(adapter, keep_last=last, keep_days=days),
                                                       c.retention_preview(adapter)))
    if answer is not None:
        saved, preview = answer
        done(ref, f"Saved {adapter}'s rule: it {kept_by(saved.retention)}; {said(preview)}.", RETENTION_FORM)


def clear_rule(ref: str, adapter: str) -> None:
    """``on_click`` of Remove rule: the adapter has none; the boxes start again from empty."""
    try:
        session.call(lambda c: c.set_retention(adapter))
    except RegistryError as exc:
        done(ref, exc, RETENTION_FORM)
        return
    for box in (f"retention-last-{adapter}", f"retention-days-{adapter}"):
        st.session_state.pop(box, None)
    done(ref, f"Removed {adapter}'s retention rule: every version stays until someone deletes it.", RETENTION_FORM)


def form(info: VersionInfo, rule: RetentionInfo | None) -> None:
    """The Edit tab's retention form, for a writer of the adapter: the rule and what it lets go now, the boxes to
    preview or save another, and Remove rule when there is one."""
    adapter = f"{info.owner}/{info.name}"
    st.markdown(f"**Retention** of {adapter} (which versions the registry deletes on its own)")
    st.caption(f"Now: {kept_by(rule)}." + ("" if rule is None else _now(adapter)))
    with st.form(f"retention-{adapter}"):
        last, days = st.columns(2)
        last.number_input("Keep the newest N versions", min_value=0, max_value=MAX_VERSION, step=1,
                          value=(rule.keep_last or 0) if rule else 0, key=f"retention-last-{adapter}",
                          help="by number, yanked ones included; 0: no count in the rule")
        days.number_input("Keep versions published in the last D days", min_value=0.0,
                          max_value=float(MAX_RETENTION_DAYS), step=1.0, format="%g",
                          value=float(rule.keep_days or 0) if rule else 0.0, key=f"retention-days-{adapter}",
                          help=f"1 to {MAX_RETENTION_DAYS:,}; 0: no age in the rule. A version either part keeps "
                               "stays")
        preview, save = st.columns(2)
        preview.form_submit_button("Preview", on_click=preview_rule, args=(info.ref, adapter),
                                   help="What this rule would delete now; nothing is saved")
        save.form_submit_button("Save rule", on_click=save_rule, args=(info.ref, adapter))
    if rule is not None:
        st.button("Remove rule", key=f"retention-clear-{adapter}", on_click=clear_rule, args=(info.ref, adapter))
    result(info.ref, RETENTION_FORM)


def _now(adapter: str) -> str:
    """' It lets go of ... now.' for the adapter's own rule, or that this registry applies none."""
    try:
        preview = session.read(RegistryClient.retention_preview, adapter)
    except RegistryError:
        return ""
    if preview.applied is False:
        return f" Note: {RULES_OFF}."
    words = said(preview)
    return f" {words[0].upper()}{words[1:]}."

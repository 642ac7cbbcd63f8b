"""An adapter's own retention rule on the Adapter page (registry.services.retention: about once an hour the registry
deletes the versions the rule does not keep, never the newest nor one an alias points at): the Edit tab says the rule
and what it deletes at its next run, and previews, sets (once confirmed, when it deletes any) or removes one; a version
the rule is about to delete says so in a banner, and the versions table marks it (a rule set by a teammate deleted
versions nobody on their pages was told of)."""

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
#: The box Save rule asks to be ticked when the rule deletes any version (a walk in a browser, session 56: one click
#: scheduled three deletions, where deleting one version asks for its reference typed).
CONFIRM = "I understand: the versions it deletes are gone for good"

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


def banner(info: VersionInfo, rule: RetentionInfo | None, may_edit: Callable[[], bool]) -> None:
    """A warning on the page of a version the adapter's rule deletes at its next run, and how to keep it: what to do
    for a caller who may edit the adapter (``may_edit()``), whom to ask for one who may not."""
    adapter = f"{info.owner}/{info.name}"
    preview = due(adapter, rule)
    if preview is None or info.ref not in preview.would_delete:
        return
    keep = ("To keep it, point an alias at it, or change the rule (Edit tab)." if may_edit() else
            f"To keep it, ask a writer of {info.owner} to point an alias at it or to change the rule.")
    st.warning(f"{info.ref} is due for deletion within the hour: {adapter}'s retention rule {kept_by(rule)}. {keep}",
               icon=":material/auto_delete:")


def column(preview: RetentionPreview | None, refs: list[str]) -> list[str] | None:
    """The versions table's retention column for the versions ``refs``: "due for deletion" or "kept for @staging"
    (an alias keeps one the rule would delete), or None when none of them is either."""
    if preview is None:
        return None
    cells = [DUE if ref in preview.would_delete else
             f"kept for {', '.join(f'@{a}' for a in preview.kept_for_aliases[ref])}"
             if ref in preview.kept_for_aliases else "" for ref in refs]
    return cells if any(cells) else None


def listed(refs: list[str], total: int) -> str:
    """'a:1, a:2' or, past LISTED (or when ``total`` is more than ``refs``), the first ones and how many more."""
    more = total - min(len(refs), LISTED)
    return ", ".join(refs[:LISTED]) + (f" and {more:,} more" if more > 0 else "")


def said(preview: RetentionPreview, verb: str = "deletes") -> str:
    """What a rule deletes at its next run and what aliases keep, in a sentence (``verb``: "would delete" for a rule
    not saved)."""
    n = preview.total
    going = (f"{verb} {counted(n, 'version')} at its next run (within the hour): "
             f"{listed(preview.would_delete, n)}{' (oldest first)' if n > 1 else ''}" if n else
             f"{verb} no version now")
    kept = "; ".join(f"{ref} stays for {', '.join(f'@{a}' for a in aliases)}"
                     for ref, aliases in preview.kept_for_aliases.items())
    return going + (f"; {kept}" if kept else "") + (f". Note: {RULES_OFF}" if preview.applied is False else "")


def boxes(adapter: str) -> tuple[str, str, str]:
    """The session-state keys of the form's boxes for ``adapter``: keep_last, keep_days, and the confirmation."""
    return f"retention-last-{adapter}", f"retention-days-{adapter}", f"retention-ok-{adapter}"


def asked(adapter: str) -> tuple[int | None, float | None] | Unsent:
    """The rule the form's boxes give (0: that part is not in the rule), or why it is not sent: the boxes take any
    number and are checked here, so that a number out of range is said, not a click ignored (the same walk)."""
    last_box, days_box, _ = boxes(adapter)
    last, days = st.session_state.get(last_box) or 0, float(st.session_state.get(days_box) or 0)
    if not 0 <= last <= MAX_VERSION:
        return Unsent(f"Nothing sent: keep the newest 1 to {MAX_VERSION:,} versions (0: no count in the rule), not "
                      f"{last:,}.")
    if not math.isfinite(days) or (days and not 1 <= days <= MAX_RETENTION_DAYS):
        return Unsent(f"Nothing sent: keep versions published in the last 1 to {MAX_RETENTION_DAYS:,} days (0: no age "
                      f"in the rule), not {days:g}.")
    if not last and not days:
        return Unsent("Nothing sent: give the newest N versions or the last D days to keep (Remove rule leaves the "
                      "adapter without one).")
    return int(last) or None, days or None


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
        done(ref, Note(f"Nothing saved. This rule {kept_by(preview.rule).split('; ')[0]}; it "
                       f"{said(preview, 'would delete')}."), RETENTION_FORM)


def save_rule(ref: str, adapter: str) -> None:
    """``on_click`` of Save rule: the adapter's rule becomes the one in the boxes (a rule is set whole), once its box
    is ticked when the rule deletes any version; what it deletes is said."""
    confirm = boxes(adapter)[2]
    preview = sent(ref, adapter, lambda c, last, days: c.retention_preview(adapter, keep_last=last, keep_days=days))
    if preview is None:
        return
    if preview.total and not st.session_state.get(confirm):
        done(ref, Unsent(f"Nothing saved: this rule would delete {counted(preview.total, 'version')} at its next run "
                         f"(within the hour): {listed(preview.would_delete, preview.total)}. Tick '{CONFIRM}' and "
                         "press Save rule to save it."), RETENTION_FORM)
        return
    answer = sent(ref, adapter, lambda c, last, days: (c.set_retention(adapter, keep_last=last, keep_days=days),
                                                       c.retention_preview(adapter)))
    if answer is not None:
        saved, now = answer
        st.session_state[confirm] = False  # asked again for the next rule
        done(ref, f"Saved {adapter}'s rule: it {kept_by(saved.retention).split('; ')[0]}. It {said(now)}.",
             RETENTION_FORM)


def clear_rule(ref: str, adapter: str) -> None:
    """``on_click`` of Remove rule: the adapter has none (the boxes follow: form)."""
    try:
        session.call(lambda c: c.set_retention(adapter))
    except RegistryError as exc:
        done(ref, exc, RETENTION_FORM)
        return
    done(ref, f"Removed {adapter}'s retention rule: every version stays until someone deletes it.", RETENTION_FORM)


def form(info: VersionInfo, rule: RetentionInfo | None) -> None:
    """The Edit tab's retention form, for a writer of the adapter: the rule and what it deletes at its next run, the
    boxes to preview or save another, and Remove rule when there is one. The boxes show the saved rule whenever it
    changed since they last did (saved or removed here, or by a teammate: Refresh), and keep what was typed
    otherwise (Remove rule left the removed rule's number in its box: the same walk)."""
    adapter = f"{info.owner}/{info.name}"
    last_box, days_box, confirm = boxes(adapter)
    saved = ((rule.keep_last or 0) if rule else 0, float(rule.keep_days or 0) if rule else 0.0)
    if st.session_state.get(f"retention-shown-{adapter}") != saved:
        st.session_state[f"retention-shown-{adapter}"] = saved
        st.session_state[last_box], st.session_state[days_box] = saved
    st.markdown(f"**Retention** of {adapter} (which versions the registry deletes on its own)")
    st.caption(f"Now: {kept_by(rule)}.")
    _now(adapter, rule)
    with st.form(f"retention-{adapter}"):
        left, right = st.columns(2)
        left.number_input("Keep the newest N versions", step=1, key=last_box,
                          help="by number, yanked ones included; 0: no count in the rule")
        right.number_input("Keep versions published in the last D days", step=1.0, format="%g", key=days_box,
                           help=f"1 to {MAX_RETENTION_DAYS:,}; 0: no age in the rule. A version either part keeps "
                                "stays")
        st.checkbox(CONFIRM, key=confirm, help="asked by Save rule when the rule deletes any version at its next run")
        with st.container(horizontal=True):
            st.form_submit_button("Preview", on_click=preview_rule, args=(info.ref, adapter))
            st.form_submit_button("Save rule", on_click=save_rule, args=(info.ref, adapter))
            if rule is not None:
                st.form_submit_button("Remove rule", on_click=clear_rule, args=(info.ref, adapter))
    result(info.ref, RETENTION_FORM)


def _now(adapter: str, rule: RetentionInfo | None) -> None:
    """What the adapter's own rule deletes at its next run, as a warning when that is any version; or that this
    registry applies no rule now."""
    if rule is None:
        return
    try:
        preview = session.read(RegistryClient.retention_preview, adapter)
    except RegistryError:
        return
    if preview.applied is False:
        st.caption(f"Note: {RULES_OFF}.")
    elif preview.total:
        st.warning(f"It {said(preview)}.", icon=":material/auto_delete:")
    else:
        st.caption(f"It {said(preview)}.")

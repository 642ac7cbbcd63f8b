"""An adapter's own retention rule on the Adapter page (registry.services.retention: about once an hour the registry
deletes the versions the rule does not keep, never the newest nor one an alias points at): the Edit tab says the rule
and what it deletes at its next run, and previews, sets (once confirmed) or removes one; a version the rule is about
to delete says so in a banner, and the versions table marks it (a rule set by a teammate deleted versions nobody on
their pages was told of). Both know the oldest MAX_RETENTION_PREVIEW (1,000) versions due, as a preview lists them: on
an adapter with more due, those past them are not marked."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

import streamlit as st

from registry.client import RegistryClient
from registry.domain.errors import RegistryError
from registry.domain.schemas import (
    MAX_RETENTION_DAYS,
    MAX_RETENTION_PREVIEW,
    MAX_VERSION,
    RetentionInfo,
    RetentionPreview,
    VersionInfo,
)
from registry.domain.words import RULES_OFF, counted, kept_by
from web_ui import session
from web_ui.outcomes import RETENTION_FORM, Note, Unsent, done, forget, result

#: The value of the versions table's retention column for a version the rule deletes at its next run.
DUE = "due for deletion"
#: How many references a message lists before "and N more".
LISTED = 10
#: The box Save rule asks to be ticked, for the rule whose deletions were last shown (a walk in a browser, session 56:
#: one click scheduled three deletions, where deleting one version asks for its reference typed; then, a box ticked
#: for one rule saved another, whose deletions were never shown). Any rule: it deletes more as versions come or age.
CONFIRM = "I understand: the versions it deletes are gone for good"
#: What the registry does with a rule from then on, said before it is saved.
LATER = ("from then on, each version it stops keeping (a newer one published, or its days passed) is deleted within "
         "the hour")

T = TypeVar("T")


def due(adapter: str, rule: RetentionInfo | None) -> RetentionPreview | None:
    """What ``adapter``'s own rule deletes at its next run, when it has one and the registry applies rules (None
    otherwise, or from a registry that cannot say)."""
    if rule is None:
        return None
    try:
        preview = own(adapter)
    except RegistryError:
        return None
    return preview if preview.applied is not False else None


def own(adapter: str) -> RetentionPreview:
    """What ``adapter``'s own rule deletes now, the oldest MAX_RETENTION_PREVIEW listed (one read for the banner,
    the versions table and the Edit tab)."""
    return session.read(RegistryClient.retention_preview, adapter, limit=MAX_RETENTION_PREVIEW)


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
    going = set(preview.would_delete)
    cells = [DUE if ref in going else
             f"kept for {', '.join(f'@{a}' for a in preview.kept_for_aliases[ref])}"
             if ref in preview.kept_for_aliases else "" for ref in refs]
    return cells if any(cells) else None


def listed(refs: list[str], total: int) -> str:
    """'a:1, a:2' or, past LISTED (or when ``total`` is more than ``refs``), the first ones and how many more."""
    more = total - min(len(refs), LISTED)
    return ", ".join(refs[:LISTED]) + (f" and {more:,} more" if more > 0 else "")


def said(preview: RetentionPreview, verb: str = "deletes") -> str:
    """What a rule deletes at its next run and what aliases keep, in a sentence (``verb``: "would delete" for a rule
    not saved), and, for a rule not saved, what it does from then on; on a registry that applies no rule now, that
    instead (no "within the hour": a reviewer's finding)."""
    n, applied = preview.total, preview.applied is not False
    when = "at its next run (within the hour)" if applied else "once the registry applies rules again"
    going = (f"{verb} {counted(n, 'version')} {when}: {listed(preview.would_delete, n)}"
             f"{' (oldest first)' if n > 1 else ''}" if n else f"{verb} no version now")
    kept = "; ".join(f"{ref} stays for {', '.join(f'@{a}' for a in aliases)}"
                     for ref, aliases in preview.kept_for_aliases.items())
    later = f", and {LATER}" if verb != "deletes" and applied else ""
    return going + (f"; {kept}" if kept else "") + later + ("" if applied else f". Note: {RULES_OFF}")


def boxes(adapter: str) -> tuple[str, str, str]:
    """The session-state keys of the form's boxes for ``adapter``: keep_last, keep_days, and the confirmation."""
    return f"retention-last-{adapter}", f"retention-days-{adapter}", f"retention-ok-{adapter}"


def shown_key(adapter: str) -> str:
    """The session-state key of the rule the boxes last showed as saved: (keep_last or 0, keep_days or 0.0)."""
    return f"retention-shown-{adapter}"


def seen_key(adapter: str) -> str:
    """The session-state key of the rule whose deletions were last shown (Preview, or Save's refusal): the one a
    ticked box confirms."""
    return f"retention-seen-{adapter}"


def show_saved(adapter: str, keep_last: int | None, keep_days: float | None) -> None:
    """The boxes show the rule just saved (or none), and the form takes it as the one it showed: its outcome stays."""
    saved = (keep_last or 0, float(keep_days or 0))
    last_box, days_box, confirm = boxes(adapter)
    st.session_state[shown_key(adapter)] = saved
    st.session_state[last_box], st.session_state[days_box] = saved
    st.session_state[confirm] = False  # asked again for the next rule


def asked(adapter: str) -> tuple[int | None, float | None] | Unsent:
    """The rule the form's boxes give (0: that part is not in the rule), or why it is not sent: the boxes take any
    number and are checked here, so that a number out of range is said, not a click ignored (the same walk)."""
    last_box, days_box, _ = boxes(adapter)
    last, days = st.session_state.get(last_box) or 0, float(st.session_state.get(days_box) or 0)
    if not 0 <= last <= MAX_VERSION:
        return Unsent(f"Nothing sent: keep the newest N versions, N a whole number from 1 to {MAX_VERSION:,} (0: no "
                      f"count in the rule), not {last:,}.")
    if not math.isfinite(days) or (days and not 1 <= days <= MAX_RETENTION_DAYS):
        return Unsent(f"Nothing sent: keep versions published in the last 1 to {MAX_RETENTION_DAYS:,} days (0: no age "
                      f"in the rule), not {days:,g}.")
    if not last and not days:
        return Unsent("Nothing sent: give the newest N versions or the last D days to keep (Remove rule leaves the "
                      "adapter without one).")
    return int(last) or None, days or None


def asked_preview(adapter: str) -> Callable[[RegistryClient, int | None, float | None], RetentionPreview]:
    """What Preview and Save rule ask of the registry for the rule the boxes give (sent's ``send``)."""
    return lambda c, last, days: c.retention_preview(adapter, keep_last=last, keep_days=days,
                                                     limit=MAX_RETENTION_PREVIEW)


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
    preview = sent(ref, adapter, asked_preview(adapter))
    if preview is not None:
        st.session_state[seen_key(adapter)] = asked(adapter)
        done(ref, Note(f"Nothing saved. This rule {kept_by(preview.rule).split('; ')[0]}; it "
                       f"{said(preview, 'would delete')}."), RETENTION_FORM)


def save_rule(ref: str, adapter: str) -> None:
    """``on_click`` of Save rule: the adapter's rule becomes the one in the boxes (a rule is set whole), once its box
    is ticked for that rule, whose deletions were shown (else they are shown, and the box asked for again)."""
    confirm = boxes(adapter)[2]
    preview = sent(ref, adapter, asked_preview(adapter))
    if preview is None:
        return
    if not st.session_state.get(confirm) or st.session_state.get(seen_key(adapter)) != asked(adapter):
        st.session_state[seen_key(adapter)] = asked(adapter)
        st.session_state[confirm] = False
        done(ref, Unsent(f"Nothing saved: this rule {said(preview, 'would delete')}. Tick '{CONFIRM}' "
                         "and press Save rule to save it."), RETENTION_FORM)
        return
    answer = sent(ref, adapter, lambda c, last, days: c.set_retention(adapter, keep_last=last, keep_days=days))
    if answer is not None and answer.retention is not None:
        show_saved(adapter, answer.retention.keep_last, answer.retention.keep_days)
        done(ref, f"Saved {adapter}'s rule: it {kept_by(answer.retention).split('; ')[0]} (what it deletes now is said "
                  "above the form).", RETENTION_FORM)


def clear_rule(ref: str, adapter: str) -> None:
    """``on_click`` of Remove rule: the adapter has none, and the boxes are empty."""
    try:
        session.call(lambda c: c.set_retention(adapter))
    except RegistryError as exc:
        done(ref, exc, RETENTION_FORM)
        return
    show_saved(adapter, None, None)
    done(ref, f"Removed {adapter}'s retention rule: every version stays until someone deletes it.", RETENTION_FORM)


def form(info: VersionInfo, rule: RetentionInfo | None) -> None:
    """The Edit tab's retention form, for a writer of the adapter: the rule and what it deletes at its next run, the
    boxes to preview or save another, and Remove rule when there is one. The boxes show the saved rule whenever it
    changed elsewhere since they last did (a teammate, the CLI: then Refresh), and what was said here of the rule
    before is dropped, no longer being so; they keep what was typed otherwise (Remove rule left the removed rule's
    number in its box, and a "Saved" stayed beside another rule: the same walks)."""
    adapter = f"{info.owner}/{info.name}"
    last_box, days_box, confirm = boxes(adapter)
    saved = ((rule.keep_last or 0) if rule else 0, float(rule.keep_days or 0) if rule else 0.0)
    if st.session_state.get(shown_key(adapter)) not in (None, saved):
        forget(RETENTION_FORM)
    if st.session_state.get(shown_key(adapter)) != saved or last_box not in st.session_state:
        show_saved(adapter, *saved)  # (the boxes' state goes while the tab is not built: another tab was opened)
    st.markdown(f"**Retention** of {adapter} (which versions the registry deletes on its own)")
    st.caption(f"Now: {kept_by(rule)}.")
    _now(adapter, rule)
    with st.form(f"retention-{adapter}", enter_to_submit=False):  # ("Press Enter to submit form" read as Save)
        left, right = st.columns(2)
        left.number_input("Keep the newest N versions", step=1, key=last_box,
                          help="by number, yanked ones included; 0: no count in the rule")
        right.number_input("Keep versions published in the last D days", step=1.0, format="%g", key=days_box,
                           help=f"1 to {MAX_RETENTION_DAYS:,}; 0: no age in the rule. A version kept by either part "
                                "stays")
        st.checkbox(CONFIRM, key=confirm, help="for the rule whose deletions Preview (or Save rule) showed last")
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
        preview = own(adapter)
    except RegistryError:
        return
    if preview.applied is False:
        st.caption(f"Note: {RULES_OFF}.")
    elif preview.total:
        st.warning(f"It {said(preview)}.", icon=":material/auto_delete:")
    else:
        st.caption(f"It {said(preview)}.")

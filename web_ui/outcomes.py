"""What a change made on the Adapter page's Edit tab answered, kept for the next run of the page and shown beside
the form it answers (web_ui.editing, web_ui.retention): a success, a warning that nothing was sent and why, a note
(what a rule would do, nothing saved), or the registry's refusal."""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from registry.domain.errors import InvalidInput, RegistryError
from web_ui import session

RESULT = "edit_result"
#: Where Save adapter's outcome is shown: under its form, the fourth of the tab (at the top, ~1,000 px above the
#: button, a click seemed to do nothing: a walk's finding, session 32)
ADAPTER_FORM = "adapter"
#: Where the retention form's outcome is shown (web_ui.retention).
RETENTION_FORM = "retention"
#: The forms that save several things at once: a refusal there says "Nothing saved" (the others change one thing).
SAVING = ("top", ADAPTER_FORM, RETENTION_FORM)


@dataclass(frozen=True)
class Unsent:
    """A change the dashboard did not send, and what to do to send it (shown as a warning)."""

    text: str


@dataclass(frozen=True)
class Note:
    """What the registry answered to a question that changes nothing (a rule's preview), shown as information."""

    text: str


Outcome = str | Unsent | Note | RegistryError


def done(ref: str, outcome: Outcome, where: str = "top") -> None:
    """Keep the outcome of a change of the version ``ref`` (owner/name:N, as the page shows it) for the next run to
    show, ``where`` it is seen: at the top of the tab (the version form, the first), or under the form it answers
    (``alias``, ``yank``, ``adapter``, ``retention``, ``move``, ``delete``: shown at the top, it would be out of
    view)."""
    st.session_state[RESULT] = (ref, outcome, where)
    st.cache_data.clear()


def forget(where: str) -> None:
    """Drop the outcome kept for the form ``where``: what it said is no longer so (a rule changed elsewhere since)."""
    if st.session_state.get(RESULT, (None, None, None))[2] == where:
        del st.session_state[RESULT]


def result(ref: str, where: str = "top") -> None:
    """What the last change of this version answered, if it is shown ``where``: a success, or the registry's refusal
    as a message."""
    shown, outcome, place = st.session_state.get(RESULT, (None, None, None))
    if shown != ref or outcome is None or place != where:
        return
    if isinstance(outcome, InvalidInput):  # the registry refused the whole request: say that nothing of it stayed
        session.show_error(outcome, lambda message: ("Nothing saved: " if where in SAVING else "Nothing changed: ")
                           + session.dashboard_words(message))
    elif isinstance(outcome, RegistryError):
        session.show_error(outcome)
    elif isinstance(outcome, Unsent):
        st.warning(outcome.text, icon=":material/warning:")
    elif isinstance(outcome, Note):
        st.info(outcome.text, icon=":material/info:")
    else:
        st.success(outcome, icon=":material/check:")

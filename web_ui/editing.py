"""Editing on the Adapter page: a version's description and tags, the adapter's description, model card and
visibility, and moving the adapter (a new name or owner). Shown to callers whose token may write under the
adapter's owner (as ``whoami`` says); the registry decides in the end, and its refusal is shown as a message. Saving
runs as the button's ``on_click``, before the page, so the header, badges and card already show what was saved."""

from __future__ import annotations

import streamlit as st

from registry.client import RegistryClient
from registry.domain.errors import RegistryError
from registry.domain.schemas import AdapterInfo, VersionInfo, WhoAmI
from web_ui import session

RESULT = "edit_result"
#: Instead of forms on a registry that takes no changes (VERA_READ_ONLY): they would only be refused.
READ_ONLY_EDITS = ("This registry is read-only (a replica or a maintenance window): nothing can be edited here. Point "
                   "the sidebar's URL at the registry that takes changes to edit.")


def may_write(who: WhoAmI, owner: str) -> bool:
    """Whether ``who`` may edit ``owner``'s adapters, as the registry decides it (registry.services.tokens'
    ``can_write``): not anonymous, within the token's limit, admin, or publish under its own name or an
    organisation where it has the write or admin role."""
    if who.anonymous or (who.limited_to is not None and owner not in who.limited_to):
        return False
    if "admin" in who.scopes:
        return True
    return "publish" in who.scopes and (owner == who.user or who.organizations.get(owner) in ("write", "admin"))


def split_tags(text: str) -> list[str]:
    """'a, b,,c ' -> ['a', 'b', 'c'] (order kept, repeats dropped)."""
    return list(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))


def _done(ref: str, outcome: str | RegistryError, where: str = "top") -> None:
    """Keep the outcome of a change for the next run to show, ``where`` it is seen: at the top of the tab, or under
    the Move form (a move is the last form: its answer shown at the top would be out of view)."""
    st.session_state[RESULT] = (ref, outcome, where)
    st.cache_data.clear()


def save_version(ref: str, description: str, tags: list[str]) -> None:
    """``on_click`` of Save version: sends what changed (description; tags added and removed)."""
    new_description = st.session_state[f"edit-description-{ref}"]
    new_tags = split_tags(st.session_state[f"edit-tags-{ref}"])
    added, removed = [t for t in new_tags if t not in tags], [t for t in tags if t not in new_tags]
    changes = (["description"] if new_description != description else []) + [f"+{t}" for t in added] + [
        f"-{t}" for t in removed]
    if not changes:
        _done(ref, "Nothing changed.")
        return
    try:
        session.call(lambda c: c.update_version(
            ref, description=new_description if new_description != description else None,
            add_tags=added or None, remove_tags=removed or None))
    except RegistryError as exc:
        _done(ref, exc)
    else:
        _done(ref, f"Saved {ref}: {', '.join(changes)}.")


def save_adapter(ref: str, adapter: str, before: dict[str, str]) -> None:
    """``on_click`` of Save adapter: description and card in one request, visibility in another."""
    after = {field: st.session_state[f"edit-{field}-{adapter}"] for field in ("about", "card", "visibility")}
    changed = [field for field in after if after[field] != before[field]]
    if not changed:
        _done(ref, "Nothing changed.")
        return
    try:
        if "about" in changed or "card" in changed:
            session.call(lambda c: c.update_adapter(
                adapter, description=after["about"] if "about" in changed else None,
                card=after["card"] if "card" in changed else None))
        if "visibility" in changed:
            session.call(lambda c: c.set_visibility(adapter, after["visibility"]))
    except RegistryError as exc:
        _done(ref, exc)
    else:
        names = {"about": "description", "card": "model card", "visibility": f"now {after['visibility']}"}
        _done(ref, f"Saved {adapter}: {', '.join(names[f] for f in changed)}.")


def move_adapter(ref: str, adapter: str) -> None:
    """``on_click`` of Move adapter: the adapter gets its new name (the registry checks the name and the caller's
    rights on both owners), and the page follows it there (the URL names the new name)."""
    to = st.session_state[f"edit-move-{adapter}"].strip()
    if not to or to == adapter:
        _done(ref, "Nothing changed: type the new name, owner/name.", "move")
        return
    try:
        moved = session.call(lambda c: c.move(adapter, to))
    except RegistryError as exc:
        _done(ref, exc, "move")
        return
    new_name = f"{moved.owner}/{moved.name}"
    shown = st.query_params.get("ref", ref)  # as the page was asked for: an @alias stays one
    new_ref = new_name + (shown if shown.startswith(adapter) else ref)[len(adapter):]
    st.query_params["ref"] = new_ref
    jobs = (f" Jobs {', '.join(map(str, moved.jobs_retargeted))} publish here now." if moved.jobs_retargeted else "")
    if moved.jobs_cancelled:
        jobs += (f" Jobs {', '.join(map(str, moved.jobs_cancelled))} were cancelled (their rights were "
                 f"{adapter.split('/')[0]}'s): submit them again under {moved.owner}.")
    _done(new_ref, f"Moved {adapter} to {new_name}. Its old name now answers that it moved here; publishes to the "
                   f"old name are refused.{jobs}", "move")


def result(ref: str, where: str = "top") -> None:
    """What the last change of this version answered, if it is shown ``where``: a success, or the registry's refusal
    as a message."""
    shown, outcome, place = st.session_state.get(RESULT, (None, None, None))
    if shown != ref or outcome is None or place != where:
        return
    if isinstance(outcome, RegistryError):
        session.show_error(outcome)
    else:
        st.success(outcome, icon=":material/check:")


def version_form(info: VersionInfo) -> None:
    with st.form(f"edit-version-{info.ref}"):
        st.markdown(f"**This version** ({info.ref}: its bytes never change)")
        st.text_area("Version description", value=info.description, key=f"edit-description-{info.ref}")
        st.text_input("Tags", value=", ".join(info.tags), key=f"edit-tags-{info.ref}",
                      help="comma-separated; lowercase letters, digits, '.', '_', '-'")
        st.form_submit_button("Save version", on_click=save_version, args=(info.ref, info.description, info.tags))


def adapter_form(info: VersionInfo, adapter: AdapterInfo) -> None:
    name = f"{info.owner}/{info.name}"
    before = {"about": adapter.description, "card": adapter.card, "visibility": adapter.visibility}
    with st.form(f"edit-adapter-{name}"):
        st.markdown(f"**The adapter** ({name}, every version)")
        st.text_area("Adapter description", value=adapter.description, key=f"edit-about-{name}")
        st.text_area("Model card (Markdown)", value=adapter.card, height=240, key=f"edit-card-{name}",
                     help="Shown in the Model card tab and pushed to the Hub as README.md")
        st.radio("Visibility", ["public", "private"], index=int(adapter.visibility == "private"), horizontal=True,
                 key=f"edit-visibility-{name}",
                 help="private: only the owner, its organisation's members and admins see it")
        st.form_submit_button("Save adapter", on_click=save_adapter, args=(info.ref, name, before))


def move_form(info: VersionInfo) -> None:
    name = f"{info.owner}/{info.name}"
    with st.form(f"move-adapter-{name}"):
        st.markdown(f"**Move** {name} (rename it, or transfer it to an owner you write in)")
        st.text_input("New name", value="", placeholder="owner/name", key=f"edit-move-{name}",
                      help="every version, alias, tag and the card go with it; version numbers go on")
        st.form_submit_button("Move adapter", on_click=move_adapter, args=(info.ref, name))


def section(info: VersionInfo) -> None:
    """The Edit tab: both forms for a caller who may write, else why not; then the last save's result."""
    who = session.read(RegistryClient.whoami)
    if who.read_only:
        st.info(READ_ONLY_EDITS, icon=":material/lock:")
        return
    if not may_write(who, info.owner):
        st.info(f"Signed in as {'an anonymous reader' if who.anonymous else who.user}, who may not edit "
                f"{info.owner}'s adapters. Paste a token with the publish scope for {info.owner} in the sidebar.",
                icon=":material/edit_off:")
        result(info.ref)
        return
    result(info.ref)
    version_form(info)
    adapter_form(info, session.read(RegistryClient.adapter, f"{info.owner}/{info.name}"))
    move_form(info)
    result(info.ref, "move")

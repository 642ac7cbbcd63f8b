"""Editing on the Adapter page: a version's description and tags, its aliases (``prod`` pointed here or removed),
yanking it, the adapter's description, model card and visibility, its retention rule (web_ui.retention), moving the
adapter (a new name or owner, once confirmed) and deleting the version (once its reference is typed). Shown to
callers whose token may write under the adapter's owner (as ``whoami`` says); the registry decides in the end, and
its refusal is shown as a message, next to the form it answers. Copying the version into another adapter (promotion)
is offered to whoever may publish anywhere. Saving runs as the button's ``on_click``, before the page, so the header,
badges and card already show what was saved; a delete runs in the page, which then goes to what is left (the
adapter's latest version; after its last, the page says the adapter has no versions left)."""

from __future__ import annotations

import streamlit as st

from registry.client import RegistryClient
from registry.domain.errors import InvalidInput, NotFound, RegistryError
from registry.domain.schemas import (
    MAX_YANK_REASON,
    AdapterInfo,
    Ref,
    VersionInfo,
    WhoAmI,
    parse_properties,
    tags_field,
)
from web_ui import formats, navigation, retention, session
from web_ui.activity import markdown_text
from web_ui.outcomes import ADAPTER_FORM, RESULT, Unsent, done, result

#: The Move form's checkbox: unticked, the form sends nothing (Enter in the New name box submits the form).
MOVE_CONFIRM = "I understand: the adapter's old name will answer 'moved'"
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


def may_publish(who: WhoAmI) -> bool:
    """Whether ``who`` may publish anywhere (its own namespace, an organisation it writes in): a copy's destination."""
    return not who.anonymous and bool({"publish", "admin"} & set(who.scopes))


def split_tags(text: str) -> list[str]:
    """'a, b,,c ' -> ['a', 'b', 'c'] (order kept, repeats dropped)."""
    return list(dict.fromkeys(tags_field(text)))


def split_properties(text: str) -> dict[str, str] | Unsent:
    """'validation=passed' per line -> {'validation': 'passed'}, blank lines skipped, as `vera publish --property`
    reads them (registry.domain.schemas.parse_properties); a line without '=', or a key given twice, is an Unsent
    saying which."""
    try:
        return parse_properties(line for line in text.splitlines() if line.strip())
    except InvalidInput as exc:
        return Unsent(f"Nothing saved: {exc} One property a line.")


def save_version(ref: str, description: str, tags: list[str], properties: dict[str, str]) -> None:
    """``on_click`` of Save version: sends what changed (description; tags added and removed; properties set and
    removed)."""
    new_description = st.session_state[f"edit-description-{ref}"]
    new_tags = split_tags(st.session_state[f"edit-tags-{ref}"])
    new_properties = split_properties(st.session_state.get(f"edit-properties-{ref}", ""))
    if isinstance(new_properties, Unsent):
        done(ref, new_properties)
        return
    added, removed = [t for t in new_tags if t not in tags], [t for t in tags if t not in new_tags]
    setting = {k: v for k, v in new_properties.items() if properties.get(k) != v}
    dropping = [k for k in properties if k not in new_properties]
    changes = (["description"] if new_description != description else []) + [f"+{t}" for t in added] + [
        f"-{t}" for t in removed] + [f"{k}={v}" for k, v in setting.items()] + [f"-{k}" for k in dropping]
    if not changes:
        done(ref, Unsent("Nothing changed."))
        return
    try:
        session.call(lambda c: c.update_version(
            ref, description=new_description if new_description != description else None,
            add_tags=added or None, remove_tags=removed or None, set_properties=setting or None,
            remove_properties=dropping or None))
    except RegistryError as exc:
        done(ref, exc)
    else:
        done(ref, f"Saved {ref}: {', '.join(changes)}.")


def save_adapter(ref: str, adapter: str, before: dict[str, str]) -> None:
    """``on_click`` of Save adapter: description and card in one request, visibility in another."""
    after = {field: st.session_state[f"edit-{field}-{adapter}"] for field in ("about", "card", "visibility")}
    changed = [field for field in after if after[field] != before[field]]
    if not changed:
        done(ref, Unsent("Nothing changed."), ADAPTER_FORM)
        return
    names = {"about": "description", "card": "model card", "visibility": f"now {after['visibility']}"}
    texts = [f for f in changed if f != "visibility"]
    try:
        if texts:
            session.call(lambda c: c.update_adapter(
                adapter, description=after["about"] if "about" in changed else None,
                card=after["card"] if "card" in changed else None))
    except RegistryError as exc:
        done(ref, exc, ADAPTER_FORM)
        return
    try:
        if "visibility" in changed:
            session.call(lambda c: c.set_visibility(adapter, after["visibility"]))
    except RegistryError as exc:  # the texts were saved by then: "Nothing saved" would be untrue
        done(ref, Unsent(f"Saved {adapter}: {', '.join(names[f] for f in texts)}; its visibility was not changed: "
                          f"{session.dashboard_words(str(exc))}") if texts else exc, ADAPTER_FORM)
    else:
        done(ref, f"Saved {adapter}: {', '.join(names[f] for f in changed)}.", ADAPTER_FORM)


def move_adapter(ref: str, adapter: str) -> None:
    """``on_click`` of Move adapter: once its checkbox is ticked, the adapter gets its new name (the registry checks
    the name and the caller's rights on both owners), and the page follows it there: the URL names the new name as
    the page was asked for (an @alias stays one), and the result is kept for the version shown there."""
    to = st.session_state[f"edit-move-{adapter}"].strip()
    if not to or to == adapter:
        done(ref, Unsent("Nothing changed: type the new name, owner/name."), "move")
        return
    if not st.session_state.get(f"edit-move-ok-{adapter}"):
        done(ref, Unsent(f"Nothing moved: tick '{MOVE_CONFIRM}' under the New name box, then press Move adapter "
                          f"to move {adapter} to {to}."), "move")
        return
    try:
        moved = session.call(lambda c: c.move(adapter, to))
    except RegistryError as exc:
        done(ref, exc, "move")
        return
    new_name = f"{moved.owner}/{moved.name}"
    st.query_params["ref"] = followed(st.query_params.get("ref", ref), adapter, moved.owner, moved.name, ref)
    jobs = (f" Jobs {', '.join(map(str, moved.jobs_retargeted))} publish here now." if moved.jobs_retargeted else "")
    if moved.jobs_cancelled:
        jobs += (f" Jobs {', '.join(map(str, moved.jobs_cancelled))} were cancelled (their rights were "
                 f"{adapter.split('/')[0]}'s): submit them again under {moved.owner}.")
    done(new_name + ref[len(adapter):], f"Moved {adapter} to {new_name}. Its old name now answers that it moved "
                                         f"here; publishes to the old name are refused.{jobs}", "move")


def copy_version(ref: str) -> None:
    """``on_click`` of Copy version: the version becomes the next version of the adapter typed (made when there is
    none; the registry checks the name and the caller's rights there), then, when one is typed, that adapter's alias
    names the copy (a second request: the copy stays if the alias is refused, and the message says so)."""
    to = st.session_state[f"edit-copy-{ref}"].strip()
    alias = st.session_state[f"edit-copy-alias-{ref}"].strip().removeprefix("@")
    if not to:
        done(ref, Unsent("Nothing changed: type the adapter to copy into, owner/name."), COPY_FORM)
        return
    try:
        if alias and (problem := session.call(lambda c: c.alias_problem(to, alias))) is not None:
            # before the copy: a refused alias left a copy made, and another on the next try (a walk, session 46)
            done(ref, Unsent(f"Nothing changed: {problem}"), COPY_FORM)
            return
        copied = session.call(lambda c: c.copy_version(ref, to))
    except RegistryError as exc:
        done(ref, exc, COPY_FORM)
        return
    made = " (a new adapter)" if copied.version == 1 else ""
    said = f"Copied {ref} to [{copied.ref}]({navigation.version_link(copied.ref)}){made}."
    if alias:
        try:
            session.call(lambda c: c.set_alias(copied.ref, alias))
        except RegistryError as exc:
            done(ref, Unsent(f"{said} Its alias was not set ({session.dashboard_words(str(exc))}): point one at it "
                              f"on {copied.ref}'s Edit tab."), COPY_FORM)
            return
        said += f" {copied.owner}/{copied.name}@{alias} names it now."
    for box in (f"edit-copy-{ref}", f"edit-copy-alias-{ref}"):  # emptied: a second click copies nothing again
        st.session_state[box] = ""
    done(ref, said, COPY_FORM)


def followed(asked: str, adapter: str, owner: str, name: str, ref: str) -> str:
    """The reference ``asked`` (the page's ``?ref=``) under the adapter's new name ``owner/name``: the same version
    number or alias, none when it named none; ``ref`` (owner/name:N) when it named another adapter."""
    try:
        parsed: Ref | None = Ref.parse(asked)
    except RegistryError:
        parsed = None
    if parsed is None or f"{parsed.owner}/{parsed.name}" != adapter:
        parsed = Ref.parse(ref)
    return str(Ref(owner=owner, name=name, version=parsed.version, alias=parsed.alias))


def point_alias(ref: str, adapter: str, aliases: dict[str, int]) -> None:
    """``on_click`` of Point alias here: the alias typed (a leading '@' dropped) names this version, wherever it
    pointed before; the registry checks the name and keeps ``latest`` to itself."""
    alias = st.session_state[f"edit-alias-{ref}"].strip().removeprefix("@")
    if not alias:
        done(ref, Unsent("Nothing changed: type an alias name, e.g. prod."), "alias")
        return
    try:
        session.call(lambda c: c.set_alias(ref, alias))
    except RegistryError as exc:
        done(ref, exc, "alias")
        return
    before = aliases.get(alias)
    moved = f" (it pointed at {adapter}:{before})" if before is not None and f"{adapter}:{before}" != ref else ""
    done(ref, f"{adapter}@{alias} now points at {ref}{moved}.", "alias")


def remove_alias(ref: str, adapter: str) -> None:
    """``on_click`` of Remove alias: the alias chosen no longer names anything."""
    alias = st.session_state[f"edit-unalias-{ref}"]
    try:
        session.call(lambda c: c.remove_alias(adapter, alias))
    except RegistryError as exc:
        done(ref, exc, "alias")
        return
    done(ref, f"Removed {adapter}@{alias} (it pointed at {ref}).", "alias")


def yank_version(ref: str, yanked: bool) -> None:
    """``on_click`` of Yank / Unyank this version (a yank with the Reason box's text, if any)."""
    box = f"edit-yank-reason-{ref}"
    reason = ((st.session_state.get(box) or "").strip() or None) if yanked else None
    try:
        session.call(lambda c: c.yank(ref, yanked=yanked, reason=reason))
    except RegistryError as exc:
        done(ref, exc, "yank")
        return
    st.session_state.pop(box, None)  # said; a second yank starts from an empty box
    done(ref, f"Yanked {ref}: hidden from listings and skipped by latest; still downloadable as {ref}." if yanked
          else f"Unyanked {ref}: listed again, and latest points at it again if it is the newest.", "yank")


#: Where the result of deleting an adapter's last version is shown: on the Adapter page in place of the version
#: (web_ui.adapter.missing), which says the adapter has no versions left.
GONE = "gone"


def delete_version(info: VersionInfo) -> None:
    """Delete the version shown, then show what is left: the adapter's latest version (its newest, when every one
    left is yanked); after its last, the page shows the deleted reference, saying the adapter has no versions left
    (a team lead's walk: going on to Browse said nothing). Runs in the page (Streamlit refuses a rerun in a
    callback)."""
    adapter = f"{info.owner}/{info.name}"
    try:
        session.call(lambda c: c.delete(info.ref))
    except RegistryError as exc:
        done(info.ref, exc, "delete")
        return
    st.cache_data.clear()
    left = session.call(lambda c: remaining(c, adapter))
    if left is None:
        done(info.ref, f"Deleted {info.ref}, the last version of {adapter}.", GONE)
        st.query_params["ref"] = info.ref
    else:
        done(left, f"Deleted {info.ref}. This is what is left of {adapter}: its latest version, {left}.", "delete")
        st.query_params["ref"] = left
    st.rerun()


def deleted_last(adapter: str) -> str | None:
    """What this session's delete of ``adapter``'s last version answered, if that was the last change made here."""
    ref, outcome, where = st.session_state.get(RESULT, (None, None, None))
    return outcome if where == GONE and isinstance(outcome, str) and str(ref).startswith(f"{adapter}:") else None


def remaining(client: RegistryClient, adapter: str) -> str | None:
    """The version of ``adapter`` to show after one was deleted: ``latest``, else the newest (every one left is
    yanked), or None when the adapter is gone with its last version."""
    try:
        about = client.adapter(adapter)
    except NotFound:
        return None
    if about.latest_version is not None:
        return f"{adapter}:{about.latest_version}"
    newest = client.list_versions(owner=about.owner, name=about.name, include_yanked=True, limit=1).items
    return newest[0].ref if newest else None


def version_form(info: VersionInfo) -> None:
    with st.form(f"edit-version-{info.ref}"):
        st.markdown(f"**This version** ({info.ref}: its bytes never change)")
        st.text_area("Version description", value=info.description, key=f"edit-description-{info.ref}")
        st.text_input("Tags", value=", ".join(info.tags), key=f"edit-tags-{info.ref}",
                      help="comma-separated; lowercase letters, digits, '.', '_', '-'")
        st.text_area("Properties", value="\n".join(f"{k}={v}" for k, v in info.properties.items()),
                     key=f"edit-properties-{info.ref}", placeholder="validation=passed",
                     help="KEY=VALUE, one a line (keys: lowercase letters, digits, '.', '_', '-'); a line removed "
                          "removes its property")
        st.form_submit_button("Save version", on_click=save_version,
                              args=(info.ref, info.description, info.tags, info.properties))


def guarded_words(owner: str, aliases: list[str]) -> str:
    """'acme protects @prod, which names a version of it' (the aliases of an adapter its owner protects)."""
    listed = ", ".join(f"@{a}" for a in aliases)
    return f"{owner} protects {listed}, which {'names a version' if len(aliases) == 1 else 'name versions'} of it"


def adapter_form(info: VersionInfo, adapter: AdapterInfo, guarded: list[str]) -> None:
    """Description, card and visibility; ``guarded``: the protected aliases that name one of its versions, which
    keep a public adapter public unless its owner's admins make it private (the choice is then off, and says so)."""
    name = f"{info.owner}/{info.name}"
    before = {"about": adapter.description, "card": adapter.card, "visibility": adapter.visibility}
    stays_public = bool(guarded) and adapter.visibility == "public"
    with st.form(f"edit-adapter-{name}"):
        st.markdown(f"**The adapter** ({name}, every version)")
        st.text_area("Adapter description", value=adapter.description, key=f"edit-about-{name}")
        st.text_area("Model card (Markdown)", value=adapter.card, height=240, key=f"edit-card-{name}",
                     help="Shown in the Model card tab and pushed to the Hub as README.md")
        st.radio("Visibility", ["public", "private"], index=int(adapter.visibility == "private"), horizontal=True,
                 key=f"edit-visibility-{name}", disabled=stays_public,
                 help=None if stays_public else "private: only the owner, its organisation's members and admins see "
                                                "it")
        if stays_public:  # said where it is read, not in a tooltip (a walk's finding, session 31)
            st.caption(f"{guarded_words(info.owner, guarded)}: only {info.owner}'s admins make it private.")
        st.form_submit_button("Save adapter", on_click=save_adapter, args=(info.ref, name, before))
    result(info.ref, ADAPTER_FORM)


def protected_aliases(who: WhoAmI, owner: str) -> tuple[list[str], bool]:
    """The aliases the organisation ``owner`` protects (none for a user, or an organisation the caller cannot
    read) and whether ``who`` may change them anyway (the organisation's admins, registry admins)."""
    if owner == who.user or (owner not in who.organizations and "admin" not in who.scopes):
        return [], True
    try:
        org = session.read(RegistryClient.organization, owner)
    except RegistryError:  # a user's name (a registry admin's view), or gone meanwhile
        return [], True
    # as the registry decides it (administers): a token that may write here, an admin of it or of the registry
    return org.protected_aliases, may_write(who, owner) and ("admin" in who.scopes
                                                              or who.organizations.get(owner) == "admin")


def alias_form(info: VersionInfo, adapter: AdapterInfo, protected: list[str], may_override: bool) -> None:
    name = f"{info.owner}/{info.name}"
    st.markdown(f"**Aliases** of {info.ref}: " + (", ".join(
        f"`@{a}`" + (" :material/lock: protected" if a in protected else "")
        for a in formats.ordered_aliases(info.aliases)) or "none"))  # the header's order (a walk, session 31)
    if protected:
        listed = ", ".join(f"`@{a}`" for a in protected)
        them, they_name = ("it", "it names") if len(protected) == 1 else ("them", "they name")
        st.caption(f"{info.owner} protects {listed}: " + (
            f"you administer it, so you may point, remove, or delete what {they_name}." if may_override else
            f"only {info.owner}'s admins may point or remove {them}, or delete, rename, move or make private what "
            f"{they_name}; ask one of them (the Organisations page lists them)."))
    with st.form(f"alias-set-{info.ref}"):
        # a writer's example is an alias it may point (session 29's walk: "prod" is what organisations protect)
        example = "prod" if may_override or "prod" not in protected else "staging"
        st.text_input("Alias", value="", placeholder=example, key=f"edit-alias-{info.ref}",
                      help=f"{name}@ALIAS then names this version (moved here if it named another one); "
                           "lowercase letters, digits, '.', '_', '-'")
        st.form_submit_button("Point alias here", on_click=point_alias, args=(info.ref, name, adapter.aliases))
    removable = [a for a in info.aliases if a != "latest" and (may_override or a not in protected)]
    if removable:
        with st.form(f"alias-remove-{info.ref}"):
            st.selectbox("Alias to remove", removable, key=f"edit-unalias-{info.ref}",
                         help="latest is not offered: the registry keeps it on the newest version not yanked")
            st.form_submit_button("Remove alias", on_click=remove_alias, args=(info.ref, name))
    result(info.ref, "alias")


def yank_form(info: VersionInfo) -> None:
    st.markdown(f"**Yank** {info.ref}" + (" (yanked now)" if info.yanked else ""))
    if info.yanked and info.yank_reason:
        st.caption(f"Reason given: {markdown_text(info.yank_reason)}")
    elif not info.yanked:
        st.text_input("Reason (optional)", key=f"edit-yank-reason-{info.ref}", max_chars=MAX_YANK_REASON,
                      placeholder="e.g. trained on a leaked test split: use :4",
                      help="One line, said to whoever still fetches it (`vera fetch` warns with it, as pip does of "
                           "a yanked release) and on this page.")
    button, why = st.columns([1, 3], vertical_alignment="center")
    button.button("Unyank this version" if info.yanked else "Yank this version", key=f"edit-yank-{info.ref}",
                  on_click=yank_version, args=(info.ref, not info.yanked))
    why.caption(f"Yanked, it is left out of listings and `latest` skips it; it stays downloadable by its number, "
                f"{info.ref}, and nothing is deleted. Unyanking lists it again." if info.yanked else
                f"Yanking leaves it out of listings and makes `latest` skip it (a bad release), while it stays "
                f"downloadable by its number, {info.ref}; nothing is deleted, and it can be unyanked.")
    result(info.ref, "yank")


def move_form(info: VersionInfo, guarded: list[str]) -> None:
    """Renaming or transferring the adapter, once confirmed; ``guarded`` as for adapter_form: not offered then."""
    name = f"{info.owner}/{info.name}"
    if guarded:  # a writer was offered the form and refused after the click (session 29's walk)
        st.markdown(f"**Move** {name}")
        st.caption(f"{guarded_words(info.owner, guarded)}: only {info.owner}'s admins move or rename it.")
        return
    with st.form(f"move-adapter-{name}"):
        st.markdown(f"**Move** {name} (rename it, or transfer it to an owner you write in)")
        st.text_input("New name", value="", placeholder="owner/name", key=f"edit-move-{name}",
                      help="every version, alias, tag and the card go with it; version numbers go on")
        st.checkbox(MOVE_CONFIRM, key=f"edit-move-ok-{name}",
                    help="its readers then find it under the new name; a publish or job to the old one is refused")
        st.form_submit_button("Move adapter", on_click=move_adapter, args=(info.ref, name))
    result(info.ref, "move")


#: Where Copy version's outcome is shown: under its form.
COPY_FORM = "copy"


def copy_form(info: VersionInfo) -> None:
    """Copying the version into another adapter (or this one) as its next version: promotion, as MLflow's
    copy_model_version; offered to whoever may publish anywhere (the registry checks where). A yanked version says
    why it is not offered, and a copy refused because it was yanked meanwhile is said there."""
    if info.yanked:
        st.markdown(f"**Copy** {info.ref}")
        st.caption("A yanked version is not copied (a copy would promote what was withdrawn): unyank it first.")
        result(info.ref, COPY_FORM)
        return
    with st.form(f"copy-version-{info.ref}"):
        st.markdown(f"**Copy** {info.ref} (promote it into another adapter, as its next version)")
        st.text_input("Into adapter", value="", placeholder="owner/name", key=f"edit-copy-{info.ref}",
                      help="an adapter you publish to (made when it does not exist); the copy has these bytes, "
                           "metrics, evaluations, parameters, properties, tags and lineage, and says what it copies")
        st.text_input("Then point alias (optional)", value="", placeholder="prod", key=f"edit-copy-alias-{info.ref}",
                      help="that adapter's alias to name the copy")
        st.form_submit_button("Copy version", on_click=copy_version, args=(info.ref,))
    result(info.ref, COPY_FORM)


def delete_form(info: VersionInfo, guarded: list[str]) -> None:
    """Deleting the version, once its reference is typed; ``guarded``: the protected aliases that name it, which
    only its owner's admins take away (the button is then off, and says so)."""
    st.markdown(f"**Delete** {info.ref} (this cannot be undone)")
    if guarded:
        st.caption(f"{info.owner} protects {', '.join(f'@{a}' for a in guarded)}, which names {info.ref}: only "
                   f"{info.owner}'s admins delete it (or point the alias elsewhere first).")
        return
    held = [f"@{a}" for a in info.aliases if a != "latest"]
    adapter = f"{info.owner}/{info.name}"
    try:
        only = session.read(RegistryClient.adapter, adapter).versions <= 1
    except RegistryError:  # a registry without adapter pages: said as for any version
        only = False
    aliases = f"Its aliases ({', '.join(held)}) go with it" if held else ""
    after = ("versions fine-tuned from it keep its reference as a deleted parent; its number is never given again. "
             "Yank it instead to keep it downloadable.")
    if only:  # no 'latest moves back' to a version that is not there (session 23's walk)
        st.caption((aliases + "; it" if aliases else "It") + f" is {adapter}'s only version: {adapter} is left with "
                   f"none, nothing to download. {after[0].upper()}{after[1:]}")
    elif "latest" in info.aliases:
        st.caption((aliases + ", and" if aliases else "Deleting it moves") + " `latest` "
                   + ("moves " if aliases else "") + f"back to the newest version not yanked; {after}")
    else:  # an older version: `latest` names another and stays (a walk's finding: the caption said it moved back)
        st.caption((aliases + "; " if aliases else "") + (after if aliases else f"{after[0].upper()}{after[1:]}"))
    typed = st.text_input(f"Type {info.ref} to confirm", value="", key=f"edit-delete-{info.ref}")  # (a grey
    # placeholder of the reference itself read as already typed, the button still off: a walk, session 32)
    if st.button("Delete this version", key=f"edit-delete-button-{info.ref}", icon=":material/delete_forever:",
                 disabled=typed.strip() != info.ref):
        delete_version(info)
    result(info.ref, "delete")


def why_not_writer(who: WhoAmI, owner: str) -> str:
    """Why ``who`` may not edit ``owner``'s adapters, and who can change that: the role an organisation gives, or the
    token's scope or owners (a reader of an organisation was told to paste a token with the publish scope, which it
    had: session 29's walk)."""
    if who.anonymous:
        return (f"Signed in as an anonymous reader, who may not edit {owner}'s adapters. Paste a token that may "
                f"publish under {owner} in the sidebar.")
    role = who.organizations.get(owner)
    if who.limited_to is not None and owner not in who.limited_to:
        why = f"this token is limited to {', '.join(sorted(who.limited_to))}; use one that is not, or one for {owner}"
    elif role is None and owner != who.user and "admin" not in who.scopes:  # first: no scope would change that (a
        # reader of another user's adapter was told to use a token with the publish scope: a walk, session 56)
        why = f"{owner} is neither your namespace nor an organisation you belong to"
    elif "publish" not in who.scopes and "admin" not in who.scopes:
        why = "this token has no publish scope; use one that has it"
    elif role == "read":
        why = (f"your role in the organisation {owner} is read: one of its admins makes you a writer (Organisations "
               "page)")
    else:
        why = (f"{owner} is neither your namespace nor an organisation you belong to" if role is None
               else f"your role in {owner} is {role}")
    return f"Signed in as {who.user}, who may not edit {owner}'s adapters: {why}."


def section(info: VersionInfo) -> None:
    """The Edit tab for a caller who may write: the version (description and tags, aliases, yank), the adapter
    (description, card, visibility; move), and deleting the version, each form's result beside it; else why not."""
    who = session.read(RegistryClient.whoami)
    if who.read_only:
        st.info(READ_ONLY_EDITS, icon=":material/lock:")
        return
    if not may_write(who, info.owner):
        st.info(why_not_writer(who, info.owner), icon=":material/edit_off:")
        result(info.ref)
        if may_publish(who):  # into an adapter of its own
            copy_form(info)
        return
    adapter = session.read(RegistryClient.adapter, f"{info.owner}/{info.name}")
    result(info.ref)
    protected, may_override = protected_aliases(who, info.owner)
    version_form(info)
    alias_form(info, adapter, protected, may_override)
    yank_form(info)
    held = [] if may_override else [a for a in adapter.aliases if a in protected]
    adapter_form(info, adapter, held)
    retention.form(info, adapter.retention)
    move_form(info, held)
    copy_form(info)
    delete_form(info, [] if may_override else [a for a in info.aliases if a in protected])

"""Organisations: the ones you belong to (every one for an admin), each with its members and their roles; an
organisation's admins add members, change roles and remove members there, protect aliases (only admins then move
them), rename it, and delete it (its name typed to confirm), any member may leave, and whoever may publish creates
one (becoming its admin). A member name that no token was ever created for is marked: a misspelt name shows. On a
registry with invitations (VERA_ORG_INVITATIONS), adding a user who is not a member invites them: your own
invitations are listed first, to accept or decline, and an organisation's admins see its pending ones and may cancel
them. Each organisation's storage, and yours, is shown against its quota, which admins set or clear there. The
organisation lives in the URL (``?org=acme``). The registry decides in the end (the last admin cannot leave, an
organisation cannot be a member, one that owns adapters, jobs or webhooks is not deleted); its refusals are shown as
messages."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import pandas as pd
import streamlit as st

from registry.client import RegistryClient
from registry.domain.errors import RegistryError
from registry.domain.schemas import MAX_QUOTA_BYTES, InvitationInfo, OrganizationInfo, WhoAmI
from registry.domain.words import counted, parse_size, size
from web_ui import navigation, session, tables
from web_ui.editing import READ_ONLY_EDITS
from web_ui.webhooks import OWNERS_FROM, owners

#: The page's heading (also shown above a message that its registry URL is wrong: session.guarded).
TITLE = "Organisations"

ROLES = ("read", "write", "admin")
ROLE_WORDS = {"read": "read: sees the organisation's private adapters", "write": "write: also publishes and edits",
              "admin": "admin: also manages members"}
#: The outcome of the last change on this page (a success message, or the registry's refusal).
RESULT = "orgs_result"
#: A refused delete (the registry's message, or what to type), shown in the Delete section.
DELETE_RESULT = "orgs_delete_result"
T = TypeVar("T")


def members_table(org: OrganizationInfo) -> pd.DataFrame:
    return pd.DataFrame([{"member": x.member, "role": x.role, "since": f"{x.added_at:%Y-%m-%d}",
                          # "token: yes" read as cryptic (session 28's walk): whether a token was ever made for the
                          # name (none: nobody uses it yet, perhaps misspelt)
                          "registry token": "none yet" if x.has_token is False else "created" if x.has_token
                          else ""}
                         for x in org.members])


def invitations_table(invitations: list[InvitationInfo]) -> pd.DataFrame:
    return pd.DataFrame([{"member": i.member, "role": i.role, "invited by": i.invited_by,
                          "expires": f"{i.expires_at:%Y-%m-%d %H:%M} UTC"} for i in invitations])


def manages(who: WhoAmI, org: str) -> bool:
    """Whether ``who`` may add and remove ``org``'s members (as registry.services.tokens' ``can_manage``)."""
    if who.anonymous or (who.limited_to is not None and org not in who.limited_to):
        return False
    return "admin" in who.scopes or ("publish" in who.scopes and who.organizations.get(org) == "admin")


#: Where an outcome is shown: at the top of the page, under the member forms, or under Leave (a refusal of a button
#: far down the page was drawn at its top, out of view: session 29's walk).
TOP, MEMBERS, LEAVE = "top", "members", "leave"


def _done(outcome: str | RegistryError, place: str = TOP) -> None:
    st.session_state[RESULT] = (place, outcome)
    st.cache_data.clear()


def _change(action: str | Callable[[T], str], fn: Callable[[RegistryClient], T], place: str = TOP) -> None:
    """Make the change ``fn``; say ``action`` (or what it says of the answer), or the registry's refusal, at
    ``place``."""
    try:
        answer = session.call(fn)
    except RegistryError as exc:
        _done(exc, place)
    else:
        _done(action if isinstance(action, str) else action(answer), place)


def _refused() -> bool:
    """Whether the last change was refused."""
    return isinstance(st.session_state.get(RESULT, (TOP, None))[1], RegistryError)


def set_member(org: str) -> None:
    """``on_click`` of Add or change: the member and role typed."""
    member = st.session_state["orgs_member"].strip()
    role = st.session_state["orgs_role"]
    if not member:
        _done("Type the member's user name.", MEMBERS)
        return
    _change(lambda info: added(info, member, role), lambda c: c.set_member(org, member, role), MEMBERS)


def added(org: OrganizationInfo, member: str, role: str) -> str:
    """What adding ``member`` did: made them a member, or (invitations on) invited them."""
    invitation = org.invited(member)
    if invitation is None:
        return f"{member}'s role in {org.name} is now {role}."
    return (f"Invited {member} as {role} to {org.name}: pending until they accept (the invitation expires "
            f"{invitation.expires_at:%Y-%m-%d %H:%M} UTC).")


def accept(org: str, user: str) -> None:
    """``on_click`` of Accept (an invitation for ``user``): they join ``org``, and the page shows it."""
    _change(lambda info: f"You joined {org} as {info.role_of(user) or 'a member'}.", lambda c: c.accept_invitation(org))
    if not _refused():
        st.query_params["org"] = org


def decline(org: str) -> None:
    """``on_click`` of Decline (an invitation for you)."""
    _change(f"You declined the invitation to {org}.", lambda c: c.decline_invitation(org))


def cancel_invitation(org: str) -> None:
    """``on_click`` of Cancel invitation (an organisation's admins)."""
    member = st.session_state["orgs_uninvite"]
    _change(f"Cancelled the invitation of {member} to {org}.", lambda c: c.cancel_invitation(org, member), MEMBERS)


#: The organisation whose Leave was clicked and is asked about (Leave was one click: session 28's walk).
LEAVE_ASKED = "orgs_leave_asked"


def leave_controls(info: OrganizationInfo, who: WhoAmI) -> None:
    """Leave, asking first (as Cancel job does): leaving takes away the caller's role, which only an admin gives
    back. Its last admin is told what to do instead (the registry refuses that Leave: session 29's walk)."""
    org = info.name
    admins = [x.member for x in info.members if x.role == "admin"]
    if admins == [who.user]:
        how = ("(Add or change, above), or delete the organisation" if manages(who, org) else
               "or delete the organisation, with a token that may manage it (this one may not)")
        st.caption(f"You are {org}'s only admin, so you cannot leave it: make another member an admin first {how}.")
        return
    if st.session_state.get(LEAVE_ASKED) != org:
        st.button(f"Leave {org}", on_click=st.session_state.__setitem__, args=(LEAVE_ASKED, org))
        return
    st.warning(f"Leave {org}? You lose your {who.organizations.get(org, 'member')} role: its private adapters, jobs "
               "and settings are no longer yours to see or change, and only one of its admins can add you again.")
    yes, no, _ = st.columns([1, 1, 4])
    yes.button(f"Yes, leave {org}", key="orgs-confirm-leave", type="primary", on_click=remove_member,
               args=(org, who.user, True))
    no.button("Stay", key="orgs-stay", on_click=st.session_state.pop, args=(LEAVE_ASKED, None))


def remove_member(org: str, member: str, leaving: bool) -> None:
    """``on_click`` of Remove (an admin) or Leave (yourself; the URL then stops naming the organisation, which the
    page would otherwise say you do not belong to)."""
    if leaving:
        st.session_state.pop(LEAVE_ASKED, None)
    _change(f"You left {org}." if leaving else f"Removed {member} from {org}.",
            lambda c: c.remove_member(org, member), LEAVE if leaving else MEMBERS)
    if leaving and st.query_params.get("org") == org and not _refused():
        del st.query_params["org"]


def create(who: WhoAmI) -> None:
    """``on_click`` of Create: a new organisation, the caller its first admin; the page shows it."""
    name, about = st.session_state["orgs_new_name"].strip(), st.session_state["orgs_new_about"]
    if not name:
        _done("Type the organisation's name.")
        return
    try:
        session.call(lambda c: c.create_organization(name, description=about))
    except RegistryError as exc:
        _done(exc)
        return
    st.query_params["org"] = name
    _done(f"Created {name}; you ({who.user}) are its admin.")


def rename(org: str) -> None:
    """``on_click`` of Rename: the new name typed; the page follows the organisation there. The registry refuses a
    name taken, retired or invalid, and while it has queued or running jobs (its message says so)."""
    new = st.session_state[f"orgs_rename_{org}"].strip()
    if not new:
        _done(f"Type the name {org} should have from now on.")
        return

    def renamed(info: OrganizationInfo) -> str:
        st.query_params["org"] = info.name
        return f"Renamed {org} to {info.name}: its adapters are {info.name}/NAME now, and their old names point there."

    _change(renamed, lambda c: c.rename_organization(org, new))


def protect(org: str) -> None:
    """``on_click`` of Protect: the alias typed (the registry refuses 'latest' and invalid names)."""
    alias = st.session_state[f"orgs_protect_{org}"].strip()
    if not alias:
        _done("Type the alias to protect, e.g. prod.")
        return
    _change(f"{alias} is protected in {org}: only its admins move it from now on.",
            lambda c: c.protect_alias(org, alias))


def unprotect(org: str) -> None:
    """``on_click`` of Unprotect: the protected alias chosen."""
    alias = st.session_state[f"orgs_unprotect_{org}"]
    _change(f"{alias} is no longer protected in {org}: its writers move it again.",
            lambda c: c.unprotect_alias(org, alias))


def protected_aliases_form(org: OrganizationInfo) -> None:
    """Protecting aliases (its admins): in every adapter of the organisation, only admins then move them."""
    with st.expander("Protected aliases", icon=":material/lock:"):
        st.caption("A protected alias (a release alias such as prod) is pointed at a version, removed, or has its "
                   "version deleted only by this organisation's admins, in every adapter of it; writers still "
                   "publish and move other aliases.")
        with st.form(f"orgs_protect_form_{org.name}", clear_on_submit=True):
            st.text_input("Alias", key=f"orgs_protect_{org.name}", placeholder="prod")
            st.form_submit_button("Protect", on_click=protect, args=(org.name,))
        if org.protected_aliases:
            with st.form(f"orgs_unprotect_form_{org.name}"):
                st.selectbox("Protected alias", org.protected_aliases, key=f"orgs_unprotect_{org.name}")
                st.form_submit_button("Unprotect", on_click=unprotect, args=(org.name,))


def delete(org: str) -> None:
    """``on_click`` of Delete: only with the organisation's name typed again; the registry refuses while it owns
    adapters, queued or running jobs or webhooks (its message says which, and how to clear them)."""
    if st.session_state[f"orgs_delete_{org}"].strip() != org:
        st.session_state[DELETE_RESULT] = f"Type {org} to delete it: its name, exactly."
        return
    try:
        session.call(lambda c: c.delete_organization(org))
    except RegistryError as exc:  # shown in the Delete section, where the button was pressed
        st.session_state[DELETE_RESULT] = exc
        return
    st.query_params.pop("org", None)
    _done(f"Deleted {org}: its members lost their roles in it.")


def result(place: str = TOP) -> None:
    """The last change's outcome, if it is to be shown at ``place`` (a success after leaving: at the top, as the
    organisation left is no longer shown)."""
    where, outcome = st.session_state.get(RESULT, (place, None))
    if where != place and not (where == LEAVE and place == TOP and not isinstance(outcome, RegistryError)):
        return
    st.session_state.pop(RESULT, None)
    if isinstance(outcome, RegistryError):
        session.show_error(outcome)
    elif outcome:
        (st.warning if outcome.startswith("Type") else st.success)(outcome)


def unknown_members(org: OrganizationInfo) -> None:
    unknown = [x.member for x in org.members if x.has_token is False]
    if unknown:
        st.warning(f"No token was ever created on this registry for {', '.join(unknown)}: check the spelling. They "
                   "get their role once an operator creates their token (`vera token create --owner NAME --scope "
                   "read`).", icon=":material/person_alert:")


def manage_form(org: OrganizationInfo, who: WhoAmI) -> None:
    with st.form("orgs_set_member", clear_on_submit=True):
        st.markdown(f"**Add a member to {org.name}, or change a role**")
        st.text_input("User", key="orgs_member", placeholder="user name")
        st.radio("Role", ROLES, key="orgs_role", horizontal=True, format_func=lambda r: ROLE_WORDS[r])
        st.form_submit_button("Add or change", on_click=set_member, args=(org.name,))
    others = [x.member for x in org.members if x.member != who.user]  # yourself: Leave (it asks first)
    if others:
        with st.form("orgs_remove_member"):
            st.markdown("**Remove a member**")
            st.selectbox("Member", others, key="orgs_remove")
            st.form_submit_button("Remove", on_click=lambda: remove_member(
                org.name, st.session_state["orgs_remove"], False))
    if org.invitations:
        with st.form("orgs_cancel_invitation"):
            st.markdown("**Cancel a pending invitation**")
            st.selectbox("Invited user", [i.member for i in org.invitations], key="orgs_uninvite")
            st.form_submit_button("Cancel invitation", on_click=cancel_invitation, args=(org.name,))


def your_invitations(who: WhoAmI) -> None:
    """The invitations waiting for ``who``'s answer, each with Accept and Decline (none on a read-only registry)."""
    if not who.pending_invitations:  # (None: a registry before invitations)
        return
    st.subheader("Invitations for you")
    for i in session.read(RegistryClient.invitations):
        text, yes, no = st.columns([6, 1, 1], vertical_alignment="center")
        text.markdown(f"**{i.organization}** invites you as **{i.role}** (invited by {i.invited_by}; expires "
                      f"{i.expires_at:%Y-%m-%d %H:%M} UTC)")
        if not who.read_only:
            yes.button("Accept", key=f"orgs_accept_{i.organization}", on_click=accept, args=(i.organization, who.user))
            no.button("Decline", key=f"orgs_decline_{i.organization}", on_click=decline, args=(i.organization,))


def rename_form(org: OrganizationInfo) -> None:
    """Renaming the organisation (its admins); the outcome is shown at the top of the page."""
    with st.expander(f"Rename {org.name}", icon=":material/edit:"), \
            st.form(f"orgs_rename_form_{org.name}", clear_on_submit=True):
        st.caption("Its members, adapters (each keeps its name under the new one), ended jobs, webhooks, quota and "
                   "the tokens limited to it follow; its adapters' old names point to the new ones, and its old name "
                   "is retired. The registry refuses while it has queued or running jobs.")
        st.text_input("New name", key=f"orgs_rename_{org.name}", placeholder=org.name)
        st.form_submit_button(f"Rename {org.name}", on_click=rename, args=(org.name,))


def delete_form(org: OrganizationInfo) -> None:
    """Deleting the organisation (its admins), asked for by typing its name; a refusal is shown here, open."""
    refused = st.session_state.pop(DELETE_RESULT, None)
    with st.expander(f"Delete {org.name}", icon=":material/delete_forever:", expanded=refused is not None):
        if isinstance(refused, RegistryError):
            session.show_error(refused)
        elif refused:
            st.warning(refused)
        with st.form(f"orgs_delete_form_{org.name}", clear_on_submit=True):
            st.caption(f"Deleting it takes away the roles of its {counted(len(org.members), 'member')} and drops the "
                       "quota set for it. If it ever had adapters or jobs, its name is retired: no user or new "
                       "organisation takes it (its history stays its own). The registry refuses while it owns "
                       "adapters, queued or running jobs or webhooks, and says which.")
            st.text_input(f"Type {org.name} to confirm", key=f"orgs_delete_{org.name}", placeholder=org.name)
            st.form_submit_button(f"Delete {org.name}", type="primary", on_click=delete, args=(org.name,))


def set_quota(owner: str, clear: bool) -> None:
    """``on_click`` of Set quota / Clear (admins): the size typed (bytes, 50GB, 50GiB, or none)."""
    if clear:
        _change(f"The quota set for {owner} is cleared: the registry's settings hold again.",
                lambda c: c.clear_quota(owner))
        return
    typed = st.session_state[f"orgs_quota_{owner}"].strip()
    if not typed:
        _done("Type the quota: bytes, a size with a unit (50GB, 50GiB), or none.")
        return
    try:
        quota = None if typed.lower() == "none" else parse_size(typed, most=MAX_QUOTA_BYTES)
    except ValueError as exc:  # ("50*10^9" read as italics in Markdown: "5010^9", a newcomer's walk, session 54)
        _done("Type the quota again: " + str(exc).replace("*", "\\*") + ".")
        return
    _change(f"{owner}'s quota is now {'none' if quota is None else size(quota)}.", lambda c: c.set_quota(owner, quota))


def storage(owner: str, who: WhoAmI) -> None:
    """What ``owner``'s adapters store against its quota; an admin sets or clears the quota there."""
    used = session.read(RegistryClient.usage, owner)
    if used.share is None:
        st.caption(used.summary())
    else:
        st.progress(min(used.share, 1.0), text=used.summary())
    if "admin" in who.scopes and not who.read_only:
        with st.form(f"orgs_quota_form_{owner}", clear_on_submit=True):
            st.text_input(f"Quota of {owner}", key=f"orgs_quota_{owner}", placeholder="50GB, 50GiB, or none",
                          help="Overrides the registry's settings (VERA_OWNER_QUOTAS, VERA_OWNER_QUOTA_BYTES) until "
                               "cleared; nothing stored is removed by a lower one.")
            left, right = st.columns(2)
            left.form_submit_button("Set quota", on_click=set_quota, args=(owner, False))
            right.form_submit_button("Clear", on_click=set_quota, args=(owner, True),
                                     disabled=used.quota_from != "admin")


def create_form(who: WhoAmI) -> None:
    with st.expander("Create an organisation", icon=":material/group_add:"), \
            st.form("orgs_create", clear_on_submit=True):
        st.text_input("Name", key="orgs_new_name", placeholder="acme",
                      help="an owner namespace: adapters are published as NAME/adapter")
        st.text_area("Description", key="orgs_new_about")
        st.form_submit_button("Create", on_click=create, args=(who,))


def organisation(org: OrganizationInfo, who: WhoAmI) -> None:
    """The chosen organisation: its members, storage, and what ``who`` may do there."""
    st.caption(f"{org.description or '(no description)'} · created by {org.created_by} on {org.created_at:%Y-%m-%d}")
    tables.show(members_table(org), hide_index=True, width="stretch")
    unknown_members(org)
    if org.invitations:
        st.markdown(f"**Pending invitations** ({len(org.invitations)}): members once they accept")
        tables.show(invitations_table(org.invitations), hide_index=True, width="stretch")
    if org.protected_aliases:
        st.markdown(f"**Protected aliases**: {', '.join(org.protected_aliases)} (only its admins move them)")
    storage(org.name, who)
    if who.read_only:
        st.caption(READ_ONLY_EDITS)
        return
    if manages(who, org.name):
        manage_form(org, who)
        result(MEMBERS)
    else:
        st.caption(f"Your role in {org.name}: {who.organizations.get(org.name, 'none')}. Its admins manage its "
                   "members.")
        result(MEMBERS)  # the outcome of a member form the caller no longer sees (an admin who made itself a reader)
    if org.name in who.organizations:
        leave_controls(org, who)
        result(LEAVE)
    if manages(who, org.name):
        protected_aliases_form(org)
        delete_form(org)
        rename_form(org)


def current(who: WhoAmI) -> tuple[list[OrganizationInfo], WhoAmI]:
    """The caller's organisations and whoami, asked again (uncached) when the URL names an organisation the cached
    list lacks, or the list one the cached whoami lacks: created or joined in the last seconds (reads are cached
    for 5 s), which showed another organisation, or this one with "Your role: none" and no admin forms."""
    orgs = session.read(RegistryClient.organizations)
    if (wanted := st.query_params.get("org")) and wanted not in {o.name for o in orgs}:
        orgs = session.call(RegistryClient.organizations)
        if wanted not in {o.name for o in orgs}:
            st.warning(f"You belong to no organisation {wanted!r} (or it was renamed or deleted): showing yours.")
    if "admin" not in who.scopes and any(o.name not in who.organizations for o in orgs):
        who = session.call(RegistryClient.whoami)
    return orgs, who


def page() -> None:
    st.title(TITLE)
    who = session.read(RegistryClient.whoami)
    if who.anonymous:
        st.info("Sign in with a token (sidebar) to see your organisations: anonymous callers belong to none.")
        return
    result()
    your_invitations(who)
    orgs, who = current(who)
    names = [o.name for o in orgs]
    if not names:
        st.info("You belong to no organisation yet. An organisation's admin adds you, or create one below.")
    else:
        navigation.follow_url("org", "orgs_chosen", default=names[0])
        if st.session_state.get("orgs_chosen") not in names:
            st.session_state["orgs_chosen"] = names[0]
        chosen = st.selectbox("Organisation", names, key="orgs_chosen", on_change=navigation.write_url,
                              args=("org", "orgs_chosen"))
        navigation.set_param("org", chosen)
        organisation(next(o for o in orgs if o.name == chosen), who)
    if who.read_only:
        if not names:
            st.caption(READ_ONLY_EDITS)
    elif "publish" in who.scopes or "admin" in who.scopes:
        create_form(who)
    if "admin" in who.scopes:  # as the local user of a registry without tokens is: every owner's storage
        st.subheader("Storage")
        storage(storage_owner(who), who)
    else:
        st.subheader("Your storage")
        storage(who.user, who)


def storage_owner(who: WhoAmI) -> str:
    """The owner whose storage an admin sees: those that published lately are offered, newest first, another can be
    typed. In local mode Your storage showed the local user's, always 0 B: adapters are published under other
    owners' names there (session 23's walk)."""
    published = [v.owner for v in session.read(RegistryClient.list_versions, limit=OWNERS_FROM).items]
    mine = [who.user] if who.token_id is not None else []  # an admin signed in: its own first
    choices = list(dict.fromkeys([*mine, *owners(who, published)])) or [who.user]
    navigation.follow_url("storage", STORAGE_OWNER, default=choices[0])
    if not st.session_state.get(STORAGE_OWNER):
        st.session_state[STORAGE_OWNER] = choices[0]
    if st.session_state[STORAGE_OWNER] not in choices:
        choices = [st.session_state[STORAGE_OWNER], *choices]  # typed, or named by the URL
    chosen: str = st.selectbox("Owner", choices, key=STORAGE_OWNER, accept_new_options=True,
                               on_change=navigation.write_url, args=("storage", STORAGE_OWNER),
                               help="Any owner: those that published here lately are listed, another can be typed.")
    navigation.set_param("storage", chosen)
    return chosen


#: The session key of the owner whose storage an admin sees.
STORAGE_OWNER = "orgs_storage_owner"

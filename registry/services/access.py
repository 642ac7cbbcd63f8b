"""Who may see what: adapters are public (whoever may read the registry, anonymous readers included where the
registry allows them) or private (their owner, the members of the organisation that owns them, and admins); an
organisation is an owner namespace whose members have a role (read, write, admin).

A caller that may not read a private adapter is told it does not exist, exactly as if it did not: the same error,
message and status (404) as for a missing adapter, in listings, search, compare, downloads, the Hub protocol, Hub
push, jobs and the model server alike. The rights themselves are decided by registry.services.tokens.Principal.
"""

from __future__ import annotations

import difflib
from datetime import UTC, timedelta
from typing import Any, Literal, cast, get_args

from sqlalchemy import (
    ColumnElement,
    CursorResult,
    Executable,
    Select,
    delete,
    exists,
    false,
    func,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.exc import IntegrityError as DbIntegrityError
from sqlalchemy.orm import InstrumentedAttribute, Session

from registry.domain.errors import AdapterNotFound, Conflict, Forbidden, InvalidInput, NotFound, QuotaExceeded
from registry.domain.schemas import (
    ACTIVE_JOB_STATUSES,
    ORGS_PER_USER,
    InvitationInfo,
    MemberInfo,
    OrganizationInfo,
    Ref,
    check_name,
    check_new_name,
    check_text,
)
from registry.domain.words import counted
from registry.services import invitations as invites
from registry.services.invitations import InvitationPolicy
from registry.services.job_endings import cancel_jobs_of
from registry.services.moves import move_owner
from registry.services.tokens import ROLES, Principal, Role, retired_refusal, retirement, scope_hint
from registry.services.webhooks import pause_webhooks_of
from registry.store import models as m
from registry.store.database import Database

Visibility = Literal["public", "private"]
VISIBILITIES: tuple[Visibility, ...] = get_args(Visibility)
MAX_MEMBERS = 1000
#: The most alias names one organisation protects.
MAX_PROTECTED_ALIASES = 64
#: The window of the daily part of VERA_ORGS_PER_USER.
ORG_CHANGES_WINDOW = timedelta(hours=24)


def check_visibility(value: str) -> Visibility:
    if value not in VISIBILITIES:
        raise InvalidInput(f"visibility must be public or private, got {value!r}.")
    return value


def readable_clause(viewer: Principal | None) -> ColumnElement[bool]:
    """A condition on ``adapters`` that holds for the adapters ``viewer`` may read (None: every adapter)."""
    owners = viewer.readable_owners() if viewer is not None else None
    if owners is None:
        return true()
    public = m.Adapter.visibility == "public"
    return or_(public, m.Adapter.owner.in_(sorted(owners))) if owners else public


def readable_versions(viewer: Principal | None) -> Select[Any]:
    """The ids of the versions ``viewer`` may read (of every version for None or an admin)."""
    query = select(m.AdapterVersion.id)
    if viewer is not None and viewer.readable_owners() is not None:
        query = query.join(m.Adapter, m.Adapter.id == m.AdapterVersion.adapter_id).where(readable_clause(viewer))
    return query


def shown_to(viewer: Principal | None, uses: InstrumentedAttribute[int], used: InstrumentedAttribute[int]
             ) -> ColumnElement[bool]:
    """For registry-wide things that versions use (base models, projections; ``uses`` is the versions' column that
    points at ``used``): those that ``viewer`` may see, namely those with a version it reads, or with none at all
    (declared, or left over), so that a private publish shows neither its base model nor its projection's seed."""
    if viewer is None or viewer.readable_owners() is None:
        return true()
    users = select(m.AdapterVersion.id).where(uses == used)
    return or_(users.where(m.AdapterVersion.id.in_(readable_versions(viewer))).exists(), ~users.exists())


#: The most of an owner's adapter names a near miss is matched against (its first letter, its length within 3):
#: every 404 of an adapter pays for it, so a few milliseconds at most (10,000 names of any kind took 0.3-4.7 s: a
#: reviewer's, session 38).
MAX_NAMES_MATCHED = 50


def not_found(owner: str, name: str) -> AdapterNotFound:
    """The error for an adapter that does not exist, or that the caller may not see (one message for both)."""
    return AdapterNotFound(f"No adapter {owner}/{name}; `vera ls --owner {owner}` lists that owner's.",
                           adapter=(owner, name))


def require_readable(s: Session, viewer: Principal | None, ref: Ref | str, *, missing_too: bool = False) -> None:
    """Raise the not-found error when ``viewer`` may not read ``ref``'s adapter (a missing one too with
    ``missing_too``; otherwise it is left to the lookup that follows, which says what exactly is missing)."""
    if viewer is None or viewer.readable_owners() is None:  # nothing to check: no reference parsed
        return
    ref = Ref.parse(ref) if isinstance(ref, str) else ref
    _require_readable(s, viewer, ref.owner, ref.name, missing_too=missing_too)


def _require_readable(s: Session, viewer: Principal | None, owner: str, name: str, *, missing_too: bool) -> None:
    if viewer is None or viewer.readable_owners() is None:  # the local user, an admin: every adapter
        return
    visibility = s.scalar(select(m.Adapter.visibility).where(m.Adapter.owner == owner, m.Adapter.name == name))
    if (visibility is None and missing_too) or (visibility is not None and not viewer.can_read(owner, visibility)):
        raise not_found(owner, name)


class Access:
    """Organisations, their members and invitations, and adapters' visibility: each method one transaction,
    audited."""

    def __init__(self, db: Database, invitations: InvitationPolicy | None = None,
                 orgs_per_user: int = ORGS_PER_USER) -> None:
        """``invitations``: whether adding a user invites them, and for how long (default: off, a user added is a
        member at once; registry.services.invitations). ``orgs_per_user`` (VERA_ORGS_PER_USER): how many
        organisations one user may have created that still exist, and how many times in 24 hours it may create or
        rename one (0: only registry administrators create organisations), since each organisation is another
        storage quota and job queue, and a renamed name is retired: without it one ordinary token stored four times
        its quota through organisations of its own, and retired any user name nobody had taken yet (an outsider's
        findings, session 43)."""
        if orgs_per_user < 0:
            raise ValueError(f"orgs_per_user must be 0 or more, got {orgs_per_user}.")
        self.db, self.orgs_per_user = db, orgs_per_user
        self.invitation_policy = invitations or InvitationPolicy()
        self.leftovers = invites.Leftovers()  # with invitations off: whether any is still pending

    def close_name(self, owner: str, name: str, viewer: Principal | None) -> str | None:
        """The name of one of ``owner``'s adapters that ``viewer`` may read and that ``name`` is a near miss of
        (`you/polarty` for you/polarity: a newcomer's walk, session 38), or None. Only readable names are looked at,
        so the answer is the same whether ``name`` is a private adapter or none (the not-found message's rule)."""
        if not name:
            return None
        with self.db.session() as s:  # a near miss keeps its first letter and about its length: a few names to match
            names = list(s.scalars(select(m.Adapter.name).where(
                m.Adapter.owner == owner, readable_clause(viewer), m.Adapter.name.startswith(name[0], autoescape=True),
                func.length(m.Adapter.name).between(len(name) - 3, len(name) + 3))
                .order_by(m.Adapter.name).limit(MAX_NAMES_MATCHED)))
        close = difflib.get_close_matches(name, [n for n in names if n != name], n=1, cutoff=0.75)
        return close[0] if close else None

    def check_readable(self, viewer: Principal | None, *refs: Ref | str) -> None:
        """AdapterNotFound for the first of ``refs`` that is missing or that ``viewer`` may not read (in order, so
        that which one is named does not tell the two apart)."""
        with self.db.session() as s:
            for ref in refs:
                require_readable(s, viewer, ref, missing_too=True)

    def check_readable_names(self, viewer: Principal, owner: str, name: str, *, missing_too: bool = False) -> None:
        """Like check_readable, for an owner and name as a path gives them (not validated: a name that cannot
        exist is simply not found here); ``missing_too`` raises for a missing adapter as well."""
        with self.db.session() as s:
            _require_readable(s, viewer, owner, name, missing_too=missing_too)

    def create_organization(self, name: str, *, creator: str, description: str = "",
                            revive: bool = False, bounded: bool = True, admin: bool = False) -> OrganizationInfo:
        """A new organisation; ``creator`` becomes its first admin. Its name must not be an owner already in use
        (users and organisations share the namespace adapters are published under), nor the retired name of a
        deleted organisation (tokens.retirement) unless ``revive`` (a registry admin's choice: the new
        organisation's members then see what the old one left). ``bounded`` (all but registry admins): refused
        (QuotaExceeded) past orgs_per_user; ``admin``: the creator's token is an admin one limited to some owners
        (the refusal says to use one without the limit)."""
        check_new_name(name, "Organisation name")
        check_text(description, "description", max_length=2000, multiline=True)
        with self.db.session() as s:
            _refuse_taken(s, name, user=creator, asker=creator, revive=revive,
                          how=f"`vera org create {name}` with an admin token")
            if bounded:
                self._refuse_past_limit(s, creator, f"create {name}", admin=admin)
            org = m.Organization(name=name, description=description, created_by=creator)
            org.members.append(m.Membership(member=creator, role="admin", added_by=creator))
            s.add(org)
            s.add(m.AuditEvent(actor=creator, action="org-create", target=name, detail={}))
            s.flush()
            return _org_info(s, org)

    def organization(self, name: str, viewer: Principal | None = None) -> OrganizationInfo:
        """An organisation with its members (members and admins only: to anyone else it does not exist)."""
        with self.db.session() as s:
            org = _visible_org(s, name, viewer)
            _refuse_outside_limit(viewer, name, "read it")
            return _org_info(s, org, invites.shown(s, org, viewer))

    def organizations(self, viewer: Principal | None = None, *, after: str | None = None,
                      limit: int | None = None) -> list[OrganizationInfo]:
        """The organisations ``viewer`` belongs to (every one for admins and the local user), within its token's
        limit, with the pending invitations of those ``viewer`` administers; by name, those after ``after``, at most
        ``limit`` (None: all)."""
        query = select(m.Organization).order_by(m.Organization.name).limit(limit)
        if after is not None:
            query = query.where(m.Organization.name > after)
        if viewer is not None and not viewer.is_admin:
            query = query.where(m.Organization.name.in_(sorted(viewer.roles)))
        if viewer is not None and viewer.limited_to is not None:
            query = query.where(m.Organization.name.in_(sorted(viewer.limited_to)))
        with self.db.session() as s:
            orgs = list(s.scalars(query))
            invited = invites.of_organizations(s, [o.id for o in orgs if invites.shown_to(viewer, o.name)])
            return [_org_info(s, o, invited.get(o.id)) for o in orgs]

    def set_member(self, organization: str, member: str, role: str, *, viewer: Principal) -> OrganizationInfo:
        """Add ``member`` with ``role``, or change its role (organisation admins only). With invitations on
        (VERA_ORG_INVITATIONS), a user who is not a member is invited instead (or their invitation renewed, with
        this role), audited as org-invite; a member's role still changes at once. The local user of a registry
        without tokens adds at once all the same: there nobody but it can sign in, so no invitation could ever be
        accepted (whoever runs it holds the database; consent is asked where tokens are)."""
        check_name(member, "Member")
        if role not in ROLES:
            raise InvalidInput(f"role must be one of {', '.join(ROLES)}, got {role!r}.")
        with self.db.session() as s:
            org = _managed_org(s, organization, viewer)
            if s.scalar(select(m.Organization.id).where(m.Organization.name == member)) is not None:
                raise InvalidInput(f"{member!r} is an organisation; members are users (an organisation cannot be a "
                                   f"member of another: add its members to {organization} one by one).")
            current = next((x for x in org.members if x.member == member), None)
            if current is None and self.invitation_policy.required and not viewer.local:
                invites.invite(s, org, member, role, by=viewer.owner, policy=self.invitation_policy,
                               most=MAX_MEMBERS)
                s.add(m.AuditEvent(actor=viewer.owner, action="org-invite", target=organization,
                                   detail={"member": member, "role": role}))
                s.flush()
                return _org_info(s, org, invites.shown(s, org, viewer))
            if current is None:
                if len(org.members) >= MAX_MEMBERS:
                    raise InvalidInput(f"{organization} has {MAX_MEMBERS} members, the most an organisation takes.")
                org.members.append(m.Membership(member=member, role=role, added_by=viewer.owner))
                invites.drop(s, org, member)  # an invitation left from when invitations were on is moot
            elif current.role != role:
                _keep_an_admin(org, member, role)
                if current.role == "admin":
                    invites.withdraw_by(s, org, member, actor=viewer.owner, why="is no longer an admin here")
                current.role = role
                if role == "read":
                    pause_webhooks_of(s, organization, member, viewer.owner, "may no longer write here")
                    cancel_jobs_of(s, organization, member, viewer.owner, "now has only the read role there")
            s.add(m.AuditEvent(actor=viewer.owner, action="member-set", target=organization,
                               detail={"member": member, "role": role}))
            s.flush()
            return _org_info(s, org, invites.shown(s, org, viewer))

    def remove_member(self, organization: str, member: str, *, viewer: Principal) -> OrganizationInfo:
        """Remove ``member`` (an admin of the organisation removes anyone; a member may leave, removing themself);
        audited as member-remove."""
        with self.db.session() as s:
            leaving = member == viewer.owner and not viewer.anonymous and organization in viewer.roles
            org = _visible_org(s, organization, viewer) if leaving else _managed_org(s, organization, viewer)
            _refuse_outside_limit(viewer, organization, "leave it")  # (a leaked CI token leaves nothing elsewhere)
            current = next((x for x in org.members if x.member == member), None)
            if current is None:
                raise NotFound(f"{member} is not a member of {organization}.")
            _keep_an_admin(org, member, None)
            org.members.remove(current)
            if current.role == "admin":
                invites.withdraw_by(s, org, member, actor=viewer.owner, why="left the organisation")
            pause_webhooks_of(s, organization, member, viewer.owner, "left the organisation")
            cancel_jobs_of(s, organization, member, viewer.owner, "is no longer a member")
            s.add(m.AuditEvent(actor=viewer.owner, action="member-remove", target=organization,
                               detail={"member": member}))
            s.flush()
            return _org_info(s, org, invites.shown(s, org, viewer))

    def protect_alias(self, organization: str, alias: str, *, viewer: Principal) -> OrganizationInfo:
        """Protect ``alias`` in every adapter of the organisation (its admins only): from now on only its admins
        (and the registry's) point it at a version, remove it, or delete the version it names (enforced by
        moves.refuse_protected); audited as alias-protect. Protecting an alias already protected changes nothing."""
        from registry.services.lookup import LATEST  # lookup imports this module

        check_name(alias, "Alias")
        if alias == LATEST:
            raise InvalidInput("'latest' is moved by the registry itself (the newest version that is not yanked), "
                               "never by a member: protect a release alias such as 'prod' instead.")
        with self.db.session() as s:
            org = _managed_org(s, organization, viewer, "protect its aliases")
            _lock_org(s, org, organization)  # two at once take turns: the second finds it protected
            if alias not in {p.name for p in org.protected_aliases}:
                if len(org.protected_aliases) >= MAX_PROTECTED_ALIASES:
                    raise InvalidInput(f"{organization} protects {MAX_PROTECTED_ALIASES} aliases, the most an "
                                       "organisation may; unprotect one first (`vera org unprotect`).")
                org.protected_aliases.append(m.ProtectedAlias(name=alias, created_by=viewer.owner))
                s.add(m.AuditEvent(actor=viewer.owner, action="alias-protect", target=organization,
                                   detail={"alias": alias}))
                s.flush()
            return _org_info(s, org, invites.shown(s, org, viewer))

    def unprotect_alias(self, organization: str, alias: str, *, viewer: Principal) -> OrganizationInfo:
        """Let the organisation's writers move ``alias`` again (its admins only); audited as alias-unprotect.
        NotFound when it is not protected."""
        with self.db.session() as s:
            org = _managed_org(s, organization, viewer, "unprotect its aliases")
            _lock_org(s, org, organization)
            row = next((p for p in org.protected_aliases if p.name == alias), None)
            if row is None:
                protected = ", ".join(p.name for p in org.protected_aliases) or "none"
                raise NotFound(f"{organization} does not protect the alias {alias!r} (it protects: {protected}).")
            org.protected_aliases.remove(row)
            s.add(m.AuditEvent(actor=viewer.owner, action="alias-unprotect", target=organization,
                               detail={"alias": alias}))
            s.flush()
            return _org_info(s, org, invites.shown(s, org, viewer))

    def invitations(self, viewer: Principal, *, after: str | None = None,
                    limit: int | None = None) -> list[InvitationInfo]:
        """``viewer``'s pending invitations (a token limited to some owners: to those organisations only), by
        organisation: those after ``after``, at most ``limit`` (None: all)."""
        with self.db.session() as s:
            return invites.of_member(s, viewer.owner, viewer.limited_to, after=after, limit=limit)

    def pending_invitations(self, viewer: Principal) -> int:
        """How many invitations wait for ``viewer``'s answer (as ``invitations`` lists them): one query; with
        invitations off, none while none is pending for anyone (invitations.Leftovers), since none is sent then."""
        if self.invitation_policy.required:
            with self.db.session() as s:
                return invites.count_of_member(s, viewer.owner, viewer.limited_to)
        if self.leftovers.none_pending():
            return 0
        with self.db.session() as s:
            return self.leftovers.count(s, viewer.owner, viewer.limited_to)

    def accept_invitation(self, organization: str, *, viewer: Principal) -> OrganizationInfo:
        """``viewer`` joins ``organization`` with the role they were invited to, which takes their invitation;
        audited as org-join. NotFound when none is pending (never sent, expired, answered or cancelled; or to an
        organisation outside the token's limit), as for an organisation that does not exist."""
        with self.db.session() as s:
            org, invitation = self._answer(s, organization, viewer)
            current = next((x for x in org.members if x.member == viewer.owner), None)
            if current is None:  # (a member already, added meanwhile without it: their role stays)
                if len(org.members) >= MAX_MEMBERS:
                    raise InvalidInput(f"{organization} has {MAX_MEMBERS} members, the most an organisation takes; "
                                       "ask its admins to make room.")
                org.members.append(current := m.Membership(member=viewer.owner, role=invitation.role,
                                                           added_by=invitation.invited_by))
            s.add(m.AuditEvent(actor=viewer.owner, action="org-join", target=organization,
                               detail={"role": current.role, "invited_by": invitation.invited_by}))
            s.flush()
            return _org_info(s, org, invites.shown(s, org, viewer, role=current.role))

    def decline_invitation(self, organization: str, *, viewer: Principal) -> None:
        """``viewer`` declines their invitation to ``organization``; audited as org-decline. NotFound as for
        ``accept_invitation``."""
        with self.db.session() as s:
            _, invitation = self._answer(s, organization, viewer)
            s.add(m.AuditEvent(actor=viewer.owner, action="org-decline", target=organization,
                               detail={"role": invitation.role, "invited_by": invitation.invited_by}))

    def cancel_invitation(self, organization: str, member: str, *, viewer: Principal) -> OrganizationInfo:
        """Cancel ``member``'s pending invitation (organisation admins only); audited as org-invite-cancel."""
        with self.db.session() as s:
            org = _managed_org(s, organization, viewer)
            invitation = invites.take(s, org, member)
            if invitation is None:
                raise NotFound(f"No pending invitation to {organization} for {member!r}; `vera org show "
                               f"{organization}` lists its invitations.")
            s.add(m.AuditEvent(actor=viewer.owner, action="org-invite-cancel", target=organization,
                               detail={"member": member, "role": invitation.role}))
            s.flush()
            return _org_info(s, org, invites.shown(s, org, viewer))

    def _answer(self, s: Session, organization: str, viewer: Principal) -> tuple[m.Organization, InvitationInfo]:
        """The organisation and ``viewer``'s pending invitation to it, taken (the answer, accept or decline, is given
        once); NotFound when there is none."""
        org = s.scalar(select(m.Organization).where(m.Organization.name == organization))
        within = not viewer.anonymous and (viewer.limited_to is None or organization in viewer.limited_to)
        invitation = invites.take(s, org, viewer.owner) if org is not None and within else None
        if org is None or invitation is None:
            # a token limited to other owners sees no invitation outside its limit: said (whether one exists or not,
            # so nothing is told), where it read as if there were none (an outsider's finding, session 43)
            limit = "" if viewer.limited_to is None or organization in viewer.limited_to else (
                f" This token is limited to {', '.join(sorted(viewer.limited_to)[:10]) or 'no owner'}, so it answers "
                f"no invitation to {organization!r}: answer with a token without that limit.")
            raise NotFound(f"No pending invitation to {organization!r} for {viewer.owner}; `vera org invitations` "
                           f"lists yours. An invitation expires after {self.invitation_policy.lasts()}, and goes once "
                           f"answered or cancelled; an admin of {organization} may invite you again.{limit}")
        return org, invitation

    def delete_organization(self, name: str, *, viewer: Principal) -> None:
        """Delete an organisation (its admins, with publish scope, and the registry's admins), refused (Conflict)
        while it owns anything that would be left without an owner: adapters, queued or running jobs, webhooks. Its
        memberships and the storage quota an admin set for it go with it; its name is retired (``tokens.retirement``):
        no user or new organisation takes it, except one a registry admin revives, when it left a history (jobs, or
        events of adapters under its name). Audited as org-delete (target: the name, as org-create)."""
        with self.db.session() as s:
            org = _visible_org(s, name, viewer)
            if not viewer.can_manage(name):
                raise Forbidden(_may_not(name, viewer, "delete"))
            _lock_org(s, org, name)
            _refuse_while_owning(s, name)
            members = {x.member: x.role for x in org.members}
            # Old names of adapters that moved away (adapter_moves) are dropped, not a reason to refuse: the adapters
            # they point to live under other owners and keep working; the records only redirect reads of the old
            # name and refuse publishes to it. Kept, they would hand the redirects and refusals to whoever takes the
            # name next; refusing would leave no way out (only moving an adapter back onto the name clears one, and
            # that adapter would then be the organisation's). version_counters stay: owner/name:N never names two
            # byte strings, whoever owns the name later.
            old_names = _rows(s, delete(m.AdapterMove).where(m.AdapterMove.owner == name))
            quota = _rows(s, delete(m.OwnerQuota).where(m.OwnerQuota.owner == name))
            history = _history(s, name)
            s.delete(org)  # its memberships with it (ON DELETE CASCADE, and the relationship's delete-orphan)
            s.add(m.AuditEvent(actor=viewer.owner, action="org-delete", target=name, detail={
                "members": members, "old_names": old_names, "quota": bool(quota), "retired": bool(history)}))
            s.flush()

    def rename_organization(self, name: str, new_name: str, *, viewer: Principal,
                            revive: bool = False) -> OrganizationInfo:
        """Rename an organisation (its admins, with publish scope, and the registry's admins), as the Hub and GitHub
        rename one: its members, invitations, adapters (each moved to the same name under ``new_name``, with every
        version, alias, tag and download: moves.move_owner), ended jobs, webhooks, quota and the tokens limited to
        it follow. Its old name is retired (tokens.retirement): no user or new organisation takes it, and its adapters'
        old names answer with their new ones, as after a move. ``new_name`` must be a valid owner name that nobody
        has, nor a retired one unless ``revive`` (a registry admin's choice, as for create_organization). Refused
        (Conflict) while it has queued or running jobs: their workers publish to the old name. Audited as
        org-rename (``detail``: ``from``, ``to``) on both names, and as a ``move`` of each adapter."""
        check_new_name(new_name, "New organisation name")
        if new_name == name:
            raise InvalidInput(f"{name} is already called {new_name}; give the name it should have now.")
        try:
            with self.db.session() as s:
                org = _visible_org(s, name, viewer)
                if not viewer.can_manage(name):
                    raise Forbidden(_may_not(name, viewer, "rename"))
                # PostgreSQL: its adapters' rows first, then its own, in the order a publish or move locks them (the
                # adapter, then its owner), so that neither waits for the other's second lock
                s.execute(select(m.Adapter.id).where(m.Adapter.owner == name).with_for_update())
                _lock_org(s, org, name)
                _refuse_taken(s, new_name, user=None, asker=viewer.owner, revive=revive,
                              how=f"`vera org rename {name} {new_name}` with an admin token")
                _refuse_while_training(s, name, new_name)
                if not viewer.is_registry_admin:
                    self._refuse_past_limit(s, viewer.owner, f"rename {name}", existing=False, admin=viewer.is_admin)
                history = _history(s, name)
                members = s.scalars(select(m.Membership.member).where(m.Membership.organization_id == org.id))
                move_owner(s, name, new_name, actor=viewer.owner, told=frozenset(members))
                org.name = new_name
                # the old name retired as a deleted organisation's is: when it left a history (an organisation
                # that owned nothing, renamed, leaves its name free, or renaming one would retire names at will)
                names: dict[str, object] = {"from": name, "to": new_name, "retired": history}
                for target in (new_name, name):  # each name's events (and tokens.retirement) hear of it
                    s.add(m.AuditEvent(actor=viewer.owner, action="org-rename", target=target, detail=names))
                s.flush()
                return _org_info(s, org, invites.shown(s, org, viewer))
        except DbIntegrityError as exc:  # a concurrent create took the name between the check and the write
            raise Conflict(f"The owner name {new_name!r} was taken while {name} was renamed; nothing was renamed. "
                           "Choose another name.") from exc

    def _refuse_past_limit(self, s: Session, user: str, doing: str, *, existing: bool = True,
                           admin: bool = False) -> None:
        """QuotaExceeded when ``user`` may not ``doing`` (``create NAME`` or ``rename NAME``) under orgs_per_user: it
        created that many organisations that still exist (``existing``: for a creation), or created and renamed
        organisations that many times in the last 24 hours (its audit events); ``admin``: the caller holds an admin
        token limited to some owners (told to use an unlimited one). Two requests of one user take turns here (a
        lock until the transaction ends): six creations at once made thirteen organisations past a limit of ten (a
        re-check's finding, session 43)."""
        most = self.orgs_per_user
        ask = ("use an admin token without an owner limit" if admin else
               "ask a registry administrator (an admin token without an owner limit: no limit applies)")
        if most == 0:
            what = doing.split(" ", 1)[1]
            for_you = (f" to create {what} and make you its admin (`vera org add {what} YOU --role admin`)"
                       if doing.startswith("create") else f" to rename {what}")
            raise QuotaExceeded("On this registry only registry administrators create and rename organisations "
                                "(VERA_ORGS_PER_USER=0); nothing was done. "
                                + ("Use an admin token without an owner limit." if admin else f"Ask one{for_you}."))
        _one_at_a_time(s, f"vera-organisations-of:{user}")
        created = s.scalar(select(func.count()).select_from(m.Organization)
                           .where(m.Organization.created_by == user)) or 0 if existing else 0
        rows = s.execute(select(m.AuditEvent.action, func.count(), func.min(m.AuditEvent.at))
                         .where(m.AuditEvent.actor == user, m.AuditEvent.at >= m.utcnow() - ORG_CHANGES_WINDOW,
                                m.AuditEvent.action.in_(("org-create", "org-rename")))
                         .group_by(m.AuditEvent.action)).all()
        # a rename is audited on both its names: two events
        changes = sum(count // 2 if action == "org-rename" else count for action, count, _ in rows)
        problems = []
        if created >= most:
            problems.append(f"has created {counted(created, 'organisation')} that still exist")
        if changes >= most:
            problems.append(f"has created or renamed organisations {counted(changes, 'time')} in the last 24 hours")
        if not problems:
            return
        remedies = []
        if created >= most:
            remedies.append("delete one it no longer needs (`vera org delete NAME`, once it owns nothing)")
        if changes >= most:  # (to the minute, rounded up: at that minute one more is allowed)
            free = (min(at for _, _, at in rows).replace(tzinfo=UTC) + ORG_CHANGES_WINDOW
                    + timedelta(seconds=59)).replace(second=0, microsecond=0)
            remedies.append(f"{'then ' if remedies else ''}try again from {free:%Y-%m-%d %H:%M} UTC")
        raise QuotaExceeded(
            f"{user} {' and '.join(problems)}, the most one user may (VERA_ORGS_PER_USER={most}: each organisation "
            "has a storage quota and a job queue of its own, and a renamed one's old name is retired for good); "
            f"nothing was done. To {doing}, {', '.join(remedies)}, or {ask}.")


def _one_at_a_time(s: Session, key: str) -> None:
    """Hold a lock named ``key`` until the transaction ends, so that two transactions that check a limit and then
    write take turns: PostgreSQL's transaction-scoped advisory lock; SQLite's write lock (a write that changes
    nothing takes it: one writer at a time), after which reads see every commit before it."""
    if s.get_bind().dialect.name == "postgresql":
        s.execute(select(func.pg_advisory_xact_lock(func.hashtext(key))))
    else:
        s.execute(update(m.Organization).where(false()).values(name=m.Organization.name)
                  .execution_options(synchronize_session=False))


def _visible_org(s: Session, name: str, viewer: Principal | None) -> m.Organization:
    org = s.scalar(select(m.Organization).where(m.Organization.name == name))
    if org is None or not (viewer is None or viewer.is_admin or name in viewer.roles):
        raise _org_not_found(name)
    return org


def _rows(s: Session, statement: Executable) -> int:
    """How many rows an UPDATE or DELETE changed."""
    return cast("CursorResult[Any]", s.execute(statement)).rowcount


def _org_not_found(name: str) -> NotFound:
    """The error for an organisation that does not exist, or that the caller may not see (one message for both)."""
    return NotFound(f"No organisation {name!r} that you belong to; `vera org ls` lists yours.")


def _managed_org(s: Session, name: str, viewer: Principal, doing: str = "manage its members") -> m.Organization:
    """The organisation ``viewer`` administers; NotFound if it may not see it, Forbidden if it may not manage it
    (``doing``: what it asked to do, for the message)."""
    org = _visible_org(s, name, viewer)
    if not viewer.can_manage(name):
        _refuse_outside_limit(viewer, name, doing)  # the limit, not the role, refuses
        raise Forbidden(f"Only admins of {name} {doing}; your role is {viewer.roles.get(name, 'none')!r}.")
    return org


def _refuse_outside_limit(viewer: Principal | None, name: str, doing: str) -> None:
    """Forbidden when ``viewer``'s token is limited to owners that leave out organisation ``name`` (a member's token:
    the organisation exists for them, the token does not reach it); ``doing``: what it asked to do."""
    if viewer is not None and viewer.limited_to is not None and name not in viewer.limited_to:
        raise Forbidden(f"This token is limited to {sorted(viewer.limited_to)}, which leaves out {name}; use a "
                        f"token that reaches {name} to {doing}.")


def _lock_org(s: Session, org: m.Organization, name: str) -> None:
    """Lock the organisation's row for the rest of the transaction (SQLite: the database's write lock, so that no
    publish lands between the checks that follow and the change; PostgreSQL: the row's, so that two deletes or
    renames, or one and a member change or publish, take turns), then read it again."""
    if not _rows(s, update(m.Organization).where(m.Organization.id == org.id).values(name=m.Organization.name)):
        raise _org_not_found(name)  # deleted meanwhile
    s.refresh(org)
    if org.name != name:  # renamed meanwhile
        raise _org_not_found(name)


def _refuse_taken(s: Session, name: str, *, user: str | None, asker: str, revive: bool, how: str) -> None:
    """Conflict when owner name ``name`` is an organisation's or a user's (``user``, or one with adapters or tokens
    under it, or a member or invitee of an organisation), or retired (tokens.retirement) unless ``revive`` (a registry
    admin's request); ``how``: the command a registry admin reruns to revive it. A retired name that an organisation
    was renamed away from is said to be so; its new name only to a registry admin or a member of it (``asker``): an
    outsider trying names learns nothing of a private organisation's new one."""
    taken = s.scalar(select(m.Organization.id).where(m.Organization.name == name)) is not None
    # a user's: one with adapters or tokens, or one an organisation counts as a member or has invited (a user whose
    # token comes later: an organisation of that name would leave them none; an outsider's finding)
    used = name == user or bool(s.scalar(select(or_(
        exists().where(m.Adapter.owner == name), exists().where(m.AccessToken.owner == name),
        exists().where(m.Membership.member == name), exists().where(m.OrgInvitation.member == name)))))
    if taken or used:
        raise Conflict(f"The owner name {name!r} is taken (by {'an organisation' if taken else 'a user'}); "
                       "choose another name for the organisation.")
    ended, renamed = (False, None) if revive else retirement(s, name)
    if ended:
        told = renamed is not None and s.scalar(select(m.Membership.member).join(m.Organization).where(
            m.Organization.name == renamed, m.Membership.member == asker)) is not None
        raise retired_refusal(name, revive=f" (a registry admin may revive it, history and all: {how})",
                              renamed=renamed if told or renamed is None else "")
    if not revive and _a_users_past(s, name):
        raise Conflict(f"The owner name {name!r} was a user's, whose history the registry keeps (jobs, adapters' "
                       f"version numbers and events, tokens' events), which the members of an organisation of that "
                       f"name would read; choose another name (a registry admin may take it, history and all: "
                       f"{how}).")


def _a_users_past(s: Session, name: str) -> bool:
    """Whether a user who holds nothing under ``name`` any more (no adapters, no tokens: purged) left a history there
    that an organisation of that name would show its members (an outsider's finding): jobs owned by it, version
    numbers of deleted adapters, events about its adapters or its tokens."""
    return bool(s.scalar(select(or_(
        exists().where(m.Job.owner == name), exists().where(m.VersionCounter.owner == name),
        exists().where(m.AuditEvent.target == name, m.AuditEvent.action.startswith("token-")),
        exists().where(m.AuditEvent.target.startswith(f"{name}/", autoescape=True))))))


def _refuse_while_training(s: Session, name: str, new_name: str) -> None:
    """Conflict while organisation ``name`` has queued or running jobs: their workers publish to the old name."""
    jobs = _active_jobs(s, name)
    if jobs:
        raise Conflict(f"{name} has {counted(len(jobs), 'queued or running job')} ({_listed([f'#{j}' for j in jobs])}),"
                       f" which would publish under its old name: nothing was renamed. Wait for them to end, or "
                       f"cancel them (`vera job cancel ID`; a running one ends after the training step it is on); "
                       f"then rename {name} again (`vera org rename {name} {new_name}`).")


def _may_not(name: str, viewer: Principal, verb: str) -> str:
    """The refusal of a member who may not ``verb`` (delete, rename) ``name``: who may, and why the caller is not
    among them."""
    role = viewer.roles.get(name)
    if viewer.limited_to is not None and name not in viewer.limited_to:
        why = f"this token is limited to {', '.join(sorted(viewer.limited_to))}"
    elif role == "admin":
        why = f"your token has no publish scope ({scope_hint('publish', viewer.owner)})"
    else:
        why = (f"your role there is {role or 'none'!r} (an admin of {name} can change it: `vera org add {name} "
               f"{viewer.owner} --role admin`)")
    return f"Only the admins of {name} (with a token of publish scope) and the registry's admins may {verb} it; {why}."


#: How many names of each kind a refusal lists before it says how many more there are.
_NAMED = 5


def _listed(items: list[str]) -> str:
    shown = ", ".join(items[:_NAMED])
    return shown + (f" and {len(items) - _NAMED:,} more" if len(items) > _NAMED else "")


def _refuse_while_owning(s: Session, name: str) -> None:
    """Conflict when organisation ``name`` owns what would be left without an owner, saying what and how to clear
    each: its adapters (deleted or moved), its queued and running jobs (cancelled), its webhooks (removed)."""
    adapters = list(s.scalars(select(m.Adapter.name).where(m.Adapter.owner == name).order_by(m.Adapter.name)))
    jobs = _active_jobs(s, name)
    hooks = list(s.scalars(select(m.Webhook.id).where(m.Webhook.owner == name).order_by(m.Webhook.id)))
    owned, fixes = [], []
    if adapters:
        owned.append(f"{counted(len(adapters), 'adapter')} ({_listed([f'{name}/{a}' for a in adapters])})")
        fixes.append(f"delete or move each adapter (`vera delete {name}/NAME --all`, `vera mv {name}/NAME "
                     "OWNER/NAME`)")
    if jobs:
        owned.append(f"{counted(len(jobs), 'queued or running job')} ({_listed([f'#{j}' for j in jobs])})")
        fixes.append("cancel each job (`vera job cancel ID`; a running one ends after the training step it is on)")
    if hooks:
        owned.append(f"{counted(len(hooks), 'webhook')} ({_listed([f'#{h}' for h in hooks])})")
        fixes.append("remove each webhook (`vera webhook rm ID`)")
    if owned:
        raise Conflict(f"{name} still owns {_joined(owned)}, which would be left without an owner: nothing was "
                       f"deleted. First {_joined(fixes)}; then delete {name} again (`vera org delete {name}`).")


def _history(s: Session, name: str) -> bool:
    """Whether organisation ``name`` left a history a new owner of the name must not see: jobs, or events of
    adapters under its name (what retires its name when it is deleted or renamed)."""
    return bool(s.scalar(select(or_(exists().where(m.Job.owner == name),
                                    exists().where(m.AuditEvent.target.startswith(f"{name}/", autoescape=True))))))


def _active_jobs(s: Session, owner: str) -> list[int]:
    """The ids of ``owner``'s queued and running jobs, in order."""
    return list(s.scalars(select(m.Job.id).where(m.Job.owner == owner, m.Job.status.in_(ACTIVE_JOB_STATUSES))
                          .order_by(m.Job.id)))


def _joined(parts: list[str]) -> str:
    """['a'] -> 'a'; ['a', 'b', 'c'] -> 'a, b and c'."""
    return parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"


def _keep_an_admin(org: m.Organization, member: str, new_role: Role | str | None) -> None:
    """Refuse a change that would leave the organisation without an admin."""
    admins = {x.member for x in org.members if x.role == "admin"}
    if admins == {member} and new_role != "admin":
        raise Conflict(f"{member} is the last admin of {org.name}; make another member admin first.")


def _org_info(s: Session, org: m.Organization, invitations: list[InvitationInfo] | None = None) -> OrganizationInfo:
    """``org`` with its members, and the pending ``invitations`` shown to the caller (None: none)."""
    names = [x.member for x in org.members]
    with_tokens = set(s.scalars(select(m.AccessToken.owner).where(m.AccessToken.owner.in_(names)).distinct()))
    return OrganizationInfo(name=org.name, description=org.description, created_by=org.created_by,
                            created_at=org.created_at,
                            members=[MemberInfo(member=x.member, role=cast(Role, x.role), added_at=x.added_at,
                                                has_token=x.member in with_tokens)
                                     for x in sorted(org.members, key=lambda x: x.member)],  # (a member just
                            # added came last in the answer that added it, by name in the next: an operator's walk)
                            invitations=invitations or [],
                            protected_aliases=sorted(p.name for p in org.protected_aliases))

"""Invitations to organisations (VERA_ORG_INVITATIONS): with them on, an organisation's admin who adds a user who is
not a member invites them instead, and the user becomes a member, with the invited role, only by accepting before the
invitation expires (VERA_ORG_INVITATION_DAYS), as on GitHub and the HuggingFace Hub. Off (the default), a user added
is a member at once, as before invitations existed.

One row per organisation and user in org_invitations (migration 0019); inviting again updates it (role, inviter and a
new expiry). registry.services.access decides who may invite, accept, decline and cancel, and audits each; these
helpers work inside its transaction (they flush, never commit). An expired invitation is no longer pending: it is not
listed, counted or accepted, and goes at its organisation's next invitation.

Off, nothing sends an invitation, so those left from when it was on only go (answered, cancelled, expired); they can
still be answered, so a user's count (`GET /api/v1/whoami`, on every page of the dashboard) still holds them. Once
none is pending for anyone, ``Leftovers`` answers 0 without a query for a while.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import ColumnElement, Select, delete, exists, func, select
from sqlalchemy.orm import Session

from registry.domain.errors import InvalidInput
from registry.domain.schemas import InvitationInfo
from registry.domain.words import counted
from registry.services.tokens import Principal
from registry.store import models as m
from registry.store.database import upsert


@dataclass(frozen=True)
class InvitationPolicy:
    """Whether adding a user who is not a member invites them (``required``, VERA_ORG_INVITATIONS; False: they are a
    member at once), and how long an invitation waits for its answer (``lifetime``, VERA_ORG_INVITATION_DAYS)."""

    required: bool = False
    lifetime: timedelta = timedelta(days=14)

    def __post_init__(self) -> None:
        if self.lifetime <= timedelta(0):
            raise ValueError(f"An invitation must stay open for some time; got a lifetime of {self.lifetime}.")

    def lasts(self) -> str:
        """The lifetime in words, for messages: '14 days', '12 hours'."""
        days = self.lifetime / timedelta(days=1)
        return f"{days:g} days" if days >= 1 else f"{self.lifetime / timedelta(hours=1):g} hours"


def pending() -> ColumnElement[bool]:
    """The condition on org_invitations of those still waiting for an answer (not expired)."""
    return m.OrgInvitation.expires_at > m.utcnow()


def _rows(*where: ColumnElement[bool]) -> Select[m.OrgInvitation, str]:
    """Pending invitations with their organisation's name, in (organisation, member) order."""
    return (select(m.OrgInvitation, m.Organization.name).join(m.Organization)
            .where(pending(), *where).order_by(m.Organization.name, m.OrgInvitation.member))


def _info(row: m.OrgInvitation, organization: str) -> InvitationInfo:
    return InvitationInfo(organization=organization, member=row.member, role=row.role, invited_by=row.invited_by,
                          invited_at=row.invited_at, expires_at=row.expires_at)


def shown_to(viewer: Principal | None, name: str, role: str | None = None) -> bool:
    """Whether ``viewer`` is shown organisation ``name``'s pending invitations: its admins (``role``: the viewer's
    now, when it changed in this transaction) and the registry's; None is the registry itself."""
    return viewer is None or viewer.is_admin or (role or viewer.roles.get(name)) == "admin"


def shown(s: Session, org: m.Organization, viewer: Principal | None, role: str | None = None) -> list[InvitationInfo]:
    """``org``'s pending invitations, when ``viewer`` is shown them (``shown_to``); else none."""
    return of_organizations(s, [org.id]).get(org.id, []) if shown_to(viewer, org.name, role) else []


def of_organizations(s: Session, ids: Iterable[int]) -> dict[int, list[InvitationInfo]]:
    """The pending invitations of each organisation in ``ids`` (one query), by member."""
    found: dict[int, list[InvitationInfo]] = defaultdict(list)
    wanted = sorted(set(ids))
    if wanted:
        for row, name in s.execute(_rows(m.OrgInvitation.organization_id.in_(wanted))):
            found[row.organization_id].append(_info(row, name))
    return found


def _within(member: str, owners: frozenset[str] | None) -> list[ColumnElement[bool]]:
    """The conditions for ``member``'s invitations to organisations among ``owners`` (None: any)."""
    where = [m.OrgInvitation.member == member]
    if owners is not None:
        where.append(m.Organization.name.in_(sorted(owners)))
    return where


def of_member(s: Session, member: str, owners: frozenset[str] | None = None, *, after: str | None = None,
              limit: int | None = None) -> list[InvitationInfo]:
    """The pending invitations of ``member``, to organisations among ``owners`` (None: any), by organisation: those
    named after ``after``, at most ``limit`` (None: all)."""
    where = _within(member, owners) + ([m.Organization.name > after] if after is not None else [])
    return [_info(row, name) for row, name in s.execute(_rows(*where).limit(limit))]


def _counted(member: str, owners: frozenset[str] | None) -> Select[int]:
    """The count of ``member``'s pending invitations (to organisations among ``owners``; None: any): a search of
    ix_org_invitations_member, joined to organizations only to name those of ``owners``."""
    query = select(func.count()).select_from(m.OrgInvitation).where(pending(), m.OrgInvitation.member == member)
    if owners is not None:
        query = query.join(m.Organization).where(m.Organization.name.in_(sorted(owners)))
    return query


def count_of_member(s: Session, member: str, owners: frozenset[str] | None = None) -> int:
    """How many invitations of ``member`` are pending (to organisations among ``owners``; None: any): one query."""
    return s.scalar(_counted(member, owners)) or 0


class Leftovers:
    """With invitations off, whether any is still pending for anyone, as last seen: while none is, no new one
    appears (nothing sends one), so a user's count is 0 without a query. It is asked again after ``recheck_s`` all
    the same, for an invitation sent meanwhile by a process with the setting still on (replicas restarted one by one
    to turn it off); that bounds how long a count may lag behind such a process."""

    def __init__(self, recheck_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.recheck_s, self.clock = recheck_s, clock
        self._none_until: float | None = None  # the clock's time until which none is pending, as far as known

    def none_pending(self) -> bool:
        return self._none_until is not None and self.clock() < self._none_until

    def count(self, s: Session, member: str, owners: frozenset[str] | None = None) -> int:
        """``count_of_member``, asked with whether any invitation is pending for anyone: one statement."""
        count, anyone = s.execute(select(_counted(member, owners).scalar_subquery(), exists().where(pending()))).one()
        self._none_until = None if anyone else self.clock() + self.recheck_s
        return int(count or 0)


def invite(s: Session, org: m.Organization, member: str, role: str, *, by: str, policy: InvitationPolicy,
           most: int) -> None:
    """Invite ``member`` (no member yet) to ``org`` with ``role``, or renew their invitation (its role, inviter and
    expiry): one UPSERT, so that two admins inviting the same user at once take turns. Members and pending
    invitations together are at most ``most``. The organisation's expired invitations go first."""
    waiting = s.scalar(select(func.count()).select_from(m.OrgInvitation).where(
        m.OrgInvitation.organization_id == org.id, m.OrgInvitation.member != member, pending())) or 0
    if len(org.members) + waiting >= most:
        waits = counted(waiting, "pending invitation")
        raise InvalidInput(f"{org.name} has {counted(len(org.members), 'member')} and {waits}, the most an "
                           f"organisation takes ({most:,} in all); cancel an invitation (`vera org uninvite "
                           f"{org.name} USER`) or remove a member first.")
    s.execute(delete(m.OrgInvitation).where(m.OrgInvitation.organization_id == org.id, ~pending()))
    now = m.utcnow()
    upsert(s, m.OrgInvitation.__table__, {"organization_id": org.id, "member": member, "role": role,
                                          "invited_by": by[:64], "invited_at": now,
                                          "expires_at": now + policy.lifetime}, ["organization_id", "member"])


def take(s: Session, org: m.Organization, member: str) -> InvitationInfo | None:
    """Remove ``member``'s pending invitation to ``org`` and return it (None: there is none). One DELETE ...
    RETURNING: of two answers at once (an accept and a decline, an accept and a cancel), one takes it and the other
    finds none."""
    taken = s.scalars(delete(m.OrgInvitation).where(
        m.OrgInvitation.organization_id == org.id, m.OrgInvitation.member == member, pending())
        .returning(m.OrgInvitation)).first()
    return _info(taken, org.name) if taken is not None else None


def withdraw_by(s: Session, org: m.Organization, inviter: str, *, actor: str, why: str) -> list[str]:
    """Withdraw the pending invitations to ``org`` that ``inviter`` made (or last renewed), now that ``inviter`` is no
    longer an admin there (``why``): an invitation is an admin's act, and should not outlive the admin's rights (an
    outsider's finding: one removed admin's invitations let accomplices in afterwards). Each is audited as
    org-invite-cancel (``detail.reason``); the users invited, returned, may be invited again by an admin."""
    withdrawn = list(s.scalars(delete(m.OrgInvitation).where(
        m.OrgInvitation.organization_id == org.id, m.OrgInvitation.invited_by == inviter[:64], pending())
        .returning(m.OrgInvitation)))
    for row in withdrawn:
        s.add(m.AuditEvent(actor=actor[:64], action="org-invite-cancel", target=org.name, detail={
            "member": row.member, "role": row.role, "reason": f"withdrawn: {inviter}, who invited them, {why}"}))
    return sorted(row.member for row in withdrawn)


def drop(s: Session, org: m.Organization, member: str) -> None:
    """Remove ``member``'s invitation to ``org``, pending or expired (they became a member without it)."""
    s.execute(delete(m.OrgInvitation).where(m.OrgInvitation.organization_id == org.id,
                                            m.OrgInvitation.member == member))

"""Storage quotas per owner namespace (a user or an organisation): the stored bytes of the versions of its adapters
(each version's ``stored_bytes``: its d and b vectors and head, as `vera ls` shows them; the frozen projections are
shared registry-wide and regenerated from seeds, so they count for nobody). A publish that would take an owner over
its quota is refused (403 ``quota_exceeded``), leaving nothing stored (registry.services.publishing checks bytes
worth sparing before it stores them), and so is a fine-tune job whose adapter's vectors (sized from the base model's
config) would not fit, and a transfer into an owner without room; deleting versions frees room at once. Yanked
versions still count: their bytes are still served.

An owner's quota is, first to last:

1. the one an admin set through the API (`vera quota OWNER 50GiB`, PUT /api/v1/owners/{owner}/quota; ``none``
   there: no quota for that owner), kept in ``owner_quotas`` (migration 0018) until it is cleared;
2. its entry in ``VERA_OWNER_QUOTAS`` (a JSON object, owner -> size, ``null`` for none);
3. ``VERA_OWNER_QUOTA_BYTES``, every owner's (unset: none).

Sizes are bytes, or a number with a unit: ``50GB`` (10^9), ``50GiB`` (2^30), ``1.5 TB``. A change of quota holds
from the next publish; nothing stored is removed by a lower one. Two publishes racing may together pass a quota by one
version each: the check is made in each publish's transaction, not across them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import CursorResult, delete, exists, func, or_, select
from sqlalchemy.orm import Session

from registry.domain.errors import NotFound, QuotaExceeded
from registry.domain.schemas import OwnerUsage, QuotaSource
from registry.domain.words import size
from registry.store import models as m
from registry.store.database import Database, upsert


@dataclass(frozen=True)
class Quota:
    """An owner's quota (None: none) and where it comes from (None: nowhere; no quota)."""

    bytes: int | None
    source: QuotaSource | None
    set: m.OwnerQuota | None = None


@dataclass(frozen=True)
class Quotas:
    """The settings' quotas: ``per_owner`` first (None there: no quota), else ``default`` (None: no quota). A quota
    an admin set (``owner_quotas``) overrides both: ``of`` reads it."""

    default: int | None = None
    per_owner: Mapping[str, int | None] = field(default_factory=dict)

    def of(self, s: Session, owner: str) -> Quota:
        row = s.get(m.OwnerQuota, owner)
        if row is not None:
            return Quota(row.quota_bytes, "admin", row)
        if owner in self.per_owner:
            return Quota(self.per_owner[owner], "VERA_OWNER_QUOTAS")
        return Quota(self.default, None if self.default is None else "VERA_OWNER_QUOTA_BYTES")


def used(s: Session, owner: str) -> tuple[int, int, int]:
    """(adapters, versions, stored bytes) of ``owner``'s adapters."""
    versions, stored = s.execute(
        select(func.count(m.AdapterVersion.id), func.coalesce(func.sum(m.AdapterVersion.stored_bytes), 0))
        .join(m.Adapter, m.Adapter.id == m.AdapterVersion.adapter_id).where(m.Adapter.owner == owner)).one()
    adapters = s.scalar(select(func.count(m.Adapter.id)).where(m.Adapter.owner == owner)) or 0
    return int(adapters), int(versions), int(stored)


def held_by_jobs(s: Session, owner: str) -> int:
    """The bytes of the uploaded datasets that ``owner``'s queued and running jobs hold (each stored once): counted
    against its quota when it submits another (a job's dataset goes when the job ends)."""
    held = select(m.Blob.sha256, m.Blob.size).join(m.Job, m.Job.dataset_sha256 == m.Blob.sha256).where(
        m.Job.owner == owner, m.Job.status.in_(("queued", "running"))).distinct()
    return sum(size for _, size in s.execute(held))


def check_room(s: Session, quotas: Quotas, owner: str, adding: int | None, what: str, *,
               instead: str = "", at_least: bool = False) -> None:
    """QuotaExceeded when ``adding`` more bytes would take ``owner`` over its quota (``what``: what they are for;
    ``at_least``: that many or more, as a job's vectors without its head); ``adding`` None: when the owner has no
    room left at all. ``instead``: another way to make room, said first (a move: fewer versions of the adapter
    moved)."""
    quota = quotas.of(s, owner).bytes
    if quota is None:
        return
    stored = used(s, owner)[2]
    if adding is None and stored >= quota:
        said = f"{owner} stores {size(stored)}, all of its {size(quota)} quota: {what} would not fit."
    elif adding is not None and stored + adding > quota:
        said = (f"{owner} stores {size(stored)} of its {size(quota)} quota; {what} "
                f"({'at least ' if at_least else ''}{size(adding)}) would take it over.")
    else:
        return
    ask = f"ask the registry's admins to raise the quota (`vera quota {owner} SIZE`)"
    ways = [instead] if instead else []
    if stored:  # an owner that stores nothing has nothing to delete
        ways.append(f"delete versions {owner} no longer needs (`vera delete {owner}/NAME:N`, or `vera delete "
                    f"{owner}/NAME --all`)")
    told = ", ".join(ways) + ", or " + ask if ways else ask
    raise QuotaExceeded(f"{said} {told[0].upper() + told[1:]}.")


def require_known(s: Session, owner: str) -> None:
    """NotFound unless ``owner`` names a user (a token was made for it), an organisation, an owner of adapters, or
    an owner whose quota was set: a typo is said, not answered with zeros or given a quota."""
    if not s.scalar(select(or_(
            exists().where(m.AccessToken.owner == owner), exists().where(m.Organization.name == owner),
            exists().where(m.Adapter.owner == owner), exists().where(m.OwnerQuota.owner == owner)))):
        raise NotFound(f"No user or organisation is called {owner!r}: no token, organisation or adapter has that "
                       "name. Check the spelling (`vera org ls` lists your organisations).")


def _usage(s: Session, quotas: Quotas, owner: str, *, known: bool = False) -> OwnerUsage:
    if not known:
        require_known(s, owner)
    s.expire_all()  # the quota as the database has it now (an UPSERT bypasses the session's objects)
    adapters, versions, stored = used(s, owner)
    quota = quotas.of(s, owner)
    return OwnerUsage(owner=owner, adapters=adapters, versions=versions, stored_bytes=stored,
                      job_dataset_bytes=held_by_jobs(s, owner), quota_bytes=quota.bytes, quota_from=quota.source,
                      quota_set_by=quota.set.set_by if quota.set else None,
                      quota_set_at=quota.set.set_at if quota.set else None)


def usage(db: Database, quotas: Quotas, owner: str, *, known: bool = False) -> OwnerUsage:
    """What ``owner``'s adapters store, and its quota and where it comes from; NotFound for a name nobody has,
    unless ``known`` (the caller's own name: the local user of a registry without tokens has none)."""
    with db.session() as s:
        return _usage(s, quotas, owner, known=known)


def set_quota(db: Database, quotas: Quotas, owner: str, quota_bytes: int | None, *, actor: str) -> OwnerUsage:
    """Set ``owner``'s quota (None: no quota), over the settings', until it is cleared. Nothing stored is removed
    when the owner stores more than that already: its next publish is refused. One UPSERT: admins setting and
    clearing it at the same moment take turns."""
    with db.session() as s:
        require_known(s, owner)
        upsert(s, m.OwnerQuota.__table__, {"owner": owner, "quota_bytes": quota_bytes, "set_by": actor[:64],
                                           "set_at": m.utcnow()}, ["owner"])
        s.add(m.AuditEvent(actor=actor[:64], action="quota-set", target=owner, detail={"quota_bytes": quota_bytes}))
        return _usage(s, quotas, owner)


def clear_quota(db: Database, quotas: Quotas, owner: str, *, actor: str) -> OwnerUsage:
    """Drop the quota an admin set for ``owner``: the settings' holds again (nothing set: nothing changes). An owner
    known only by that quota is still answered: its usage, with the settings' quota. Audited (``quota-clear``) when
    there was one."""
    with db.session() as s:
        require_known(s, owner)
        if cast("CursorResult[Any]", s.execute(delete(m.OwnerQuota).where(m.OwnerQuota.owner == owner))).rowcount:
            s.add(m.AuditEvent(actor=actor[:64], action="quota-clear", target=owner, detail={}))
        return _usage(s, quotas, owner, known=True)  # known: checked before its quota row went

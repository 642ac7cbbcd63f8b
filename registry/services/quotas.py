"""Storage quotas per owner namespace (a user or an organisation): the stored bytes of the versions of its adapters
(each version's ``stored_bytes``: its d and b vectors and head, as `vera ls` shows them; the frozen projections are
shared registry-wide and regenerated from seeds, so they count for nobody). A publish that would take an owner over
its quota is refused (403 ``quota_exceeded``) before anything is stored, and so is a fine-tune job submitted for an
owner already at its quota; deleting versions frees room at once. Yanked versions still count: their bytes are
still served.

The quota is ``VERA_OWNER_QUOTA_BYTES`` for every owner (unset: none), with ``VERA_OWNER_QUOTAS`` (a JSON object,
owner -> bytes, ``null`` for none) overriding it per owner. Two publishes racing may together pass a quota by one
version each: the check is made in each publish's transaction, not across them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from registry.domain.errors import QuotaExceeded
from registry.domain.schemas import OwnerUsage
from registry.domain.words import size
from registry.store import models as m
from registry.store.database import Database


@dataclass(frozen=True)
class Quotas:
    """The quota of each owner: ``per_owner`` first (None there: no quota), else ``default`` (None: no quota)."""

    default: int | None = None
    per_owner: Mapping[str, int | None] = field(default_factory=dict)

    def of(self, owner: str) -> int | None:
        return self.per_owner.get(owner, self.default)

    @property
    def any(self) -> bool:
        return self.default is not None or any(v is not None for v in self.per_owner.values())


def used(s: Session, owner: str) -> tuple[int, int, int]:
    """(adapters, versions, stored bytes) of ``owner``'s adapters."""
    versions, stored = s.execute(
        select(func.count(m.AdapterVersion.id), func.coalesce(func.sum(m.AdapterVersion.stored_bytes), 0))
        .join(m.Adapter, m.Adapter.id == m.AdapterVersion.adapter_id).where(m.Adapter.owner == owner)).one()
    adapters = s.scalar(select(func.count(m.Adapter.id)).where(m.Adapter.owner == owner)) or 0
    return int(adapters), int(versions), int(stored)


def check_room(s: Session, quotas: Quotas, owner: str, adding: int | None, what: str, *,
               instead: str = "") -> None:
    """QuotaExceeded when ``adding`` more bytes would take ``owner`` over its quota (``what``: what they are for);
    ``adding`` None: when the owner has no room left at all (a job, whose adapter's size is not known yet).
    ``instead``: another way to make room, said first (a move: fewer versions of the adapter moved)."""
    quota = quotas.of(owner)
    if quota is None:
        return
    stored = used(s, owner)[2]
    if adding is None and stored >= quota:
        said = f"{owner} stores {size(stored)}, all of its {size(quota)} quota: {what} would not fit."
    elif adding is not None and stored + adding > quota:
        said = (f"{owner} stores {size(stored)} of its {size(quota)} quota; {what} ({size(adding)}) "
                "would take it over.")
    else:
        return
    room = (f"delete versions {owner} no longer needs (`vera delete {owner}/NAME:N`, or `vera delete {owner}/NAME "
            "--all`)")
    raise QuotaExceeded(f"{said} {(instead + ', ' + room) if instead else room[0].upper() + room[1:]}, or ask the "
                        "registry's operator to raise the quota (VERA_OWNER_QUOTAS).")


def usage(db: Database, quotas: Quotas, owner: str) -> OwnerUsage:
    with db.session() as s:
        adapters, versions, stored = used(s, owner)
    return OwnerUsage(owner=owner, adapters=adapters, versions=versions, stored_bytes=stored,
                      quota_bytes=quotas.of(owner))


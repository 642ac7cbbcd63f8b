"""Moving an adapter: renaming it, or transferring it to another owner (a user or an organisation), with every version,
alias, tag, card, download count and lineage link it has, as the Hub moves a repo and MLflow renames a registered
model. The names it had are kept (``adapter_moves``, migration 0017):

- asking for an old name answers 404 as before, but the message names the adapter's name now, to a caller that may
  read it (registry.api.problems; to anyone else the old name is simply not there);
- publishing to an old name is refused (409), naming the new one, so that a pipeline that still publishes there does
  not start a second adapter under the old name without a word; moving an adapter to that name frees it;
- queued and running fine-tune jobs that were to publish to the adapter publish to its new name;
- version numbers go on from the highest the adapter had, and a name that had versions of another adapter (deleted
  since) is refused as a destination: ``owner/name:N`` never names two different byte strings.

The audit log keeps what happened under the names of the time: a ``move`` event (``detail``: ``from``, ``to``) on the
new name, and for a transfer on the old name too, so that each owner's events and webhooks hear of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from registry.domain.errors import Conflict, InvalidInput, NotFound
from registry.domain.schemas import Ref
from registry.services.tokens import Principal
from registry.store import models as m
from registry.store.database import Database


@dataclass(frozen=True)
class Moved:
    """Where an old name's adapter is now, and when it left the name."""

    owner: str
    name: str
    visibility: str
    at: datetime

    @property
    def ref(self) -> str:
        return f"{self.owner}/{self.name}"


def moved_from(s: Session, owner: str, name: str) -> Moved | None:
    """Where the adapter once called ``owner/name`` is now (None: no adapter left that name, or one has it now)."""
    row = s.execute(select(m.Adapter.owner, m.Adapter.name, m.Adapter.visibility, m.AdapterMove.moved_at)
                    .join(m.AdapterMove, m.AdapterMove.adapter_id == m.Adapter.id)
                    .where(m.AdapterMove.owner == owner, m.AdapterMove.name == name)).first()
    return None if row is None else Moved(*row)


def refuse_publish_to_old_name(s: Session, owner: str, name: str) -> None:
    """Conflict when ``owner/name`` is the old name of an adapter that moved (and no adapter has that name now)."""
    moved = moved_from(s, owner, name)
    if moved is not None:
        raise Conflict(f"{owner}/{name} was moved to {moved.ref} on {moved.at:%Y-%m-%d}: publish to {moved.ref}. "
                       f"(To use the old name again, move an adapter to it: `vera mv OWNER/NAME {owner}/{name}`.)")


class Moves:
    """``move``: one transaction, audited; ``moved_to``: where an old name went, for whoever may know."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def moved_to(self, owner: str, name: str, viewer: Principal | None) -> Moved | None:
        """Where the adapter once called ``owner/name`` is now, if ``viewer`` may read it there (None: every
        adapter)."""
        with self.db.session() as s:
            moved = moved_from(s, owner, name)
        if moved is None or (viewer is not None and not viewer.can_read(moved.owner, moved.visibility)):
            return None
        return moved

    def move(self, source: str | Ref, destination: str | Ref, *, actor: str) -> tuple[Ref, Ref]:
        """Give the adapter ``source`` (owner/name) the name ``destination`` (owner/name; another owner transfers
        it). Who may do it is the API's to decide (write rights on both owners). Returns (source, destination)."""
        old = source if isinstance(source, Ref) else Ref.parse_adapter(source)
        new = destination if isinstance(destination, Ref) else Ref.parse_adapter(destination)
        if (old.owner, old.name) == (new.owner, new.name):
            raise InvalidInput(f"{old} is already called {new}; give another name (owner/name) to move it to.")
        with self.db.session() as s:
            adapter = s.scalar(select(m.Adapter).where(m.Adapter.owner == old.owner, m.Adapter.name == old.name))
            if adapter is None:
                raise NotFound(f"No adapter {old.owner}/{old.name}; `vera ls --owner {old.owner}` lists that "
                               "owner's.")
            if s.scalar(select(m.Adapter.id).where(m.Adapter.owner == new.owner, m.Adapter.name == new.name)):
                raise Conflict(f"{new.owner}/{new.name} exists; move {old.owner}/{old.name} to a name that is free "
                               "(or delete that adapter first).")
            counters = {(c.owner, c.name): c for c in s.scalars(select(m.VersionCounter).where(
                ((m.VersionCounter.owner == old.owner) & (m.VersionCounter.name == old.name))
                | ((m.VersionCounter.owner == new.owner) & (m.VersionCounter.name == new.name))))}
            came_from_there = s.scalar(select(m.AdapterMove.id).where(
                m.AdapterMove.owner == new.owner, m.AdapterMove.name == new.name,
                m.AdapterMove.adapter_id == adapter.id)) is not None
            if (new.owner, new.name) in counters and not came_from_there:
                raise Conflict(f"{new.owner}/{new.name} had versions once (of an adapter deleted since, or moved "
                               f"away): its version numbers are never given to other bytes, so {old.owner}/{old.name} "
                               "cannot take that name. Choose another.")
            present = s.scalar(select(func.max(m.AdapterVersion.version))
                               .where(m.AdapterVersion.adapter_id == adapter.id)) or 0
            highest = max([present, *(c.last_version for c in counters.values())])
            if (kept := counters.get((new.owner, new.name))) is not None:
                kept.last_version = highest
            else:
                s.add(m.VersionCounter(owner=new.owner, name=new.name, last_version=highest))
            # the destination name is the adapter's again (moving back) or for the first time: no longer an old name;
            # the source name becomes one (another adapter's old record for it, if any, is superseded)
            s.execute(delete(m.AdapterMove).where(
                ((m.AdapterMove.owner == new.owner) & (m.AdapterMove.name == new.name))
                | ((m.AdapterMove.owner == old.owner) & (m.AdapterMove.name == old.name))))
            s.add(m.AdapterMove(owner=old.owner, name=old.name, adapter_id=adapter.id, moved_by=actor[:64]))
            adapter.owner, adapter.name = new.owner, new.name
            s.execute(update(m.Job).where(m.Job.target_name == f"{old.owner}/{old.name}",
                                          m.Job.status.in_(("queued", "running")))
                      .values(target_name=f"{new.owner}/{new.name}", owner=new.owner))
            detail = {"from": f"{old.owner}/{old.name}", "to": f"{new.owner}/{new.name}"}
            # on the new name; transferred, on the old one too: each owner's events and webhooks hear of it
            for target in dict.fromkeys((detail["to"], detail["from"] if old.owner != new.owner else detail["to"])):
                s.add(m.AuditEvent(actor=actor[:64], action="move", target=target, detail=detail))
            s.flush()  # the unique (owner, name) constraints catch a concurrent publish or move to the name
        return old, new


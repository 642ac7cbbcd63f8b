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

Renaming an organisation (registry.services.access) moves each of its adapters this way at once (``move_owner``),
with every other row that names the owner.

The audit log keeps what happened under the names of the time: a ``move`` event (``detail``: ``from``, ``to``) on the
new name, and for a transfer on the old name too, so that each owner's events and webhooks hear of it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import String, cast, delete, func, literal, select, update
from sqlalchemy.exc import IntegrityError as DbIntegrityError
from sqlalchemy.orm import Session

from registry.domain.errors import Conflict, Forbidden, InvalidInput, NotFound, protected_alias
from registry.domain.schemas import Ref, check_new_name
from registry.services.quotas import Quotas, check_room
from registry.services.tokens import Principal, check_new_owner, lock_owner
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
    """Conflict when ``owner/name`` is the old name of an adapter that moved. No adapter has that name then (a move
    to a name drops its record, and a publish to a name with one is refused), so no other check is needed. The
    new name is said when whoever may write under the old owner may know it: a rename within the owner, or a
    public adapter; a private adapter transferred elsewhere is not named."""
    moved = moved_from(s, owner, name)
    if moved is None:
        return
    if moved.owner == owner or moved.visibility == "public":
        raise _moved_away(owner, name, moved)
    raise Conflict(f"{owner}/{name} was moved to another owner on {moved.at:%Y-%m-%d}; its old name takes no "
                   "publishes, and stays that adapter's (its version numbers named its bytes): publish under another "
                   "name, or where it is now if you may (its new owner's members can say where).")


def _moved_away(owner: str, name: str, moved: Moved) -> Conflict:
    return Conflict(f"{owner}/{name} was moved to {moved.ref} on {moved.at:%Y-%m-%d}: publish to {moved.ref}. The "
                    f"old name is that adapter's for good (its version numbers named its bytes); only it can take "
                    f"the name back: `vera mv {moved.ref} {owner}/{name}`.")


@dataclass(frozen=True)
class MoveResult:
    """A move done: the old and new names, and the queued and running jobs that were to publish to the adapter: for a
    rename, retargeted to the new name; for a transfer to another owner, orphaned, for the caller to cancel (their
    owner's rights do not follow the adapter)."""

    old: Ref
    new: Ref
    orphaned_jobs: list[int]
    public: bool = True  # whether the adapter is public (a private one's new name is told only to its readers)
    retargeted_jobs: list[int] = field(default_factory=list)


class Moves:
    """``move``: one transaction, audited; ``moved_to``: where an old name went, for whoever may know."""

    def __init__(self, db: Database, quotas: Quotas | None = None) -> None:
        self.db, self.quotas = db, quotas or Quotas()

    def moved_to(self, owner: str, name: str, viewer: Principal | None) -> Moved | None:
        """Where the adapter once called ``owner/name`` is now, if ``viewer`` may read it there (None: every
        adapter)."""
        with self.db.session() as s:
            moved = moved_from(s, owner, name)
        if moved is None or (viewer is not None and not viewer.can_read(moved.owner, moved.visibility)):
            return None
        return moved

    def refuse_publish_where_moved(self, owner: str, name: str, viewer: Principal) -> None:
        """Conflict naming where the adapter once called ``owner/name`` is now, when ``viewer`` may publish there:
        the API asks before it refuses (403) a caller who may not write under ``owner`` (the members of a renamed
        organisation write under no owner of its old name), so that they are told where to publish instead."""
        moved = self.moved_to(owner, name, viewer)
        if moved is not None and viewer.can_write(moved.owner):
            raise _moved_away(owner, name, moved)

    def move(self, source: str | Ref, destination: str | Ref, *, actor: str, protected_at: frozenset[str] | None = None
             ) -> MoveResult:
        """Give the adapter ``source`` (owner/name) the name ``destination`` (owner/name; another owner transfers
        it). Who may do it is the API's to decide (write rights on both owners; an organisation's admin role to
        transfer out of it). A rename retargets the jobs that were to publish to the adapter; a transfer leaves them
        to the caller (MoveResult.orphaned_jobs). ``protected_at``: the owners (of the two) whose protected aliases
        the caller may not move (None, the safe default: both; an empty set for a caller who administers both): an
        adapter with an alias protected there is refused, since a rename takes ``owner/name@prod`` away from its
        consumers and a transfer brings in a ``prod`` no admin chose."""
        old = source if isinstance(source, Ref) else Ref.parse_adapter(source)
        new = destination if isinstance(destination, Ref) else Ref.parse_adapter(destination)
        if (old.owner, old.name) == (new.owner, new.name):
            raise InvalidInput(f"{old} is already called {new}; give another name (owner/name) to move it to.")
        try:
            with self.db.session() as s:
                return self._move(s, old, new, actor,
                                  frozenset((old.owner, new.owner)) if protected_at is None else protected_at)
        except DbIntegrityError as exc:  # a concurrent move or publish took the name between the check and the write
            raise Conflict(f"{new.owner}/{new.name} was taken while {old.owner}/{old.name} moved; nothing was moved. "
                           "Choose another name.") from exc

    def _move(self, s: Session, old: Ref, new: Ref, actor: str, protected_at: frozenset[str]) -> MoveResult:
        adapter = lock_adapter(s, old.owner, old.name)
        if adapter is None:
            raise NotFound(f"No adapter {old.owner}/{old.name}; `vera ls --owner {old.owner}` lists that owner's.")
        aliases = list(s.scalars(select(m.Alias.name).where(m.Alias.adapter_id == adapter.id)))
        if old.owner in protected_at:
            refuse_protected(s, old.owner, aliases, f"rename or move {old.owner}/{old.name}, which holds it")
        if new.owner in protected_at and new.owner != old.owner:
            refuse_protected(s, new.owner, aliases, f"bring in an adapter that holds it (remove the alias from "
                                                    f"{old.owner}/{old.name} first)")
        lock_owner(s, new.owner)  # not into an organisation deleted meanwhile
        if s.scalar(select(m.Adapter.id).where(m.Adapter.owner == new.owner, m.Adapter.name == new.name)):
            raise Conflict(f"{new.owner}/{new.name} exists; move {old.owner}/{old.name} to a name that is free "
                           "(or delete that adapter first).")
        check_new_name(new.name, "New adapter name")
        transfer = old.owner != new.owner
        if transfer:  # a new owner's name checked; the destination owner takes its bytes: within its quota
            check_new_owner(s, new.owner)
            stored = s.scalar(select(func.coalesce(func.sum(m.AdapterVersion.stored_bytes), 0))
                              .where(m.AdapterVersion.adapter_id == adapter.id)) or 0
            check_room(s, self.quotas, new.owner, int(stored), f"moving {old.owner}/{old.name} there",
                       instead=f"Delete versions of {old.owner}/{old.name} first (it moves with every one)")
        names = _rename(s, adapter, old, new, actor)
        active = (m.Job.target_name == f"{old.owner}/{old.name}") & m.Job.status.in_(("queued", "running"))
        jobs = sorted(s.scalars(select(m.Job.id).where(active)))
        if not transfer:  # a transfer's jobs: their owner and submitter had rights in the old owner, not the new one
            for job in jobs:
                s.add(m.JobEvent(job_id=job, kind="log", data={
                    "message": f"its adapter was renamed: it publishes to {new.owner}/{new.name} (was {old})"}))
            s.execute(update(m.Job).where(active).values(target_name=f"{new.owner}/{new.name}"))
        if transfer:  # on the old name too, for the old owner's events and webhooks; a private destination unnamed
            told = names if adapter.visibility == "public" else {"from": names["from"], "to": None}
            s.add(m.AuditEvent(actor=actor[:64], action="move", target=names["from"], detail=told))
        s.flush()  # the unique (owner, name) constraints catch a concurrent publish or move to the name
        return MoveResult(old, new, jobs if transfer else [], public=adapter.visibility == "public",
                          retargeted_jobs=[] if transfer else jobs)


def _rename(s: Session, adapter: m.Adapter, old: Ref, new: Ref, actor: str) -> dict[str, str]:
    """Give ``adapter`` (called ``old``, its row locked) the free name ``new``: its version numbers go on there,
    ``old`` is remembered as its old name, and a ``move`` event on the new name says so. Conflict when ``new`` had
    versions of another adapter. The event's from and to."""
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
    names = {"from": f"{old.owner}/{old.name}", "to": f"{new.owner}/{new.name}"}
    s.add(m.AuditEvent(actor=actor[:64], action="move", target=names["to"], detail=names))
    return names


def move_owner(s: Session, old: str, new: str, *, actor: str, told: Collection[str] = ()) -> list[str]:
    """Move everything owner ``old`` has to the free owner name ``new`` (an organisation renamed:
    registry.services.access): each adapter to the same name under ``new`` as a move does (its old name
    remembered, its version numbers going on, a ``move`` event), and every other row that names the owner: jobs
    (their owner and target; the caller refuses while any is queued or running), the quota an admin set for it
    (replacing one set for ``new``, if it has one), webhooks, and the tokens limited to it of the users ``told`` (its
    members), of registry admins and of ``old`` itself (limited to ``new`` instead): another user's token keeps the
    retired old name, which still limits it to nothing it could reach (an outsider limited a token to an
    organisation's name to learn the secret new name from its own token list, session 38). Audit events keep the
    names of their time, as do the old names of adapters that left ``old`` before. The caller locks the owner's
    adapters and checks ``new``; the adapters' old names, as moved."""
    adapters = list(s.scalars(select(m.Adapter).where(m.Adapter.owner == old).order_by(m.Adapter.name)
                              .with_for_update().execution_options(populate_existing=True)))
    for adapter in adapters:
        _rename(s, adapter, Ref(owner=old, name=adapter.name), Ref(owner=new, name=adapter.name), actor)
    s.execute(update(m.Job).where(m.Job.owner == old).values(owner=new))
    s.execute(update(m.Job).where(m.Job.target_name.startswith(f"{old}/", autoescape=True))
              .values(target_name=literal(f"{new}/") + func.substr(m.Job.target_name, len(old) + 2)))
    if s.scalar(select(m.OwnerQuota.owner).where(m.OwnerQuota.owner == old)) is not None:
        s.execute(delete(m.OwnerQuota).where(m.OwnerQuota.owner == new))
        s.execute(update(m.OwnerQuota).where(m.OwnerQuota.owner == old).values(owner=new))
    s.execute(update(m.Webhook).where(m.Webhook.owner == old).values(owner=new))
    limited = cast(m.AccessToken.limited_to, String).contains(f'"{old}"', autoescape=True)  # JSON text: a prefilter
    for token in s.scalars(select(m.AccessToken).where(limited)):
        if token.limited_to is not None and old in token.limited_to and (
                token.owner in told or token.owner == old or "admin" in (token.scopes or [])):
            token.limited_to = sorted({new if o == old else o for o in token.limited_to})
    return [f"{old}/{a.name}" for a in adapters]


def resolve_locked(s: Session, ref: str | Ref) -> m.AdapterVersion:
    """``lookup.resolve`` after its adapter's row is locked (``lock_adapter``): changes to one adapter's versions
    (delete, yank, aliases, edits) take turns with its publishes and moves and with one another. A delete of the last
    version counted none while a publish of the next one was not committed yet, then deleted the adapter and the new
    version with it (PostgreSQL); an alias set on a version being deleted was a 500 (an outsider's races, session
    26). NotFound as ``resolve`` says it."""
    from registry.services.lookup import resolve  # lookup imports access, which imports this module

    parsed = Ref.parse(ref) if isinstance(ref, str) else ref
    lock_adapter(s, parsed.owner, parsed.name)
    return resolve(s, parsed)


def lock_adapter(s: Session, owner: str, name: str) -> m.Adapter | None:
    """The adapter ``owner/name``, its row locked for the rest of the transaction (SQLite: the database's write lock;
    PostgreSQL: the row's), so that moves and publishes of one adapter take turns: each reads its version numbers
    and name after the other's commit. None when there is no such adapter, or it was moved or deleted meanwhile."""
    named = (m.Adapter.owner == owner) & (m.Adapter.name == name)
    fresh = {"populate_existing": True}  # the row as the lock found it, not as this session last saw it
    dialect = s.get_bind().dialect
    if dialect.name == "postgresql":  # a row lock that writes nothing (no dead row version per publish)
        adapter = s.scalar(select(m.Adapter).where(named).with_for_update().execution_options(**fresh))
    else:  # SQLite locks the database for the first write of a transaction: a write that changes nothing
        touch = update(m.Adapter).values(owner=m.Adapter.owner).execution_options(synchronize_session=False)
        if dialect.update_returning:  # SQLite 3.35+: one statement (bench/publish_cost.py)
            adapter = s.scalar(touch.where(named).returning(m.Adapter).execution_options(**fresh))
        else:
            found = s.scalar(select(m.Adapter.id).where(named))
            if found is None:
                return None
            s.execute(touch.where(m.Adapter.id == found))
            adapter = s.get(m.Adapter, found, populate_existing=True)
    return adapter if adapter is not None and (adapter.owner, adapter.name) == (owner, name) else None


def refuse_protected(s: Session, owner: str, aliases: Iterable[str], doing: str) -> None:
    """Forbidden when ``owner``, an organisation, protects one of ``aliases`` (``vera org protect``,
    Access.protect_alias): only its admins may ``doing`` (what the caller asked, for the message)."""
    from registry.services.lookup import LATEST  # lookup imports access, which imports this module

    names = set(aliases) - {LATEST}
    if not names:
        return
    protected = s.scalar(select(m.ProtectedAlias.name)
                         .join(m.Organization, m.Organization.id == m.ProtectedAlias.organization_id)
                         .where(m.Organization.name == owner, m.ProtectedAlias.name.in_(names))
                         .order_by(m.ProtectedAlias.name).limit(1))
    if protected is not None:
        raise Forbidden(protected_alias(owner, protected, doing))

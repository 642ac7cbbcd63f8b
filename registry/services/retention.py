"""Retention: which versions a rule lets go (keep the last N versions of each adapter and/or those newer than D days;
never one that an alias other than ``latest`` points at), and deleting them through Versions.delete, so that each
deletion is audited, ``latest`` moves back, and the blobs go at the next gc.

Each deletion is its own transaction, and re-checks the aliases inside it (an alias set after the plan still
protects its version). A version kept by either rule stays: with both, only versions outside the last N that are
also older than D days go.

A rule is the operator's, for every adapter at once (`vera gc --keep-last N`: ``apply``), or an adapter's own, which
its owner's writers set (``adapters.retention_keep_last/_days``, migration 0034: ``apply_rules``, which the API's
housekeeping runs about once an hour and `vera gc` at each run), as ECR's lifecycle policies and Artifactory's cleanup
policies are a repository's. An adapter's own rule also keeps the version ``latest`` names and the newest version,
so that it never empties its adapter (which a delete of the last version removes, card and visibility with it) nor
leaves ``latest`` naming nothing; and each of its deletions asks the rule again with the adapter locked (a rule
cleared or loosened, or versions deleted by hand, since the plan keeps what it keeps now: a review, session 55).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from registry.domain.errors import Conflict, InvalidInput, NotFound
from registry.domain.schemas import Ref
from registry.services.lookup import LATEST
from registry.services.versions import Versions
from registry.store import models as m
from registry.store.database import Database

log = logging.getLogger("vera.retention")

#: Who the audit log names for deletions by retention: the operator's rule (`vera gc --keep-last`), an adapter's own.
RETENTION_ACTOR = "gc:retention"
RULE_ACTOR = "registry:retention"


@dataclass(frozen=True)
class RetentionRule:
    """``keep_last``: the newest N versions of each adapter (by number, yanked ones included) stay; ``keep_days``:
    versions published in the last D days stay. At least one is needed."""

    keep_last: int | None = None
    keep_days: float | None = None

    def __post_init__(self) -> None:
        if self.keep_last is None and self.keep_days is None:
            raise InvalidInput("A retention rule needs --keep-last N and/or --keep-days D.")
        if self.keep_last is not None and self.keep_last < 1:
            raise InvalidInput(f"--keep-last must be at least 1 (each adapter keeps its newest), got {self.keep_last}.")
        if self.keep_days is not None and not (math.isfinite(self.keep_days) and self.keep_days > 0):
            raise InvalidInput(f"--keep-days must be a number of days above 0, got {self.keep_days}.")

    def said(self) -> dict[str, float]:
        """The rule as the API and the audit log say it: its parts that are set."""
        return {part: value for part, value in (("keep_last", self.keep_last), ("keep_days", self.keep_days))
                if value is not None}

    def keeps(self, rank: int, created_at: datetime, now: datetime) -> bool:
        """Whether a version that is the ``rank``-th newest of its adapter (1: newest) stays."""
        recent = self.keep_days is not None and created_at >= now - timedelta(days=self.keep_days)
        return recent or (self.keep_last is not None and rank <= self.keep_last)


@dataclass(frozen=True)
class Retired:
    """A version a rule lets go."""

    ref: str
    created_at: datetime
    adapter_id: int = 0


@dataclass
class RetentionResult:
    """What a rule let go (``deleted``, or only planned in a dry run), and what stayed because an alias points at it
    (``protected``: alias names by ref) or was gone or changed meanwhile (``skipped``: ref and why)."""

    dry_run: bool
    deleted: list[Retired] = field(default_factory=list)
    protected: dict[str, list[str]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


class Retention:
    def __init__(self, db: Database, versions: Versions) -> None:
        self.db, self.versions = db, versions

    def apply(self, rule: RetentionRule, *, dry_run: bool = False, actor: str = RETENTION_ACTOR,
              now: datetime | None = None) -> RetentionResult:
        """Delete (with ``dry_run``: only list) every version the rule lets go, oldest first."""
        return self._apply(lambda _: rule, dry_run=dry_run, actor=actor, now=now)

    def apply_rules(self, *, dry_run: bool = False, now: datetime | None = None) -> RetentionResult:
        """Delete (with ``dry_run``: only list) every version its adapter's own rule lets go, oldest first; an
        adapter without a rule loses nothing, nor the version ``latest`` names or its newest."""
        when = now or datetime.now(UTC)
        with self.db.session() as s:
            rules = {adapter.id: rule for adapter in s.scalars(select(m.Adapter).where(HAS_RULE))
                     if (rule := adapter_rule(adapter)) is not None}
        if not rules:
            return RetentionResult(dry_run=dry_run)

        def kept(s: Session, v: m.AdapterVersion) -> str | None:  # asked again, the adapter locked
            return _kept_by_rule(s, v, when)

        return self._apply(rules.get, dry_run=dry_run, actor=RULE_ACTOR, now=when, ruled=True, kept=kept)

    def preview(self, owner: str, name: str, rule: RetentionRule | None = None,
                now: datetime | None = None) -> tuple[RetentionRule | None, RetentionResult]:
        """What ``rule`` (None: the adapter's own, if it has one) would delete of ``owner/name`` now, as
        apply_rules would: the rule, and a dry run's result. NotFound when there is no such adapter."""
        with self.db.session() as s:
            adapter = s.scalar(select(m.Adapter).where(m.Adapter.owner == owner, m.Adapter.name == name))
            if adapter is None:
                raise NotFound(f"No adapter {owner}/{name}.")
            rule, adapter_id = rule or adapter_rule(adapter), adapter.id
        result = RetentionResult(dry_run=True)
        if rule is not None:
            result.deleted = self._plan(lambda _: rule, now or datetime.now(UTC), result, True, only=adapter_id)
        return rule, result

    def _apply(self, rule_of: Callable[[int], RetentionRule | None], *, dry_run: bool, actor: str,
               now: datetime | None, ruled: bool = False,
               kept: Callable[[Session, m.AdapterVersion], str | None] | None = None) -> RetentionResult:
        result = RetentionResult(dry_run=dry_run)
        retired = self._plan(rule_of, now or datetime.now(UTC), result, ruled)
        if dry_run:
            result.deleted = retired
            return result
        for version in retired:
            rule = rule_of(version.adapter_id)
            try:
                self.versions.delete(version.ref, actor=actor, keep_aliased=True, kept=kept,  # keep_aliased already
                                     protected_too=True,  # keeps every aliased version
                                     detail={"retention": rule.said()} if ruled and rule is not None else None)
                result.deleted.append(version)
            except (NotFound, Conflict) as exc:  # deleted, or given an alias, or kept by its rule, since the plan
                result.skipped[version.ref] = str(exc)
        return result

    def _plan(self, rule_of: Callable[[int], RetentionRule | None], now: datetime, result: RetentionResult,
              ruled: bool, only: int | None = None) -> list[Retired]:
        """The versions to delete, oldest first, each adapter's by ``rule_of(its id)`` (None: none of them); with
        ``ruled`` (adapters' own rules) only adapters that have one are read (``only``: that adapter alone), and the
        newest version and the one ``latest`` names are kept too. The aliased ones they would be go into
        ``result.protected``."""
        with self.db.session() as s:
            aliases: dict[int, list[str]] = {}
            held = select(m.Alias.version_id, m.Alias.name).order_by(m.Alias.name)
            if only is not None:
                held = held.where(m.Alias.adapter_id == only)
            elif ruled:  # the aliases of the adapters that have a rule
                held = held.join(m.Adapter, m.Adapter.id == m.Alias.adapter_id).where(HAS_RULE)
            for version_id, alias in s.execute(held if ruled else held.where(m.Alias.name != LATEST)):
                aliases.setdefault(version_id, []).append(alias)
            query = (select(m.AdapterVersion.id, m.Adapter.id, m.Adapter.owner, m.Adapter.name,
                            m.AdapterVersion.version, m.AdapterVersion.created_at).join(m.Adapter)
                     .order_by(m.AdapterVersion.adapter_id, m.AdapterVersion.version.desc()))
            if only is not None:
                query = query.where(m.Adapter.id == only)
            rows = s.execute(query.where(HAS_RULE) if ruled and only is None else query)
            retired, rank, adapter = [], 0, None
            for version_id, adapter_id, owner, name, number, created_at in rows:
                rank, adapter = (rank + 1, adapter) if adapter == adapter_id else (1, adapter_id)
                rule = rule_of(adapter_id)
                if rule is None or rule.keeps(rank, created_at, now) or (ruled and rank == 1):
                    continue
                ref = str(Ref(owner=owner, name=name, version=number))
                if version_id in aliases:
                    result.protected[ref] = aliases[version_id]
                else:
                    retired.append(Retired(ref=ref, created_at=created_at, adapter_id=adapter_id))
        return sorted(retired, key=lambda r: r.created_at)


#: The adapters that have a retention rule of their own.
HAS_RULE = m.Adapter.retention_keep_last.is_not(None) | m.Adapter.retention_keep_days.is_not(None)


def adapter_rule(adapter: m.Adapter) -> RetentionRule | None:
    """``adapter``'s own retention rule, or None: it has none, or one the API would refuse (written by hand in the
    database; logged, and nothing deleted by it)."""
    if adapter.retention is None:
        return None
    try:
        return RetentionRule(adapter.retention_keep_last, adapter.retention_keep_days)
    except InvalidInput as exc:
        log.warning(f"the retention rule of {adapter.owner}/{adapter.name} ({adapter.retention}) is not one the API "
                    f"takes, so it deletes nothing: {exc} Set it again (`vera retention`).")
        return None


def _kept_by_rule(s: Session, v: m.AdapterVersion, now: datetime) -> str | None:
    """Why ``v`` stays under its adapter's own rule as it is now (the adapter's row locked and read afresh by the
    delete), or None when the rule lets it go."""
    rule = adapter_rule(v.adapter)
    if rule is None:
        return "its adapter has no retention rule now"
    newer = s.scalar(select(func.count()).select_from(m.AdapterVersion).where(
        m.AdapterVersion.adapter_id == v.adapter_id, m.AdapterVersion.version > v.version)) or 0
    if newer == 0:
        return "it is its adapter's newest version"
    if rule.keeps(newer + 1, v.created_at, now):
        return "its adapter's retention rule keeps it now"
    if s.scalar(select(m.Alias.id).where(m.Alias.version_id == v.id, m.Alias.name == LATEST)) is not None:
        return "latest points at it"
    return None

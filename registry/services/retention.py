"""Retention: which versions a rule lets go (keep the last N versions of each adapter and/or those newer than D days;
never one that an alias other than ``latest`` points at), and deleting them through Versions.delete, so that each
deletion is audited, ``latest`` moves back, and the blobs go at the next gc.

Each deletion is its own transaction, and re-checks the aliases inside it (an alias set after the plan still
protects its version). A version kept by either rule stays: with both, only versions outside the last N that are
also older than D days go.

A rule is the operator's, for every adapter at once (`vera gc --keep-last N`: ``apply``), or an adapter's own, which
its owner's writers set (``adapters.retention_keep_last/_days``, migration 0034: ``apply_rules``, which the API's
housekeeping runs about once an hour and `vera gc` at each run), as ECR's lifecycle policies and Artifactory's cleanup
policies are a repository's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from registry.domain.errors import Conflict, InvalidInput, NotFound
from registry.domain.schemas import Ref
from registry.services.lookup import LATEST
from registry.services.versions import Versions
from registry.store import models as m
from registry.store.database import Database

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

    def keeps(self, rank: int, created_at: datetime, now: datetime) -> bool:
        """Whether a version that is the ``rank``-th newest of its adapter (1: newest) stays."""
        recent = self.keep_days is not None and created_at >= now - timedelta(days=self.keep_days)
        return recent or (self.keep_last is not None and rank <= self.keep_last)


@dataclass(frozen=True)
class Retired:
    """A version a rule lets go."""

    ref: str
    created_at: datetime


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
        adapter without a rule loses nothing."""
        with self.db.session() as s:
            rules = {adapter_id: RetentionRule(keep_last, keep_days) for adapter_id, keep_last, keep_days in s.execute(
                select(m.Adapter.id, m.Adapter.retention_keep_last, m.Adapter.retention_keep_days).where(
                    (m.Adapter.retention_keep_last.is_not(None)) | (m.Adapter.retention_keep_days.is_not(None))))}
        if not rules:
            return RetentionResult(dry_run=dry_run)
        return self._apply(rules.get, dry_run=dry_run, actor=RULE_ACTOR, now=now, only=set(rules))

    def _apply(self, rule_of: Callable[[int], RetentionRule | None], *, dry_run: bool, actor: str,
               now: datetime | None, only: set[int] | None = None) -> RetentionResult:
        result = RetentionResult(dry_run=dry_run)
        retired = self._plan(rule_of, now or datetime.now(UTC), result, only)
        if dry_run:
            result.deleted = retired
            return result
        for version in retired:
            try:
                self.versions.delete(version.ref, actor=actor, keep_aliased=True,
                                     protected_too=True)  # keep_aliased already keeps every aliased version
                result.deleted.append(version)
            except (NotFound, Conflict) as exc:  # deleted, or given an alias, since the plan
                result.skipped[version.ref] = str(exc)
        return result

    def _plan(self, rule_of: Callable[[int], RetentionRule | None], now: datetime, result: RetentionResult,
              only: set[int] | None) -> list[Retired]:
        """The versions to delete, oldest first, each adapter's by ``rule_of(its id)`` (None: none of them), of the
        adapters ``only`` names (None: every one); the aliased ones they would be go into ``result.protected``."""
        with self.db.session() as s:
            aliases: dict[int, list[str]] = {}
            for version_id, alias in s.execute(select(m.Alias.version_id, m.Alias.name)
                                               .where(m.Alias.name != LATEST).order_by(m.Alias.name)):
                aliases.setdefault(version_id, []).append(alias)
            query = (select(m.AdapterVersion.id, m.Adapter.id, m.Adapter.owner, m.Adapter.name,
                            m.AdapterVersion.version, m.AdapterVersion.created_at).join(m.Adapter)
                     .order_by(m.AdapterVersion.adapter_id, m.AdapterVersion.version.desc()))
            rows = s.execute(query if only is None else query.where(m.Adapter.id.in_(only)))
            retired, rank, adapter = [], 0, None
            for version_id, adapter_id, owner, name, number, created_at in rows:
                rank, adapter = (rank + 1, adapter) if adapter == adapter_id else (1, adapter_id)
                rule = rule_of(adapter_id)
                if rule is None or rule.keeps(rank, created_at, now):
                    continue
                ref = str(Ref(owner=owner, name=name, version=number))
                if version_id in aliases:
                    result.protected[ref] = aliases[version_id]
                else:
                    retired.append(Retired(ref=ref, created_at=created_at))
        return sorted(retired, key=lambda r: r.created_at)

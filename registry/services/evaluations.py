"""Evaluations recorded after publish: what a version scored on a benchmark (lm-evaluation-harness's tasks through
`vera serve-model`, or anything else measured), added to the version by those who may publish under its owner.

An evaluation's numbers join the version's metrics under its name (``metrics["hellaswag"] = {"acc": 0.41, ...}``)
and its numeric leaves join version_metrics (``hellaswag.acc``), so that search, sort, compare, ``vera show`` and
the dashboard read them as any metric; version_evaluations keeps who recorded them, when, and how they were
measured. A name is taken once per version: neither a published metric nor another evaluation is ever changed by
a recording (delete the evaluation first to record it again); deleting one removes only what it added. Each
change is one transaction with one audit event (``version-evaluate``, ``version-evaluation-delete``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from registry.domain.errors import Conflict, InvalidInput, NotFound
from registry.domain.schemas import (
    MAX_EVALUATION_BYTES,
    EvaluationInfo,
    EvaluationRecord,
    Ref,
    check_json,
    check_plain,
)
from registry.services.filters import MAX_METRIC_DEPTH, MAX_METRIC_KEY, MAX_METRICS_PER_VERSION
from registry.services.lookup import resolve, version_ref
from registry.services.publishing import MAX_METRICS_BYTES
from registry.store import models as m
from registry.store.database import Database
from vera_core.errors import finite_number

#: Names the registry and the dashboard read in a version's metrics themselves (loss curves, labels, the accuracy
#: and loss columns): an evaluation may not take them, even on a version published without them.
RESERVED = frozenset({"train_loss", "eval", "test", "final_eval", "labels", "accuracy", "loss"})
#: The most evaluations one version holds (each with up to 64 KiB of details).
MAX_EVALUATIONS_PER_VERSION = 100


def _locked(s: Session, ref: str | Ref) -> m.AdapterVersion:
    """The version ``ref`` names, locked for this transaction and read afresh: a write to its row first (PostgreSQL
    locks the row, SQLite takes the database's write lock, so that its reads that follow see the newest state),
    then its metrics. Two recordings on one version never lose each other's numbers. NotFound if the version went
    meanwhile."""
    v = resolve(s, ref)
    locked = s.execute(update(m.AdapterVersion).where(m.AdapterVersion.id == v.id).values(id=m.AdapterVersion.id))
    if getattr(locked, "rowcount", 1) == 0:
        raise NotFound(f"{version_ref(v)} was deleted meanwhile.")
    s.refresh(v)
    return v


def _numbers(name: str, metrics: dict[str, Any]) -> dict[str, float]:
    """The evaluation's numbers as version_metrics rows (``name.key...``), every one of them: a number nested too
    deep, or under a dotted key too long, to be searched is refused, not kept unsearchable."""
    found: dict[str, float] = {}

    def walk(prefix: str, value: Any, depth: int) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}", item, depth + 1)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            if depth > MAX_METRIC_DEPTH - 1:
                raise InvalidInput(f"metrics: {prefix[len(name) + 1:]} is nested {depth} levels deep; numbers may be "
                                   f"at most {MAX_METRIC_DEPTH - 1} levels deep, to be searched.")
            if len(prefix) > MAX_METRIC_KEY:
                raise InvalidInput(f"metrics: {prefix[:60]}... is {len(prefix)} characters as a dotted key (name "
                                   f"included); at most {MAX_METRIC_KEY}.")
            number = finite_number(value)
            if number is None:
                shown = str(value) if isinstance(value, float) else "an integer beyond that range"
                raise InvalidInput(f"metrics: {prefix[len(name) + 1:]} is {shown}: only finite numbers within a "
                                   "float's range (about 1.8e308 in magnitude).")
            found[prefix] = number

    walk(name, metrics, 0)
    return found


def _info(v: m.AdapterVersion, row: m.VersionEvaluation) -> EvaluationInfo:
    return EvaluationInfo(ref=version_ref(v), name=row.name, metrics=(v.metrics or {}).get(row.name, {}),
                          details=row.details or {}, recorded_by=row.recorded_by, recorded_at=row.recorded_at)


class Evaluations:
    def __init__(self, db: Database) -> None:
        self.db = db

    def record(self, ref: str | Ref, record: EvaluationRecord, *, actor: str) -> EvaluationInfo:
        """Add ``record`` to the version ``ref`` names; Conflict when its name is taken there (a published metric
        or an earlier evaluation), InvalidInput when it is too big or holds no number."""
        check_json(record.metrics, "metrics", max_bytes=MAX_EVALUATION_BYTES)
        check_json(record.details, "details", max_bytes=MAX_EVALUATION_BYTES)
        check_plain(record.metrics, "metrics")
        check_plain(record.details, "details", multiline_strings=True)
        if record.name in RESERVED:
            reserved = ", ".join(sorted(RESERVED))
            raise InvalidInput(f"{record.name!r} is a name the registry reads in metrics itself ({reserved}): "
                               "record under another name.")
        rows = _numbers(record.name, record.metrics)
        if not rows:
            raise InvalidInput("metrics holds no number: record at least one (e.g. {\"acc\": 0.41}).")
        with self.db.session() as s:
            v = _locked(s, ref)
            metrics = dict(v.metrics or {})
            clash = s.scalar(select(m.VersionMetric.key).where(
                m.VersionMetric.version_id == v.id, m.VersionMetric.key.startswith(f"{record.name}.", autoescape=True)
            ).limit(1))
            if clash is not None and record.name not in metrics:  # a published dotted key: {"arc.easy": 0.5}
                raise Conflict(f"{version_ref(v)} was published with the metric {clash!r}, under the name "
                               f"{record.name!r}: record under another name (published metrics never change).")
            if record.name in metrics:
                earlier = s.get(m.VersionEvaluation, (v.id, record.name))
                said = (f"an evaluation recorded by {earlier.recorded_by} on {earlier.recorded_at:%Y-%m-%d}"
                        if earlier is not None else "a metric it was published with")
                raise Conflict(f"{version_ref(v)} already has {record.name!r}: {said}. Record under another name"
                               + (f", or delete that evaluation first (vera eval delete {version_ref(v)} "
                                  f"{record.name})." if earlier is not None else " (published metrics never change)."))
            recorded = s.scalar(select(func.count()).where(m.VersionEvaluation.version_id == v.id)) or 0
            if recorded >= MAX_EVALUATIONS_PER_VERSION:
                raise InvalidInput(f"{version_ref(v)} holds {recorded} evaluations, the most one version holds: "
                                   "delete one first (vera eval delete).")
            held = s.scalar(select(func.count()).where(m.VersionMetric.version_id == v.id)) or 0
            if held + len(rows) > MAX_METRICS_PER_VERSION:
                raise InvalidInput(f"{version_ref(v)} has {held:,} numeric metrics and this evaluation adds "
                                   f"{len(rows):,}: at most {MAX_METRICS_PER_VERSION:,} per version.")
            metrics[record.name] = record.metrics
            check_json(metrics, "the version's metrics with this evaluation", max_bytes=MAX_METRICS_BYTES)
            v.metrics = metrics
            s.add_all(m.VersionMetric(version_id=v.id, key=key, value=value) for key, value in rows.items())
            row = m.VersionEvaluation(version_id=v.id, name=record.name, details=record.details, recorded_by=actor)
            s.add(row)
            s.add(m.AuditEvent(actor=actor, action="version-evaluate", target=version_ref(v),
                               detail={"name": record.name, "metrics": record.metrics, "details": record.details}))
            s.flush()
            return _info(v, row)

    def names(self, ref: str | Ref) -> set[str]:
        """The names of the evaluations recorded on the version ``ref`` names (its other metrics: published)."""
        with self.db.session() as s:
            v = resolve(s, ref)
            return set(s.scalars(select(m.VersionEvaluation.name).where(m.VersionEvaluation.version_id == v.id)))

    def evaluations(self, ref: str | Ref) -> list[EvaluationInfo]:
        """The evaluations recorded on the version ``ref`` names, oldest first."""
        with self.db.session() as s:
            v = resolve(s, ref)
            rows = s.scalars(select(m.VersionEvaluation).where(m.VersionEvaluation.version_id == v.id)
                             .order_by(m.VersionEvaluation.recorded_at, m.VersionEvaluation.name))
            return [_info(v, row) for row in rows]

    def delete(self, ref: str | Ref, name: str, *, actor: str) -> None:
        """Remove the evaluation ``name`` from the version ``ref`` names: its numbers leave the metrics; NotFound
        for a name no evaluation recorded (published metrics are not evaluations, and never change)."""
        with self.db.session() as s:
            v = _locked(s, ref)
            row = s.get(m.VersionEvaluation, (v.id, name))
            if row is None:
                published = " (it is a metric the version was published with: those never change)" \
                    if name in (v.metrics or {}) else ""
                raise NotFound(f"{version_ref(v)} has no evaluation named {name!r}{published}.")
            metrics: dict[str, Any] = dict(v.metrics or {})
            removed = metrics.pop(name, None)
            v.metrics = metrics
            added = list(_numbers(name, removed)) if isinstance(removed, dict) else []  # exactly what it added
            s.execute(delete(m.VersionMetric).where(m.VersionMetric.version_id == v.id,
                                                    m.VersionMetric.key.in_(added)))
            s.delete(row)
            s.add(m.AuditEvent(actor=actor, action="version-evaluation-delete", target=version_ref(v),
                               detail={"name": name, "metrics": removed, "details": row.details}))

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
from registry.domain.schemas import MAX_EVALUATION_BYTES, EvaluationInfo, EvaluationRecord, Ref, check_json
from registry.services.filters import MAX_METRICS_PER_VERSION, metric_rows
from registry.services.lookup import resolve, version_ref
from registry.services.publishing import MAX_METRICS_BYTES
from registry.store import models as m
from registry.store.database import Database


def _locked(s: Session, ref: str | Ref) -> m.AdapterVersion:
    """The version ``ref`` names, locked for this transaction and read afresh: a write to its row first (PostgreSQL
    locks the row, SQLite takes the database's write lock, so that its reads that follow see the newest state),
    then its metrics. Two recordings on one version never lose each other's numbers."""
    v = resolve(s, ref)
    s.execute(update(m.AdapterVersion).where(m.AdapterVersion.id == v.id).values(id=m.AdapterVersion.id))
    s.refresh(v)
    return v


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
        rows = metric_rows({record.name: record.metrics})  # as the version's metrics flatten: key, depth, count
        if not rows:
            raise InvalidInput("metrics holds no number: record at least one (e.g. {\"acc\": 0.41}), nested at most "
                               "3 levels deep, each dotted key (name.key...) at most 200 characters.")
        with self.db.session() as s:
            v = _locked(s, ref)
            metrics = dict(v.metrics or {})
            if record.name in metrics:
                earlier = s.get(m.VersionEvaluation, (v.id, record.name))
                said = (f"an evaluation recorded by {earlier.recorded_by} on {earlier.recorded_at:%Y-%m-%d}"
                        if earlier is not None else "a metric it was published with")
                raise Conflict(f"{version_ref(v)} already has {record.name!r}: {said}. Record under another name"
                               + (f", or delete that evaluation first (vera eval delete {version_ref(v)} "
                                  f"{record.name})." if earlier is not None else " (published metrics never change)."))
            held = s.scalar(select(func.count()).where(m.VersionMetric.version_id == v.id)) or 0
            if held + len(rows) > MAX_METRICS_PER_VERSION or len(rows) == MAX_METRICS_PER_VERSION:
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
            s.execute(delete(m.VersionMetric).where(m.VersionMetric.version_id == v.id,
                                                    m.VersionMetric.key.startswith(f"{name}.", autoescape=True)))
            s.delete(row)
            s.add(m.AuditEvent(actor=actor, action="version-evaluation-delete", target=version_ref(v),
                               detail={"name": name, "metrics": removed, "details": row.details}))

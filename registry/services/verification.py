"""Verification and storage maintenance: prove a version's seed regenerates its projections and its blobs hash to
their names (verify), list the shared projections, and keep the database and blob storage in agreement (fsck, gc).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError as DbIntegrityError
from sqlalchemy.orm import Session

from registry.domain.errors import IntegrityError, InvalidInput, NotFound
from registry.domain.schemas import (
    FINAL_JOB_STATUSES,
    GC_GRACE_S,
    MAX_JSON_DEPTH,
    UPLOAD_PREFIX,
    ProjectionInfo,
    Ref,
    VerificationReport,
    VerificationStatus,
)
from registry.domain.words import counted
from registry.services import job_checkpoints
from registry.services.access import readable_versions, shown_to
from registry.services.derived import DERIVED, forget
from registry.services.lookup import projection_spec, resolve, version_ref
from registry.services.shapes import match_path
from registry.services.stored_json import DeepValue, cut_too_deep, too_deep_values
from registry.services.tokens import Principal
from registry.services.validation import ProjectionBudget
from registry.store import models as m
from registry.store.blobs import BlobStore
from registry.store.copying import copied_away
from registry.store.database import Database
from vera_core.keys import LAMBDA_B, LAMBDA_D, PROJECTION_KEYS, module_path

GC_ROW_ATTEMPTS = 5
#: Below this many old unknown files, gc and fsck --repair do not suspect a wrong database (a few orphans are normal).
SUSPICIOUS_FILES = 10

#: Blob kinds that versions and projections reference (gc leaves the others, e.g. job datasets, to their owners).
VERSION_BLOBS = ("vectors", "projection", "derived")


class Verification:
    def __init__(self, db: Database, blobs: BlobStore, *, budget: ProjectionBudget) -> None:
        self.db, self.blobs, self.budget = db, blobs, budget

    def verify(self, ref: str | Ref) -> VerificationReport:
        """Regenerate the projections and compare fingerprints; re-hash the blobs; check shapes against the base.
        The report is recorded with the version (one transaction); a read-only registry (VERA_READ_ONLY) answers it
        without recording it (the version keeps the report it had)."""
        with self.db.session() as s:
            v = resolve(s, ref)
            checks = {"projection": self._projection_check(v, self.budget), **self._blob_checks(v),
                      "shapes": self._check_shapes(v)}
            status: VerificationStatus = "passed" if all(c["ok"] for c in checks.values()) else "failed"
            now = datetime.now(UTC)
            report = VerificationReport(ref=version_ref(v), status=status,
                                        checked_at=now, checks=checks)
            if not self.db.read_only:
                v.verification_status, v.verified_at = status, now
                v.verification_report = report.model_dump(mode="json")
            return report

    @staticmethod
    def _projection_check(v: m.AdapterVersion, budget: ProjectionBudget) -> dict[str, Any]:
        from vera_core.projection import regenerated_fingerprint  # torch: imported by verifying, not at start

        spec = projection_spec(v.projection)
        with budget.generating(spec):  # also bounds versions recorded before the limit existed
            regenerated = regenerated_fingerprint(spec)  # A and B hashed as generated, never whole
        if v.seed_reproducible:
            return {"ok": regenerated == v.projection_fingerprint, "recorded": v.projection_fingerprint,
                    "regenerated": regenerated}
        return {"ok": True, "seed_reproducible": False, "regenerated": regenerated,
                "recorded": v.projection_fingerprint,
                "note": "projections are stored; the seed does not regenerate them"}

    def _blob_checks(self, v: m.AdapterVersion) -> dict[str, dict[str, Any]]:
        checks: dict[str, dict[str, Any]] = {}
        for label, digest in (("vectors_blob", v.vectors_sha256), ("projection_blob", v.projection.blob_sha256)):
            if digest is None:
                continue
            try:
                data = self.blobs.get(digest)  # re-hashes: corrupt bytes raise IntegrityError
            except (NotFound, IntegrityError) as exc:
                checks[label] = {"ok": False, "sha256": digest, "error": str(exc)}
                continue
            checks[label] = {"ok": True, "sha256": digest, "bytes": len(data)}
            if label == "projection_blob":
                from safetensors.torch import load as load_safetensors

                from vera_core import fingerprint

                stored = load_safetensors(data)
                checks[label]["ok"] = fingerprint(*(stored[k] for k in PROJECTION_KEYS)) == v.projection_fingerprint
        return checks

    def _check_shapes(self, v: m.AdapterVersion) -> dict[str, Any]:
        from safetensors.torch import load as load_safetensors

        try:
            tensors = load_safetensors(self.blobs.get(v.vectors_sha256))
        except (NotFound, IntegrityError) as exc:
            return {"ok": False, "error": str(exc)}
        problems = []
        for key, t in tensors.items():
            if key.endswith(LAMBDA_D) and tuple(t.shape) != (v.r,):
                problems.append(f"{key}: {tuple(t.shape)}, expected ({v.r},)")
            if key.endswith(LAMBDA_B):
                path = module_path(key, LAMBDA_B)
                shape = match_path(v.base_model.shapes, path)
                if shape is None or shape[0] != t.shape[0] or t.shape[0] > v.projection.max_out:
                    problems.append(f"{path}: {t.shape[0]} outputs, base {shape}")
        return {"ok": not problems, "problems": problems, "base_shapes": v.base_model.shapes_source}

    def last_verification(self, ref: str | Ref) -> dict[str, Any]:
        """The report recorded by the last verify(), or the status 'unverified'."""
        with self.db.session() as s:
            v = resolve(s, ref)
            return v.verification_report or {"status": v.verification_status}

    def list_projections(self, viewer: Principal | None = None) -> list[ProjectionInfo]:
        """The shared projections with how many versions use them (those ``viewer`` may see, counting only the
        versions it reads: registry.services.access.shown_to)."""
        uses_query = select(m.AdapterVersion.projection_id, func.count()).where(
            m.AdapterVersion.id.in_(readable_versions(viewer))).group_by(m.AdapterVersion.projection_id)
        shown = select(m.Projection).where(shown_to(viewer, m.AdapterVersion.projection_id, m.Projection.id))
        with self.db.session() as s:
            # (not Result.tuples(): deprecated in SQLAlchemy 2.1, which an API served in a test's thread raised)
            uses = {projection: count for projection, count in s.execute(uses_query)}
            return [ProjectionInfo(id=p.id, generator=p.generator, seed=int(p.seed), r=p.r, max_in=p.max_in,
                                   max_out=p.max_out, fingerprint=p.fingerprint, reproducible=p.reproducible,
                                   stored=p.blob_sha256 is not None, versions=uses.get(p.id, 0))
                    for p in s.scalars(shown.order_by(m.Projection.id))]

    # ---- storage maintenance -----------------------------------------------------------------------------------
    @staticmethod
    def _referenced(s: Session) -> set[str]:
        refs = set(s.scalars(select(m.AdapterVersion.vectors_sha256)))
        refs |= {d for d in s.scalars(select(m.Projection.blob_sha256)) if d}
        refs |= set(s.scalars(select(m.VersionFile.sha256).distinct()))  # download files built once (derived)
        refs |= job_checkpoints.referenced(s)  # running jobs' checkpoints, for an attempt on another machine
        refs |= {d for d in s.scalars(select(m.Job.dataset_sha256).distinct()) if d}  # shared bytes are kept
        return refs

    def gc(self, *, grace_s: float = GC_GRACE_S, force: bool = False) -> dict[str, int]:
        """Remove blobs (rows and bytes) that no version or projection references, and unused projections, while
        the registry serves: publishes, jobs and downloads go on meanwhile.

        The rows go in one transaction (again, up to GC_ROW_ATTEMPTS times, when a concurrent publish referenced a
        blob it was deleting: the database refuses that delete). Then the files (``_delete_unknown``): storage is
        listed first and the database read after, so a publish that committed before the read is known; a file the
        database does not know is deleted only when it is older than ``grace_s`` (a publish writes its bytes before
        it commits, and a put of bytes already there freshens them: git's rule for pruning) and still unknown on a
        last look just before it goes. The leftovers of killed publishes go too (fsck).
        """
        if not force:
            refuse_if_copied_away(self.db, "vera gc")
        removed, digests = self._collect_rows()
        deleted, recent = self._delete_unknown(list(self.blobs.digests()), expected=digests, grace_s=grace_s,
                                               force=force, command="vera gc")
        return {"blobs_removed": removed, "files_removed": deleted, "recent_files_kept": recent,
                "leftovers_removed": _remove_leftovers(self.blobs)}

    def _delete_unknown(self, listed: list[str], *, expected: set[str], grace_s: float, force: bool,
                        command: str) -> tuple[int, int]:
        """Delete the files of ``listed`` that the database does not know, older than ``grace_s``, each after a last
        look; return (deleted, kept for being younger). Refused unless ``force`` when the database looks like
        another registry's: it knows no blob and never published a version, or half of the stored files or more
        (at least SUSPICIOUS_FILES) are old and unknown without being ``expected`` (rows this collection removed). A
        misspelt VERA_DATABASE_URL falls back to an empty local database, and then deleted every file."""
        with self.db.session() as s:
            known = set(s.scalars(select(m.Blob.sha256)))
            published = s.scalar(select(m.VersionCounter.owner).limit(1)) is not None  # ever, deleted or not
        old: list[str] = []
        recent = 0
        for digest in (d for d in listed if d not in known):
            age = self.blobs.age_s(digest)
            if age is None:
                continue
            if age < grace_s:
                recent += 1
            else:
                old.append(digest)
        suspicious = [d for d in old if d not in expected]
        foreign = (not known and not published) or len(suspicious) >= max(SUSPICIOUS_FILES, len(listed) / 2)
        if suspicious and not force and foreign:
            raise InvalidInput(
                f"The database knows {len(known):,} blobs, and {len(suspicious):,} of the {len(listed):,} files in "
                f"the storage at {self.blobs.url} are unknown to it: this looks like another registry's database "
                "(check VERA_DATABASE_URL: a misspelt variable falls back to an empty local database), and "
                f"deleting them could empty a registry. Nothing was deleted. If the files really are garbage (most "
                f"versions were deleted, by hand or long ago), run `{command} --force`.")
        deleted = 0
        for digest in old:
            with self.db.session() as s:  # a last look: a publish may have referenced it since the read
                if s.get(m.Blob, digest) is not None:
                    continue
            self.blobs.delete(digest)
            deleted += 1
        return deleted, recent

    def _collect_rows(self) -> tuple[int, set[str]]:
        """Delete the rows of unused projections and unreferenced blobs; (how many blobs, their digests)."""
        for attempt in range(GC_ROW_ATTEMPTS):
            removed: set[str] = set()
            try:
                with self.db.session() as s:
                    used_projections = set(s.scalars(select(m.AdapterVersion.projection_id)))
                    for p in s.scalars(select(m.Projection)):
                        if p.id not in used_projections:
                            s.delete(p)
                    # the datasets of jobs that ended before a job's end dropped its dataset (forget)
                    s.execute(update(m.Job).where(m.Job.status.in_(FINAL_JOB_STATUSES), m.Job.dataset_sha256
                                                  .is_not(None)).values(dataset_sha256=None))
                    s.flush()
                    referenced = self._referenced(s)
                    for blob in s.scalars(select(m.Blob)):
                        if blob.sha256 not in referenced and blob.kind in (*VERSION_BLOBS, job_checkpoints.CHECKPOINT,
                                                                           job_checkpoints.DATASET):
                            s.delete(blob)
                            removed.add(blob.sha256)
                return len(removed), removed
            except DbIntegrityError:  # a publish referenced a blob or projection being deleted: read again
                if attempt == GC_ROW_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable: the last attempt returns or raises")

    def fsck(self, *, repair: bool = False, force: bool = False, grace_s: float = GC_GRACE_S,
             said: Callable[[str], None] | None = None) -> dict[str, list[str]]:
        """Report (and with ``repair``, fix) disagreement between the database and storage.

        missing: referenced blobs absent from storage (repair: their versions are marked verification failed; a
        download file built from a version is forgotten instead, and built again when next asked for);
        corrupted: blobs whose bytes do not match their name (repair: deleted and their versions marked failed, or
        forgotten as above);
        database: what the database's own check finds (SQLite's quick_check: a file copied over a running
        registry, or damaged; no repair: restore a backup);
        deep_json: stored JSON (metrics, evaluation or audit details, ...) nested more than MAX_JSON_DEPTH levels,
        taken before that limit, which replies cannot carry (repair: cut there, registry.services.stored_json);
        orphans: stored blobs the database does not know (repair: deleted as gc deletes them, beside a serving
        registry: only those older than ``grace_s``, after a last look, and refused unless ``force`` when the
        database looks like another registry's);
        partial_blobs, stale_uploads: what a process killed mid-publish left behind, over an hour old (storage's
        temporary files; request folders in this machine's temp directory) (repair: deleted).
        Reading every blob happens outside any transaction (storage is not transactional); the repair's marks are
        one transaction. ``said`` hears what the repair did, a line each (it said nothing: an operator's walk,
        session 43).
        """
        with self.db.session() as s:
            known = set(s.scalars(select(m.Blob.sha256)))
        present = set(self.blobs.digests())
        deep = too_deep_values(self.db)
        report: dict[str, list[str]] = {"missing": sorted(known - present), "corrupted": [],
                                        "orphans": sorted(present - known), "database": self.db.integrity_problems(),
                                        "deep_json": [str(value) for value in deep],
                                        "partial_blobs": self.blobs.leftovers(LEFTOVER_AGE_S),
                                        "stale_uploads": [p.name for p in _stale_uploads()]}
        for digest in sorted(known & present):
            try:
                self.blobs.get(digest)
            except IntegrityError:
                report["corrupted"].append(digest)
        if repair:
            if not force:
                refuse_if_copied_away(self.db, "vera fsck --repair")
            self._repair(report, deep, force=force, grace_s=grace_s, said=said or (lambda _: None))
        return report

    def _repair(self, report: dict[str, list[str]], deep: list[DeepValue], *, force: bool, grace_s: float,
                said: Callable[[str], None]) -> None:
        deleted, young = self._delete_unknown(report["orphans"], expected=set(), grace_s=grace_s, force=force,
                                              command="vera fsck --repair")
        if report["orphans"]:
            said(f"deleted {counted(deleted, 'orphan file')}" + (f", kept {young:,} younger than {grace_s:g} s (a "
                                                                  "publish in progress may own them)" if young else ""))
        for digest in report["corrupted"]:
            self.blobs.delete(digest)
            said(f"deleted the corrupted file {digest}")
        if leftovers := _remove_leftovers(self.blobs):
            said(f"deleted {counted(leftovers, 'leftover')} of killed publishes")
        if cut := cut_too_deep(self.db, deep):
            said(f"cut {counted(cut, 'JSON value')} at {MAX_JSON_DEPTH} levels")
        bad = report["missing"] + report["corrupted"]
        if not bad:
            return
        with self.db.session() as s:
            # a download form with a bad file is forgotten whole, and built again on the next request
            for version_id, form in s.execute(select(m.VersionFile.version_id, m.VersionFile.form)
                                              .where(m.VersionFile.sha256.in_(bad)).distinct()).all():
                forget(s, version_id, form)
            s.execute(delete(m.Blob).where(m.Blob.sha256.in_(bad), m.Blob.kind == DERIVED))
            for v in s.scalars(select(m.AdapterVersion).join(m.Projection).where(or_(
                    m.AdapterVersion.vectors_sha256.in_(bad), m.Projection.blob_sha256.in_(bad)))):
                v.verification_status, v.verified_at = "failed", datetime.now(UTC)
                v.verification_report = {"status": "failed", "checks": {"fsck": {
                    "ok": False, "error": "a blob of this version is missing or corrupted"}}}
                said(f"marked {version_ref(v)} failed: a file of it is missing or was corrupted. Copy the file back "
                     f"from a backup of the blob folder (e.g. `rsync -a --ignore-existing BACKUP/blobs/ "
                     f"{self.blobs.url}/`) and `vera verify {version_ref(v)}`, or publish the version again")


def refuse_if_copied_away(db: Database, command: str) -> None:
    """InvalidInput, before anything is deleted, when ``db`` was copied elsewhere (`vera db copy` marks a SQLite
    source) and nothing was written to it since: a command that found the old file again (no VERA_DATABASE_URL)
    deleted the blobs published on the copy since, by the files it did not know, by the rows it collected first
    (bytes the copy published again), and after a retention's deletes had hidden the mark (an operator's walk and
    its re-check, session 43)."""
    copy = copied_away(db)
    if copy is not None:
        raise InvalidInput(
            f"This database was copied into {copy.target} on {copy.at:%Y-%m-%d %H:%M} UTC (`vera db copy`), and "
            "nothing was written to it since. If the registry runs on that copy now, this database is stale, and "
            "collecting here would delete files published there since. Nothing was deleted. Point VERA_DATABASE_URL "
            f"at the live database (check the variable's spelling); if this one is the live one, `{command} "
            "--force`.")


#: Leftovers younger than this may belong to a publish still running.
LEFTOVER_AGE_S = 3600.0


def _stale_uploads() -> list[Path]:
    cutoff = time.time() - LEFTOVER_AGE_S
    root = Path(tempfile.gettempdir())
    return sorted(p for p in root.glob(f"{UPLOAD_PREFIX}*") if p.is_dir() and p.stat().st_mtime < cutoff)


def _remove_leftovers(blobs: BlobStore) -> int:
    """Delete what killed publishes left behind (over an hour old); return how many."""
    partial, uploads = blobs.leftovers(LEFTOVER_AGE_S), _stale_uploads()
    for name in partial:
        blobs.remove_leftover(name)
    for folder in uploads:
        shutil.rmtree(folder, ignore_errors=True)
    return len(partial) + len(uploads)

"""Versions once published: look them up, build their files, move aliases, yank, delete, and read the audit log.
Each public method is one transaction; versions' bytes never change."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from registry.domain.errors import Conflict, InvalidInput, NotFound
from registry.domain.schemas import AuditEventInfo, Ref, VersionInfo, alias_problem, check_yank_reason
from registry.services.file_cache import BuiltFiles, FileCache
from registry.services.lookup import (
    LATEST,
    layer_in_features,
    move_latest,
    projection_spec,
    resolve,
    resolve_info,
    version_info,
    version_ref,
    version_tensors,
)
from registry.services.moves import refuse_protected, resolve_locked
from registry.services.validation import ProjectionBudget
from registry.store import models as m
from registry.store.blobs import BlobStore
from registry.store.database import Database
from vera_core.config import PEFT_GENERATOR, VeraConfig
from vera_core.errors import VeraConfigError, VeraError
from vera_core.folders import write_adapter_files
from vera_core.keys import META_IN_FEATURES, PROJECTION_KEYS
from vera_core.lora_options import LoraExport

if TYPE_CHECKING:  # torch: imported by what builds files, not when a server or command starts
    from vera_core.serialization import Streamed


class Versions:
    def __init__(self, db: Database, blobs: BlobStore, *, budget: ProjectionBudget,
                 cache: FileCache | None = None) -> None:
        self.db, self.blobs, self.budget = db, blobs, budget
        self.cache = cache if cache is not None else FileCache()

    def get(self, ref: str | Ref) -> VersionInfo:
        with self.db.session() as s:
            return resolve_info(s, ref)[1]  # its aliases, tags, downloads and properties in the version's query

    def vera_config(self, ref: str | Ref) -> tuple[VersionInfo, VeraConfig]:
        """The version and its VeRA config (as its adapter_config.json says, with its projection's generator)."""
        with self.db.session() as s:
            v, info = resolve_info(s, ref)
            return info, _config(v)

    def files(
        self, ref: str | Ref, *, with_projection: bool = False, seed_only: bool = False, as_lora: bool = False,
        lora: LoraExport | None = None,
    ) -> tuple[VersionInfo, dict[str, bytes]]:
        """The PEFT directory's files as bytes (see ``built``)."""
        info, built = self.built(ref, with_projection=with_projection, seed_only=seed_only, as_lora=as_lora,
                                 lora=lora)
        return info, dict(built.files)

    def built(
        self, ref: str | Ref, *, with_projection: bool = False, seed_only: bool = False, as_lora: bool = False,
        lora: LoraExport | None = None,
    ) -> tuple[VersionInfo, BuiltFiles]:
        """The PEFT directory's files as bytes, with their SHA-256. By default, files PEFT loads correctly: seed-only
        (tiny) where PEFT's own generator regenerates the projections, A and B materialised otherwise.
        ``with_projection`` always materialises them; ``seed_only`` always leaves them out (for vera_core: a
        portable-generator adapter is then written so that PEFT refuses it, see vera_core.config.SEED_ONLY_PEFT_TYPE). A
        seed-only fetch of a version whose projections are not seed-reproducible is refused: the seed alone would give
        the wrong matrices. ``as_lora`` gives the equivalent rank-r LoRA in PEFT's LoRA format instead (vera_core.lora;
        ``lora`` caps its rank and sets its dtype). The same version and options always give the same bytes, so they are
        built once and then served from the file cache (registry.services.file_cache) until evicted.
        """
        from vera_core import AdapterFiles
        from vera_core.checkpoint import adapter_file_bytes
        from vera_core.lora import lora_export_work, lora_file_bytes

        _check_options(with_projection=with_projection, seed_only=seed_only)
        with self.db.session() as s:
            v = resolve(s, ref)
            info = version_info(s, v)
            if seed_only and not as_lora and not v.seed_reproducible:
                raise Conflict(f"{info.ref} is not seed-reproducible: its projections are stored, and the seed alone "
                               "would regenerate others. Fetch it without --seed-only.")
            materialise = _materialises(v, with_projection=with_projection, seed_only=seed_only, as_lora=as_lora)
            # the row's id, content and time (ids are never given twice since 0028, but a database copied or
            # restored over this process's memory may hold other rows under the same ids)
            export = (lora or LoraExport()) if as_lora else None
            key = (v.id, v.vectors_sha256, v.created_at, materialise, export)
            cached = self.cache.get(key)
            if cached is not None:
                return info, cached
            tensors, metadata = version_tensors(self.blobs, v, with_projection=materialise,
                                                budget=self.budget)
            if as_lora and (sizes := layer_in_features(v, tensors, metadata)):  # PEFT-written: the declared base's
                metadata = {**metadata, META_IN_FEATURES: sizes}
            config = _config(v)
        if as_lora:
            a, b = tensors.pop(PROJECTION_KEYS[0]), tensors.pop(PROJECTION_KEYS[1])
            adapter = AdapterFiles(config, tensors, metadata)
            with _exporting(info):
                self.budget.check_export(lora_export_work(adapter, a, b, lora), info.ref, in_memory=True)
                with self.budget.working():  # a slot of costly work: at most VERA_CONCURRENT_GENERATIONS at once
                    files = lora_file_bytes(adapter, a, b, lora)
        else:
            config = config.replace(save_projection=materialise)
            files = adapter_file_bytes(config, tensors, metadata, v.projection_fingerprint)
        built = BuiltFiles.of(files)
        self.cache.put(key, built)
        return info, built

    def write_streamed(self, ref: str | Ref, folder: Path, *, with_projection: bool, seed_only: bool,
                       lora: LoraExport | None = None) -> dict[str, Path] | None:
        """The form's files written into ``folder`` (the same bytes as ``built``) piece by piece: for a VeRA form
        that materialises projections the seed regenerates, A and B generated in row blocks and written as they
        come, never whole (a 7B-scale export holds a few MB); for a LoRA export (``lora``), each layer's factors
        computed and written in row blocks (vera_core.lora.write_lora_files: A and B plus one layer held). None for
        every other form (``built`` builds those: small). Projections stored rather than regenerated (a version
        whose seed does not give its A and B) are copied from their blob in row blocks the same way."""
        import torch

        from vera_core.checkpoint import write_adapter_files_streamed
        from vera_core.projection import projection_blocks
        from vera_core.serialization import Streamed

        _check_options(with_projection=with_projection, seed_only=seed_only)
        if lora is not None:
            return self._write_lora(ref, folder, lora)
        with self.db.session() as s:
            v = resolve(s, ref)
            if not _materialises(v, with_projection=with_projection, seed_only=seed_only, as_lora=False):
                return None
            spec, stored = projection_spec(v.projection), v.projection.blob_sha256
            tensors, metadata = version_tensors(self.blobs, v, with_projection=False, budget=self.budget)
            config = _config(v).replace(save_projection=True)
            fingerprint = v.projection_fingerprint
        if stored is not None:  # A and B as published: copied from their blob in row blocks
            with blob_file(self.blobs, stored, folder) as path, open(path, "rb") as projections:
                return write_adapter_files_streamed(folder, config, {**tensors, **{
                    key: stored_rows(projections, key) for key in PROJECTION_KEYS}}, metadata, fingerprint)
        a, b = projection_blocks(spec)
        streamed: dict[str, torch.Tensor | Streamed] = {
            **tensors, PROJECTION_KEYS[0]: Streamed(torch.float32, (spec.r, spec.max_in), a),
            PROJECTION_KEYS[1]: Streamed(torch.float32, (spec.max_out, spec.r), b)}
        with self.budget.generating(spec):
            return write_adapter_files_streamed(folder, config, streamed, metadata, fingerprint)

    def _write_lora(self, ref: str | Ref, folder: Path, lora: LoraExport) -> dict[str, Path]:
        from vera_core import AdapterFiles
        from vera_core.lora import lora_export_work, write_lora_files

        with self.db.session() as s:
            v = resolve(s, ref)
            info = version_info(s, v)
            tensors, metadata = version_tensors(self.blobs, v, with_projection=True, budget=self.budget)
            if sizes := layer_in_features(v, tensors, metadata):  # PEFT-written: the declared base's
                metadata = {**metadata, META_IN_FEATURES: sizes}
            config = _config(v)
        a, b = tensors.pop(PROJECTION_KEYS[0]), tensors.pop(PROJECTION_KEYS[1])
        adapter = AdapterFiles(config, tensors, metadata)
        with _exporting(info):  # (the size of an export whose options do not fit the version is not asked)
            self.budget.check_export(lora_export_work(adapter, a, b, lora), info.ref)
            with self.budget.working():  # a slot of costly work: at most VERA_CONCURRENT_GENERATIONS at once
                return write_lora_files(folder, adapter, a, b, lora)

    def fetch(self, ref: str | Ref, out_dir: str | os.PathLike[str], *, with_projection: bool = False,
              seed_only: bool = False, as_lora: bool = False, lora: LoraExport | None = None) -> Path:
        """Write the version's PEFT directory to ``out_dir`` (see ``files``)."""
        _, files = self.files(ref, with_projection=with_projection, seed_only=seed_only, as_lora=as_lora,
                              lora=lora)
        root = Path(out_dir)
        write_adapter_files(root, files)
        return root

    def set_alias(self, ref: str | Ref, alias: str, *, actor: str, protected_too: bool = False) -> VersionInfo:
        """Point ``alias`` of the adapter at the version ``ref`` names (``latest`` is managed by the registry).
        An alias the owner protects is refused (Forbidden: refuse_protected) unless ``protected_too`` says the caller
        administers the owner: the safe default, so that a caller who forgets to decide cannot bypass protection."""
        if (problem := alias_problem(alias, new=False)) is not None:
            raise InvalidInput(problem)
        with self.db.session() as s:
            v = resolve_locked(s, ref)
            if not protected_too:
                refuse_protected(s, v.adapter.owner, [alias], f"point it at a version (here {version_ref(v)})")
            row = s.scalar(select(m.Alias).where(m.Alias.adapter_id == v.adapter_id, m.Alias.name == alias))
            before = None
            if row is None and (problem := alias_problem(alias)) is not None:  # (one set before 2026-12-06 moves)
                raise InvalidInput(problem)
            if row is None:
                s.add(m.Alias(adapter_id=v.adapter_id, name=alias, version_id=v.id))
            else:
                before, row.version_id, row.updated_at = row.version_id, v.id, datetime.now(UTC)
            previous = None if before is None else s.scalar(
                select(m.AdapterVersion.version).where(m.AdapterVersion.id == before))
            # previous_version: the number it named before (what a rollback needs); previous_version_id: its row id,
            # kept for readers of the audit log from before previous_version was added
            s.add(m.AuditEvent(actor=actor, action="alias", target=f"{v.adapter.owner}/{v.adapter.name}@{alias}",
                               detail={"version": v.version, "previous_version": previous,
                                       "previous_version_id": before}))
            s.flush()
            return version_info(s, v)

    def remove_alias(self, adapter: str, alias: str, *, actor: str, protected_too: bool = False) -> None:
        """Remove ``alias`` of the adapter; without ``protected_too``, one the owner protects is refused."""
        ref = Ref.parse(adapter)
        if alias == LATEST:
            raise InvalidInput("'latest' is managed by the registry and cannot be removed.")
        with self.db.session() as s:
            v = resolve_locked(s, Ref(owner=ref.owner, name=ref.name, alias=alias))
            if not protected_too:
                refuse_protected(s, v.adapter.owner, [alias], "remove it")
            row = s.scalar(select(m.Alias).where(m.Alias.adapter_id == v.adapter_id, m.Alias.name == alias))
            s.delete(row)
            s.add(m.AuditEvent(actor=actor, action="alias-remove", target=f"{ref.owner}/{ref.name}@{alias}",
                               detail={"version": v.version}))  # the version it named

    def yank(self, ref: str | Ref, *, actor: str, yanked: bool = True, reason: str | None = None) -> VersionInfo:
        """Hide a version from listings and from ``latest``; it stays fetchable by number. ``reason``: why, one line
        (PEP 592's yank reason, shown to whoever fetches it); a yank again changes it, an unyank clears it."""
        reason = check_yank_reason(reason, yanked)
        with self.db.session() as s:
            v = resolve_locked(s, ref)
            v.yanked, v.yank_reason = yanked, reason
            s.flush()
            move_latest(s, v.adapter)
            s.add(m.AuditEvent(actor=actor, action="yank" if yanked else "unyank",
                               target=version_ref(v), detail={"reason": reason} if reason else {}))
            s.flush()
            return version_info(s, v)

    def delete(self, ref: str | Ref, *, actor: str, keep_aliased: bool = False, protected_too: bool = False,
               kept: Callable[[Session, m.AdapterVersion], str | None] | None = None,
               detail: dict[str, Any] | None = None) -> None:
        """Delete one version (its aliases go with it; ``latest`` moves back; versions fine-tuned from it keep the
        ref it had, as ``parent_deleted``, and copies of it, as ``copied_from_deleted``). Blobs go at the next
        gc(). ``keep_aliased`` (retention) refuses, with Conflict, a version that an alias other than ``latest``
        points at; ``kept`` (an adapter's own retention rule), one it gives a reason to keep, asked with the adapter
        locked; without ``protected_too``, one that an alias the owner protects points at is refused
        (Forbidden). ``detail``: the audit event's (why it was deleted)."""
        with self.db.session() as s:
            v = resolve_locked(s, ref)
            adapter, target = v.adapter, version_ref(v)
            if not protected_too:
                refuse_protected(s, adapter.owner, s.scalars(select(m.Alias.name).where(m.Alias.version_id == v.id)),
                                 f"delete the version it names ({target})")
            if keep_aliased and (held := s.scalars(select(m.Alias.name).where(
                    m.Alias.version_id == v.id, m.Alias.name != LATEST)).all()):
                raise Conflict(f"{target} is kept: alias {', '.join(sorted(held))} points at it.")
            if kept is not None and (why := kept(s, v)) is not None:
                raise Conflict(f"{target} is kept: {why}.")
            s.execute(delete(m.Alias).where(m.Alias.version_id == v.id))
            s.execute(update(m.AdapterVersion).where(m.AdapterVersion.parent_version_id == v.id)
                      .values(parent_version_id=None))
            s.execute(update(m.AdapterVersion).where(m.AdapterVersion.copied_from_version_id == v.id)
                      .values(copied_from_version_id=None))
            s.delete(v)
            s.flush()
            move_latest(s, adapter)
            s.add(m.AuditEvent(actor=actor, action="delete", target=target, detail=detail or {}))
            if not s.scalar(select(func.count()).select_from(m.AdapterVersion)
                            .where(m.AdapterVersion.adapter_id == adapter.id)):
                s.delete(adapter)

    def delete_adapter(self, adapter: str, *, actor: str, protected_too: bool = False) -> list[str]:
        """Delete every version of ``owner/name``, newest first, each as ``delete`` does (audited one by one, so
        webhooks hear of each), and with the last the adapter; its version numbers are not given again. Returns
        the refs deleted; NotFound if it has none. Without ``protected_too``, an adapter with an alias its owner
        protects is refused whole (Forbidden) before any version goes."""
        ref = Ref.parse_adapter(adapter)
        with self.db.session() as s:
            row = s.scalar(select(m.Adapter).where(m.Adapter.owner == ref.owner, m.Adapter.name == ref.name))
            if row is None:
                raise NotFound(f"No adapter {ref.owner}/{ref.name}.")
            if not protected_too:
                refuse_protected(s, row.owner, s.scalars(select(m.Alias.name).where(m.Alias.adapter_id == row.id)),
                                 "delete the adapter, and with it the version it names")
            numbers = sorted(s.scalars(select(m.AdapterVersion.version).where(
                m.AdapterVersion.adapter_id == row.id)), reverse=True)
        deleted = []
        for number in numbers:
            target = Ref.of(ref.owner, ref.name, version=number)
            with contextlib.suppress(NotFound):  # deleted meanwhile by someone else: gone either way
                self.delete(target, actor=actor, protected_too=protected_too)
                deleted.append(str(target))
        return deleted

    def audit(self, target_prefix: str = "", limit: int = 100) -> list[AuditEventInfo]:
        """The newest audit events whose target starts with ``target_prefix``."""
        with self.db.session() as s:
            rows = s.scalars(select(m.AuditEvent).where(m.AuditEvent.target.startswith(target_prefix))
                             .order_by(m.AuditEvent.id.desc()).limit(limit))
            return [AuditEventInfo(at=e.at, actor=e.actor, action=e.action, target=e.target, detail=e.detail)
                    for e in rows]


@contextlib.contextmanager
def blob_file(blobs: BlobStore, digest: str, scratch: Path) -> Iterator[str]:
    """A local file with the blob's checked bytes: a local store's own file (blobs.verified_local_path), else the
    blob streamed into a temporary file in ``scratch`` (hash-checked on the way; removed afterwards)."""
    local = blobs.verified_local_path(digest)
    if local is not None:
        yield local
        return
    with tempfile.NamedTemporaryFile(dir=scratch, prefix=".blob-", suffix=".tmp") as copy:
        for chunk in blobs.reader(digest):  # IntegrityError at its end if the bytes do not match their name
            copy.write(chunk)
        copy.flush()
        yield copy.name


#: About how many bytes of a stored projection are held at once while a form is written (stored_rows).
STORED_BLOCK_BYTES = 1 << 20


def stored_rows(projections: IO[bytes], key: str) -> Streamed:
    """Tensor ``key`` of a stored projections file open for reading, as row blocks of about STORED_BLOCK_BYTES
    read as they are written (vera_core.serialization.read_rows: plain reads, no memory map)."""
    from vera_core.serialization import read_rows

    return read_rows(projections, key, STORED_BLOCK_BYTES)


def _materialises(v: m.AdapterVersion, *, with_projection: bool, seed_only: bool, as_lora: bool) -> bool:
    """Whether a download form holds A and B: always as LoRA or when asked; by default unless PEFT's own generator
    regenerates them (a seed-only copy PEFT loads correctly)."""
    return as_lora or with_projection or not (seed_only or (v.generator == PEFT_GENERATOR and v.seed_reproducible))


def _config(v: m.AdapterVersion) -> VeraConfig:
    """The version's VeRA config, with the generator its projections come from."""
    return VeraConfig.from_peft_dict({**v.config, "projection_generator": v.generator})


@contextlib.contextmanager
def _exporting(info: VersionInfo) -> Iterator[None]:
    """A LoRA export's errors as the registry's: options that do not fit the version (a rank over r) are invalid
    input; a version that cannot be exported (layer sizes unknown) is a conflict saying how to resolve it."""
    try:
        yield
    except VeraConfigError as exc:
        raise InvalidInput(f"{info.ref}: {exc}") from exc
    except VeraError as exc:
        raise Conflict(f"{info.ref} cannot be exported as LoRA: {exc} Or declare the base model's layer "
                       f"shapes: `vera base register {info.base_model} --config config.json`.") from exc


#: A download form asked with and without A and B at once, refused (by the API's query too, before any form is read).
BOTH_FORMS = ("Ask for either the projections (the API's projection=true, the client's with_projection, `vera fetch "
              "--with-projection`) or a seed-only copy (seed_only, --seed-only), not both.")


def _check_options(*, with_projection: bool, seed_only: bool) -> None:
    if with_projection and seed_only:
        raise InvalidInput(BOTH_FORMS)


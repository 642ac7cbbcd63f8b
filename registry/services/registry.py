"""The registry's domain services. Each public method is one transaction (``Database.session``); helpers flush,
never commit. They return domain objects (registry.domain.schemas), never ORM rows. The API, CLI, Hub sync and dashboard
all call these.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from sqlalchemy import delete, func, or_, select
from sqlalchemy.exc import IntegrityError as DbIntegrityError
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, selectinload

from registry.domain.errors import Conflict, IntegrityError, InvalidInput, NotFound
from registry.domain.schemas import (
    BaseModelInfo,
    Comparison,
    LayerComparison,
    Page,
    Ref,
    VerificationReport,
    VersionInfo,
    check_name,
)
from registry.store import models as m
from registry.store.blobs import BlobStore
from registry.store.database import Database
from vera_core import AdapterFiles, ProjectionSpec, VeraError, fingerprint, generate, read_adapter
from vera_core.checkpoint import (
    META_IN_FEATURES,
    META_SHAPE,
    adapter_file_bytes,
    adapter_metadata,
    write_adapter_files,
)
from vera_core.config import PEFT_GENERATOR, VeraConfig
from vera_core.layer import layer_shape
from vera_core.lora import delta_factors, lora_file_bytes
from vera_core.model import PEFT_PREFIX, PROJECTION_KEYS
from vera_core.serialization import metadata_of, to_bytes
from vera_core.targets import matches_target

MAX_RANK = 65_536
LATEST = "latest"
PUBLISH_ATTEMPTS = 8


def _retryable(exc: Exception) -> bool:
    text = str(exc).lower()
    return isinstance(exc, DbIntegrityError) or "locked" in text or "busy" in text


def _shapes_fingerprint(shapes: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(shapes, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def shapes_of(model: torch.nn.Module) -> dict[str, list[int]]:
    """{module path: [out, in]} of every layer VeRA can adapt."""
    return {name: list(shape) for name, mod in model.named_modules() if name and (shape := layer_shape(mod))}


def _match_path(shapes: dict[str, Any], path: str) -> list[int | None] | None:
    """The base model's shape for an adapted module path (exact, or the base path is a suffix, e.g. without the
    ``bert.`` prefix that a task model adds)."""
    if path in shapes:
        return list(shapes[path])
    hits = [shape for base_path, shape in shapes.items() if path.endswith("." + base_path)]
    return list(hits[0]) if len(hits) == 1 else None


def _declared_layers(shapes: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, tuple[int, int]] | None:
    """(out, in) of every adapted layer from a base model's shapes; None unless all of them are known."""
    sizes: dict[str, tuple[int, int]] = {}
    for key in tensors:
        if key.endswith(".vera_lambda_b"):
            path = key[len(PEFT_PREFIX):-len(".vera_lambda_b")]
            shape = _match_path(shapes, path)
            if shape is None or shape[0] is None or shape[1] is None:
                return None
            sizes[path] = (int(shape[0]), int(shape[1]))
    return sizes


def _in_features_json(sizes: dict[str, tuple[int, int]]) -> str:
    """The META_IN_FEATURES value for layers of known (out, in)."""
    return json.dumps({p: i for p, (_, i) in sizes.items()}, sort_keys=True, separators=(",", ":"))


class Registry:
    """The registry over one database and one blob store."""

    def __init__(self, db: Database, blobs: BlobStore) -> None:
        self.db, self.blobs = db, blobs

    # ---- base models -------------------------------------------------------------------------------------------
    def register_base_model(
        self, *, name: str, revision: str = "", model: torch.nn.Module | None = None,
        shapes: dict[str, list[int]] | None = None,
    ) -> BaseModelInfo:
        """Declare a base model's exact layer shapes, from a model (meta device is fine) or a shapes mapping."""
        if (model is None) == (shapes is None):
            raise InvalidInput("Pass exactly one of model or shapes to register a base model.")
        declared = shapes_of(model) if model is not None else {k: list(v) for k, v in (shapes or {}).items()}
        if not declared:
            raise InvalidInput(f"Base model {name!r} has no nn.Linear or Conv1D layer; nothing could be adapted.")
        with self.db.session() as s:
            row = s.scalar(select(m.BaseModel).where(m.BaseModel.name == name, m.BaseModel.revision == revision))
            fp = _shapes_fingerprint(declared)
            if row is None:
                row = m.BaseModel(name=name, revision=revision, shapes=declared, shapes_fingerprint=fp,
                                  shapes_source="declared")
                s.add(row)
            elif row.shapes_source == "declared" and row.shapes_fingerprint != fp:
                raise Conflict(f"Base model {name}@{revision or 'default'} is already registered with other layer "
                               "shapes; register the new weights under another revision.")
            else:  # implied shapes become declared ones, if they agree
                for path, (out, _) in row.shapes.items():
                    shape = _match_path(declared, path)
                    if shape is None or shape[0] != out:
                        raise Conflict(f"Published adapters imply layer {path!r} with {out} outputs, which these "
                                       f"shapes contradict ({shape}).")
                row.shapes, row.shapes_fingerprint, row.shapes_source = declared, fp, "declared"
            s.flush()
            return self._base_info(row)

    def register_base_model_from_config(self, *, name: str, revision: str = "", config_path: str) -> BaseModelInfo:
        """Exact shapes from a transformers config.json, built on the meta device (no weights, no memory)."""
        from transformers import AutoConfig, AutoModel

        try:
            config = AutoConfig.from_pretrained(config_path)
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"{config_path} is not a transformers config: {exc}") from exc
        with torch.device("meta"):
            model = AutoModel.from_config(config)  # type: ignore[no-untyped-call]
        return self.register_base_model(name=name, revision=revision, model=model)

    def list_base_models(self) -> list[BaseModelInfo]:
        with self.db.session() as s:
            return [self._base_info(b) for b in s.scalars(select(m.BaseModel).order_by(m.BaseModel.name))]

    @staticmethod
    def _base_info(row: m.BaseModel) -> BaseModelInfo:
        return BaseModelInfo(id=row.id, name=row.name, revision=row.revision, shapes_fingerprint=row.shapes_fingerprint,
                             shapes_source=row.shapes_source, layers=len(row.shapes), created_at=row.created_at)

    # ---- publish ------------------------------------------------------------------------------------------------
    def publish(
        self, source: str | os.PathLike[str], *, owner: str, name: str, base_model: str, base_revision: str = "",
        metrics: dict[str, Any] | None = None, tags: Iterable[str] = (), description: str = "",
        published_by: str | None = None, lineage: dict[str, Any] | None = None,
        on_record: Callable[[Session, m.AdapterVersion], None] | None = None,
    ) -> VersionInfo:
        """Validate a PEFT-format adapter directory and record it as the next version of ``owner/name``.

        ``on_record`` runs in the same transaction once the version row exists (Hub sync records its pull there).
        """
        check_name(owner, "Owner")
        check_name(name, "Adapter name")
        tags = sorted({check_name(t, "Tag") for t in tags})
        if not base_model or len(base_model) > 200 or any(ord(c) < 32 for c in base_model):
            raise InvalidInput(f"base_model {base_model!r} must be 1-200 printable characters (a Hub id or a name).")
        metrics = dict(metrics or {})
        try:
            json.dumps(metrics, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"metrics must be a JSON object of finite numbers and strings: {exc}") from exc
        try:
            files = read_adapter(source)
        except VeraError as exc:
            raise InvalidInput(str(exc)) from exc
        if files.spec is None:  # seed-only and written by PEFT: the declared base shapes give the projection size
            files = self._with_declared_shapes(files, base_model, base_revision)
        checked = self._validate(files)
        written: list[str] = []
        try:
            meta = {"format": "pt", **{k: v for k, v in files.metadata.items() if k == META_IN_FEATURES}}
            vectors = to_bytes({k: v.float().contiguous() for k, v in checked.vectors.items()}, meta)
            written.append(self._put_new(vectors))
            projection_blob = None
            if not checked.reproducible:
                a, b = (files.tensors[k].float() for k in PROJECTION_KEYS)
                projection_blob = to_bytes({PROJECTION_KEYS[0]: a, PROJECTION_KEYS[1]: b}, {"format": "pt"})
                written.append(self._put_new(projection_blob))
            for attempt in range(PUBLISH_ATTEMPTS):
                try:
                    with self.db.session() as s:
                        info = self._record(
                            s, files, checked, owner=owner, name=name, base_model=base_model,
                            base_revision=base_revision, metrics=metrics, tags=tags, description=description,
                            published_by=published_by or owner, lineage=lineage or {}, vectors=vectors,
                            projection_blob=projection_blob, on_record=on_record)
                    # a failed concurrent publish of identical bytes may have removed a blob we found present
                    for data in (vectors, projection_blob):
                        if data is not None and not self.blobs.exists(hashlib.sha256(data).hexdigest()):
                            self.blobs.put(data)
                    return info
                except (DbIntegrityError, OperationalError) as exc:
                    # a concurrent publish took the version number (or, on SQLite, the write lock): retry
                    if attempt == PUBLISH_ATTEMPTS - 1 or not _retryable(exc):
                        raise
                    time.sleep(0.05 * (attempt + 1))
            raise AssertionError("unreachable")
        except BaseException:
            self._discard_unreferenced([d for d in written if d])
            raise

    def _put_new(self, data: bytes) -> str:
        """Store a blob; return its digest if this call created it (so a failure can remove it), else ''."""
        digest = hashlib.sha256(data).hexdigest()
        existed = self.blobs.exists(digest)
        self.blobs.put(data)
        return "" if existed else digest

    def _discard_unreferenced(self, digests: list[str]) -> None:
        if not digests:
            return
        with self.db.session() as s:
            known = set(s.scalars(select(m.Blob.sha256).where(m.Blob.sha256.in_(digests))))
        for digest in digests:
            if digest not in known:
                self.blobs.delete(digest)

    class _Checked:
        def __init__(self, vectors: dict[str, torch.Tensor], spec: ProjectionSpec, fp: str, reproducible: bool,
                     layer_outs: dict[str, int]) -> None:
            self.vectors, self.spec, self.fingerprint = vectors, spec, fp
            self.reproducible, self.layer_outs = reproducible, layer_outs

    def _with_declared_shapes(self, files: AdapterFiles, base_model: str, base_revision: str) -> AdapterFiles:
        """PEFT sizes A and B to the largest adapted layer; with the base's declared shapes the registry can too."""
        with self.db.session() as s:
            row = s.scalar(select(m.BaseModel).where(m.BaseModel.name == base_model,
                                                     m.BaseModel.revision == base_revision,
                                                     m.BaseModel.shapes_source == "declared"))
            shapes = dict(row.shapes) if row is not None else None
        if shapes is None:
            return files
        sizes = _declared_layers(shapes, files.tensors)
        if not sizes:
            return files  # _validate explains; the shapes check would name the layer
        max_out, max_in = max(o for o, _ in sizes.values()), max(i for _, i in sizes.values())
        metadata = {**files.metadata, META_SHAPE: f"{files.config.r},{max_in},{max_out}",
                    META_IN_FEATURES: _in_features_json(sizes)}
        return AdapterFiles(files.config, files.tensors, metadata)

    def _validate(self, files: AdapterFiles) -> _Checked:
        cfg = files.config
        if cfg.r > MAX_RANK:
            raise InvalidInput(f"r={cfg.r} exceeds the registry's limit of {MAX_RANK}.")
        for key, tensor in files.tensors.items():
            if not torch.isfinite(tensor).all():
                raise InvalidInput(f"Tensor {key!r} holds NaN or infinite values; the adapter is broken.")
        vectors = {k: v for k, v in files.tensors.items() if k not in PROJECTION_KEYS}
        layer_outs = {k[len(PEFT_PREFIX):-len(".vera_lambda_b")]: int(v.shape[0])
                      for k, v in vectors.items() if k.endswith(".vera_lambda_b")}
        d_layers = {k[len(PEFT_PREFIX):-len(".vera_lambda_d")] for k in vectors if k.endswith(".vera_lambda_d")}
        if set(layer_outs) != d_layers:
            raise InvalidInput(f"Every adapted layer needs both vera_lambda_b and vera_lambda_d; unpaired: "
                               f"{sorted(set(layer_outs) ^ d_layers)[:5]}.")
        stray = sorted(path for path in layer_outs if not matches_target(cfg, path))
        if stray:
            raise InvalidInput(f"Layers {stray[:3]} hold VeRA vectors but target_modules={cfg.target_modules!r} does "
                               "not match them; the config and the tensors come from different adapters.")
        spec = files.spec
        if spec is None:
            raise InvalidInput(
                "The adapter stores neither its projections nor their shape (a seed-only adapter saved by PEFT), so "
                "the registry cannot regenerate or verify them. Save it with save_projection=True, or with "
                "vera_core.save_adapter, or declare its base model's layer shapes first: `vera base register "
                "NAME --config config.json`."
            )
        if spec.max_out < max(layer_outs.values()):
            raise InvalidInput(f"The projection has {spec.max_out} rows but a layer has {max(layer_outs.values())} "
                               "outputs; the adapter's files are inconsistent.")
        a, b = generate(spec)
        regenerated = fingerprint(a, b)
        if files.has_projection:
            fp = fingerprint(*(files.tensors[k] for k in PROJECTION_KEYS))  # what the adapter was trained with
            reproducible = fp == regenerated
        else:
            if files.recorded_fingerprint not in (None, regenerated):
                raise InvalidInput(
                    f"The seed regenerates projections with fingerprint {regenerated}, but the adapter records "
                    f"{files.recorded_fingerprint}: it was trained with other projections. Publish it with "
                    "save_projection=True so the registry can store them."
                )
            reproducible, fp = True, regenerated
        return self._Checked(vectors, spec, fp, reproducible, layer_outs)

    def _record(
        self, s: Session, files: AdapterFiles, checked: _Checked, *, owner: str, name: str, base_model: str,
        base_revision: str, metrics: dict[str, Any], tags: list[str], description: str, published_by: str,
        lineage: dict[str, Any], vectors: bytes, projection_blob: bytes | None,
        on_record: Callable[[Session, m.AdapterVersion], None] | None = None,
    ) -> VersionInfo:
        base = self._base_for_publish(s, base_model, base_revision, checked)
        for data, kind in ((vectors, "vectors"), (projection_blob, "projection")):
            if data is not None:
                digest = hashlib.sha256(data).hexdigest()
                if s.get(m.Blob, digest) is None:
                    s.add(m.Blob(sha256=digest, size=len(data), kind=kind))
        s.flush()
        projection = self._projection_row(s, checked, projection_blob)
        adapter = s.scalar(select(m.Adapter).where(m.Adapter.owner == owner, m.Adapter.name == name))
        if adapter is None:
            adapter = m.Adapter(owner=owner, name=name, description=description)
            s.add(adapter)
            s.flush()
        number = (s.scalar(select(func.max(m.AdapterVersion.version)).where(
            m.AdapterVersion.adapter_id == adapter.id)) or 0) + 1
        cfg = files.config.replace(base_model_name_or_path=base_model, revision=base_revision or None,
                                   save_projection=False, inference_mode=True)
        heads = sum(v.numel() for k, v in checked.vectors.items() if ".vera_lambda_" not in k)
        adapter_params = sum(v.numel() for k, v in checked.vectors.items() if ".vera_lambda_" in k)
        version = m.AdapterVersion(
            adapter_id=adapter.id, version=number, base_model_id=base.id, projection_id=projection.id,
            r=cfg.r, seed=str(cfg.projection_prng_key), generator=cfg.projection_generator, config=cfg.to_peft_dict(),
            vectors_sha256=hashlib.sha256(vectors).hexdigest(), projection_fingerprint=checked.fingerprint,
            seed_reproducible=checked.reproducible, trainable_parameters=adapter_params + heads,
            adapter_parameters=adapter_params, stored_bytes=len(vectors), metrics=metrics, description=description,
            published_by=published_by, source_job_id=lineage.get("job_id"),
            source_hub_repo=lineage.get("hub_repo"), source_hub_commit=lineage.get("hub_commit"),
        )
        version.tags = [m.VersionTag(tag=t) for t in tags]
        s.add(version)
        s.flush()  # the unique (adapter, version) constraint catches a concurrent publish here
        if on_record is not None:
            on_record(s, version)
        self._move_latest(s, adapter)
        s.add(m.AuditEvent(actor=published_by, action="publish", target=f"{owner}/{name}:{number}",
                           detail={"vectors": version.vectors_sha256, "base_model": base_model}))
        s.flush()
        return self._info(s, version)

    def _base_for_publish(self, s: Session, name: str, revision: str, checked: _Checked) -> m.BaseModel:
        row = s.scalar(select(m.BaseModel).where(m.BaseModel.name == name, m.BaseModel.revision == revision))
        if row is None:
            implied = {path: [out, None] for path, out in sorted(checked.layer_outs.items())}
            row = m.BaseModel(name=name, revision=revision, shapes=implied, shapes_source="implied",
                              shapes_fingerprint=_shapes_fingerprint(implied))
            s.add(row)
            s.flush()
            return row
        problems = []
        max_in = 0
        for path, out in checked.layer_outs.items():
            shape = _match_path(row.shapes, path)
            if shape is None:
                if row.shapes_source == "declared":
                    problems.append(f"{path}: no such layer")
                continue
            if shape[0] != out:
                problems.append(f"{path}: {out} outputs, the base has {shape[0]}")
            max_in = max(max_in, shape[1] or 0)
        if row.shapes_source == "declared" and max_in and max_in != checked.spec.max_in:
            problems.append(f"projection sized for {checked.spec.max_in} inputs, the adapted layers have {max_in}")
        if problems:
            raise InvalidInput(f"The adapter does not fit base model {name}@{revision or 'default'}: "
                               + "; ".join(problems[:5]) + ". Check --base-model and the adapter's target_modules.")
        if row.shapes_source == "implied":
            merged = dict(row.shapes)
            merged.update({p: [o, None] for p, o in checked.layer_outs.items() if _match_path(merged, p) is None})
            if merged != row.shapes:
                row.shapes, row.shapes_fingerprint = merged, _shapes_fingerprint(merged)
        return row

    def _projection_row(self, s: Session, checked: _Checked, blob: bytes | None) -> m.Projection:
        spec = checked.spec
        key = (m.Projection.generator == spec.generator, m.Projection.seed == str(spec.seed), m.Projection.r == spec.r,
               m.Projection.max_in == spec.max_in, m.Projection.max_out == spec.max_out,
               m.Projection.fingerprint == checked.fingerprint)
        row = s.scalar(select(m.Projection).where(*key))
        if row is None:
            try:
                with s.begin_nested():
                    row = m.Projection(generator=spec.generator, seed=str(spec.seed), r=spec.r, max_in=spec.max_in,
                                       max_out=spec.max_out, fingerprint=checked.fingerprint,
                                       reproducible=checked.reproducible,
                                       blob_sha256=hashlib.sha256(blob).hexdigest() if blob else None)
                    s.add(row)
            except DbIntegrityError:  # created concurrently: use that one
                row = s.scalar(select(m.Projection).where(*key))
                assert row is not None
        return row

    def _move_latest(self, s: Session, adapter: m.Adapter) -> None:
        newest = s.scalar(select(m.AdapterVersion).where(m.AdapterVersion.adapter_id == adapter.id,
                                                         m.AdapterVersion.yanked.is_(False))
                          .order_by(m.AdapterVersion.version.desc()).limit(1))
        alias = s.scalar(select(m.Alias).where(m.Alias.adapter_id == adapter.id, m.Alias.name == LATEST))
        if newest is None:
            if alias is not None:
                s.delete(alias)
            return
        if alias is None:
            s.add(m.Alias(adapter_id=adapter.id, name=LATEST, version_id=newest.id))
        elif alias.version_id != newest.id:
            alias.version_id, alias.updated_at = newest.id, datetime.now(UTC)

    # ---- lookup -------------------------------------------------------------------------------------------------
    def _resolve(self, s: Session, ref: str | Ref) -> m.AdapterVersion:
        ref = Ref.parse(ref) if isinstance(ref, str) else ref
        adapter = s.scalar(select(m.Adapter).where(m.Adapter.owner == ref.owner, m.Adapter.name == ref.name))
        if adapter is None:
            raise NotFound(f"No adapter {ref.owner}/{ref.name}; `vera ls --owner {ref.owner}` lists that owner's.")
        if ref.version is not None:
            version = s.scalar(select(m.AdapterVersion).where(m.AdapterVersion.adapter_id == adapter.id,
                                                              m.AdapterVersion.version == ref.version))
            if version is None:
                raise NotFound(f"{ref.owner}/{ref.name} has no version {ref.version}.")
            return version
        alias_name = ref.alias or LATEST
        alias = s.scalar(select(m.Alias).where(m.Alias.adapter_id == adapter.id, m.Alias.name == alias_name))
        if alias is None:
            raise NotFound(f"{ref.owner}/{ref.name} has no alias {alias_name!r}.")
        version = s.get(m.AdapterVersion, alias.version_id)
        assert version is not None
        return version

    def get(self, ref: str | Ref) -> VersionInfo:
        with self.db.session() as s:
            return self._info(s, self._resolve(s, ref))

    def _info(self, s: Session, v: m.AdapterVersion, aliases: list[str] | None = None) -> VersionInfo:
        if aliases is None:
            aliases = sorted(s.scalars(select(m.Alias.name).where(m.Alias.version_id == v.id)))
        return VersionInfo(
            owner=v.adapter.owner, name=v.adapter.name, version=v.version,
            ref=f"{v.adapter.owner}/{v.adapter.name}:{v.version}", aliases=aliases, base_model=v.base_model.name,
            base_revision=v.base_model.revision, r=v.r, seed=int(v.seed), generator=v.generator,
            projection_fingerprint=v.projection_fingerprint, seed_reproducible=v.seed_reproducible,
            target_modules=v.config.get("target_modules"), trainable_parameters=v.trainable_parameters,
            adapter_parameters=v.adapter_parameters, stored_bytes=v.stored_bytes, vectors_sha256=v.vectors_sha256,
            metrics=v.metrics, tags=[t.tag for t in v.tags], description=v.description,
            published_by=v.published_by, created_at=v.created_at, yanked=v.yanked,
            verification_status=v.verification_status, verified_at=v.verified_at,
            lineage={k: val for k, val in (("job_id", v.source_job_id), ("hub_repo", v.source_hub_repo),
                                           ("hub_commit", v.source_hub_commit)) if val is not None},
        )

    # ---- fetch --------------------------------------------------------------------------------------------------
    def _tensors(self, v: m.AdapterVersion, *, with_projection: bool) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """The version's tensors (with A and B if asked) and the safetensors metadata its files carry."""
        data = self.blobs.get(v.vectors_sha256)
        tensors = load_safetensors(data)
        p = v.projection
        spec = ProjectionSpec(p.generator, int(p.seed), p.r, p.max_in, p.max_out)
        if with_projection:
            if p.blob_sha256 is not None:
                tensors.update(load_safetensors(self.blobs.get(p.blob_sha256)))
            else:
                a, b = generate(spec)
                tensors.update({PROJECTION_KEYS[0]: a, PROJECTION_KEYS[1]: b})
        metadata = adapter_metadata(spec, v.projection_fingerprint, metadata_of(data).get(META_IN_FEATURES))
        return tensors, metadata

    @staticmethod
    def _declared_in_features(v: m.AdapterVersion, tensors: dict[str, torch.Tensor]) -> str | None:
        """Layer input sizes from the base model's declared shapes, for adapters that do not record them (those
        PEFT wrote); None unless every adapted layer is known."""
        sizes = _declared_layers(v.base_model.shapes, tensors)
        return _in_features_json(sizes) if sizes else None

    def files(
        self, ref: str | Ref, *, with_projection: bool = False, seed_only: bool = False, as_lora: bool = False
    ) -> tuple[VersionInfo, dict[str, bytes]]:
        """The PEFT directory's files as bytes. By default, files PEFT loads correctly: seed-only (tiny) where PEFT's
        own generator regenerates the projections, A and B materialised otherwise. ``with_projection`` always
        materialises them; ``seed_only`` always leaves them out (for vera_core: a portable-generator adapter is then
        written so that PEFT refuses it, see vera_core.config.SEED_ONLY_PEFT_TYPE). A seed-only fetch of a version
        whose projections are not seed-reproducible is refused: the seed alone would give the wrong matrices.
        ``as_lora`` gives the equivalent rank-r LoRA in PEFT's LoRA format instead (vera_core.lora). The same
        version and options always give the same bytes.
        """
        if with_projection and seed_only:
            raise InvalidInput("Ask for either the projections (with_projection) or a seed-only copy, not both.")
        with self.db.session() as s:
            v = self._resolve(s, ref)
            info = self._info(s, v)
            if seed_only and not as_lora and not v.seed_reproducible:
                raise Conflict(f"{info.ref} is not seed-reproducible: its projections are stored, and the seed alone "
                               "would regenerate others. Fetch it without --seed-only.")
            materialise = as_lora or with_projection or not (
                seed_only or (v.generator == PEFT_GENERATOR and v.seed_reproducible))
            tensors, metadata = self._tensors(v, with_projection=materialise)
            if as_lora and META_IN_FEATURES not in metadata:  # PEFT-written: sizes from the declared base, if any
                sizes = self._declared_in_features(v, tensors)
                metadata = {**metadata, META_IN_FEATURES: sizes} if sizes else metadata
            config = VeraConfig.from_peft_dict({**v.config, "projection_generator": v.generator})
        if as_lora:
            a, b = tensors.pop(PROJECTION_KEYS[0]), tensors.pop(PROJECTION_KEYS[1])
            try:
                return info, lora_file_bytes(AdapterFiles(config, tensors, metadata), a, b)
            except VeraError as exc:
                raise Conflict(f"{info.ref} cannot be exported as LoRA: {exc} Or declare the base model's layer "
                               f"shapes: `vera base register {info.base_model} --config config.json`.") from exc
        config = config.replace(save_projection=materialise)
        return info, adapter_file_bytes(config, tensors, metadata, v.projection_fingerprint)

    def fetch(self, ref: str | Ref, out_dir: str | os.PathLike[str], *, with_projection: bool = False,
              seed_only: bool = False, as_lora: bool = False) -> Path:
        """Write the version's PEFT directory to ``out_dir`` (see ``files``)."""
        _, files = self.files(ref, with_projection=with_projection, seed_only=seed_only, as_lora=as_lora)
        root = Path(out_dir)
        write_adapter_files(root, files)
        return root

    # ---- verify -------------------------------------------------------------------------------------------------
    def verify(self, ref: str | Ref) -> VerificationReport:
        """Regenerate the projections and compare fingerprints; re-hash the blobs; check shapes against the base."""
        checks: dict[str, dict[str, Any]] = {}
        with self.db.session() as s:
            v = self._resolve(s, ref)
            info_ref = f"{v.adapter.owner}/{v.adapter.name}:{v.version}"
            p = v.projection
            spec = ProjectionSpec(p.generator, int(p.seed), p.r, p.max_in, p.max_out)
            regenerated = fingerprint(*generate(spec))
            if v.seed_reproducible:
                checks["projection"] = {"ok": regenerated == v.projection_fingerprint,
                                        "recorded": v.projection_fingerprint,
                                        "regenerated": regenerated}
            else:
                checks["projection"] = {"ok": True, "seed_reproducible": False, "regenerated": regenerated,
                                        "recorded": v.projection_fingerprint,
                                        "note": "projections are stored; the seed does not regenerate them"}
            for label, digest in (("vectors_blob", v.vectors_sha256), ("projection_blob", p.blob_sha256)):
                if digest is None:
                    continue
                try:
                    data = self.blobs.get(digest)
                    checks[label] = {"ok": True, "sha256": digest, "bytes": len(data)}
                    if label == "projection_blob":
                        stored = load_safetensors(data)
                        ok = fingerprint(*(stored[k] for k in PROJECTION_KEYS)) == v.projection_fingerprint
                        checks[label]["ok"] = ok
                except (NotFound, IntegrityError) as exc:
                    checks[label] = {"ok": False, "sha256": digest, "error": str(exc)}
            checks["shapes"] = self._check_shapes(v)
            status = "passed" if all(c["ok"] for c in checks.values()) else "failed"
            now = datetime.now(UTC)
            report = VerificationReport(ref=info_ref, status=status, checked_at=now, checks=checks)
            v.verification_status, v.verified_at = status, now
            v.verification_report = report.model_dump(mode="json")
            return report

    def last_verification(self, ref: str | Ref) -> dict[str, Any]:
        """The report recorded by the last verify(), or the status 'unverified'."""
        with self.db.session() as s:
            v = self._resolve(s, ref)
            return v.verification_report or {"status": v.verification_status}

    def list_projections(self) -> list[dict[str, Any]]:
        """Every shared projection with how many versions use it."""
        with self.db.session() as s:
            uses = dict(s.execute(select(m.AdapterVersion.projection_id, func.count())
                                  .group_by(m.AdapterVersion.projection_id)).tuples().all())
            return [{"id": p.id, "generator": p.generator, "seed": int(p.seed), "r": p.r, "max_in": p.max_in,
                     "max_out": p.max_out, "fingerprint": p.fingerprint, "reproducible": p.reproducible,
                     "stored": p.blob_sha256 is not None, "versions": uses.get(p.id, 0)}
                    for p in s.scalars(select(m.Projection).order_by(m.Projection.id))]

    def _check_shapes(self, v: m.AdapterVersion) -> dict[str, Any]:
        try:
            tensors = load_safetensors(self.blobs.get(v.vectors_sha256))
        except (NotFound, IntegrityError) as exc:
            return {"ok": False, "error": str(exc)}
        problems = []
        for key, t in tensors.items():
            if key.endswith(".vera_lambda_d") and tuple(t.shape) != (v.r,):
                problems.append(f"{key}: {tuple(t.shape)}, expected ({v.r},)")
            if key.endswith(".vera_lambda_b"):
                path = key[len(PEFT_PREFIX):-len(".vera_lambda_b")]
                shape = _match_path(v.base_model.shapes, path)
                if shape is None or shape[0] != t.shape[0] or t.shape[0] > v.projection.max_out:
                    problems.append(f"{path}: {t.shape[0]} outputs, base {shape}")
        return {"ok": not problems, "problems": problems, "base_shapes": v.base_model.shapes_source}

    # ---- list, search -----------------------------------------------------------------------------------------------
    def list_versions(
        self, *, owner: str | None = None, name: str | None = None, base_model: str | None = None,
        r: int | None = None, seed: int | None = None, generator: str | None = None, tag: str | None = None,
        text: str | None = None, include_yanked: bool = False, cursor: str | None = None, limit: int = 50,
        sort: str = "-created", with_total: bool = False,
    ) -> Page:
        """Filtered and sorted (``sort``: one of SORTS, '-' for descending; ties by age), with an opaque cursor
        for the next page (keyset: pages stay correct while versions are published); ``with_total`` also counts
        all matches."""
        if not 1 <= limit <= 500:
            raise InvalidInput(f"limit must be between 1 and 500, got {limit}.")
        column = SORTS.get(sort.lstrip("-"))
        if column is None:
            raise InvalidInput(f"sort {sort!r} is not one of {', '.join(SORTS)} (prefix '-' for descending).")
        descending = sort.startswith("-")
        # join only what a filter needs, so that the planner can walk an (order column, id) index and stop early
        query = select(m.AdapterVersion)
        if owner or name or text:
            query = query.join(m.Adapter)
        if base_model:
            query = query.join(m.BaseModel)
        if owner:
            query = query.where(m.Adapter.owner == owner)
        if name:
            query = query.where(m.Adapter.name == name)
        if base_model:
            query = query.where(m.BaseModel.name == base_model)
        if r is not None:
            query = query.where(m.AdapterVersion.r == r)
        if seed is not None:
            query = query.where(m.AdapterVersion.seed == str(seed))
        if generator:
            query = query.where(m.AdapterVersion.generator == generator)
        if tag:
            query = query.where(m.AdapterVersion.tags.any(m.VersionTag.tag == tag))
        if text:
            like = f"%{text.lower()}%"
            query = query.where(or_(func.lower(m.Adapter.name).like(like), func.lower(m.Adapter.owner).like(like),
                                    func.lower(m.AdapterVersion.description).like(like)))
        if not include_yanked:
            query = query.where(m.AdapterVersion.yanked.is_(False))
        total = None
        if with_total:
            with self.db.session() as s:
                total = s.scalar(select(func.count()).select_from(query.with_only_columns(m.AdapterVersion.id)
                                                                  .subquery()))
        if cursor:
            value, last_id = _decode_cursor(cursor, sort)
            after = (column < value) if descending else (column > value)
            tie = (m.AdapterVersion.id < last_id) if descending else (m.AdapterVersion.id > last_id)
            query = query.where(or_(after, (column == value) & tie))
        order = (column.desc(), m.AdapterVersion.id.desc()) if descending else (column.asc(), m.AdapterVersion.id.asc())
        query = query.order_by(*order).limit(limit + 1).options(
            selectinload(m.AdapterVersion.adapter), selectinload(m.AdapterVersion.base_model),
            selectinload(m.AdapterVersion.tags))
        with self.db.session() as s:
            rows = list(s.scalars(query))
            aliases: dict[int, list[str]] = {}
            for version_id, alias in s.execute(select(m.Alias.version_id, m.Alias.name).where(
                    m.Alias.version_id.in_([v.id for v in rows])).order_by(m.Alias.name)):
                aliases.setdefault(version_id, []).append(alias)
            items = [self._info(s, v, aliases.get(v.id, [])) for v in rows[:limit]]
            last = rows[limit - 1] if len(rows) > limit else None
            next_cursor = _encode_cursor(sort, getattr(last, column.key), last.id) if last is not None else None
        return Page(items=items, next_cursor=next_cursor, total=total)

    # ---- compare -----------------------------------------------------------------------------------------------------
    def compare(self, refs: list[str]) -> Comparison:
        """Parameters, bytes, metrics, per-layer norms of d and b, and per-layer cosine of the weight deltas.

        Each delta is the layer's own: A and B sliced to its (out, in) as the forward does. A cosine is None where
        the two layers differ in shape or a layer's input size is unknown (a PEFT-written adapter whose base model's
        shapes are not declared)."""
        if not 2 <= len(refs) <= 8:
            raise InvalidInput(f"compare takes 2 to 8 versions, got {len(refs)}.")
        with self.db.session() as s:
            versions = [self._resolve(s, ref) for ref in refs]
            infos = [self._info(s, v) for v in versions]
            loaded = []
            for v in versions:
                tensors, metadata = self._tensors(v, with_projection=True)
                sizes = metadata.get(META_IN_FEATURES) or self._declared_in_features(v, tensors)
                loaded.append((tensors, json.loads(sizes) if sizes else {}))
        suffix = ".vera_lambda_b"
        layers = sorted(set.intersection(*(
            {k[len(PEFT_PREFIX):-len(suffix)] for k in t if k.endswith(suffix)} for t, _ in loaded)))
        out = []
        for path in layers:
            deltas: list[torch.Tensor | None] = []
            d_norms, b_norms = [], []
            for tensors, in_features in loaded:
                d, b = tensors[f"{PEFT_PREFIX}{path}.vera_lambda_d"], tensors[f"{PEFT_PREFIX}{path}.vera_lambda_b"]
                d_norms.append(float(d.norm()))
                b_norms.append(float(b.norm()))
                width = in_features.get(path)
                if width is None:
                    deltas.append(None)
                    continue
                a_full, b_full = (tensors[k] for k in PROJECTION_KEYS)
                lora_a, lora_b = delta_factors(d, b, a_full, b_full, int(width))
                deltas.append(lora_b @ lora_a)  # (out, in)
            cos = [[_cosine(x, y) for y in deltas] for x in deltas]
            out.append(LayerComparison(module=path, d_norms=d_norms, b_norms=b_norms, delta_cosine=cos))
        return Comparison(refs=[i.ref for i in infos], versions=infos, layers=out)

    # ---- aliases, yank, delete -------------------------------------------------------------------------------------
    def set_alias(self, ref: str, alias: str, *, actor: str) -> VersionInfo:
        """Point ``alias`` of the adapter at the version ``ref`` names (``latest`` is managed by the registry)."""
        check_name(alias, "Alias")
        if alias == LATEST:
            raise InvalidInput("'latest' always points at the newest version that is not yanked; pick another alias.")
        with self.db.session() as s:
            v = self._resolve(s, ref)
            row = s.scalar(select(m.Alias).where(m.Alias.adapter_id == v.adapter_id, m.Alias.name == alias))
            before = None
            if row is None:
                s.add(m.Alias(adapter_id=v.adapter_id, name=alias, version_id=v.id))
            else:
                before, row.version_id, row.updated_at = row.version_id, v.id, datetime.now(UTC)
            s.add(m.AuditEvent(actor=actor, action="alias", target=f"{v.adapter.owner}/{v.adapter.name}@{alias}",
                               detail={"version": v.version, "previous_version_id": before}))
            s.flush()
            return self._info(s, v)

    def remove_alias(self, adapter: str, alias: str, *, actor: str) -> None:
        ref = Ref.parse(adapter)
        if alias == LATEST:
            raise InvalidInput("'latest' is managed by the registry and cannot be removed.")
        with self.db.session() as s:
            v = self._resolve(s, Ref(owner=ref.owner, name=ref.name, alias=alias))
            row = s.scalar(select(m.Alias).where(m.Alias.adapter_id == v.adapter_id, m.Alias.name == alias))
            s.delete(row)
            s.add(m.AuditEvent(actor=actor, action="alias-remove", target=f"{ref.owner}/{ref.name}@{alias}", detail={}))

    def yank(self, ref: str, *, actor: str, yanked: bool = True) -> VersionInfo:
        """Hide a version from listings and from ``latest``; it stays fetchable by number."""
        with self.db.session() as s:
            v = self._resolve(s, ref)
            v.yanked = yanked
            s.flush()
            self._move_latest(s, v.adapter)
            s.add(m.AuditEvent(actor=actor, action="yank" if yanked else "unyank",
                               target=f"{v.adapter.owner}/{v.adapter.name}:{v.version}", detail={}))
            s.flush()
            return self._info(s, v)

    def delete(self, ref: str, *, actor: str) -> None:
        """Delete one version (its aliases go with it; ``latest`` moves back). Blobs go at the next gc()."""
        with self.db.session() as s:
            v = self._resolve(s, ref)
            adapter, number = v.adapter, v.version
            s.execute(delete(m.Alias).where(m.Alias.version_id == v.id))
            s.delete(v)
            s.flush()
            self._move_latest(s, adapter)
            s.add(m.AuditEvent(actor=actor, action="delete", target=f"{adapter.owner}/{adapter.name}:{number}",
                               detail={}))
            if not s.scalar(select(func.count()).select_from(m.AdapterVersion)
                            .where(m.AdapterVersion.adapter_id == adapter.id)):
                s.delete(adapter)

    def audit(self, target_prefix: str = "", limit: int = 100) -> list[dict[str, Any]]:
        with self.db.session() as s:
            rows = s.scalars(select(m.AuditEvent).where(m.AuditEvent.target.startswith(target_prefix))
                             .order_by(m.AuditEvent.id.desc()).limit(limit))
            return [{"at": e.at, "actor": e.actor, "action": e.action, "target": e.target, "detail": e.detail}
                    for e in rows]

    # ---- storage maintenance ---------------------------------------------------------------------------------------
    def _referenced(self, s: Session) -> set[str]:
        refs = set(s.scalars(select(m.AdapterVersion.vectors_sha256)))
        refs |= {d for d in s.scalars(select(m.Projection.blob_sha256)) if d}
        return refs

    def gc(self) -> dict[str, int]:
        """Remove blobs (rows and bytes) that no version or projection references, and unused projections."""
        removed = 0
        with self.db.session() as s:
            used_projections = set(s.scalars(select(m.AdapterVersion.projection_id)))
            for p in s.scalars(select(m.Projection)):
                if p.id not in used_projections:
                    s.delete(p)
            s.flush()
            referenced = self._referenced(s)
            for blob in s.scalars(select(m.Blob)):
                if blob.sha256 not in referenced and blob.kind in ("vectors", "projection"):
                    s.delete(blob)
                    removed += 1
            s.flush()
            known = set(s.scalars(select(m.Blob.sha256)))
        for digest in self.blobs.digests():
            if digest not in known:
                self.blobs.delete(digest)
        return {"blobs_removed": removed}

    def fsck(self, *, repair: bool = False) -> dict[str, list[str]]:
        """Report (and with ``repair``, fix) disagreement between the database and storage.

        missing: referenced blobs absent from storage (repair: their versions are marked verification failed);
        corrupted: blobs whose bytes do not match their name (repair: deleted and their versions marked failed);
        orphans: stored blobs the database does not know (repair: deleted).
        """
        report: dict[str, list[str]] = {"missing": [], "corrupted": [], "orphans": []}
        with self.db.session() as s:
            known = set(s.scalars(select(m.Blob.sha256)))
        present = set(self.blobs.digests())
        report["orphans"] = sorted(present - known)
        report["missing"] = sorted(known - present)
        for digest in sorted(known & present):
            try:
                self.blobs.get(digest)
            except IntegrityError:
                report["corrupted"].append(digest)
        if repair:
            for digest in report["orphans"] + report["corrupted"]:
                self.blobs.delete(digest)
            bad = report["missing"] + report["corrupted"]
            if bad:
                with self.db.session() as s:
                    for v in s.scalars(select(m.AdapterVersion).join(m.Projection).where(or_(
                            m.AdapterVersion.vectors_sha256.in_(bad), m.Projection.blob_sha256.in_(bad)))):
                        v.verification_status, v.verified_at = "failed", datetime.now(UTC)
                        v.verification_report = {"status": "failed", "checks": {"fsck": {
                            "ok": False, "error": "a blob of this version is missing or corrupted"}}}
        return report


#: Sortable columns of version listings (the key metrics are sorted by the dashboard within a page).
SORTS: dict[str, Any] = {
    "created": m.AdapterVersion.id, "trainable_parameters": m.AdapterVersion.trainable_parameters,
    "stored_bytes": m.AdapterVersion.stored_bytes, "r": m.AdapterVersion.r,
    "verification_status": m.AdapterVersion.verification_status,
}


def _cosine(x: torch.Tensor | None, y: torch.Tensor | None) -> float | None:
    """Cosine of two weight deltas of the same shape; None when there is nothing comparable."""
    if x is None or y is None or x.shape != y.shape:
        return None
    denom = float(x.norm() * y.norm())
    return float((x * y).sum()) / denom if denom > 0 else None


def _encode_cursor(sort: str, value: Any, last_id: int) -> str:
    text = json.dumps(["v2", sort, value, last_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, sort: str) -> tuple[Any, int]:
    try:
        version, for_sort, value, last_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if version != "v2" or for_sort != sort or not isinstance(last_id, int) or isinstance(value, (dict, list)):
            raise ValueError(version)
        return value, last_id
    except (ValueError, TypeError, UnicodeDecodeError):
        raise InvalidInput(f"cursor {cursor!r} is not one this registry issued for sort={sort!r}; start again "
                           "without it.") from None


def iter_all(registry: Registry, **filters: Any) -> Iterator[VersionInfo]:
    """Every version matching ``filters``, page by page."""
    cursor = None
    while True:
        page = registry.list_versions(cursor=cursor, limit=500, **filters)
        yield from page.items
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


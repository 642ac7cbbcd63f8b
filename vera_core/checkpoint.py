"""Save and load adapters in PEFT's VeRA directory format.

A directory holds ``adapter_config.json`` and ``adapter_model.safetensors`` (keys as PEFT writes them), plus a
short ``README.md``. vera_core adds, invisibly to PEFT, safetensors metadata naming the projection generator, its
shape and its fingerprint, so that a seed-only adapter can be verified and exported without the base model.
Files are read with safetensors only: nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError, safe_open

from vera_core.config import VeraConfig
from vera_core.errors import (
    AdapterFormatError,
    JSONTextError,
    OutputFolderError,
    PeftIncompatibleError,
    ProjectionMismatchError,
    VeraConfigError,
    not_unicode,
    parse_json,
)
from vera_core.folders import adapter_folder
from vera_core.folders import write_adapter_files as write_adapter_files  # its former home: still importable here
from vera_core.headers import read_header
from vera_core.keys import CONFIG_NAME as CONFIG_NAME  # file names and metadata keys: keys (no torch)
from vera_core.keys import LAMBDA_B, PICKLE_HINT, PROJECTION_KEYS, module_path
from vera_core.keys import META_FINGERPRINT as META_FINGERPRINT
from vera_core.keys import META_GENERATOR as META_GENERATOR
from vera_core.keys import META_IN_FEATURES as META_IN_FEATURES
from vera_core.keys import META_SHAPE as META_SHAPE
from vera_core.keys import PICKLE_NAME as PICKLE_NAME
from vera_core.keys import WEIGHTS_NAME as WEIGHTS_NAME
from vera_core.layer import ComputeStrategy
from vera_core.model import VeraModel
from vera_core.projection import ProjectionSpec, fingerprint, generate
from vera_core.serialization import Streamed, to_bytes, write

if TYPE_CHECKING:
    from vera_core.base_shapes import BaseModel
    from vera_core.lora import LoraExport



@dataclass
class AdapterFiles:
    """The parsed content of an adapter directory, validated for internal consistency, without a base model."""

    config: VeraConfig
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def has_projection(self) -> bool:
        return PROJECTION_KEYS[0] in self.tensors

    @property
    def spec(self) -> ProjectionSpec | None:
        """The projection's full description, when the files record or imply its shape."""
        shape = self.metadata.get(META_SHAPE)
        if shape:  # checked by read_adapter: three positive integers
            r, max_in, max_out = (int(v) for v in shape.split(","))
        elif self.has_projection:
            r, max_in = self.tensors[PROJECTION_KEYS[0]].shape
            max_out = self.tensors[PROJECTION_KEYS[1]].shape[0]
        else:
            return None
        return ProjectionSpec(self.config.projection_generator, self.config.projection_prng_key, r, max_in, max_out)

    @property
    def recorded_fingerprint(self) -> str | None:
        return self.metadata.get(META_FINGERPRINT)

    def vector_keys(self) -> list[str]:
        return sorted(k for k in self.tensors if k.endswith((".vera_lambda_b", ".vera_lambda_d")))


def _read_json(path: Path) -> dict[str, object]:
    try:
        data = parse_json(path.read_bytes(), keys_once=True)
    except OSError as exc:
        raise AdapterFormatError(f"{path} cannot be read ({exc}); expected PEFT's adapter_config.json.") from exc
    except JSONTextError as exc:
        raise AdapterFormatError(f"{path} {exc}; expected PEFT's adapter_config.json (a flat object of a few fields: "
                                 "r, seeds and sizes are small integers).") from None
    if not isinstance(data, dict):
        raise AdapterFormatError(f"{path} must hold a JSON object, found {type(data).__name__}.")
    if (bad := not_unicode(data)) is not None:
        raise AdapterFormatError(f"{path} holds {bad!r}, half of a UTF-16 surrogate pair, which is not text; expected "
                                 "valid Unicode.")
    return data


def _read_elsewhere(named: str) -> str:
    """Where an adapter named as PEFT's from_pretrained or a registry names one is read, for a name that is no
    folder here: a Hub id (``org/name``, or a bare ``name``, as ``gpt2`` is one), or a registry's reference
    (``owner/name@alias``, ``owner/name:3``, which the Hub hint told to snapshot_download: a docs audit, session
    54). Nothing for what reads as a path."""
    if named.startswith((".", "/", "~")) or "\\" in named or named.count("/") > 1:
        return ""
    if "@" in named or re.fullmatch(r"[^/]+/[^/:]+:\d+", named):
        return (" It reads like a registry's reference: vera_core reads folders; "
                f"registry.client.load_adapter(base, {named!r}) fetches and loads it.")
    return (" It reads like a Hub id: vera_core reads folders, so download it first "
            f"(huggingface_hub.snapshot_download({named!r})), or, from a registry, "
            "registry.client.load_adapter(base, 'owner/name@alias').")


def _adapter_paths(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """The adapter folder's config and weights files, both there (AdapterFormatError saying what is missing)."""
    root = Path(path)
    if not root.is_dir():
        # a Hub id or a registry reference, as PEFT's from_pretrained takes them, was "not a directory" alone (a
        # researcher's walk, session 48): vera_core reads folders, and says where the others are read
        raise AdapterFormatError(f"{root} is not a directory; expected a PEFT adapter folder with {CONFIG_NAME}."
                                 + ("" if root.exists() else _read_elsewhere(str(path))))
    config_path, weights_path = root / CONFIG_NAME, root / WEIGHTS_NAME
    if not config_path.is_file():
        raise AdapterFormatError(f"{root} has no {CONFIG_NAME}; expected a PEFT adapter folder.")
    if not weights_path.is_file():
        hint = f" {PICKLE_HINT}" if (root / PICKLE_NAME).exists() else ""
        raise AdapterFormatError(f"{root} has no {WEIGHTS_NAME}.{hint}")
    return config_path, weights_path


def _config_of(config_path: Path, weights_path: Path, metadata: dict[str, str]) -> VeraConfig:
    """The config file's VeraConfig, with the generator the weights' metadata records (they must agree)."""
    raw = _read_json(config_path)
    recorded = metadata.get(META_GENERATOR)
    if recorded is not None and raw.get("projection_generator", recorded) != recorded:
        raise AdapterFormatError(
            f"{weights_path} records generator {recorded!r} but {CONFIG_NAME} says {raw['projection_generator']!r}; "
            "the two files come from different adapters."
        )
    if recorded is not None:
        raw = {**raw, "projection_generator": recorded}
    try:
        return VeraConfig.from_peft_dict(raw)
    except VeraConfigError as exc:
        raise AdapterFormatError(f"{config_path}: {exc}") from exc


def read_adapter_config(path: str | os.PathLike[str]) -> VeraConfig:
    """The adapter folder's VeraConfig as read_adapter gives it, without reading its tensors (only the weights'
    metadata): what a warm start needs to know before it loads them."""
    config_path, weights_path = _adapter_paths(path)
    try:
        with safe_open(str(weights_path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
        _check_header(weights_path)
    except (SafetensorError, OSError, ValueError) as exc:
        raise AdapterFormatError(f"{weights_path} is not a valid safetensors file ({exc}).") from exc
    return _config_of(config_path, weights_path, metadata)


def _rounded_to(a: torch.Tensor, b: torch.Tensor, regenerated_a: torch.Tensor, regenerated_b: torch.Tensor
                ) -> str | None:
    """The half-precision dtype whose rounding of the regenerated projections the stored ones are, if one is."""
    for dtype in (torch.bfloat16, torch.float16):
        if all(torch.equal(stored.float(), fresh.cpu().to(dtype).float())
               for stored, fresh in ((a, regenerated_a), (b, regenerated_b))):
            return str(dtype).removeprefix("torch.")
    return None


def _check_header(weights_path: Path) -> None:
    """A ValueError where the file's header, which safetensors read, is not one read_header takes: safetensors reads
    a tensor named twice as its last entry, unsaid."""
    with weights_path.open("rb") as file:
        try:
            read_header(file, weights_path.stat().st_size)
        except ValueError as exc:
            raise ValueError(str(exc).removeprefix("not a safetensors file: ")) from None


def read_adapter(path: str | os.PathLike[str]) -> AdapterFiles:
    """Parse and check an adapter directory: config, tensors (safetensors only) and metadata."""
    config_path, weights_path = _adapter_paths(path)
    try:
        with safe_open(str(weights_path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118 (not a dict)
        _check_header(weights_path)
    except (SafetensorError, OSError, ValueError) as exc:
        raise AdapterFormatError(f"{weights_path} is not a valid safetensors file ({exc}).") from exc
    files = AdapterFiles(_config_of(config_path, weights_path, metadata), tensors, metadata)
    _check_consistency(files, weights_path)
    return files


def _check_consistency(files: AdapterFiles, where: Path) -> None:
    cfg = files.config
    for key, tensor in files.tensors.items():
        if not tensor.is_floating_point():
            raise AdapterFormatError(f"Tensor {key!r} in {where} has dtype {tensor.dtype}; expected floating point.")
    if not files.vector_keys():
        raise AdapterFormatError(f"{where} holds no vera_lambda_b / vera_lambda_d tensors; it is not a VeRA adapter.")
    for key in files.vector_keys():
        tensor = files.tensors[key]
        if tensor.dim() != 1 or (key.endswith("_d") and tensor.shape[0] != cfg.r):
            want = f"({cfg.r},)" if key.endswith("_d") else "(out_features,)"
            raise AdapterFormatError(f"Tensor {key!r} has shape {tuple(tensor.shape)}; expected {want} for r={cfg.r}.")
    if cfg.save_projection != files.has_projection:
        raise AdapterFormatError(
            f"adapter_config.json says save_projection={cfg.save_projection} but {where} "
            f"{'holds' if files.has_projection else 'lacks'} base_model.vera_A/vera_B; the files disagree."
        )
    if files.has_projection:
        a, b = (files.tensors[k] for k in PROJECTION_KEYS)
        if a.dim() != 2 or b.dim() != 2 or a.shape[0] != cfg.r or b.shape[1] != cfg.r:
            raise AdapterFormatError(
                f"Stored projections have shapes A{tuple(a.shape)} and B{tuple(b.shape)}; expected A (r, max_in) and "
                f"B (max_out, r) with r={cfg.r}."
            )
        max_b = max(files.tensors[k].shape[0] for k in files.vector_keys() if k.endswith("_b"))
        if b.shape[0] < max_b:
            raise AdapterFormatError(f"vera_B has {b.shape[0]} rows but a layer has {max_b} outputs.")
    _check_recorded_shapes(files)


def _positive_ints(text: str, count: int) -> list[int] | None:
    parts = text.split(",")
    if len(parts) != count or not all(p.isdigit() and len(p) <= 12 and int(p) > 0 for p in parts):
        return None
    return [int(p) for p in parts]


def _check_recorded_shapes(files: AdapterFiles) -> None:
    """The projection shape and the layer input sizes recorded in the metadata decide how much is generated and how
    A is sliced, so they must agree with the config, the vectors and any stored projections."""
    cfg = files.config
    outs = {module_path(k, LAMBDA_B): int(files.tensors[k].shape[0]) for k in files.vector_keys()
            if k.endswith(LAMBDA_B)}
    max_in: int | None = int(files.tensors[PROJECTION_KEYS[0]].shape[1]) if files.has_projection else None
    shape = files.metadata.get(META_SHAPE)
    if shape is not None:
        parsed = _positive_ints(shape, 3)
        if parsed is None:
            raise AdapterFormatError(f"Metadata {META_SHAPE}={shape[:40]!r} is not 'r,max_in,max_out' of positive "
                                     "integers; the adapter file is damaged.")
        r, recorded_in, max_out = parsed
        if r != cfg.r or max_out != max(outs.values()) or max_in not in (None, recorded_in):
            raise AdapterFormatError(
                f"Metadata {META_SHAPE} records a projection of r={r}, max_in={recorded_in}, max_out={max_out}, but "
                f"adapter_config.json has r={cfg.r}, the largest adapted layer has {max(outs.values())} outputs"
                + (f" and the stored vera_A has {max_in} columns" if max_in is not None else "")
                + "; the files come from different adapters."
            )
        max_in = recorded_in
    sizes = files.metadata.get(META_IN_FEATURES)
    if sizes is None:
        return
    try:
        layers = parse_json(sizes)
    except JSONTextError as exc:
        raise AdapterFormatError(f"Metadata {META_IN_FEATURES} {str(exc)[:200]}; expected a JSON object of layer "
                                 "sizes.") from None
    if not isinstance(layers, dict) or set(layers) != set(outs) or not all(
            type(v) is int and v > 0 for v in layers.values()):
        raise AdapterFormatError(f"Metadata {META_IN_FEATURES} must give a positive input size for each adapted "
                                 f"layer ({len(outs)} of them) and no other; the adapter file is damaged.")
    if max_in is not None and max(layers.values()) != max_in:
        raise AdapterFormatError(f"Metadata {META_IN_FEATURES} says the widest layer reads {max(layers.values())} "
                                 f"inputs but the projection has max_in={max_in}; the files come from different "
                                 "adapters.")


def _readme(config: VeraConfig, fp: str) -> str:
    base = config.base_model_name_or_path or "unknown"
    return (
        "---\nlibrary_name: peft\ntags:\n- vera\n- vera-registry\n"
        + (f"base_model: {base}\n" if config.base_model_name_or_path else "")
        + "---\n\n"
        f"# VeRA adapter\n\nBase model: `{base}`; rank {config.r}; projection seed {config.projection_prng_key}; "
        f"generator `{config.projection_generator}`; projection fingerprint `{fp}`.\n"
    )


def save_adapter(
    model: VeraModel, path: str | os.PathLike[str], *, save_projection: bool | None = None,
    require_peft_loadable: bool = False,
) -> Path:
    """Write ``model``'s adapter to ``path`` in PEFT's format; files are written in a temporary folder, then moved.

    ``save_projection`` overrides the config (True materialises A and B). With ``require_peft_loadable``, refuse to
    write what PEFT would load wrongly (a portable-generator adapter without its projections).
    """
    root = Path(path)
    keep = model.config.save_projection if save_projection is None else save_projection
    config = model.config.replace(save_projection=keep, inference_mode=True)
    if require_peft_loadable:
        check_peft_loadable(config)
    tensors = model.adapter_state_dict(save_projection=keep)
    fp = model.projection_fingerprint()
    in_features = {name: layer.in_features for name, layer in model.named_vera_layers()}
    metadata = adapter_metadata(model.spec, fp, json.dumps(in_features, sort_keys=True, separators=(",", ":")))
    write_adapter_dir(root, config, tensors, metadata, fp)
    return root


def adapter_metadata(spec: ProjectionSpec, fp: str, in_features: str | None = None) -> dict[str, str]:
    """The safetensors metadata vera_core writes: generator, projection shape and fingerprint, layer input sizes."""
    metadata = {"format": "pt", META_GENERATOR: spec.generator, META_FINGERPRINT: fp,
                META_SHAPE: f"{spec.r},{spec.max_in},{spec.max_out}"}
    if in_features is not None:
        metadata[META_IN_FEATURES] = in_features
    return metadata


def adapter_file_bytes(
    config: VeraConfig, tensors: dict[str, torch.Tensor], metadata: dict[str, str], fp: str
) -> dict[str, bytes]:
    """The three files of an adapter directory as bytes; the same inputs give the same bytes."""
    return {CONFIG_NAME: _config_bytes(config), WEIGHTS_NAME: to_bytes(tensors, metadata),
            "README.md": _readme(config, fp).encode("utf-8")}


def write_adapter_files_streamed(
    folder: Path, config: VeraConfig, tensors: Mapping[str, torch.Tensor | Streamed], metadata: dict[str, str],
    fp: str,
) -> dict[str, Path]:
    """``adapter_file_bytes``'s files written into ``folder`` (the same bytes), the weights piece by piece: a
    ``Streamed`` tensor (projections generated in row blocks, vera_core.projection.projection_blocks) is never held
    whole. Returns each file's path."""
    paths = {name: folder / name for name in (CONFIG_NAME, WEIGHTS_NAME, "README.md")}
    paths[CONFIG_NAME].write_bytes(_config_bytes(config))
    with paths[WEIGHTS_NAME].open("wb") as out:
        write(out, tensors, metadata)
    paths["README.md"].write_bytes(_readme(config, fp).encode("utf-8"))
    return paths


def _config_bytes(config: VeraConfig) -> bytes:
    return json.dumps(config.to_peft_dict(), indent=2, sort_keys=True).encode("utf-8")


def write_adapter_dir(
    root: Path, config: VeraConfig, tensors: dict[str, torch.Tensor], metadata: dict[str, str], fp: str
) -> None:
    """Write adapter_config.json, adapter_model.safetensors and README.md; the same inputs give the same bytes."""
    write_adapter_files(root, adapter_file_bytes(config, tensors, metadata, fp))


def peft_problems(config: VeraConfig) -> list[str]:
    """Why PEFT would load this adapter wrongly, if it would."""
    if not config.peft_loadable:
        return [
            f"the adapter uses projection generator {config.projection_generator!r}, which PEFT does not implement, "
            "and does not store its projections, so PEFT would silently regenerate different ones from "
            f"projection_prng_key={config.projection_prng_key}"
        ]
    return []


def check_peft_loadable(config: VeraConfig) -> None:
    problems = peft_problems(config)
    if problems:
        raise PeftIncompatibleError(
            "Not loadable by HuggingFace PEFT: " + "; ".join(problems) + ". Export a PEFT-loadable copy with the "
            "projections materialised: `vera export-peft SRC DST` or vera_core.export_peft(SRC, DST)."
        )


def projections_of(files: AdapterFiles, where: object = "the adapter") -> tuple[torch.Tensor, torch.Tensor]:
    """The adapter's A and B: stored, or regenerated from its seed (checked against the recorded fingerprint)."""
    if files.has_projection:
        return files.tensors[PROJECTION_KEYS[0]], files.tensors[PROJECTION_KEYS[1]]
    spec = files.spec
    if spec is None:
        raise AdapterFormatError(
            f"{where} stores no projections and no projection shape (PEFT saved it with save_projection=False), so "
            "their size comes from its base model: pass --base-model DIR_OR_HUB_ID (`vera export-lora` and `vera "
            "export-peft`; base_model= in vera_core.export_lora / export_peft; only the base's config.json is "
            "read), or load it onto its base model with load_adapter() and save it with save_projection=True."
        )
    a, b = generate(spec)
    _check_fingerprint(files, a, b)
    return a, b


def read_for_export(src: str | os.PathLike[str], base_model: BaseModel | None = None) -> AdapterFiles:
    """``read_adapter(src)``, completed from ``base_model`` (when given) with what a seed-only adapter PEFT wrote
    lacks: the projection shape and each layer's input size (vera_core.base_shapes.with_base_model; the base is
    built from its config on the meta device, or inspected if a module). A base model given for an adapter that
    records them already is checked against them, and refused if it does not fit."""
    files = read_adapter(src)
    if base_model is None:
        return files
    from vera_core.base_shapes import with_base_model

    return with_base_model(files, base_model)


def export_peft(src: str | os.PathLike[str], dst: str | os.PathLike[str], *,
                base_model: BaseModel | None = None) -> Path:
    """Copy an adapter with its projections materialised (save_projection=True), which any PEFT >= 0.21 loads.

    ``base_model`` (a directory or Hub id that vera_core.recipes.resolve_base understands, or an nn.Module) sizes
    the projections of a seed-only adapter PEFT wrote, which records no projection shape (read_for_export)."""
    _another_folder(src, dst, "the copy")
    files = read_for_export(src, base_model)
    tensors = dict(files.tensors)
    a, b = projections_of(files, src)
    tensors.update({PROJECTION_KEYS[0]: a, PROJECTION_KEYS[1]: b})
    config = files.config.replace(save_projection=True)
    fp = files.recorded_fingerprint or fingerprint(tensors[PROJECTION_KEYS[0]], tensors[PROJECTION_KEYS[1]])
    metadata = {**files.metadata, "format": "pt", META_FINGERPRINT: fp, META_GENERATOR: config.projection_generator}
    write_adapter_dir(Path(dst), config, tensors, metadata, fp)
    return Path(dst)


def _another_folder(src: str | os.PathLike[str], dst: str | os.PathLike[str], what: str) -> None:
    """OutputFolderError when an export's ``dst`` is its ``src`` folder: the copy replaced the adapter it was made
    from (`vera export-peft a a` rewrote it in place, unsaid: a docs audit's finding, session 52; `export-lora a a`
    replaced the VeRA adapter with its LoRA)."""
    if Path(src).exists() and Path(dst).exists() and os.path.samefile(src, dst):
        raise OutputFolderError(f"{dst} is the adapter folder {what} is made from: write {what} to another folder "
                                f"(nothing was written; {src} is as it was).")


def check_same_projection(saved: AdapterFiles, model: VeraModel, what: str, fix: str) -> None:
    """Refuse to continue training ``saved`` (a checkpoint's adapter, ``what``) in ``model`` when its vectors were
    trained against another projection: another rank, seed or generator, or another projection fingerprint (another
    base model, other target layers). ``fix`` ends the message (e.g. "; resume with the same settings")."""
    for label, theirs, mine in (("r", saved.config.r, model.config.r),
                                ("projection_prng_key (--projection-seed)", saved.config.projection_prng_key,
                                 model.config.projection_prng_key),
                                ("projection_generator (--generator)", saved.config.projection_generator,
                                 model.config.projection_generator)):
        if theirs != mine:
            raise VeraConfigError(f"{what} was trained with {label}={theirs!r} and this run has {mine!r}: its vectors "
                                  f"fit only that projection{fix}")
    recorded = saved.recorded_fingerprint
    if recorded is not None and recorded != (ours := model.projection_fingerprint()):  # a hash of A and B: once
        raise VeraConfigError(f"{what} was trained against the projection with fingerprint {recorded[:16]}..., and "
                              f"this model's is {ours[:16]}... (another base model or other target layers){fix}")


def _check_fingerprint(files: AdapterFiles, a: torch.Tensor, b: torch.Tensor) -> None:
    recorded = files.recorded_fingerprint
    if recorded is not None and fingerprint(a, b) != recorded:
        raise ProjectionMismatchError(
            f"The seed {files.config.projection_prng_key} with generator {files.config.projection_generator!r} "
            f"regenerates projections with fingerprint {fingerprint(a, b)}, but the adapter was trained with "
            f"{recorded}. This machine cannot reproduce them; use a copy saved with save_projection=True."
        )


def export_lora(src: str | os.PathLike[str], dst: str | os.PathLike[str], export: LoraExport | None = None, *,
                base_model: BaseModel | None = None) -> Path:
    """Write the equivalent rank-r LoRA of the adapter at ``src`` in PEFT's LoRA format, or with ``export`` its
    best rank-K approximation in another dtype (vera_core.lora). Written one layer at a time: besides A and B, one
    layer's factors are held, however large the export.

    ``base_model`` (a directory or Hub id that vera_core.recipes.resolve_base understands, or an nn.Module) gives
    the projection shape and layer input sizes an adapter PEFT wrote does not record (read_for_export). Everything
    is checked before ``dst`` is written."""
    from vera_core.lora import write_lora_files

    _another_folder(src, dst, "the LoRA")
    files = read_for_export(src, base_model)
    root = Path(dst)
    with adapter_folder(root) as folder:  # written once, then renamed into place
        write_lora_files(folder, files, *projections_of(files, src), export)
    return root


def load_adapter(
    base_model: torch.nn.Module, path: str | os.PathLike[str], *, strategy: ComputeStrategy = "auto",
    is_trainable: bool = False,
) -> VeraModel:
    """Inject the adapter at ``path`` into ``base_model`` and load its vectors, heads and projections.

    Stored projections are compared with what the seed regenerates; if they differ they are used (they are what the
    adapter was trained with) and ``model.projection_reproducible`` is False.
    """
    files = read_adapter(path)
    config = files.config.replace(inference_mode=not is_trainable)
    model = VeraModel(base_model, config, strategy=strategy)
    regenerated = (model.projection.vera_A, model.projection.vera_B)
    model.projection_reproducible = True
    if files.has_projection:
        a, b = (files.tensors[k] for k in PROJECTION_KEYS)
        if tuple(a.shape) != tuple(regenerated[0].shape) or tuple(b.shape) != tuple(regenerated[1].shape):
            # the tensors' own mismatch says why where it can: a vocabulary resized before training (a docs audit,
            # session 54: the resize hint was never reached)
            why = (model.adapter_mismatch(files.tensors) or "").removesuffix("; ")
            raise AdapterFormatError(
                f"Stored projections have shapes A{tuple(a.shape)}, B{tuple(b.shape)} but this base model needs "
                f"A{tuple(regenerated[0].shape)}, B{tuple(regenerated[1].shape)}; "
                + (f"{why}." if why else "the adapter was made for another base model or another set of target "
                   "modules.")
            )
        if not (torch.equal(a.float(), regenerated[0].cpu()) and torch.equal(b.float(), regenerated[1].cpu())):
            noted = files.recorded_fingerprint  # vera_core's files record their A and B's; PEFT's record none
            edited = "" if noted is None or noted == (held := fingerprint(a.float(), b.float())) else (
                f" They do not match the projection fingerprint the file records either ({noted[:16]}..., they "
                f"hash to {held[:16]}...): the file was changed after it was written, or is damaged.")
            if not edited and (rounded := _rounded_to(a, b, *regenerated)) is not None:
                # the usual cause, which the warning left to guess (a docs audit, session 54)
                edited = (f" They are the regenerated ones rounded to {rounded}: PEFT casts them with the model, so "
                          f"an adapter saved from a {rounded} model holds them so; PEFT computes with these stored "
                          "ones, as vera_core now does.")
            warnings.warn(
                f"The stored projections differ from what seed {config.projection_prng_key} with generator "
                f"{config.projection_generator!r} regenerates; using the stored ones.{edited}", stacklevel=2,
            )
            model.projection_reproducible = False
            with torch.no_grad():
                model.projection.vera_A.copy_(a)
                model.projection.vera_B.copy_(b)
    else:
        recorded, needed = files.spec, model.spec
        trained = None if recorded is None else (recorded.r, recorded.max_in, recorded.max_out)
        if trained is not None and trained != (needed.r, needed.max_in, needed.max_out):  # no seed is at fault
            raise AdapterFormatError(
                f"The adapter was trained with a projection of (r, max_in, max_out) = {trained}, and this base "
                f"model's adapted layers need {(needed.r, needed.max_in, needed.max_out)}: the adapter was made for "
                "another base model (its layers are of other sizes) or another set of target modules. Load it on "
                "the base it was trained on.")
        _check_fingerprint(files, *regenerated)
    model.load_adapter_state_dict(files.tensors)
    if not is_trainable:
        for p in model.parameters():
            p.requires_grad_(False)
        model.eval()
    return model

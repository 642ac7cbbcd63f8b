"""What the registry checks in an adapter before it records anything: rank limit, finite values, paired vectors
that the config's targets match, a projection it can regenerate or store, and which of the two it is."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from registry.domain.errors import Busy, InvalidInput
from registry.domain.schemas import (
    MAX_COMPARE_WORK,
    MAX_EXPORT_BYTES,
    MAX_EXPORT_WORK,
    MAX_PROJECTION_ELEMENTS,
    check_text,
)
from registry.domain.words import counted, shown_number
from vera_core.errors import VeraConfigError
from vera_core.keys import LAMBDA_B, LAMBDA_D, PROJECTION_KEYS, module_path
from vera_core.patterns import require_linear

if TYPE_CHECKING:  # torch: imported by what validates an adapter, not when a server or command starts
    import torch

    from vera_core import AdapterFiles, ProjectionSpec
    from vera_core.lora import ExportCost

#: The largest rank the registry accepts.
MAX_RANK = 65_536
#: The most bytes one layer's arithmetic may hold at once (float64): a comparison's factors or deltas formed whole (a
#: way over it is not taken; a layer that fits neither way is refused, as too much work is), a LoRA export's
#: factoring for a max_rank.
MAX_LAYER_BYTES = 512 << 20
#: The largest LoRA export built whole in memory (a Hub push as LoRA holds its files' bytes; a 1 GiB export took a
#: server to 2.95 GB: an outsider's re-check, session 39); downloads are written as they are built, up to
#: VERA_MAX_EXPORT_BYTES.
MAX_IN_MEMORY_EXPORT_BYTES = 1 << 30
#: The most bytes of projections (A and B, float32) one comparison holds at once: each version on a projection of its
#: own adds one, up to 256 MiB each, so 8 distinct ones held 2 GiB (session 38's left-over). The largest of a
#: 7B-scale model at r=1024 (in and out 11,008) is 86 MiB.
MAX_COMPARE_PROJECTION_BYTES = 1 << 30
#: The most layers one adapter may adapt: each costs its own calls in every listing of layers, comparison, export and
#: load, whatever its size (6,000 layers of width 8 took a LoRA export 15 s: an outsider's, session 39). Dense models
#: adapt at most a few thousand (every linear layer of a 405B model: 882); mixture-of-experts models tens of
#: thousands (every expert's of DeepSeek-V3: about 47,000).
MAX_ADAPTED_LAYERS = 65_536
#: Why a seed-only adapter that PEFT wrote cannot be published while its base model's layer shapes are unknown.
SHAPELESS_SEED_ONLY = (
    "The adapter stores neither its projections nor their shape (a seed-only adapter saved by PEFT), so the "
    "registry cannot regenerate or verify them. Save it with save_projection=True, or with vera_core.save_adapter, "
    "or declare its base model's layer shapes first: `vera base register NAME --config config.json` (or `vera "
    "publish --base-config config.json`)."
)


class ProjectionBudget:
    """How large a projection the registry generates, and how many at once: together they bound the memory that
    requests can make the server spend (each generation holds A and B, and the bytes built from them)."""

    def __init__(self, max_elements: int = MAX_PROJECTION_ELEMENTS, concurrent: int = 2,
                 wait_s: float = 30.0, max_export_bytes: int = MAX_EXPORT_BYTES,
                 max_compare_work: int = MAX_COMPARE_WORK, max_export_work: int = MAX_EXPORT_WORK) -> None:
        self.max_elements, self.wait_s, self.max_export_bytes = max_elements, wait_s, max_export_bytes
        self.max_compare_work, self.max_export_work = max_compare_work, max_export_work
        self._slots = threading.BoundedSemaphore(concurrent)

    def check_compare(self, work: int, count: int) -> None:
        """Refuse, before any delta is formed, a comparison whose arithmetic costs more than the limit."""
        if work > self.max_compare_work:
            raise InvalidInput(
                f"This comparison ({counted(count, 'distinct version')}) takes about {work:.2g} multiply-adds of "
                f"their weight deltas; this registry computes at most {self.max_compare_work:.2g} for one "
                "(VERA_MAX_COMPARE_WORK): their ranks and layers are too large to compare here. Compare fewer "
                "versions at once, or fetch them (`vera fetch REF --out DIR`) and compare their deltas with "
                "vera_core on your own machine.")

    @staticmethod
    def check_compare_projections(nbytes: int, count: int) -> None:
        """Refuse, before any is drawn, a comparison that would hold more than MAX_COMPARE_PROJECTION_BYTES of A and
        B (``count`` projections of ``nbytes`` in all)."""
        if nbytes > MAX_COMPARE_PROJECTION_BYTES:
            raise InvalidInput(
                f"This comparison would hold {count} distinct projections at once ({nbytes >> 20:,} MiB of A and B); "
                f"this registry holds at most {MAX_COMPARE_PROJECTION_BYTES >> 20:,} MiB for one. Compare fewer "
                "versions on projections of their own at once (versions of one generator, seed and rank share one), "
                "or fetch them (`vera fetch REF --out DIR`) and compare their deltas with vera_core on your own "
                "machine.")

    def check_export(self, cost: ExportCost, ref: str, *, in_memory: bool = False) -> None:
        """Refuse, before any factor is computed (``cost``: vera_core.lora.lora_export_work), a LoRA export larger
        than the limit (a VeRA adapter of kilobytes exports to r x (in + out) numbers per layer, so its LoRA can be
        thousands of times its size; ``in_memory``: a build held whole in memory, as a Hub push's, at most
        MAX_IN_MEMORY_EXPORT_BYTES), or costlier (its work, and the bytes one layer holds while it is factored)."""
        nbytes, work, held = cost
        if in_memory and nbytes > MAX_IN_MEMORY_EXPORT_BYTES:
            raise InvalidInput(
                f"The LoRA export of {ref} would write {nbytes:,} bytes of factors, and this one is built in memory "
                f"(a Hub push as LoRA), at most {MAX_IN_MEMORY_EXPORT_BYTES:,}. Ask for a lower max_rank or a 16-bit "
                "dtype, or fetch it (`vera fetch REF --as lora --out DIR`, written as it is built) and upload the "
                "folder to the Hub yourself.")
        if nbytes > self.max_export_bytes:
            raise InvalidInput(
                f"The LoRA export of {ref} would write {nbytes:,} bytes of factors; this registry builds at most "
                f"{self.max_export_bytes:,} (VERA_MAX_EXPORT_BYTES). Ask for a lower max_rank or a 16-bit dtype, "
                "or export it on your machine: `vera fetch REF --out DIR` then vera_core.lora.")
        if held > MAX_LAYER_BYTES:
            raise InvalidInput(
                f"The LoRA export of {ref} would hold {held / 2**20:,.0f} MiB while it factors one layer for "
                f"max_rank; this registry holds at most {MAX_LAYER_BYTES >> 20} MiB. Ask for the exact export (no "
                "max_rank), or export it on your machine: `vera fetch REF --out DIR` then `vera export-lora DIR OUT "
                "--max-rank K`.")
        if work > self.max_export_work:
            raise InvalidInput(
                f"The LoRA export of {ref} takes about {work:.2g} multiply-adds' worth of work (its layers' factors "
                f"written, and for a max_rank their QR and SVD); this registry does at most "
                f"{self.max_export_work:.2g} for one (VERA_MAX_EXPORT_WORK). Ask for a lower max_rank, a 16-bit "
                "dtype or the exact export, or export it on your machine: `vera fetch REF --out DIR` then `vera "
                "export-lora DIR OUT --max-rank K`.")

    def check(self, spec: ProjectionSpec) -> None:
        """Refuse, before anything is allocated, a projection larger than the limit."""
        elements = spec.r * (spec.max_in + spec.max_out)
        if elements > self.max_elements:  # (integers throughout: r=10**4000, which JSON can write, overflowed a float)
            raise InvalidInput(
                f"The projection (r={shown_number(spec.r)}, max_in={spec.max_in}, max_out={spec.max_out}) holds "
                f"{shown_number(elements, ',')} numbers ({shown_number(4 * elements // 2**20, ',')} MiB); this "
                f"registry generates at most {self.max_elements:,} "
                "(VERA_MAX_PROJECTION_ELEMENTS). Check the adapter's rank and target modules."
            )

    @contextmanager
    def generating(self, spec: ProjectionSpec) -> Iterator[None]:
        """Hold one of the concurrent generation slots while A and B for ``spec`` exist (Busy after wait_s)."""
        self.check(spec)
        with self.working():
            yield

    @contextmanager
    def working(self) -> Iterator[None]:
        """Hold one of the slots of costly work (a generation, a comparison's arithmetic, a LoRA export, a job's
        dataset read: a 53 MB CSV held 0.8 GB while it was, and parallel uploads added up, an outsider's walk of
        session 44; Busy after wait_s)."""
        if not self._slots.acquire(timeout=self.wait_s):
            raise Busy("The registry is already doing as much costly work (generating projections, comparing "
                       "versions, exporting LoRAs, reading fine-tune datasets) as it allows at once; retry in a few "
                       "seconds (VERA_CONCURRENT_GENERATIONS).")
        try:
            yield
        finally:
            self._slots.release()


@dataclass(frozen=True)
class CheckedAdapter:
    """An adapter that passed validation: what the registry stores and records of it."""

    vectors: dict[str, torch.Tensor]  # every tensor but the projections (vectors, heads, biases)
    spec: ProjectionSpec
    fingerprint: str  # of the projections the adapter was trained with
    reproducible: bool  # the seed regenerates them (else they are stored)
    layer_outs: dict[str, int]  # module path -> out_features


def validate(files: AdapterFiles, budget: ProjectionBudget) -> CheckedAdapter:
    """Check ``files`` (already parsed by vera_core, which checked the recorded shapes against the config and the
    vectors) as the registry needs; InvalidInput says what is wrong. Nothing is generated before the size check."""
    import torch

    from vera_core.targets import matches_target

    cfg = files.config
    if cfg.r > MAX_RANK:
        raise InvalidInput(f"r={cfg.r} exceeds the registry's limit of {MAX_RANK}.")
    try:  # before any pattern is matched against a layer name: linear time only (vera_core.patterns)
        require_linear(cfg.target_modules, cfg.layers_pattern)
    except VeraConfigError as exc:
        raise InvalidInput(str(exc)) from None
    _check_names(files)
    layers = sum(key.endswith(LAMBDA_B) for key in files.tensors)
    if layers > MAX_ADAPTED_LAYERS:
        raise InvalidInput(f"The adapter adapts {layers:,} layers; the registry takes at most {MAX_ADAPTED_LAYERS:,} "
                           "(every linear layer of a 405B model is 882, every expert's of DeepSeek-V3 about 47,000). "
                           "Check its target_modules.")
    for key, tensor in files.tensors.items():
        if not torch.isfinite(tensor).all():
            raise InvalidInput(f"Tensor {key!r} holds NaN or infinite values; the adapter is broken.")
    vectors = {k: v for k, v in files.tensors.items() if k not in PROJECTION_KEYS}
    layer_outs = {module_path(k, LAMBDA_B): int(v.shape[0]) for k, v in vectors.items() if k.endswith(LAMBDA_B)}
    d_layers = {module_path(k, LAMBDA_D) for k in vectors if k.endswith(LAMBDA_D)}
    if set(layer_outs) != d_layers:
        raise InvalidInput(f"Every adapted layer needs both vera_lambda_b and vera_lambda_d; unpaired: "
                           f"{sorted(set(layer_outs) ^ d_layers)[:5]}.")
    stray = sorted(path for path in layer_outs if not matches_target(cfg, path))
    if stray:
        raise InvalidInput(f"Layers {stray[:3]} hold VeRA vectors but target_modules={cfg.target_modules!r} does "
                           "not match them; the config and the tensors come from different adapters.")
    spec = files.spec
    if spec is None:
        raise InvalidInput(SHAPELESS_SEED_ONLY)
    if spec.max_out < max(layer_outs.values()):
        raise InvalidInput(f"The projection has {spec.max_out} rows but a layer has {max(layer_outs.values())} "
                           "outputs; the adapter's files are inconsistent.")
    with budget.generating(spec):
        fp, reproducible = _projection_fingerprint(files, spec)
    return CheckedAdapter(vectors, spec, fp, reproducible, layer_outs)


def _check_names(files: AdapterFiles) -> None:
    """Tensor names are module paths, which every listing, comparison and export shows (`vera compare`, the LoRA
    README): PyTorch modules' names are identifiers and indexes joined by dots, so anything else is refused (an escape
    sequence in one cleared the screen of whoever compared the version: an outsider's finding, session 39); the
    config's target and saved module names and its layers_pattern are one line of plain text."""
    for key in files.tensors:
        if not _TENSOR_NAME.fullmatch(key):
            raise InvalidInput(f"Tensor name {ascii(key)[:160]} is not a module path: expected letters, digits, '_', "
                               "'-' and '.' only (at most 512), as PyTorch modules are named. Rename the tensor.")
    config = files.config
    for value in (config.target_modules, config.modules_to_save, config.layers_pattern):
        for name in [value] if isinstance(value, str) else list(value or []):
            check_text(name, f"adapter_config.json's module name {ascii(name)[:100]}", max_length=1000)


#: What a tensor's name holds: a module path (model.layers.0.self_attn.q_proj.vera_lambda_b).
_TENSOR_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,512}")


def _projection_fingerprint(files: AdapterFiles, spec: ProjectionSpec) -> tuple[str, bool]:
    """The fingerprint of the projections the adapter was trained with, and whether its seed regenerates them."""
    from vera_core.projection import fingerprint, regenerated_fingerprint

    regenerated = regenerated_fingerprint(spec)  # A and B hashed as generated, never whole
    if files.has_projection:
        stored = fingerprint(*(files.tensors[k] for k in PROJECTION_KEYS))
        return stored, stored == regenerated
    if files.recorded_fingerprint not in (None, regenerated):
        raise InvalidInput(
            f"The seed regenerates projections with fingerprint {regenerated}, but the adapter records "
            f"{files.recorded_fingerprint}: it was trained with other projections. Publish it with "
            "save_projection=True so the registry can store them."
        )
    return regenerated, True

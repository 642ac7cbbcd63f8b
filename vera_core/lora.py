"""Export a VeRA adapter as an equivalent LoRA in PEFT's LoRA format, for LoRA-only tools and servers.

Per adapted layer, with A_s = A[:, :in] and B_s = B[:out, :]:

    lora_A = d[:, None] * A_s        (r, in)
    lora_B = b[:, None] * B_s        (out, r)
    lora_alpha = r                   so PEFT's scaling lora_alpha / r is 1

and lora_B @ lora_A = (b * B_s) @ (d * A_s) is exactly VeRA's delta weight. The export has rank r per layer
(r * (in + out) numbers instead of r + out); heads and biases are carried over unchanged.

For serving engines that cap the LoRA rank (vLLM: VLLM_MAX_RANK), ``LoraExport(max_rank=K)`` writes each layer's best
rank-K approximation (Eckart-Young) computed from the factors alone: QR of lora_B and of lora_A^T, then the SVD of
the r x r core, never the out x in delta. The relative Frobenius error of each layer's delta is reported.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors import safe_open

from vera_core.checkpoint import CONFIG_NAME, META_IN_FEATURES, WEIGHTS_NAME, AdapterFiles
from vera_core.errors import AdapterFormatError, printable
from vera_core.keys import PROJECTION_KEYS, module_path
from vera_core.lora_options import VLLM_MAX_RANK as VLLM_MAX_RANK
from vera_core.lora_options import VLLM_RANKS as VLLM_RANKS
from vera_core.lora_options import LoraExport as LoraExport
from vera_core.lora_options import vllm_max_lora_rank as vllm_max_lora_rank
from vera_core.serialization import Streamed, to_bytes, write

_BIAS = {"none": "none", "all": "all", "vera_only": "lora_only"}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
#: write_lora_files computes and writes factors in row blocks of about this many bytes (float32).
BLOCK_BYTES = 1 << 20


def lora_config(files: AdapterFiles, rank: int | None = None) -> dict[str, Any]:
    """PEFT LoraConfig fields equivalent to the adapter's VeRA config (at ``rank``, default r; alpha = rank so the
    scaling is 1)."""
    cfg = files.config
    rank = rank or cfg.r
    return {
        "peft_type": "LORA", "r": rank, "lora_alpha": rank, "lora_dropout": 0.0, "use_rslora": False,
        "target_modules": cfg.target_modules, "fan_in_fan_out": cfg.fan_in_fan_out, "bias": _BIAS[cfg.bias],
        "modules_to_save": cfg.modules_to_save, "init_lora_weights": True, "layers_to_transform":
        cfg.layers_to_transform, "layers_pattern": cfg.layers_pattern, "task_type": cfg.task_type,
        "base_model_name_or_path": cfg.base_model_name_or_path, "revision": cfg.revision, "inference_mode": True,
    }


def lora_tensors(files: AdapterFiles, a: torch.Tensor, b: torch.Tensor, export: LoraExport | None = None
                 ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """lora_A / lora_B per layer from d, b and the shared projections (other tensors unchanged), and each layer's
    relative error (0 for the exact export)."""
    export = export or LoraExport()
    rank = export.rank(files.config.r)
    dtype = DTYPES[export.dtype]
    out: dict[str, torch.Tensor] = {}
    errors: dict[str, float] = {}
    kept, layers = _layers(files, a, b)
    out.update(kept)
    for layer in layers:
        lora_a, lora_b = delta_factors(layer.d, layer.b, a, b, layer.n_in)
        error = 0.0
        if rank < files.config.r:
            lora_a, lora_b, error = truncated_factors(lora_a, lora_b, rank)
        out[f"{layer.path}.lora_A.weight"], out[f"{layer.path}.lora_B.weight"] = lora_a.to(dtype), lora_b.to(dtype)
        errors[module_path(layer.path)] = error
    return out, errors


@dataclass(frozen=True)
class _Layer:
    """One adapted layer: its key prefix, its vectors and its input size."""

    path: str
    d: torch.Tensor
    b: torch.Tensor
    n_in: int


def _layers(files: AdapterFiles, a: torch.Tensor, b: torch.Tensor) -> tuple[dict[str, torch.Tensor], list[_Layer]]:
    """The tensors an export carries over unchanged (heads, biases) and the adapted layers, each checked to fit
    the shared projections (before anything is computed or written)."""
    kept: dict[str, torch.Tensor] = {}
    layers: list[_Layer] = []
    suffix_d, suffix_b = ".vera_lambda_d", ".vera_lambda_b"
    recorded = files.metadata.get(META_IN_FEATURES)
    sizes = json.loads(recorded) if recorded else {}  # once: read per layer, 6,000 layers took 7 s (session 39)
    _check_in_features(sizes, [key[: -len(suffix_b)] for key in files.tensors if key.endswith(suffix_b)])
    for key, tensor in files.tensors.items():
        if key in PROJECTION_KEYS or key.endswith(suffix_d):
            continue
        if not key.endswith(suffix_b):
            kept[key] = tensor
            continue
        path = key[: -len(suffix_b)]
        layer = _Layer(path, files.tensors[path + suffix_d].float(), tensor.float(), int(sizes[module_path(path)]))
        if layer.n_in > a.shape[1] or layer.b.shape[0] > b.shape[0]:
            raise AdapterFormatError(f"Layer {module_path(path)} is larger than the shared projection.")
        layers.append(layer)
    return kept, layers


def truncated_factors(lora_a: torch.Tensor, lora_b: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The best rank-k approximation of lora_b @ lora_a (k x in, out x k) and its relative Frobenius error, from
    QR factorisations of the factors and the SVD of their r x r core: memory (out + in) * r, never out * in."""
    qb, rb = torch.linalg.qr(lora_b.double())  # (out, p), (p, r)
    qa, ra = torch.linalg.qr(lora_a.double().T)  # (in, q), (q, r)
    u, s, vh = torch.linalg.svd(rb @ ra.T, full_matrices=False)  # core (p, q): min(p, q) singular values
    total = float(s.square().sum())
    error = (float(s[k:].square().sum()) / total) ** 0.5 if total > 0 else 0.0
    kept = min(k, s.shape[0])  # a core that is not square (out != in, both under r) has fewer than either side
    root = s[:kept].sqrt()
    b_k = (qb @ u[:, :kept]) * root  # (out, <=k)
    a_k = root[:, None] * (vh[:kept] @ qa.T)  # (<=k, in)
    if b_k.shape[1] < k:  # a layer narrower than k: pad with zeros, every layer of a LoRA file has one rank
        b_k = torch.nn.functional.pad(b_k, (0, k - b_k.shape[1]))
        a_k = torch.nn.functional.pad(a_k, (0, 0, 0, k - a_k.shape[0]))
    return a_k.float().contiguous(), b_k.float().contiguous(), error


def delta_factors(
    d: torch.Tensor, lam_b: torch.Tensor, a: torch.Tensor, b: torch.Tensor, n_in: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(d * A[:, :in] (r, in), b * B[:out] (out, r)): their product is the layer's VeRA delta weight."""
    lora_a = (d.float().unsqueeze(1) * a[:, :n_in].float()).contiguous()  # (r, in)
    lora_b = (lam_b.float().unsqueeze(1) * b[: lam_b.shape[0]].float()).contiguous()  # (out, r)
    return lora_a, lora_b


def _check_in_features(sizes: dict[str, Any], paths: list[str]) -> None:
    """AdapterFormatError unless ``sizes`` knows the input size of every layer of ``paths``: it names the first
    missing by name (whatever order the tensors came in: a walk saw another layer named at each try) and how many."""
    missing = sorted(name for name in map(module_path, paths) if sizes.get(name) is None)
    if not missing:
        return
    others = f" (and {len(missing) - 1:,} other layers)" if len(missing) > 1 else ""
    raise AdapterFormatError(
        f"The adapter does not record the input size of {missing[0]}{others}, which the LoRA export needs; give "
        "its base model (`vera export-lora SRC DST --base-model DIR_OR_HUB_ID`, or base_model= in "
        "vera_core.export_lora: only its config.json is read), or re-save it with this version of vera_core (or "
        "publish it again)."
    )


def lora_file_bytes(files: AdapterFiles, a: torch.Tensor, b: torch.Tensor, export: LoraExport | None = None
                    ) -> dict[str, bytes]:
    """adapter_config.json and adapter_model.safetensors of the equivalent LoRA (exact, or of rank at most
    ``export.max_rank``, with a README.md giving each layer's relative error)."""
    export = export or LoraExport()
    tensors, errors = lora_tensors(files, a, b, export)
    rank = export.rank(files.config.r)
    files_out = {CONFIG_NAME: _config_bytes(files, rank),
                 WEIGHTS_NAME: to_bytes(tensors, _weights_metadata(files, rank, errors))}
    if rank < files.config.r:
        files_out["README.md"] = _readme(files, rank, errors)
    return files_out


def lora_export_bytes(files: AdapterFiles, a: torch.Tensor, b: torch.Tensor, export: LoraExport | None = None) -> int:
    """The bytes of factors an export of ``files`` writes (lora_A and lora_B of every adapted layer, at the export's
    rank and dtype), known before anything is computed: what a server checks against its limit first."""
    return lora_export_work(files, a, b, export).nbytes


#: What one layer of an export costs besides its arithmetic (Python and torch calls), in the units of
#: ``lora_export_work``: about 50 us a layer of the exact export, 1.4 ms of a rank-capped one (its QR and SVD calls)
#: on the machine of bench/RESULTS.md; an adapter of thousands of tiny layers costs its calls.
LAYER_WORK, FACTORED_LAYER_WORK = 1 << 21, 1 << 26
#: The rank-capped export's QR factorisations and SVD run in float64 through LAPACK, several times slower per
#: multiply-add than the float32 products of the exact export: counted this many times over.
FACTORING_WEIGHT = 4
#: What each number written costs (formed, converted, written and, in the registry, hashed and stored: a 4 GiB exact
#: export took 13.6 s, whatever its arithmetic), and each number of the factors a rank-capped export passes over in
#: float64 (copies, a tall and thin QR's memory traffic: 16 layers of 2^23 inputs at r=8 took 21 s), in the same
#: units (an outsider's re-check, session 39).
WRITE_WORK, PASS_WORK = 1 << 9, 800
#: What one layer of a rank-capped export holds at once, in bytes per number of its factors (float64 copies of both
#: and of their orthonormal bases): the registry bounds it as it bounds a comparison's layer.
FACTORING_BYTES = 32


class ExportCost(NamedTuple):
    """What an export costs, from its layers' shapes (``lora_export_work``)."""

    nbytes: int  # of the factors it writes (lora_export_bytes)
    work: int  # in float32 multiply-adds' worth
    held: int  # the most bytes one layer holds while it is factored (0 for the exact export)


def lora_export_work(files: AdapterFiles, a: torch.Tensor, b: torch.Tensor,
                     export: LoraExport | None = None) -> ExportCost:
    """About how much an export of ``files`` costs, known before anything is computed (the layers' shapes alone, in
    one pass over them): the bytes of factors it writes (``lora_export_bytes``), its work in float32 multiply-adds'
    worth (per layer its calls, LAYER_WORK, and each number written, WRITE_WORK;
    for a rank-capped export also the QR of each factor, the SVD of their core and the rank-k products, weighted by
    FACTORING_WEIGHT, each number of the factors passed over, PASS_WORK, and the calls, FACTORED_LAYER_WORK: on this
    project's machine about 4e10 a second, bench/export_work.py), and the most bytes one layer holds while it is
    factored (0 for the exact export). What a server checks against its limits first."""
    export = export or LoraExport()
    r = files.config.r
    k = export.rank(r)
    _, layers = _layers(files, a, b)
    numbers, work, held = 0, 0, 0
    for layer in layers:
        n_in, n_out = layer.n_in, layer.b.shape[0]
        numbers += k * (n_in + n_out)
        work += LAYER_WORK + WRITE_WORK * k * (n_in + n_out)
        if k < r:
            p, q = min(n_out, r), min(n_in, r)
            work += FACTORED_LAYER_WORK + PASS_WORK * r * (n_in + n_out) + FACTORING_WEIGHT * (
                n_out * r * p + n_in * r * q + p * q * min(p, q) + (n_in + n_out) * r * k)
            held = max(held, FACTORING_BYTES * r * (n_in + n_out))
    return ExportCost(numbers * DTYPES[export.dtype].itemsize, work, held)


def write_lora_files(folder: Path, files: AdapterFiles, a: torch.Tensor, b: torch.Tensor,
                     export: LoraExport | None = None) -> dict[str, Path]:
    """``lora_file_bytes``'s files written into ``folder`` (the same bytes), one layer at a time in row blocks of
    about 1 MiB: besides A and B, the most held is one layer's factors, however many layers the adapter has. A
    rank-capped export, whose header names the largest error of all layers, writes the factors to a spool file in
    the folder first and then copies them after the header. Returns each file's path."""
    export = export or LoraExport()
    rank = export.rank(files.config.r)
    dtype = DTYPES[export.dtype]
    kept, layers = _layers(files, a, b)
    paths = {CONFIG_NAME: folder / CONFIG_NAME, WEIGHTS_NAME: folder / WEIGHTS_NAME}
    paths[CONFIG_NAME].write_bytes(_config_bytes(files, rank))
    errors: dict[str, float] = {}
    if rank == files.config.r:
        streamed: dict[str, torch.Tensor | Streamed] = dict(kept)
        for layer in layers:  # generators: each block computed when the writer reaches it
            streamed[f"{layer.path}.lora_A.weight"] = Streamed(dtype, (a.shape[0], layer.n_in),
                                                               _scaled_rows(layer.d, a[:, :layer.n_in]))
            streamed[f"{layer.path}.lora_B.weight"] = Streamed(dtype, (layer.b.shape[0], b.shape[1]),
                                                               _scaled_rows(layer.b, b[: layer.b.shape[0]]))
        with paths[WEIGHTS_NAME].open("wb") as out:
            write(out, streamed, _weights_metadata(files, rank, errors))
        return paths
    spool = folder / f".{WEIGHTS_NAME}.spool"
    try:
        with spool.open("wb") as out:  # each layer's factors computed once, when the writer reaches them
            write(out, _truncated_layers(layers, a, b, rank, dtype, errors))
        with safe_open(str(spool), framework="pt") as spooled, paths[WEIGHTS_NAME].open("wb") as out:
            factors = {name: _spooled(spooled, name, dtype) for name in spooled.keys()}  # noqa: SIM118 (not a dict)
            write(out, {**kept, **factors}, _weights_metadata(files, rank, errors))
    finally:
        spool.unlink(missing_ok=True)
    paths["README.md"] = folder / "README.md"
    paths["README.md"].write_bytes(_readme(files, rank, errors))
    return paths


def _scaled_rows(scale: torch.Tensor, matrix: torch.Tensor) -> Iterator[torch.Tensor]:
    """``scale[:, None] * matrix`` (delta_factors' product, element by element the same) in row blocks."""
    step = _rows_per_block(matrix.shape[1])
    for start in range(0, matrix.shape[0], step):
        yield scale[start:start + step].unsqueeze(1) * matrix[start:start + step].float()


def _truncated_layers(layers: list[_Layer], a: torch.Tensor, b: torch.Tensor, rank: int, dtype: torch.dtype,
                      errors: dict[str, float]) -> dict[str, Streamed]:
    """Each layer's rank-capped factors as Streamed tensors computed when first read (lora_A and lora_B of a layer
    from one computation, the other kept until it is read), its error recorded in ``errors``."""
    pending: dict[str, torch.Tensor] = {}

    def factor(layer: _Layer, which: str) -> Iterator[torch.Tensor]:
        name = f"{layer.path}.{which}.weight"
        if name not in pending:
            lora_a, lora_b = delta_factors(layer.d, layer.b, a, b, layer.n_in)
            a_k, b_k, errors[module_path(layer.path)] = truncated_factors(lora_a, lora_b, rank)
            pending[f"{layer.path}.lora_A.weight"], pending[f"{layer.path}.lora_B.weight"] = a_k, b_k
        yield pending.pop(name)

    out: dict[str, Streamed] = {}
    for layer in layers:
        out[f"{layer.path}.lora_A.weight"] = Streamed(dtype, (rank, layer.n_in), factor(layer, "lora_A"))
        out[f"{layer.path}.lora_B.weight"] = Streamed(dtype, (layer.b.shape[0], rank), factor(layer, "lora_B"))
    return out


def _spooled(spooled: Any, name: str, dtype: torch.dtype) -> Streamed:
    """A factor (2-D, written in the export's ``dtype``) of the spool file, read back in row blocks."""
    part = spooled.get_slice(name)
    rows, columns = part.get_shape()
    step = _rows_per_block(columns)
    return Streamed(dtype, (rows, columns), (part[start:start + step] for start in range(0, rows, step)))


def _rows_per_block(row_numbers: int) -> int:
    return max(1, BLOCK_BYTES // (4 * max(1, row_numbers)))


def _config_bytes(files: AdapterFiles, rank: int) -> bytes:
    return json.dumps(lora_config(files, rank), indent=2, sort_keys=True).encode("utf-8")


def _weights_metadata(files: AdapterFiles, rank: int, errors: dict[str, float]) -> dict[str, str]:
    if rank == files.config.r:  # the exact export's bytes stay as they always were
        return {"format": "pt"}
    return {"format": "pt", "vera_core.lora_max_relative_error": f"{max(errors.values(), default=0.0):.6g}"}


def _readme(files: AdapterFiles, rank: int, errors: dict[str, float]) -> bytes:
    # names as printable() shows them: a local adapter's are not checked as a publish's are
    rows = "".join(f"| `{printable(path)}` | {err:.3g} |\n" for path, err in sorted(errors.items()))
    return (f"# Rank-{rank} LoRA of a rank-{files.config.r} VeRA adapter\n\nEach layer's delta is its best rank-{rank} "
            "approximation; relative Frobenius error of each layer's delta weight:\n\n| layer | error |\n|---|---|\n"
            + rows).encode("utf-8")

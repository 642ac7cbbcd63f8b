"""Export a VeRA adapter as an equivalent LoRA in PEFT's LoRA format, for LoRA-only tools and servers.

Per adapted layer, with A_s = A[:, :in] and B_s = B[:out, :]:

    lora_A = d[:, None] * A_s        (r, in)
    lora_B = b[:, None] * B_s        (out, r)
    lora_alpha = r                   so PEFT's scaling lora_alpha / r is 1

and lora_B @ lora_A = (b * B_s) @ (d * A_s) is exactly VeRA's delta weight. The export has rank r per layer
(r * (in + out) numbers instead of r + out); heads and biases are carried over unchanged.

For serving engines that cap the LoRA rank (vLLM: VLLM_RANKS), ``LoraExport(max_rank=K)`` writes each layer's best
rank-K approximation (Eckart-Young) computed from the factors alone: QR of lora_B and of lora_A^T, then the SVD of
the r x r core, never the out x in delta. The relative Frobenius error of each layer's delta is reported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import torch

from vera_core.checkpoint import CONFIG_NAME, META_IN_FEATURES, WEIGHTS_NAME, AdapterFiles
from vera_core.errors import AdapterFormatError, VeraConfigError
from vera_core.keys import PROJECTION_KEYS, module_path
from vera_core.serialization import to_bytes

_BIAS = {"none": "none", "all": "all", "vera_only": "lora_only"}
#: The LoRA ranks vLLM accepts (its max_lora_rank choices).
VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class LoraExport:
    """How to export: exact rank r (the default), or at most ``max_rank`` per layer; in ``dtype``; with
    ``for_vllm`` the rank is snapped down to one vLLM accepts."""

    max_rank: int | None = None
    dtype: str = "float32"
    for_vllm: bool = False

    def __post_init__(self) -> None:
        if self.max_rank is not None and (isinstance(self.max_rank, bool) or self.max_rank < 1):
            raise VeraConfigError(f"max_rank must be a positive integer, got {self.max_rank!r}.")
        if self.dtype not in DTYPES:
            raise VeraConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}.")

    def rank(self, r: int) -> int:
        """The rank the export has for an adapter of rank ``r``."""
        if self.max_rank is not None and self.max_rank > r:
            raise VeraConfigError(f"max_rank={self.max_rank} is larger than the adapter's r={r}; the exact export "
                                  "already has rank r (leave max_rank out).")
        k = self.max_rank or r
        return max(v for v in VLLM_RANKS if v <= k) if self.for_vllm else k


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
    suffix_d, suffix_b = ".vera_lambda_d", ".vera_lambda_b"
    for key, tensor in files.tensors.items():
        if key in PROJECTION_KEYS or key.endswith(suffix_d):
            continue
        if not key.endswith(suffix_b):
            out[key] = tensor
            continue
        path = key[: -len(suffix_b)]
        d = files.tensors[path + suffix_d].float()
        lam_b = tensor.float()
        n_in = _in_features(files, path)
        if n_in > a.shape[1] or lam_b.shape[0] > b.shape[0]:
            raise AdapterFormatError(f"Layer {module_path(path)} is larger than the shared projection.")
        lora_a, lora_b = delta_factors(d, lam_b, a, b, n_in)
        error = 0.0
        if rank < files.config.r:
            lora_a, lora_b, error = truncated_factors(lora_a, lora_b, rank)
        out[f"{path}.lora_A.weight"], out[f"{path}.lora_B.weight"] = lora_a.to(dtype), lora_b.to(dtype)
        errors[module_path(path)] = error
    return out, errors


def truncated_factors(lora_a: torch.Tensor, lora_b: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The best rank-k approximation of lora_b @ lora_a (k x in, out x k) and its relative Frobenius error, from
    QR factorisations of the factors and the SVD of their r x r core: memory (out + in) * r, never out * in."""
    qb, rb = torch.linalg.qr(lora_b.double())  # (out, p), (p, r)
    qa, ra = torch.linalg.qr(lora_a.double().T)  # (in, q), (q, r)
    u, s, vh = torch.linalg.svd(rb @ ra.T)  # core (p, q)
    total = float(s.square().sum())
    error = (float(s[k:].square().sum()) / total) ** 0.5 if total > 0 else 0.0
    root = s[:k].sqrt()
    b_k = (qb @ u[:, :k]) * root  # (out, <=k)
    a_k = root[:, None] * (vh[:k] @ qa.T)  # (<=k, in)
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


def _in_features(files: AdapterFiles, path: str) -> int:
    shapes = files.metadata.get(META_IN_FEATURES)
    if shapes:
        value = json.loads(shapes).get(module_path(path))
        if value is not None:
            return int(value)
    raise AdapterFormatError(
        f"The adapter does not record the input size of {module_path(path)}, which the LoRA export needs; "
        "re-save it with this version of vera_core (or publish it again)."
    )


def lora_file_bytes(files: AdapterFiles, a: torch.Tensor, b: torch.Tensor, export: LoraExport | None = None
                    ) -> dict[str, bytes]:
    """adapter_config.json and adapter_model.safetensors of the equivalent LoRA (exact, or of rank at most
    ``export.max_rank``, with a README.md giving each layer's relative error)."""
    export = export or LoraExport()
    tensors, errors = lora_tensors(files, a, b, export)
    rank = export.rank(files.config.r)
    files_out = {
        CONFIG_NAME: json.dumps(lora_config(files, rank), indent=2, sort_keys=True).encode("utf-8"),
        WEIGHTS_NAME: to_bytes(tensors, {"format": "pt"}),
    }
    if rank < files.config.r:  # the exact export's bytes stay as they always were
        files_out[WEIGHTS_NAME] = to_bytes(tensors, {"format": "pt", "vera_core.lora_max_relative_error":
                                                     f"{max(errors.values(), default=0.0):.6g}"})
        rows = "".join(f"| `{path}` | {err:.3g} |\n" for path, err in sorted(errors.items()))
        files_out["README.md"] = (
            f"# Rank-{rank} LoRA of a rank-{files.config.r} VeRA adapter\n\nEach layer's delta is its best rank-{rank} "
            "approximation; relative Frobenius error of each layer's delta weight:\n\n| layer | error |\n|---|---|\n"
            + rows).encode("utf-8")
    return files_out

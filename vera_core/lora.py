"""Export a VeRA adapter as an equivalent LoRA in PEFT's LoRA format, for LoRA-only tools and servers.

Per adapted layer, with A_s = A[:, :in] and B_s = B[:out, :]:

    lora_A = d[:, None] * A_s        (r, in)
    lora_B = b[:, None] * B_s        (out, r)
    lora_alpha = r                   so PEFT's scaling lora_alpha / r is 1

and lora_B @ lora_A = (b * B_s) @ (d * A_s) is exactly VeRA's delta weight. The export has rank r per layer
(r * (in + out) numbers instead of r + out); heads and biases are carried over unchanged.
"""

from __future__ import annotations

import json
from typing import Any

import torch

from vera_core.checkpoint import CONFIG_NAME, META_IN_FEATURES, WEIGHTS_NAME, AdapterFiles
from vera_core.errors import AdapterFormatError
from vera_core.keys import PROJECTION_KEYS, module_path
from vera_core.serialization import to_bytes

_BIAS = {"none": "none", "all": "all", "vera_only": "lora_only"}


def lora_config(files: AdapterFiles) -> dict[str, Any]:
    """PEFT LoraConfig fields equivalent to the adapter's VeRA config."""
    cfg = files.config
    return {
        "peft_type": "LORA", "r": cfg.r, "lora_alpha": cfg.r, "lora_dropout": 0.0, "use_rslora": False,
        "target_modules": cfg.target_modules, "fan_in_fan_out": cfg.fan_in_fan_out, "bias": _BIAS[cfg.bias],
        "modules_to_save": cfg.modules_to_save, "init_lora_weights": True, "layers_to_transform":
        cfg.layers_to_transform, "layers_pattern": cfg.layers_pattern, "task_type": cfg.task_type,
        "base_model_name_or_path": cfg.base_model_name_or_path, "revision": cfg.revision, "inference_mode": True,
    }


def lora_tensors(files: AdapterFiles, a: torch.Tensor, b: torch.Tensor) -> dict[str, torch.Tensor]:
    """lora_A / lora_B per layer from d, b and the shared projections; other tensors unchanged."""
    out: dict[str, torch.Tensor] = {}
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
        out[f"{path}.lora_A.weight"], out[f"{path}.lora_B.weight"] = delta_factors(d, lam_b, a, b, n_in)
    return out


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


def lora_file_bytes(files: AdapterFiles, a: torch.Tensor, b: torch.Tensor) -> dict[str, bytes]:
    """adapter_config.json and adapter_model.safetensors of the equivalent LoRA."""
    return {
        CONFIG_NAME: json.dumps(lora_config(files), indent=2, sort_keys=True).encode("utf-8"),
        WEIGHTS_NAME: to_bytes(lora_tensors(files, a, b), {"format": "pt"}),
    }

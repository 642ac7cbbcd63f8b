"""What the dashboard draws from a version's tensors, read with safetensors' NumPy loader (the dashboard never
imports torch): where the bytes go, the per-layer magnitudes of d and b, and the modules saved whole (a task head). One
download serves them all (``summary``)."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from safetensors.numpy import load

from registry.client import RegistryClient
from vera_core.keys import LAMBDA_B, LAMBDA_D, PROJECTION_KEYS, module_path


def tensors(client: RegistryClient, ref: str, *, seed_reproducible: bool) -> dict[str, np.ndarray]:
    """The version's tensors (vectors and heads; A and B too when they are stored, not seed-reproducible), read to
    be shown: not counted as a download."""
    return load(client.download(ref, "adapter_model.safetensors", with_projection=not seed_reproducible,
                                seed_only=seed_reproducible, inspect=True))


def layer_magnitudes(found: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Per adapted layer: mean |d| and mean |b| and their norms (where adaptation concentrates, as in the paper's
    analysis), in the file's order."""
    rows = []
    for key, b in found.items():
        if key.endswith(LAMBDA_B):
            d = found[key.removesuffix(LAMBDA_B) + LAMBDA_D]
            rows.append({"layer": module_path(key, LAMBDA_B), "d_mean_abs": float(np.abs(d).mean()),
                         "b_mean_abs": float(np.abs(b).mean()), "d_norm": float(np.linalg.norm(d)),
                         "b_norm": float(np.linalg.norm(b))})
    return rows


def parameter_counts(found: dict[str, np.ndarray]) -> dict[str, int]:
    """Where a version's parameters go: the d and b vectors, task heads, and the projection (A and B, present only
    when stored rather than regenerated from the seed)."""
    return {"vector_parameters": sum(t.size for k, t in found.items() if ".vera_lambda_" in k),
            "head_parameters": sum(t.size for k, t in found.items()
                                   if ".vera_lambda_" not in k and k not in PROJECTION_KEYS),
            "projection_parameters": sum(found[k].size for k in PROJECTION_KEYS if k in found)}


#: A head's trained copy inside PEFT's ModulesToSaveWrapper (``<head>.modules_to_save.<adapter>.``), which
#: ``bias="all"`` saves beside the head's own keys: the same module, counted once.
_WRAPPED_COPY = re.compile(r"\.modules_to_save\.[^.]+\.")


def saved_whole(found: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """The modules stored whole rather than as d and b (``modules_to_save``: a task head; biases with
    ``bias="all"``), each with its parameter count, in the file's order: what the layers of ``layer_magnitudes`` are
    not."""
    modules: dict[str, int] = {}
    for key, tensor in found.items():
        if ".vera_lambda_" in key or key in PROJECTION_KEYS or _WRAPPED_COPY.search(key):
            continue
        module = module_path(key).rpartition(".")[0] or module_path(key)  # its weight, its bias: one module
        modules[module] = modules.get(module, 0) + int(tensor.size)
    return [{"module": module, "parameters": count} for module, count in modules.items()]


def summary(client: RegistryClient, ref: str, *, seed_reproducible: bool) -> dict[str, Any]:
    """``parameter_counts`` and, as ``layers``, ``layer_magnitudes`` of the version ``ref`` (pinned,
    owner/name:N), and, as ``saved_whole``, the modules stored whole, from one download of its tensors."""
    found = tensors(client, ref, seed_reproducible=seed_reproducible)
    return {**parameter_counts(found), "layers": layer_magnitudes(found), "saved_whole": saved_whole(found)}

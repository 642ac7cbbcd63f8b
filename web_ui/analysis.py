"""What the dashboard draws from a version's tensors, read with safetensors' NumPy loader (the dashboard never
imports torch): where the bytes go, and the per-layer magnitudes of d and b."""

from __future__ import annotations

from typing import Any

import numpy as np
from safetensors.numpy import load

from registry.client import RegistryClient
from registry.domain.schemas import Ref
from vera_core.keys import LAMBDA_B, LAMBDA_D, PROJECTION_KEYS, module_path
from web_ui import formats


def tensors(client: RegistryClient, ref: str | Ref) -> dict[str, np.ndarray]:
    """The version's tensors (vectors and heads; A and B too when they are stored, not seed-reproducible)."""
    info = client.get(ref)
    return load(client.download(info.ref, "adapter_model.safetensors", with_projection=not info.seed_reproducible,
                                seed_only=info.seed_reproducible))


def layer_magnitudes(client: RegistryClient, ref: str | Ref) -> list[dict[str, Any]]:
    """Per adapted layer: mean |d| and mean |b| and their norms (where adaptation concentrates, as in the paper's
    analysis), in model order."""
    found = tensors(client, ref)
    rows = []
    for key, b in found.items():
        if key.endswith(LAMBDA_B):
            d = found[key.removesuffix(LAMBDA_B) + LAMBDA_D]
            rows.append({"layer": module_path(key, LAMBDA_B), "d_mean_abs": float(np.abs(d).mean()),
                         "b_mean_abs": float(np.abs(b).mean()), "d_norm": float(np.linalg.norm(d)),
                         "b_norm": float(np.linalg.norm(b))})
    return rows


def storage(client: RegistryClient, ref: str | Ref) -> dict[str, Any]:
    """Where a version's bytes go: vector and head parameters, the stored blob, the projection (regenerated from the
    seed, or stored once and shared)."""
    info = client.get(ref)
    found = tensors(client, info.ref)
    vectors = sum(t.size for k, t in found.items() if ".vera_lambda_" in k)
    heads = sum(t.size for k, t in found.items() if ".vera_lambda_" not in k and k not in PROJECTION_KEYS)
    projection = sum(found[k].size for k in PROJECTION_KEYS if k in found)
    return {"vector_parameters": vectors, "head_parameters": heads, "stored_bytes": info.stored_bytes,
            "projection": "regenerated from the seed (0 bytes stored)" if info.seed_reproducible else
            f"stored once, shared ({formats.size(4 * projection)})", "projection_parameters": projection}

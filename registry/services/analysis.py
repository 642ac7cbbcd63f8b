"""Comparing versions: per-layer norms of d and b and the cosine similarity of their weight deltas (the tensor
maths of the registry, kept apart from storage and lookups)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from registry.domain.errors import InvalidInput
from registry.domain.schemas import Comparison, LayerComparison, LayerWithFirst
from registry.services.lookup import layer_in_features, resolve, version_info, version_tensors
from registry.services.validation import ProjectionBudget
from registry.store.blobs import BlobStore
from registry.store.database import Database
from vera_core.keys import LAMBDA_B, LAMBDA_D, PEFT_PREFIX, PROJECTION_KEYS, module_path

if TYPE_CHECKING:  # torch: imported when versions are compared, not when a server starts
    import torch

    Loaded = tuple[dict[str, torch.Tensor], dict[str, int]]  # a version's tensors (with A and B), its layers' in sizes
    Factors = tuple[torch.Tensor, torch.Tensor]  # (lora_A (r, in), lora_B (out, r)) of one layer's delta, float64


#: The most versions one comparison takes.
MAX_COMPARED = 8

class Analysis:
    def __init__(self, db: Database, blobs: BlobStore, *, budget: ProjectionBudget) -> None:
        self.db, self.blobs, self.budget = db, blobs, budget

    def compare(self, refs: list[str]) -> Comparison:
        """Parameters, bytes, metrics, per-layer norms of d and b, and per-layer cosine of the weight deltas: over
        the layers every version adapts (``layers``), and, with the first's, over the first's layers that any other
        adapts (``with_first``), so a version on another base model, sharing no layer, empties only its own row.

        Each delta is the layer's own: A and B sliced to its (out, in) as the forward does, and the cosines come from
        r x r products of its factors, so memory grows with (out + in) * r, never out * in. A cosine is None where
        the two layers differ in shape or a layer's input size is unknown (a PEFT-written adapter whose base model's
        shapes are not declared)."""
        if not 2 <= len(refs) <= MAX_COMPARED:
            raise InvalidInput(f"compare takes 2 to {MAX_COMPARED} versions, got {len(refs)}.")
        loaded: list[Loaded] = []
        with self.db.session() as s:
            versions = [resolve(s, ref) for ref in refs]
            infos = [version_info(s, v) for v in versions]
            for v in versions:
                tensors, metadata = version_tensors(self.blobs, v, with_projection=True,
                                                    budget=self.budget)
                sizes = layer_in_features(v, tensors, metadata)
                loaded.append((tensors, json.loads(sizes) if sizes else {}))
        adapted = [{module_path(k, LAMBDA_B) for k in t if k.endswith(LAMBDA_B)} for t, _ in loaded]
        layers = [_compare_layer(path, loaded) for path in sorted(set.intersection(*adapted))]
        every = {layer.module: layer.delta_cosine[0] for layer in layers}
        shared = sorted(path for path in adapted[0] if any(path in other for other in adapted[1:]))
        return Comparison(refs=[i.ref for i in infos], versions=infos, layers=layers,
                          with_first=[LayerWithFirst(module=path, cosine=every[path] if path in every else
                                                     _with_first(path, loaded, adapted)) for path in shared])


def _compare_layer(path: str, loaded: list[Loaded]) -> LayerComparison:
    """A layer every version adapts: each one's norms of d and b, and the cosines of every pair of deltas."""
    factors = [_factors(path, version) for version in loaded]
    d_norms = [float(tensors[f"{PEFT_PREFIX}{path}{LAMBDA_D}"].norm()) for tensors, _ in loaded]
    b_norms = [float(tensors[f"{PEFT_PREFIX}{path}{LAMBDA_B}"].norm()) for tensors, _ in loaded]
    cos = [[_cosine(x, y) for y in factors] for x in factors]
    return LayerComparison(module=path, d_norms=d_norms, b_norms=b_norms, delta_cosine=cos)


def _with_first(path: str, loaded: list[Loaded], adapted: list[set[str]]) -> list[float | None]:
    """A layer of the first version that some others adapt: each version's delta cosine with the first's (None
    for a version that does not adapt it)."""
    first = _factors(path, loaded[0])
    return [_cosine(first, _factors(path, version)) if path in layers else None
            for version, layers in zip(loaded, adapted, strict=True)]


def _factors(path: str, version: Loaded) -> Factors | None:
    """The layer's delta as two factors (A and B sliced to its shape, scaled by d and b); None when its input
    size is unknown."""
    from vera_core.lora import delta_factors

    tensors, in_features = version
    width = in_features.get(path)
    if width is None:
        return None
    d, b = tensors[f"{PEFT_PREFIX}{path}{LAMBDA_D}"], tensors[f"{PEFT_PREFIX}{path}{LAMBDA_B}"]
    a_full, b_full = (tensors[k] for k in PROJECTION_KEYS)
    lora_a, lora_b = delta_factors(d, b, a_full, b_full, int(width))
    return lora_a.double(), lora_b.double()


def _inner(x: Factors, y: Factors) -> float:
    """<B1 A1, B2 A2> (Frobenius) = sum((B1^T B2) * (A1 A2^T)): r x r products, never the (out, in) deltas."""
    (a1, b1), (a2, b2) = x, y
    return float(((b1.T @ b2) * (a1 @ a2.T)).sum())


def _cosine(x: Factors | None, y: Factors | None) -> float | None:
    """Cosine of two layers' weight deltas of the same shape; None when there is nothing comparable."""
    if x is None or y is None or x[1].shape[0] != y[1].shape[0] or x[0].shape[1] != y[0].shape[1]:
        return None
    denom = (_inner(x, x) * _inner(y, y)) ** 0.5
    return _inner(x, y) / denom if denom > 0 else None

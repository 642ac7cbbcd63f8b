"""Comparing versions: per-layer norms of d and b and the cosine similarity of their weight deltas (the tensor
maths of the registry, kept apart from storage and lookups)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from registry.domain.errors import InvalidInput
from registry.domain.schemas import Comparison, LayerComparison, LayerWithFirst
from registry.services.lookup import (
    layer_in_features,
    projection_spec,
    projection_tensors,
    resolve,
    version_info,
    version_tensors,
)
from registry.services.validation import MAX_LAYER_BYTES, ProjectionBudget
from registry.store.blobs import BlobStore
from registry.store.database import Database
from vera_core.keys import LAMBDA_B, LAMBDA_D, PEFT_PREFIX, PROJECTION_KEYS, module_path

if TYPE_CHECKING:  # torch: imported when versions are compared, not when a server starts
    import torch

    Loaded = tuple[dict[str, torch.Tensor], dict[str, int]]  # a version's tensors (with A and B), its layers' in sizes
    Factors = tuple[torch.Tensor, torch.Tensor]  # (lora_A (r, in), lora_B (out, r)) of one layer's delta, float64


#: The most versions one comparison takes.
MAX_COMPARED = 8

#: (out, in, r) of one version's delta in one layer.
Shape = tuple[int, int, int]


class Analysis:
    def __init__(self, db: Database, blobs: BlobStore, *, budget: ProjectionBudget) -> None:
        self.db, self.blobs, self.budget = db, blobs, budget

    def compare(self, refs: list[str]) -> Comparison:
        """Parameters, bytes, metrics, per-layer norms of d and b, and per-layer cosine of the weight deltas: over
        the layers every version adapts (``layers``), and, with the first's, over the first's layers that any other
        adapts (``with_first``), so a version on another base model, sharing no layer, empties only its own row.

        Each delta is the layer's own: A and B sliced to its (out, in) as the forward does. A version named twice is
        loaded and compared once. Each layer's inner products take the cheaper of two ways (``_plan``): the deltas
        formed whole, or r x r products of their factors, of those holding at most MAX_LAYER_BYTES at once; the
        whole comparison's cost is estimated from the versions' shapes and refused over the budget's
        ``max_compare_work`` before any delta is formed, and its arithmetic holds one of the budget's slots of
        costly work. A cosine is None where the two layers differ in shape or a layer's input size is unknown (a
        PEFT-written adapter whose base model's shapes are not declared)."""
        if not 2 <= len(refs) <= MAX_COMPARED:
            raise InvalidInput(f"compare takes 2 to {MAX_COMPARED} versions, got {len(refs)}.")
        loaded: list[Loaded] = []
        with self.db.session() as s:
            versions = [resolve(s, ref) for ref in refs]
            infos = [version_info(s, v) for v in versions]
            distinct = list(dict.fromkeys(v.id for v in versions))  # each version once, in the order first named
            at = [distinct.index(v.id) for v in versions]  # a reference's version among them
            chosen = [next(v for v in versions if v.id == version_id) for version_id in distinct]
            for v in chosen:  # its vectors first: the plans need only their sizes, and A and B may be refused
                tensors, metadata = version_tensors(self.blobs, v, with_projection=False, budget=self.budget)
                sizes = layer_in_features(v, tensors, metadata)
                loaded.append((tensors, json.loads(sizes) if sizes else {}))
            projections = {v.projection_id: v.projection for v in chosen}
        adapted = [{module_path(k, LAMBDA_B) for k in t if k.endswith(LAMBDA_B)} for t, _ in loaded]
        every = sorted(set.intersection(*adapted))
        # the first's layers that another reference's version adapts (the first named again counts, as it did)
        shared = sorted(path for path in adapted[at[0]] if any(path in adapted[k] for k in at[1:]))
        # the layers every version adapts: every pair; the first's others: the first with those that adapt them
        plans = {path: _plan(path, loaded, range(len(loaded)), None) for path in every}
        plans.update({path: _plan(path, loaded, [i for i, layers in enumerate(adapted) if path in layers], at[0])
                      for path in shared if path not in plans})
        if (large := next((plan for plan in plans.values() if plan.work < 0), None)) is not None:
            raise InvalidInput(f"Comparing {large.path} would hold more than {MAX_LAYER_BYTES >> 20} MiB of its "
                               "deltas' factors at once, however it is done: their ranks and shapes are too large to "
                               "compare here. Compare fewer versions at once, or fetch them (`vera fetch REF --out "
                               "DIR`) and compare their deltas with vera_core on your own machine.")
        self.budget.check_compare(sum(plan.work for plan in plans.values()), len(distinct))
        # then A and B, once per projection the versions use (most share one seed's), only what a plan will read
        needed = {chosen[i].projection_id for plan in plans.values() for pair in plan.pairs for i in pair}
        self.budget.check_compare_projections(sum(projection_spec(projections[key]).nbytes for key in needed),
                                              len(needed))
        drawn = {key: projection_tensors(self.blobs, projections[key], budget=self.budget) for key in needed}
        for i, v in enumerate(chosen):
            loaded[i][0].update(drawn.get(v.projection_id, {}))
        with self.budget.working():
            cosines = {path: plan.cosines(loaded) for path, plan in plans.items()}
        layers = [_layer(path, loaded, at, cosines[path]) for path in every]
        return Comparison(refs=[i.ref for i in infos], versions=infos, layers=layers, with_first=[
            LayerWithFirst(module=path, cosine=[cosines[path].get(_pair(at[0], j)) for j in at]) for path in shared])


def _layer(path: str, loaded: list[Loaded], at: list[int], cosines: dict[tuple[int, int], float | None]
           ) -> LayerComparison:
    """A layer every version adapts: each reference's norms of d and b, and the cosines of every pair of deltas."""
    d_norms = [float(loaded[i][0][f"{PEFT_PREFIX}{path}{LAMBDA_D}"].norm()) for i in at]
    b_norms = [float(loaded[i][0][f"{PEFT_PREFIX}{path}{LAMBDA_B}"].norm()) for i in at]
    return LayerComparison(module=path, d_norms=d_norms, b_norms=b_norms,
                           delta_cosine=[[cosines.get(_pair(i, j)) for j in at] for i in at])


def _pair(i: int, j: int) -> tuple[int, int]:
    return (i, j) if i <= j else (j, i)


class _Plan:
    """One layer's inner products to compute: ``pairs`` (i <= j, of deltas of one shape), the way (``formed``:
    the deltas formed whole, one version's factors at a time; else r x r products of every version's factors) and
    its cost in multiply-adds (``work``; -1 where neither way fits in MAX_LAYER_BYTES)."""

    def __init__(self, path: str, pairs: list[tuple[int, int]], formed: bool, work: int) -> None:
        self.path, self.pairs, self.formed, self.work = path, pairs, formed, work

    def cosines(self, loaded: list[Loaded]) -> dict[tuple[int, int], float | None]:
        """The cosine of each pair's deltas (None where a delta is zero)."""
        import torch

        used = sorted({i for pair in self.pairs for i in pair})
        if self.formed:  # each version's factors only while its delta is formed
            deltas = {i: _formed(*_factors(self.path, loaded[i])) for i in used}
            inner = {(i, j): float(torch.dot(deltas[i], deltas[j])) for i, j in self.pairs}
        else:
            factors = {i: _factors(self.path, loaded[i]) for i in used}
            inner = {(i, j): _inner(factors[i], factors[j]) for i, j in self.pairs}
        return {(i, j): value / denom if (denom := (inner[i, i] * inner[j, j]) ** 0.5) > 0 else None
                for (i, j), value in inner.items()}


def _plan(path: str, loaded: list[Loaded], members: Sequence[int], first: int | None) -> _Plan:
    """What comparing ``path`` among ``members`` (of the versions loaded) takes: every pair of them, or with
    ``first`` only its pairs; each with itself (the norms). A pair of two shapes, or of a layer whose input size is
    unknown, is not computed (its cosine is None). The cheaper way that holds at most MAX_LAYER_BYTES is taken, each
    version costed with its own shape: forming version i's delta costs out_i * in_i * r_i and each pair then out * in
    (the deltas held together); the factored way costs (out + in) * r_i * r_j a pair (every version's factors held,
    and a pair's r x r products)."""
    shapes = {i: shape for i in members if (shape := _shape(path, loaded[i])) is not None}
    wanted = [_pair(i, j) for i in shapes for j in shapes if (i <= j if first is None else first in (i, j))
              and shapes[i][:2] == shapes[j][:2]]
    pairs = sorted({*wanted, *((i, i) for pair in wanted for i in pair)})
    if not pairs:
        return _Plan(path, [], False, 0)
    used = sorted({i for pair in pairs for i in pair})
    area = {i: shapes[i][0] * shapes[i][1] for i in used}  # out * in
    factors = {i: 8 * (shapes[i][0] + shapes[i][1]) * shapes[i][2] for i in used}  # bytes of its two factors
    ways = [(sum(area[i] * shapes[i][2] for i in used) + sum(area[i] for i, _ in pairs), True,
             8 * sum(area.values()) + max(factors.values())),
            (sum((shapes[i][0] + shapes[i][1]) * shapes[i][2] * shapes[j][2] for i, j in pairs), False,
             sum(factors.values()) + max(3 * 8 * shapes[i][2] * shapes[j][2] for i, j in pairs))]
    fitting = [(work, formed) for work, formed, held in ways if held <= MAX_LAYER_BYTES]
    if not fitting:
        return _Plan(path, pairs, False, -1)
    work, formed = min(fitting)
    return _Plan(path, pairs, formed, work)


def _shape(path: str, version: Loaded) -> Shape | None:
    """(out, in, r) of the layer's delta, from its vectors and recorded input size; None when that is unknown."""
    tensors, in_features = version
    width = in_features.get(path)
    if width is None:
        return None
    return (int(tensors[f"{PEFT_PREFIX}{path}{LAMBDA_B}"].shape[0]), int(width),
            int(tensors[f"{PEFT_PREFIX}{path}{LAMBDA_D}"].shape[0]))


def _factors(path: str, version: Loaded) -> Factors:
    """The layer's delta as two factors (A and B sliced to its shape, scaled by d and b), float64."""
    from vera_core.lora import delta_factors

    tensors, in_features = version
    d, b = tensors[f"{PEFT_PREFIX}{path}{LAMBDA_D}"], tensors[f"{PEFT_PREFIX}{path}{LAMBDA_B}"]
    a_full, b_full = (tensors[k] for k in PROJECTION_KEYS)
    lora_a, lora_b = delta_factors(d, b, a_full, b_full, int(in_features[path]))
    return lora_a.double(), lora_b.double()


def _formed(lora_a: torch.Tensor, lora_b: torch.Tensor) -> torch.Tensor:
    """The delta B A of one layer, whole and flat."""
    return (lora_b @ lora_a).flatten()


def _inner(x: Factors, y: Factors) -> float:
    """<B1 A1, B2 A2> (Frobenius) = sum((B1^T B2) * (A1 A2^T)): r x r products, never the (out, in) deltas."""
    (a1, b1), (a2, b2) = x, y
    return float(((b1.T @ b2) * (a1 @ a2.T)).sum())

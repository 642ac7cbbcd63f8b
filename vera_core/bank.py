"""AdapterBank: many VeRA adapters that share one projection, served together in mixed batches.

Every row of a batch names its adapter. Because all adapters share A and B, each layer computes A x once for the
whole batch (and once for all layers reading the same input), scales row by row with that row's d, applies B once,
and scales with that row's b: the arithmetic of a single adapter plus two gathers. Task heads
(``modules_to_save``) run once per adapter present in the batch, on that adapter's rows.

PEFT's VeRA has no mixed batches (its ``adapter_names`` argument is ignored for VeRA).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import Any, cast

import torch
from torch import nn
from torch.func import functional_call

from vera_core.checkpoint import AdapterFiles, read_adapter
from vera_core.errors import AdapterFormatError
from vera_core.keys import LAMBDA_D, PEFT_PREFIX, PROJECTION_KEYS, module_path
from vera_core.layer import Routing, VeraLinear
from vera_core.model import VeraModel
from vera_core.projection import fingerprint

#: Heads up to this many parameter elements times rows run vectorised (gathered per row); larger heads, such as
#: language-model heads, run once per adapter present instead.
VMAP_HEAD_BUDGET = 1 << 24


class AdapterBank:
    """Holds adapters for one VeraModel (its base, targets, rank, seed and generator) in dense slot tensors."""

    def __init__(self, model: VeraModel, *, capacity: int = 16) -> None:
        if model.config.bias != "none":
            raise AdapterFormatError("An AdapterBank serves adapters with bias='none' only; trained biases would "
                                     "change the shared base layers.")
        self.model = model
        self.layers: dict[str, VeraLinear] = dict(model.named_vera_layers())
        self.heads: dict[str, nn.Module] = dict(model.modules_to_save())
        self._fingerprint = model.projection_fingerprint()
        self.slots: dict[str, int] = {}
        self._names: list[str] = []
        self._head_params: dict[str, list[dict[str, torch.Tensor]]] = {h: [] for h in self.heads}
        device = model.projection.vera_A.device
        for layer in self.layers.values():
            layer.bank_d = torch.zeros(capacity, layer.r, device=device)
            layer.bank_b = torch.zeros(capacity, layer.out_features, device=device)
        for name, head in self.heads.items():
            head.forward = self._head_forward(name, head)

    # ---- membership ------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self.slots

    def names(self) -> list[str]:
        return list(self._names)

    def bytes_per_adapter(self) -> int:
        """float32 bytes one adapter occupies here: its vectors and its heads."""
        vectors = sum(4 * (layer.r + layer.out_features) for layer in self.layers.values())
        heads = sum(p.numel() * p.element_size() for h in self.heads.values() for p in h.parameters())
        return vectors + heads

    def add(self, name: str, source: AdapterFiles | str | os.PathLike[str]) -> None:
        """Load an adapter (a directory or parsed files) into a slot; replaces an adapter of the same name."""
        files = source if isinstance(source, AdapterFiles) else read_adapter(source)
        self._check_compatible(name, files)
        tensors = files.tensors
        slot = self.slots.get(name, len(self._names))
        if slot == len(self._names):
            self._grow(slot + 1)
            self._names.append(name)
            for params in self._head_params.values():
                params.append({})
        device = self.model.projection.vera_A.device
        with torch.no_grad():
            for path, layer in self.layers.items():
                assert layer.bank_d is not None and layer.bank_b is not None
                layer.bank_d[slot] = tensors[f"{PEFT_PREFIX}{path}.vera_lambda_d"].to(device, torch.float32)
                layer.bank_b[slot] = tensors[f"{PEFT_PREFIX}{path}.vera_lambda_b"].to(device, torch.float32)
        for head_name, head in self.heads.items():
            self._head_params[head_name][slot] = {
                p: tensors[f"{PEFT_PREFIX}{head_name}.{p}"].to(device, t.dtype) for p, t in head.state_dict().items()}
        self.slots[name] = slot

    def remove(self, name: str) -> None:
        """Free a slot: the last adapter moves into it, so slots stay dense."""
        slot = self.slots.pop(name)
        last = len(self._names) - 1
        if slot != last:
            moved = self._names[last]
            with torch.no_grad():
                for layer in self.layers.values():
                    assert layer.bank_d is not None and layer.bank_b is not None
                    layer.bank_d[slot] = layer.bank_d[last]
                    layer.bank_b[slot] = layer.bank_b[last]
            for params in self._head_params.values():
                params[slot] = params[last]
            self._names[slot] = moved
            self.slots[moved] = slot
        self._names.pop()
        for params in self._head_params.values():
            params.pop()

    def _grow(self, needed: int) -> None:
        for layer in self.layers.values():
            assert layer.bank_d is not None and layer.bank_b is not None
            if layer.bank_d.shape[0] < needed:
                size = max(needed, 2 * layer.bank_d.shape[0])
                layer.bank_d = torch.cat([layer.bank_d, layer.bank_d.new_zeros(size - layer.bank_d.shape[0],
                                                                                 layer.r)])
                layer.bank_b = torch.cat([layer.bank_b, layer.bank_b.new_zeros(size - layer.bank_b.shape[0],
                                                                                 layer.out_features)])

    def _check_compatible(self, name: str, files: AdapterFiles) -> None:
        if files.config.bias != "none":
            raise AdapterFormatError(f"Adapter {name!r} trains biases (bias={files.config.bias!r}); a bank serves "
                                     "bias='none' adapters only. Load it on its own with load_adapter().")
        differences = self._differences(files)
        if differences:
            if differences[0].startswith("target"):
                fix = "Build a separate bank for that target set: AdapterBank(VeraModel(base, the adapter's config))."
            elif differences[0].startswith(("stored projections", "projection fingerprint")):
                fix = "Load it on its own with load_adapter(): no bank shares its projections."
            else:
                fix = "Serve it from a bank built for its settings: AdapterBank(VeraModel(base, the adapter's config))."
            raise AdapterFormatError(f"Adapter {name!r} cannot join this bank (expected: what the bank was built "
                                     f"for; found: the adapter's): {'; '.join(differences)}. {fix}")
        problem = self.model.adapter_mismatch(files.tensors)
        if problem is not None:
            raise AdapterFormatError(
                f"Adapter {name!r} does not fit this bank's base model: {problem}it was trained on another base."
            )
        for key, tensor in self.model.peft_extras(files.tensors)[1].items():
            weight = self.model.base_weight_at(key)
            if not torch.equal(tensor.to(weight.device, weight.dtype), weight):
                raise AdapterFormatError(
                    f"Adapter {name!r} carries its own base weight {key!r} (PEFT's save_embedding_layers: a resized "
                    "vocabulary), unlike this bank's base model, which every adapter of a bank shares. Load it on "
                    "its own with load_adapter().")

    def _differences(self, files: AdapterFiles) -> list[str]:
        """What differs between the adapter and what this bank was built for, each as expected / found."""
        ours, theirs, model = self.model.config, files.config, self.model
        found: list[str] = []
        layers = sorted(module_path(k, LAMBDA_D) for k in files.vector_keys() if k.endswith(LAMBDA_D))
        if layers != sorted(self.layers):
            found.append(f"target modules: expected {len(self.layers)} layers (target_modules="
                         f"{ours.target_modules!r}), found {len(layers)} (target_modules={theirs.target_modules!r})")
        for label, mine, other in (("r", ours.r, theirs.r),
                                   ("seed (projection_prng_key)", ours.projection_prng_key, theirs.projection_prng_key),
                                   ("generator", ours.projection_generator, theirs.projection_generator)):
            if mine != other:
                found.append(f"{label}: expected {mine!r}, found {other!r}")
        spec, shape = files.spec, (model.spec.r, model.max_in, model.max_out)
        if spec is not None and (spec.r, spec.max_in, spec.max_out) != shape:
            found.append(f"projection shape (r, max_in, max_out): expected {shape}, "
                         f"found {(spec.r, spec.max_in, spec.max_out)}")
        found += self._head_differences(files)
        if found:  # the projections differ as a consequence; say why, not that
            return found
        if files.has_projection:
            stored = fingerprint(*(files.tensors[k] for k in PROJECTION_KEYS))
            if stored != self._fingerprint:
                bank = ("what the seed regenerates" if model.projection_reproducible
                        else "the stored ones the bank was built with")
                found.append(f"stored projections: generator, seed, r and shape agree, but expected {bank} "
                             f"(fingerprint {self._fingerprint[:16]}...), found A and B of fingerprint "
                             f"{stored[:16]}...")
        elif files.recorded_fingerprint not in (None, self._fingerprint):
            found.append(f"projection fingerprint: expected {self._fingerprint[:16]}... (what the seed regenerates "
                         f"here), found {files.recorded_fingerprint[:16]}... (what the adapter was trained with)")
        return found

    def _head_differences(self, files: AdapterFiles) -> list[str]:
        mine, theirs = sorted(self.model.config.modules_to_save or []), sorted(files.config.modules_to_save or [])
        if mine != theirs:
            return [f"heads (modules_to_save): expected {mine}, found {theirs}"]
        found = []
        for head_name, head in self.heads.items():
            for p, t in head.state_dict().items():
                other = files.tensors.get(f"{PEFT_PREFIX}{head_name}.{p}")
                if other is not None and other.shape != t.shape:
                    found.append(f"head tensor {head_name}.{p}: expected shape {tuple(t.shape)}, found "
                                 f"{tuple(other.shape)}")
        return found

    # ---- mixed batches ---------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def route(self, names: Sequence[str]) -> Iterator[Routing]:
        """Within the block, row i of every batch the model sees uses adapter ``names[i]``."""
        unknown = sorted({n for n in names if n not in self.slots})
        if unknown:
            raise KeyError(f"Adapters not loaded in this bank: {unknown}; add() them first.")
        device = self.model.projection.vera_A.device
        slots = torch.tensor([self.slots[n] for n in names], dtype=torch.long, device=device)
        projection = self.model.projection
        projection.routing = routing = Routing(slots)
        try:
            yield routing
        finally:
            projection.routing = None

    def __call__(self, names: Sequence[str], **inputs: Any) -> Any:
        with torch.no_grad(), self.route(names):
            return self.model(**inputs)

    def _head_forward(self, head_name: str, head: nn.Module) -> Any:
        original = head.forward
        numel = sum(p.numel() for p in head.state_dict().values())

        def forward(x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            routing = self.model.projection.routing
            if routing is None:
                return original(x, *args, **kwargs)
            # functional_call re-enters this forward: clear routing so that it runs the plain head
            self.model.projection.routing = None
            try:
                if not head.training and not args and not kwargs and numel * x.shape[0] <= VMAP_HEAD_BUDGET:
                    return self._vmapped_head(head, head_name, routing.slots, x)
                return self._grouped_head(head, head_name, routing.slots, x, *args, **kwargs)
            finally:
                self.model.projection.routing = routing

        return forward

    def _vmapped_head(self, head: nn.Module, head_name: str, slots: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Small heads: gather each row's parameters and run all rows in one vectorised call."""
        per_slot = self._head_params[head_name]
        rows = slots.tolist()
        stacked = {p: torch.stack([per_slot[slot][p] for slot in rows]) for p in per_slot[rows[0]]}

        def one(params: dict[str, torch.Tensor], row: torch.Tensor) -> torch.Tensor:
            return cast(torch.Tensor, functional_call(head, params, (row.unsqueeze(0),))).squeeze(0)

        return torch.func.vmap(one)(stacked, x)

    def _grouped_head(
        self, head: nn.Module, head_name: str, slots: torch.Tensor, x: torch.Tensor, *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        """Large heads (or training): one call per adapter present, on its rows."""
        out: torch.Tensor | None = None
        for slot in torch.unique(slots).tolist():
            rows = (slots == slot).nonzero(as_tuple=True)[0]
            y = functional_call(head, self._head_params[head_name][slot], (x[rows], *args), kwargs)
            if out is None:
                out = y.new_empty((x.shape[0], *y.shape[1:]))
            out[rows] = y
        assert out is not None
        return out

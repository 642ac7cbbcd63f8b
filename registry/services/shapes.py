"""Layer shapes of base models: what a model offers VeRA, and how an adapter's module paths find their shape.

Shapes are ``{module path: [out, in]}``; an implied shape (from a publish, which only shows outputs) is
``[out, None]``. Pure functions: no database, no blobs.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from vera_core.keys import LAMBDA_B, module_path

if TYPE_CHECKING:
    import torch


def shapes_fingerprint(shapes: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(shapes, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def shapes_of(model: torch.nn.Module) -> dict[str, list[int]]:
    """{module path: [out, in]} of every layer VeRA can adapt."""
    from vera_core.layer import layer_shape

    return {name: list(shape) for name, mod in model.named_modules() if name and (shape := layer_shape(mod))}


def match_path(shapes: dict[str, Any], path: str) -> list[int | None] | None:
    """The base model's shape for an adapted module path (exact, or the base path is a suffix, e.g. without the
    ``bert.`` prefix that a task model adds)."""
    if path in shapes:
        return list(shapes[path])
    hits = [shape for base_path, shape in shapes.items() if path.endswith("." + base_path)]
    return list(hits[0]) if len(hits) == 1 else None


def declared_layers(shapes: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, tuple[int, int]] | None:
    """(out, in) of every adapted layer from a base model's shapes; None unless all of them are known."""
    sizes: dict[str, tuple[int, int]] = {}
    for key in tensors:
        if key.endswith(LAMBDA_B):
            path = module_path(key, LAMBDA_B)
            shape = match_path(shapes, path)
            if shape is None or shape[0] is None or shape[1] is None:
                return None
            sizes[path] = (int(shape[0]), int(shape[1]))
    return sizes


def in_features_json(sizes: dict[str, tuple[int, int]]) -> str:
    """The vera_core META_IN_FEATURES value for layers of known (out, in)."""
    return json.dumps({p: i for p, (_, i) in sizes.items()}, sort_keys=True, separators=(",", ":"))

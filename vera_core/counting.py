"""Trainable-parameter counts from layer shapes alone (no weights), for VeRA and, for comparison, LoRA."""

from __future__ import annotations

from collections.abc import Iterable


def vera_parameters(layer_shapes: Iterable[tuple[int, int]], r: int) -> int:
    """d (r) and b (out) for each adapted layer; layer_shapes are (out_features, in_features)."""
    return sum(out + r for out, _ in layer_shapes)


def lora_parameters(layer_shapes: Iterable[tuple[int, int]], r: int) -> int:
    """A (r, in) and B (out, r) for each adapted layer."""
    return sum(r * (out + inp) for out, inp in layer_shapes)


def transformer_shapes(*, layers: int, d_model: int, modules_per_layer: int = 2) -> list[tuple[int, int]]:
    """Shapes of square attention projections (query, key, value, ...) in a stack of ``layers`` blocks."""
    return [(d_model, d_model)] * (layers * modules_per_layer)

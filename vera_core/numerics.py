"""Where a NaN or an infinity first appears in training, so that a run that diverges stops with the step and the
layer it came from instead of training on (and saving) garbage.

The trainer checks every optimizer step, before applying it: the loss (the mean over the processes) and the norm of
the gradients (all-reduced, so every process of a DDP run sees the same numbers and all of them stop together). When
one is not finite, ``diagnose`` looks for the origin: parameters that are not finite, then the first module whose
forward output is not finite on the step's batches (forward hooks fire as modules finish, so the first one to see a
bad value is the innermost, earliest module that produced it), then the gradients.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from vera_core.errors import NonFiniteLossError

__all__ = ["NonFiniteLossError", "describe", "first_non_finite_output", "grad_norm", "largest_trainable",
           "non_finite_gradients", "non_finite_parameters"]


def grad_norm(params: Iterable[torch.nn.Parameter]) -> float:
    """The 2-norm of all gradients together: NaN or infinite if any gradient is (one device sync)."""
    # in float64: finite gradients whose squares overflow float32 are huge, not NaN
    norms = [torch.linalg.vector_norm(p.grad.detach().double()) for p in params if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0


def _has_non_finite(value: Any) -> bool:
    """Whether a module's output (a tensor, or tuples, lists, dicts and ModelOutputs of them) holds a NaN or inf."""
    if isinstance(value, torch.Tensor):
        return value.is_floating_point() and not bool(torch.isfinite(value).all())
    if isinstance(value, Mapping):
        return any(_has_non_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_non_finite(v) for v in value)
    return False


def largest_trainable(model: torch.nn.Module) -> str:
    """Where the trainable values are largest, e.g. "1e+30 in 'layer.0.query.vera_lambda_b'": a learning rate that
    is too high shows there as huge but finite vectors, one step before the loss overflows."""
    found = [(float(p.detach().abs().max()), name) for name, p in model.named_parameters()
             if p.requires_grad and p.numel()]
    if not found:
        return "no trainable value"
    value, name = max(found, key=lambda item: (not math.isfinite(item[0]), item[0]))
    return f"{value:.3g} in {name!r}"


def non_finite_parameters(model: torch.nn.Module) -> list[str]:
    """Names of the parameters that hold a NaN or inf, in the model's order."""
    return [name for name, p in model.named_parameters() if not bool(torch.isfinite(p.detach()).all())]


def non_finite_gradients(model: torch.nn.Module) -> list[str]:
    """Names of the parameters whose gradient holds a NaN or inf, in the model's order."""
    return [name for name, p in model.named_parameters()
            if p.grad is not None and not bool(torch.isfinite(p.grad.detach()).all())]


@torch.no_grad()
def first_non_finite_output(model: torch.nn.Module, batches: Sequence[dict[str, torch.Tensor]],
                            autocast: dict[str, Any] | None = None) -> str | None:
    """The name of the first module whose forward output is not finite on ``batches`` (in order), with the largest
    magnitude among its own trainable parameters; None if every output is finite."""
    found: list[str] = []

    def hook(name: str) -> Any:
        def check(module: torch.nn.Module, inputs: Any, output: Any) -> None:
            if not found and _has_non_finite(output):
                found.append(name or "(the model itself)")
        return check

    handles = [module.register_forward_hook(hook(name)) for name, module in model.named_modules()]
    try:
        for batch in batches:
            with torch.autocast(**(autocast or {"device_type": "cpu", "enabled": False})):
                model(**batch)
            if found:
                break
    finally:
        for handle in handles:
            handle.remove()
    if not found:
        return None
    module = model.get_submodule(found[0]) if found[0] != "(the model itself)" else model
    largest = max((float(p.detach().abs().max()) for p in module.parameters() if p.requires_grad and p.numel()),
                  default=None)
    return f"{found[0]!r} ({type(module).__name__}" + (
        f"; its largest trainable value is {largest:.3g})" if largest is not None else ")")


def _names(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "") if names else "none"


def describe(*, step: int, total: int, loss: float, norm: float, origins: Sequence[str | None],
             parameters: list[str], gradients: list[str], largest: str, hint: str) -> str:
    """The message of a NonFiniteLossError; ``origins``: first_non_finite_output of each process, in rank order."""
    what = [f"the loss is {loss}" if not math.isfinite(loss) else "",
            f"the gradient norm is {norm}" if not math.isfinite(norm) else ""]
    found = [f"the output of {origin}" + f" on rank {rank}'s batch" * (len(origins) > 1)
             for rank, origin in enumerate(origins) if origin]
    if parameters:
        where = f"parameters that are not finite already: {_names(parameters)}"
    elif found:
        where = "the first non-finite value in the forward pass is " + "; ".join(found)
    else:
        where = ("every module's output was finite, so it came from the loss function or the backward pass "
                 f"(gradients that are not finite: {_names(gradients)}" +
                 ("; finite gradients whose norm overflows are too large)" if not gradients else ")"))
    return (f"Training stopped at step {step} of {total}: {' and '.join(w for w in what if w)}. Where: {where}. "
            f"The largest trainable value is {largest}. {hint} This step was not applied, and no checkpoint was "
            "written for it.")

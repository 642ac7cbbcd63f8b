"""The VeRA layer: h = W0 x + b * (B (d * (A x))), with A and B the shared projections sliced to this layer.

Two ways to compute the same function, chosen per call by arithmetic cost (``ComputeStrategy``):

- ``factored``: PEFT's order, x -> A x -> B (d * A x). Its cost grows with tokens * r * (n + m), in the forward
  and again in the backward (gradient of x through B and A).
- ``fused``: form M = B diag(d) A once (m * r * n, independent of the number of tokens), run the base matmul with
  W0 + b * M, and get the gradients of d and b from G = g^T x (see ``_FusedVera.backward``). At the paper's ranks
  (r >= n) and training batch sizes this does less than half the arithmetic of ``factored`` and saves less memory.

Both give the same outputs and gradients within float32 rounding (tests/vera_core/test_layer.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from torch import nn

from vera_core.errors import RoutingError, TargetError

ComputeStrategy = Literal["auto", "factored", "fused"]


def is_conv1d(module: nn.Module) -> bool:
    """transformers' Conv1D (GPT-2), detected without importing transformers: weight stored as (in, out)."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf") and getattr(module, "weight", None) is not None


def layer_shape(module: nn.Module) -> tuple[int, int] | None:
    """(out_features, in_features) of a layer VeRA can adapt, or None for any other module."""
    if isinstance(module, nn.Linear):
        return module.out_features, module.in_features
    if is_conv1d(module):
        n_in, n_out = cast(torch.Tensor, module.weight).shape
        return int(n_out), int(n_in)
    return None


@dataclass
class Routing:
    """Which adapter of an AdapterBank each row of the batch uses, for one mixed-batch forward.

    Also caches A x per input tensor: layers that read the same input (query, key and value) share one product.
    """

    slots: torch.Tensor  # (batch,) int64 slot of each row
    _cache: list[tuple[torch.Tensor, int, torch.Tensor]] = field(default_factory=list)

    def project(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """A[:, :in] x in float32, computed once per (input tensor, in_features)."""
        for seen, n_in, ax in self._cache:
            if seen is x and n_in == a.shape[1]:
                return ax
        ax = F.linear(x.to(a.dtype), a)  # (batch, ..., r)
        self._cache.append((x, a.shape[1], ax))
        return ax


def _apply_keeping_float32(module: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool,
                           names: tuple[str, ...]) -> None:
    """``nn.Module._apply`` (what ``to()``, ``cuda()``, ``half()`` run), except that the tensors ``names`` keep
    their float32 values when ``fn`` casts: they move to the device it moved them to, never through a rounding
    (a model cast to bfloat16 after wrapping would otherwise train and save rounded projections, whose fingerprint
    no seed reproduces)."""
    before = {name: tensor.data for name in names if (tensor := getattr(module, name)) is not None}
    nn.Module._apply(module, fn, recurse)  # type: ignore[no-untyped-call]  # untyped in torch
    for name, kept in before.items():
        now = getattr(module, name)
        if now.dtype != kept.dtype:
            if isinstance(now, nn.Parameter):
                now.data = kept.to(now.device)
            else:
                module._buffers[name] = kept.to(now.device)


class SharedProjection(nn.Module):
    """The ONE pair of frozen matrices shared by every adapted layer, float32, sized to the largest layer."""

    vera_A: torch.Tensor
    vera_B: torch.Tensor

    def __init__(self, a: torch.Tensor, b: torch.Tensor, *, persistent: bool = True) -> None:
        super().__init__()
        self.register_buffer("vera_A", a.to(torch.float32), persistent=persistent)  # (r, max_in)
        self.register_buffer("vera_B", b.to(torch.float32), persistent=persistent)  # (max_out, r)
        # Set by AdapterBank.route() for the duration of one mixed-batch forward; read by every layer.
        self.routing: Routing | None = None

    @property
    def r(self) -> int:
        return int(self.vera_A.shape[0])

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> SharedProjection:
        """Moves with the model; stays float32 whatever the model is cast to."""
        _apply_keeping_float32(self, fn, recurse, ("vera_A", "vera_B"))
        return self

    def sliced(self, n_in: int, n_out: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """A[:, :n_in] (r, n_in) and B[:n_out, :] (n_out, r) on ``device``."""
        return self.vera_A[:, :n_in].to(device), self.vera_B[:n_out, :].to(device)


class _FusedVera(torch.autograd.Function):
    """y = x (W0 + b * M)^T + bias with M = B diag(d) A; W0 is frozen."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, w0: torch.Tensor, bias: torch.Tensor | None,
        a: torch.Tensor, b_mat: torch.Tensor, d: torch.Tensor, b: torch.Tensor,
    ) -> torch.Tensor:
        m_mat = (b_mat * d) @ a  # (out, in)
        y = F.linear(x, torch.addcmul(w0, b.unsqueeze(1), m_mat), bias)
        ctx.save_for_backward(x, w0, a, b_mat, d, b, m_mat)
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, w0, a, b_mat, d, b, m_mat = ctx.saved_tensors
        need_x, _, need_bias, _, _, need_d, need_b = ctx.needs_input_grad
        g2 = g.reshape(-1, g.shape[-1])  # (tokens, out)
        grad_x = grad_bias = grad_d = grad_b = None
        if need_x:
            grad_x = g @ torch.addcmul(w0, b.unsqueeze(1), m_mat)  # (..., in)
        if need_d or need_b:
            big_g = g2.t() @ x.reshape(-1, x.shape[-1])  # (out, in): dL/dW
            if need_b:
                grad_b = (big_g * m_mat).sum(1)  # (out,)
            if need_d:
                grad_d = (((b.unsqueeze(1) * big_g) @ a.t()) * b_mat).sum(0)  # (r,)
        if need_bias and ctx.has_bias:
            grad_bias = g2.sum(0)
        return grad_x, None, grad_bias, None, None, grad_d, grad_b


class VeraLinear(nn.Module):
    """Wraps an nn.Linear or transformers Conv1D; trains only vera_lambda_d (r,) and vera_lambda_b (out,)."""

    def __init__(
        self, base_layer: nn.Module, projection: SharedProjection, *, r: int, dropout: float,
        init_weights: bool, d_initial: float, strategy: ComputeStrategy = "auto",
    ) -> None:
        super().__init__()
        shape = layer_shape(base_layer)
        if shape is None:
            raise TargetError(
                f"VeRA can adapt nn.Linear and transformers Conv1D layers, not {type(base_layer).__name__}; "
                "remove it from target_modules."
            )
        self.base_layer = base_layer
        self.out_features, self.in_features = shape
        self.fan_in_fan_out = is_conv1d(base_layer)  # decided by the layer type, as PEFT does
        self.r = r
        # A plain attribute, not a submodule: the projection is shared and saved once, at model level.
        self.__dict__["projection"] = projection
        self.vera_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        device = self.base_weight.device
        if init_weights:
            d = torch.full((r,), float(d_initial), device=device)
            b = torch.zeros(self.out_features, device=device)
        else:  # PEFT's test initialisation: a non-zero delta
            d = torch.randn(r).to(device)
            b = torch.ones(self.out_features, device=device)
        self.vera_lambda_d = nn.Parameter(d)
        self.vera_lambda_b = nn.Parameter(b)
        self.strategy: ComputeStrategy = strategy
        self.merged = False
        self.disabled = False
        # Vectors of many adapters, one row per AdapterBank slot: (slots, r) and (slots, out). Buffers, so that
        # model.to(device) moves them; not persistent, so they never enter this model's own state dict.
        self.bank_d: torch.Tensor | None
        self.bank_b: torch.Tensor | None
        self.register_buffer("bank_d", None, persistent=False)
        self.register_buffer("bank_b", None, persistent=False)

    projection: SharedProjection

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> VeraLinear:
        """The base layer converts as asked; the vectors move with it and stay float32."""
        _apply_keeping_float32(self, fn, recurse, ("vera_lambda_d", "vera_lambda_b", "bank_d", "bank_b"))
        return self

    @property
    def base_weight(self) -> torch.Tensor:
        return cast(torch.Tensor, self.base_layer.weight)

    @property
    def base_bias(self) -> torch.Tensor | None:
        return cast("torch.Tensor | None", getattr(self.base_layer, "bias", None))

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, r={self.r}, fan_in_fan_out={self.fan_in_fan_out}"

    def _projections(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        return self.projection.sliced(self.in_features, self.out_features, device)

    def get_delta_weight(self) -> torch.Tensor:
        """The weight update in float32, in the base layer's layout ((in, out) for Conv1D)."""
        a, b_mat = self._projections(self.vera_lambda_d.device)
        delta = (self.vera_lambda_b.unsqueeze(1) * b_mat) @ (self.vera_lambda_d.unsqueeze(1) * a)  # (out, in)
        return delta.t() if self.fan_in_fan_out else delta

    @torch.no_grad()
    def merge(self) -> None:
        if self.merged:
            return
        self.base_weight.copy_(self._merged_weight())
        self.merged = True

    @torch.no_grad()
    def merges_finite(self) -> bool:
        """Whether merging would leave the base weight finite (PEFT's ``safe_merge`` check), computed aside: no NaN
        or infinity from broken vectors, or from a delta too large for the weight's dtype."""
        return self.merged or bool(torch.isfinite(self._merged_weight()).all())

    def _merged_weight(self) -> torch.Tensor:
        weight = self.base_weight
        return (weight.float() + self.get_delta_weight().to(weight.device)).to(weight.dtype)

    @torch.no_grad()
    def unmerge(self) -> None:
        if not self.merged:
            return
        weight = self.base_weight
        weight.copy_((weight.float() - self.get_delta_weight().to(weight.device)).to(weight.dtype))
        self.merged = False

    def choose_strategy(self, x: torch.Tensor) -> Literal["factored", "fused"]:
        """Pick the cheaper computation for this call (``auto``), or honour a forced choice."""
        weight = self.base_weight
        fusable = (
            type(self.base_layer) is nn.Linear or self.fan_in_fan_out
        ) and weight.dtype == torch.float32 and x.dtype == torch.float32 and not weight.requires_grad and not (
            self.training and isinstance(self.vera_dropout, nn.Dropout)
        ) and not torch.is_autocast_enabled(x.device.type)
        if self.strategy == "factored" or not fusable:
            return "factored"
        if self.strategy == "fused":
            return "fused"
        tokens, n, m, r = x.numel() // max(1, self.in_features), self.in_features, self.out_features, self.r
        training = torch.is_grad_enabled() and (self.vera_lambda_d.requires_grad or self.vera_lambda_b.requires_grad)
        x_grad = torch.is_grad_enabled() and x.requires_grad
        factored = tokens * r * (n + m) + (tokens * m * r if training else 0) + (tokens * n * r if x_grad else 0)
        fused = m * r * n + ((tokens * m * n + m * n * r) if training else 0)
        return "fused" if fused < factored else "factored"

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.disabled or self.merged:
            if self.disabled and self.merged:
                self.unmerge()
            return cast(torch.Tensor, self.base_layer(x, *args, **kwargs))
        a, b_mat = self._projections(x.device)
        routing = self.projection.routing
        if routing is not None:
            return self._routed_forward(x, a, b_mat, routing, *args, **kwargs)
        d, b = self.vera_lambda_d, self.vera_lambda_b
        if self.choose_strategy(x) == "fused":
            w0 = self.base_weight.t() if self.fan_in_fan_out else self.base_weight
            out = _FusedVera.apply(x, w0, self.base_bias, a, b_mat, d, b)  # type: ignore[no-untyped-call]
            return cast(torch.Tensor, out)
        result = cast(torch.Tensor, self.base_layer(x, *args, **kwargs))
        x_a = self.vera_dropout(x).to(d.dtype)
        result = result + b * F.linear(d * F.linear(x_a, a), b_mat)  # (..., out)
        return result.to(x.dtype)

    def _routed_forward(
        self, x: torch.Tensor, a: torch.Tensor, b_mat: torch.Tensor, routing: Routing, *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        """Each row with its own adapter's d and b; A x and the B product are computed once for the whole batch."""
        if self.bank_d is None or self.bank_b is None:
            raise RoutingError("This layer has no adapter bank: route mixed batches through an AdapterBank made from "
                               "this model once every layer is adapted (AdapterBank(model).route(names)).")
        if x.shape[0] != routing.slots.shape[0]:
            raise RoutingError(f"The batch has {x.shape[0]} rows but {routing.slots.shape[0]} adapter names: give one "
                               "name per row, in the rows' order.")
        result = cast(torch.Tensor, self.base_layer(x, *args, **kwargs))
        view = (routing.slots.shape[0],) + (1,) * (x.dim() - 2) + (-1,)  # broadcast over the sequence axis
        scaled = routing.project(x, a) * self.bank_d[routing.slots].view(view)  # (batch, ..., r)
        delta = F.linear(scaled, b_mat) * self.bank_b[routing.slots].view(view)  # (batch, ..., out)
        return (result + delta).to(x.dtype)

from __future__ import annotations

import pytest
import torch
from torch import nn

from vera_core import PORTABLE_GENERATOR, ProjectionSpec, SharedProjection, VeraLinear, generate
from vera_core.errors import TargetError


class Conv1D(nn.Module):
    """transformers' Conv1D layout (weight (in, out)), defined here so the layer test needs no transformers."""

    def __init__(self, nf: int, nx: int) -> None:
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.1)
        self.bias = nn.Parameter(torch.randn(nf) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight).reshape(*x.shape[:-1], self.nf)


def make_layer(base: nn.Module, r: int = 16, max_in: int = 40, max_out: int = 48, dropout: float = 0.0) -> VeraLinear:
    a, b = generate(ProjectionSpec(PORTABLE_GENERATOR, 3, r, max_in, max_out))
    layer = VeraLinear(base, SharedProjection(a, b), r=r, dropout=dropout, init_weights=False, d_initial=0.1)
    with torch.no_grad():
        layer.vera_lambda_b.normal_()
        layer.vera_lambda_d.normal_()
    return layer


def linear(n_in: int = 24, n_out: int = 32) -> nn.Linear:
    torch.manual_seed(0)
    base = nn.Linear(n_in, n_out)
    base.requires_grad_(False)
    return base


def run(layer: VeraLinear, strategy: str, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    layer.strategy = strategy  # type: ignore[assignment]
    layer.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    out = layer(x)
    out.pow(2).sum().backward()
    assert layer.choose_strategy(x) == strategy
    return out.detach(), x.grad, layer.vera_lambda_d.grad, layer.vera_lambda_b.grad  # type: ignore[return-value]


@pytest.mark.parametrize("base_kind", ["linear", "conv1d"])
def test_fused_and_factored_agree_on_outputs_and_gradients(base_kind: str) -> None:
    torch.manual_seed(1)
    base = linear() if base_kind == "linear" else Conv1D(32, 24).requires_grad_(False)
    layer = make_layer(base)
    x = torch.randn(3, 5, 24)
    factored, fused = run(layer, "factored", x), run(layer, "fused", x)
    for want, got in zip(factored, fused, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_factored_is_the_vera_formula() -> None:
    layer = make_layer(linear())
    x = torch.randn(4, 24)
    a, b = layer.projection.vera_A[:, :24], layer.projection.vera_B[:32]
    want = layer.base_layer(x) + layer.vera_lambda_b * ((layer.vera_lambda_d * (x @ a.t())) @ b.t())
    layer.strategy = "factored"
    torch.testing.assert_close(layer(x), want)


def test_auto_picks_the_cheaper_path() -> None:
    layer = make_layer(linear(24, 32), r=16)
    with torch.no_grad():
        assert layer.choose_strategy(torch.randn(1, 24)) == "factored"  # one token: the factored path is tiny
        assert layer.choose_strategy(torch.randn(4096, 24)) == "fused"  # many tokens: forming delta W once wins
    big_r = make_layer(linear(24, 32), r=64, max_in=24, max_out=32)
    assert big_r.choose_strategy(torch.randn(512, 24, requires_grad=True)) == "fused"
    assert make_layer(linear(24, 32), r=2).choose_strategy(torch.randn(8, 24)) == "factored"


def test_merge_unmerge_and_delta_weight() -> None:
    layer = make_layer(linear())
    x = torch.randn(6, 24)
    before = layer(x).detach()
    original = layer.base_layer.weight.detach().clone()
    layer.merge()
    torch.testing.assert_close(layer(x), before, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(layer.base_layer.weight - original, layer.get_delta_weight(), rtol=1e-5, atol=1e-6)
    layer.unmerge()
    torch.testing.assert_close(layer.base_layer.weight, original, rtol=0, atol=1e-6)
    torch.testing.assert_close(layer(x), before)


def test_conv1d_delta_weight_is_transposed() -> None:
    layer = make_layer(Conv1D(32, 24).requires_grad_(False))
    assert layer.fan_in_fan_out
    assert layer.get_delta_weight().shape == (24, 32)


def test_dropout_applies_to_the_adapter_path_only() -> None:
    layer = make_layer(linear(), dropout=0.5).train()
    x = torch.randn(64, 24)
    with torch.no_grad():
        layer.vera_lambda_b.zero_()  # no adapter contribution: output must be the clean base output
        torch.testing.assert_close(layer(x), layer.base_layer(x))
        layer.vera_lambda_b.fill_(1.0)
        assert layer.choose_strategy(x) == "factored"  # dropout in training cannot be fused into the base matmul
        first, second = layer(x), layer(x)
    assert not torch.equal(first, second)
    layer.eval()
    with torch.no_grad():
        assert torch.equal(layer(x), layer(x))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_base_keeps_float32_adapter(dtype: torch.dtype) -> None:
    base = linear().to(dtype)
    layer = make_layer(base)
    x = torch.randn(5, 24)
    out = layer(x.to(dtype))
    assert out.dtype == dtype
    assert layer.vera_lambda_d.dtype == torch.float32
    reference = make_layer(linear())
    with torch.no_grad():
        reference.vera_lambda_d.copy_(layer.vera_lambda_d)
        reference.vera_lambda_b.copy_(layer.vera_lambda_b)
    torch.testing.assert_close(out.float(), reference(x), rtol=0.05, atol=0.05)
    out.float().sum().backward()
    assert layer.vera_lambda_d.grad is not None and torch.isfinite(layer.vera_lambda_d.grad).all()


def test_disabled_layer_is_the_base_layer() -> None:
    layer = make_layer(linear())
    x = torch.randn(3, 24)
    layer.merge()
    layer.disabled = True
    torch.testing.assert_close(layer(x), layer.base_layer(x))
    assert not layer.merged


def test_unsupported_base_layer_is_refused() -> None:
    a, b = generate(ProjectionSpec(PORTABLE_GENERATOR, 0, 4, 8, 8))
    with pytest.raises(TargetError, match="not Embedding"):
        VeraLinear(nn.Embedding(8, 8), SharedProjection(a, b), r=4, dropout=0.0, init_weights=True, d_initial=0.1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_cuda_forward_matches_cpu(dtype: torch.dtype) -> None:
    layer = make_layer(linear())
    x = torch.randn(7, 24)
    want = layer(x).detach()
    layer.to("cuda")
    layer.base_layer.to(dtype)
    got = layer(x.to("cuda", dtype=dtype)).float().cpu()
    tol = 1e-4 if dtype == torch.float32 else 5e-2
    torch.testing.assert_close(got, want, rtol=tol, atol=tol)

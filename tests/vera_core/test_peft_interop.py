"""Interoperability with HuggingFace PEFT's VeRA (the reference implementation), on tiny RoBERTa, GPT-2, Llama."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import PeftConfig, PeftModel, get_peft_model, get_peft_model_state_dict
from peft import VeraConfig as PeftVeraConfig
from torch import nn

from tests.conftest import TinyModel, output_of
from vera_core import (
    PEFT_GENERATOR,
    PORTABLE_GENERATOR,
    PeftIncompatibleError,
    VeraConfig,
    VeraModel,
    export_peft,
    load_adapter,
    save_adapter,
)

TOL = 1e-6  # the bar for PEFT's own arithmetic order ("factored")


def assert_same_outputs(ours: nn.Module, theirs: nn.Module, tiny: TinyModel, seeds: tuple[int, ...] = (1,)) -> None:
    """PEFT's order of operations agrees below 1e-6; the cost-chosen default agrees within float32 rounding."""
    assert isinstance(ours, VeraModel)
    for seed in seeds:
        inputs = tiny.inputs(seed=seed)
        want = output_of(theirs, inputs)
        ours.set_strategy("factored")
        diff = (output_of(ours, inputs) - want).abs().max().item()
        assert diff < TOL, f"max abs difference {diff}"
        ours.set_strategy("auto")
        torch.testing.assert_close(output_of(ours, inputs), want, rtol=1e-5, atol=1e-5)


def peft_model(tiny: TinyModel, *, r: int = 8, seed: int = 0, save_projection: bool = True) -> nn.Module:
    config = PeftVeraConfig(r=r, target_modules=tiny.targets, projection_prng_key=seed, init_weights=False,
                            save_projection=save_projection, task_type=tiny.task_type)
    torch.manual_seed(5)
    return get_peft_model(tiny.make(), config).eval()


def our_config(tiny: TinyModel, **changes: object) -> VeraConfig:
    base = VeraConfig(r=8, target_modules=tiny.targets, task_type=tiny.task_type, init_weights=False,
                      projection_generator=PEFT_GENERATOR)
    return base.replace(**changes)


def train_a_little(model: nn.Module, tiny: TinyModel, steps: int = 3) -> None:
    """A few real optimizer steps, so vectors and heads hold trained values rather than their initialisation."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2)
    for step in range(steps):
        logits = model(**tiny.inputs(seed=10 + step)).logits
        loss = logits.float().log_softmax(-1)[..., 0].mean().neg()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


@pytest.mark.parametrize("seed", [0, 3, 2**40 + 1])
@pytest.mark.parametrize("r", [4, 16, 64])
def test_projections_equal_peft_bit_for_bit(tiny: TinyModel, seed: int, r: int) -> None:
    theirs = peft_model(tiny, r=r, seed=seed)
    ours = VeraModel(tiny.make(), our_config(tiny, r=r, projection_prng_key=seed))
    assert torch.equal(theirs.base_model.vera_A["default"], ours.projection.vera_A)
    assert torch.equal(theirs.base_model.vera_B["default"], ours.projection.vera_B)


def test_forward_equals_peft_with_the_same_vectors(tiny: TinyModel) -> None:
    theirs = peft_model(tiny)
    train_a_little(theirs, tiny)
    ours = VeraModel(tiny.make(), our_config(tiny))
    ours.load_adapter_state_dict(get_peft_model_state_dict(theirs))
    ours.eval()
    assert_same_outputs(ours, theirs, tiny, seeds=(1, 2))
    ours.set_strategy("fused")
    torch.testing.assert_close(output_of(ours, tiny.inputs()), output_of(theirs, tiny.inputs()), rtol=1e-5, atol=1e-5)


def test_trainable_parameters_match_peft(tiny: TinyModel) -> None:
    theirs = peft_model(tiny)
    ours = VeraModel(tiny.make(), our_config(tiny))
    n_theirs = sum(p.numel() for p in theirs.parameters() if p.requires_grad)
    assert ours.num_trainable_parameters() == n_theirs


@pytest.mark.parametrize("save_projection", [True, False], ids=["with-projection", "seed-only"])
def test_adapter_saved_by_peft_loads_with_equal_outputs(tiny: TinyModel, tmp_path: Path, save_projection: bool) -> None:
    theirs = peft_model(tiny, save_projection=save_projection)
    train_a_little(theirs, tiny)
    theirs.save_pretrained(tmp_path / "peft")
    ours = load_adapter(tiny.make(), tmp_path / "peft")
    assert ours.config.projection_generator == PEFT_GENERATOR
    assert ours.projection_reproducible
    assert_same_outputs(ours, theirs, tiny)


@pytest.mark.parametrize("save_projection", [True, False], ids=["with-projection", "seed-only"])
def test_adapter_saved_by_vera_core_loads_in_peft_with_equal_outputs(
    tiny: TinyModel, tmp_path: Path, save_projection: bool
) -> None:
    ours = VeraModel(tiny.make(), our_config(tiny, save_projection=save_projection))
    train_a_little(ours, tiny)
    save_adapter(ours, tmp_path / "ours", require_peft_loadable=True)
    theirs = PeftModel.from_pretrained(tiny.make(), tmp_path / "ours").eval()
    assert_same_outputs(ours, theirs, tiny)


def test_portable_seed_only_adapter_is_refused_for_peft_and_exported(tiny: TinyModel, tmp_path: Path) -> None:
    ours = VeraModel(tiny.make(), our_config(tiny, projection_generator=PORTABLE_GENERATOR, save_projection=False))
    train_a_little(ours, tiny)
    with pytest.raises(PeftIncompatibleError, match=r"PEFT does not implement.*vera export-peft"):
        save_adapter(ours, tmp_path / "refused", require_peft_loadable=True)
    assert not (tmp_path / "refused").exists()
    save_adapter(ours, tmp_path / "seed-only")
    with pytest.warns(UserWarning, match=r"Unexpected keyword arguments \['projection_generator'\]"):
        PeftConfig.from_pretrained(tmp_path / "seed-only")  # the one hint a PEFT user gets
    export_peft(tmp_path / "seed-only", tmp_path / "for-peft")
    theirs = PeftModel.from_pretrained(tiny.make(), tmp_path / "for-peft").eval()
    assert_same_outputs(ours, theirs, tiny)


def test_portable_adapter_with_projections_loads_in_peft(tiny: TinyModel, tmp_path: Path) -> None:
    ours = VeraModel(tiny.make(), our_config(tiny, projection_generator=PORTABLE_GENERATOR))
    train_a_little(ours, tiny)
    save_adapter(ours, tmp_path / "ours", require_peft_loadable=True)
    theirs = PeftModel.from_pretrained(tiny.make(), tmp_path / "ours").eval()  # no warning: config is PEFT's own
    assert_same_outputs(ours, theirs, tiny)

"""Small real adapters to publish: tiny Llama (layers of different shapes) with trained-looking vectors, or another
tiny model's (``tiny=TINY_MODELS[0]``: RoBERTa) for a version on another base model."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.conftest import TINY_MODELS, TinyModel
from vera_core import PORTABLE_GENERATOR, VeraConfig, VeraModel, save_adapter

LLAMA = TINY_MODELS[2]
#: A job spec's start for the offline demo where what it learns is not the test's point: evaluated on 32 examples of
#: each split, not the demo's 731 and 766 (most of a short demo job's time; test_recipes trains the demo whole).
TRIAL_DEMO = {"demo": True, "max_eval_examples": 32}


def make_model(seed: int = 0, tiny: TinyModel = LLAMA, **changes: object) -> VeraModel:
    fields: dict[str, object] = {"r": 8, "target_modules": tiny.targets, "save_projection": False,
                                 "projection_generator": PORTABLE_GENERATOR, **changes}
    model = VeraModel(tiny.make(), VeraConfig(**fields))  # type: ignore[arg-type]
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.trainable_parameters().values():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model.eval()


def make_adapter(directory: Path, seed: int = 0, tiny: TinyModel = LLAMA, **changes: object) -> Path:
    return save_adapter(make_model(seed, tiny, **changes), directory)


def peft_logits(folder: Path) -> torch.Tensor:
    """What HuggingFace PEFT computes with the adapter in ``folder`` on a fresh tiny Llama (LLAMA.inputs())."""
    from peft import PeftModel

    with torch.no_grad():
        return PeftModel.from_pretrained(LLAMA.make(), folder).eval()(**LLAMA.inputs()).logits


def vera_logits(model: VeraModel) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**LLAMA.inputs()).logits

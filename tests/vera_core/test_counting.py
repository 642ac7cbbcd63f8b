"""Trainable-parameter counts against the paper (Kopiczko et al., ICLR 2024)."""

from __future__ import annotations

import pytest

from tests.conftest import TINY_MODELS
from vera_core import VeraConfig, VeraModel, lora_parameters, transformer_shapes, vera_parameters


@pytest.mark.parametrize(
    ("layers", "d_model", "r", "expected"),
    [
        (12, 768, 1024, 43_008),  # RoBERTa-base, query and value (Table 2)
        (24, 1024, 256, 61_440),  # RoBERTa-large (Table 2)
        (12, 768, 1, 18_456),  # Table 1: 18.4K
        (12, 768, 16, 18_816),  # Table 1: 18.8K
        (12, 768, 256, 24_576),  # Table 1: 24.5K
        (24, 1024, 1, 49_200),  # Table 1: 49.2K
    ],
)
def test_roberta_counts_match_the_paper(layers: int, d_model: int, r: int, expected: int) -> None:
    assert vera_parameters(transformer_shapes(layers=layers, d_model=d_model), r) == expected


def test_lora_counts_match_table_1() -> None:
    gpt3 = transformer_shapes(layers=96, d_model=12288)
    millions = [lora_parameters(gpt3, r) // 100_000 / 10 for r in (1, 16, 256)]  # the table truncates
    assert millions == [4.7, 75.4, 1207.9]


def test_gpt3_counts_and_the_papers_table_1() -> None:
    """The method's count for GPT-3 (query and key, 96 layers, d_model 12288) is 192 * (12288 + r).

    That gives the paper's 2.4M at r=1, but 2.36M (not 2.8M) at r=16 and 2.41M (not 8.7M) at r=256. The paper's
    GPT-3 row equals 192 * 12288 + 24576 * r, i.e. it counts 128 * r (not r) entries of d per layer; its RoBERTa
    rows follow the method. We report the method's count and pin the paper's arithmetic here so the gap is explicit.
    """
    gpt3 = transformer_shapes(layers=96, d_model=12288)
    assert vera_parameters(gpt3, 1) == 2_359_488  # paper: 2.4M
    assert vera_parameters(gpt3, 16) == 2_362_368  # paper: 2.8M
    assert vera_parameters(gpt3, 256) == 2_408_448  # paper: 8.7M
    paper = {r: 192 * 12288 + 24576 * r for r in (1, 16, 256)}
    assert [round(paper[r] / 1e6, 1) for r in (1, 16, 256)] == [2.4, 2.8, 8.7]


def test_counts_agree_with_an_injected_model() -> None:
    llama = TINY_MODELS[2]
    model = VeraModel(llama.make(), VeraConfig(r=8, target_modules=llama.targets))
    shapes = [(layer.out_features, layer.in_features) for layer in model.vera_layers()]
    assert model.num_adapter_parameters() == vera_parameters(shapes, 8) == model.num_trainable_parameters()

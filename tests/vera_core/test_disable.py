"""disable_adapter(): exactly the base model's outputs, trained heads and biases included, checked against a fresh
base model and against PEFT's disable_adapter() on the same adapter."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import PeftModel
from torch import nn

from tests.conftest import TINY_MODELS, TinyModel, output_of
from vera_core import (
    PEFT_GENERATOR,
    PORTABLE_GENERATOR,
    AdapterBank,
    AdapterFiles,
    VeraConfig,
    VeraError,
    VeraModel,
    load_adapter,
    save_adapter,
)
from vera_core.checkpoint import META_FINGERPRINT

_, GPT2, LLAMA = TINY_MODELS
GENERATORS = [PEFT_GENERATOR, PORTABLE_GENERATOR]


def _bert() -> nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    return BertForSequenceClassification(BertConfig(
        vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48,
        max_position_embeddings=40, num_labels=3,
    ))


BERT = TinyModel("bert", _bert, ["query", "value", "dense"], "SEQ_CLS")  # dense: 32->48, 48->32, 32->32


def trained(tiny: TinyModel, generator: str = PEFT_GENERATOR, steps: int = 3, **changes: object) -> VeraModel:
    """A VeraModel after a few AdamW steps, with learning rates large enough to move heads and biases well away."""
    fields: dict[str, object] = {"r": 8, "target_modules": tiny.targets, "task_type": tiny.task_type,
                                 "projection_generator": generator, **changes}
    model = VeraModel(tiny.make(), VeraConfig(**fields))  # type: ignore[arg-type]
    opt = torch.optim.AdamW(model.trainable_parameters().values(), lr=5e-2)
    model.train()
    for step in range(steps):
        loss = model(**tiny.inputs(seed=10 + step)).logits.float().log_softmax(-1)[..., 0].mean().neg()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def base_output(tiny: TinyModel, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    return output_of(tiny.make(), inputs)


CASES = [
    pytest.param(BERT, {"bias": "all"}, id="bert-classifier-bias-all"),
    pytest.param(BERT, {"bias": "vera_only"}, id="bert-classifier-bias-vera-only"),
    pytest.param(LLAMA, {"modules_to_save": ["lm_head"]}, id="llama-lm-head"),
]


@pytest.mark.parametrize("generator", GENERATORS)
@pytest.mark.parametrize(("tiny", "changes"), CASES)
def test_disabled_is_exactly_the_fresh_base(tiny: TinyModel, changes: dict[str, object], generator: str) -> None:
    model = trained(tiny, generator, **changes)
    inputs = tiny.inputs()
    base, adapted = base_output(tiny, inputs), output_of(model, inputs)
    assert (adapted - base).abs().max() > 0.05  # heads, biases and vectors really moved
    with model.disable_adapter():
        assert torch.equal(output_of(model, inputs), base)
    assert torch.equal(output_of(model, inputs), adapted)
    model.merge()  # merged deltas are taken out inside the block too (W + delta - delta: float32 rounding)
    with model.disable_adapter():
        torch.testing.assert_close(output_of(model, inputs), base, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("generator", GENERATORS)
@pytest.mark.parametrize(("tiny", "changes"), [
    pytest.param(BERT, {}, id="bert-classifier"),
    pytest.param(LLAMA, {"modules_to_save": ["lm_head"]}, id="llama-lm-head"),
])
def test_disabled_equals_peft_disabled(tiny: TinyModel, changes: dict[str, object], generator: str,
                                       tmp_path: Path) -> None:
    ours = trained(tiny, generator, **changes)
    save_adapter(ours, tmp_path, save_projection=True)
    theirs = PeftModel.from_pretrained(tiny.make(), tmp_path).eval()
    inputs = tiny.inputs()
    torch.testing.assert_close(output_of(theirs, inputs), output_of(ours, inputs), rtol=1e-5, atol=1e-5)
    with theirs.disable_adapter():
        want = output_of(theirs, inputs)
    with ours.disable_adapter():
        assert torch.equal(output_of(ours, inputs), want)
    assert torch.equal(want, base_output(tiny, inputs))


def test_peft_leaves_trained_biases_in_disable_adapter(tmp_path: Path) -> None:
    """Where ours differs from PEFT on purpose: PEFT warns that with bias="all" its disabled model is not the base."""
    ours = trained(BERT, bias="all")
    save_adapter(ours, tmp_path, save_projection=True)
    theirs = PeftModel.from_pretrained(BERT.make(), tmp_path).eval()
    inputs = BERT.inputs()
    with pytest.warns(UserWarning, match="does not produce the same output as the base model"), \
            theirs.disable_adapter():
        peft_disabled = output_of(theirs, inputs)
    with ours.disable_adapter():
        ours_disabled = output_of(ours, inputs)
    assert torch.equal(ours_disabled, base_output(BERT, inputs))
    assert not torch.allclose(peft_disabled, ours_disabled, atol=1e-3)


@pytest.mark.filterwarnings("ignore:Model has `tie_word_embeddings=True`:UserWarning")
def test_a_head_tied_to_the_embeddings_trains_untied_as_in_peft(tmp_path: Path) -> None:
    """GPT-2's lm_head shares its weight with the input embeddings; like PEFT, only a copy of the head trains."""
    ours = trained(GPT2, modules_to_save=["lm_head"])
    embeddings = ours.model.transformer.wte.weight
    assert not embeddings.requires_grad and ours.model.lm_head.weight is not embeddings
    assert torch.equal(embeddings, GPT2.make().transformer.wte.weight)
    save_adapter(ours, tmp_path, save_projection=True)
    theirs = PeftModel.from_pretrained(GPT2.make(), tmp_path).eval()
    inputs = GPT2.inputs()
    torch.testing.assert_close(output_of(ours, inputs), output_of(theirs, inputs), rtol=1e-5, atol=1e-5)
    with ours.disable_adapter(), theirs.disable_adapter():
        assert torch.equal(output_of(ours, inputs), output_of(theirs, inputs))
        assert torch.equal(output_of(ours, inputs), base_output(GPT2, inputs))


def test_loaded_adapter_disables_to_the_base(tmp_path: Path) -> None:
    """load_adapter builds on a fresh base, then loads: the originals kept aside are that fresh base's."""
    save_adapter(trained(BERT, bias="all"), tmp_path)
    loaded = load_adapter(BERT.make(), tmp_path)
    inputs = BERT.inputs()
    with loaded.disable_adapter():
        assert torch.equal(output_of(loaded, inputs), base_output(BERT, inputs))


def test_graphs_and_optimizers_survive_the_block() -> None:
    model = trained(LLAMA, modules_to_save=["lm_head"], steps=1).train()
    params = model.trainable_parameters()
    opt = torch.optim.SGD(params.values(), lr=0.1)
    twin = trained(LLAMA, modules_to_save=["lm_head"], steps=1).train()
    twin_opt = torch.optim.SGD(twin.trainable_parameters().values(), lr=0.1)
    inputs = LLAMA.inputs(seed=4)

    loss = model(**inputs).logits.pow(2).mean()  # graph built outside the block
    with model.disable_adapter():
        inside = model(**inputs).logits.pow(2).mean()  # graph built inside: the originals are frozen
        assert not inside.requires_grad
    loss.backward()  # after the swap back
    opt.step()
    twin(**inputs).logits.pow(2).mean().backward()  # the same step, with no block in between
    twin_opt.step()
    assert model.trainable_parameters() == params  # the same Parameter objects, which the optimizer updated
    for name, p in twin.trainable_parameters().items():
        assert torch.equal(params[name], p), name


def test_the_trained_modules_come_back_after_an_exception_and_nested_blocks() -> None:
    model = trained(BERT, bias="all", steps=1)
    inputs = BERT.inputs()
    adapted, base = output_of(model, inputs), base_output(BERT, inputs)
    with pytest.raises(RuntimeError, match="boom"), model.disable_adapter():
        raise RuntimeError("boom")
    assert torch.equal(output_of(model, inputs), adapted)
    with model.disable_adapter():
        with model.disable_adapter():
            assert torch.equal(output_of(model, inputs), base)
        assert torch.equal(output_of(model, inputs), base)  # still disabled after the inner block
    assert torch.equal(output_of(model, inputs), adapted)


def test_saving_and_unloading_see_the_trained_adapter(tmp_path: Path) -> None:
    model = trained(BERT, bias="all")
    before = model.adapter_state_dict()
    inputs = BERT.inputs()
    adapted = output_of(model, inputs)
    with model.disable_adapter():
        with pytest.raises(VeraError, match="inside disable_adapter"):
            model.adapter_state_dict()
        with pytest.raises(VeraError, match="inside disable_adapter"):
            save_adapter(model, tmp_path / "refused")
        with pytest.raises(VeraError, match="inside disable_adapter"):
            model.merge_and_unload()
    assert not (tmp_path / "refused").exists()
    after = model.adapter_state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert not any(k.startswith("_originals") for k in model.state_dict())
    plain = model.merge_and_unload()
    torch.testing.assert_close(output_of(plain, inputs), adapted, rtol=1e-5, atol=1e-5)


def test_to_moves_and_converts_the_originals() -> None:
    model = trained(LLAMA, modules_to_save=["lm_head"]).to(torch.float64)
    inputs = LLAMA.inputs()
    with model.disable_adapter():
        got = output_of(model, inputs)
    assert got.dtype == torch.float64
    assert torch.equal(got, output_of(LLAMA.make().to(torch.float64), inputs))


def test_a_bank_with_heads_disables_to_the_base() -> None:
    model = VeraModel(BERT.make(), VeraConfig(r=8, target_modules=BERT.targets, task_type="SEQ_CLS",
                                              projection_generator=PEFT_GENERATOR)).eval()
    bank = AdapterBank(model)
    for name, steps in (("a", 1), ("b", 2)):
        donor = trained(BERT, steps=steps)
        bank.add(name, AdapterFiles(donor.config, donor.adapter_state_dict(),
                                    {META_FINGERPRINT: donor.projection_fingerprint()}))
    inputs = BERT.inputs(batch=3)
    base = base_output(BERT, inputs)
    routed = bank(["a", "b", "a"], **inputs).logits
    assert not torch.allclose(routed, base)
    with model.disable_adapter():
        assert torch.equal(bank(["a", "b", "a"], **inputs).logits, base)
    assert torch.equal(bank(["a", "b", "a"], **inputs).logits, routed)



@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_to_cuda_moves_the_originals() -> None:
    model = trained(BERT, bias="all").to("cuda")
    inputs = {k: v.cuda() for k, v in BERT.inputs().items()}
    with model.disable_adapter():
        got = output_of(model, inputs)
    torch.testing.assert_close(got, output_of(BERT.make().to("cuda"), inputs), rtol=0, atol=0)

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import TINY_MODELS, TinyModel, output_of
from vera_core import AdapterBank, AdapterFiles, AdapterFormatError, VeraConfig, VeraModel, save_adapter
from vera_core.checkpoint import META_FINGERPRINT

ROBERTA, GPT2, LLAMA = TINY_MODELS
BANKABLE = [ROBERTA, LLAMA]


def config(tiny: TinyModel, **changes: object) -> VeraConfig:
    fields: dict[str, object] = {"r": 8, "target_modules": tiny.targets, "task_type": tiny.task_type,
                                 "save_projection": False, **changes}
    return VeraConfig(**fields)  # type: ignore[arg-type]


def random_adapter(tiny: TinyModel, seed: int, **changes: object) -> AdapterFiles:
    """An adapter with random vectors and head, as if trained, in the form read_adapter returns."""
    model = VeraModel(tiny.make(), config(tiny, **changes))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.trainable_parameters().values():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    tensors = model.adapter_state_dict()
    return AdapterFiles(model.config, tensors, {META_FINGERPRINT: model.projection_fingerprint()})


def alone(tiny: TinyModel, files: AdapterFiles, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    model = VeraModel(tiny.make(), files.config).eval()
    model.load_adapter_state_dict(files.tensors)
    return output_of(model, inputs)


@pytest.mark.parametrize("head_budget", [1 << 24, 0], ids=["vectorised-heads", "grouped-heads"])
@pytest.mark.parametrize("tiny", BANKABLE, ids=[m.name for m in BANKABLE])
def test_mixed_batch_equals_each_adapter_alone(
    tiny: TinyModel, head_budget: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("vera_core.bank.VMAP_HEAD_BUDGET", head_budget)
    adapters = {f"user/a{i}": random_adapter(tiny, i) for i in range(5)}
    bank = AdapterBank(VeraModel(tiny.make(), config(tiny)).eval(), capacity=2)  # grows past its capacity
    for name, files in adapters.items():
        bank.add(name, files)
    names = ["user/a3", "user/a0", "user/a3", "user/a1", "user/a4", "user/a2", "user/a0"]
    inputs = tiny.inputs(batch=len(names))
    mixed = bank(names, **inputs).logits
    for row, name in enumerate(names):
        want = alone(tiny, adapters[name], {k: v[row:row + 1] for k, v in inputs.items()})
        torch.testing.assert_close(mixed[row:row + 1], want, rtol=1e-5, atol=1e-5)
    # outside route() the model is the plain VeraModel again
    torch.testing.assert_close(output_of(bank.model, inputs), output_of(VeraModel(tiny.make(), config(tiny)), inputs))


def test_inputs_shared_by_layers_are_projected_once() -> None:
    bank = AdapterBank(VeraModel(LLAMA.make(), config(LLAMA)).eval())
    bank.add("a", random_adapter(LLAMA, 0))
    with torch.no_grad(), bank.route(["a", "a"]) as routing:
        bank.model(**LLAMA.inputs(batch=2))
    # per block: q/k/v share one input, gate/up share one, o and down have their own -> 4 products, not 7
    assert len(routing._cache) == 2 * 4


def test_remove_keeps_the_others_and_slots_dense(tmp_path: Path) -> None:
    bank = AdapterBank(VeraModel(ROBERTA.make(), config(ROBERTA)).eval())
    files = {n: random_adapter(ROBERTA, i) for i, n in enumerate(["x", "y", "z"])}
    for n, f in files.items():
        bank.add(n, f)
    bank.remove("x")
    assert sorted(bank.names()) == ["y", "z"] and sorted(bank.slots.values()) == [0, 1]
    inputs = ROBERTA.inputs(batch=2)
    torch.testing.assert_close(bank(["z", "y"], **inputs).logits[:1], alone(ROBERTA, files["z"], {
        k: v[:1] for k, v in inputs.items()}), rtol=1e-5, atol=1e-5)
    with pytest.raises(KeyError, match=r"not loaded in this bank: \['x'\]"):
        bank(["x"], **ROBERTA.inputs(batch=1))
    model = VeraModel(ROBERTA.make(), files["y"].config)
    model.load_adapter_state_dict(files["y"].tensors)
    bank.add("from-disk", save_adapter(model, tmp_path / "y"))
    assert len(bank) == 3 and "from-disk" in bank


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"projection_prng_key": 1}, r"\(generator, seed, r\) = .*1, 8\)"), ({"r": 4}, r"seed, r\)"),
     ({"target_modules": ["query"]}, "does not fit this bank's base model: missing"),
     ({"bias": "vera_only"}, "trains biases")],
    ids=["seed", "rank", "targets", "bias"],
)
def test_incompatible_adapters_are_refused(changes: dict[str, object], message: str) -> None:
    bank = AdapterBank(VeraModel(ROBERTA.make(), config(ROBERTA)).eval())
    with pytest.raises(AdapterFormatError, match=message):
        bank.add("bad", random_adapter(ROBERTA, 0, **changes))
    assert len(bank) == 0


def test_adapters_whose_projections_the_seed_does_not_make_are_refused() -> None:
    bank = AdapterBank(VeraModel(ROBERTA.make(), config(ROBERTA)).eval())
    files = random_adapter(ROBERTA, 0, save_projection=True)
    files.tensors["base_model.vera_A"] = files.tensors["base_model.vera_A"] * 3
    with pytest.raises(AdapterFormatError, match="stores projections that its seed does not regenerate"):
        bank.add("bad", files)
    foreign = random_adapter(ROBERTA, 0)
    foreign.metadata[META_FINGERPRINT] = "f" * 64
    with pytest.raises(AdapterFormatError, match="other layer shapes or another generator"):
        bank.add("bad", foreign)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_mixed_batch_on_cuda() -> None:
    bank = AdapterBank(VeraModel(LLAMA.make(), config(LLAMA)).eval().to("cuda"))
    adapters = {f"a{i}": random_adapter(LLAMA, i) for i in range(3)}
    for n, f in adapters.items():
        bank.add(n, f)
    inputs = LLAMA.inputs(batch=3)
    got = bank(["a2", "a0", "a1"], **{k: v.cuda() for k, v in inputs.items()}).logits.cpu()
    want = alone(LLAMA, adapters["a2"], {k: v[:1] for k, v in inputs.items()})
    torch.testing.assert_close(got[:1], want, rtol=1e-4, atol=1e-4)

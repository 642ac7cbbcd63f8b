from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import TINY_MODELS, TinyModel, output_of
from vera_core import (
    PEFT_GENERATOR,
    PORTABLE_GENERATOR,
    AdapterBank,
    AdapterFiles,
    AdapterFormatError,
    RoutingError,
    TargetError,
    VeraConfig,
    VeraModel,
    save_adapter,
)
from vera_core.checkpoint import META_FINGERPRINT
from vera_core.layer import Routing

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


def test_a_batch_that_does_not_fit_its_routing_is_refused_as_such() -> None:
    bank = AdapterBank(VeraModel(ROBERTA.make(), config(ROBERTA)).eval())
    bank.add("a", random_adapter(ROBERTA, 0))
    with pytest.raises(RoutingError, match=r"^The batch has 2 rows but 3 adapter names: give one name per row"):
        bank(["a", "a", "a"], **ROBERTA.inputs(batch=2))
    assert issubclass(RoutingError, TargetError)  # what it was raised as before: `except TargetError` still holds
    plain = VeraModel(ROBERTA.make(), config(ROBERTA)).eval()  # a model no bank was made from
    plain.projection.routing = Routing(torch.zeros(2, dtype=torch.long))
    with torch.no_grad(), pytest.raises(RoutingError, match=r"^This layer has no adapter bank: route mixed batches "
                                                            r"through an AdapterBank made from this model"):
        plain(**ROBERTA.inputs(batch=2))


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"projection_prng_key": 1}, r"cannot join this bank .*: seed \(projection_prng_key\): expected 0, found 1\. "
                                  r"Serve it from a bank built for its settings"),
     ({"r": 4}, r": r: expected 8, found 4\. Serve"),
     ({"projection_generator": PEFT_GENERATOR},
      rf"generator: expected '{PORTABLE_GENERATOR}', found '{PEFT_GENERATOR}'\. Serve"),
     ({"target_modules": ["query"]}, r"target modules: expected 4 layers \(target_modules=\['query', 'value'\]\), "
                                     r"found 2 \(target_modules=\['query'\]\)\. Build a separate bank for that "
                                     r"target set"),
     ({"modules_to_save": ["pooler"]}, r"heads \(modules_to_save\): expected \['classifier', 'score'\], found "
                                       r"\['classifier', 'pooler', 'score'\]"),
     ({"bias": "vera_only"}, "trains biases")],
    ids=["seed", "rank", "generator", "targets", "heads", "bias"],
)
def test_incompatible_adapters_are_refused_naming_the_difference(changes: dict[str, object], message: str) -> None:
    bank = AdapterBank(VeraModel(ROBERTA.make(), config(ROBERTA)).eval())
    with pytest.raises(AdapterFormatError, match=message):
        bank.add("bad", random_adapter(ROBERTA, 0, **changes))
    assert len(bank) == 0


@pytest.mark.parametrize("save_projection", [True, False], ids=["stored-projections", "seed-only"])
def test_an_adapter_for_other_targets_is_refused_as_such(save_projection: bool) -> None:
    """A q/v-only Llama adapter on a bank for all seven targets: a different target set, so a different shape."""
    bank = AdapterBank(VeraModel(LLAMA.make(), config(LLAMA)).eval())
    files = random_adapter(LLAMA, 0, target_modules=["q_proj", "v_proj"], save_projection=save_projection)
    files.metadata["vera_core.projection_shape"] = "8,32,32"  # as save_adapter records it
    with pytest.raises(AdapterFormatError, match=(
        r"target modules: expected 14 layers \(target_modules=\['down_proj', 'gate_proj', 'k_proj', 'o_proj', "
        r"'q_proj', 'up_proj', 'v_proj'\]\), found 4 \(target_modules=\['q_proj', 'v_proj'\]\); projection shape "
        r"\(r, max_in, max_out\): expected \(8, 48, 48\), found \(8, 32, 32\)\. Build a separate bank for that "
        r"target set")) as refused:
        bank.add("qv", files)
    assert "seed does not regenerate" not in str(refused.value) and "stored projections" not in str(refused.value)


def test_a_head_of_another_shape_is_refused_as_such() -> None:
    bank = AdapterBank(VeraModel(ROBERTA.make(), config(ROBERTA)).eval())
    files = random_adapter(ROBERTA, 0)
    files.tensors["base_model.model.classifier.out_proj.weight"] = torch.zeros(2, 32)
    with pytest.raises(AdapterFormatError, match=r"head tensor classifier\.out_proj\.weight: expected shape "
                                                 r"\(3, 32\), found \(2, 32\)"):
        bank.add("bad", files)


def test_adapters_whose_projections_the_seed_does_not_make_are_refused() -> None:
    bank = AdapterBank(VeraModel(ROBERTA.make(), config(ROBERTA)).eval())
    files = random_adapter(ROBERTA, 0, save_projection=True)
    files.tensors["base_model.vera_A"] = files.tensors["base_model.vera_A"] * 3
    with pytest.raises(AdapterFormatError, match=r"stored projections: generator, seed, r and shape agree, but "
                                                 r"expected what the seed regenerates .*Load it on its own"):
        bank.add("bad", files)
    foreign = random_adapter(ROBERTA, 0)
    foreign.metadata[META_FINGERPRINT] = "f" * 64
    with pytest.raises(AdapterFormatError, match=r"projection fingerprint: expected [0-9a-f]{16}\.\.\. \(what the "
                                                 r"seed regenerates here\), found f{16}"):
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

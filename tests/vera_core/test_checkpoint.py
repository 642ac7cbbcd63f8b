from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from tests.conftest import TINY_MODELS, output_of
from vera_core import (
    PORTABLE_GENERATOR,
    AdapterFormatError,
    ProjectionMismatchError,
    TargetError,
    VeraConfig,
    VeraModel,
    load_adapter,
    read_adapter,
    save_adapter,
)
from vera_core.checkpoint import META_FINGERPRINT, META_GENERATOR, META_SHAPE
from vera_core.config import SEED_ONLY_PEFT_TYPE
from vera_core.projection import fingerprint

ROBERTA, GPT2, LLAMA = TINY_MODELS


def trained(save_projection: bool = False, **changes: object) -> VeraModel:
    config = VeraConfig(r=8, target_modules=LLAMA.targets, save_projection=save_projection, init_weights=False,
                        projection_prng_key=77, **changes)  # type: ignore[arg-type]
    return VeraModel(LLAMA.make(), config).eval()


@pytest.mark.parametrize("save_projection", [False, True], ids=["seed-only", "with-projection"])
def test_round_trip(tmp_path: Path, save_projection: bool) -> None:
    model = trained(save_projection)
    save_adapter(model, tmp_path / "a")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        "README.md", "adapter_config.json", "adapter_model.safetensors"]
    assert [p.name for p in tmp_path.iterdir()] == ["a"]  # no temporary folder left behind
    config = json.loads((tmp_path / "a/adapter_config.json").read_text())
    assert config["peft_type"] == ("VERA" if save_projection else SEED_ONLY_PEFT_TYPE)  # PEFT refuses seed-only
    assert config["r"] == 8 and config["projection_prng_key"] == 77
    assert ("projection_generator" in config) is (not save_projection)
    with safe_open(str(tmp_path / "a/adapter_model.safetensors"), "pt") as f:
        meta = f.metadata()
        keys = set(f.keys())
    assert meta["format"] == "pt" and meta[META_GENERATOR] == PORTABLE_GENERATOR
    assert meta[META_SHAPE] == "8,48,48" and meta[META_FINGERPRINT] == model.projection_fingerprint()
    assert ("base_model.vera_A" in keys) is save_projection
    assert "base_model.model.model.layers.0.self_attn.k_proj.vera_lambda_b" in keys
    loaded = load_adapter(LLAMA.make(), tmp_path / "a")
    assert loaded.config.projection_generator == PORTABLE_GENERATOR
    assert not any(p.requires_grad for p in loaded.parameters())
    torch.testing.assert_close(output_of(loaded, LLAMA.inputs()), output_of(model, LLAMA.inputs()), rtol=0, atol=0)


def test_pickles_are_never_loaded(tmp_path: Path) -> None:
    model = trained()
    save_adapter(model, tmp_path / "a")
    (tmp_path / "a/adapter_model.safetensors").unlink()
    sentinel = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (sentinel.write_text, ("unpickled",))

    (tmp_path / "a/adapter_model.bin").write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(AdapterFormatError, match=r"adapter_model\.bin, a pickle, which is never loaded"):
        load_adapter(LLAMA.make(), tmp_path / "a")
    assert not sentinel.exists()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: (d / "adapter_model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json"),
         "not a valid safetensors file"),
        (lambda d: (d / "adapter_config.json").write_text("{"),
         r"adapter_config.json is not JSON \(Expecting property name"),
        (lambda d: (d / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8})),
         "peft_type='LORA'; expected 'VERA'"),
        (lambda d: (d / "adapter_config.json").write_text(json.dumps({"peft_type": "VERA", "r": -1})),
         "r must be a positive integer"),
        (lambda d: (d / "adapter_config.json").unlink(), "has no adapter_config.json"),
        # r given twice: the last one was read, unsaid (a re-check, session 44; PEFT's reader keeps it too)
        (lambda d: (d / "adapter_config.json").write_text(
            (d / "adapter_config.json").read_text().replace('"r": ', '"r": 1, "r": ', 1)),
         r"adapter_config.json gives the key 'r' more than once in an object; expected PEFT's adapter_config.json"),
    ],
    ids=["bad-safetensors", "bad-json", "lora", "bad-r", "no-config", "r-twice"],
)
def test_malformed_adapters_are_refused_clearly(tmp_path: Path, mutate: object, message: str) -> None:
    save_adapter(trained(), tmp_path / "a")
    mutate(tmp_path / "a")  # type: ignore[operator]
    with pytest.raises(AdapterFormatError, match=message):
        read_adapter(tmp_path / "a")


def _rewrite(path: Path, change: object) -> None:
    file = path / "adapter_model.safetensors"
    with safe_open(str(file), "pt") as f:
        meta = f.metadata()
    tensors = load_file(str(file))
    change(tensors, meta)  # type: ignore[operator]
    save_file(tensors, str(file), metadata=meta)


def test_tensors_that_do_not_fit_the_base_are_refused(tmp_path: Path) -> None:
    save_adapter(trained(), tmp_path / "a")
    with pytest.raises(TargetError, match=r"matched no module of this RobertaForSequenceClassification"):
        load_adapter(ROBERTA.make(), tmp_path / "a")  # another architecture: no module paths match
    moved = "base_model.model.model.layers.1.mlp.up_proj.vera_lambda_d"
    _rewrite(tmp_path / "a", lambda t, m: t.update({"base_model.model.model.layers.7.mlp.up_proj.vera_lambda_d":
                                                    t.pop(moved)}))
    pattern = r"missing \[.*layers\.1\.mlp.*unexpected \[.*layers\.7.*target_modules"
    with pytest.raises(AdapterFormatError, match=pattern):
        load_adapter(LLAMA.make(), tmp_path / "a")
    save_adapter(trained(), tmp_path / "a")
    _rewrite(tmp_path / "a", lambda t, m: t.update(
        {"base_model.model.model.layers.0.self_attn.q_proj.vera_lambda_b": torch.zeros(5)}))
    with pytest.raises(AdapterFormatError, match=r"shape \(5,\) but this model expects \(32,\)"):
        load_adapter(LLAMA.make(), tmp_path / "a")


def test_stored_projections_that_the_seed_does_not_regenerate_are_used_and_flagged(tmp_path: Path) -> None:
    model = trained(save_projection=True)
    save_adapter(model, tmp_path / "a")
    _rewrite(tmp_path / "a", lambda t, m: t.update({"base_model.vera_A": t["base_model.vera_A"] * 2}))
    with pytest.warns(UserWarning, match="stored projections differ from what seed 77") as said:
        loaded = load_adapter(LLAMA.make(), tmp_path / "a")
    assert not loaded.projection_reproducible
    assert torch.equal(loaded.projection.vera_A, model.projection.vera_A * 2)
    # vera_core's file records its A and B's fingerprint: edited after, that is said too (a researcher's walk, 48)
    assert "They do not match the projection fingerprint the file records either" in str(said[0].message)
    assert "the file was changed after it was written, or is damaged" in str(said[0].message)
    _rewrite(tmp_path / "a", lambda t, m: m.update({META_FINGERPRINT: fingerprint(t["base_model.vera_A"],
                                                                                  t["base_model.vera_B"])}))
    with pytest.warns(UserWarning, match="stored projections differ") as agreed:  # A and B the file says it holds
        load_adapter(LLAMA.make(), tmp_path / "a")
    assert "the file records" not in str(agreed[0].message)


def test_seed_only_adapter_with_a_foreign_fingerprint_is_refused(tmp_path: Path) -> None:
    save_adapter(trained(), tmp_path / "a")
    _rewrite(tmp_path / "a", lambda t, m: m.update({META_FINGERPRINT: "0" * 64}))
    with pytest.raises(ProjectionMismatchError, match="adapter was trained with 0000"):
        load_adapter(LLAMA.make(), tmp_path / "a")


def test_config_and_files_must_agree(tmp_path: Path) -> None:
    save_adapter(trained(), tmp_path / "a")
    config = json.loads((tmp_path / "a/adapter_config.json").read_text())
    (tmp_path / "a/adapter_config.json").write_text(json.dumps({**config, "save_projection": True}))
    with pytest.raises(AdapterFormatError, match="save_projection=True but .* lacks base_model.vera_A"):
        read_adapter(tmp_path / "a")
    config["projection_generator"] = "torch-kaiming-uniform"
    (tmp_path / "a/adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(AdapterFormatError, match="records generator 'philox4x32-10-kaiming-uniform-v1' but"):
        read_adapter(tmp_path / "a")


def test_heads_and_biases_round_trip(tmp_path: Path) -> None:
    config = VeraConfig(r=4, target_modules=ROBERTA.targets, task_type="SEQ_CLS", bias="vera_only",
                        init_weights=False)
    model = VeraModel(ROBERTA.make(), config)
    with torch.no_grad():
        for p in model.trainable_parameters().values():
            p.add_(torch.randn_like(p))
    save_adapter(model, tmp_path / "a")
    keys = set(read_adapter(tmp_path / "a").tensors)
    assert "base_model.model.classifier.out_proj.weight" in keys
    assert "base_model.model.roberta.encoder.layer.1.attention.self.value.base_layer.bias" in keys
    loaded = load_adapter(ROBERTA.make(), tmp_path / "a")
    torch.testing.assert_close(output_of(loaded, ROBERTA.inputs()), output_of(model.eval(), ROBERTA.inputs()))

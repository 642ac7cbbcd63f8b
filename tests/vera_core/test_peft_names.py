"""A VeraModel answers to what PEFT users call on a PeftModel (a PEFT user's walk, session 14, found most of these
missing): the wrapped model's own methods and attributes, PEFT's names for counting, saving and unloading, the base
model's name recorded as PEFT records it, and a warning for config keys a newer PEFT wrote."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import AutoPeftModelForCausalLM

from tests.conftest import TINY_MODELS, output_of
from vera_core import PEFT_GENERATOR, VeraConfig, VeraError, VeraModel, load_adapter, read_adapter

LLAMA = next(m for m in TINY_MODELS if m.name == "llama")


def vera(**changes: object) -> VeraModel:
    return VeraModel(LLAMA.make(), VeraConfig(**{"r": 8, "target_modules": ["q_proj", "v_proj"], "init_weights": False,
                                                 **changes}))


def test_the_wrapped_models_methods_and_attributes_are_reached_through_the_vera_model(
        capsys: pytest.CaptureFixture[str]) -> None:
    model = vera()
    ids = LLAMA.inputs()["input_ids"][:1]
    assert (model.device, model.dtype) == (torch.device("cpu"), torch.float32)
    assert torch.equal(model.generate(ids, max_new_tokens=3, do_sample=False),
                       model.model.generate(ids, max_new_tokens=3, do_sample=False))
    assert model.get_base_model() is model.model
    with pytest.raises(AttributeError, match="no attribute 'nowhere'"):
        _ = model.nowhere
    trainable, total = model.get_nb_trainable_parameters()
    assert trainable == model.num_trainable_parameters() == 2 * (8 + 32) + 2 * (8 + 16) and total > trainable
    model.print_trainable_parameters()
    assert capsys.readouterr().out == (f"trainable params: {trainable:,d} || all params: {total:,d} || "
                                       f"trainable%: {100 * trainable / total:.4f}\n")


@pytest.mark.parametrize("bias", ["none", "all"])
def test_parameter_counts_are_peft_s_for_a_model_with_a_head(bias: str) -> None:
    """PEFT's total counts a head's original beside its trained copy (ModulesToSaveWrapper), which vera_core keeps
    out of parameters(): the total was short by the head's size (a docs audit, session 54)."""
    from peft import VeraConfig as PeftVeraConfig
    from peft import get_peft_model

    from tests.conftest import TINY_MODELS

    roberta = next(m for m in TINY_MODELS if m.name == "roberta")
    settings = {"r": 8, "target_modules": ["query", "value"], "task_type": "SEQ_CLS", "bias": bias}
    theirs = get_peft_model(roberta.make(), PeftVeraConfig(**settings))  # type: ignore[arg-type]
    ours = VeraModel(roberta.make(), VeraConfig(**settings))  # type: ignore[arg-type]
    assert ours.get_nb_trainable_parameters() == theirs.get_nb_trainable_parameters()
    with ours.disable_adapter():
        assert ours.get_nb_trainable_parameters()[1] == theirs.get_nb_trainable_parameters()[1]


def test_save_pretrained_and_unload_do_what_their_peft_namesakes_do(tmp_path: Path) -> None:
    model = vera(projection_generator=PEFT_GENERATOR)
    inputs = LLAMA.inputs()
    adapted = output_of(model, inputs)
    model.save_pretrained(tmp_path / "a")
    assert torch.equal(output_of(load_adapter(LLAMA.make(), tmp_path / "a"), inputs), adapted)
    with pytest.raises(VeraError, match="safetensors only"):
        model.save_pretrained(tmp_path / "b", safe_serialization=False)
    assert not (tmp_path / "b").exists()
    model.merge()
    base = model.unload()  # merged layers are taken out first: the base model as it was
    assert not any(type(m).__name__ == "VeraLinear" for m in base.modules())
    assert torch.allclose(output_of(base, inputs), output_of(LLAMA.make(), inputs), atol=1e-6)


def test_the_base_models_name_is_recorded_so_peft_auto_classes_find_it(tmp_path: Path) -> None:
    base_dir = tmp_path / "base"
    LLAMA.make().save_pretrained(base_dir)
    from transformers import AutoModelForCausalLM

    model = VeraModel(AutoModelForCausalLM.from_pretrained(base_dir), VeraConfig(
        r=8, target_modules=["q_proj", "v_proj"], init_weights=False, projection_generator=PEFT_GENERATOR,
        task_type="CAUSAL_LM"))
    assert model.config.base_model_name_or_path == str(base_dir)
    model.save_pretrained(tmp_path / "adapter")
    theirs = AutoPeftModelForCausalLM.from_pretrained(tmp_path / "adapter")
    torch.testing.assert_close(output_of(theirs, LLAMA.inputs()), output_of(model, LLAMA.inputs()),
                               rtol=1e-5, atol=1e-6)
    assert vera().config.base_model_name_or_path is None  # a model built from a config names no source


def test_config_keys_a_newer_peft_wrote_are_named_in_a_warning(tmp_path: Path) -> None:
    model = vera(projection_generator=PEFT_GENERATOR)
    model.save_pretrained(tmp_path / "a")
    path = tmp_path / "a" / "adapter_config.json"
    config = json.loads(path.read_text())
    path.write_text(json.dumps({**config, "peft_version": "0.30.0", "exclude_modules": ["v_proj"],
                                "future_option": None}))
    with pytest.warns(UserWarning, match=r"adapter_config.json sets exclude_modules, which this vera_core does not "
                                         r"know \(written by a newer PEFT\?, peft_version '0.30.0'\): ignored"):
        read_adapter(tmp_path / "a")
    path.write_text(json.dumps({**config, "exclude_modules": ["v_proj"]}))  # vera_core's own: no peft_version
    with pytest.warns(UserWarning, match=r"know \(written by a newer PEFT, or by hand\?\): ignored"):
        read_adapter(tmp_path / "a")
    path.write_text(json.dumps({**config, "peft_version": "0.21.2", "future_option": None}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # bookkeeping and options left at null: nothing to say
        read_adapter(tmp_path / "a")


def _hf_args(folder: Path, **changes: Any) -> Any:
    from transformers import TrainingArguments

    return TrainingArguments(**{"output_dir": str(folder), "per_device_train_batch_size": 4, "max_steps": 4,
                                "learning_rate": 1e-2, "use_cpu": True, "report_to": [], "save_strategy": "steps",
                                "save_steps": 2, "seed": 3, "logging_steps": 1, **changes})


def _rows() -> list[dict[str, Any]]:
    ids = LLAMA.inputs(batch=8)["input_ids"]
    return [{"input_ids": row, "labels": row, "text": "not a model input"} for row in ids]


def test_vera_trainer_trains_checkpoints_the_adapter_alone_and_resumes_exactly(tmp_path: Path) -> None:
    """transformers' Trainer knows PeftModel, not VeraModel: it kept no batch column (a VeraModel's forward takes
    *args, **kwargs) and checkpointed the whole model. VeraTrainer keeps the wrapped model's columns (dropping the
    others, "text" here), writes the adapter alone in PEFT's format, and resumes to the same vectors as a straight
    run; a checkpoint of another projection is refused."""
    from vera_core.hf_trainer import VeraTrainer

    straight = vera(init_weights=True)
    VeraTrainer(model=straight, train_dataset=_rows(), args=_hf_args(tmp_path / "straight")).train()
    checkpoint = tmp_path / "straight" / "checkpoint-2"
    assert (checkpoint / "adapter_model.safetensors").is_file() and (checkpoint / "optimizer.pt").is_file()
    assert not list(checkpoint.glob("model*.safetensors"))  # not the base's weights
    reloaded = load_adapter(LLAMA.make(), checkpoint.parent / "checkpoint-4")
    assert torch.equal(output_of(reloaded, LLAMA.inputs()), output_of(straight.eval(), LLAMA.inputs()))

    resumed = vera(init_weights=True)
    VeraTrainer(model=resumed, train_dataset=_rows(), args=_hf_args(tmp_path / "resumed")).train(
        resume_from_checkpoint=str(checkpoint))
    mine, theirs = straight.trainable_parameters(), resumed.trainable_parameters()
    assert all(torch.equal(mine[n], theirs[n]) for n in mine)
    other = vera(init_weights=True, projection_prng_key=9)
    with pytest.raises(VeraError, match=r"checkpoint-2 was trained with projection_prng_key \(--projection-seed\)="
                                        r"0 and this run has 9"):
        VeraTrainer(model=other, train_dataset=_rows(), args=_hf_args(tmp_path / "other")).train(
            resume_from_checkpoint=str(checkpoint))


def test_the_plain_hf_trainer_trains_a_vera_model_with_its_columns_kept(tmp_path: Path) -> None:
    """What docs/vera_core.md says of transformers.Trainer itself: remove_unused_columns=False, then
    save_pretrained for the adapter."""
    from transformers import Trainer

    model = vera(init_weights=True)
    before = {n: p.detach().clone() for n, p in model.trainable_parameters().items()}
    rows = [{k: v for k, v in row.items() if k != "text"} for row in _rows()]
    Trainer(model=model, train_dataset=rows, args=_hf_args(tmp_path / "hf", remove_unused_columns=False,
                                                           save_strategy="no", max_steps=2)).train()
    after = model.trainable_parameters()
    assert any(not torch.equal(before[n], after[n]) for n in before)
    model.save_pretrained(tmp_path / "adapter")
    reloaded = load_adapter(LLAMA.make(), tmp_path / "adapter")
    assert torch.equal(output_of(reloaded, LLAMA.inputs()), output_of(model.eval(), LLAMA.inputs()))


def test_a_peft_vera_config_is_taken_as_its_adapter_config_would_be() -> None:
    from peft import VeraConfig as PeftVeraConfig

    theirs = PeftVeraConfig(r=8, target_modules=["q_proj", "v_proj"], projection_prng_key=3)
    model = VeraModel(LLAMA.make(), theirs)  # type: ignore[arg-type]  # what a PEFT script passes
    assert (model.config.r, model.config.projection_prng_key, model.config.projection_generator) == (
        8, 3, PEFT_GENERATOR)
    assert sorted(model.config.target_modules or []) == ["q_proj", "v_proj"]
    with pytest.raises(VeraError, match="needs a vera_core.VeraConfig .*; got dict"):
        VeraModel(LLAMA.make(), {"r": 8})  # type: ignore[arg-type]


def test_mistakes_a_porter_makes_name_their_cause(tmp_path: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    from vera_core import AdapterFormatError, TargetError

    with pytest.raises(TargetError, match=r"layers_to_transform=\[7\] \(layers_pattern=None\) kept only those layer "
                                          r"indices: check that the model has them"):
        vera(layers_to_transform=[7])  # the tiny Llama has layers 0 and 1
    vera().save_pretrained(tmp_path / "seed-only", save_projection=False)
    narrower = LlamaForCausalLM(LlamaConfig(vocab_size=96, hidden_size=16, intermediate_size=48, num_hidden_layers=2,
                                            num_attention_heads=2, num_key_value_heads=1))
    with pytest.raises(AdapterFormatError, match=r"trained with a projection of \(r, max_in, max_out\) = \(8, 32, 32\)"
                                                 r", and this base model's adapted layers need \(8, 16, 16\): the "
                                                 r"adapter was made for another base model"):
        load_adapter(narrower, tmp_path / "seed-only")


def test_peft_calls_for_several_adapters_are_refused_saying_what_to_use() -> None:
    """A researcher's walk (session 48): transformers' add_adapter, found on the wrapped model, injected LoRA layers
    into a VeraModel unasked (they trained with it); load_adapter and set_adapter failed naming the wrong class."""
    from peft import LoraConfig

    model = vera()
    before = set(model.trainable_parameters())
    for call in ("add_adapter", "load_adapter", "set_adapter", "delete_adapter", "active_adapters", "peft_config",
                 "enable_adapter_layers", "disable_adapter_layers"):
        with pytest.raises(AttributeError, match=f"VeraModel has no {call}: it holds one VeRA adapter") as refused:
            getattr(model, call)
        assert isinstance(refused.value, VeraError) and "vera_core.AdapterBank" in str(refused.value)
        assert not hasattr(model, call)  # an AttributeError: hasattr() says False, as for any name it lacks
    with pytest.raises(AttributeError):
        model.add_adapter(LoraConfig(r=4, target_modules=["k_proj"]), adapter_name="lora1")
    assert set(model.trainable_parameters()) == before and not any("lora" in n for n, _ in model.named_parameters())


def test_a_base_that_already_holds_vera_layers_is_refused_naming_why(tmp_path: Path) -> None:
    """It was a TargetError: "matched '...q_proj', a VeraLinear; VeRA adapts only nn.Linear ... Narrow target_modules"
    (a researcher's walk, session 48), for a VeraModel of a VeraModel and for a second load_adapter on one base."""
    from vera_core import VeraConfigError

    model = vera(projection_generator=PEFT_GENERATOR)
    model.save_pretrained(tmp_path / "a")
    for again in (lambda: VeraModel(model, VeraConfig(r=8, target_modules=["q_proj"])),
                  lambda: load_adapter(model.model, tmp_path / "a")):
        with pytest.raises(VeraConfigError, match="This model already holds VeRA layers .* wrap a fresh base model"):
            again()


def test_peft_keywords_of_save_pretrained_and_merge_and_unload_are_taken(tmp_path: Path) -> None:
    """Ported scripts pass them (accelerate's is_main_process on every rank): a TypeError each (a researcher's
    walk, session 48)."""
    model = vera(projection_generator=PEFT_GENERATOR)
    inputs = LLAMA.inputs()
    adapted = output_of(model, inputs)
    model.save_pretrained(tmp_path / "other-rank", is_main_process=False)
    assert not (tmp_path / "other-rank").exists()  # only the main process writes
    model.save_pretrained(tmp_path / "a", is_main_process=True, selected_adapters=["default"],
                          save_embedding_layers="auto")
    assert torch.equal(output_of(load_adapter(LLAMA.make(), tmp_path / "a"), inputs), adapted)
    for wrong, said in (({"selected_adapters": ["other"]}, "holds one adapter"),
                        ({"save_embedding_layers": True}, "trains no embedding layer")):
        with pytest.raises(VeraError, match=said):
            model.save_pretrained(tmp_path / "b", **wrong)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="takes no push_to_hub"):
        model.save_pretrained(tmp_path / "b", push_to_hub=True)
    model.merge_adapter()
    assert all(layer.merged for layer in model.vera_layers())
    model.unmerge_adapter()
    assert not any(layer.merged for layer in model.vera_layers())
    with pytest.raises(VeraError, match="holds one adapter"):
        model.merge_and_unload(adapter_names=["other"])
    merged = model.merge_and_unload(progressbar=True, safe_merge=True, adapter_names=["default"])
    assert torch.allclose(output_of(merged, inputs), adapted, atol=1e-5)


def test_safe_merge_refuses_a_merge_that_would_break_a_weight_and_changes_nothing() -> None:
    model = vera()
    base = {n: p.detach().clone() for n, p in model.model.named_parameters() if "base_layer" in n}
    last = list(model.named_vera_layers())[-1]
    with torch.no_grad():
        last[1].vera_lambda_b.fill_(float("inf"))
    with pytest.raises(ValueError, match=f"{last[0]}: the merged weight would hold NaN or infinity .* No layer was "
                                         "merged"):
        model.merge_and_unload(safe_merge=True)
    assert not any(layer.merged for layer in model.vera_layers())
    after = {n: p for n, p in model.model.named_parameters() if "base_layer" in n}
    assert all(torch.equal(after[n], base[n]) for n in base)  # no layer changed (PEFT's merges those before it)
    assert any(isinstance(m, type(last[1])) for m in model.model.modules())  # still wrapped


def test_a_hub_id_given_to_load_adapter_is_told_where_such_adapters_are_read(tmp_path: Path) -> None:
    """PEFT's from_pretrained takes a Hub id; vera_core's load_adapter said only "is not a directory" (a researcher's
    walk, session 48)."""
    from vera_core import AdapterFormatError

    with pytest.raises(AdapterFormatError, match=r"org/repo is not a directory; .* It reads like a Hub id: .*"
                                                 r"snapshot_download\('org/repo'\).*registry.client.load_adapter"):
        load_adapter(LLAMA.make(), "org/repo")
    # a bare name may be a Hub id too (gpt2); a registry's reference is told the registry's loader, not the Hub's
    # (it was told to snapshot_download 'owner/name@prod': a docs audit, session 54)
    with pytest.raises(AdapterFormatError, match=r"It reads like a Hub id: .*snapshot_download\('gpt2-vera'\)"):
        load_adapter(LLAMA.make(), "gpt2-vera")
    for reference in ("owner/name@prod", "owner/name:3"):
        with pytest.raises(AdapterFormatError) as registry_ref:
            load_adapter(LLAMA.make(), reference)
        said = str(registry_ref.value)
        assert "snapshot_download" not in said and f"It reads like a registry's reference: vera_core reads folders; " \
            f"registry.client.load_adapter(base, {reference!r}) fetches and loads it." in said, said
    with pytest.raises(AdapterFormatError) as plain:  # a path: no Hub hint
        load_adapter(LLAMA.make(), tmp_path / "missing")
    assert "Hub id" not in str(plain.value)

"""Exports of seed-only adapters PEFT wrote (no projections, no projection shape), sized from the base model's config
alone (`vera export-lora / export-peft --base-model`; vera_core.base_shapes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from peft.utils.other import transpose
from safetensors.torch import load_file
from torch import nn
from typer.testing import CliRunner, Result

from registry.cli import build
from tests.conftest import TINY_MODELS, TinyModel, output_of
from tests.vera_core.test_peft_interop import peft_model, train_a_little
from vera_core import AdapterFormatError, VeraConfig, VeraModel, export_lora, read_adapter, save_adapter
from vera_core.base_shapes import adapted_layer_shapes, meta_base_model, with_base_model
from vera_core.checkpoint import META_IN_FEATURES, META_SHAPE, AdapterFiles
from vera_core.keys import PROJECTION_KEYS

APP = build({"": {"export-lora": "local.export_lora", "export-peft": "local.export_peft"}})
ROBERTA, LLAMA = TINY_MODELS[0], TINY_MODELS[2]


def vera(*args: str | Path) -> Result:
    return CliRunner().invoke(APP, [str(a) for a in args])


def one_line(text: str) -> str:
    """The CLI's message with rich's line wrapping undone."""
    return " ".join(text.split())


def seed_only_peft_adapter(tiny: TinyModel, tmp_path: Path) -> tuple[nn.Module, Path, Path]:
    """A trained PEFT VeRA model, its seed-only adapter folder (save_projection=False) and its base model's folder
    (save_pretrained: config.json and weights)."""
    theirs = peft_model(tiny, save_projection=False)
    train_a_little(theirs, tiny)
    theirs.save_pretrained(tmp_path / "peft")
    tiny.make().save_pretrained(tmp_path / "base")
    files = read_adapter(tmp_path / "peft")
    assert not files.has_projection and files.spec is None and META_IN_FEATURES not in files.metadata
    return theirs, tmp_path / "peft", tmp_path / "base"


def peft_deltas(model: nn.Module) -> dict[str, torch.Tensor]:
    """PEFT's VeRA delta weight of every adapted layer, by module path (as in the adapter's keys)."""
    return {name.removeprefix("base_model.model."): module.get_delta_weight("default").detach()
            for name, module in model.named_modules() if hasattr(module, "vera_lambda_b")}


def lora_deltas(folder: Path) -> dict[str, torch.Tensor]:
    """lora_B @ lora_A * scaling of every layer of a LoRA export, in the base layer's weight layout."""
    config = json.loads((folder / "adapter_config.json").read_text())
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    scaling = config["lora_alpha"] / config["r"]
    return {key.removeprefix("base_model.model.").removesuffix(".lora_A.weight"): transpose(
        tensors[key.replace("lora_A", "lora_B")] @ tensors[key] * scaling, config["fan_in_fan_out"])
        for key in tensors if key.endswith(".lora_A.weight")}


def test_a_seed_only_peft_adapter_exports_as_lora_with_its_base_model(tiny: TinyModel, tmp_path: Path) -> None:
    theirs, adapter, base = seed_only_peft_adapter(tiny, tmp_path)
    result = vera("export-lora", adapter, tmp_path / "lora", "--base-model", base)
    assert result.exit_code == 0, result.output
    want, got = peft_deltas(theirs), lora_deltas(tmp_path / "lora")
    assert set(got) == set(want) and want
    for path, delta in want.items():
        assert delta.abs().max() > 0, path  # trained: the comparison means something
        torch.testing.assert_close(got[path], delta, rtol=1e-5, atol=1e-6, msg=path)
    lora = PeftModel.from_pretrained(tiny.make(), tmp_path / "lora").eval()
    torch.testing.assert_close(output_of(lora, tiny.inputs()), output_of(theirs, tiny.inputs()), rtol=1e-5, atol=1e-5)


def test_a_seed_only_peft_adapter_exports_for_peft_with_its_base_model(tiny: TinyModel, tmp_path: Path) -> None:
    theirs, adapter, base = seed_only_peft_adapter(tiny, tmp_path)
    result = vera("export-peft", adapter, tmp_path / "for-peft", "--base-model", base)
    assert result.exit_code == 0, result.output
    exported = read_adapter(tmp_path / "for-peft")
    assert exported.has_projection
    for key, theirs_ab in zip(PROJECTION_KEYS, (theirs.base_model.vera_A["default"],
                                                 theirs.base_model.vera_B["default"]), strict=True):
        assert torch.equal(exported.tensors[key], theirs_ab)  # PEFT's own A and B, bit for bit
    loaded = PeftModel.from_pretrained(tiny.make(), tmp_path / "for-peft").eval()
    torch.testing.assert_close(output_of(loaded, tiny.inputs()), output_of(theirs, tiny.inputs()), rtol=0, atol=0)
    assert vera("export-lora", tmp_path / "for-peft", tmp_path / "lora").exit_code == 0  # sizes now recorded


@pytest.mark.parametrize("command", ["export-lora", "export-peft"])
def test_without_base_model_a_seed_only_peft_adapter_is_refused_saying_to_pass_it(command: str, tmp_path: Path
                                                                                   ) -> None:
    _, adapter, _ = seed_only_peft_adapter(LLAMA, tmp_path)
    result = vera(command, adapter, tmp_path / "out")
    assert result.exit_code == 1
    message = one_line(result.stderr)
    assert message.startswith("error: ") and "stores no projections and no projection shape" in message
    assert "pass --base-model" in message, message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["export-lora", "export-peft"])
def test_a_base_model_of_another_hidden_size_is_refused_and_nothing_is_written(command: str, tmp_path: Path
                                                                                 ) -> None:
    from transformers import RobertaConfig

    _, adapter, _ = seed_only_peft_adapter(ROBERTA, tmp_path)
    RobertaConfig(vocab_size=96, hidden_size=48, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48,
                  max_position_embeddings=40, num_labels=3).save_pretrained(tmp_path / "wider")
    result = vera(command, adapter, tmp_path / "out", "--base-model", tmp_path / "wider")
    assert result.exit_code == 1
    layer = "roberta.encoder.layer.0.attention.self.query"
    assert one_line(result.stderr) == one_line(
        f"error: Layer {layer!r} of the adapter has 32 outputs (its vera_lambda_b), but {layer!r} of base model "
        f"RobertaForSequenceClassification ({tmp_path / 'wider'}) has out_features=48 (in_features=48): the "
        "adapter was trained on another model, or another size of this one; pass the base model the adapter was "
        "trained on.")
    assert not (tmp_path / "out").exists()


def test_a_base_model_without_the_adapted_layers_is_refused(tmp_path: Path) -> None:
    _, adapter, _ = seed_only_peft_adapter(LLAMA, tmp_path)
    ROBERTA.make().config.save_pretrained(tmp_path / "roberta")
    with pytest.raises(AdapterFormatError, match=r"has no module 'model.layers.0.mlp.down_proj', an adapted layer"):
        export_lora(adapter, tmp_path / "out", base_model=tmp_path / "roberta")
    assert not (tmp_path / "out").exists()


def big_llama_config(folder: Path) -> Path:
    """A config.json of Llama-2-7B's shape (6.7e9 parameters: 27 GB in float32), and nothing else."""
    from transformers import LlamaConfig

    LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                num_attention_heads=32).save_pretrained(folder)
    return folder


def big_llama_adapter(r: int = 64) -> AdapterFiles:
    """A seed-only adapter of the 7B model's q_proj and down_proj (what PEFT would write: vectors only)."""
    config = VeraConfig.from_peft_dict({"peft_type": "VERA", "r": r, "target_modules": ["q_proj", "down_proj"],
                                        "save_projection": False, "task_type": "CAUSAL_LM"})
    tensors = {}
    for i in range(32):
        for path, out in ((f"model.layers.{i}.self_attn.q_proj", 4096), (f"model.layers.{i}.mlp.down_proj", 4096)):
            tensors[f"base_model.model.{path}.vera_lambda_b"] = torch.ones(out)
            tensors[f"base_model.model.{path}.vera_lambda_d"] = torch.ones(r)
    return AdapterFiles(config, tensors)


def test_the_base_is_built_from_its_config_on_the_meta_device_without_weights(tmp_path: Path) -> None:
    folder = big_llama_config(tmp_path / "llama-7b")  # config.json only: no weights file to read
    model = meta_base_model(folder, "CAUSAL_LM")
    assert type(model).__name__ == "LlamaForCausalLM"
    assert sum(p.numel() for p in model.parameters()) > 6_000_000_000
    assert all(t.is_meta for t in [*model.parameters(), *model.buffers()])  # no storage behind any of them
    files = big_llama_adapter()
    shapes = adapted_layer_shapes(files, folder)
    assert shapes["model.layers.31.mlp.down_proj"] == (4096, 11008)
    assert shapes["model.layers.0.self_attn.q_proj"] == (4096, 4096) and len(shapes) == 64
    completed = with_base_model(files, folder)  # max over (out, in) of the adapted layers, as VeraModel sizes them
    assert completed.metadata[META_SHAPE] == "64,11008,4096"
    spec = completed.spec
    assert spec is not None and (spec.max_in, spec.max_out) == (11008, 4096)


def test_the_projection_shape_is_what_vera_model_and_peft_compute(tiny: TinyModel, tmp_path: Path) -> None:
    theirs, adapter, base = seed_only_peft_adapter(tiny, tmp_path)
    spec = with_base_model(read_adapter(adapter), base).spec
    ours = VeraModel(tiny.make(), VeraConfig(r=8, target_modules=tiny.targets, task_type=tiny.task_type))
    assert spec is not None and (spec.r, spec.max_in, spec.max_out) == (8, ours.max_in, ours.max_out)
    assert (spec.r, spec.max_in) == tuple(theirs.base_model.vera_A["default"].shape)
    assert spec.max_out == theirs.base_model.vera_B["default"].shape[0]


def test_module_paths_may_differ_by_a_prefix(tmp_path: Path) -> None:
    """A base built as another class (RobertaModel for a sequence classifier's adapter, LlamaForCausalLM for an
    adapter of a bare LlamaModel) names the same layers with a prefix less or more."""
    _, adapter, _ = seed_only_peft_adapter(ROBERTA, tmp_path)
    files = read_adapter(adapter)
    bare = ROBERTA.make().roberta
    shapes = adapted_layer_shapes(files, bare)
    assert shapes["roberta.encoder.layer.1.attention.self.value"] == (32, 32) and len(shapes) == 4
    save_adapter(VeraModel(LLAMA.make().model, VeraConfig(r=8, target_modules=["q_proj"])), tmp_path / "bare")
    shapes = adapted_layer_shapes(read_adapter(tmp_path / "bare"), LLAMA.make())  # paths "layers.0.self_attn..."
    assert shapes == {f"layers.{i}.self_attn.q_proj": (32, 32) for i in range(2)}


def test_a_prefix_that_fits_in_more_than_one_way_is_refused(tmp_path: Path) -> None:
    save_adapter(VeraModel(LLAMA.make().model, VeraConfig(r=8, target_modules=["q_proj"])), tmp_path / "bare")
    twice = nn.ModuleDict({"student": LLAMA.make().model, "teacher": LLAMA.make().model})
    with pytest.raises(AdapterFormatError, match=r"in 2 ways \(with the prefix 'student.'; with the prefix "
                                                 r"'teacher.'\).*ambiguous"):
        adapted_layer_shapes(read_adapter(tmp_path / "bare"), twice)


def test_a_peft_adapter_with_projections_exports_with_its_base_model_and_is_checked_against_it(tmp_path: Path
                                                                                                ) -> None:
    """PEFT stores A and B by default but no layer input sizes: the base model gives them, and must fit A and B."""
    theirs = peft_model(LLAMA, save_projection=True)
    theirs.save_pretrained(tmp_path / "peft")
    LLAMA.make().config.save_pretrained(tmp_path / "base")
    export_lora(tmp_path / "peft", tmp_path / "lora", base_model=tmp_path / "base")
    want, got = peft_deltas(theirs), lora_deltas(tmp_path / "lora")
    assert set(got) == set(want)
    for path, delta in want.items():
        torch.testing.assert_close(got[path], delta, rtol=1e-5, atol=1e-6, msg=path)
    from transformers import LlamaConfig

    config = LLAMA.make().config.to_dict()
    LlamaConfig(**{**config, "intermediate_size": 64}).save_pretrained(tmp_path / "other")
    with pytest.raises(AdapterFormatError, match="has 48 outputs"):  # gate_proj: 48 outputs, the other has 64
        export_lora(tmp_path / "peft", tmp_path / "bad", base_model=tmp_path / "other")
    assert not (tmp_path / "bad").exists()


def test_an_adapter_that_records_its_shape_is_checked_against_a_base_model_given(tmp_path: Path) -> None:
    """vera_core records the projection shape: the base model is not needed, and one that does not fit is refused
    (here only the input size of down_proj differs, which no vera_lambda_b shows)."""
    from transformers import LlamaConfig

    model = VeraModel(LLAMA.make(), VeraConfig(r=8, target_modules=["down_proj"], save_projection=False))
    save_adapter(model, tmp_path / "ours")
    LLAMA.make().config.save_pretrained(tmp_path / "base")
    LlamaConfig(**{**LLAMA.make().config.to_dict(), "intermediate_size": 64}).save_pretrained(tmp_path / "other")
    export_lora(tmp_path / "ours", tmp_path / "plain")
    export_lora(tmp_path / "ours", tmp_path / "checked", base_model=tmp_path / "base")
    assert (tmp_path / "plain/adapter_model.safetensors").read_bytes() == \
        (tmp_path / "checked/adapter_model.safetensors").read_bytes()
    with pytest.raises(AdapterFormatError, match=r"records a projection of \(r, max_in, max_out\) = \(8, 48, 32\), "
                                                 r"but its adapted layers in the base model given need \(8, 64, 32\)"):
        export_lora(tmp_path / "ours", tmp_path / "bad", base_model=tmp_path / "other")
    assert not (tmp_path / "bad").exists()


def test_a_base_model_that_is_not_there_is_one_clear_line(tmp_path: Path) -> None:
    _, adapter, _ = seed_only_peft_adapter(LLAMA, tmp_path)
    result = vera("export-lora", adapter, tmp_path / "out", "--base-model", tmp_path / "missing")
    assert result.exit_code == 1 and "Traceback" not in result.output
    message = "".join(result.stderr.split())  # the console wraps a long path anywhere, even beside a quote
    assert message.startswith("".join(f"error: Base model '{tmp_path / 'missing'}' is neither 'minilm', a local "
                                      "directory".split()))
    assert message.endswith("(Tosizeanexport,itsconfig.jsonalonewilldo.)")
    assert not (tmp_path / "out").exists()


def test_a_for_vllm_export_says_what_vllm_will_not_serve(tmp_path: Path) -> None:
    """A classifier's export for vLLM kept its head (modules_to_save) unsaid, which vLLM does not load (a newcomer's
    walk, session 40): said once; a causal LM's export says nothing."""
    from tests.vera_core.test_trainer import tiny_bert

    classifier = VeraModel(tiny_bert(), VeraConfig(r=4, target_modules=["query", "value"], task_type="SEQ_CLS",
                                                   modules_to_save=["classifier"]))
    save_adapter(classifier, tmp_path / "cls")
    said = vera("export-lora", tmp_path / "cls", tmp_path / "cls-lora", "--for-vllm")
    assert said.exit_code == 0, said.output
    assert ("warning: this is a SEQ_CLS adapter with modules_to_save classifier, score: vLLM serves LoRAs of "
            "generative models and loads neither a task head nor modules_to_save") in one_line(said.output)
    assert "(LoRA, r = lora_alpha = 4, exact; vLLM serves it started with --max-lora-rank 8 or more)" in one_line(
        said.output)
    save_adapter(VeraModel(LLAMA.make(), VeraConfig(r=4, target_modules=LLAMA.targets, task_type="CAUSAL_LM")),
                 tmp_path / "lm")
    quiet = vera("export-lora", tmp_path / "lm", tmp_path / "lm-lora", "--for-vllm")
    assert quiet.exit_code == 0 and "warning" not in quiet.output, quiet.output


@pytest.mark.parametrize("command", ["export-lora", "export-peft"])
def test_an_export_into_the_folder_it_reads_is_refused_and_the_adapter_kept(command: str, tmp_path: Path) -> None:
    """`vera export-peft a a` rewrote the adapter in place, unsaid, and `export-lora a a` replaced the VeRA adapter
    with its LoRA (a docs audit's finding, session 52): refused, by any name of the folder, nothing written."""
    _, adapter, base = seed_only_peft_adapter(LLAMA, tmp_path)
    before = {p.name: p.read_bytes() for p in adapter.iterdir()}
    (tmp_path / "again").symlink_to(adapter)
    for dst in (adapter, tmp_path / "peft" / ".." / "peft", tmp_path / "again"):
        result = vera(command, adapter, dst, "--base-model", base)
        assert result.exit_code == 1, result.stdout
        assert f"{dst} is the adapter folder the {'LoRA' if command == 'export-lora' else 'copy'} is made from: " \
            f"write" in one_line(result.stderr), result.stderr
    assert {p.name: p.read_bytes() for p in adapter.iterdir()} == before

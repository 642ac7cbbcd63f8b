"""Export as an equivalent LoRA: PEFT loads it as a LoRA and its outputs equal the VeRA adapter's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel

from tests.conftest import TinyModel, output_of
from vera_core import AdapterFormatError, VeraConfig, VeraConfigError, VeraModel, export_lora, save_adapter


@pytest.mark.parametrize("save_projection", [False, True], ids=["seed-only", "with-projection"])
def test_peft_loads_the_lora_export_with_equal_outputs(tiny: TinyModel, tmp_path: Path, save_projection: bool) -> None:
    config = VeraConfig(r=8, target_modules=tiny.targets, task_type=tiny.task_type, init_weights=False,
                        save_projection=save_projection)
    model = VeraModel(tiny.make(), config).eval()
    with torch.no_grad():
        for p in model.trainable_parameters().values():
            p.add_(torch.randn_like(p) * 0.1)
    export_lora(save_adapter(model, tmp_path / "vera"), tmp_path / "lora")
    exported = json.loads((tmp_path / "lora/adapter_config.json").read_text())
    assert exported["peft_type"] == "LORA" and exported["r"] == exported["lora_alpha"] == 8
    lora = PeftModel.from_pretrained(tiny.make(), tmp_path / "lora").eval()
    assert type(lora.peft_config["default"]).__name__ == "LoraConfig"
    inputs = tiny.inputs()
    torch.testing.assert_close(output_of(lora, inputs), output_of(model, inputs), rtol=1e-5, atol=1e-5)


def test_adapters_without_layer_sizes_are_refused_clearly(tiny: TinyModel, tmp_path: Path) -> None:
    from peft import VeraConfig as PeftVeraConfig
    from peft import get_peft_model

    peft_model = get_peft_model(tiny.make(), PeftVeraConfig(r=8, target_modules=tiny.targets))
    peft_model.save_pretrained(tmp_path / "peft")
    with pytest.raises(AdapterFormatError, match="does not record the input size"):
        export_lora(tmp_path / "peft", tmp_path / "lora")
    assert not (tmp_path / "lora").exists()


def _trained_llama(tmp_path: Path, r: int = 16) -> tuple[VeraModel, Path]:
    from tests.conftest import TINY_MODELS

    llama = TINY_MODELS[2]
    model = VeraModel(llama.make(), VeraConfig(r=r, target_modules=llama.targets, init_weights=False)).eval()
    return model, save_adapter(model, tmp_path / "vera")


def test_a_rank_capped_export_is_the_best_approximation_and_says_how_good(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from tests.conftest import TINY_MODELS
    from vera_core.lora import LoraExport, vllm_max_lora_rank

    llama = TINY_MODELS[2]
    model, source = _trained_llama(tmp_path)
    exact = export_lora(source, tmp_path / "exact")
    full = export_lora(source, tmp_path / "k16", LoraExport(max_rank=16))  # K = r: the same model
    same = PeftModel.from_pretrained(llama.make(), full).eval()
    torch.testing.assert_close(output_of(same, llama.inputs()), output_of(model, llama.inputs()), rtol=1e-5, atol=1e-5)
    assert not (full / "README.md").exists() and not (exact / "README.md").exists()
    capped = export_lora(source, tmp_path / "k4", LoraExport(max_rank=4, dtype="bfloat16"))
    assert json.loads((capped / "adapter_config.json").read_text())["r"] == 4
    tensors = load_file(str(capped / "adapter_model.safetensors"))
    report = (capped / "README.md").read_text()
    for name, layer in model.named_vera_layers():
        key = f"base_model.model.{name}"
        a_k, b_k = tensors[f"{key}.lora_A.weight"], tensors[f"{key}.lora_B.weight"]
        assert a_k.dtype == torch.bfloat16 and a_k.shape[0] == 4 and b_k.shape[1] == 4
        delta = layer.get_delta_weight().detach().double()
        measured = float((delta - b_k.double() @ a_k.double()).norm() / delta.norm())
        singular = torch.linalg.svdvals(delta)
        best = float(singular[4:].norm() / singular.norm())  # Eckart-Young: nothing of rank 4 does better
        assert measured == pytest.approx(best, abs=2e-2)  # bfloat16 storage costs the difference
        assert f"| `{name}` | {best:.3g} |" in report
    PeftModel.from_pretrained(llama.make(), capped)  # PEFT loads it as a LoRA of rank 4
    vllm = export_lora(source, tmp_path / "vllm", LoraExport(max_rank=12, for_vllm=True))
    assert json.loads((vllm / "adapter_config.json").read_text())["r"] == 12  # vLLM serves it: not snapped to 8
    # vLLM serves any rank up to its --max-lora-rank, at most 512: only a rank above that is cut for it
    assert [LoraExport(for_vllm=True).rank(r) for r in (4, 300, 512, 1024)] == [4, 300, 512, 512]
    assert [vllm_max_lora_rank(r) for r in (1, 4, 8, 12, 300, 512)] == [1, 8, 8, 16, 320, 512]
    with pytest.raises(VeraConfigError, match="max_rank=32 is larger than the adapter's r=16"):
        export_lora(source, tmp_path / "bad", LoraExport(max_rank=32))
    with pytest.raises(VeraConfigError, match="max_rank must be a positive integer"):
        LoraExport(max_rank=0)


def test_a_cap_above_a_narrow_layers_rank_pads_it(tmp_path: Path) -> None:
    """r=64 over the tiny Llama, whose k_proj and v_proj map 32 inputs to 16 outputs: their delta has rank <= 16, and
    a cap between 16 and 32 crashed ("The size of tensor a (32) must match the size of tensor b (48)": the QR core
    is 16 x 32, with 16 singular values, not k), a 500 through the registry for any reader (an outsider's finding,
    session 33). Each layer now keeps what it has and pads to the file's one rank, exactly: the cap loses nothing."""
    from safetensors.torch import load_file

    from tests.conftest import TINY_MODELS
    from vera_core.lora import LoraExport

    llama = TINY_MODELS[2]
    model, source = _trained_llama(tmp_path, r=64)
    rank = {name: min(layer.base_layer.in_features, layer.base_layer.out_features, 64)
            for name, layer in model.named_vera_layers()}
    assert min(rank.values()) == 16 and max(rank.values()) == 32  # k_proj, v_proj: 32 -> 16; the rest wider
    for k in (17, 24, 40):
        capped = export_lora(source, tmp_path / f"k{k}", LoraExport(max_rank=k))
        tensors = load_file(str(capped / "adapter_model.safetensors"))
        for name, layer in model.named_vera_layers():
            a_k, b_k = (tensors[f"base_model.model.{name}.lora_{x}.weight"] for x in ("A", "B"))
            assert a_k.shape[0] == k and b_k.shape[1] == k
            if rank[name] <= k:  # the delta's whole rank fits: exact
                torch.testing.assert_close(b_k @ a_k, layer.get_delta_weight().detach(), rtol=1e-4, atol=1e-5)
        same = PeftModel.from_pretrained(llama.make(), capped).eval()
        assert torch.isfinite(output_of(same, llama.inputs())).all()


def test_a_rank_capped_exports_readme_shows_layer_names_that_do_not_print_as_escapes() -> None:
    """A local adapter's tensor names are not checked as a publish's are: the README of its rank-capped export writes
    an escape sequence or a bidi override in a name as Python writes it, so that reading the file never runs it."""
    from vera_core.checkpoint import AdapterFiles
    from vera_core.lora import _readme

    files = AdapterFiles(VeraConfig(r=4, target_modules=["proj"]), {}, {})
    text = _readme(files, 2, {"layers.0.\x1b]0;pwned\x07\x1b[2Jproj": 0.5, "layers.1.p\u202eroj": 0.25}).decode()
    assert "\x1b" not in text and "\u202e" not in text and "\x07" not in text
    assert "| `layers.0.\\x1b]0;pwned\\x07\\x1b[2Jproj` | 0.5 |" in text and "`layers.1.p\\u202eroj`" in text

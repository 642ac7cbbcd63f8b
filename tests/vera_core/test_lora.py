"""Export as an equivalent LoRA: PEFT loads it as a LoRA and its outputs equal the VeRA adapter's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel

from tests.conftest import TinyModel, output_of
from vera_core import AdapterFormatError, VeraConfig, VeraModel, export_lora, save_adapter


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

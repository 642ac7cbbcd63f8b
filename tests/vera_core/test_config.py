from __future__ import annotations

import dataclasses

import peft
import pytest

from vera_core import PEFT_GENERATOR, PORTABLE_GENERATOR, VeraConfig, VeraConfigError
from vera_core.config import SEED_ONLY_PEFT_TYPE


def test_defaults_match_peft() -> None:
    ours, theirs = VeraConfig(), peft.VeraConfig()
    for field in dataclasses.fields(VeraConfig):
        if field.name in ("projection_generator",):
            continue
        assert getattr(ours, field.name) == getattr(theirs, field.name), field.name
    assert ours.projection_generator == PORTABLE_GENERATOR  # the portable generator is the default for new adapters


def test_reads_a_config_written_by_peft(tmp_path: object) -> None:
    theirs = peft.VeraConfig(r=16, target_modules=["q", "v"], projection_prng_key=9, task_type="SEQ_CLS")
    ours = VeraConfig.from_peft_dict(theirs.to_dict())
    assert ours.projection_generator == PEFT_GENERATOR  # no generator recorded: PEFT's own
    assert (ours.r, ours.target_modules, ours.projection_prng_key) == (16, ["q", "v"], 9)
    assert ours.modules_to_save == ["classifier", "score"]
    assert VeraConfig.from_peft_dict(ours.to_peft_dict()) == ours


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"r": 0}, "r must be a positive integer"),
        ({"r": "8"}, "r must be a positive integer"),
        ({"projection_prng_key": -3}, r"projection_prng_key must be an integer in \[0, 2\*\*64 - 1\]"),
        ({"projection_prng_key": 2**64}, "projection_prng_key must be"),
        ({"vera_dropout": 1.0}, r"vera_dropout must be in \[0, 1\)"),
        ({"bias": "some"}, "bias must be one of none, all, vera_only"),
        ({"projection_generator": "xorshift"}, "Unknown projection_generator 'xorshift'.*Upgrade vera-registry"),
        ({"task_type": "CLS"}, "task_type must be one of"),
        ({"target_modules": "(unclosed"}, "must be a regular expression"),
        ({"target_modules": []}, "target_modules is an empty list"),
        ({"layers_pattern": "layers"}, "layers_pattern is set but layers_to_transform is not"),
    ],
)
def test_invalid_values_raise_clear_errors(changes: dict[str, object], message: str) -> None:
    with pytest.raises(VeraConfigError, match=message):
        VeraConfig(**changes)  # type: ignore[arg-type]


def test_non_vera_configs_are_refused() -> None:
    with pytest.raises(VeraConfigError, match="peft_type='LORA'; expected 'VERA'"):
        VeraConfig.from_peft_dict(peft.LoraConfig().to_dict())
    with pytest.raises(VeraConfigError, match="must hold a JSON object"):
        VeraConfig.from_peft_dict([1, 2])  # type: ignore[arg-type]


def test_seed_only_portable_config_is_marked_for_peft_and_read_back() -> None:
    seed_only = VeraConfig(r=4, target_modules=["q"], save_projection=False, projection_generator=PORTABLE_GENERATOR)
    written = seed_only.to_peft_dict()
    assert written["peft_type"] == SEED_ONLY_PEFT_TYPE and not seed_only.peft_loadable
    assert VeraConfig.from_peft_dict(written) == seed_only
    for loadable in (seed_only.replace(save_projection=True), seed_only.replace(projection_generator=PEFT_GENERATOR)):
        assert loadable.peft_loadable and loadable.to_peft_dict()["peft_type"] == "VERA"
    with pytest.raises(VeraConfigError, match="names no projection_generator"):
        VeraConfig.from_peft_dict({k: v for k, v in written.items() if k != "projection_generator"})

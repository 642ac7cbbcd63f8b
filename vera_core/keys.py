"""The tensor keys of PEFT's adapter_model.safetensors for VeRA (no torch: the dashboard reads them too)."""

from __future__ import annotations

#: Prefix of every key in PEFT's adapter_model.safetensors.
PEFT_PREFIX = "base_model.model."
#: Keys of the shared projections in adapter_model.safetensors (present when save_projection is True).
PROJECTION_KEYS = ("base_model.vera_A", "base_model.vera_B")
#: Suffixes of the two trained vectors of a layer.
LAMBDA_B, LAMBDA_D = ".vera_lambda_b", ".vera_lambda_d"


def module_path(key: str, suffix: str = "") -> str:
    """The module path inside a PEFT tensor key ``base_model.model.<path><suffix>``."""
    return key[len(PEFT_PREFIX):len(key) - len(suffix)]

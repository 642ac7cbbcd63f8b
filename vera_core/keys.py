"""The names in PEFT's adapter files for VeRA: the files, the tensor keys of adapter_model.safetensors, and the
metadata keys vera_core adds there (no torch: the dashboard and the registry's metadata paths read them too)."""

from __future__ import annotations

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PICKLE_NAME = "adapter_model.bin"
#: Said of a folder that has PICKLE_NAME and no WEIGHTS_NAME (PEFT's save_pretrained(safe_serialization=False)).
PICKLE_HINT = (f"It has {PICKLE_NAME}, a pickle, which is never loaded because unpickling runs arbitrary code; "
               "re-save it with PEFT's save_pretrained(safe_serialization=True), its default.")

#: vera_core's keys in the safetensors metadata (PEFT writes {"format": "pt"} only).
META_GENERATOR = "vera_core.projection_generator"
META_FINGERPRINT = "vera_core.projection_fingerprint"
META_SHAPE = "vera_core.projection_shape"  # "r,max_in,max_out"
META_IN_FEATURES = "vera_core.layer_in_features"  # JSON {module path: in_features}, for slicing A without the base

#: Prefix of every key in PEFT's adapter_model.safetensors.
PEFT_PREFIX = "base_model.model."
#: Keys of the shared projections in adapter_model.safetensors (present when save_projection is True).
PROJECTION_KEYS = ("base_model.vera_A", "base_model.vera_B")
#: Suffixes of the two trained vectors of a layer.
LAMBDA_B, LAMBDA_D = ".vera_lambda_b", ".vera_lambda_d"


def module_path(key: str, suffix: str = "") -> str:
    """The module path inside a PEFT tensor key ``base_model.model.<path><suffix>``."""
    return key[len(PEFT_PREFIX):len(key) - len(suffix)]

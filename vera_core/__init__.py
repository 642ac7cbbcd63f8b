"""vera_core: VeRA (Kopiczko et al., ICLR 2024), bit-compatible with HuggingFace PEFT, with portable projections.

    from vera_core import VeraConfig, VeraModel, save_adapter, load_adapter
    model = VeraModel(base, VeraConfig(r=256, target_modules=["query", "value"]))
"""

from vera_core.bank import AdapterBank
from vera_core.checkpoint import (
    AdapterFiles,
    check_peft_loadable,
    export_lora,
    export_peft,
    load_adapter,
    peft_problems,
    read_adapter,
    save_adapter,
)
from vera_core.config import KNOWN_GENERATORS, PEFT_GENERATOR, PORTABLE_GENERATOR, VeraConfig
from vera_core.counting import lora_parameters, transformer_shapes, vera_parameters
from vera_core.errors import (
    AdapterFormatError,
    PeftIncompatibleError,
    ProjectionMismatchError,
    TargetError,
    UnknownGeneratorError,
    VeraConfigError,
    VeraError,
)
from vera_core.layer import SharedProjection, VeraLinear
from vera_core.model import VeraModel
from vera_core.projection import ProjectionSpec, fingerprint, generate

__version__ = "0.1.0"

__all__ = [
    "KNOWN_GENERATORS", "PEFT_GENERATOR", "PORTABLE_GENERATOR", "AdapterBank", "AdapterFiles", "AdapterFormatError",
    "PeftIncompatibleError", "ProjectionMismatchError", "ProjectionSpec", "SharedProjection", "TargetError",
    "UnknownGeneratorError", "VeraConfig", "VeraConfigError", "VeraError", "VeraLinear", "VeraModel",
    "check_peft_loadable", "export_lora", "export_peft", "fingerprint", "generate", "load_adapter", "lora_parameters",
    "peft_problems", "read_adapter", "save_adapter", "transformer_shapes", "vera_parameters",
]

"""vera_core: VeRA (Kopiczko et al., ICLR 2024), bit-compatible with HuggingFace PEFT, with portable projections.

    from vera_core import VeraConfig, VeraModel, save_adapter, load_adapter
    model = VeraModel(base, VeraConfig(r=256, target_modules=["query", "value"]))

The names below are imported on first use (PEP 562), so that the modules without torch (``vera_core.config``,
``vera_core.keys``, ``vera_core.errors``) can be imported by torch-free programs such as the dashboard.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_EXPORTS = {
    "AdapterBank": "bank",
    **dict.fromkeys(["AdapterFiles", "check_peft_loadable", "export_lora", "export_peft", "load_adapter",
                     "peft_problems", "read_adapter", "save_adapter"], "checkpoint"),
    **dict.fromkeys(["KNOWN_GENERATORS", "PEFT_GENERATOR", "PORTABLE_GENERATOR", "VeraConfig"], "config"),
    **dict.fromkeys(["lora_parameters", "transformer_shapes", "vera_parameters"], "counting"),
    **dict.fromkeys(["AdapterFormatError", "NonFiniteLossError", "PeftIncompatibleError", "ProjectionMismatchError",
                     "RoutingError", "TargetError", "UnknownGeneratorError", "VeraConfigError", "VeraError"], "errors"),
    **dict.fromkeys(["SharedProjection", "VeraLinear"], "layer"),
    "VeraModel": "model",
    **dict.fromkeys(["ProjectionSpec", "fingerprint", "generate"], "projection"),
}
__all__ = [
    "AdapterBank", "AdapterFiles", "AdapterFormatError", "KNOWN_GENERATORS", "NonFiniteLossError", "PEFT_GENERATOR",
    "PORTABLE_GENERATOR", "PeftIncompatibleError", "ProjectionMismatchError", "ProjectionSpec", "RoutingError",
    "SharedProjection", "TargetError", "UnknownGeneratorError", "VeraConfig", "VeraConfigError", "VeraError",
    "VeraLinear", "VeraModel", "check_peft_loadable", "export_lora", "export_peft", "fingerprint", "generate",
    "load_adapter", "lora_parameters", "peft_problems", "read_adapter", "save_adapter", "transformer_shapes",
    "vera_parameters",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"vera_core.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    try:  # a submodule, e.g. vera_core.model after a plain `import vera_core`
        return importlib.import_module(f"vera_core.{name}")
    except ModuleNotFoundError:
        raise AttributeError(f"module 'vera_core' has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


if TYPE_CHECKING:
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
        NonFiniteLossError,
        PeftIncompatibleError,
        ProjectionMismatchError,
        RoutingError,
        TargetError,
        UnknownGeneratorError,
        VeraConfigError,
        VeraError,
    )
    from vera_core.layer import SharedProjection, VeraLinear
    from vera_core.model import VeraModel
    from vera_core.projection import ProjectionSpec, fingerprint, generate

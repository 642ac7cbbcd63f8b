"""Which modules an adapter targets: PEFT's matching rules, so that the same config picks the same layers."""

from __future__ import annotations

from collections.abc import Iterator

from torch import nn

from vera_core.config import ALL_LINEAR, DEFAULT_TARGETS, VeraConfig
from vera_core.errors import TargetError
from vera_core.layer import layer_shape
from vera_core.patterns import compile_pattern, layer_index_pattern, list_entry


def is_module_to_save(config: VeraConfig, name: str) -> bool:
    r"""True for a module listed in ``modules_to_save`` or inside one (never adapted, trained in full): PEFT's
    ``(^|.*\.)<name>($|\..*)``, as plain string tests (no regex to compile per entry and layer)."""
    dotted = f".{name}."
    return any(f".{m}." in dotted for m in config.modules_to_save or [])


def _layer_index_ok(config: VeraConfig, name: str) -> bool:
    indexes = config.layers_to_transform
    if indexes is None or (isinstance(indexes, list) and not indexes):
        return True
    patterns = config.layers_pattern
    match = None
    if not patterns:
        match = layer_index_pattern().match(name)
    else:
        for pattern in [patterns] if isinstance(patterns, str) else patterns:
            match = layer_index_pattern(pattern).match(name)  # linear time, whoever wrote the pattern
            if match:
                break
    if match is None:
        return False
    index = int(match.group("idx"))
    return index == indexes if isinstance(indexes, int) else index in indexes


def matches_target(config: VeraConfig, name: str) -> bool:
    """PEFT's rule: a string is a regex on the full name; a list matches the full name or a '.suffix'."""
    if is_module_to_save(config, name):
        return False
    targets = config.target_modules
    if targets is None:
        return False
    if isinstance(targets, str):
        return compile_pattern(targets).fullmatch(name) is not None  # linear time, whoever wrote the pattern
    if name in targets:
        return True
    return list_entry(targets, name) is not None and _layer_index_ok(config, name)


def resolve_targets(model: nn.Module, config: VeraConfig) -> VeraConfig:
    """Fill in ``target_modules`` as PEFT does: from the model type when it is None; "all-linear" as the names of
    every linear layer but the output layer (and the heads of modules_to_save)."""
    if config.target_modules == ALL_LINEAR:
        find_output = getattr(model, "get_output_embeddings", None)
        output = find_output() if callable(find_output) else None
        names = {name.rpartition(".")[2] for name, module in model.named_modules()
                 if name and module is not output and layer_shape(module) is not None
                 and not is_module_to_save(config, name)}
        if not names:
            raise TargetError(f"target_modules='all-linear' found no linear layer in this {type(model).__name__}.")
        return config.replace(target_modules=sorted(names))
    if config.target_modules is not None:
        return config
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in DEFAULT_TARGETS:
        raise TargetError(
            f"target_modules is None and there is no default for model type {model_type!r}; "
            "set target_modules, e.g. ['q_proj', 'v_proj'], 'all-linear', or a regex such as r'.*\\.(query|value)'."
        )
    default = DEFAULT_TARGETS[model_type]
    return config.replace(target_modules=default if isinstance(default, str) else list(default))


def _linear_names(model: nn.Module) -> str:
    """The last parts of the paths of ``model``'s linear layers, sorted, each once: what target_modules may name."""
    leaves = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if n and layer_shape(m) is not None})
    return ", ".join(leaves) or "(none)"


def find_targets(model: nn.Module, config: VeraConfig) -> Iterator[tuple[str, nn.Module]]:
    """(name, module) of every module the config targets; unsupported layer types are an error."""
    found = False
    for name, module in model.named_modules():
        if not name or not matches_target(config, name):
            continue
        if layer_shape(module) is None:  # (naming the linear layers there are, as the doc said: a docs audit)
            raise TargetError(
                f"target_modules matched {name!r}, a {type(module).__name__}; VeRA adapts only nn.Linear and "
                "transformers Conv1D layers. Narrow target_modules so that it matches linear layers only: this "
                f"{type(model).__name__}'s are named {_linear_names(model)} (last part of the module path)."
            )
        found = True
        yield name, module
    if not found:
        raise TargetError(
            f"target_modules={config.target_modules!r} matched no module of this {type(model).__name__}. "
            f"Its linear layers are named {_linear_names(model)} (last part of the module path); "
            "pass some of those names, or a regex over full module paths."
            + (f" layers_to_transform={config.layers_to_transform!r} (layers_pattern={config.layers_pattern!r}) "
               "kept only those layer indices: check that the model has them."
               if config.layers_to_transform not in (None, []) and isinstance(config.target_modules, list) else "")
        )

"""An adapter's projection shape and layer sizes from its base model's architecture, without the base's weights.

A seed-only adapter that PEFT wrote (``save_projection=False``) holds its vectors and its seed, but not the shape of
A (r, max_in) and B (max_out, r): PEFT sizes them from the base model it is loaded on, as the element-wise maxima of
(out_features, in_features) over the adapted layers. ``with_base_model`` finds those layers in a base model and
completes the adapter with what it lacks (the projection shape, each layer's input size), so that it can be
exported (vera_core.export_lora, vera_core.export_peft) without loading the base model's weights:

- a base model given as a reference (a local directory, the demo alias or a cached Hub id: what
  vera_core.recipes.resolve_base understands) is built from its ``config.json`` alone, on the meta device, with the
  transformers Auto class of the adapter's ``task_type``: even a 7B model costs no weight memory, and no weights
  file is read (the directory needs only its config.json; remote code is never run);
- a base model given as an ``nn.Module`` is only inspected (module names and layer sizes).

The adapted layers are the adapter's own ``vera_lambda_b`` keys (``base_model.model.<module path>.vera_lambda_b``).
Each is looked up in the base model by its exact module path; when the base model class names its modules with a
prefix more or less (``roberta.encoder...`` in the adapter, ``encoder...`` in an ``AutoModel``), one prefix rule
that finds a linear layer for every adapted layer is used, and more than one such rule is refused as ambiguous.
Every found layer must have as many outputs as the adapter's ``vera_lambda_b``. What the adapter records already
(stored projections, the recorded projection shape and layer input sizes) must agree with the base model too: a base
model given for an adapter that does not need one is checked, never silently preferred.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import torch
from torch import nn

from vera_core.checkpoint import META_IN_FEATURES, META_SHAPE, AdapterFiles, _check_recorded_shapes
from vera_core.errors import AdapterFormatError
from vera_core.keys import LAMBDA_B, PEFT_PREFIX, module_path
from vera_core.layer import layer_shape

#: A base model: a reference vera_core.recipes.resolve_base understands, or a model already built.
BaseModel = str | os.PathLike[str] | nn.Module
#: PEFT task_type -> the transformers Auto class whose model PEFT wraps for it (AutoModel for any other).
TASK_MODEL_CLASSES = {
    "SEQ_CLS": "AutoModelForSequenceClassification",
    "CAUSAL_LM": "AutoModelForCausalLM",
    "TOKEN_CLS": "AutoModelForTokenClassification",
    "QUESTION_ANS": "AutoModelForQuestionAnswering",
    "SEQ_2_SEQ_LM": "AutoModelForSeq2SeqLM",
}
_FIX = "pass the base model the adapter was trained on"


def meta_base_model(reference: str | os.PathLike[str], task_type: str | None = None) -> nn.Module:
    """The model ``reference`` names, built from its config.json alone on the meta device: its module tree and
    layer sizes, with no weight memory and no weights file read (never remote code). ``task_type`` (PEFT's) picks
    the Auto class; one that cannot build this config falls back to AutoModel."""
    import transformers
    from transformers import AutoConfig

    from vera_core.recipes import TrainingSpecError, resolve_base

    try:
        path = resolve_base(os.fspath(reference))
    except TrainingSpecError as exc:
        raise TrainingSpecError(f"{exc} (To size an export, its config.json alone will do.)") from exc
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=False, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise AdapterFormatError(
            f"transformers cannot read the config.json of base model {os.fspath(reference)!r} in {path} "
            f"({type(exc).__name__}: {str(exc)[:200]}); pass a directory with the base model's config.json (its "
            "weights are not needed; remote code is never run).") from exc
    names = [TASK_MODEL_CLASSES.get(task_type or "", "AutoModel"), "AutoModel"]
    problem: Exception | None = None
    for name in dict.fromkeys(names):  # the task's class, then AutoModel
        try:
            with torch.device("meta"):
                model: nn.Module = getattr(transformers, name).from_config(config, trust_remote_code=False)
            return model
        except (ValueError, TypeError, KeyError, AttributeError) as exc:  # "Unrecognized configuration class ..."
            problem = exc
    raise AdapterFormatError(
        f"transformers cannot build base model {os.fspath(reference)!r} from its config.json "
        f"({type(problem).__name__}: {str(problem)[:200]}).")


@dataclass(frozen=True)
class _Rule:
    """How an adapter's module path becomes the base model's: drop ``strip`` from its front, put ``add`` there."""

    strip: str = ""
    add: str = ""

    def apply(self, path: str) -> str | None:
        return self.add + path[len(self.strip):] if path.startswith(self.strip) else None

    def __str__(self) -> str:
        if self.strip:
            return f"without the prefix {self.strip!r}"
        return f"with the prefix {self.add!r}" if self.add else "as they are"


def _candidate_rules(path: str, modules: dict[str, nn.Module]) -> list[_Rule]:
    """Every rule under which ``path`` (one adapted layer) names a linear layer of the base model, exact first."""
    parts = path.split(".")
    rules = [_Rule()]
    rules += [_Rule(strip=".".join(parts[:i]) + ".") for i in range(1, len(parts))]
    rules += [_Rule(add=name[: -len(path)]) for name in modules if name.endswith("." + path)]
    return [rule for rule in rules if _fits(rule, path, modules)]


def _fits(rule: _Rule, path: str, modules: dict[str, nn.Module]) -> bool:
    name = rule.apply(path)
    return name is not None and name in modules and layer_shape(modules[name]) is not None


def _base_name(model: nn.Module, reference: object) -> str:
    return f"{type(model).__name__} ({reference})" if isinstance(reference, str | os.PathLike) else \
        type(model).__name__


def adapted_layer_shapes(files: AdapterFiles, base_model: BaseModel) -> dict[str, tuple[int, int]]:
    """{adapter module path: (out_features, in_features)} of every adapted layer, found in ``base_model`` (a
    reference, built on the meta device, or a module) and checked against the adapter's ``vera_lambda_b``."""
    model = base_model if isinstance(base_model, nn.Module) else meta_base_model(base_model, files.config.task_type)
    which = _base_name(model, base_model)
    paths = sorted(module_path(k, LAMBDA_B) for k in files.vector_keys() if k.endswith(LAMBDA_B))
    modules = dict(model.named_modules())
    rules = [rule for rule in _candidate_rules(paths[0], modules) if all(_fits(rule, p, modules) for p in paths)]
    if not rules:
        missing = next((p for p in paths if not _fits(_Rule(), p, modules)), paths[0])
        found = modules.get(missing)
        what = "has no module" if found is None else f"has a {type(found).__name__}, not a linear layer, at"
        trained_on = files.config.base_model_name_or_path
        raise AdapterFormatError(
            f"Base model {which} {what} {missing!r}, an adapted layer of the adapter, nor one module path for all "
            f"{len(paths)} adapted layers under a common prefix: the adapter was trained on another model; {_FIX}"
            + (f" (its adapter_config.json names {trained_on!r})." if trained_on else "."))
    if rules[0] != _Rule() and len(rules) > 1:
        raise AdapterFormatError(
            f"The adapter's module paths (e.g. {paths[0]!r}) match linear layers of base model {which} in "
            f"{len(rules)} ways ({'; '.join(str(r) for r in rules[:4])}): which layers the adapter was trained on "
            f"is ambiguous; {_FIX}, built as the class it was trained with (adapter_config.json task_type "
            f"{files.config.task_type!r}).")
    rule = rules[0]
    shapes: dict[str, tuple[int, int]] = {}
    for path in paths:
        name = rule.apply(path)
        assert name is not None  # every path fits the rule
        shape = layer_shape(modules[name])
        assert shape is not None
        outs = int(files.tensors[PEFT_PREFIX + path + LAMBDA_B].shape[0])
        if shape[0] != outs:
            raise AdapterFormatError(
                f"Layer {path!r} of the adapter has {outs} outputs (its vera_lambda_b), but {name!r} of base model "
                f"{which} has out_features={shape[0]} (in_features={shape[1]}): the adapter was trained on another "
                f"model, or another size of this one; {_FIX}.")
        shapes[path] = (int(shape[0]), int(shape[1]))
    return shapes


def with_base_model(files: AdapterFiles, base_model: BaseModel) -> AdapterFiles:
    """``files`` with the projection shape and the layer input sizes of ``base_model`` in its metadata, after
    checking that they agree with what the adapter records (stored projections, recorded shape and sizes)."""
    shapes = adapted_layer_shapes(files, base_model)
    r, max_in, max_out = files.config.r, max(i for _, i in shapes.values()), max(o for o, _ in shapes.values())
    recorded = files.spec
    if recorded is not None and (recorded.r, recorded.max_in, recorded.max_out) != (r, max_in, max_out):
        source = "stores projections" if files.has_projection else "records a projection"
        raise AdapterFormatError(
            f"The adapter {source} of (r, max_in, max_out) = {(recorded.r, recorded.max_in, recorded.max_out)}, but "
            f"its adapted layers in the base model given need {(r, max_in, max_out)}: the base model is not the one "
            f"it was trained on; {_FIX} (or none: this adapter does not need one).")
    sizes = files.metadata.get(META_IN_FEATURES)
    ins = {path: i for path, (_, i) in shapes.items()}
    if sizes is not None:
        for path, n_in in sorted(json.loads(sizes).items()):  # read_adapter checked: one positive int per layer
            if ins[path] != n_in:
                raise AdapterFormatError(
                    f"Layer {path!r} of the adapter records in_features={n_in}, but the base model given has "
                    f"{ins[path]}: the base model is not the one it was trained on; {_FIX} (or none: this adapter "
                    "does not need one).")
    metadata = {META_SHAPE: f"{r},{max_in},{max_out}",
                META_IN_FEATURES: json.dumps(ins, sort_keys=True, separators=(",", ":")), **files.metadata}
    completed = AdapterFiles(files.config, files.tensors, metadata)
    _check_recorded_shapes(completed)  # the same rules as for a file that recorded them itself
    return completed

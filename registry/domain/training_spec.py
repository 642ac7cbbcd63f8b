"""The training spec: the JSON object that `vera_core.recipes.TrainSpec` and the job API (`POST /api/v1/jobs`) accept,
built by one set of rules from the options of `vera train`, `vera job submit` and the dashboard's Train page.

Pure Python, no torch: the dashboard imports it. An option left as None is left out of the spec, so TrainSpec and
`vera_core.trainer.TrainingArguments` apply their own defaults (documented there, once).
"""

from __future__ import annotations

from typing import Any


def parse_target_modules(text: str | None) -> list[str] | str | None:
    """`--target-modules`: comma-separated module names, or one regex if it starts with '^' (VeraConfig matches a
    string against full module names). Empty: None, the default targets of the model type."""
    text = (text or "").strip()
    if text.startswith("^"):
        return text
    names = [name.strip() for name in text.split(",") if name.strip()]
    return names or None


def training_spec(
    *,
    base_model: str | None = None,
    task: str | None = None,
    demo: bool = False,
    data: str | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
    r: int | None = None,
    seed: int | None = None,
    projection_seed: int | None = None,
    generator: str | None = None,
    target_modules: str | None = None,
    d_initial: float | None = None,
    save_projection: bool | None = None,
    max_length: int | None = None,
    epochs: float | None = None,
    max_steps: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    head_lr: float | None = None,
    schedule: str | None = None,
    warmup_ratio: float | None = None,
    grad_accum: int | None = None,
    max_grad_norm: float | None = None,
    eval_every: int | None = None,
    log_every: int | None = None,
    patience: int | None = None,
    metric_for_best: str | None = None,
    keep_best: bool | None = None,
    save_every: int | None = None,
    output_dir: str | None = None,
    precision: str | None = None,
    init_from: str | None = None,
    max_train_examples: int | None = None,
    max_eval_examples: int | None = None,
) -> dict[str, Any]:
    """The spec for these options (named as the command line names them).

    ``data`` is a local dataset path (`vera train`); leave it None where the dataset is uploaded with the job (the
    registry names the upload). ``target_modules`` is read by `parse_target_modules`. ``max_grad_norm`` 0 turns
    gradient clipping off (None in the spec); ``output_dir`` is where resumable checkpoints go (``save_every``).
    ``init_from``: what training starts from, an adapter folder (`vera train`) or a version of the registry (a job).
    """
    spec = _given({
        "base_model": base_model, "task": task, "demo": demo, "data": data, "text_column": text_column,
        "label_column": label_column, "r": r, "seed": seed, "projection_prng_key": projection_seed,
        "projection_generator": generator, "target_modules": parse_target_modules(target_modules),
        "d_initial": d_initial, "save_projection": save_projection, "max_length": max_length, "init_from": init_from,
        "max_train_examples": max_train_examples, "max_eval_examples": max_eval_examples,
    })
    training = _given({
        "epochs": epochs, "max_steps": max_steps, "batch_size": batch_size, "lr": lr, "head_lr": head_lr,
        "schedule": schedule, "warmup_ratio": warmup_ratio, "gradient_accumulation_steps": grad_accum,
        "eval_every": eval_every, "log_every": log_every, "early_stopping_patience": patience, "save_every": save_every,
        "output_dir": output_dir, "precision": precision, "metric_for_best": metric_for_best,
        "load_best_at_end": None if keep_best else keep_best,  # the default, True, left out of the spec
    })
    if max_grad_norm is not None:
        training["max_grad_norm"] = max_grad_norm or None
    spec["training"] = training
    return spec


def _given(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}

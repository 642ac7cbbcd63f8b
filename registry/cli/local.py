"""Local adapter tools, no registry involved: inspect, export-peft, export-lora, projection fingerprint, params and
train."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

import vera_core
from registry.cli import training_options as opt
from registry.cli.common import (
    ForVllm,
    LoraDtype,
    MaxRank,
    check_failed,
    console,
    err_console,
    lora_export,
    lora_summary,
    styled,
    warn_unservable_by_vllm,
)
from registry.cli.output import print_json
from registry.domain.errors import InvalidInput
from registry.domain.schemas import is_reference
from registry.domain.training_spec import training_spec
from vera_core import PORTABLE_GENERATOR  # vera_core loads torch lazily: only the commands that compute import it


def inspect(
    path: Annotated[Path, typer.Argument(help="A PEFT-format VeRA adapter directory.")],
    verify: Annotated[bool, typer.Option(help="Regenerate the projections from the seed and compare.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show an adapter's config, projection and size; with --verify, prove the seed regenerates its projections."""
    files = vera_core.read_adapter(path)
    report = _describe(files, verify=verify)
    if as_json:
        print_json(report)  # plain JSON, what a terminal would run escaped (rich's print_json wrote C1 raw)
        return
    table = Table(show_header=False, box=None)
    for key, value in report.items():
        table.add_row(Text(key, style="bold"), str(value))
    console.print(table)
    if verify and report.get("seed_reproducible") is False:  # a line that says it, as every failed check's
        stored = "stored projections" if files.has_projection else "recorded fingerprint"
        err_console.print(styled("failed:", "bold red", f" the seed does not regenerate {path}'s {stored} (the "
                                 "adapter's A and B, or its config's seed, rank or generator, changed after it was "
                                 "saved); do not trust it, fetch or train it again."), soft_wrap=True)
        check_failed()


def _describe(files: vera_core.AdapterFiles, *, verify: bool) -> dict[str, object]:
    cfg = files.config
    vectors = files.vector_keys()
    report: dict[str, object] = {
        "r": cfg.r,
        "target_modules": cfg.target_modules,
        "projection_generator": cfg.projection_generator,
        "projection_prng_key": cfg.projection_prng_key,
        "save_projection": cfg.save_projection,
        "adapted_layers": len(vectors) // 2,
        "adapter_parameters": sum(files.tensors[k].numel() for k in vectors),
        "recorded_fingerprint": files.recorded_fingerprint,
        "peft_loadable": not vera_core.peft_problems(cfg),
    }
    if verify:
        report.update(_verification(files))
    return report


def _verification(files: vera_core.AdapterFiles) -> dict[str, object]:
    """Whether the seed regenerates the adapter's projections, and the fingerprint of what it regenerates."""
    spec = files.spec
    if spec is None:
        raise vera_core.AdapterFormatError(
            "The adapter records neither its projections nor their shape, so it can only be verified on its "
            "base model (vera_core.load_adapter)."
        )
    regenerated = vera_core.fingerprint(*vera_core.generate(spec))
    reproducible: object
    if files.has_projection:
        stored = vera_core.fingerprint(*(files.tensors[k] for k in vera_core.keys.PROJECTION_KEYS))
        reproducible = stored == regenerated
    elif files.recorded_fingerprint is not None:
        reproducible = files.recorded_fingerprint == regenerated
    else:  # PEFT wrote it seed-only: nothing recorded to compare against
        reproducible = "unknown (no fingerprint or projections recorded)"
    return {"seed_reproducible": reproducible, "regenerated_fingerprint": regenerated}


#: For an adapter PEFT wrote: the base model whose layers size the projections and slice them (vera_core.base_shapes).
ExportBaseModel = Annotated[str | None, typer.Option(
    "--base-model", help="The adapter's base model: a local model directory, 'minilm' or a cached Hub id; only its "
    "config.json is read (built on the meta device: no weights). Needed for an adapter PEFT wrote, which records "
    "no projection shape (save_projection=False) nor layer input sizes (for LoRA); checked against the adapter "
    "otherwise.")]


def export_peft(
    src: Annotated[Path, typer.Argument(help="Adapter directory to read.")],
    dst: Annotated[Path, typer.Argument(help="Directory to write the PEFT-loadable copy to.")],
    base_model: ExportBaseModel = None,
) -> None:
    """Write a copy with vera_A and vera_B materialised, which PEFT >= 0.21 loads whatever the generator."""
    out = vera_core.export_peft(src, dst, base_model=base_model)
    console.print(f"wrote {out} (projections materialised; load with PeftModel.from_pretrained)")


def export_lora(
    src: Annotated[Path, typer.Argument(help="VeRA adapter directory to read.")],
    dst: Annotated[Path, typer.Argument(help="Directory to write the equivalent LoRA to.")],
    max_rank: MaxRank = None, dtype: LoraDtype = "float32", for_vllm: ForVllm = False,
    base_model: ExportBaseModel = None,
) -> None:
    """Write the equivalent rank-r LoRA in PEFT's LoRA format (lora_B @ lora_A equals VeRA's delta weight), or its
    best rank-K approximation with --max-rank."""
    export = lora_export(max_rank, dtype, for_vllm)
    out = vera_core.export_lora(src, dst, export, base_model=base_model)
    config = json.loads((out / "adapter_config.json").read_text())
    from vera_core.checkpoint import read_adapter_config

    adapter_r = read_adapter_config(src).r
    console.print(f"wrote {out}" + lora_summary(config["r"], adapter_r, export,
                                                with_readme=(out / "README.md").is_file()), soft_wrap=True)
    if export.for_vllm:
        warn_unservable_by_vllm(config)


def projection_fingerprint(
    r: Annotated[int, typer.Option(help="Rank.")],
    max_in: Annotated[int, typer.Option(help="Largest in_features of the adapted layers.")],
    max_out: Annotated[int, typer.Option(help="Largest out_features of the adapted layers.")],
    seed: Annotated[int, typer.Option(help="projection_prng_key.")] = 0,
    generator: Annotated[str, typer.Option(help="Generator name.")] = PORTABLE_GENERATOR,
) -> None:
    """Regenerate A and B and print their SHA-256 fingerprint (docs/projections.md)."""
    spec = vera_core.ProjectionSpec(generator, seed, r, max_in, max_out)
    console.print(vera_core.fingerprint(*vera_core.generate(spec)))


def params(
    layers: Annotated[int, typer.Option(help="Transformer blocks.")],
    d_model: Annotated[int, typer.Option(help="Hidden size (square attention projections).")],
    r: Annotated[list[int], typer.Option(help="Rank; repeat for several.")],
    modules: Annotated[int, typer.Option(help="Adapted modules per block (query and value: 2).")] = 2,
) -> None:
    """Trainable parameters of VeRA and LoRA from shapes alone, as in the paper's Table 1."""
    shapes = vera_core.transformer_shapes(layers=layers, d_model=d_model, modules_per_layer=modules)
    table = Table("rank", "VeRA params", "VeRA bytes (fp32)", "LoRA params")
    for rank in r:
        n = vera_core.vera_parameters(shapes, rank)
        table.add_row(str(rank), f"{n:,}", f"{4 * n:,}", f"{vera_core.lora_parameters(shapes, rank):,}")
    console.print(table)


def train(
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the adapter and metrics.json.")],
    demo: opt.Demo = False,
    data: opt.Data = None,
    base_model: opt.BaseModel = "minilm",
    task: opt.Task = "classification",
    text_column: opt.TextColumn = "text",
    label_column: opt.LabelColumn = "label",
    r: opt.Rank = 256,
    target_modules: opt.TargetModules = None,
    seed: opt.Seed = 0,
    projection_seed: opt.ProjectionSeed = 0,
    generator: opt.Generator = PORTABLE_GENERATOR,
    d_initial: opt.DInitial = 0.1,
    save_projection: opt.SaveProjection = False,
    epochs: opt.Epochs = 1.0,
    max_steps: opt.MaxSteps = None,
    batch_size: opt.BatchSize = 32,
    lr: opt.Lr = 1e-2,
    head_lr: opt.HeadLr = 1e-3,
    schedule: opt.Schedule = "linear",
    warmup_ratio: opt.WarmupRatio = 0.06,
    grad_accum: opt.GradAccum = 1,
    max_grad_norm: opt.MaxGradNorm = 1.0,
    eval_every: opt.EvalEvery = None,
    log_every: opt.LogEvery = None,
    patience: opt.Patience = None,
    metric_for_best: opt.MetricForBest = None,
    keep_best: opt.KeepBest = True,
    max_length: opt.MaxLength = 64,
    max_train_examples: opt.MaxTrainExamples = None,
    max_eval_examples: opt.MaxEvalExamples = None,
    save_every: opt.SaveEvery = None,
    resume: Annotated[bool, typer.Option(help="Resume from the latest checkpoint under --out.")] = False,
    precision: opt.Precision = "auto",
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    nproc: Annotated[int, typer.Option(min=1, help="Processes to train in on this machine, through torchrun (DDP; "
                                       "one GPU each on CUDA). --batch-size is per process: a step sees batch size "
                                       "x grad-accum x nproc examples.")] = 1,
    start_from: Annotated[Path | None, typer.Option(
        "--from", help="Start from this adapter folder's vectors and head (a warm start: go on fine-tuning it, e.g. "
        "on new data); its rank, projection, targets and base model are kept. A registry version: `vera fetch REF "
        "-o DIR` first, and publish the result with --parent REF.")] = None,
) -> None:
    """Fine-tune a model with VeRA; writes a PEFT-format adapter and metrics.json to --out."""
    if not progress:  # no bar at all: transformers drew its "Loading weights" one (a newcomer's walk, session 40);
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # read where transformers is imported, here and in torchrun's
        if "transformers" in sys.modules:                 # processes
            sys.modules["transformers"].utils.logging.disable_progress_bar()
    from vera_core.callbacks import ProgressBar
    from vera_core.distributed import from_env
    from vera_core.recipes import TrainSpec, run, run_processes

    spec = training_spec(
        base_model=base_model, task=task, demo=demo, data=str(data) if data else None, text_column=text_column,
        label_column=label_column, r=r, seed=seed, projection_seed=projection_seed, generator=generator,
        target_modules=target_modules, d_initial=d_initial, save_projection=save_projection, max_length=max_length,
        max_train_examples=max_train_examples, max_eval_examples=max_eval_examples,
        epochs=epochs, max_steps=max_steps, batch_size=batch_size, lr=lr, head_lr=head_lr, schedule=schedule,
        warmup_ratio=warmup_ratio, grad_accum=grad_accum, max_grad_norm=max_grad_norm, eval_every=eval_every,
        log_every=log_every, patience=patience, metric_for_best=metric_for_best, keep_best=keep_best,
        save_every=save_every, output_dir=str(out) if save_every or resume else None,
        precision=precision, init_from=_start_folder(start_from),
    )
    replaced = not resume and (out / "adapter_config.json").is_file()
    if nproc > 1:
        metrics = run_processes(TrainSpec(**spec), out, nproc=nproc, resume=resume, progress=progress)
    else:  # one process, or one of several that torchrun started (torchrun ... --no-python vera train ...)
        main = from_env().is_main
        metrics = run(TrainSpec(**spec), out, callbacks=[ProgressBar(disable=not (progress and main))], resume=resume)
        if not main:
            return
    _print_summary(metrics, out)
    if replaced:
        console.print(styled("note:", "yellow", f" {out} held an adapter before this run; this run's replaced it "
                             "(`--resume` continues a run's checkpoints instead)."))


def _start_folder(given: Path | None) -> str | None:
    """`vera train --from`: an adapter folder; a registry reference is answered with how to fetch it first."""
    if given is None or given.is_dir():
        return None if given is None else str(given)
    if not given.exists() and is_reference(str(given)):
        raise InvalidInput(f"--from {given}: there is no such folder here. To start from a registry version, fetch "
                           f"it first: `vera fetch {given} -o start` then `--from start` (and publish the result "
                           f"with `--parent {given}`).")
    raise InvalidInput(f"--from {given}: {'a file' if given.exists() else 'no such folder'}; give the folder of a "
                       "PEFT VeRA adapter (adapter_config.json and adapter_model.safetensors).")


def _print_summary(metrics: dict[str, Any], out: Path) -> None:
    from vera_core.recipes import kept_line, small_eval_note

    summary = Table(show_header=False, box=None)
    for key in ("final_eval", "test", "trainable_parameters", "adapter_parameters", "steps", "train_wall_time_s"):
        value = f"{metrics[key]} of {metrics['total_steps']}" if key == "steps" else metrics[key]
        summary.add_row(Text(key, style="bold"), ", ".join(f"{k}={v:.4f}" for k, v in value.items())
                        if isinstance(value, dict) else str(value))
        if key == "final_eval" and (kept := kept_line(metrics)) is not None:
            summary.add_row(Text("weights of", style="bold"), kept)
    summary.add_row(Text("adapter", style="bold"), str(out))
    console.print(summary)
    if (few := small_eval_note(metrics)) is not None:
        console.print(styled("note:", "yellow", f" {few}"))

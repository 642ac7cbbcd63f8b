"""The training options `vera train` and `vera job submit` share, declared once so that both commands say the same
about them. The defaults stay in each command's signature (typer takes an Annotated option's default from there);
they are vera_core.recipes.TrainSpec's and TrainingArguments'. registry.domain.training_spec turns the values into
the spec."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Demo = Annotated[bool, typer.Option(help="The offline demo: word polarity on the bundled MiniLM.")]
Data = Annotated[Path | None, typer.Option(help="A .csv or .jsonl file with text (and label) columns.")]
JobData = Annotated[Path | None, typer.Option(help="A .csv or .jsonl file with text (and label) columns, uploaded "
                                             "with the job.")]
BaseModel = Annotated[str, typer.Option(help="'minilm' (bundled), a local model directory, or a Hub id in this "
                                        "machine's Hugging Face cache.")]
JobBaseModel = Annotated[str, typer.Option(help="One the registry allows (VERA_JOB_BASE_MODELS: 'minilm', the "
                                           "bundled demo model, by default; an operator adds Hub ids the workers "
                                           "have cached), never a local directory.")]
Task = Annotated[str, typer.Option(help="classification or causal-lm.")]
Rank = Annotated[int, typer.Option(help="VeRA rank.")]
TargetModules = Annotated[str | None, typer.Option(
    help="Comma-separated module names, or a regex if it starts with '^'. Default: by model type (PEFT's), except "
         "the demo's MiniLM (by name or folder): query, value and dense.")]
Seed = Annotated[int, typer.Option(help="Training seed (data order, head init, dropout).")]
ProjectionSeed = Annotated[int, typer.Option(help="projection_prng_key: the seed of A and B.")]
Generator = Annotated[str, typer.Option(help="Projection generator.")]
DInitial = Annotated[float, typer.Option(help="Initial value of d.")]
Epochs = Annotated[float, typer.Option(help="Epochs.")]
MaxSteps = Annotated[int | None, typer.Option(help="Optimizer steps; overrides --epochs.")]
BatchSize = Annotated[int, typer.Option(help="Batch size.")]
Lr = Annotated[float, typer.Option(help="Learning rate of d and b.")]
HeadLr = Annotated[float, typer.Option(help="Learning rate of the task head.")]
TextColumn = Annotated[str, typer.Option(help="Column holding the text.")]
LabelColumn = Annotated[str, typer.Option(help="Column holding the label (classification).")]
SaveProjection = Annotated[bool, typer.Option(help="Store A and B in the adapter (PEFT-loadable).")]
Schedule = Annotated[str, typer.Option(help="linear, cosine or constant.")]
WarmupRatio = Annotated[float, typer.Option(help="Warmup fraction.")]
GradAccum = Annotated[int, typer.Option(help="Gradient accumulation steps.")]
MaxGradNorm = Annotated[float, typer.Option(help="Gradient clipping norm (0: off).")]
EvalEvery = Annotated[int | None, typer.Option(help="Evaluate every N steps (default: each epoch).")]
LogEvery = Annotated[int | None, typer.Option(
    help="Record the mean loss every N steps (default 10): metrics.json's train_loss and a job's log. A run records "
    "at most 10,000: beyond, the interval widens.")]
Patience = Annotated[int | None, typer.Option(help="Early stopping patience, in evaluations.")]
MetricForBest = Annotated[str | None, typer.Option(
    help="The evaluation metric whose best value picks the weights kept, and that --patience watches: accuracy or "
    "loss for classification (default accuracy, a tie going to the lower loss), loss or perplexity for causal-lm "
    "(default loss). Lower is better for loss and perplexity.")]
KeepBest = Annotated[bool, typer.Option(
    "--keep-best/--keep-last", help="Keep the weights of the best evaluation (by --metric-for-best) or of the last "
    "step.")]
MaxLength = Annotated[int, typer.Option(help="Max tokens per example.")]
MaxTrainExamples = Annotated[int | None, typer.Option(
    min=1, help="Train on at most this many examples (the first of the training split; default: all): a quick run "
    "of a recipe before the real one.")]
MaxEvalExamples = Annotated[int | None, typer.Option(
    min=1, help="Evaluate on at most this many examples of the eval split, and of the test split (default: all).")]
SaveEvery = Annotated[int | None, typer.Option(help="Resumable checkpoint every N steps.")]
Precision = Annotated[str, typer.Option(help="auto, fp32, bf16 or fp16 (fp16 needs CUDA; bf16 runs on the CPU too).")]

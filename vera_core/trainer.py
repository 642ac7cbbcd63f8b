"""A reusable training loop for VeRA models (minGPT-style: an object with callbacks, not a script).

AdamW with separate learning rates for the VeRA vectors and for heads/biases (the paper tunes them separately),
warmup then linear or cosine decay, gradient clipping and accumulation, evaluation every N steps, early stopping
on a metric, mixed precision on CUDA, determinism under a seed, and checkpoints that resume exactly. A loss or
gradient that turns NaN or infinite stops training before the step is applied, with NonFiniteLossError naming the
step and the first layer where it appeared (vera_core/numerics.py).

A resumed run trains to the total that its own arguments ask for (``max_steps``, or ``epochs`` times the steps per
epoch), not to the total of the run that wrote the checkpoint, so a run can be extended: the steps that remain
follow the learning-rate schedule of the new total (warmup and decay are recomputed for it; with the ``constant``
schedule and no warmup, 6 steps resumed to 12 equal 12 straight steps).

Under torchrun the same loop trains in several processes with DistributedDataParallel (vera_core/distributed.py
says what is synchronised): ``batch_size`` is per process, only rank 0 writes checkpoints, and a checkpoint resumes
with the number of processes that wrote it.
"""

from __future__ import annotations

import contextlib
import json
import math
import numbers
import shutil
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file

from vera_core import distributed, numerics
from vera_core import training_checkpoints as checkpoints
from vera_core.callbacks import TrainerCallback
from vera_core.checkpoint import CONFIG_NAME, check_same_projection, read_adapter, save_adapter
from vera_core.data import Example, Task
from vera_core.distributed import DistributedMode
from vera_core.errors import VeraConfigError, finite_number
from vera_core.model import VeraModel

Schedule = Literal["linear", "cosine", "constant"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]


@dataclass
class TrainingArguments:
    """Training settings; each default is what the offline demo uses and a sensible start elsewhere."""

    # Learning rate of the d and b vectors. VeRA needs larger rates than LoRA (the paper: 4e-3 to 1e-2).
    lr: float = 1e-2
    # Learning rate of modules_to_save (task heads) and trainable biases; the paper tunes it separately.
    head_lr: float = 1e-3
    weight_decay: float = 0.0
    head_weight_decay: float = 0.01
    epochs: float = 1.0
    # If set, the number of optimizer steps, overriding ``epochs``.
    max_steps: int | None = None
    # Per process: with several processes one step sees batch_size x gradient_accumulation_steps x world size.
    batch_size: int = 32
    eval_batch_size: int = 128
    gradient_accumulation_steps: int = 1
    # Warmup as a fraction of all optimizer steps, then ``schedule`` decays to zero.
    warmup_ratio: float = 0.06
    schedule: Schedule = "linear"
    max_grad_norm: float | None = 1.0
    # Evaluate every N optimizer steps (and at the end); None: at the end of each epoch only.
    eval_every: int | None = None
    metric_for_best: str = "loss"
    greater_is_better: bool = False
    # Stop after this many evaluations without improvement; None: never stop early.
    early_stopping_patience: int | None = None
    load_best_at_end: bool = True
    # Checkpoints (resumable) every N optimizer steps under output_dir/checkpoints; None: none.
    save_every: int | None = None
    save_total_limit: int = 2
    output_dir: str | None = None
    seed: int = 0
    # "auto": bf16 autocast on CUDA when supported, fp32 on CPU.
    precision: Precision = "auto"
    # None: the GPU numbered LOCAL_RANK (torchrun sets it; 0 for one process) if there is one, else the CPU.
    device: str | None = None
    # Record the loss every N optimizer steps: the mean over those steps, in ``TrainerState.loss_history`` (and so
    # in checkpoints, metrics.json and a job's log), and ``on_log`` for callbacks; the last step always. A run
    # records at most MAX_LOSS_RECORDS: past total_steps / log_every of them, the interval widens.
    log_every: int = 10
    # "auto": DDP when torchrun started several processes (WORLD_SIZE > 1), else this process alone; "ddp": refuse
    # to train alone; "off": this process alone whatever the environment. "fsdp" is refused (vera_core.distributed).
    distributed: DistributedMode = "auto"

    def _check_counts(self) -> None:
        """log_every and eval_every: whole steps (a 0 would divide by zero mid-training); seed: what torch takes."""
        for name in ("log_every", "eval_every"):
            value = getattr(self, name)
            if (value is not None or name == "log_every") and (
                    isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise VeraConfigError(f"{name} must be a positive number of optimizer steps"
                                      + (" or None (each epoch)" if name == "eval_every" else "")
                                      + f", got {value!r}.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise VeraConfigError(f"seed must be an integer in [0, 2**63), got {self.seed!r}.")

    def _check_types(self) -> None:
        """Numbers where numbers belong, whole ones where counts do, true/false for switches and text for names: a
        job's spec is JSON, where `"epochs": true` counted as 1 and `"max_grad_norm": -1` turned clipping into
        nonsense (an outsider's findings, session 33)."""
        reals = ("lr", "head_lr", "weight_decay", "head_weight_decay", "epochs", "warmup_ratio", "max_grad_norm")
        counts = ("max_steps", "batch_size", "eval_batch_size", "gradient_accumulation_steps",
                  "early_stopping_patience", "save_total_limit")
        optional = ("max_grad_norm", "max_steps", "early_stopping_patience")
        for name in reals + counts:
            value = getattr(self, name)
            if value is None and name in optional:
                continue
            if (finite_number(value) is None) if name in reals else (isinstance(value, bool)
                                                                or not isinstance(value, numbers.Integral)):
                kind = "a finite number" if name in reals else "a whole number"
                raise VeraConfigError(f"{name} must be {kind}{' or None' if name in optional else ''}, got "
                                      f"{value!r:.100}.")
        for name in ("greater_is_better", "load_best_at_end"):
            if not isinstance(getattr(self, name), bool):
                raise VeraConfigError(f"{name} must be true or false, got {getattr(self, name)!r:.100}.")
        if not isinstance(self.metric_for_best, str):
            raise VeraConfigError(f"metric_for_best must be a metric's name, got {self.metric_for_best!r:.100}.")

    def _check_ranges(self) -> None:
        for name in ("weight_decay", "head_weight_decay"):
            if getattr(self, name) < 0:
                raise VeraConfigError(f"{name} must be 0 or more, got {getattr(self, name)!r}.")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise VeraConfigError(f"max_grad_norm must be positive (the gradients' largest norm) or None (no "
                                  f"clipping), got {self.max_grad_norm!r}.")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise VeraConfigError(f"early_stopping_patience must be at least 1 evaluation or None, got "
                                  f"{self.early_stopping_patience!r}.")

    @property
    def best_key(self) -> str:
        """The evaluation metric metric_for_best names, as evaluations record it (``eval_accuracy``)."""
        return self.metric_for_best if self.metric_for_best.startswith("eval_") else f"eval_{self.metric_for_best}"

    def __post_init__(self) -> None:
        self._check_types()
        self._check_ranges()
        for name in ("lr", "head_lr", "batch_size", "eval_batch_size", "gradient_accumulation_steps", "epochs"):
            if not getattr(self, name) > 0:
                raise VeraConfigError(f"{name} must be positive, got {getattr(self, name)!r}.")
        if self.max_steps is not None and self.max_steps <= 0:
            raise VeraConfigError(f"max_steps must be positive or None, got {self.max_steps!r}.")
        self._check_counts()
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise VeraConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio!r}.")
        if self.schedule not in ("linear", "cosine", "constant"):
            raise VeraConfigError(f"schedule must be linear, cosine or constant, got {self.schedule!r}.")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise VeraConfigError(f"precision must be auto, fp32, bf16 or fp16, got {self.precision!r}.")
        if self.save_every is not None and (isinstance(self.save_every, bool) or not isinstance(self.save_every, int)
                                            or self.save_every <= 0):
            raise VeraConfigError(f"save_every must be a positive number of optimizer steps or None (no "
                                  f"checkpoints), got {self.save_every!r}.")
        if self.save_every is not None and self.output_dir is None:
            raise VeraConfigError("save_every needs output_dir, where the checkpoints go.")
        if not self.save_total_limit >= 1:
            raise VeraConfigError(f"save_total_limit must be at least 1 (the checkpoint a resume needs), got "
                                  f"{self.save_total_limit!r}.")
        distributed.check_mode(self.distributed)


#: Training arguments a resume may change, with a warning (the rest either cannot matter to what was trained, such
#: as where checkpoints go, or are refused: Trainer._check_same_run).
_RESUME_MAY_CHANGE = ("lr", "head_lr", "weight_decay", "head_weight_decay", "warmup_ratio", "schedule",
                      "max_grad_norm", "gradient_accumulation_steps", "precision")


#: The most entries a run's loss history holds (TrainerState.loss_history: a checkpoint's, metrics.json's train_loss,
#: a job's log of steps): every log_every-th step while that is within it, every total_steps / MAX_LOSS_RECORDS-th
#: beyond (log_every=1 over ten million steps held ten million in memory and in every checkpoint).
MAX_LOSS_RECORDS = 10_000
#: The most evaluations a run may ask for (eval_every, or each epoch): more is refused before training starts.
MAX_EVALUATIONS = 10_000


def steps_per_epoch(examples: int, batch_size: int, accumulation: int = 1, world: int = 1) -> int:
    """The optimizer steps of one pass over ``examples`` shared by ``world`` processes of ``batch_size`` examples a
    batch, ``accumulation`` batches a step (at least 1): the trainer's count, and a job's at submission."""
    return max(1, math.ceil(math.ceil(examples / world) / batch_size) // accumulation)


def too_many_evaluations(total_steps: int, eval_every: int | None, steps_per_epoch: int, *,
                         option: str = "vera train --eval-every N") -> str | None:
    """Why a run of ``total_steps`` evaluating every ``eval_every`` steps (None: each epoch of ``steps_per_epoch``)
    is refused, or None: every eval_every steps and one at the end when the last step is not one of them, or one
    each epoch, is at most MAX_EVALUATIONS. The trainer refuses such a run before it starts; a job at submission.
    ``option``: how the caller sets eval_every, in the message."""
    evaluations = math.ceil(total_steps / (eval_every or steps_per_epoch))
    if evaluations <= MAX_EVALUATIONS:
        return None
    every = f"eval_every={eval_every}" if eval_every else "an evaluation each epoch"
    return (f"{every} over {total_steps:,} steps would evaluate {evaluations:,} times, more than the "
            f"{MAX_EVALUATIONS:,} a run may (each is a pass over the eval data, and is kept in every checkpoint): set "
            f"eval_every to {-(-total_steps // MAX_EVALUATIONS):,} steps or more ({option}).")


@dataclass
class TrainerState:
    """What the loop knows; callbacks read it and may set ``should_stop``. ``loss_history``: (step, the mean loss
    of the steps since the entry before), every ``log_interval`` steps and the last; ``pending_loss`` and
    ``pending_steps``: the sum and count of the steps since the last entry."""

    step: int = 0
    total_steps: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    steps_per_epoch: int = 0
    best_metric: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0
    loss_history: list[tuple[int, float]] = field(default_factory=list)
    pending_loss: float = 0.0
    pending_steps: int = 0
    eval_history: list[dict[str, float]] = field(default_factory=list)
    elapsed_s: float = 0.0
    should_stop: bool = False
    stop_reason: str | None = None

    @property
    def eta_s(self) -> float | None:
        if self.step == 0:
            return None
        return self.elapsed_s / self.step * (self.total_steps - self.step)


@dataclass
class TrainResult:
    """``state.step`` of ``state.total_steps`` steps ran in all; ``resumed_from_step`` of them in earlier runs."""

    state: TrainerState
    final_metrics: dict[str, float]
    wall_time_s: float
    resumed_from_step: int | None = None


def _lr_lambda(schedule: Schedule, warmup: int, total: int) -> Any:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 1.0 - progress if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


class Trainer:
    """Trains whatever requires grad in ``model`` (a VeraModel, or any module such as a PEFT model, for comparisons).

    Parameters named ``*vera_lambda_*`` or ``*lora_*`` use ``lr``; all other trainable ones (heads, biases)
    use ``head_lr``.

    Under torchrun every process builds the same model and a Trainer with the same arguments: the model goes into
    DistributedDataParallel (``wrapped``), each process trains on its shard of every batch, and callbacks run in
    every process they are given to (a progress bar belongs on rank 0 only: ``trainer.world.is_main``).
    """

    def __init__(
        self, model: torch.nn.Module, task: Task, args: TrainingArguments, *, train_data: Sequence[Example],
        eval_data: Sequence[Example] | None = None, callbacks: Sequence[TrainerCallback] = (),
    ) -> None:
        if not train_data:
            raise VeraConfigError("train_data is empty; a trainer needs at least one example.")
        distributed.refuse_sharded(model, "vera_core's Trainer")
        self.model, self.task, self.args = model, task, args
        self.train_data, self.eval_data = list(train_data), list(eval_data or [])
        self.callbacks = list(callbacks)
        self.world, self.device = distributed.setup(args.distributed, args.device)
        self.model.to(self.device)
        self.autocast_dtype = self._autocast_dtype()
        self.state = TrainerState()
        self.optimizer = self._make_optimizer()
        # The module the training forward goes through: DDP around the model, or the model itself.
        self.wrapped = distributed.wrap(self.model, self.world, self.device)
        if isinstance(self.model, VeraModel):  # after wrapping: a projection broadcast by DDP would hide a mismatch
            distributed.check_projection(self.world, self.model.projection_fingerprint())
        self.state.steps_per_epoch = steps_per_epoch(len(self.train_data), args.batch_size,
                                                     args.gradient_accumulation_steps, self.world.size)
        self.state.total_steps = args.max_steps or math.ceil(self.state.steps_per_epoch * args.epochs)
        #: Steps between loss records: log_every, or wider to keep a run within MAX_LOSS_RECORDS.
        self.log_interval = max(args.log_every, -(-self.state.total_steps // MAX_LOSS_RECORDS))
        self._check_evaluations()
        warmup = int(args.warmup_ratio * self.state.total_steps)
        self._lr_factor = _lr_lambda(args.schedule, warmup, self.state.total_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.autocast_dtype == torch.float16)
        self._best_state: dict[str, torch.Tensor] | None = None
        self.resumed_from_step: int | None = None

    def _check_evaluations(self) -> None:
        """VeraConfigError (after releasing what __init__ started) for a run that would evaluate more than
        MAX_EVALUATIONS times: each is a pass over the eval data and an entry of every checkpoint's history."""
        state = self.state
        if self.eval_data and (problem := too_many_evaluations(state.total_steps, self.args.eval_every,
                                                               state.steps_per_epoch)) is not None:
            self.close()
            raise VeraConfigError(problem)

    def close(self) -> None:
        """Release DDP and the process group that this trainer started (``vera_core.distributed.shutdown``); every
        process calls it once training and evaluation are over. Nothing to do for a single process."""
        self.wrapped = self.model  # DDP goes before the process group (see distributed.shutdown)
        distributed.shutdown(self.world)

    def _autocast_dtype(self) -> torch.dtype | None:
        precision = self.args.precision
        if precision == "fp32" or (precision == "auto" and self.device.type != "cuda"):
            return None
        if precision == "bf16" and self.device.type == "cpu":  # CPU autocast runs bf16, as transformers' Trainer
            return torch.bfloat16  # does (it was refused: a researcher's walk, session 48); no grad scaler needed
        if self.device.type != "cuda":
            raise VeraConfigError(f"precision={precision!r} needs a CUDA device; use bf16, fp32 or auto on "
                                  f"{self.device}." if precision == "fp16" and self.device.type == "cpu" else
                                  f"precision={precision!r} needs a CUDA device; use fp32 or auto on {self.device}.")
        if precision == "fp16":
            return torch.float16
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def trainable(self) -> dict[str, torch.nn.Parameter]:
        return {n: p for n, p in self.model.named_parameters() if p.requires_grad}

    def _snapshot(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in self.trainable().items()}

    @torch.no_grad()
    def _restore(self, tensors: dict[str, torch.Tensor]) -> None:
        params = self.trainable()
        if set(tensors) != set(params):
            raise VeraConfigError("The checkpoint's trainable tensors do not match this model's; "
                                  "resume with the same model and VeRA settings it was saved with.")
        for name, value in tensors.items():
            if value.shape != params[name].shape:
                raise VeraConfigError(f"The checkpoint's {name} has shape {tuple(value.shape)} and this model's "
                                      f"{tuple(params[name].shape)}; resume with the same model and VeRA settings "
                                      "it was saved with.")
        for name, value in tensors.items():
            params[name].copy_(value)

    def _make_optimizer(self) -> torch.optim.Optimizer:
        vectors: list[torch.nn.Parameter] = []
        others: list[torch.nn.Parameter] = []
        for name, p in self.trainable().items():
            (vectors if "vera_lambda_" in name or "lora_" in name else others).append(p)
        if not vectors and not others:
            raise VeraConfigError(  # (and nothing more was said: a researcher's walk, session 48)
                "The model has no parameter that requires grad; nothing to train. A model from "
                "vera_core.load_adapter is frozen unless loaded with is_trainable=True, and merge_and_unload() or "
                "unload() returns the base model without its adapter: train the VeraModel itself.")
        groups = [{"params": vectors, "lr": self.args.lr, "weight_decay": self.args.weight_decay}] if vectors else []
        if others:
            groups.append({"params": others, "lr": self.args.head_lr, "weight_decay": self.args.head_weight_decay})
        return torch.optim.AdamW(groups)

    # ---- data ------------------------------------------------------------------------------------------------
    def _epoch_order(self, epoch: int) -> list[int]:
        """This process's share of the epoch's shuffled order (all of it for a single process)."""
        gen = torch.Generator().manual_seed(self.args.seed * 1_000_003 + epoch)
        return distributed.shard(torch.randperm(len(self.train_data), generator=gen).tolist(), self.world)

    def _batches(self, start_epoch: int, start_batch: int) -> Iterator[tuple[int, int, dict[str, torch.Tensor]]]:
        size = self.args.batch_size
        epoch = start_epoch
        while True:
            order = self._epoch_order(epoch)
            for b in range(start_batch, math.ceil(len(order) / size)):
                examples = [self.train_data[i] for i in order[b * size:(b + 1) * size]]
                yield epoch, b, self.task.collate(examples)
            epoch, start_batch = epoch + 1, 0

    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device) for k, v in batch.items()}

    # ---- loop ------------------------------------------------------------------------------------------------
    def train(self, *, resume_from: str | Path | None = None) -> TrainResult:
        """Train to the end (or an early stop, or a callback's stop); deterministic for a given seed."""
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # the library never seeds the caller's global RNG
            torch.manual_seed(self.args.seed)
            if resume_from is not None:
                self._resume(Path(resume_from))
            return self._loop()

    def _loop(self) -> TrainResult:
        args, state = self.args, self.state
        started = time.perf_counter() - state.elapsed_s
        self._emit("on_train_begin")
        self.model.train()
        accum, running, micro = args.gradient_accumulation_steps, 0.0, 0
        batches = self._batches(state.epoch, state.batch_in_epoch)
        step_batches: list[dict[str, torch.Tensor]] = []  # the step's micro-batches, to find a NaN's origin
        while state.step < state.total_steps and not state.should_stop:
            epoch, index, batch = next(batches)
            if epoch != state.epoch and self._epoch_end(epoch):
                break
            micro += 1
            step_batches.append(self._to_device(batch))
            running += self._forward_backward(step_batches[-1], accum, sync=micro % accum == 0)
            state.batch_in_epoch = index + 1
            if micro % accum:
                continue
            loss = distributed.mean(self.world, running / accum)
            self._optimizer_step(loss, step_batches)
            self._step_end(loss, started)
            running, step_batches = 0.0, []
        if state.pending_steps:  # stopped between records: the steps since the last one
            self._log()
        if state.stop_reason is None and not (args.eval_every and state.step % args.eval_every == 0):
            self._evaluate_and_track()
        if args.load_best_at_end and self._best_state is not None:
            self._restore(self._best_state)
        final = self.evaluate() if self.eval_data else {}
        state.elapsed_s = time.perf_counter() - started
        self._emit("on_train_end")
        return TrainResult(state, final, state.elapsed_s, self.resumed_from_step)

    def _epoch_end(self, epoch: int) -> bool:
        """A new epoch begins: evaluate if evaluations are per epoch; whether to stop."""
        self.state.epoch = epoch
        if self.args.eval_every is None:
            self._evaluate_and_track()
            self._sync_stop()
        return self.state.should_stop

    def _step_end(self, loss: float, started: float) -> None:
        """Record an optimizer step, tell the callbacks, evaluate and save when due; ``loss``: the step's mean."""
        args, state = self.args, self.state
        state.step += 1
        state.elapsed_s = time.perf_counter() - started
        state.pending_loss, state.pending_steps = state.pending_loss + loss, state.pending_steps + 1
        self._emit("on_step_end", {"loss": loss, "lr": float(self.scheduler.get_last_lr()[0]),
                                   "epoch": self._epoch_progress()})
        if state.step % self.log_interval == 0 or state.step == state.total_steps:
            self._log()
        if args.eval_every and state.step % args.eval_every == 0:
            self._evaluate_and_track()
        if args.save_every and state.step % args.save_every == 0:
            self.save_checkpoint()
        self._sync_stop()

    def _epoch_progress(self) -> float:
        state = self.state
        return state.epoch + state.batch_in_epoch / max(1, state.steps_per_epoch)

    def _log(self) -> None:
        """Record the mean loss of the steps since the last record, and tell the callbacks (``on_log``)."""
        state = self.state
        loss, steps = state.pending_loss / state.pending_steps, state.pending_steps
        state.loss_history.append((state.step, loss))
        state.pending_loss, state.pending_steps = 0.0, 0
        self._emit("on_log", {"loss": loss, "lr": float(self.scheduler.get_last_lr()[0]),
                              "epoch": self._epoch_progress(), "steps": steps})

    def _sync_stop(self) -> None:
        """A stop asked for in any process (a callback's) stops all of them after the same step."""
        state = self.state
        state.should_stop, state.stop_reason = distributed.any_stop(self.world, state.should_stop, state.stop_reason)

    def _forward_backward(self, batch: dict[str, torch.Tensor], accum: int, *, sync: bool) -> float:
        """Forward and backward of one micro-batch; ``sync``: the last of a step, whose backward DDP all-reduces."""
        with contextlib.ExitStack() as stack:
            if not sync:
                stack.enter_context(distributed.accumulating(self.wrapped))
            with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                                enabled=self.autocast_dtype is not None):
                loss = self.wrapped(**batch).loss
            self.scaler.scale(loss / accum).backward()
        return float(loss.detach())

    def _optimizer_step(self, loss: float, batches: Sequence[dict[str, torch.Tensor]]) -> None:
        """Clip and apply the step, unless its loss or gradients are not finite: then stop with NonFiniteLossError.
        (With fp16 the grad scaler skips steps whose gradients overflow, as it should; only the loss is checked.)"""
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        if self.args.max_grad_norm:
            self.scaler.unscale_(self.optimizer)
        norm = 0.0 if self.scaler.is_enabled() and not self.args.max_grad_norm else numerics.grad_norm(params)
        if not math.isfinite(loss) or not (self.scaler.is_enabled() or math.isfinite(norm)):
            self._stop_non_finite(loss, norm, batches)
        if self.args.max_grad_norm:  # with the norm computed above (in float64), as clip_grad_norm_ would
            torch.nn.utils.clip_grads_with_norm_(params, self.args.max_grad_norm, torch.tensor(norm))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()

    def _stop_non_finite(self, loss: float, norm: float, batches: Sequence[dict[str, torch.Tensor]]) -> None:
        """Raise NonFiniteLossError naming the step and the first layer with a NaN or inf. Loss and gradients are
        the same in every process (all-reduced), so every process gets here at the same step and takes part in
        gathering where each one's batches first went wrong."""
        autocast = {"device_type": self.device.type, "dtype": self.autocast_dtype or torch.float32,
                    "enabled": self.autocast_dtype is not None}
        origin = numerics.first_non_finite_output(self.model, batches, autocast)
        args, state = self.args, self.state
        causes = [f"a learning rate too high (lr={args.lr:g}, head_lr={args.head_lr:g}; VeRA's vectors train well "
                  "at 4e-3 to 1e-2)"]
        if not args.max_grad_norm:  # only a cause when it is off (a guide's walk: named while clipping was on)
            causes.append(f"no gradient clipping (max_grad_norm={args.max_grad_norm}: set it, e.g. 1.0)")
        if self.autocast_dtype is torch.float16:
            causes.append(f"fp16 overflow (precision={args.precision}: use bf16 or fp32)")
        causes.append(f"bad values in the data of this step (epoch {state.epoch}, batch {state.batch_in_epoch})")
        hint = f"Usual causes: {', '.join(causes[:-1])}, or {causes[-1]}."
        raise numerics.NonFiniteLossError(numerics.describe(
            step=state.step + 1, total=state.total_steps, loss=loss, norm=norm,
            origins=distributed.gather(self.world, origin), parameters=numerics.non_finite_parameters(self.model),
            gradients=numerics.non_finite_gradients(self.model), largest=numerics.largest_trainable(self.model),
            hint=hint))

    @torch.no_grad()
    def evaluate(self, data: Sequence[Example] | None = None) -> dict[str, float]:
        """Task metrics (loss, accuracy or perplexity) on ``data`` (default: the eval set).

        With several processes each evaluates its share and every process gets the metrics of all of ``data`` (so
        every process must call this)."""
        examples = list(self.eval_data if data is None else data)
        if not examples:
            return {}
        examples = examples[self.world.rank::self.world.size]
        was_training = self.model.training
        self.model.eval()
        sums: dict[str, float] = {}
        for i in range(0, len(examples), self.args.eval_batch_size):
            batch = self._to_device(self.task.collate(examples[i:i + self.args.eval_batch_size]))
            with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                                enabled=self.autocast_dtype is not None):
                output = self.model(**batch)
            for key, value in self.task.batch_stats(output, batch).items():
                sums[key] = sums.get(key, 0.0) + value
        self.model.train(was_training)
        return self.task.finalize(distributed.sum_counts(self.world, sums))

    def _evaluate_and_track(self) -> None:
        if not self.eval_data:
            return
        state, args = self.state, self.args
        metrics = {"step": float(state.step), **{f"eval_{k}": v for k, v in self.evaluate().items()}}
        state.eval_history.append(metrics)
        key = args.best_key
        if key not in metrics:
            raise VeraConfigError(f"metric_for_best={args.metric_for_best!r} is not among {sorted(metrics)}.")
        value = metrics[key]
        better = state.best_metric is None or (
            value > state.best_metric if args.greater_is_better else value < state.best_metric)
        if not better and value == state.best_metric and key != "eval_loss" and "eval_loss" in metrics:
            # a tie goes to the lower loss: accuracy stops moving on a small eval set while the loss still falls
            # (the first of a tie kept step 10 of 50, its eval loss 0.43 where the last had 2.5e-05: a newcomer's
            # walk, session 40)
            best = next((e for e in state.eval_history if e["step"] == state.best_step), {})
            better = metrics["eval_loss"] < best.get("eval_loss", float("-inf"))
        if better:
            state.best_metric, state.best_step, state.evals_without_improvement = value, state.step, 0
            self._best_state = self._snapshot()
        else:
            state.evals_without_improvement += 1
            if args.early_stopping_patience is not None and \
                    state.evals_without_improvement >= args.early_stopping_patience:
                state.should_stop, state.stop_reason = True, f"early stopping: no better {key} in " \
                    f"{args.early_stopping_patience} evaluations"
        self._emit("on_evaluate", metrics)

    def _emit(self, event: str, data: dict[str, float] | None = None) -> None:
        for callback in self.callbacks:
            getattr(callback, event)(self, self.state, data or {})

    # ---- checkpoints ------------------------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        """Trainable tensors, optimizer, scheduler, RNG and loop state, all without pickle; for a VeraModel also
        the adapter in PEFT's format, so a checkpoint can be inspected or published as it is.

        Written into a hidden folder, flushed to disk, sealed with a manifest of its files' hashes and renamed when
        complete (vera_core.training_checkpoints), so a process killed while writing, or a crash that loses the last
        writes, leaves the previous checkpoints as they were, and a resume never loads a torn one. With several
        processes every one must call this (each one's RNG state is kept) and rank 0 alone writes."""
        if self.args.output_dir is None:
            raise VeraConfigError("save_checkpoint needs TrainingArguments.output_dir.")
        root = Path(self.args.output_dir) / "checkpoints"
        path = root / checkpoints.folder_name(self.state.step)
        rng_states = distributed.gather(self.world, self._rng_states())
        if self.world.is_main:
            partial = root / f".{path.name}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
            self._write_checkpoint(partial, rng_states)
            checkpoints.seal(partial)
            checkpoints.publish(partial, path)
            for old in sorted(root.glob(f"{checkpoints.PREFIX}*"))[:-self.args.save_total_limit]:
                shutil.rmtree(old)
        self._emit("on_save", {"step": float(self.state.step)})
        return path

    def _rng_states(self) -> dict[str, torch.Tensor]:
        states = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            states["cuda"] = torch.cuda.get_rng_state(self.device)
        return states

    def _write_checkpoint(self, path: Path, rng_states: list[dict[str, torch.Tensor]]) -> None:
        if isinstance(self.model, VeraModel):
            save_adapter(self.model, path, save_projection=False)
        save_file({n: t.contiguous() for n, t in self._snapshot().items()}, str(path / "trainable.safetensors"))
        tensors, groups = _flatten_optimizer(self.optimizer)
        for rank, states in enumerate(rng_states):  # rank 0's as rng.cpu, as a single process writes it
            tensors.update({f"rng.{device}{_rank_suffix(rank)}": state for device, state in states.items()})
        save_file(tensors, str(path / "optimizer.safetensors"))
        state = {k: v for k, v in asdict(self.state).items() if k not in ("should_stop", "stop_reason")}
        path.joinpath(checkpoints.STATE).write_text(json.dumps({
            "state": state, "param_groups": groups, "scheduler": self.scheduler.state_dict()["last_epoch"],
            "args": asdict(self.args), "world_size": self.world.size,
        }, indent=1), encoding="utf-8")
        if self._best_state is not None:
            save_file({k: v.contiguous() for k, v in self._best_state.items()}, str(path / "best.safetensors"))

    def _resume(self, path: Path) -> None:
        path = _intact_checkpoint(path)
        saved = json.loads(path.joinpath(checkpoints.STATE).read_text(encoding="utf-8"))
        self._check_resumable(path, saved)
        step = saved["state"]["step"]
        self._restore(load_file(str(path / "trainable.safetensors"), device=str(self.device)))
        tensors = load_file(str(path / "optimizer.safetensors"))
        _load_optimizer(self.optimizer, tensors, saved["param_groups"])
        # The remaining steps follow this run's schedule, whose total may differ from the checkpoint's.
        self.scheduler.last_epoch = saved["scheduler"]
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * self._lr_factor(self.scheduler.last_epoch)
        self.scheduler._last_lr = [g["lr"] for g in self.optimizer.param_groups]
        suffix = _rank_suffix(self.world.rank)
        torch.set_rng_state(tensors[f"rng.cpu{suffix}"])
        if f"rng.cuda{suffix}" in tensors and self.device.type == "cuda":
            torch.cuda.set_rng_state(tensors[f"rng.cuda{suffix}"], self.device)
        for key, value in saved["state"].items():
            if key not in ("total_steps", "steps_per_epoch"):  # these come from this run's arguments and data
                setattr(self.state, key, [tuple(v) for v in value] if key == "loss_history" else value)
        self.resumed_from_step = step
        self._keep_records_within_bound()
        if self.args.save_every is None and self.args.output_dir is not None and saved["args"].get("save_every"):
            # a resumed run goes on checkpointing as the run it continues did, unless told otherwise
            self.args = replace(self.args, save_every=int(saved["args"]["save_every"]))
        if path.joinpath("best.safetensors").exists():
            self._best_state = load_file(str(path / "best.safetensors"), device=str(self.device))

    def _keep_records_within_bound(self) -> None:
        """After a resume, the loss records the run holds and those it will add stay within MAX_LOSS_RECORDS: the
        checkpoint's are merged in pairs (each pair's mean weighted by the steps it covers) down to half of it when
        they hold more, and the rest of the run records at a wider interval when the room left asks for one. A
        checkpoint of a shorter run, or of a release that recorded every step, held more than this run's bound
        allows (a re-check's finding). A resume within the bound records what the run straight through would."""
        state = self.state
        while len(state.loss_history) > MAX_LOSS_RECORDS // 2:
            state.loss_history = _merged_pairs(state.loss_history)
        every, total, step = self.log_interval, state.total_steps, state.step
        ahead = total // every - step // every + (1 if total % every else 0)  # (the last step's record)
        if len(state.loss_history) + ahead > MAX_LOSS_RECORDS:
            room = max(MAX_LOSS_RECORDS - len(state.loss_history) - 1, 1)
            self.log_interval = max(every, -(-(total - step) // room))

    def _check_same_run(self, path: Path, saved_args: dict[str, Any]) -> None:
        """What a resume must not change, refused: the projection the vectors were trained against (seed,
        generator, rank, and through its fingerprint the layer shapes) and what the position in the epoch counts
        (the batch order: batch size and seed). Other training arguments that differ are said in a warning."""
        again = "; resume with the settings it was saved with, or start over without resuming (no --resume)."
        if isinstance(self.model, VeraModel) and path.joinpath(CONFIG_NAME).is_file():
            check_same_projection(read_adapter(path), self.model, f"The checkpoint {path}", again)
        for name in ("batch_size", "seed"):
            if name in saved_args and saved_args[name] != getattr(self.args, name):
                raise VeraConfigError(f"The checkpoint {path} was trained with {name}={saved_args[name]!r} and this "
                                      f"run has {getattr(self.args, name)!r}: its place in the epoch counts batches "
                                      f"of that order{again}")
        changed = [f"{name} {saved_args[name]!r} -> {getattr(self.args, name)!r}" for name in _RESUME_MAY_CHANGE
                   if name in saved_args and saved_args[name] != getattr(self.args, name)]
        if changed:
            warnings.warn(f"Resuming {path} with other training arguments than it was saved with: "
                          f"{', '.join(changed)}.", stacklevel=3)

    def _check_resumable(self, path: Path, saved: dict[str, Any]) -> None:
        step, total = saved["state"]["step"], self.state.total_steps
        if step > total:
            asked = (f"max_steps={self.args.max_steps}" if self.args.max_steps else
                     f"epochs={self.args.epochs} x {self.state.steps_per_epoch} steps per epoch")
            raise VeraConfigError(
                f"The checkpoint {path} is at step {step}, but these arguments ask for {total} steps in all "
                f"({asked}): pass max_steps >= {step} (vera train --max-steps {step} or more) to continue it, or "
                "start over without resuming (no --resume)."
            )
        self._check_same_run(path, saved["args"])
        processes = saved.get("world_size", 1)
        if processes != self.world.size:
            raise VeraConfigError(
                f"The checkpoint {path} was written by a run of {processes} process(es) and this run has "
                f"{self.world.size}: its position in the epoch counts batches of that many processes. Resume it "
                f"with {processes} (vera train --nproc {processes}), or start over without resuming (no --resume)."
            )


def _intact_checkpoint(path: Path) -> Path:
    """The checkpoint to resume from: ``path`` itself if it is a ``step-N`` folder (refused if it is torn), else the
    newest intact one under ``path/checkpoints`` (or ``path``, if it is the checkpoints folder), with a warning
    naming the newer ones passed over."""
    if path.name.startswith(checkpoints.PREFIX):
        reason = checkpoints.problem(path)
        if reason is not None:
            raise VeraConfigError(f"The checkpoint {path} cannot be resumed from: {reason}. Resume from its run "
                                  f"folder ({path.parent.parent}), which takes the newest intact checkpoint.")
        return path
    root = path if path.name == "checkpoints" else path / "checkpoints"
    found, skipped = checkpoints.latest(root)
    if found is None:
        torn = f" The checkpoints there cannot be loaded: {'; '.join(skipped)}." if skipped else ""
        raise VeraConfigError(f"No intact checkpoint under {root}; expected checkpoints/step-N folders.{torn} "
                              "Start over without resuming.")
    if skipped:
        warnings.warn(f"Resuming from {found.path.name}, the newest intact checkpoint under {root}; passed over: "
                      f"{'; '.join(skipped)}.", CheckpointSkippedWarning, stacklevel=4)
    return found.path


class CheckpointSkippedWarning(UserWarning):
    """A resume passed over newer checkpoints that were torn or changed (vera_core.training_checkpoints)."""


def _rank_suffix(rank: int) -> str:
    """How a process's RNG state is named in a checkpoint: rank 0 as a single process, the others with their rank."""
    return f".{rank}" if rank else ""


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    sd = optimizer.state_dict()
    tensors = {f"state.{index}.{name}": value.detach().cpu().contiguous().reshape(value.shape)
               for index, entry in sd["state"].items() for name, value in entry.items()
               if isinstance(value, torch.Tensor)}
    return tensors, sd["param_groups"]


def _load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                    groups: list[dict[str, Any]]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("state."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for group in groups:
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def _merged_pairs(history: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """Loss records (step, the mean loss since the record before) with each two in a row made one: at the second's
    step, their means weighted by the steps each covers (an odd last one is kept)."""
    merged: list[tuple[int, float]] = []
    for i in range(0, len(history) - 1, 2):
        (first, a), (second, b) = history[i], history[i + 1]
        start = history[i - 1][0] if i else 0
        span_a, span_b = first - start, second - first
        mean = (a * span_a + b * span_b) / (span_a + span_b) if span_a > 0 and span_b > 0 else (a + b) / 2
        merged.append((second, mean))
    return merged + history[len(history) - len(history) % 2:]

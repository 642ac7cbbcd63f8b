"""Trainer callbacks: a progress bar for the terminal, a function hook for job workers and dashboards, and a relay
through files for job workers whose training runs in other processes.

Every hook receives the trainer, its state and a dict of numbers; a callback may set ``state.should_stop`` (and
``state.stop_reason``) to end training after the current step, which is how jobs are cancelled.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vera_core.trainer import Trainer, TrainerState


class TrainerCallback:
    """Base class: override the hooks you need."""

    def on_train_begin(self, trainer: Trainer, state: TrainerState, data: dict[str, float]) -> None: ...

    def on_step_end(self, trainer: Trainer, state: TrainerState, data: dict[str, float]) -> None: ...

    def on_log(self, trainer: Trainer, state: TrainerState, data: dict[str, float]) -> None:
        """Every ``log_every`` steps (TrainerArgs; wider for a run past MAX_LOSS_RECORDS of them) and at the last:
        ``loss``, the mean of the ``steps`` since the last call, ``lr`` and ``epoch``."""

    def on_evaluate(self, trainer: Trainer, state: TrainerState, data: dict[str, float]) -> None: ...

    def on_save(self, trainer: Trainer, state: TrainerState, data: dict[str, float]) -> None: ...

    def on_train_end(self, trainer: Trainer, state: TrainerState, data: dict[str, float]) -> None: ...


class ProgressBar(TrainerCallback):
    """A tqdm bar over optimizer steps with the running loss and the last eval metrics."""

    def __init__(self, **tqdm_kwargs: Any) -> None:
        self.kwargs = tqdm_kwargs
        self.bar: Any = None
        self.postfix: dict[str, str] = {}

    def on_train_begin(self, trainer: Trainer, state: TrainerState, data: dict[str, float]) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=state.total_steps, initial=state.step, unit="step", **self.kwargs)

    def on_step_end(self, trainer: Trainer, state: TrainerState, data: dict[str, float]) -> None:
        self.postfix["loss"] = f"{data['loss']:.4f}"
        self.bar.set_postfix(self.postfix, refresh=False)
        self.bar.update(1)

    def on_evaluate(self, trainer: Trainer, state: TrainerState, data: dict[str, float]) -> None:
        self.postfix.update({k: f"{v:.4f}" for k, v in data.items() if k != "step"})
        if self.bar is not None:
            self.bar.set_postfix(self.postfix)

    def on_train_end(self, trainer: Trainer, state: TrainerState, data: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.close()


Event = Callable[[str, "TrainerState", dict[str, float]], None]


class FunctionCallback(TrainerCallback):
    """Calls ``fn(event, state, data)`` for every hook; what a job worker uses to record progress and metrics.

    ``data`` holds the step loss and learning rate (``step``, every step), the mean loss since the last record
    (``log``, every ``log_every`` steps), eval metrics (``evaluate``) and nothing else; ``state`` gives step,
    total_steps, epoch, eta_s and the histories.
    """

    def __init__(self, fn: Event) -> None:
        self.fn = fn

    def on_train_begin(self, trainer: Trainer, state: TrainerState, data: dict[str, float]) -> None:
        self.fn("train_begin", state, data)

    def on_step_end(self, trainer: Trainer, state: TrainerState, data: dict[str, float]) -> None:
        self.fn("step", state, data)

    def on_log(self, trainer: Trainer, state: TrainerState, data: dict[str, float]) -> None:
        self.fn("log", state, data)

    def on_evaluate(self, trainer: Trainer, state: TrainerState, data: dict[str, float]) -> None:
        self.fn("evaluate", state, data)

    def on_save(self, trainer: Trainer, state: TrainerState, data: dict[str, float]) -> None:
        self.fn("save", state, data)

    def on_train_end(self, trainer: Trainer, state: TrainerState, data: dict[str, float]) -> None:
        self.fn("train_end", state, data)


class FileRelay(TrainerCallback):
    """Progress out and stops in through two files, for a job worker whose training runs in other processes
    (torchrun): every loss record (``log``) and evaluation is appended to ``events`` as a JSON line (``event``,
    ``state``: step, total_steps, epoch, elapsed_s, and ``data``), and a step at most every ``step_every_s``
    seconds, for progress between records (every step filled the file at a line a step); once the ``stop`` file
    exists, training stops after the step with the file's text as ``stop_reason``. Give it to rank 0 only: the
    trainer stops every process when one asks."""

    def __init__(self, events: str | Path, stop: str | Path, step_every_s: float = 1.0) -> None:
        self.events, self.stop = Path(events), Path(stop)
        self.step_every_s, self.last_step = step_every_s, -math.inf

    def _append(self, event: str, state: TrainerState, data: dict[str, float]) -> None:
        record = {"event": event, "data": data, "state": {"step": state.step, "total_steps": state.total_steps,
                                                          "epoch": state.epoch, "elapsed_s": state.elapsed_s}}
        with self.events.open("a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")

    def on_step_end(self, trainer: Trainer, state: TrainerState, data: dict[str, float]) -> None:
        now = time.monotonic()
        if now - self.last_step >= self.step_every_s:
            self.last_step = now
            self._append("step", state, data)
        if self.stop.exists():
            state.should_stop, state.stop_reason = True, self.stop.read_text(encoding="utf-8").strip() or "stopped"

    def on_log(self, trainer: Trainer, state: TrainerState, data: dict[str, float]) -> None:
        self._append("log", state, data)

    def on_evaluate(self, trainer: Trainer, state: TrainerState, data: dict[str, float]) -> None:
        self._append("evaluate", state, data)

"""`vera worker`: claims fine-tune jobs, trains them with vera_core, publishes the result with its lineage.

A heartbeat thread keeps the job's lease, flushes progress and events, and reads cancellation; the training
callback only queues events and stops training (after the current step) when the heartbeat says so, when the job's
time limit is reached, or when the worker is told to let its job go.

Devices: a worker owns one device (``device``: cpu, cuda or cuda:N; `vera worker --device`) and trains every job
on it. A job that asks for GPUs (``gpus`` at submission) is claimed only by a worker that owns that many: a CPU worker
claims only jobs with gpus=0, a CUDA worker those with gpus 0 or 1; a job asking for more stays queued.

Stopping for a rolling restart: ``drain()`` (the first SIGTERM or SIGINT to `vera worker`) claims nothing more and
exits once the current job has finished; ``release()`` (the second) stops the current job after its step and puts
it back in the queue, for another worker, without counting the attempt.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import tempfile
import threading
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from registry.domain.errors import InvalidInput
from registry.domain.schemas import JobInfo
from registry.logs import JOB_ID, REQUEST_ID
from registry.services.jobs import Jobs
from registry.services.lineage import running_code_revision
from vera_core.callbacks import FunctionCallback
from vera_core.recipes import TrainSpec, published_metrics, run
from vera_core.trainer import TrainerState


def checked_device(text: str) -> str:
    """The device a worker may own, as torch names it ("cpu" or "cuda:N"); a clear refusal for a malformed name or
    a CUDA device that this machine does not have."""
    match = re.fullmatch(r"cpu|cuda(?::(\d{1,3}))?", text)
    if match is None:
        raise InvalidInput(f"The worker's device must be cpu, cuda or cuda:N (N: a GPU's number); got {text!r}.")
    if text == "cpu":
        return text
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(match.group(1) or 0)
    if count == 0:
        raise InvalidInput(f"Device {text!r}: this machine has no CUDA device (torch {torch.__version__}, CUDA "
                           f"build: {torch.version.cuda or 'none'}). Run the worker with --device cpu, or on a "
                           "machine with an NVIDIA GPU and a CUDA build of torch.")
    if index >= count:
        raise InvalidInput(f"Device {text!r}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}; "
                           "pick one of them.")
    return f"cuda:{index}"


class _Tracker:
    """Shared between the training loop and the heartbeat thread."""

    def __init__(self, time_limit_s: float | None = None, release: threading.Event | None = None) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.progress: dict[str, Any] = {"phase": "starting"}
        self.stop = False
        self.time_limit_s, self.release = time_limit_s, release or threading.Event()

    def on_event(self, event: str, state: TrainerState, data: dict[str, float]) -> None:
        with self.lock:
            self.progress = {"phase": "training", "step": state.step, "total_steps": state.total_steps,
                             "epoch": round(data.get("epoch", state.epoch), 4), "loss": data.get("loss"),
                             "eta_s": None if state.eta_s is None else round(state.eta_s, 1),
                             "elapsed_s": round(state.elapsed_s, 1)}
            if event == "step":
                self.events.append(("step", {"step": state.step, "loss": data["loss"], "lr": data["lr"]}))
            elif event == "evaluate":
                self.events.append(("evaluate", dict(data)))
            if self.stop:
                state.should_stop, state.stop_reason = True, "cancelled"
            elif self.release.is_set():
                state.should_stop, state.stop_reason = True, "released"
            elif self.time_limit_s is not None and state.elapsed_s >= self.time_limit_s:
                state.should_stop, state.stop_reason = True, "time_limit"

    def drain(self) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
        with self.lock:
            events, self.events = self.events, []
            return dict(self.progress), events


class Worker:
    """Runs jobs one at a time; several workers (processes, machines) can share one database."""

    def __init__(self, jobs: Jobs, *, name: str | None = None, poll_s: float = 2.0, heartbeat_s: float = 5.0,
                 work_dir: str | None = None, log: Callable[[str], None] | None = None, device: str = "cpu") -> None:
        """``log``: where the worker's lines go; by default the ``vera.worker`` logger (registry.logs), each line
        with the job's id and the id of the request that queued it. ``device``: where it trains (checked_device);
        it claims jobs asking for up to as many GPUs as it owns (none on the CPU, one on a CUDA device)."""
        self.device = checked_device(device)
        self.gpus = 0 if self.device == "cpu" else 1
        self.jobs, self.poll_s, self.heartbeat_s = jobs, poll_s, heartbeat_s
        self.name = name or f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}"
        self.work_dir, self.log = work_dir, log or logging.getLogger("vera.worker").info
        self.draining, self.releasing = threading.Event(), threading.Event()

    def drain(self) -> None:
        """Claim no more jobs; run_forever returns once the current job has finished."""
        self.draining.set()

    def release(self) -> None:
        """Stop the current job after its training step and queue it again for another worker; then return."""
        self.draining.set()
        self.releasing.set()

    def run_forever(self, stop: threading.Event | None = None) -> None:
        stop = stop or self.draining
        self.log(f"worker {self.name} polling for jobs (device {self.device}: jobs asking for up to {self.gpus} "
                 "GPUs)")
        while not stop.is_set() and not self.draining.is_set():
            if not self.run_once():
                stop.wait(self.poll_s)
        self.log(f"worker {self.name} stopped")

    def run_once(self) -> bool:
        """Claim and run one job; False if there was none."""
        job = self.jobs.claim(self.name, gpus=self.gpus)
        if job is None:
            return False
        job_token, request_token = JOB_ID.set(job.id), REQUEST_ID.set(self.jobs.request_id(job.id))
        try:
            self.log(f"job {job.id}: {job.target_name} (attempt {job.attempts}) on {self.device}")
            self._run(job)
        finally:
            JOB_ID.reset(job_token)
            REQUEST_ID.reset(request_token)
        return True

    def _run(self, job: JobInfo) -> None:
        tracker = _Tracker(job.time_limit_s, self.releasing)
        done = threading.Event()
        beat = threading.Thread(target=self._heartbeats, args=(job.id, tracker, done), daemon=True)
        beat.start()
        try:
            with tempfile.TemporaryDirectory(dir=self.work_dir) as tmp:
                spec = TrainSpec(**job.spec)
                data = self.jobs.dataset(job)
                if data is not None:
                    path = Path(tmp) / Path(spec.data or "uploaded.csv").name
                    path.write_bytes(data)
                    spec = replace(spec, data=str(path))
                # the caller's spec chooses no place: checkpoints go to this worker's work area, the base is no path,
                # and the device is the one this worker owns
                training = {**spec.training, "device": self.device, "output_dir": str(Path(tmp) / "adapter")
                            if spec.training.get("save_every") else None}
                metrics = run(replace(spec, training=training), Path(tmp) / "adapter",
                              callbacks=[FunctionCallback(tracker.on_event)], allow_paths=False)
                done.set()
                beat.join()
                self._flush(job.id, tracker, {"phase": "publishing"})
                if self._stopped_early(job, metrics.get("stop_reason")):
                    return
                owner, name = job.target_name.split("/", 1)
                summary = published_metrics(metrics)
                info = self.jobs.registry.publish(
                    Path(tmp) / "adapter", owner=owner, name=name, base_model=spec.base_model,
                    metrics=json.loads(json.dumps(summary)), published_by=job.owner, tags=["fine-tune"],
                    description=f"fine-tuned by job {job.id}",
                    lineage={"job_id": job.id, "code_revision": running_code_revision()})
                self._flush(job.id, tracker, {"phase": "done", "result": info.ref, **metrics["final_eval"]},
                            [("log", {"message": f"published {info.ref}"})])
                self.jobs.finish(job.id, self.name, status="succeeded", result_version=(job.target_name, info.version))
                self.log(f"job {job.id}: published {info.ref}")
        except Exception as exc:  # noqa: BLE001 - any failure is recorded on the job, with its traceback
            done.set()
            self._flush(job.id, tracker, {"phase": "failed"}, [("log", {"message": traceback.format_exc()})])
            self.jobs.finish(job.id, self.name, status="failed", error=f"{type(exc).__name__}: {exc}")
            self.log(f"job {job.id}: failed: {exc}")

    def _stopped_early(self, job: JobInfo, reason: object) -> bool:
        """Record a job that training stopped before its end: cancelled, let go, or out of time."""
        if reason == "cancelled":
            self.jobs.finish(job.id, self.name, status="cancelled")
        elif reason == "released":
            self.jobs.release(job.id, self.name)
        elif reason == "time_limit":
            self.jobs.finish(job.id, self.name, status="failed", error=f"Its time limit of {job.time_limit_s:g} s "
                             "was reached; training stopped. Submit it again with a larger --time-limit, or fewer "
                             "steps.")
        else:
            return False
        self.log(f"job {job.id}: {reason}")
        return True

    def _flush(self, job_id: int, tracker: _Tracker, progress: dict[str, Any] | None = None,
               extra: Sequence[tuple[str, dict[str, Any]]] = ()) -> bool:
        current, events = tracker.drain()
        return self.jobs.heartbeat(job_id, self.name, progress={**current, **(progress or {})},
                                   events=[*events, *extra])

    def _heartbeats(self, job_id: int, tracker: _Tracker, done: threading.Event) -> None:
        while not done.wait(self.heartbeat_s):
            if self._flush(job_id, tracker):
                tracker.stop = True


"""`vera worker`: claims fine-tune jobs, trains them with vera_core, publishes the result with its lineage.

A heartbeat thread keeps the job's lease, flushes progress and events, and reads cancellation (twice a second, between
heartbeats); the training callback only queues events and stops training (after the current step) when that thread
says so, when the job's time limit is reached, or when the worker is told to let its job go.

Devices: a worker owns a device set (``device``: cpu, or CUDA devices such as cuda:0,cuda:1; `vera worker
--device`) and runs one job at a time on it. A job that asks for GPUs (``gpus`` at submission) is claimed only by a
worker that owns at least that many; a job asking for more stays queued. A job with gpus=k > 1 trains in k processes
through torchrun (vera_core.recipes.run_processes), each seeing one of the worker's first k GPUs
(CUDA_VISIBLE_DEVICES, so each trains on its cuda:LOCAL_RANK); jobs with gpus 0 or 1 train in this process on the
first device. A CPU worker with ``nproc`` > 1 trains each job in that many processes (gloo). A job's batch_size is
the batch of one step, split evenly among its processes. Rank 0 alone writes the adapter; it relays progress to this
process through files (vera_core.callbacks.FileRelay), and a stop file stops all processes after their step. A
training process that dies (killed, out of memory) loses the attempt: the job is queued again, as for a worker that
died; an error in training (bad data, NaN loss) fails the job with that error.

Resuming: with a ``state_dir`` (`vera worker` uses VERA_DATA_DIR/worker), a job trains into its own folder there
(registry.job_folders), checkpointing every ``training.save_every`` steps (JOB_SAVE_EVERY if the spec does not say),
and the next attempt of a job on this machine resumes from its last intact checkpoint, saying so in the job's log.
The folder goes once the job has ended. Each checkpoint is also stored in the registry (Jobs.checkpoints, from the
heartbeat thread), and an attempt on a machine with no newer checkpoint of the job fetches that one and resumes
from it.

Stopping for a rolling restart: ``drain()`` (the first SIGTERM or SIGINT to `vera worker`) claims nothing more and
exits once the current job has finished; ``release()`` (the second) stops the current job after its step and puts
it back in the queue, for another worker, without counting the attempt.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from sqlalchemy.exc import InterfaceError, OperationalError

from registry.domain.errors import ContentTooLarge, Forbidden, InvalidInput, NotFound, RegistryError, SchemaOutOfDate
from registry.domain.schemas import JobInfo, Ref
from registry.job_folders import ENDED, JobFolder, sweep
from registry.logs import JOB_ID, REQUEST_ID, first_line
from registry.services.jobs import FINE_TUNE_TAG, EventRecord, Jobs
from registry.services.lineage import running_code_revision
from registry.worker_status import WorkerStatus
from vera_core import training_checkpoints
from vera_core.callbacks import FunctionCallback
from vera_core.distributed import DistributedError
from vera_core.recipes import (
    TrainSpec,
    kept_line,
    published_metrics,
    published_params,
    run,
    run_processes,
    small_eval_note,
)
from vera_core.trainer import TrainerState, TrainingArguments

#: The most processes a CPU worker runs a job in (vera worker --nproc).
MAX_PROCESSES = 64
#: How often a job is checkpointed, in optimizer steps, when its spec does not say (training.save_every) and the
#: worker keeps job folders: a VeRA checkpoint (vectors, their optimizer state, heads) takes milliseconds to write.
JOB_SAVE_EVERY = 50
#: How often, in seconds, the heartbeat thread reads whether its job was cancelled between heartbeats: a cancelled job
#: stops after the step it is on within about this long, for one small read of the job's row each time.
CANCEL_CHECK_S = 0.5


DEVICE_FORMS = "cpu, cuda, cuda:N, a list such as cuda:0,cuda:1, or cuda:all (every GPU this machine has)"


def checked_device(text: str) -> str:
    """One device a worker may own, as torch names it ("cpu" or "cuda:N"); a clear refusal for a malformed name or
    a CUDA device that this machine does not have."""
    match = re.fullmatch(r"cpu|cuda(?::(\d{1,3}))?", text)
    if match is None:
        raise InvalidInput(f"The worker's device must be {DEVICE_FORMS}; got {text!r}.")
    if text == "cpu":
        return text
    count = _cuda_count(text)
    index = int(match.group(1) or 0)
    if index >= count:
        raise InvalidInput(f"Device {text!r}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}; "
                           "pick among them.")
    return f"cuda:{index}"


def _cuda_count(text: str) -> int:
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise InvalidInput(f"Device {text!r}: this machine has no CUDA device (torch {torch.__version__}, CUDA "
                           f"build: {torch.version.cuda or 'none'}). Run the worker with --device cpu, or on a "
                           "machine with an NVIDIA GPU and a CUDA build of torch.")
    return count


def checked_devices(text: str) -> list[str]:
    """The device set a worker owns (``vera worker --device``): ["cpu"], or distinct CUDA devices in the order given;
    refused clearly when malformed, mixed, repeated or not on this machine."""
    if text.strip() == "cuda:all":
        return [f"cuda:{i}" for i in range(_cuda_count(text))]
    devices = [checked_device(part.strip()) for part in text.split(",")]
    repeated = sorted({d for d in devices if devices.count(d) > 1})
    if repeated:
        raise InvalidInput(f"The worker's devices {text!r} name {', '.join(repeated)} more than once; name each "
                           "device once (e.g. cuda:0,cuda:1).")
    if "cpu" in devices and len(devices) > 1:
        raise InvalidInput(f"The worker's devices {text!r} mix the CPU and GPUs: a worker owns either the CPU "
                           "(--device cpu, with --nproc for several processes) or a set of GPUs.")
    return devices


def checked_worker_devices(device: str, nproc: int = 1) -> list[str]:
    """A worker's device set (checked_devices), refused with ``nproc`` > 1 unless it is the CPU."""
    devices = checked_devices(device)
    if isinstance(nproc, bool) or not isinstance(nproc, int) or not 1 <= nproc <= MAX_PROCESSES:
        raise InvalidInput(f"nproc must be an integer from 1 to {MAX_PROCESSES}; got {nproc!r}.")
    if nproc > 1 and devices != ["cpu"]:
        raise InvalidInput(f"nproc={nproc} is for CPU workers: a GPU worker ({','.join(devices)}) trains a job in as "
                           "many processes as it asks GPUs (gpus=k: k processes, one per GPU). Leave --nproc out.")
    return devices


#: The longest a worker waits between tries while its database is unavailable (it waits poll_s, doubling, up to it).
MAX_OUTAGE_WAIT_S = 30.0
#: The least time without a poll or a heartbeat after which the worker's /health says it is stuck.
STUCK_AFTER_S = 60.0

class _Tracker:
    """Shared between the training loop and the heartbeat thread."""

    def __init__(self, time_limit_s: float | None = None, release: threading.Event | None = None) -> None:
        self.lock = threading.Lock()
        self.events: list[EventRecord] = []  # each with the time it happened: a heartbeat writes several at once
        self.progress: dict[str, Any] = {"phase": "starting"}
        self.stop = False
        self.time_limit_s, self.release = time_limit_s, release or threading.Event()

    def on_event(self, event: str, state: TrainerState, data: dict[str, float]) -> None:
        with self.lock:
            self.progress = {"phase": "training", "step": state.step, "total_steps": state.total_steps,
                             "epoch": round(data.get("epoch", state.epoch), 4),
                             # the last step's loss, kept through an evaluation or a save (it went blank there)
                             "loss": data["loss"] if event in ("step", "log") else self.progress.get("loss"),
                             "eta_s": None if state.eta_s is None else round(state.eta_s, 1),
                             "elapsed_s": round(state.elapsed_s, 1)}
            if event == "log":  # the job's log keeps the loss records (every log_every steps), not every step
                self.events.append(("step", {"step": state.step, "loss": data["loss"], "lr": data["lr"]},
                                    datetime.now(UTC)))
            elif event == "evaluate":
                self.events.append(("evaluate", dict(data), datetime.now(UTC)))
            if self.stop:
                state.should_stop, state.stop_reason = True, "cancelled"
            elif self.release.is_set():
                state.should_stop, state.stop_reason = True, "released"
            elif self.time_limit_s is not None and state.elapsed_s >= self.time_limit_s:
                state.should_stop, state.stop_reason = True, "time_limit"

    def drain(self) -> tuple[dict[str, Any], list[EventRecord]]:
        with self.lock:
            events, self.events = self.events, []
            return dict(self.progress), events


class _Relay:
    """A multi-process job's progress and stops: a thread reads the events that rank 0 appends (FileRelay) into the
    tracker, and writes the stop file once the tracker says training should stop (cancelled, let go, out of time);
    rank 0 then stops every process after its step."""

    def __init__(self, tracker: _Tracker, folder: Path, interval_s: float = 0.2) -> None:
        self.tracker, self.interval_s = tracker, interval_s
        self.events, self.stop = folder / "events.jsonl", folder / "stop"
        self.offset, self.done = 0, threading.Event()
        self.thread = threading.Thread(target=self._follow, name="vera-job-relay", daemon=True)

    def __enter__(self) -> _Relay:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()

    def _follow(self) -> None:
        while not self.done.wait(self.interval_s):
            self._read()
        self._read()  # what the processes wrote last

    def _read(self) -> None:
        if not self.events.exists():
            return
        with self.events.open("rb") as file:
            file.seek(self.offset)
            chunk = file.read()
        complete = chunk[:chunk.rfind(b"\n") + 1]  # a line being written is read next time
        self.offset += len(complete)
        for line in complete.splitlines():
            record = json.loads(line)
            state = TrainerState(**record["state"])
            self.tracker.on_event(record["event"], state, record["data"])
            if state.should_stop and not self.stop.exists():
                self.stop.write_text(state.stop_reason or "stopped", encoding="utf-8")


class _CheckpointSync:
    """Stores each checkpoint an attempt seals in the registry (Jobs.checkpoints), from the heartbeat thread and once
    more when the attempt is lost or let go, so that an attempt on another machine resumes from it. Only checkpoints
    newer than where the attempt started are stored: an earlier attempt's, left in the folder, never replace a newer
    one stored from another machine."""

    def __init__(self, worker: Worker, job: JobInfo, tracker: _Tracker) -> None:
        self.worker, self.job, self.tracker = worker, job, tracker
        self.lock = threading.Lock()
        self.root: Path | None = None  # the run's checkpoints folder, once the attempt knows where it starts
        self.step = 0  # the newest step stored, or resumed from
        self.refused = False  # too large for the registry: kept on this machine only

    def start(self, out: Path, step: int) -> None:
        with self.lock:
            self.root, self.step = out / "checkpoints", step

    def store(self) -> None:
        """Store the newest intact checkpoint if it is newer than the last stored; a failure is logged and the next
        call tries again (a checkpoint removed while being read, storage away), never raised."""
        with self.lock:
            if self.root is None or self.refused:
                return
            found, _ = training_checkpoints.latest(self.root)
            if found is None or found.step <= self.step:
                return
            job = self.job.id
            try:
                stored = self.worker.jobs.checkpoints.store(job, self.worker.name, found.path)
            except ContentTooLarge as exc:
                self.refused = True
                self.worker._note(self.job, self.tracker, f"job {job}: {exc}")
                return
            except Exception as exc:  # noqa: BLE001 - the heartbeat thread must live on; the next beat tries again
                self.worker.log(f"job {job}: the checkpoint at step {found.step} was not stored in the registry "
                                f"({type(exc).__name__}: {exc}); trying again at the next heartbeat")
                return
            self.step = stored.step
            self.worker._note(self.job, self.tracker, f"job {job}: stored the checkpoint at step {stored.step} in the "
                              f"registry ({stored.size} bytes): a later attempt resumes from it, on this worker or "
                              "another")


#: Seconds between a running job's heartbeats (`vera worker --heartbeat`).
DEFAULT_HEARTBEAT_S = 5.0


def check_heartbeat(heartbeat_s: float, lease_s: float, *, fixed: bool = False) -> None:
    """Refuse a heartbeat that does not keep a running job's lease (VERA_JOB_LEASE_S): another worker would claim
    the job between two heartbeats and train it twice (`vera worker` and `vera up` check it at start). ``fixed``:
    the heartbeat is not the caller's to set (`vera up`'s worker, which has no --heartbeat)."""
    if heartbeat_s * 2 > lease_s:
        fix = (f"Give VERA_JOB_LEASE_S at least {heartbeat_s * 2:g} s (`vera up`'s worker beats every {heartbeat_s:g} "
               "s)." if fixed else "Keep the heartbeat (--heartbeat, default 5 s) under half the lease.")
        raise InvalidInput(f"A heartbeat every {heartbeat_s:g} s does not keep a job leased for {lease_s:g} s "
                           "(VERA_JOB_LEASE_S): another worker would take the job from this one between two "
                           f"heartbeats. {fix}")


class Worker:
    """Runs jobs one at a time; several workers (processes, machines) can share one database."""

    def __init__(self, jobs: Jobs, *, name: str | None = None, poll_s: float = 2.0,
                 heartbeat_s: float = DEFAULT_HEARTBEAT_S, work_dir: str | None = None,
                 log: Callable[[str], None] | None = None, device: str = "cpu", nproc: int = 1,
                 state_dir: str | Path | None = None) -> None:
        """``log``: where the worker's lines go; by default the ``vera.worker`` logger (registry.logs), each line
        with the job's id and the id of the request that queued it (at info; a database outage at warning).
        ``device``: the device set it owns (checked_devices); it claims jobs asking for up to as many GPUs as it
        owns (none on the CPU). ``nproc``: a CPU worker trains each job in up to that many processes (torchrun,
        gloo); a GPU worker trains a job that asks for k > 1 GPUs in k processes, one on each of its first k
        devices. ``state_dir``: where it keeps a folder per job between attempts, so that a job's next attempt
        resumes from its checkpoints; None: each attempt trains in a temporary folder (in ``work_dir``) and starts
        over."""
        self.devices = checked_worker_devices(device, nproc)
        self.device = ",".join(self.devices)
        self.gpus = 0 if self.devices == ["cpu"] else len(self.devices)
        self.nproc = nproc
        self.jobs, self.poll_s, self.heartbeat_s = jobs, poll_s, heartbeat_s
        self.name = name or f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}"
        self.work_dir, self.log = work_dir, log or logging.getLogger("vera.worker").info
        self.warn = log or logging.getLogger("vera.worker").warning  # what needs the operator (an outage)
        self.state_dir = None if state_dir is None else Path(state_dir)
        self.draining, self.releasing = threading.Event(), threading.Event()
        # what `vera worker --status-port` serves (registry.worker_status): stuck once neither a poll nor a
        # heartbeat has happened for several of their intervals, and longer than the longest wait for the database
        self.status = WorkerStatus(name=self.name, device=self.device, stuck_after_s=max(
            STUCK_AFTER_S, 4 * poll_s, 4 * heartbeat_s, MAX_OUTAGE_WAIT_S + 2 * poll_s))

    def drain(self) -> None:
        """Claim no more jobs; run_forever returns once the current job has finished."""
        self.draining.set()
        self.status.draining()

    def release(self) -> None:
        """Stop the current job after its training step and queue it again for another worker; then return."""
        self.drain()
        self.releasing.set()

    def run_forever(self, stop: threading.Event | None = None) -> None:
        stop = stop or self.draining
        processes = f", up to {self.nproc} processes a job" if self.nproc > 1 else ""
        self.log(f"worker {self.name} polling for jobs (device {self.device}{processes}: jobs asking for up to "
                 f"{self.gpus} GPUs)")
        failures = 0
        while not stop.is_set() and not self.draining.is_set():
            try:
                ran = self.run_once()
            except (OperationalError, InterfaceError) as exc:  # the database restarted, failed over, refused
                self.status.tick(database=False)
                failures += 1
                wait = min(MAX_OUTAGE_WAIT_S, self.poll_s * 2 ** min(failures, 8))
                self.warn(f"worker {self.name}: the database is unavailable ({type(exc).__name__}: "
                         f"{first_line(exc, 200)}); trying again in {wait:g} s")
                stop.wait(wait)
                continue
            except SchemaOutOfDate as exc:  # a newer release upgraded the database: this one claims nothing
                self.status.tick(database=False)
                self.warn(f"worker {self.name} claims no job: {exc}")
                stop.wait(MAX_OUTAGE_WAIT_S)
                continue
            failures = 0
            self.status.tick()
            if not ran:
                stop.wait(self.poll_s)
        self.log(f"worker {self.name} stopped")

    def run_once(self) -> bool:
        """Claim and run one job; False if there was none."""
        if self.state_dir is not None:
            for job_id in sweep(self.state_dir, self.jobs):
                self.log(f"removed the folder of job {job_id}, which has ended")
        self.jobs.registry.db.check_schema()  # (a newer release's upgrade meanwhile: its jobs are not for this one)
        job = self.jobs.claim(self.name, gpus=self.gpus)
        if job is None:
            return False
        job_token, request_token = JOB_ID.set(job.id), REQUEST_ID.set(self.jobs.request_id(job.id))
        self.status.started(job.id)
        try:
            self.log(f"job {job.id}: {job.target_name} (attempt {job.attempts}) on {self.device}")
            if (problem := self.jobs.submitter_problem(job)) is not None:  # not trained for nothing (again at publish)
                self.jobs.finish(job.id, self.name, status="failed", error=f"Forbidden: {problem}")
                self.status.ended("failed")
                self.log(f"job {job.id}: failed: {problem}")
                return True
            self._run(job)
        finally:
            if self.status.snapshot()["job"] == job.id:  # not recorded as ended: its lease runs out (an outage)
                self.status.ended("lost")
            JOB_ID.reset(job_token)
            REQUEST_ID.reset(request_token)
        return True

    def _run(self, job: JobInfo) -> None:
        tracker = _Tracker(self._time_limit(job), self.releasing)
        # in the job's log at once: its first training step can be half a minute away (a worker's first job imports
        # torch and transformers, then the base model and the data load), and the log said only "queued" meanwhile
        with tracker.lock:
            tracker.events.append(("log", {"message": f"started on worker {self.name} ({self.device}), attempt "
                                           f"{job.attempts}: loading the base model and the data"}, datetime.now(UTC)))
        try:
            tracker.stop = self._flush(job.id, tracker)
        except (OperationalError, InterfaceError) as exc:  # an outage: the line is lost, the heartbeats go on
            self.warn(f"job {job.id}: its start was not recorded: {first_line(exc, 200)}")
        sync = _CheckpointSync(self, job, tracker)
        done = threading.Event()
        beat = threading.Thread(target=self._heartbeats, args=(job.id, tracker, done, sync), daemon=True)
        beat.start()
        folder = self._job_folder(job, tracker)
        try:
            with tempfile.TemporaryDirectory(dir=self.work_dir) as tmp:
                out = folder.output if folder else Path(tmp) / "adapter"
                spec = self._local_spec(job, folder.path / "start" if folder else Path(tmp) / "start", Path(tmp))
                metrics = self._train(job, spec, Path(tmp), out, tracker, sync if folder is not None else None)
                done.set()
                beat.join()
                self._flush(job.id, tracker, {"phase": "publishing"})
                if metrics.get("stop_reason") == "released":
                    sync.store()  # the newest checkpoint, for whichever worker takes the job next
                if not self._stopped_early(job, metrics.get("stop_reason"), tracker):
                    self._publish(job, spec, out, metrics, tracker)
        except Exception as exc:  # noqa: BLE001 - any failure is recorded on the job, with its traceback
            done.set()
            if isinstance(exc, DistributedError) and exc.lost:
                sync.store()  # the attempt is lost: its newest checkpoint goes to the registry first
            self._failed(job, tracker, exc)
        finally:
            if folder is not None:  # kept for the next attempt unless the job has ended
                ended = False
                try:
                    ended = self.jobs.get(job.id).status in ENDED
                finally:
                    folder.close(remove=ended)

    def _job_folder(self, job: JobInfo, tracker: _Tracker) -> JobFolder | None:
        """The job's folder under the state directory, held for this attempt; None without a state directory, or
        if another process on this machine holds it (an earlier attempt still stopping: this one starts over)."""
        if self.state_dir is None:
            return None
        folder = JobFolder.open(self.state_dir, job)
        if folder is None:
            self._note(job, tracker, f"job {job.id}: its folder is in use by another process on this machine (an "
                       "earlier attempt still stopping?); this attempt starts over in a temporary folder")
        return folder

    def _note(self, job: JobInfo, tracker: _Tracker, message: str) -> None:
        """A line for this worker's log and the job's."""
        self.log(message)
        with tracker.lock:
            tracker.events.append(("log", {"message": message}, datetime.now(UTC)))

    def _resume_point(self, job: JobInfo, out: Path, processes: int, tracker: _Tracker) -> int | None:
        """The step this attempt resumes from, or None: the newest intact checkpoint that an earlier attempt left in
        ``out``, or the one stored in the registry if that is newer (written into ``out`` first: an earlier attempt
        on another machine), if written by as many processes as this attempt trains in; otherwise ``out`` is emptied
        and training starts over. Says which in the job's log."""
        found, skipped = training_checkpoints.latest(out / "checkpoints")
        for reason in skipped:
            self._note(job, tracker, f"job {job.id}: passed over a checkpoint that cannot be loaded: {reason}")
        found = self._restored(job, out, found, tracker) or found
        if found is not None and found.world_size != processes:
            self._note(job, tracker, f"job {job.id}: its checkpoint at step {found.step} was written by "
                       f"{found.world_size} process(es) and this attempt trains in {processes}; starting over")
            found = None
        if found is None:
            shutil.rmtree(out, ignore_errors=True)
            return None
        self._note(job, tracker, f"job {job.id}: attempt {job.attempts} resumes from step {found.step} (the last "
                   "intact checkpoint of an earlier attempt)")
        return found.step

    def _restored(self, job: JobInfo, out: Path, local: training_checkpoints.CheckpointInfo | None,
                  tracker: _Tracker) -> training_checkpoints.CheckpointInfo | None:
        """The job's checkpoint stored in the registry, written into ``out``, if it is newer than ``local``; None if
        there is none, it is not newer, or it cannot be restored (the log says why; the attempt then goes on
        without it)."""
        try:
            stored = self.jobs.checkpoints.latest(job.id)
            if stored is None or (local is not None and local.step >= stored.step):
                return None
            path = self.jobs.checkpoints.restore(stored, out / "checkpoints")
        except (RegistryError, OSError) as exc:
            self._note(job, tracker, f"job {job.id}: the checkpoint stored in the registry cannot be used "
                       f"({type(exc).__name__}: {exc})")
            return None
        self._note(job, tracker, f"job {job.id}: fetched its checkpoint at step {stored.step} from the registry "
                   f"(stored by {stored.worker} during attempt {stored.attempt})")
        return training_checkpoints.info(path)

    def _local_spec(self, job: JobInfo, start: Path, tmp: Path) -> TrainSpec:
        """The job's spec with its uploaded dataset written into this worker's work area, and the version it starts
        from (if any) in ``start``: fetched there once (its bytes never change), so that a later attempt in the
        job's folder has it even if the version was deleted meanwhile."""
        spec = TrainSpec(**job.spec)
        data = self.jobs.dataset(job)
        if data is not None:
            path = tmp / Path(spec.data or "uploaded.csv").name
            path.write_bytes(data)
            spec = replace(spec, data=str(path))
        if spec.init_from is None:
            return spec
        if not (start / "adapter_config.json").is_file():  # (the version pinned at submission)
            current = self._current(spec.init_from)
            if current is None:  # not named: the job's readers may not read it (Jobs' _shown_spec)
                raise NotFound("The version the job starts from (init_from) was deleted after the job was queued; "
                               "submit it again from another version.")
            part = start.with_name(start.name + ".part")  # whole or not there: a fetch cut short leaves only this
            shutil.rmtree(part, ignore_errors=True)
            self.jobs.registry.fetch(current, part).rename(start)
        return replace(spec, init_from=str(start))

    def _current(self, pinned: str) -> str | None:
        """The version ``pinned`` (owner/name:N, as a job's submission pinned it) under its adapter's name now (it
        may have been renamed or transferred since: version numbers go with it), or None once it is deleted."""
        ref = Ref.parse(pinned)
        moved = None
        try:
            return self.jobs.registry.get(ref).ref
        except NotFound:
            moved = self.jobs.registry.moves.moved_to(ref.owner, ref.name, None)
        if moved is None:
            return None
        try:
            return self.jobs.registry.get(Ref.of(moved.owner, moved.name, version=ref.version)).ref
        except NotFound:
            return None

    def _processes(self, job: JobInfo, batch_size: int) -> int:
        """How many processes train ``job``: one per GPU it asks for on a GPU worker; on the CPU, up to nproc, as
        many as split the job's batch evenly (a job's batch_size is its step's batch, however many train it)."""
        if self.gpus:
            return max(job.gpus, 1)
        processes = next(p for p in range(min(self.nproc, batch_size), 0, -1) if batch_size % p == 0)
        if processes < self.nproc:
            self.log(f"job {job.id}: batch_size {batch_size} splits evenly over {processes} process(es), not "
                     f"{self.nproc}; training in {processes}")
        return processes

    def _train(self, job: JobInfo, spec: TrainSpec, tmp: Path, out: Path, tracker: _Tracker,
               sync: _CheckpointSync | None) -> dict[str, Any]:
        """Train the job into ``out``; with ``sync`` (``out`` outlives the attempt: a job folder), checkpointed,
        resumed from an earlier attempt's checkpoint (this machine's or the registry's), and each new checkpoint
        stored in the registry."""
        # the caller's spec chooses no place: checkpoints go to this worker's job folder or work area, the base is no
        # path, and the device is one this worker owns
        save_every = spec.training.get("save_every") or (JOB_SAVE_EVERY if sync is not None else None)
        training = {**spec.training, "save_every": save_every, "output_dir": str(out) if save_every else None}
        batch_size = int(training.get("batch_size", TrainingArguments.batch_size))
        processes = self._processes(job, batch_size)
        step = None
        if sync is not None:
            step = self._resume_point(job, out, processes, tracker)
            sync.start(out, step or 0)
        resume = step is not None
        if processes == 1:
            training["device"] = self.devices[0]
            return run(replace(spec, training=training), out, callbacks=[FunctionCallback(tracker.on_event)],
                       allow_paths=False, resume=resume)
        # each process takes its share of the batch; on GPUs it sees only its own (CUDA_VISIBLE_DEVICES, then
        # cuda:LOCAL_RANK), on the CPU they talk through gloo
        training.update(device="cuda" if self.gpus else "cpu", batch_size=batch_size // processes)
        env = {"CUDA_VISIBLE_DEVICES": _visible_devices(self.devices[:processes])} if self.gpus else {}
        self.log(f"job {job.id}: training in {processes} processes (torchrun) on "
                 f"{','.join(self.devices[:processes]) if self.gpus else 'the CPU'}")
        with _Relay(tracker, tmp) as relay:
            return run_processes(replace(spec, training=training), out, nproc=processes, allow_paths=False,
                                 relay=(relay.events, relay.stop), env=env, resume=resume)

    def _publish(self, job: JobInfo, spec: TrainSpec, adapter: Path, metrics: dict[str, Any],
                 tracker: _Tracker) -> None:
        job = self.jobs.get(job.id)  # as it is now: renamed with its adapter (`vera mv`), or cancelled meanwhile
        if job.cancel_requested:
            self._stopped_early(job, "cancelled", tracker)
            return
        owner, name = job.target_name.split("/", 1)
        if (problem := self.jobs.submitter_problem(job)) is not None:
            raise Forbidden(problem)
        summary = published_metrics(metrics)
        start = job.spec.get("init_from")
        # its parent: the version it started from, under its name now; deleted meanwhile, recorded as deleted
        parent = {"parent": self._current(start) or start, "parent_may_be_gone": True} if start is not None else {}
        info = self.jobs.registry.publish(
            adapter, owner=owner, name=name, base_model=spec.base_model, metrics=json.loads(json.dumps(summary)),
            params=published_params(metrics),
            published_by=job.requested_by or job.submitted_by or job.owner, tags=[FINE_TUNE_TAG, *job.result_tags],
            # how the version was made, not what the adapter is: a new adapter starts without a description
            description=job.result_description or f"fine-tuned by job {job.id}", adapter_description="",
            properties=job.result_properties,
            lineage={"job_id": job.id, "code_revision": running_code_revision(), "published_via": job.submitted_via,
                     **parent})
        kept, few = kept_line(metrics), small_eval_note(metrics)
        self._flush(job.id, tracker, {"phase": "done", "result": info.ref, **metrics["final_eval"]},
                    [("log", {"message": f"published {info.ref}" + (f" with the weights of {kept}" if kept else "")}),
                     *([("log", {"message": f"note: {few}"})] if few else [])])
        self.jobs.finish(job.id, self.name, status="succeeded", result_version=(job.target_name, info.version))
        self.status.ended("succeeded")
        self.log(f"job {job.id}: published {info.ref}")

    def _failed(self, job: JobInfo, tracker: _Tracker, exc: Exception) -> None:
        """Record a failure on the job: a training process that died (killed, out of memory) loses the attempt, and
        the job is queued again; any other error fails it, with the process's own error when it came from one."""
        if isinstance(exc, DistributedError) and exc.lost:
            self._flush(job.id, tracker, {"phase": "lost"}, [("log", {"message": str(exc)})])
            self.jobs.retry(job.id, self.name, lost=f"training process rank(s) {exc.silent} died without a Python "
                            "error (killed? out of memory?)")
            self.status.ended("lost")
            self.log(f"job {job.id}: a training process died; the job goes back to the queue: {exc}")
            return
        error, details = f"{type(exc).__name__}: {exc}", traceback.format_exc()
        if isinstance(exc, RegistryError):  # the registry's refusal, said whole: no traceback in the job's log
            details = error  # (one of this module's lines for a version deleted after submission: a docs audit)
        if isinstance(exc, DistributedError) and exc.failures:
            first = exc.failures[0]
            error = f"{first.error} (rank {first.rank} of the job's training processes; the others stopped with it)"
            details = f"{first.traceback}\n{details}"
        self._flush(job.id, tracker, {"phase": "failed"}, [("log", {"message": details})])
        self.jobs.finish(job.id, self.name, status="failed", error=error)
        self.status.ended("failed")
        self.log(f"job {job.id}: failed: {error}")

    def _time_limit(self, job: JobInfo) -> float | None:
        """The job's own limit; for a job queued without one before the operator set a default, the default."""
        return job.time_limit_s if job.time_limit_s is not None else self.jobs.default_time_limit_s

    def _stopped_early(self, job: JobInfo, reason: object, tracker: _Tracker) -> bool:
        """Record a job that training stopped before its end: cancelled, let go, or out of time; a cancelled job's
        log says so, and where (its log ended at its last checkpoint: a walk in a browser, session 40)."""
        if reason == "cancelled":
            with tracker.lock:
                step, total = tracker.progress.get("step"), tracker.progress.get("total_steps")
            where = f" at step {step} of {total}" if isinstance(step, int) else ""
            self._flush(job.id, tracker, None, [("log", {
                "message": f"cancelled{where}: training stopped after the step it was on; nothing was published"})])
            self.jobs.finish(job.id, self.name, status="cancelled")
        elif reason == "released":
            self.jobs.release(job.id, self.name)
        elif reason == "time_limit":
            self.jobs.finish(job.id, self.name, status="failed", error=f"Its time limit of {self._time_limit(job):g} s "
                             "was reached; training stopped. Submit it again with a larger --time-limit, or fewer "
                             "steps.")
        else:
            return False
        self.status.ended({"cancelled": "cancelled", "released": "released"}.get(str(reason), "timed_out"))
        self.log(f"job {job.id}: {reason}")
        return True

    def _flush(self, job_id: int, tracker: _Tracker, progress: dict[str, Any] | None = None,
               extra: Sequence[tuple[str, dict[str, Any]]] = ()) -> bool:
        current, events = tracker.drain()
        if isinstance(current.get("step"), int):
            self.status.step(current["step"])
        stop = self.jobs.heartbeat(job_id, self.name, progress={**current, **(progress or {})},
                                   events=[*events, *extra])
        self.status.tick()
        return stop

    def _heartbeats(self, job_id: int, tracker: _Tracker, done: threading.Event, sync: _CheckpointSync) -> None:
        """Every ``heartbeat_s``: the lease, progress and events to the registry, and a new checkpoint stored; in
        between, every CANCEL_CHECK_S, only whether the job should stop (a read), so that a cancelled job stops after
        the training step it is on rather than up to a heartbeat later."""
        beat = time.monotonic() + self.heartbeat_s
        while not done.wait(max(0.0, min(CANCEL_CHECK_S, beat - time.monotonic()))):
            if time.monotonic() < beat:
                if self._stop_asked(job_id):
                    tracker.stop = True
                continue
            beat = time.monotonic() + self.heartbeat_s
            if self._flush(job_id, tracker):
                tracker.stop = True
            sync.store()

    def _stop_asked(self, job_id: int) -> bool:
        """Jobs.should_stop between heartbeats; False when the read fails (the next heartbeat asks again, and says
        so if the registry is really gone)."""
        try:
            return self.jobs.should_stop(job_id, self.name)
        except Exception:  # noqa: BLE001 - the heartbeat thread must live on
            return False



def _visible_devices(devices: list[str]) -> str:
    """CUDA_VISIBLE_DEVICES for processes that train on ``devices`` (this process's names), through this process's
    own CUDA_VISIBLE_DEVICES if it has one (its cuda:0 is then that list's first entry)."""
    indices = [int(d.split(":")[1]) for d in devices]
    inherited = [part.strip() for part in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if part.strip()]
    return ",".join(inherited[i] if inherited else str(i) for i in indices)

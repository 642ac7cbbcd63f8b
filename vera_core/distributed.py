"""Training in several processes with torch's own engines: torchrun starts the processes, DistributedDataParallel
all-reduces the gradients. The trainer (vera_core/trainer.py) calls these helpers; a single process never
touches torch.distributed.

What is synchronised, and what is not:

- DDP all-reduces (averages) the gradients of what trains: the d and b vectors, and heads and biases that train.
  It broadcasts those parameters from rank 0 once, when it wraps the model.
- The frozen base model and the projections A and B are never broadcast or reduced: they are listed in DDP's
  ignore list. Every process regenerates A and B from the seed, and the trainer checks at start that all of them
  hold the same bits (their fingerprint), refusing a mismatched world with ``ProjectionMismatchError``.
- The data: each process takes every world-size-th example of the epoch's shuffled order (``shard``), so
  ``batch_size`` is per process and one optimizer step sees ``batch_size x gradient_accumulation_steps x world
  size`` examples, the same ones a single process would see with a batch that large.
- The loop's decisions: the logged loss is averaged over the processes, evaluation sums are added up, and a stop
  asked for in any process (a callback) stops every process after the same step.

FSDP is refused: it shards parameters, which saves nothing on the trainable vectors (a few KB) and only memory on
the frozen base; DDP (with the base in bf16 if memory is short) is what to use. ``distributed="fsdp"`` says so, and
so do the Trainer and ``save_adapter`` when given a model that FSDP (FSDP1 or FSDP2's ``fully_shard``) has already
sharded (``refuse_sharded``): vera_core never gathers shards, and a sharded vector read as a whole is not the vector.
A VeraModel does train under FSDP in a loop of one's own (its projections, being buffers, stay whole on every
process; tests/vera_core/test_fsdp.py), but saving it takes gathering its trainable tensors first.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from vera_core.errors import ProjectionMismatchError, VeraConfigError, VeraError

DistributedMode = Literal["auto", "ddp", "off", "fsdp"]
MODES = ("auto", "ddp", "off", "fsdp")
LAUNCH_HINT = "vera train --nproc N, or torchrun --standalone --nproc-per-node N --no-python -- vera train ..."
T = TypeVar("T")


def check_mode(mode: str) -> None:
    """Refuse a ``TrainingArguments.distributed`` value that the trainer cannot run."""
    if mode == "fsdp":
        raise VeraConfigError(
            "distributed='fsdp' is not supported: FSDP shards parameters, and VeRA's trainable vectors are tiny "
            "while its frozen base and projections are the same on every process, so sharding saves nothing. Use "
            f"distributed='ddp' (or 'auto') under torchrun: {LAUNCH_HINT}."
        )
    if mode not in MODES:
        raise VeraConfigError(f"distributed must be auto, ddp or off, got {mode!r}.")


FSDP_ADVICE = (
    "vera_core does not gather FSDP shards: VeRA trains only its d and b vectors (and any heads), so FSDP would save "
    "memory on the frozen base alone. Train with DDP instead: give the Trainer the unwrapped VeraModel under torchrun "
    f"({LAUNCH_HINT}) or accelerate launch, with the base in bf16 if memory is short. To save a model trained in a "
    "FSDP loop of your own, gather its trainable tensors on every process first (FSDP2: {name: p.full_tensor() for "
    "name, p in model.named_parameters() if p.requires_grad}), load them into an unsharded VeraModel on rank 0 "
    "(model.load_state_dict(tensors, strict=False)) and save that."
)


def sharded_by_fsdp(model: torch.nn.Module) -> str | None:
    """How FSDP has sharded ``model`` ("FSDP2 (fully_shard): parameter 'x' is a DTensor", ...), or None if it has
    not."""
    from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel
    from torch.distributed.tensor import DTensor

    for name, module in model.named_modules():
        if isinstance(module, FullyShardedDataParallel | FSDPModule):
            kind = "FSDP1 (FullyShardedDataParallel)" if isinstance(module, FullyShardedDataParallel) else \
                "FSDP2 (fully_shard)"
            return f"{kind} wraps {'the model' if not name else repr(name)}"
    for name, parameter in model.named_parameters():
        if isinstance(parameter, DTensor):
            return f"parameter {name!r} is a DTensor (FSDP2 or tensor parallelism)"
        if getattr(parameter, "_fsdp_flattened", False):
            return f"parameter {name!r} is a view into an FSDP1 flat parameter"
    return None


def refuse_sharded(model: torch.nn.Module, what: str) -> None:
    """Raise VeraConfigError if FSDP has sharded ``model``, saying what to do instead; ``what``: who refuses."""
    found = sharded_by_fsdp(model)
    if found is not None:
        raise VeraConfigError(f"{what} was given a model sharded by FSDP: {found}. {FSDP_ADVICE}")


@dataclass(frozen=True)
class World:
    """This process's place among the processes that train together; ``World()`` is a single process."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    # Whether vera_core initialised the process group (and so ``shutdown`` destroys it).
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes checkpoints, metrics and the adapter."""
        return self.rank == 0


def _env_int(environ: Mapping[str, str], name: str, default: int | None) -> int:
    text = environ.get(name)
    if text is None:
        if default is None:
            raise VeraConfigError(
                f"WORLD_SIZE={environ.get('WORLD_SIZE')} is set but {name} is not: torchrun sets RANK, WORLD_SIZE "
                f"and LOCAL_RANK together. Start the processes with torchrun ({LAUNCH_HINT}), or unset WORLD_SIZE."
            )
        return default
    try:
        return int(text)
    except ValueError:
        raise VeraConfigError(f"{name} must be an integer (as torchrun sets it), got {text!r}.") from None


def from_env(environ: Mapping[str, str] | None = None) -> World:
    """The world torchrun describes in RANK, WORLD_SIZE and LOCAL_RANK; a single process when WORLD_SIZE is unset."""
    environ = os.environ if environ is None else environ
    size = _env_int(environ, "WORLD_SIZE", 1)
    if size == 1:
        return World()
    rank, local_rank = _env_int(environ, "RANK", None), _env_int(environ, "LOCAL_RANK", None)
    if size < 1 or not 0 <= rank < size or not 0 <= local_rank <= rank:
        raise VeraConfigError(
            f"torchrun's environment is inconsistent: RANK={rank}, LOCAL_RANK={local_rank}, WORLD_SIZE={size}; "
            "expected 0 <= LOCAL_RANK <= RANK < WORLD_SIZE. Start the processes with torchrun rather than setting "
            "these by hand."
        )
    return World(rank, size, local_rank)


def _world(mode: str) -> World:
    if mode == "off":
        return World()
    if dist.is_available() and dist.is_initialized():  # set up by the caller (accelerate, a script)
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        return World(dist.get_rank(), dist.get_world_size(), local_rank)
    world = from_env()
    if mode == "ddp" and world.size == 1:
        raise VeraConfigError(
            "distributed='ddp' but this process was not started by torchrun (WORLD_SIZE is unset or 1). Start it "
            f"with {LAUNCH_HINT}, or use distributed='auto', which trains alone when there is one process."
        )
    return world


def checked_device(device: str | None) -> torch.device | None:
    """``device`` as torch names it, refused with a VeraConfigError saying what there is when torch does not know the
    name or this machine lacks the CUDA device (instead of failing later, when the model moves there)."""
    if device is None:
        return None
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise VeraConfigError(f"device={device!r} is not a device name torch knows; expected 'cpu', 'cuda' or "
                              "'cuda:N' (or leave it unset: the GPU numbered LOCAL_RANK if there is one, else the "
                              "CPU).") from exc
    if chosen.type != "cuda":
        return chosen
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise VeraConfigError(f"device={device!r}: this machine has no CUDA device (torch {torch.__version__}, CUDA "
                              f"build: {torch.version.cuda or 'none'}); train on 'cpu', or leave device unset.")
    if chosen.index is not None and chosen.index >= count:
        raise VeraConfigError(f"device={device!r}: this machine has {count} CUDA device(s), cuda:0 to "
                              f"cuda:{count - 1}; pick among them.")
    return chosen


def setup(mode: str, device: str | None = None) -> tuple[World, torch.device]:
    """This process's world and device, with the process group initialised if it trains with others.

    The device is ``device`` if given, else the GPU numbered LOCAL_RANK on CUDA machines, else the CPU; the process
    group uses NCCL on CUDA and gloo on the CPU.
    """
    check_mode(mode)
    world = _world(mode)
    chosen = checked_device(device) or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if world.size == 1:
        return world, chosen
    if chosen.type == "cuda":
        if chosen.index is None and world.local_rank >= (count := torch.cuda.device_count()):
            raise VeraConfigError(  # not torch's "invalid device ordinal" (seen on a machine with one GPU)
                f"This is process {world.local_rank} on this machine, which has {count} CUDA device(s): each process "
                f"trains on the GPU numbered LOCAL_RANK. Start at most {count} process(es) per machine "
                f"(torchrun --nproc-per-node {count}, `vera train --nproc {count}`), or train on the CPU "
                "(device='cpu', or CUDA_VISIBLE_DEVICES='' for gloo processes).")
        chosen = chosen if chosen.index is not None else torch.device("cuda", world.local_rank)
        torch.cuda.set_device(chosen)
    if dist.is_initialized():
        return world, chosen
    dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo", rank=world.rank, world_size=world.size)
    return World(world.rank, world.size, world.local_rank, owns_group=True), chosen


def shutdown(world: World) -> None:
    """Destroy the process group if ``setup`` created it (a caller's own group is left alone). Every process must
    call this once all have finished training without failing, after dropping its DDP module (Trainer.close)."""
    if not (world.owns_group and dist.is_initialized()):
        return
    # gloo's worker threads free finished collectives' tensors, which takes the GIL, while the group's destructor
    # joins those threads holding the GIL: seen to deadlock when DDP's reducer held the last reference to the group.
    # So DDP goes first, while the group lives on, and a barrier lets the threads finish before the group goes.
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


def exclude_frozen(model: torch.nn.Module) -> torch.nn.Module:
    """Mark ``model``'s frozen parameters and its buffers (the projections A and B among them) so that a
    DistributedDataParallel wrapped around it later never broadcasts or reduces them, whoever wraps it (``wrap``,
    accelerate's ``Accelerator.prepare``, a script); returns ``model``. Without it DDP broadcasts every buffer from
    rank 0 before each forward (``broadcast_buffers=True``), sending A and B, which every process regenerates."""
    frozen = [name for name, p in model.named_parameters() if not p.requires_grad]
    buffers = [name for name, _ in model.named_buffers()]
    # torch's documented way to exclude names from DDP's broadcasts (untyped in torch)
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(  # type: ignore[no-untyped-call]
        model, frozen + buffers)
    return model


def wrap(model: torch.nn.Module, world: World, device: torch.device) -> torch.nn.Module:
    """``model`` in DDP, which then synchronises only what requires grad; ``model`` itself for one process."""
    if world.size == 1:
        return model
    return DistributedDataParallel(exclude_frozen(model), device_ids=[device.index] if device.type == "cuda" else None)


def accumulating(module: torch.nn.Module) -> contextlib.AbstractContextManager[Any]:
    """Backward passes that keep gradients local (DDP's ``no_sync``) until the last micro-batch of a step."""
    return module.no_sync() if isinstance(module, DistributedDataParallel) else contextlib.nullcontext()


def shard(order: Sequence[T], world: World) -> list[T]:
    """This process's share of ``order``: every world-size-th item from its rank, after padding ``order`` with its
    own first items to a multiple of the world size (as torch's DistributedSampler does).

    Every process gets as many items, so they run the same number of batches; and batch b of each process together
    hold exactly batch b of a single process whose batch is world size times larger.
    """
    padded = list(order) + list(itertools.islice(itertools.cycle(order), (-len(order)) % world.size))
    return padded[world.rank::world.size]


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


# Views of the tensors of the latest collective that these helpers ran, kept until the next one. gloo's worker
# threads drop their own references to a collective's tensors a moment after the caller sees it finish. Were that
# the last reference besides the tensor's Python object, torch would release the Python object from that thread
# (intrusive_ptr's 2-to-1 transition), which needs the GIL; a thread that asks for the GIL while the interpreter
# shuts down exits, and exiting through gloo's C++ frames aborts the whole process ("terminate called without an
# active exception", SIGABRT; seen in 1 run in 10 of `accelerate launch` right after the Trainer's last gather). A
# view holds a C++ reference to its base, so with one taken before the collective the worker's release is a plain
# count, and the last release happens here, in a thread that holds the GIL: at the next collective or when the
# interpreter clears this module.
_held: list[torch.Tensor] = []


def _hold(*tensors: torch.Tensor, more: bool = False) -> None:
    """Keep views of ``tensors``, which a collective is about to use, until the next collective (see ``_held``);
    ``more`` adds them to those of the same collective."""
    _held[:] = [*(_held if more else []), *(t.view_as(t) for t in tensors)]


def gather(world: World, value: T) -> list[T]:
    """``value`` of every process, in rank order (every process must call this). As ``all_gather_object``: the
    values are pickled, and read back from the processes of this one job only."""
    if world.size == 1:
        return [value]
    device = _collective_device()
    data = torch.frombuffer(bytearray(pickle.dumps(value)), dtype=torch.uint8)
    size = torch.tensor([data.numel()], dtype=torch.int64, device=device)
    sizes = [torch.empty_like(size) for _ in range(world.size)]
    _hold(size, *sizes)
    dist.all_gather(sizes, size)
    lengths = [int(n.item()) for n in sizes]
    padded = torch.zeros(max(lengths), dtype=torch.uint8, device=device)
    padded[: data.numel()] = data.to(device)
    parts = [torch.empty_like(padded) for _ in range(world.size)]
    _hold(padded, *parts, more=True)
    dist.all_gather(parts, padded)
    return [pickle.loads(part[:n].cpu().numpy().tobytes()) for part, n in zip(parts, lengths, strict=True)]


def mean(world: World, value: float) -> float:
    """The mean of ``value`` over the processes (every process must call this)."""
    if world.size == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=_collective_device())
    _hold(tensor)
    dist.all_reduce(tensor)
    return float(tensor.item()) / world.size


def sum_counts(world: World, sums: dict[str, float]) -> dict[str, float]:
    """The key-wise sum of every process's ``sums``, added in rank order so that every process gets the same."""
    total: dict[str, float] = {}
    for part in gather(world, sums):
        for key, value in part.items():
            total[key] = total.get(key, 0.0) + value
    return total


def any_stop(world: World, stop: bool, reason: str | None) -> tuple[bool, str | None]:
    """Whether any process asked to stop, and the first reason given (every process must call this)."""
    if world.size == 1:
        return stop, reason
    flag = torch.tensor([int(stop)], device=_collective_device())
    _hold(flag)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    if not flag.item():
        return False, reason
    stops = gather(world, (stop, reason))
    first = next(rank for rank, (asked, _) in enumerate(stops) if asked)
    return True, stops[first][1] or f"stopped by rank {first}"


def check_projection(world: World, fingerprint: str) -> None:
    """Refuse processes whose projections A and B differ (every process must call this)."""
    found = gather(world, fingerprint)
    differing = [rank for rank, value in enumerate(found) if value != found[0]]
    if differing:
        raise ProjectionMismatchError(
            f"The {world.size} processes regenerated different projections: rank 0 has fingerprint "
            f"{found[0][:16]}..., rank(s) {differing} have {sorted({found[r][:16] + '...' for r in differing})}. "
            "Every process must build A and B from the same projection_prng_key, projection_generator, r and "
            "adapted layer shapes (the same VeraConfig and base model) with the same vera_core version; A and B "
            "are never broadcast, so give every process the same settings."
        )


def launch_command(nproc: int, module: str, args: Sequence[str]) -> list[str]:
    """The torchrun command that runs ``python -m module *args`` in ``nproc`` processes on this machine."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", module, *args]


#: Where each process started by ``launch`` reports the Python error that ended it (``report_failure``).
ERRORS_ENV = "VERA_RANK_ERRORS"


@dataclass(frozen=True)
class RankFailure:
    """What one process reported before it failed: ``error`` ("Type: message"), whether it was raised on purpose by
    vera_core (a VeraError: bad settings or data, NaN loss; running it again would fail the same way), and when."""

    rank: int
    error: str
    deliberate: bool
    at: float
    traceback: str = ""


class DistributedError(VeraError, RuntimeError):
    """Processes that train together failed, or could not start together. ``failures``: the Python errors the
    processes reported, first first; ``silent``: the ranks that ended without one (killed, out of memory, a crash,
    or stopped by torchrun after another process failed)."""

    def __init__(self, message: str, failures: Sequence[RankFailure] = (), silent: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.failures, self.silent = list(failures), list(silent)

    @property
    def lost(self) -> bool:
        """Whether a process died rather than failed on purpose: worth running again (a job is re-queued)."""
        return bool(self.silent) and not any(f.deliberate for f in self.failures)


def report_failure(exc: BaseException, world: World | None = None) -> None:
    """Record why this process fails, for ``launch`` to say (a no-op outside ``launch``)."""
    folder = os.environ.get(ERRORS_ENV)
    if not folder:
        return
    rank = (world or from_env()).rank
    record = {"rank": rank, "error": f"{type(exc).__name__}: {exc}", "deliberate": isinstance(exc, VeraError),
              "at": time.time(), "traceback": "".join(traceback.format_exception(exc))}
    # written whole or not at all: torchrun may kill this process mid-write once another process has died
    part = Path(folder, f"rank-{rank}.json.part")
    part.write_text(json.dumps(record), encoding="utf-8")
    os.replace(part, Path(folder, f"rank-{rank}.json"))


def _reported(path: Path) -> RankFailure | None:
    """The failure a process reported in ``path``, or None if the report is unreadable (a process killed while
    writing it, by a vera_core older than the atomic write): that process then counts as one that said nothing."""
    try:
        return RankFailure(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def _failure(nproc: int, code: int, folder: Path) -> DistributedError:
    failures = sorted((f for f in map(_reported, folder.glob("rank-*.json")) if f is not None), key=lambda f: f.at)
    silent = sorted(set(range(nproc)) - {f.rank for f in failures})
    said = [f"rank {f.rank}: {f.error}" for f in failures[:1]]
    said += [f"rank(s) {sorted(f.rank for f in failures[1:])} failed after it"] if failures[1:] else []
    said += [f"rank(s) {silent} ended without a Python error (killed, out of memory, a crash, or stopped by "
             "torchrun once another process had failed)"] if silent else []
    return DistributedError(
        f"Training in {nproc} processes failed (torchrun exited with {code}): {'; '.join(said)}. Checkpoints written "
        "before the failure are intact: fix the cause and run again with --resume.", failures, silent)


def launch(nproc: int, module: str, args: Sequence[str], *, env: Mapping[str, str] | None = None) -> None:
    """Run ``python -m module *args`` in ``nproc`` local processes through torchrun; their output goes to ours.
    ``env``: variables to add for them (CUDA_VISIBLE_DEVICES, say). A failure raises DistributedError with the error
    each process reported (the module's main calls ``report_failure``)."""
    if nproc < 1:
        raise VeraConfigError(f"nproc must be at least 1, got {nproc}.")
    with tempfile.TemporaryDirectory(prefix="vera-ranks-") as folder:
        variables = {**os.environ, **(env or {}), ERRORS_ENV: folder}
        code = subprocess.run(launch_command(nproc, module, args), env=variables, check=False).returncode
        if code != 0:
            raise _failure(nproc, code, Path(folder))

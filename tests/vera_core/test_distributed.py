"""Training in several processes: torchrun starts 2 processes on the CPU (gloo), DDP all-reduces the gradients.

The slow tests launch real processes with the command `vera train --nproc` uses (vera_core.distributed.
launch_command); each process runs this module's ``main`` (``python -m tests.vera_core.test_distributed``), which
trains test_trainer's tiny classifier.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.vera_core.test_trainer import tiny_classifier, trainer, vectors
from vera_core import ProjectionMismatchError, VeraConfigError, distributed, training_checkpoints
from vera_core.callbacks import TrainerCallback
from vera_core.distributed import World
from vera_core.trainer import Trainer, TrainerState, TrainingArguments

ROOT = Path(__file__).resolve().parents[2]
# 48 examples, 4 per process and step, 2 processes: 6 steps per epoch, 12 in all; a checkpoint every 4 steps.
SAME = {"epochs": 2, "load_best_at_end": False, "save_every": 4}
MARKED = 1.0  # added by rank 1 to a row of the frozen base that no input reads (token type 1)


# ---- what each process runs ------------------------------------------------------------------------------------
class KillAt(TrainerCallback):
    """Kills this process outright (no clean-up, as a crash or the OOM killer would) after a step."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer: Trainer, state: TrainerState, data: dict[str, float]) -> None:
        if state.step >= self.step:
            os._exit(3)


def main(options: dict[str, Any]) -> None:
    """One process of a run: rank 1 marks its frozen base, writes to a folder of its own if it writes at all, and
    with ``kill_at`` dies after that step; with ``flip_projection`` its projection differs from rank 0's."""
    rank = distributed.from_env().rank
    model = tiny_classifier()
    unread = model.model.bert.embeddings.token_type_embeddings.weight  # frozen; row 1 is never looked up
    before = unread[1].detach().clone()
    if rank == 1:
        unread.data[1] += MARKED
        if options.get("flip_projection"):
            model.projection.vera_A.neg_()
    callbacks = (KillAt(options["kill_at"]),) if rank == 1 and options.get("kill_at") else ()
    out = options["out"] if rank == 0 else f"{options['out']}-rank{rank}"
    on = {"device": "cuda", "precision": "fp32"} if options.get("cuda") else {}  # else the CPU (the helper's default)
    t = trainer(model, callbacks, batch_size=4, output_dir=out, distributed="ddp", **on, **SAME)
    t.train(resume_from=options.get("resume"))
    if rank == 1 and not torch.equal(unread[1].detach(), before + MARKED):
        raise SystemExit("rank 1's frozen base was overwritten by rank 0's: DDP synchronised a frozen parameter")
    if rank == 0:
        save_file(vectors(t.model), options["vectors"])
    t.close()


#: The multi-process tests train on the CPU (gloo) on any machine: on one with CUDA, the processes' default device
#: would be the GPU numbered LOCAL_RANK, and a machine with one GPU has no cuda:1 (the first run on an H200 machine,
#: session 32: "invalid device ordinal"), nor would the figures be the CPU's that the tests compare with.
CPU_ONLY = {"CUDA_VISIBLE_DEVICES": ""}


def torchrun(**options: Any) -> subprocess.CompletedProcess[str]:
    """2 processes of ``main``: on the CPU (gloo), or with ``cuda=True`` one GPU each (NCCL)."""
    command = distributed.launch_command(2, "tests.vera_core.test_distributed", [json.dumps(options)])
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **({} if options.get("cuda") else CPU_ONLY)})


# ---- the tests ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def one_process() -> Trainer:
    """The reference: a single process with the global batch of 2 x 4."""
    t = trainer(batch_size=8, **{k: v for k, v in SAME.items() if k != "save_every"})
    t.train()
    return t


def assert_same_vectors(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> None:
    assert set(found) == set(expected) and sum("vera_lambda_" in name for name in found) == 8  # 4 layers' d, b
    for name in expected:
        torch.testing.assert_close(found[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.slow
def test_a_killed_rank_stops_the_run_and_it_resumes_from_the_last_checkpoint(
    tmp_path: Path, one_process: Trainer,
) -> None:
    """Two processes, rank 1 killed after step 6, then resumed by two processes from the checkpoint of step 4: the
    final vectors are those of one process with the global batch, and rank 1 never wrote anything."""
    run, kept = tmp_path / "run", str(tmp_path / "vectors.safetensors")
    killed = torchrun(out=str(run), vectors=kept, kill_at=6)
    assert killed.returncode != 0 and "exitcode  : 3" in killed.stderr, killed.stderr[-3000:]
    checkpoints = sorted(p.name for p in (run / "checkpoints").iterdir() if not p.name.startswith("."))
    assert checkpoints == ["step-00000004"] and not Path(kept).exists()
    resumed = torchrun(out=str(run), vectors=kept, resume=str(run))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_vectors(vectors(one_process.model), load_file(kept))
    assert one_process.state.step == 12
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000008", "step-00000012"]
    assert not (tmp_path / "run-rank1").exists()  # rank 1's output_dir: it never wrote a checkpoint
    saved = json.loads((run / "checkpoints/step-00000012/trainer_state.json").read_text())
    assert saved["world_size"] == 2 and saved["state"]["steps_per_epoch"] == 6
    assert [step for step, _ in saved["state"]["loss_history"]] == [10, 12]  # every log_every (10) and the last
    losses = [loss for _, loss in saved["state"]["loss_history"]]  # the mean over both processes
    assert losses == pytest.approx([loss for _, loss in one_process.state.loss_history], rel=1e-5)
    rng = load_file(str(run / "checkpoints/step-00000012/optimizer.safetensors"))
    assert {"rng.cpu", "rng.cpu.1"} <= set(rng)  # each process's RNG state, to resume each one exactly


@pytest.mark.slow
def test_processes_with_different_projections_are_refused(tmp_path: Path) -> None:
    result = torchrun(out=str(tmp_path / "run"), vectors=str(tmp_path / "v.safetensors"), flip_projection=True)
    assert result.returncode != 0
    assert "ProjectionMismatchError: The 2 processes regenerated different projections: rank 0 has fingerprint" \
        in result.stderr, result.stderr[-3000:]
    assert "rank(s) [1] have" in result.stderr and not (tmp_path / "run").exists()


def two_machines(args: list[str], outs: list[Path]) -> list[subprocess.CompletedProcess[str]]:
    """`vera ARGS --out OUT` on two "machines": two torchrun agents (--nnodes 2, one process each, static rendezvous
    on a free loopback port: node 0 is rank 0), each writing to its own folder, as the multi-machine line of
    docs/vera_core.md runs them."""
    from tests.registry.servers import VERA, free_port

    port, done = free_port(), []
    logs = [out.with_suffix(".log") for out in outs]
    agents = []
    for node, (out, log) in enumerate(zip(outs, logs, strict=True)):
        with log.open("w") as handle:
            agents.append(subprocess.Popen(
                [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(node),
                 "--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port", str(port), "--no-python",
                 "--", str(VERA), *args, "--out", str(out)], stdout=handle, stderr=subprocess.STDOUT, text=True,
                env={**os.environ, **CPU_ONLY}))
    for agent, log in zip(agents, logs, strict=True):
        try:
            agent.wait(timeout=600)
        finally:
            if agent.poll() is None:
                agent.kill()
        done.append(subprocess.CompletedProcess(agent.args, agent.returncode, log.read_text(), ""))
    return done


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA devices (NCCL between 2 processes)")
def test_two_processes_on_two_cuda_devices_equal_one_with_the_global_batch(tmp_path: Path) -> None:
    """DDP over NCCL, one GPU a process (cuda:LOCAL_RANK), in float32: the vectors of one GPU with the global batch,
    the frozen base never synchronised (rank 1's marked row kept, checked in ``main``), only rank 0 writing."""
    kept = str(tmp_path / "vectors.safetensors")
    done = torchrun(out=str(tmp_path / "run"), vectors=kept, cuda=True)
    assert done.returncode == 0, done.stderr[-3000:]
    reference = trainer(batch_size=8, device="cuda", precision="fp32", **{k: v for k, v in SAME.items()
                                                                          if k != "save_every"})
    reference.train()
    expected = vectors(reference.model)
    found = load_file(kept)
    assert set(found) == set(expected) and sum("vera_lambda_" in name for name in found) == 8
    for name in expected:  # GPU reductions differ with the batch's split more than the CPU's do
        torch.testing.assert_close(found[name], expected[name].cpu(), rtol=1e-4, atol=1e-5, msg=name)
    saved = json.loads((tmp_path / "run" / "checkpoints" / "step-00000012" / "trainer_state.json").read_text())
    assert saved["world_size"] == 2 and not (tmp_path / "run-rank1").exists()


@pytest.mark.slow
def test_vera_train_on_2_processes_or_2_machines_equals_one_process_with_the_global_batch(tmp_path: Path) -> None:
    """`vera train --nproc 2` (one machine), and the same on two machines through torchrun's rendezvous, give the
    vectors of one process with their global batch; on two machines only rank 0's gets the files."""
    from tests.commands import wide_vera as vera  # here, not at the top: torchrun's processes import this module
    from tests.registry.tiny_lm import WORDS, save_tiny_llama

    base = save_tiny_llama(tmp_path / "base")
    n = len(WORDS)
    sentences = [" ".join(WORDS[(i // n**k + k) % n] for k in range(3)) + " on the mat" for i in range(60)]
    data = tmp_path / "data.jsonl"  # every text 6 tokens: each process's mean loss weighs its tokens equally
    data.write_text("".join(json.dumps({"text": text}) + "\n" for text in sentences))
    common = ("train", "--base-model", str(base), "--task", "causal-lm", "--data", str(data), "--r", "8",
              "--max-steps", "5", "--no-progress")
    two = vera(*common, "--nproc", "2", "--batch-size", "2", "--out", str(tmp_path / "two"))
    assert two.returncode == 0, two.stderr[-3000:]
    one = vera(*common, "--batch-size", "4", "--out", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr[-3000:]
    metrics = {name: json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("one", "two")}
    assert (metrics["two"]["processes"], metrics["two"]["global_batch_size"]) == (2, 4)
    assert (metrics["one"]["processes"], metrics["one"]["global_batch_size"]) == (1, 4)
    assert metrics["two"]["examples"]["train"] >= 5 * 4  # 5 steps of 4 that never reach the epoch's last batch
    assert metrics["two"]["steps"] == 5 and "steps" in two.stdout  # the summary, printed by the parent
    machines = two_machines([*common, "--batch-size", "2"], [tmp_path / "machine-0", tmp_path / "machine-1"])
    assert [m.returncode for m in machines] == [0, 0], machines[0].stdout[-3000:] + machines[1].stdout[-3000:]
    assert "steps" in machines[0].stdout and not (tmp_path / "machine-1" / "adapter_model.safetensors").exists()
    metrics["machines"] = json.loads((tmp_path / "machine-0" / "metrics.json").read_text())
    assert (metrics["machines"]["processes"], metrics["machines"]["global_batch_size"]) == (2, 4)
    a, b, c = (load_file(str(tmp_path / name / "adapter_model.safetensors")) for name in ("one", "two", "machine-0"))
    assert set(a) == set(b) == set(c) and any("vera_lambda_d" in k for k in a)
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6, msg=key)
        torch.testing.assert_close(c[key], a[key], rtol=1e-5, atol=1e-6, msg=key)


def test_shards_of_a_batch_hold_the_single_process_batch() -> None:
    order = list(range(10, 21))  # 11 items, 2 processes: padded with the first item
    shards = [distributed.shard(order, World(rank, 2)) for rank in range(2)]
    assert shards == [[10, 12, 14, 16, 18, 20], [11, 13, 15, 17, 19, 10]]
    per_process, processes = 2, 2
    for b in range(2):  # batch b of every process: batch b of one process with a batch 2 x larger
        together = sorted(i for s in shards for i in s[b * per_process:(b + 1) * per_process])
        assert together == order[b * per_process * processes:(b + 1) * per_process * processes]
    assert distributed.shard(order, World()) == order


def test_fsdp_is_refused_with_what_to_use_instead() -> None:
    with pytest.raises(VeraConfigError, match=r"distributed='fsdp' is not supported.*Use distributed='ddp'.*"
                                              r"vera train --nproc N"):
        TrainingArguments(distributed="fsdp")


def test_ddp_outside_torchrun_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(VeraConfigError, match="distributed='ddp' but this process was not started by torchrun"):
        trainer(distributed="ddp")


@pytest.mark.parametrize(("env", "message"), [
    ({"WORLD_SIZE": "2", "LOCAL_RANK": "0"}, "WORLD_SIZE=2 is set but RANK is not"),
    ({"WORLD_SIZE": "2", "RANK": "2", "LOCAL_RANK": "0"}, r"inconsistent: RANK=2, LOCAL_RANK=0, WORLD_SIZE=2"),
    ({"WORLD_SIZE": "two"}, "WORLD_SIZE must be an integer"),
], ids=["no-rank", "rank-out-of-range", "not-a-number"])
def test_a_broken_torchrun_environment_is_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(VeraConfigError, match=message):
        distributed.from_env(env)


def test_torchrun_environment_is_read() -> None:
    world = distributed.from_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"})
    assert (world.rank, world.size, world.local_rank, world.is_main) == (3, 4, 1, False)
    assert distributed.from_env({}) == World()


def test_a_checkpoint_resumes_only_with_the_number_of_processes_that_wrote_it(tmp_path: Path) -> None:
    trainer(max_steps=4, save_every=4, output_dir=str(tmp_path)).train()
    state = tmp_path / "checkpoints/step-00000004/trainer_state.json"
    saved = json.loads(state.read_text())
    assert saved["world_size"] == 1
    state.write_text(json.dumps({**saved, "world_size": 2}))  # as a run of 2 processes writes it
    training_checkpoints.seal(state.parent)  # a changed file is otherwise (rightly) a torn checkpoint
    with pytest.raises(VeraConfigError, match=r"written by a run of 2 process\(es\) and this run has 1.*"
                                              r"vera train --nproc 2"):
        trainer(max_steps=8, output_dir=str(tmp_path)).train(resume_from=tmp_path)


def test_a_projection_mismatch_message_names_the_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(0, 3)
    monkeypatch.setattr(distributed, "gather", lambda w, value: [value, "f" * 64, value])
    with pytest.raises(ProjectionMismatchError, match=r"rank 0 has fingerprint 0{16}\.\.\., rank\(s\) \[1\] have "
                                                      r"\['f{16}\.\.\.'\].*same projection_prng_key"):
        distributed.check_projection(world, "0" * 64)


def test_a_report_torn_by_a_kill_counts_as_a_rank_that_said_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """torchrun kills the other processes once one dies, maybe while one writes its report: the run is then lost
    (a job is queued again), not failed on an unreadable report (a JSONDecodeError that once failed a job in CI)."""
    monkeypatch.setenv(distributed.ERRORS_ENV, str(tmp_path))
    distributed.report_failure(RuntimeError("Connection closed by peer"), World(0, 3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rank-0.json"]  # written whole: no part file left
    (tmp_path / "rank-1.json").write_text("")  # rank 1 killed between opening its report and writing it
    (tmp_path / "rank-2.json").write_text('{"rank": 2, "error": "Runt')
    error = distributed._failure(3, 1, tmp_path)
    assert [f.rank for f in error.failures] == [0] and error.silent == [1, 2] and error.lost
    assert "rank 0: RuntimeError: Connection closed by peer" in str(error)
    distributed.report_failure(VeraConfigError("bad settings"), World(1, 3))
    assert not distributed._failure(3, 1, tmp_path).lost  # a deliberate failure: running it again fails the same way


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))


def test_more_processes_than_gpus_on_a_machine_is_refused_saying_how_many(monkeypatch: pytest.MonkeyPatch) -> None:
    """Seen on an H200 machine (one GPU): a second process asked torch for cuda:1 and died with "invalid device
    ordinal". Before any process group is made, it is refused saying how many processes the machine takes."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    for name, value in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(VeraConfigError, match=r"process 1 on this machine, which has 1 CUDA device\(s\).*"
                                              r"torchrun --nproc-per-node 1.*device='cpu'"):
        distributed.setup("auto")
    assert not torch.distributed.is_initialized()

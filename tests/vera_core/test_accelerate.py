"""vera_core from HuggingFace accelerate: a VeraModel trained in accelerate's own loop (``Accelerator.prepare``,
``accelerator.backward``), and vera_core's Trainer in a process group that accelerate started, both equal to
vera_core's Trainer in one process with the same global batch.

The 2-process test starts real processes with `accelerate launch` (which runs torchrun; gloo on the CPU); each runs
this module's ``main`` (``python -m tests.vera_core.test_accelerate``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.vera_core.test_distributed import CPU_ONLY
from tests.vera_core.test_trainer import DATA, tiny_classifier, tokenizer, trainer, vectors
from vera_core import distributed
from vera_core.data import SequenceClassification

ROOT = Path(__file__).resolve().parents[2]
STEPS = 5
# Every step sees all 48 examples (one process: a batch of 48; two: 24 each), so the order within the epoch does not
# matter; constant learning rates without clipping, as the hand-written loop below applies them.
SAME = {"max_steps": STEPS, "schedule": "constant", "warmup_ratio": 0.0, "max_grad_norm": None,
        "load_best_at_end": False}


def accelerate_loop(accelerator: Any, batch_size: int, steps: int = STEPS,
                    lrs: tuple[float, float] = (5e-2, 1e-2)) -> dict[str, torch.Tensor]:
    """The loop of accelerate's examples around a VeraModel, with the Trainer's optimizer groups (vectors at lr 5e-2,
    the head at 1e-2 with weight decay 0.01, unless ``lrs`` says), for ``steps`` steps."""
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DataLoader

    model = distributed.exclude_frozen(tiny_classifier())  # DDP must never broadcast A, B or the frozen base
    unread = model.model.bert.embeddings.token_type_embeddings.weight  # frozen; row 1 is never looked up
    if accelerator.process_index == 1:
        unread.data[1] += 1.0  # kept only if DDP leaves the frozen base alone
    marked = unread[1].detach().clone()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW([
        {"params": [p for n, p in trainable.items() if "vera_lambda_" in n], "lr": lrs[0], "weight_decay": 0.0},
        {"params": [p for n, p in trainable.items() if "vera_lambda_" not in n], "lr": lrs[1], "weight_decay": 0.01},
    ])
    loader = DataLoader(DATA, batch_size=batch_size, collate_fn=SequenceClassification(tokenizer()).collate)
    prepared, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    if accelerator.num_processes > 1 and not isinstance(prepared, DistributedDataParallel):
        raise SystemExit(f"accelerate did not wrap the model in DDP: {type(prepared).__name__}")
    prepared.train()
    step = 0
    while step < steps:
        for batch in loader:
            accelerator.backward(prepared(**batch).loss)
            optimizer.step()
            optimizer.zero_grad()
            step += 1
            if step == steps:
                break
    if not torch.equal(unread[1].detach().cpu(), marked.cpu()):  # prepare moved the model to its device
        raise SystemExit("a frozen parameter was synchronised between the processes")
    return vectors(accelerator.unwrap_model(prepared))


def main(options: dict[str, Any]) -> None:
    """One of the processes `accelerate launch` starts: accelerate's loop, then vera_core's Trainer, which finds
    accelerate's process group and trains in it (each process with half the batch)."""
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    if accelerator.num_processes != 2 or not torch.distributed.is_initialized():
        raise SystemExit(f"expected 2 processes in a process group, got {accelerator.num_processes}")
    looped = accelerate_loop(accelerator, batch_size=len(DATA) // 2)
    t = trainer(batch_size=len(DATA) // 2, **SAME)
    t.train()
    if (t.world.size, t.world.owns_group) != (2, False):
        raise SystemExit(f"the Trainer did not train in accelerate's process group: {t.world}")
    if accelerator.is_main_process:
        save_file(looped, options["loop"])
        save_file(vectors(t.model), options["trainer"])
    t.close()
    accelerator.end_training()


@pytest.fixture(scope="module")
def reference() -> dict[str, torch.Tensor]:
    """vera_core's Trainer alone, with the global batch."""
    t = trainer(batch_size=len(DATA), **SAME)
    t.train()
    return vectors(t.model)


def assert_same_vectors(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> None:
    """Equal within float rounding: the examples of a batch are summed in another order (the Trainer shuffles), and
    Adam divides by the gradients' running RMS, so differences of 1e-7 grow to ~2e-6 in 5 steps; a step moves a
    vector by up to lr = 5e-2, so atol 1e-5 is a fifth of a thousandth of one step."""
    assert set(found) == set(expected) and sum("vera_lambda_" in name for name in found) == 8  # 4 layers' d, b
    for name in expected:
        torch.testing.assert_close(found[name], expected[name], rtol=1e-5, atol=1e-5, msg=name)


def test_a_vera_model_in_accelerates_loop_trains_as_vera_cores_trainer(reference: dict[str, torch.Tensor]) -> None:
    from accelerate import Accelerator

    before = vectors(tiny_classifier())
    found = accelerate_loop(Accelerator(cpu=True), batch_size=len(DATA))
    assert_same_vectors(reference, found)
    assert any(not torch.equal(found[n], before[n]) for n in found)  # it trained


def eval_loss(trained: dict[str, torch.Tensor]) -> float:
    """The float32 loss over DATA on the CPU of the tiny classifier holding ``trained``'s vectors and head."""
    model = tiny_classifier().eval()
    for name, parameter in model.named_parameters():
        if name in trained:
            parameter.data.copy_(trained[name])
    with torch.no_grad():
        return float(model(**SequenceClassification(tokenizer()).collate(DATA)).loss)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device"))])
def test_a_vera_model_in_accelerates_bf16_loop_learns_as_in_fp32(device: str) -> None:
    """accelerate's mixed precision (``Accelerator(mixed_precision="bf16")``: autocast around the forward) trains a
    VeraModel as float32 does, on the CPU and on a GPU: the loss drops decisively and ends within 0.1 of the float32
    run's, and the vectors and head stay float32. Decisive settings (36 steps at lr 0.5 / 0.1; on the CPU the loss
    goes 0.693 -> 0.0004 in bf16 and 0.0008 in fp32), for the reason test_mixed_precision_training_on_cuda gives:
    smaller moves round away in bf16."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    trained = {}
    try:
        for precision in ("bf16", "no"):
            AcceleratorState._reset_state(True)  # one state a process: the other tests' Accelerator(cpu=True)
            accelerator = Accelerator(cpu=device == "cpu", mixed_precision=precision)
            assert (accelerator.device.type, accelerator.mixed_precision) == (device, precision)
            trained[precision] = accelerate_loop(accelerator, batch_size=8, steps=36, lrs=(0.5, 0.1))
    finally:
        AcceleratorState._reset_state(True)
    start, mixed, full = eval_loss(vectors(tiny_classifier())), eval_loss(trained["bf16"]), eval_loss(trained["no"])
    assert mixed < start - 0.2 and abs(mixed - full) < 0.1, (start, mixed, full)
    assert {t.dtype for t in trained["bf16"].values()} == {torch.float32}
    assert any(not torch.equal(t, trained["no"][n]) for n, t in trained["bf16"].items())  # bf16 arithmetic did run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_accelerate_launch_in_two_processes_equals_one_process(
    tmp_path: Path, reference: dict[str, torch.Tensor],
) -> None:
    options = {"loop": str(tmp_path / "loop.safetensors"), "trainer": str(tmp_path / "trainer.safetensors")}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port()), "-m", "tests.vera_core.test_accelerate", json.dumps(options)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HOME": str(tmp_path / "hf"), "OMP_NUM_THREADS": "1", **CPU_ONLY}
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_vectors(reference, load_file(options["loop"]))
    assert_same_vectors(reference, load_file(options["trainer"]))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))

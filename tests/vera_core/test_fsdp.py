"""What happens when a VeraModel is wrapped in FSDP (torch 2.13, 2 CPU processes, gloo).

It trains, in a loop of one's own: FSDP shards the base and the trainable vectors, the projections A and B (buffers)
stay whole and equal on every process, and the gathered vectors equal one process's. vera_core itself refuses a
sharded model, saying what to use instead (DDP), where it would otherwise fail obscurely (the Trainer: "Operator
c10d.broadcast_.default does not have a sharding strategy registered") or write garbage (save_adapter read a
DTensor's local shard as the whole vector). Each process runs this module's ``main`` under torchrun.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.vera_core.test_distributed import CPU_ONLY
from tests.vera_core.test_trainer import DATA, tiny_bert, tiny_classifier, tokenizer, trainer, vectors
from vera_core import VeraConfigError, distributed, load_adapter, save_adapter
from vera_core.data import SequenceClassification

ROOT = Path(__file__).resolve().parents[2]
STEPS = 3


def train_steps(model: torch.nn.Module, forward: torch.nn.Module, examples: list[Any]) -> None:
    """STEPS optimizer steps on ``examples`` through ``forward`` (the model, or its FSDP wrapper), with the Trainer's
    optimizer groups and constant learning rates."""
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW([
        {"params": [p for n, p in trainable.items() if "vera_lambda_" in n], "lr": 5e-2, "weight_decay": 0.0},
        {"params": [p for n, p in trainable.items() if "vera_lambda_" not in n], "lr": 1e-2, "weight_decay": 0.01},
    ])
    batch = SequenceClassification(tokenizer()).collate(examples)
    for _ in range(STEPS):
        forward(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def refusal(call: Any) -> str:
    try:
        call()
    except VeraConfigError as exc:
        return str(exc)
    return "not refused"


def main(options: dict[str, Any]) -> None:
    """One process: FSDP2 (fully_shard) trains and is refused by vera_core; FSDP1 is refused too."""
    from torch.distributed.fsdp import FullyShardedDataParallel, fully_shard
    from torch.distributed.tensor import DTensor

    torch.distributed.init_process_group("gloo")
    world = distributed.from_env()
    model = tiny_classifier()
    fully_shard(model)
    base = model.model.bert.encoder.layer[0].attention.self.query.base_layer.weight
    a = model.projection.vera_A
    if not isinstance(base, DTensor) or isinstance(a, DTensor) or tuple(a.shape) != (16, 32):
        raise SystemExit(f"expected a sharded base and a whole projection: {type(base)}, {type(a)} {a.shape}")
    distributed.check_projection(world, model.projection_fingerprint())  # the same A and B on every process
    said = {"trainer": refusal(lambda: trainer(model)), "save": refusal(lambda: save_adapter(model, options["out"])),
            "state": refusal(lambda: model.adapter_state_dict())}
    train_steps(model, model, DATA[world.rank::world.size])
    gathered = {n: p.full_tensor() for n, p in model.named_parameters() if p.requires_grad}  # every process
    wrapped = FullyShardedDataParallel(tiny_classifier(), device_id=torch.device("cpu"), use_orig_params=True)
    inner = wrapped.module
    said |= {"fsdp1-wrapper": refusal(lambda: trainer(wrapped)),  # type: ignore[arg-type]
             "fsdp1-inner": refusal(lambda: trainer(inner)), "fsdp1-save": refusal(lambda: save_adapter(inner, "x"))}
    if world.is_main:
        whole = tiny_classifier()
        whole.load_state_dict(gathered, strict=False)  # the documented way out: gather, load unsharded, save
        save_adapter(whole, options["out"])
        save_file(gathered, options["vectors"])
        Path(options["said"]).write_text(json.dumps(said))
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_fsdp_trains_a_vera_model_in_ones_own_loop_and_vera_core_refuses_the_sharded_model(tmp_path: Path) -> None:
    options = {"out": str(tmp_path / "adapter"), "vectors": str(tmp_path / "v.safetensors"),
               "said": str(tmp_path / "said.json")}
    command = distributed.launch_command(2, "tests.vera_core.test_fsdp", [json.dumps(options)])
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
                            env={**os.environ, "PYTHONPATH": str(ROOT), **CPU_ONLY})
    assert result.returncode == 0, result.stderr[-3000:]
    said = json.loads(Path(options["said"]).read_text())
    advice = r"vera_core does not gather FSDP shards.*Train with DDP instead.*vera train --nproc N.*full_tensor\(\)"
    expected = {
        "trainer": r"vera_core's Trainer was given a model sharded by FSDP: FSDP2 \(fully_shard\) wraps the model",
        "save": r"Saving the adapter \(adapter_state_dict\) was given a model sharded by FSDP: FSDP2",
        "state": r"Saving the adapter .* FSDP2 \(fully_shard\) wraps the model",
        "fsdp1-wrapper": r"vera_core's Trainer .* FSDP1 \(FullyShardedDataParallel\) wraps the model",
        "fsdp1-inner": r"vera_core's Trainer .* parameter '.*' is a view into an FSDP1 flat parameter",
        "fsdp1-save": r"Saving the adapter .* parameter '.*' is a view into an FSDP1 flat parameter",
    }
    for key, pattern in expected.items():
        assert re.search(f"{pattern}.*{advice}", said[key], re.DOTALL), (key, said[key])
    reference = tiny_classifier()
    train_steps(reference, reference, DATA)  # one process, the whole batch
    expected_vectors, found = vectors(reference), load_file(options["vectors"])
    assert set(found) == set(expected_vectors)
    for name in expected_vectors:  # Adam over 3 steps on sums in another order: see test_accelerate
        torch.testing.assert_close(found[name], expected_vectors[name], rtol=1e-5, atol=1e-5, msg=name)
    loaded = load_adapter(tiny_bert(), options["out"])  # what rank 0 saved, in a fresh base
    for name, value in vectors(loaded).items():
        torch.testing.assert_close(value, expected_vectors[name], rtol=1e-5, atol=1e-5, msg=name)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))

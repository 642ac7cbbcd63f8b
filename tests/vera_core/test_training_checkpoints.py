"""Checkpoints are sealed with a manifest and never loaded torn: a resume takes the newest intact one."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tests.vera_core.test_trainer import trainer, vectors
from vera_core import VeraConfigError
from vera_core import training_checkpoints as checkpoints
from vera_core.trainer import CheckpointSkippedWarning

SAME = {"schedule": "constant", "warmup_ratio": 0.0, "load_best_at_end": False, "seed": 2}


def truncate(folder: Path) -> None:  # the end of a file never reached the disk
    path = folder / "optimizer.safetensors"
    path.write_bytes(path.read_bytes()[:-100])


def flip_a_byte(folder: Path) -> None:  # same size, other bytes
    path = folder / "trainable.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


TEARS: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated": (truncate, r"optimizer.safetensors has \d+ bytes, its manifest says \d+"),
    "flipped": (flip_a_byte, r"trainable.safetensors's SHA-256 differs from its manifest's"),
    "no-manifest": (lambda folder: (folder / "manifest.json").unlink(), r"it has no manifest.json: it was not "
                    "finished"),
    "file-missing": (lambda folder: (folder / "trainer_state.json").unlink(), r"trainer_state.json is missing"),
}


def test_a_checkpoint_lists_its_files_with_their_hashes(tmp_path: Path) -> None:
    trainer(max_steps=3, save_every=3, output_dir=str(tmp_path), **SAME).train()
    folder = tmp_path / "checkpoints" / "step-00000003"
    manifest = json.loads((folder / "manifest.json").read_text())["files"]
    assert {"trainer_state.json", "trainable.safetensors", "optimizer.safetensors", "adapter_model.safetensors",
            "adapter_config.json"} <= set(manifest)
    assert set(manifest) == {p.name for p in folder.iterdir()} - {"manifest.json"}
    found, skipped = checkpoints.latest(tmp_path / "checkpoints")
    assert found == checkpoints.CheckpointInfo(folder, 3, 1) and skipped == []
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-00000003"]  # no partial folder left


@pytest.mark.parametrize("tear", TEARS, ids=list(TEARS))
def test_a_torn_newest_checkpoint_is_passed_over_and_the_run_resumes_from_the_one_before(
    tmp_path: Path, tear: str,
) -> None:
    """Checkpoints at steps 3 and 6, the one of step 6 torn: resuming to 12 steps starts from step 3, says why it
    passed over step 6, and ends where 12 straight steps end."""
    straight = trainer(max_steps=12, **SAME)
    straight.train()
    trainer(max_steps=6, save_every=3, output_dir=str(tmp_path), **SAME).train()
    damage, reason = TEARS[tear]
    damage(tmp_path / "checkpoints" / "step-00000006")
    (tmp_path / "checkpoints" / ".step-00000009.partial").mkdir()  # a write that never finished: not a candidate
    resumed = trainer(max_steps=12, save_every=3, output_dir=str(tmp_path), **SAME)
    with pytest.warns(CheckpointSkippedWarning, match=r"Resuming from step-00000003, the newest intact checkpoint "
                                                      rf".*passed over: step-00000006: {reason}"):
        result = resumed.train(resume_from=tmp_path)
    assert result.resumed_from_step == 3 and result.state.step == 12
    a, b = vectors(straight.model), vectors(resumed.model)
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-6, atol=1e-7)


def test_a_torn_checkpoint_named_directly_is_refused(tmp_path: Path) -> None:
    trainer(max_steps=3, save_every=3, output_dir=str(tmp_path), **SAME).train()
    folder = tmp_path / "checkpoints" / "step-00000003"
    truncate(folder)
    with pytest.raises(VeraConfigError, match=r"step-00000003 cannot be resumed from: optimizer.safetensors has "
                                              r".*Resume from its run folder"):
        trainer(max_steps=6, output_dir=str(tmp_path), **SAME).train(resume_from=folder)


def test_when_every_checkpoint_is_torn_resuming_is_refused_saying_why(tmp_path: Path) -> None:
    trainer(max_steps=4, save_every=2, output_dir=str(tmp_path), **SAME).train()
    for name in ("step-00000002", "step-00000004"):
        (tmp_path / "checkpoints" / name / "manifest.json").unlink()
    with pytest.raises(VeraConfigError, match=r"No intact checkpoint under .*checkpoints.*step-00000004: it has no "
                                              r"manifest.json.*; step-00000002: it has no manifest.json.*Start over"):
        trainer(max_steps=6, output_dir=str(tmp_path), **SAME).train(resume_from=tmp_path)
    assert checkpoints.latest(tmp_path / "nothing-here") == (None, [])


def test_an_unreadable_manifest_is_a_reason_not_a_crash(tmp_path: Path) -> None:
    folder = tmp_path / "step-00000001"
    folder.mkdir()
    (folder / "manifest.json").write_text("{not json")
    assert (checkpoints.problem(folder) or "").startswith("its manifest.json is unreadable (JSONDecodeError")
    (folder / "manifest.json").write_text(json.dumps({"files": {}}))
    assert checkpoints.problem(folder) == "its manifest.json lists no trainer_state.json"

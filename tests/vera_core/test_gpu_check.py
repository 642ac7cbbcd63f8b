"""bench/gpu_check.sh, the GPU proof, kept working on the CPU: `--cpu --quick` runs every step with small shapes in
this virtualenv and writes the fragment for bench/RESULTS.md.

(No test here has "cuda" in its name: the script runs `pytest tests/vera_core -k cuda`, which must not select them.)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "gpu_check.sh"


def gpu_check(*args: str, timeout: float = 170) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_the_gpu_check_runs_every_step_on_the_cpu(tmp_path: Path) -> None:
    result = gpu_check("--cpu", "--quick", "--venv", sys.prefix, "--out", str(tmp_path))
    fragment = (tmp_path / "gpu_check.md").read_text()
    assert result.returncode == 0, fragment + result.stderr[-3000:]
    assert fragment.startswith("## bench/gpu_check.sh, ") and "cpu (quick shapes)" in fragment.splitlines()[0]
    assert "Not every step passed" not in fragment and "FAILED" not in fragment and "TIMED OUT" not in fragment
    headings = ("Set-up", "Device", "Projections", "CUDA tests", "Training step", "Mixed-adapter", "vera serve-model")
    for heading in headings:
        assert f"\n### {heading}" in fragment
    assert "--cpu: no GPU asked for; nvidia-smi not run" in fragment
    assert "**equal bit for bit**" in fragment and "the CPU against itself" in fragment
    assert "skipped on the CPU (needs a CUDA device)" in fragment  # what needs CUDA says so
    assert fragment.count("| peft-vera |") == 2 and fragment.count("| ours |") == 2  # both models, three contestants
    assert fragment.count("**same**") == 3  # two training cases and the mixed batch agree with PEFT
    assert "`vera serve-model --device cpu`: a classify request for bench/gpu:1 answered" in fragment
    assert {p.name for p in tmp_path.glob("*.log")} >= {"device.log", "projection.log", "cuda-tests.log",
                                                         "train.log", "mixed.log", "serve.log", "serve-model.log"}


@pytest.mark.parametrize(("args", "message"), [
    (["--gpu"], "unknown option --gpu"),
    (["--budget", "soon"], "--budget must be a whole number of seconds, got 'soon'"),
    (["--venv", "/nonexistent/venv"], "--venv /nonexistent/venv has no bin/python"),
], ids=["unknown-option", "bad-budget", "missing-venv"])
def test_bad_options_are_refused_before_anything_runs(tmp_path: Path, args: list[str], message: str) -> None:
    result = gpu_check(*args, "--out", str(tmp_path / "out"), timeout=30)
    assert result.returncode == 2 and message in result.stderr
    assert not (tmp_path / "out" / "gpu_check.md").exists()


def test_a_spent_budget_says_which_steps_did_not_run(tmp_path: Path) -> None:
    result = gpu_check("--cpu", "--quick", "--venv", sys.prefix, "--out", str(tmp_path), "--budget", "0")
    fragment = (tmp_path / "gpu_check.md").read_text()
    assert result.returncode == 1 and "**projection: not run**: the budget of 0 s was spent" in fragment
    assert "Not every step passed" in fragment

"""Workers that own a device: `vera worker --device`, jobs that ask for GPUs, and the claim that matches the two."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch

from registry import worker as worker_module
from registry.domain.errors import InvalidInput
from registry.services.jobs import Jobs
from registry.services.registry import Registry
from registry.worker import Worker, checked_device
from tests.registry.servers import VERA

DEMO = {"demo": True}
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")


def quiet_worker(jobs: Jobs, device: str = "cpu") -> Worker:
    return Worker(jobs, name=f"w-{device}", log=lambda line: None, device=device)


def test_a_cpu_worker_claims_only_jobs_that_ask_for_no_gpu(registry: Registry) -> None:
    jobs = Jobs(registry)
    gpu_job = jobs.submit(DEMO, owner="ann", target="ann/on-gpu", gpus=1, priority=10)  # first in line
    cpu_job = jobs.submit(DEMO, owner="ann", target="ann/on-cpu")
    assert (gpu_job.gpus, cpu_job.gpus) == (1, 0) and jobs.get(gpu_job.id).gpus == 1  # stored with the job
    claimed: list[int] = []
    worker = quiet_worker(jobs)
    worker._run = lambda job: claimed.append(job.id)  # type: ignore[method-assign]
    assert worker.gpus == 0 and worker.run_once() and claimed == [cpu_job.id]
    assert worker.run_once() is False  # the GPU job is not for this worker: it stays queued
    assert jobs.get(gpu_job.id).status == "queued"
    assert jobs.claim("cuda-worker", gpus=1) is not None  # a worker that owns a GPU takes it


def test_a_gpu_worker_claims_both_highest_priority_first(registry: Registry) -> None:
    jobs = Jobs(registry)
    cpu_job = jobs.submit(DEMO, owner="ann", target="ann/on-cpu", priority=5)
    gpu_job = jobs.submit(DEMO, owner="ann", target="ann/on-gpu", gpus=1)
    two_gpus = jobs.submit(DEMO, owner="ann", target="ann/on-two", gpus=2, priority=50)
    order = [job.id for job in iter(lambda: jobs.claim("cuda-worker", gpus=1), None)]
    assert order == [cpu_job.id, gpu_job.id]  # the job asking for 2 GPUs waits for a worker that has them
    assert jobs.get(two_gpus.id).status == "queued"


def test_the_worker_trains_on_its_own_device(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    jobs = Jobs(registry)
    job = jobs.submit({"demo": True, "training": {"max_steps": 1}}, owner="ann", target="ann/x")
    seen: dict[str, Any] = {}

    def fake_run(spec: Any, out: Path, **kwargs: Any) -> dict[str, Any]:
        seen.update(spec.training)
        raise RuntimeError("stop here")

    monkeypatch.setattr(worker_module, "run", fake_run)
    assert quiet_worker(jobs).run_once()
    assert seen["device"] == "cpu" and seen["max_steps"] == 1
    assert jobs.get(job.id).status == "failed"


@pytest.mark.parametrize(("gpus", "message"), [
    (-1, "gpus must be an integer from 0"), (65, "gpus must be an integer from 0 \\(a CPU job\\) to 64; got 65"),
    (True, "got True"), (1.5, "got 1.5"),
], ids=["negative", "too-many", "bool", "float"])
def test_bad_gpu_requests_are_refused_and_queue_nothing(registry: Registry, gpus: Any, message: str) -> None:
    jobs = Jobs(registry)
    with pytest.raises(InvalidInput, match=message):
        jobs.submit(DEMO, owner="ann", target="ann/x", gpus=gpus)
    assert jobs.list_jobs() == []


def test_a_job_cannot_choose_the_workers_device(registry: Registry) -> None:
    jobs = Jobs(registry)
    with pytest.raises(InvalidInput, match="training.device cannot be set in a job.*--gpus 1"):
        jobs.submit({"demo": True, "training": {"device": "cuda"}}, owner="ann", target="ann/x")
    assert jobs.list_jobs() == []


@no_cuda
@pytest.mark.parametrize(("device", "message"), [
    ("cuda", "Device 'cuda': this machine has no CUDA device .*--device cpu"),
    ("cuda:1", "Device 'cuda:1': this machine has no CUDA device"),
    ("gpu", "must be cpu, cuda or cuda:N .*got 'gpu'"),
    ("cuda:x", "must be cpu, cuda or cuda:N"),
    ("", "must be cpu, cuda or cuda:N"),
], ids=["cuda", "cuda-1", "gpu", "cuda-x", "empty"])
def test_a_device_that_is_not_there_is_refused(device: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        checked_device(device)


def test_device_names_are_normalised() -> None:
    assert checked_device("cpu") == "cpu"
    if torch.cuda.is_available():
        assert checked_device("cuda") == "cuda:0"


@no_cuda
def test_vera_worker_device_cuda_is_refused_here_and_opens_nothing(tmp_path: Path) -> None:
    database = tmp_path / "never.db"
    result = subprocess.run([str(VERA), "worker", "--once", "--device", "cuda", "--database-url",
                             f"sqlite:///{database}", "--storage-url", str(tmp_path / "blobs")],
                            capture_output=True, text=True, timeout=120)
    said = " ".join(result.stderr.split())  # rich wraps long lines
    assert result.returncode == 1, said
    assert "error: Device 'cuda': this machine has no CUDA device" in said
    assert "Run the worker with --device cpu" in said
    assert not database.exists() and not (tmp_path / "blobs").exists()

"""A worker's folder per job (registry/job_folders.py): kept between attempts so that the next one resumes from the
job's checkpoints, emptied for another job of the same id, removed once the job has ended.

Training is replaced here by a stand-in that writes (or reads) sealed checkpoints; the real thing, two processes
with a killed rank resumed by another worker, is in test_worker.py."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from registry import worker as worker_module
from registry.domain.errors import InvalidInput
from registry.job_folders import JobFolder, sweep
from registry.services.jobs import Jobs
from registry.services.registry import Registry
from registry.worker import JOB_SAVE_EVERY, Worker
from tests.registry.adapters import TRIAL_DEMO
from vera_core import training_checkpoints
from vera_core.distributed import DistributedError

SPEC = {**TRIAL_DEMO, "training": {"max_steps": 10, "batch_size": 4}}


@pytest.fixture
def jobs(registry: Registry) -> Jobs:
    return Jobs(registry, retry_backoff=timedelta(0))  # a lost attempt is claimable again at once


def fake_checkpoint(out: Path, step: int, world_size: int = 1) -> Path:
    """A sealed checkpoint folder, as the trainer writes one (only what a worker reads of it)."""
    folder = out / "checkpoints" / training_checkpoints.folder_name(step)
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text(json.dumps({"state": {"step": step}, "world_size": world_size}))
    training_checkpoints.seal(folder)
    return folder


class FakeRun:
    """Stands in for vera_core.recipes.run: records its calls, optionally writes a checkpoint, then fails (a lost
    process, or an error)."""

    def __init__(self, *, checkpoint: tuple[int, int] | None = None, lost: bool = False) -> None:
        self.checkpoint, self.lost, self.calls = checkpoint, lost, list[dict[str, Any]]()

    def __call__(self, spec: Any, out: Path, **kwargs: Any) -> dict[str, Any]:
        self.calls.append({"training": dict(spec.training), "out": out, **kwargs})
        if self.checkpoint is not None:
            fake_checkpoint(out, *self.checkpoint)
        if self.lost:
            raise DistributedError("a process died", silent=[1])
        raise RuntimeError("stop here")


def worker(jobs: Jobs, state: Path | None, lines: list[str] | None = None) -> Worker:
    return Worker(jobs, name="w", state_dir=state, log=(lines if lines is not None else []).append)


def logs(jobs: Jobs, job_id: int) -> list[str]:
    return [event.data["message"] for event in jobs.events(job_id, kind="log")]


def test_the_next_attempt_resumes_from_the_checkpoint_an_earlier_one_left(
    jobs: Jobs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    job = jobs.submit(SPEC, owner="ann", target="ann/x")
    state = tmp_path / "state"
    first = FakeRun(checkpoint=(4, 1), lost=True)
    monkeypatch.setattr(worker_module, "run", first)
    assert worker(jobs, state).run_once()
    assert jobs.get(job.id).status == "queued"  # the attempt was lost: queued again, its folder kept
    call = first.calls[0]
    assert call["out"] == state / "jobs" / str(job.id) / "adapter" and call["resume"] is False
    assert call["training"]["save_every"] == JOB_SAVE_EVERY and call["training"]["output_dir"] == str(call["out"])
    assert json.loads((state / "jobs" / str(job.id) / "job.json").read_text())["id"] == job.id
    second = FakeRun()
    monkeypatch.setattr(worker_module, "run", second)
    assert worker(jobs, state).run_once()
    assert second.calls[0]["resume"] is True and second.calls[0]["out"] == call["out"]
    assert f"job {job.id}: attempt 2 resumes from step 4 (the last intact checkpoint of an earlier attempt)" \
        in logs(jobs, job.id)
    assert jobs.get(job.id).status == "failed" and not (state / "jobs" / str(job.id)).exists()  # ended: removed


def test_a_spec_may_ask_for_checkpoints_and_without_a_state_dir_nothing_outlives_the_attempt(
    jobs: Jobs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """save_every in a job's spec used to be refused at submission (it needs an output_dir, which the worker picks);
    a worker without a state directory trains in its temporary work area and checkpoints only when asked."""
    asked = jobs.submit({**SPEC, "training": {**SPEC["training"], "save_every": 3}}, owner="ann", target="ann/x")
    plain = jobs.submit(SPEC, owner="ann", target="ann/y")
    fake = FakeRun()
    monkeypatch.setattr(worker_module, "run", fake)
    work = tmp_path / "work"
    work.mkdir()
    assert Worker(jobs, name="w", work_dir=str(work), log=lambda line: None).run_once()
    assert Worker(jobs, name="w", work_dir=str(work), log=lambda line: None).run_once()
    assert [c["training"]["save_every"] for c in fake.calls] == [3, None]
    assert fake.calls[0]["out"].parent.parent == work and fake.calls[1]["training"]["output_dir"] is None
    assert [jobs.get(j.id).status for j in (asked, plain)] == ["failed", "failed"] and list(work.iterdir()) == []
    with pytest.raises(InvalidInput, match="training.output_dir cannot be set in a job"):
        jobs.submit({**SPEC, "training": {"save_every": 3, "output_dir": "/etc"}}, owner="ann", target="ann/x")


@pytest.mark.parametrize(("written_by", "torn", "message"), [
    (2, False, "its checkpoint at step 4 was written by 2 process(es) and this attempt trains in 1; starting over"),
    (1, True, "passed over a checkpoint that cannot be loaded: step-00000004: optimizer.safetensors is missing"),
], ids=["other-process-count", "torn"])
def test_a_checkpoint_this_attempt_cannot_use_is_not_resumed_and_the_log_says_why(
    jobs: Jobs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written_by: int, torn: bool, message: str,
) -> None:
    """A local checkpoint of another process count, or torn, is not resumed from; for the torn one, the intact copy
    the lost attempt stored in the registry is fetched instead, and the attempt resumes from that."""
    job = jobs.submit(SPEC, owner="ann", target="ann/x")
    state = tmp_path / "state"
    monkeypatch.setattr(worker_module, "run", FakeRun(checkpoint=(4, written_by), lost=True))
    assert worker(jobs, state).run_once()
    folder = state / "jobs" / str(job.id) / "adapter" / "checkpoints" / "step-00000004"
    if torn:  # a file listed in the manifest went missing
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["files"]["optimizer.safetensors"] = {"size": 1, "sha256": "0" * 64}
        (folder / "manifest.json").write_text(json.dumps(manifest))
    again = FakeRun()
    monkeypatch.setattr(worker_module, "run", again)
    assert worker(jobs, state).run_once()
    assert f"job {job.id}: {message}" in logs(jobs, job.id)
    fetched = f"job {job.id}: fetched its checkpoint at step 4 from the registry (stored by w during attempt 1)"
    assert again.calls[0]["resume"] is torn and (fetched in logs(jobs, job.id)) is torn
    assert not folder.exists()  # the job ended (the fake run fails it): its folder is gone


def test_a_folder_is_locked_by_its_attempt_and_emptied_for_another_job_of_the_same_id(
    jobs: Jobs, tmp_path: Path,
) -> None:
    job = jobs.submit(SPEC, owner="ann", target="ann/x")
    held = JobFolder.open(tmp_path, job)
    assert held is not None and held.path == tmp_path / "jobs" / str(job.id)
    fake_checkpoint(held.output, 2)
    assert JobFolder.open(tmp_path, job) is None  # another attempt on this machine holds it
    held.close(remove=False)
    again = JobFolder.open(tmp_path, job)
    assert again is not None and (again.output / "checkpoints" / "step-00000002").is_dir()  # kept: the same job
    again.close(remove=False)
    other = job.model_copy(update={"created_at": job.created_at + timedelta(days=1)})  # same id, another registry
    third = JobFolder.open(tmp_path, other)
    assert third is not None and not third.output.exists()  # emptied, not resumed
    third.close(remove=True)
    assert not (tmp_path / "jobs" / str(job.id)).exists()


def test_a_held_folder_makes_the_attempt_start_over_in_a_temporary_folder(
    jobs: Jobs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    job = jobs.submit(SPEC, owner="ann", target="ann/x")
    held = JobFolder.open(tmp_path / "state", job)
    assert held is not None
    fake = FakeRun()
    monkeypatch.setattr(worker_module, "run", fake)
    assert worker(jobs, tmp_path / "state").run_once()
    assert not fake.calls[0]["out"].is_relative_to(tmp_path / "state") and fake.calls[0]["resume"] is False
    assert any("its folder is in use by another process on this machine" in line for line in logs(jobs, job.id))
    assert held.path.exists()  # the holder's to remove
    held.close(remove=False)


def test_sweep_removes_the_folders_of_ended_jobs_of_this_registry_only(jobs: Jobs, tmp_path: Path) -> None:
    cancelled = jobs.submit(SPEC, owner="ann", target="ann/cancelled")
    queued = jobs.submit(SPEC, owner="ann", target="ann/queued")
    foreign = jobs.submit(SPEC, owner="ann", target="ann/foreign")
    for job in (cancelled, queued):
        folder = JobFolder.open(tmp_path, job)
        assert folder is not None
        folder.close(remove=False)
    folder = JobFolder.open(tmp_path, foreign.model_copy(update={"target_name": "bob/elsewhere"}))
    assert folder is not None
    folder.close(remove=False)
    (tmp_path / "jobs" / "999").mkdir()  # a job this registry does not have
    (tmp_path / "jobs" / "notes").mkdir()  # not a job's folder
    for job in (cancelled, foreign):
        jobs.cancel(job.id, actor="ann")
    assert sweep(tmp_path, jobs) == [cancelled.id]
    assert sorted(p.name for p in (tmp_path / "jobs").iterdir()) == sorted([str(queued.id), str(foreign.id), "999",
                                                                            "notes"])
    lines: list[str] = []
    jobs.cancel(queued.id, actor="ann")
    held = JobFolder.open(tmp_path, queued)
    assert held is not None and sweep(tmp_path, jobs) == []  # held by a process: left to it
    held.close(remove=False)
    assert not worker(jobs, tmp_path, lines).run_once()  # each claim sweeps first
    assert lines == [f"removed the folder of job {queued.id}, which has ended"]

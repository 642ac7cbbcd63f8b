"""A job's checkpoint stored in the registry (registry.services.job_checkpoints), on SQLite and PostgreSQL with real
blob storage and real safetensors: stored only by the worker holding the job, refused whole when torn, too large
or naming other files, written back intact or not at all, replaced as training goes on, and gone when the job ends.
The resume it serves, across two workers with separate folders, is tested in test_worker.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from sqlalchemy import func, select

from registry.domain.errors import Conflict, ContentTooLarge, IntegrityError, InvalidInput
from registry.services.jobs import Jobs
from registry.services.registry import Registry
from registry.store import models as m
from vera_core import training_checkpoints

DEMO = {"demo": True}


def sealed_checkpoint(root: Path, step: int, *, world_size: int = 1, scale: float = 1.0) -> Path:
    """A checkpoint folder as the trainer writes one (trainable tensors, optimizer state, trainer state, sealed with
    its manifest); ``scale`` changes the vectors, the config stays the same bytes from step to step."""
    folder = root / training_checkpoints.folder_name(step)
    folder.mkdir(parents=True)
    save_file({"layer.vera_lambda_b": torch.full((8,), scale * step), "layer.vera_lambda_d": torch.ones(4)},
              str(folder / "trainable.safetensors"))
    save_file({"state.0.exp_avg": torch.full((8,), 0.5 * step)}, str(folder / "optimizer.safetensors"))
    (folder / "adapter_config.json").write_text('{"peft_type": "VERA", "r": 4}')
    (folder / training_checkpoints.STATE).write_text(json.dumps({"state": {"step": step}, "world_size": world_size}))
    training_checkpoints.seal(folder)
    return folder


@pytest.fixture
def jobs(registry: Registry) -> Jobs:
    return Jobs(registry)


def running_job(jobs: Jobs, worker: str = "w1") -> int:
    job_id = jobs.submit(DEMO, owner="ann", target="ann/x").id
    claimed = jobs.claim(worker)
    assert claimed is not None and claimed.id == job_id
    return job_id


def stored_blobs(jobs: Jobs) -> set[str]:
    with jobs.db.session() as s:
        rows = set(s.scalars(select(m.Blob.sha256).where(m.Blob.kind == "checkpoint")))
    assert rows == {d for d in jobs.registry.blobs.digests() if d in rows}  # every row has its bytes
    return rows


def checkpoint_rows(jobs: Jobs) -> int:
    with jobs.db.session() as s:
        return int(s.scalar(select(func.count()).select_from(m.JobCheckpointFile)) or 0)


def test_a_stored_checkpoint_is_restored_intact_elsewhere(jobs: Jobs, tmp_path: Path) -> None:
    job_id = running_job(jobs)
    folder = sealed_checkpoint(tmp_path / "a" / "checkpoints", 6, world_size=2)
    stored = jobs.checkpoints.store(job_id, "w1", folder)
    assert (stored.step, stored.world_size, stored.attempt, stored.worker) == (6, 2, 1, "w1")
    assert set(stored.files) == {"manifest.json", "trainer_state.json", "trainable.safetensors",
                                 "optimizer.safetensors", "adapter_config.json"}
    assert jobs.checkpoints.latest(job_id) == stored
    # another machine: an empty run folder of its own
    restored = jobs.checkpoints.restore(stored, tmp_path / "b" / "checkpoints")
    assert restored == tmp_path / "b" / "checkpoints" / "step-00000006"
    assert training_checkpoints.problem(restored) is None
    assert training_checkpoints.info(restored).world_size == 2
    for name in stored.files:
        assert (restored / name).read_bytes() == (folder / name).read_bytes(), name
    assert torch.equal(load_file(str(restored / "trainable.safetensors"))["layer.vera_lambda_b"], torch.full((8,), 6.0))
    assert [p.name for p in (tmp_path / "b" / "checkpoints").iterdir()] == ["step-00000006"]  # no partial left


def test_only_the_worker_holding_the_job_stores_and_nothing_is_kept_otherwise(jobs: Jobs, tmp_path: Path) -> None:
    job_id = running_job(jobs, "w1")
    folder = sealed_checkpoint(tmp_path / "checkpoints", 2)
    with pytest.raises(Conflict, match=f"Job {job_id} is running, claimed by w1; only the worker running it stores "
                                       "its checkpoints, and w2 does not"):
        jobs.checkpoints.store(job_id, "w2", folder)
    queued = jobs.submit(DEMO, owner="ann", target="ann/y").id
    with pytest.raises(Conflict, match=f"Job {queued} is queued; only the worker running it"):
        jobs.checkpoints.store(queued, "w1", folder)
    assert jobs.checkpoints.latest(job_id) is None and stored_blobs(jobs) == set() and checkpoint_rows(jobs) == 0


@pytest.mark.parametrize("damage", ["torn", "unlisted-path", "unknown-name", "no-state", "bad-size", "no-manifest",
                                    "too-large"])
def test_a_checkpoint_that_is_not_intact_or_too_large_is_refused_whole(jobs: Jobs, tmp_path: Path,
                                                                       damage: str) -> None:
    job_id = running_job(jobs)
    folder = sealed_checkpoint(tmp_path / "checkpoints", 4)
    manifest = json.loads((folder / "manifest.json").read_text())
    expected: tuple[type[Exception], str]
    if damage == "torn":
        (folder / "optimizer.safetensors").write_bytes(b"x" * (folder / "optimizer.safetensors").stat().st_size)
        expected = InvalidInput, "optimizer.safetensors does not match its manifest"
    elif damage in ("unlisted-path", "unknown-name"):
        name = "../../outside.json" if damage == "unlisted-path" else "model.pkl"
        manifest["files"][name] = manifest["files"]["adapter_config.json"]
        expected = InvalidInput, "not a checkpoint's files"
    elif damage == "no-state":
        del manifest["files"]["trainer_state.json"]
        expected = InvalidInput, "lists no trainer_state.json"
    elif damage == "bad-size":
        manifest["files"]["adapter_config.json"]["size"] = -1
        expected = InvalidInput, "must have a 64-hex-digit sha256 and a size in bytes; got .* and -1"
    elif damage == "no-manifest":
        (folder / "manifest.json").unlink()
        expected = InvalidInput, "is not a sealed checkpoint: manifest.json cannot be read"
    else:
        jobs.checkpoints.max_bytes = 200
        expected = ContentTooLarge, r"has \d+ bytes, over the 200 a job's checkpoint may have in the registry " \
                                    r"\(VERA_JOB_CHECKPOINT_MAX_BYTES\); it stays on this machine only"
    if damage in ("unlisted-path", "unknown-name", "no-state", "bad-size"):
        (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(expected[0], match=expected[1]):
        jobs.checkpoints.store(job_id, "w1", folder)
    assert jobs.checkpoints.latest(job_id) is None and stored_blobs(jobs) == set() and checkpoint_rows(jobs) == 0


def test_the_next_checkpoint_replaces_the_last_and_the_job_end_removes_it(jobs: Jobs, tmp_path: Path) -> None:
    job_id = running_job(jobs)
    assert jobs.get(job_id).checkpoint is None
    first = jobs.checkpoints.store(job_id, "w1", sealed_checkpoint(tmp_path / "checkpoints", 2))
    second = jobs.checkpoints.store(job_id, "w1", sealed_checkpoint(tmp_path / "checkpoints", 4))
    assert jobs.checkpoints.latest(job_id) == second
    shown = jobs.get(job_id).checkpoint  # what the API, `vera job show` and the dashboard say
    assert shown is not None and (shown.step, shown.world_size, shown.attempt, shown.worker, shown.size,
                                  shown.saved_at) == (4, 1, 1, "w1", second.size, second.created_at)
    assert shown.size == sum(size for _, size in second.files.values())
    shared = first.files["adapter_config.json"][0]
    assert second.files["adapter_config.json"][0] == shared  # the same bytes, one blob
    kept = {digest for digest, _ in second.files.values()}
    assert stored_blobs(jobs) == kept  # step 2's own blobs went, rows and bytes
    assert first.files["trainable.safetensors"][0] not in set(jobs.registry.blobs.digests())
    # another job's checkpoint shares the config; the first job's end keeps what the other uses
    other = running_job(jobs, "w2")
    third = jobs.checkpoints.store(other, "w2", sealed_checkpoint(tmp_path / "other", 2, scale=3.0))
    jobs.finish(job_id, "w1", status="failed", error="stopped")
    assert jobs.checkpoints.latest(job_id) is None and jobs.get(job_id).checkpoint is None
    assert stored_blobs(jobs) == {digest for digest, _ in third.files.values()} and shared in stored_blobs(jobs)
    jobs.cancel(other, actor="ann")  # a running job asked to stop: its checkpoint stays until the job ends
    assert jobs.checkpoints.latest(other) == third
    jobs.finish(other, "w2", status="cancelled")
    assert stored_blobs(jobs) == set() and checkpoint_rows(jobs) == 0


def test_gc_keeps_a_running_jobs_checkpoint(jobs: Jobs, tmp_path: Path) -> None:
    job_id = running_job(jobs)
    stored = jobs.checkpoints.store(job_id, "w1", sealed_checkpoint(tmp_path / "checkpoints", 2))
    jobs.registry.gc(grace_s=0)
    assert stored_blobs(jobs) == {digest for digest, _ in stored.files.values()}
    jobs.checkpoints.restore(stored, tmp_path / "again")


def test_a_damaged_stored_checkpoint_is_not_restored(jobs: Jobs, tmp_path: Path) -> None:
    job_id = running_job(jobs)
    stored = jobs.checkpoints.store(job_id, "w1", sealed_checkpoint(tmp_path / "checkpoints", 2))
    digest = stored.files["optimizer.safetensors"][0]
    blob = next(p for p in (tmp_path / "blobs").rglob(digest))
    blob.write_bytes(b"\0" * blob.stat().st_size)  # the bytes changed in storage
    root = tmp_path / "b" / "checkpoints"
    with pytest.raises(IntegrityError):
        jobs.checkpoints.restore(stored, root)
    assert list(root.iterdir()) == []  # nothing half-written is left to resume from
    blob.unlink()
    shutil.rmtree(root)
    with pytest.raises(Exception, match="missing"):
        jobs.checkpoints.restore(stored, root)
    jobs.checkpoints.max_bytes = 100
    with pytest.raises(ContentTooLarge, match="over this worker's limit of 100"):
        jobs.checkpoints.restore(stored, root)


def test_listing_jobs_costs_the_same_few_queries_however_many_there_are(jobs: Jobs, tmp_path: Path) -> None:
    """Each listed job says what it published and its stored checkpoint, loaded for all of them at once (not a query
    or two per job: `vera job ls` and the dashboard list up to 100)."""
    from sqlalchemy import event

    from tests.registry.adapters import make_adapter

    def listing_queries() -> int:
        seen: list[str] = []
        listen = lambda *args: seen.append(args[2])  # noqa: E731 - (conn, cursor, statement, ...)
        event.listen(jobs.db.engine, "before_cursor_execute", listen)
        try:
            listed = jobs.list_jobs()
        finally:
            event.remove(jobs.db.engine, "before_cursor_execute", listen)
        assert {j.id for j in listed if j.checkpoint} == checkpointed
        assert {j.result_ref for j in listed} - {None} == published
        return len(seen)

    checkpointed: set[int] = set()
    published: set[str] = set()
    few = listing_queries()
    for n in range(3):
        job_id = running_job(jobs, f"w{n}")
        jobs.checkpoints.store(job_id, f"w{n}", sealed_checkpoint(tmp_path / str(n) / "checkpoints", 2 + n))
        checkpointed.add(job_id)
        done = running_job(jobs, f"v{n}")
        info = jobs.registry.publish(make_adapter(tmp_path / f"a{n}", seed=n), owner="ann", name=f"x{n}",
                                     base_model="tiny-llama")
        jobs.finish(done, f"v{n}", status="succeeded", result_version=(f"ann/x{n}", info.version))
        published.add(info.ref)
    assert {j.checkpoint.step for j in jobs.list_jobs() if j.checkpoint} == {2, 3, 4}
    assert listing_queries() <= few + 2  # the versions published and the checkpoints, once for all jobs

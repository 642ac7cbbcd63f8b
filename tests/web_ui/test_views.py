"""Readable views of the registry's JSON: dotted names, table cells, verification checks in words; job statuses and
durations as the Train page writes them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from registry.domain.schemas import JobCheckpointInfo, JobInfo
from web_ui import jobs, views


def test_nested_specs_become_dotted_names_and_cells() -> None:
    spec = {"demo": True, "training": {"epochs": 0.5, "lr": 0.01}, "targets": ["q", "v"], "extra": {}}
    assert views.flat(spec) == {"demo": True, "training.epochs": 0.5, "training.lr": 0.01, "targets": ["q", "v"],
                                "extra": {}}
    assert [views.cell(v) for v in views.flat(spec).values()] == ["yes", "0.5000", "0.01000", "q, v", "—"]


def test_a_verification_report_reads_as_a_checklist() -> None:
    checks: dict[str, dict[str, Any]] = {
        "projection": {"ok": True, "recorded": "ab" * 32, "regenerated": "ab" * 32},
        "vectors_blob": {"ok": False, "sha256": "cd" * 32, "error": "stored bytes do not hash to their name"},
        "shapes": {"ok": False, "problems": ["model.layers.0.q: 9 outputs, base [8, 8]"], "base_shapes": "declared"},
    }
    items = views.verification_items(checks)
    assert [(i.ok, i.what) for i in items] == [(True, "Projection regenerated from the seed"),
                                               (False, "Vectors blob re-hashed"),
                                               (False, "Layer shapes match the base model")]
    assert items[0].detail == "fingerprint abababababab... = recorded abababababab..."
    assert items[1].detail == "stored bytes do not hash to their name"
    assert items[2].detail == "model.layers.0.q: 9 outputs, base [8, 8]"


@pytest.mark.parametrize(("source", "words"), [
    ("implied", "checked against the shapes earlier publishes implied (the base model was never registered: "
                "`vera base register` declares its shapes)"),
    ("declared", "checked against the base model's declared shapes (`vera base register`)"),
], ids=["implied", "declared"])
def test_a_passed_shape_check_says_in_words_what_it_compared_against(source: str, words: str) -> None:
    [item] = views.verification_items({"shapes": {"ok": True, "problems": [], "base_shapes": source}})
    assert item.detail == words  # not "base shapes from implied"


def job(**changes: Any) -> JobInfo:
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    fields: dict[str, Any] = {"id": 1, "status": "running", "owner": "alice", "target_name": "alice/x", "spec": {},
                              "created_at": now, "started_at": now, "finished_at": None, "claimed_by": "w",
                              "heartbeat_at": now, "attempts": 1, "cancel_requested": False, "progress": {},
                              "error": None, "result_ref": None}
    return JobInfo(**{**fields, **changes})


def test_a_job_says_cancelling_and_how_long_it_ran() -> None:
    start = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    assert jobs.status(job()) == "running" and jobs.status(job(cancel_requested=True)) == "cancelling"
    assert jobs.status(job(status="cancelled", cancel_requested=True)) == "cancelled"
    assert jobs.duration(job(started_at=None)) == "—"
    assert jobs.duration(job(finished_at=start + timedelta(seconds=42))) == "42 s"
    assert jobs.duration(job(), now=start + timedelta(seconds=125)) == "2 min 05 s"


def test_a_running_job_says_which_checkpoint_a_new_attempt_resumes_from() -> None:
    saved = JobCheckpointInfo(step=1200, world_size=2, attempt=1, worker="gpu-box-1", size=2_480_000,
                              saved_at=datetime(2026, 11, 30, 12, 0, 5, tzinfo=UTC))
    assert jobs.checkpoint_line(saved) == ("Checkpoint in the registry: step 1,200 in 2 processes, 2.5 MB, saved "
                                           "2026-11-30 12:00:05 UTC by gpu-box-1 (attempt 1); if this worker stops, "
                                           "another resumes from it.")
    alone = jobs.checkpoint_line(saved.model_copy(update={"world_size": 1}))
    assert alone.startswith("Checkpoint in the registry: step 1,200, 2.5 MB,")

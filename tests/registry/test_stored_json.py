"""JSON stored before the registry refused more than MAX_JSON_DEPTH levels (an outsider's re-check, session 33):
replies cannot carry it, so a version whose metrics nested 300 deep answered 500 to every listing that showed it.
`vera fsck` reports such rows and `--repair` cuts them there, leaving every other row as it was."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from registry.domain.schemas import MAX_JSON_DEPTH, too_deep
from registry.services.registry import Registry
from registry.services.stored_json import CUT, cut
from registry.store import models as m
from tests.commands import vera as run_vera
from tests.registry.adapters import make_adapter


def nested(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


def test_cut_keeps_what_is_shallow_and_replaces_what_is_below_the_limit() -> None:
    shallow = {"accuracy": 0.9, "curve": [{"step": 1, "loss": 2.0}], "deep": nested(MAX_JSON_DEPTH - 1)}
    assert cut(shallow) == shallow and not too_deep(shallow)
    cut_value = cut({"accuracy": 0.9, "deep": nested(500)})
    assert cut_value["accuracy"] == 0.9 and not too_deep(cut_value)
    inner = cut_value["deep"]
    for _ in range(MAX_JSON_DEPTH - 2):
        inner = inner["a"]
    assert inner == {"a": CUT}


def test_fsck_reports_json_nested_too_deep_and_repair_makes_it_servable(registry: Registry, tmp_path: Path) -> None:
    registry.publish(make_adapter(tmp_path / "a"), owner="ann", name="deep", base_model="tiny",
                     metrics={"accuracy": 0.5})
    kept = registry.publish(make_adapter(tmp_path / "b", seed=2), owner="ann", name="kept", base_model="tiny",
                            metrics={"accuracy": 0.7, "nested": nested(MAX_JSON_DEPTH - 1)})
    with registry.db.session() as s:  # as a registry from before the limit stored them
        version_id = s.scalar(select(m.AdapterVersion.id).join(m.Adapter).where(m.Adapter.name == "deep"))
        s.execute(update(m.AdapterVersion).where(m.AdapterVersion.id == version_id)
                  .values(metrics={"accuracy": 0.5, "details": nested(300)}))
        s.add(m.AuditEvent(actor="ann", action="evaluate", target="ann/deep:1", detail=nested(400)))
    with pytest.raises(ValueError, match="serializ"):  # what made the listings 500
        registry.get("ann/deep:1").model_dump_json()
    report = sorted(registry.fsck()["deep_json"])
    assert report == [f"adapter_versions.metrics id={version_id}", report[1]] and \
        report[1].startswith("audit_events.detail id=")
    registry.fsck(repair=True)
    assert registry.fsck()["deep_json"] == []
    repaired = registry.get("ann/deep:1")
    assert repaired.metrics["accuracy"] == 0.5 and CUT in repaired.model_dump_json()
    assert registry.get(kept.ref).metrics == {"accuracy": 0.7, "nested": nested(MAX_JSON_DEPTH - 1)}  # untouched
    assert "deep_json: 0" in fsck_cli(registry, tmp_path)


def fsck_cli(registry: Registry, tmp_path: Path) -> str:
    env = {**os.environ, "VERA_DATABASE_URL": registry.db.url, "VERA_STORAGE_URL": str(tmp_path / "blobs")}
    done = run_vera(["fsck"], env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout

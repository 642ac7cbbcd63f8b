"""Migration 0010 (metric search, download counts) keeps every row of a 0009 database and back-fills version_metrics
from each version's metrics JSON, on SQLite and PostgreSQL; downgrading drops only the new tables."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import text

from registry.services.registry import Registry
from registry.store.blobs import FsspecBlobStore
from registry.store.database import Database

#: Metrics as versions recorded them: flat, nested, with the loss curve, booleans and strings (not searchable), none.
METRICS = [
    {"accuracy": 0.91, "steps": 300, "task": "sst2", "train_loss": [0.7, 0.5], "final_eval": {"accuracy": 0.9,
                                                                                             "loss": 0.25}},
    {"accuracy": 0.72, "converged": True, "eval": {"deep": {"deeper": {"deepest": {"too_deep": 1.0}}}}},
    {},
]
SETUP = [
    "INSERT INTO blobs (sha256, size, kind, created_at) VALUES (:sha, 10, 'vectors', CURRENT_TIMESTAMP)",
    "INSERT INTO base_models (id, name, revision, shapes, shapes_fingerprint, shapes_source, created_at) VALUES "
    "(1, 'minilm', '', '{}', :fp, 'implied', CURRENT_TIMESTAMP)",
    "INSERT INTO projections (id, generator, seed, r, max_in, max_out, fingerprint, reproducible, created_at) "
    "VALUES (1, 'philox', '7', 4, 8, 8, :fp, :true, CURRENT_TIMESTAMP)",
    "INSERT INTO adapters (id, owner, name, description, created_at) VALUES (1, 'ann', 'old', '', CURRENT_TIMESTAMP)",
]
VERSION = (
    "INSERT INTO adapter_versions (id, adapter_id, version, base_model_id, projection_id, r, seed, generator, config, "
    "vectors_sha256, projection_fingerprint, seed_reproducible, trainable_parameters, adapter_parameters, "
    "stored_bytes, metrics, description, published_by, created_at, yanked, verification_status) VALUES (:id, 1, :id, "
    "1, 1, 4, '7', 'philox', '{}', :sha, :fp, :true, 12, 12, 10, :metrics, 'kept', 'ann', CURRENT_TIMESTAMP, :false, "
    "'unverified')"
)


def test_migration_0010_keeps_every_version_of_a_0009_database_and_backfills_its_metrics(
        database_url: str, tmp_path: Path) -> None:
    db = Database(database_url)
    db.upgrade("0009")
    values = {"sha": "a" * 64, "fp": "f" * 64, "true": True, "false": False}
    with db.engine.begin() as conn:
        for statement in SETUP:
            conn.execute(text(statement), values)
        for number, metrics in enumerate(METRICS, start=1):
            conn.execute(text(VERSION), {**values, "id": number, "metrics": json.dumps(metrics)})
    db.upgrade("0010")
    with db.engine.connect() as conn:
        versions = conn.execute(text("SELECT id, description, metrics FROM adapter_versions ORDER BY id")).all()
        rows = conn.execute(text("SELECT version_id, key, value FROM version_metrics ORDER BY version_id, key")).all()
    assert [(v[0], v[1]) for v in versions] == [(1, "kept"), (2, "kept"), (3, "kept")]
    assert [json.loads(v[2]) if isinstance(v[2], str) else v[2] for v in versions] == METRICS  # untouched
    assert [tuple(r) for r in rows] == [
        (1, "accuracy", 0.91), (1, "final_eval.accuracy", 0.9), (1, "final_eval.loss", 0.25), (1, "steps", 300.0),
        (2, "accuracy", 0.72),  # booleans, strings, lists and keys nested over 4 levels are not searchable
    ]
    db.upgrade()  # the services read the schema of the head (columns added since 0010)
    registry = Registry(db, FsspecBlobStore(str(tmp_path / "blobs")))
    page = registry.list_versions(filter_text="metrics.final_eval.accuracy >= 0.9", sort="-metrics.accuracy")
    assert [v.ref for v in page.items] == ["ann/old:1"]
    assert [v.ref for v in registry.list_versions(sort="metrics.accuracy").items] == ["ann/old:2", "ann/old:1"]
    db.downgrade("0009")
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM adapter_versions")).scalar() == 3
    db.engine.dispose()

"""Migration 0026 repairs lone UTF-16 surrogates that JSON columns stored before the API refused them (a listing, a
version and the audit log were a 500 for every caller while one was stored): each becomes U+FFFD, on SQLite and
PostgreSQL; an escaped pair (an emoji) and every other value stay as they were, no row is added or removed, and the
registry reads the repaired rows. Downgrade keeps the repair."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import text

from registry.services.registry import Registry
from registry.store.blobs import FsspecBlobStore
from registry.store.database import Database
from tests.registry.test_migration_0009 import EXPECTED, _kept, filled_at

#: Stored as the JSON columns stored them: the surrogate escaped.
BROKEN_METRICS = ('{"accuracy": 0.5, "note": "bad \\ud800 text", "emoji": "\\ud83d\\ude00", '
                  '"\\udc00key": [1, "\\udfff"]}')
BROKEN_DETAIL = '{"name": "ev", "metrics": {"note": "\\udc00"}}'


def _json(db: Database, query: str) -> list[object]:
    with db.engine.connect() as conn:
        return [json.loads(value) if isinstance(value, str) else value for (value,) in conn.execute(text(query))]


def test_migration_0026_replaces_stored_lone_surrogates_and_nothing_else(database_url: str, tmp_path: Path) -> None:
    db = filled_at(database_url, "0025")
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE adapter_versions SET metrics = :m WHERE id = 1"), {"m": BROKEN_METRICS})
        conn.execute(text("INSERT INTO audit_events (actor, action, target, detail, at) VALUES "
                          "('ann', 'version-evaluate', 'ann/old:1', :d, CURRENT_TIMESTAMP), "
                          "('ann', 'publish', 'ann/old:1', :ok, CURRENT_TIMESTAMP)"),
                     {"d": BROKEN_DETAIL, "ok": '{"fine": "\\u00e9t\\u00e9"}'})
    db.upgrade("0026")
    assert _kept(db) == EXPECTED
    assert _json(db, "SELECT metrics FROM adapter_versions WHERE id = 1") == [
        {"accuracy": 0.5, "note": "bad \ufffd text", "emoji": "\U0001f600", "\ufffdkey": [1, "\ufffd"]}]
    assert _json(db, "SELECT detail FROM audit_events ORDER BY id") == [
        {"name": "ev", "metrics": {"note": "\ufffd"}}, {"fine": "été"}]
    db.upgrade()  # this release's code reads a database at its own revision
    registry = Registry(db, FsspecBlobStore(str(tmp_path / "blobs")))
    assert json.loads(registry.get("ann/old:1").model_dump_json())["metrics"]["note"] == "bad \ufffd text"  # reads
    assert {"name": "ev", "metrics": {"note": "\ufffd"}} in [json.loads(e.model_dump_json())["detail"]
                                                            for e in registry.audit("ann/old:1")]
    db.downgrade("0025")
    assert _kept(db) == EXPECTED and _json(db, "SELECT metrics FROM adapter_versions WHERE id = 1")[0]["note"] == \
        "bad \ufffd text"
    db.engine.dispose()

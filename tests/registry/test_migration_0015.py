"""Migration 0015 (version counters) keeps every row of a 0014 database, up and down, on SQLite and PostgreSQL, and
counts from the highest number each adapter has had: its versions, and the publish events of versions since
deleted (an operator's walk, session 14: deleting the newest version, then publishing, gave its number to other
bytes)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import inspect, text

from registry.services.registry import Registry
from registry.store.blobs import FsspecBlobStore
from tests.registry.adapters import make_adapter
from tests.registry.test_migration_0009 import EXPECTED, _kept, filled_at

#: audit events of a 0014 registry: ann/old had versions 2 and 3 once (deleted since), bob/gone had 4 (and no
#: adapter row any more); an event that names no version is passed over
EVENTS = [
    "INSERT INTO audit_events (at, actor, action, target, detail) VALUES (CURRENT_TIMESTAMP, 'ann', 'publish', "
    f"'{target}', '{{}}')" for target in ("ann/old:2", "ann/old:3", "bob/gone:4", "ann/old@prod")
] + ["INSERT INTO audit_events (at, actor, action, target, detail) VALUES (CURRENT_TIMESTAMP, 'ann', 'delete', "
     "'ann/old:9', '{}')"]


def test_migration_0015_keeps_every_row_and_counts_from_the_highest_number_ever_given(database_url: str,
                                                                                      tmp_path: Path) -> None:
    db = filled_at(database_url, "0014", *EVENTS)
    db.upgrade("0015")
    assert _kept(db) == EXPECTED
    with db.engine.connect() as conn:
        counters = sorted(tuple(r) for r in conn.execute(text("SELECT owner, name, last_version FROM "
                                                              "version_counters")))
    assert counters == [("ann", "old", 3), ("bob", "gone", 4)]  # a delete event gives no number
    db.downgrade("0014")
    assert _kept(db) == EXPECTED and "version_counters" not in set(inspect(db.engine).get_table_names())
    db.upgrade()
    blobs = FsspecBlobStore(str(tmp_path / "blobs"))
    blobs.put(b"a blob of the 0014 registry")  # its rows name blobs: its storage holds some (else: not mounted)
    registry = Registry(db, blobs)
    gone = registry.publish(make_adapter(tmp_path / "a"), owner="bob", name="gone", base_model="tiny-llama")
    assert gone.version == 5  # not 1: bob/gone:4 was fetched by someone, with other bytes
    db.engine.dispose()


def test_no_version_number_is_given_twice(registry: Registry, tmp_path: Path) -> None:
    first = registry.publish(make_adapter(tmp_path / "a"), owner="ann", name="x", base_model="tiny-llama")
    second = registry.publish(make_adapter(tmp_path / "b", seed=1), owner="ann", name="x", base_model="tiny-llama")
    registry.delete(second.ref, actor="ann")
    third = registry.publish(make_adapter(tmp_path / "c", seed=2), owner="ann", name="x", base_model="tiny-llama")
    assert (first.version, second.version, third.version) == (1, 2, 3)
    for ref in (first.ref, third.ref):
        registry.delete(ref, actor="ann")  # the adapter goes with its last version...
    again = registry.publish(make_adapter(tmp_path / "d", seed=3), owner="ann", name="x", base_model="tiny-llama")
    assert again.version == 4  # ...and its numbers are still not given again

"""Migration 0028 (SQLite never hands an id out twice) keeps every row of a 0027 database, up and down, on SQLite and
PostgreSQL; on SQLite every table with an id of its own is AUTOINCREMENT after it, the foreign keys still cascade, and
the counters start past ids that rows still name although they are gone."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import text

from registry.domain.errors import IntegrityError
from registry.store.database import Database
from registry.store.models import Base
from tests.registry.test_migration_0009 import EXPECTED, _kept, filled_at

#: A webhook with a delivery and its attempt; a job whose result (version 9) was deleted; a token made from one that
#: was purged (id 12); as a 0027 registry left them.
MORE = [
    "INSERT INTO webhooks (id, owner, url, events, secret, active, description, created_by, created_at, updated_at, "
    "after_event_id) VALUES (3, 'ann', 'https://hooks.example/x', '[\"publish\"]', 'whsec_x', :true, 'kept', 'ann', "
    "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 0)",
    "INSERT INTO webhook_deliveries (id, webhook_id, event_id, event, payload, status, attempts, created_at) VALUES "
    "(40, 3, NULL, 'ping', '{}', 'succeeded', 1, CURRENT_TIMESTAMP)",
    "INSERT INTO webhook_attempts (id, delivery_id, attempt, at, status_code, duration_ms) VALUES "
    "(41, 40, 1, CURRENT_TIMESTAMP, 200, 5)",
    "INSERT INTO jobs (id, status, spec, owner, target_name, created_at, progress, result_version_id, "
    "cancel_requested, attempts, priority, gpus) VALUES (5, 'succeeded', '{}', 'ann', 'ann/old', CURRENT_TIMESTAMP, "
    "'{}', 9, :false, 1, 0, 0)",
    "INSERT INTO access_tokens (id, token_hash, owner, name, scopes, created_at, parent_id) VALUES "
    "(2, :sha, 'ann', 'child', '[\"read\"]', CURRENT_TIMESTAMP, 12)",
]
MORE_KEPT = {
    "webhooks": "SELECT id, url, description FROM webhooks",
    "deliveries": "SELECT id, webhook_id, status FROM webhook_deliveries",
    "attempts": "SELECT id, delivery_id, status_code FROM webhook_attempts",
    "jobs": "SELECT id, result_version_id FROM jobs",
    "tokens": "SELECT id, parent_id FROM access_tokens",
}
MORE_EXPECTED = {"webhooks": [(3, "https://hooks.example/x", "kept")], "deliveries": [(40, 3, "succeeded")],
                 "attempts": [(41, 40, 200)], "jobs": [(5, 9)], "tokens": [(2, 12)]}


def _rows(db: Database) -> tuple[dict[str, list[tuple[Any, ...]]], dict[str, list[tuple[Any, ...]]]]:
    with db.engine.connect() as conn:
        more = {table: [tuple(r) for r in conn.execute(text(query))] for table, query in MORE_KEPT.items()}
    return _kept(db), more


def autoincrement_tables(db: Database) -> set[str]:
    """The SQLite tables declared AUTOINCREMENT."""
    with db.engine.connect() as conn:
        return {name for name, sql in conn.execute(text("SELECT name, sql FROM sqlite_master WHERE type = 'table'"))
                if "AUTOINCREMENT" in (sql or "").upper()}


#: The tables whose rows have an integer id of their own (a lone `id` primary key).
NUMBERED = {t.name for t in Base.metadata.tables.values() if [c.name for c in t.primary_key] == ["id"]}


def test_migration_0028_keeps_every_row_up_and_down(database_url: str) -> None:
    db = filled_at(database_url, "0027", *MORE)
    sqlite = db.engine.dialect.name == "sqlite"
    if sqlite:
        assert autoincrement_tables(db) == set()
    db.upgrade("0028")
    assert _rows(db) == (EXPECTED, MORE_EXPECTED)
    if sqlite:
        assert autoincrement_tables(db) == NUMBERED and len(NUMBERED) == 15
    db.downgrade("0027")
    assert _rows(db) == (EXPECTED, MORE_EXPECTED)
    if sqlite:
        assert autoincrement_tables(db) == set()
    db.upgrade()
    assert _rows(db) == (EXPECTED, MORE_EXPECTED)
    db.engine.dispose()


def test_after_0028_no_id_comes_back_and_deletes_still_cascade(database_url: str) -> None:
    db = filled_at(database_url, "0027", *MORE)
    db.upgrade("0028")
    with db.engine.begin() as conn:
        conn.execute(text("DELETE FROM webhooks WHERE id = 3"))  # the last webhook: its delivery and attempt go too
        assert conn.execute(text("SELECT count(*) FROM webhook_deliveries")).scalar() == 0
        assert conn.execute(text("SELECT count(*) FROM webhook_attempts")).scalar() == 0
        conn.execute(text(MORE[0].replace("(id, ", "(").replace("VALUES (3, ", "VALUES (")), {"true": True})
        webhook = conn.execute(text("SELECT max(id) FROM webhooks")).scalar()
        conn.execute(text(MORE[1].replace("(id, ", "(").replace("(40, 3, ", "(:webhook, ")), {"webhook": webhook})
        delivery = conn.execute(text("SELECT max(id) FROM webhook_deliveries")).scalar()
        conn.execute(text("INSERT INTO access_tokens (token_hash, owner, name, scopes, created_at) VALUES "
                          "(:sha, 'ann', 'new', '[]', CURRENT_TIMESTAMP)"), {"sha": "b" * 64})
        token = conn.execute(text("SELECT max(id) FROM access_tokens")).scalar()
        conn.execute(text("DELETE FROM adapter_versions"))  # version 1 (the highest) goes, as its adapter's last
        conn.execute(text(
            "INSERT INTO adapter_versions (adapter_id, version, base_model_id, projection_id, r, seed, generator, "
            "config, vectors_sha256, projection_fingerprint, seed_reproducible, trainable_parameters, "
            "adapter_parameters, stored_bytes, metrics, description, published_by, created_at, yanked, "
            "verification_status) VALUES (1, 2, 1, 1, 4, '7', 'philox', '{}', :sha, :fp, :true, 12, 12, 10, '{}', "
            "'v2', 'ann', CURRENT_TIMESTAMP, :false, 'unverified')"),
            {"sha": "a" * 64, "fp": "f" * 64, "true": True, "false": False})
        version = conn.execute(text("SELECT max(id) FROM adapter_versions")).scalar()
    if db.engine.dialect.name == "sqlite":  # PostgreSQL's sequences start at 1 here: the rows above gave their ids
        assert webhook == 4 and delivery == 41  # not 3 and 40 again, nor 1
        assert token == 13  # past the purged parent (12) that token 2 still names
        assert version == 10  # past version 1 and the deleted result (9) that job 5 still names
    else:
        assert None not in (webhook, delivery, token, version)
    db.engine.dispose()


def test_a_migration_that_fails_midway_leaves_the_sqlite_database_as_it_was(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every step of an upgrade runs in one transaction on SQLite too: 0028 had dropped every table it remakes when
    the fifth was made again."""
    db = filled_at(f"sqlite:///{tmp_path / 'r.db'}", "0027", *MORE)
    before = _rows(db)
    made = []

    def create(table: sa.Table, bind: Any, checkfirst: bool = False) -> None:
        made.append(table.name)
        if len(made) == 5:
            raise RuntimeError("the disk filled up")
        real_create(table, bind, checkfirst=checkfirst)

    real_create = sa.Table.create
    monkeypatch.setattr(sa.Table, "create", create)
    with pytest.raises(RuntimeError, match="the disk filled up"):
        db.upgrade("0028")
    assert len(made) == 5 and db.current_revision() == "0027"
    assert _rows(db) == before and autoincrement_tables(db) == set()
    assert not [name for name in sa.inspect(db.engine).get_table_names() if name.startswith("_keep_")]
    monkeypatch.undo()
    db.upgrade()
    assert _rows(db) == before
    db.engine.dispose()


def test_rows_naming_rows_that_are_gone_stop_0028_before_it_changes_anything(tmp_path: Path) -> None:
    """A row written while foreign keys were off (not by the registry, which always has them on) would fail the copy;
    the migration says which and how to mend it, and changes nothing."""
    db = filled_at(f"sqlite:///{tmp_path / 'r.db'}", "0027", *MORE)
    with db.engine.begin() as conn:
        conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
        conn.execute(text("INSERT INTO webhook_attempts (id, delivery_id, attempt, at, status_code, duration_ms) "
                          "VALUES (50, 77, 1, CURRENT_TIMESTAMP, 500, 5)"))
    db.engine.dispose()
    db = Database(db.url)
    before = _rows(db)
    with pytest.raises(IntegrityError, match=r"stopped before changing anything: 1 row\(s\) of webhook_attempts name "
                                           r"rows of webhook_deliveries that do not exist .*PRAGMA foreign_key_check"):
        db.upgrade()
    assert db.current_revision() == "0027" and _rows(db) == before
    db.engine.dispose()


@pytest.mark.parametrize(("added", "said"), [
    ("CREATE INDEX ix_mine ON adapters (lower(name))", "index ix_mine on adapters"),
    ("CREATE TRIGGER tr_mine AFTER INSERT ON adapters BEGIN SELECT 1; END", "trigger tr_mine on adapters"),
    ("CREATE TABLE my_notes (id INTEGER PRIMARY KEY, adapter_id INTEGER REFERENCES adapters(id) ON DELETE CASCADE)",
     "table my_notes is not the registry's"),
    ("ALTER TABLE adapters ADD COLUMN nick TEXT COLLATE NOCASE", "a collation in table adapters"),
    ("ALTER TABLE adapters ADD COLUMN twice INTEGER GENERATED ALWAYS AS (id * 2) VIRTUAL",
     "column adapters.twice (generated"),
    ("ALTER TABLE adapters ADD COLUMN untyped", "column adapters.untyped (generated, hidden or without a type)"),
])
def test_what_an_operator_added_to_a_table_0028_makes_again_stops_it_before_it_changes_anything(
        tmp_path: Path, added: str, said: str) -> None:
    """Tables are made again from what SQLAlchemy reflects of them; what it does not read (an operator's trigger,
    expression index, collation, own table pointing into the registry's) would be lost: refused, named."""
    db = filled_at(f"sqlite:///{tmp_path / 'r.db'}", "0027", *MORE)
    with db.engine.begin() as conn:
        conn.exec_driver_sql(added)
    before = _rows(db)
    with pytest.raises(IntegrityError, match=r"stopped before changing anything: it makes tables .*adapters.* "
                                           rf"again .*{re.escape(said)}.*then make them again"):
        db.upgrade()
    assert db.current_revision() == "0027" and _rows(db) == before and autoincrement_tables(db) == set()
    db.engine.dispose()


def test_a_table_made_again_otherwise_than_it_was_rolls_0028_back(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """After making the tables again, 0028 compares each with what it was (columns, indexes, foreign keys, as SQLite
    reports them): a difference, here an index left out, undoes the whole upgrade."""
    db = filled_at(f"sqlite:///{tmp_path / 'r.db'}", "0027", *MORE)
    before = _rows(db)
    real_create = sa.Table.create

    def create(table: sa.Table, bind: Any, checkfirst: bool = False) -> None:
        if table.name == "webhook_attempts":
            table.indexes.clear()
        real_create(table, bind, checkfirst=checkfirst)

    monkeypatch.setattr(sa.Table, "create", create)
    with pytest.raises(IntegrityError, match=r"Migration 0028 changed nothing: webhook_attempts would not have been "
                                           r"made again as they are"):
        db.upgrade()
    assert db.current_revision() == "0027" and _rows(db) == before and autoincrement_tables(db) == set()
    monkeypatch.undo()
    with db.engine.connect() as conn:
        assert "ix_webhook_attempts_delivery" in {i["name"] for i in sa.inspect(conn).get_indexes("webhook_attempts")}
    db.engine.dispose()


def test_at_head_every_table_with_an_id_of_its_own_is_autoincrement_on_sqlite(tmp_path: Path) -> None:
    """What models._never_reused declares, the migrations make: a table added by a later migration with an id of its
    own must be AUTOINCREMENT too (sqlite_autoincrement=True in its create_table), or SQLite gives ids twice."""
    db = Database(f"sqlite:///{tmp_path / 'r.db'}")
    db.upgrade()
    assert autoincrement_tables(db) == NUMBERED
    db.engine.dispose()

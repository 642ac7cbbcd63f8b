"""Migration 0020 (which token made a token: access_tokens.parent_id) keeps every row of a 0019 database, up and
down, on SQLite and PostgreSQL: every token as it was (revoked or live, with its scopes, limit and expiry), with no
parent; a parent recorded after the upgrade goes with the column on downgrade, and the tokens stay."""

from __future__ import annotations

from typing import Any

from sqlalchemy import inspect, text

from registry.store.database import Database
from tests.registry.test_migration_0009 import EXPECTED, _kept, filled_at

TOKENS = [  # a live token, a revoked one, one limited to an owner
    "INSERT INTO access_tokens (id, token_hash, owner, name, scopes, created_at, revoked_at, limited_to) VALUES "
    f"({i}, '{str(i) * 64}', 'ann', 'laptop {i}', '[\"read\", \"publish\"]', CURRENT_TIMESTAMP, {revoked}, {limit})"
    for i, revoked, limit in ((1, "NULL", "NULL"), (2, "CURRENT_TIMESTAMP", "NULL"), (3, "NULL", "'[\"acme\"]'"))
]


def _tokens(db: Database) -> list[tuple[Any, ...]]:
    with db.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(
            "SELECT id, owner, name, scopes, revoked_at IS NOT NULL, limited_to FROM access_tokens ORDER BY id"))]


def test_migration_0020_keeps_every_token_up_and_down(database_url: str) -> None:
    db = filled_at(database_url, "0019", *TOKENS)
    before = _tokens(db)
    assert len(before) == 3
    db.upgrade("0020")
    assert _kept(db) == EXPECTED and _tokens(db) == before
    with db.engine.begin() as conn:
        assert conn.execute(text("SELECT count(*) FROM access_tokens WHERE parent_id IS NULL")).scalar_one() == 3
        conn.execute(text("UPDATE access_tokens SET parent_id = 1 WHERE id = 3"))
    assert "ix_access_tokens_parent_id" in {i["name"] for i in inspect(db.engine).get_indexes("access_tokens")}
    db.downgrade("0019")
    assert _kept(db) == EXPECTED and _tokens(db) == before
    assert "parent_id" not in {c["name"] for c in inspect(db.engine).get_columns("access_tokens")}
    db.upgrade()
    assert _tokens(db) == before
    db.engine.dispose()

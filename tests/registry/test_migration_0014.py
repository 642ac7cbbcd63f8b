"""Migration 0014 (model card revisions) keeps every row of a 0013 database, up and down, on SQLite and PostgreSQL;
its table starts empty (a card never edited keeps its /hf commit ids) and going down leaves adapters.card as it is."""

from __future__ import annotations

from sqlalchemy import inspect, text

from tests.registry.test_migration_0009 import EXPECTED, _kept, filled_at


def test_migration_0014_keeps_every_row_of_a_0013_database_up_and_down(database_url: str) -> None:
    db = filled_at(database_url, "0013")
    with db.engine.begin() as conn:
        adapter = conn.execute(text("SELECT min(id) FROM adapters")).scalar_one()
    db.upgrade("0014")
    assert _kept(db) == EXPECTED
    with db.engine.begin() as conn:
        assert conn.execute(text("SELECT count(*) FROM adapter_cards")).scalar_one() == 0  # fills as cards change
        conn.execute(text("INSERT INTO adapter_cards (adapter_id, revision, card, created_at) VALUES "
                          "(:a, 0, '', CURRENT_TIMESTAMP), (:a, 1, '# edited', CURRENT_TIMESTAMP)"), {"a": adapter})
    db.downgrade("0013")
    assert _kept(db) == EXPECTED
    assert "adapter_cards" not in set(inspect(db.engine).get_table_names())
    db.upgrade()
    assert _kept(db) == EXPECTED
    db.engine.dispose()

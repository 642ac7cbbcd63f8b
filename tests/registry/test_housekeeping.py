"""Housekeeping (registry.services.housekeeping): the API purges ended tokens on its own, keeps what a purge must
keep (a trusted publisher's token while its identity token may still be valid), audits each deletion once, and runs
nothing on a read-only registry."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from registry.bootstrap import build_api
from registry.domain.errors import InvalidInput
from registry.services import tokens
from registry.services.housekeeping import Housekeeping
from registry.services.registry import Registry
from registry.services.tokens import create_token, purge_tokens
from registry.settings import Settings
from registry.store.database import Database
from registry.store.models import AccessToken, AuditEvent


def _tokens(db: Database, **ended: dict[str, datetime]) -> dict[str, int]:
    """A read token per label, then ``ended``'s columns written over them; plus a live newest row ("last", kept by
    every purge whatever it is)."""
    ids = {label: create_token(db, owner="ann", scopes=["read"], name=label.replace("_", " "))[0]
           for label in [*ended, "last"]}
    with db.session() as s:
        for label, values in ended.items():
            s.execute(update(AccessToken).where(AccessToken.id == ids[label]).values(**values))
    return ids


def _names(db: Database) -> set[str]:
    with db.session() as s:
        return set(s.scalars(select(AccessToken.name)))


def _purges(db: Database) -> list[tuple[str, list[int]]]:
    with db.session() as s:
        return [(e.actor, e.detail["tokens"]) for e in s.scalars(
            select(AuditEvent).where(AuditEvent.action == "token-purge").order_by(AuditEvent.id))]


def test_a_round_purges_what_ended_days_ago_audited_by_the_registry(registry: Registry) -> None:
    db, now = registry.db, datetime.now(UTC)
    ids = _tokens(db, expired_long_ago={"expires_at": now - timedelta(days=40)},
                  revoked_long_ago={"revoked_at": now - timedelta(days=31)},
                  revoked_lately={"revoked_at": now - timedelta(days=2)},
                  live={"expires_at": now + timedelta(days=2)})
    keeper = Housekeeping(db, token_purge_days=30)
    assert keeper.run_once() == 2
    assert _names(db) == {"revoked lately", "live", "last"}
    assert _purges(db) == [("registry", [ids["expired_long_ago"], ids["revoked_long_ago"]])]
    assert keeper.run_once() == 0 and len(_purges(db)) == 1  # nothing left to purge: nothing audited


def test_a_trusted_publishers_token_outlives_any_purge_for_a_day(registry: Registry) -> None:
    """Its name is what refuses a second exchange of the identity token it was minted from (valid up to 24 h):
    `vera token purge --days 0` right after it expired deleted that guard."""
    db, now = registry.db, datetime.now(UTC)
    minted = {"expires_at": now - timedelta(minutes=5)}
    ids = _tokens(db, **{"trusted_publisher_ci_0123": minted,
                         "trusted_publisher_ci_4567": {**minted, "created_at": now - timedelta(days=1, minutes=6)},
                         # an identity token minted from 24 h 2 min ago may still be valid (iat 60 s ahead, 60 s of
                         # leeway past its exp): an outsider replayed one a purge had let go after 24 h 1 min
                         "trusted_publisher_ci_89ab": {**minted, "created_at": now - timedelta(days=1, minutes=3)},
                         "trusted_publisherless": minted})  # a person's token named alike, without the space
    assert [t.id for t in purge_tokens(db, before=now)] == [ids["trusted_publisher_ci_4567"],
                                                           ids["trusted_publisherless"]]
    assert _names(db) == {"trusted publisher ci 0123", "trusted publisher ci 89ab", "last"}


def test_purges_at_the_same_moment_audit_each_token_once(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every API replica purges: one that deleted a row another had just selected does not audit it again."""
    db, now = registry.db, datetime.now(UTC)
    ids = _tokens(db, old={"revoked_at": now - timedelta(days=40)})
    selected = tokens._ended
    raced: list[int] = []

    def select_then_lose_the_race(*args, **kwargs):  # type: ignore[no-untyped-def]
        rows = selected(*args, **kwargs)
        if not raced:  # another replica purges the same rows and commits before this one deletes
            raced.append(0)
            other = Database(db.url)
            raced.extend(t.id for t in purge_tokens(other, before=now, actor="other replica"))
            other.engine.dispose()
        return rows

    monkeypatch.setattr(tokens, "_ended", select_then_lose_the_race)
    assert purge_tokens(db, before=now) == []
    assert raced == [0, ids["old"]]
    assert _purges(db) == [("other replica", [ids["old"]])]


def test_it_runs_in_the_background_until_stopped_and_survives_a_failed_round(registry: Registry,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    db, now = registry.db, datetime.now(UTC)
    _tokens(db, old={"revoked_at": now - timedelta(days=3)})
    rounds: list[str] = []
    real = Housekeeping.run_once

    def flaky(self: Housekeeping) -> int:
        rounds.append("round")
        if len(rounds) == 1:
            raise RuntimeError("the database went away")
        return real(self)

    monkeypatch.setattr(Housekeeping, "run_once", flaky)
    keeper = Housekeeping(db, token_purge_days=1, every_s=0.05, first_after_s=0.05)
    keeper.start()
    try:
        deadline = time.monotonic() + 20
        while "old" in _names(db) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        keeper.stop()
    assert _names(db) == {"last"} and len(rounds) >= 2
    count = len(rounds)
    time.sleep(0.2)
    assert len(rounds) == count  # stopped


def test_the_api_purges_unless_told_not_to_or_read_only(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    for env, active in (({}, True), ({"token_purge_days": 0}, False), ({"read_only": True}, False)):
        settings = Settings(database_url=url, storage_url=str(tmp_path / "blobs"), require_tokens=False, **env)
        app, registry, _ = build_api(settings)
        with TestClient(app) as client:
            assert client.get("/health").status_code == 200
            keeper = app.state.housekeeping
            assert keeper.active is active and (keeper._thread is not None) is active
            assert keeper.token_purge_days == settings.token_purge_days
        assert keeper._thread is None  # stopped with the app
        registry.db.close()


def test_a_purge_within_a_day_of_the_end_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match="at least 1 day after they end.*0 to purge by hand only"):
        Settings(token_purge_days=0.5)
    assert Settings(token_purge_days=0).token_purge_days == 0
    assert Settings().token_purge_days == 30
    with pytest.raises(InvalidInput, match="VERA_TOKEN_PURGE_DAYS to 1 or more"):
        Housekeeping(Database("sqlite://"), token_purge_days=0.1)

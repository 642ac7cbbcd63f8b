"""Housekeeping (registry.services.housekeeping): the API purges ended tokens on its own, keeps what a purge must
keep (a trusted publisher's token while its identity token may still be valid), audits each deletion once, pauses the
registry-wide webhooks of an administrator whose last administrator's token expired, and runs nothing on a
read-only registry."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from registry.bootstrap import build_api
from registry.domain.errors import InvalidInput
from registry.domain.events import WebhookChange, WebhookForm
from registry.services import tokens
from registry.services.delivery import Sender
from registry.services.housekeeping import Housekeeping
from registry.services.registry import Registry
from registry.services.tokens import create_token, purge_tokens, revoke_token
from registry.services.webhooks import Webhooks
from registry.settings import Settings
from registry.store.database import Database
from registry.store.models import AccessToken, AuditEvent, Webhook


def _tokens(db: Database, **ended: dict[str, datetime]) -> dict[str, int]:
    """A read token per label, then ``ended``'s columns written over them; plus a live newest row ("last")."""
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


def test_the_api_keeps_house_unless_read_only_and_purges_unless_told_not_to(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    for env, active in (({}, True), ({"token_purge_days": 0}, True), ({"read_only": True}, False)):
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


def test_a_round_pauses_the_registry_wide_webhooks_of_an_administrator_whose_last_admin_token_expired(
        registry: Registry) -> None:
    """A revocation pauses an administrator's registry-wide webhooks at once; an expiry has no moment of its own, so
    each housekeeping round looks (the guide left it to the operator's review). An administrator who resumes one
    afterwards takes it over: the next rounds leave it running."""
    db, now = registry.db, datetime.now(UTC)
    hooks = Webhooks(db, Sender(allow_private=True))
    ops1 = create_token(db, owner="ops1", scopes=["admin"], expires_in=timedelta(hours=1))[0]
    create_token(db, owner="ops1", scopes=["admin"], limited_to=["alice"])  # not the whole registry's: no matter
    create_token(db, owner="ops2", scopes=["admin"])
    create_token(db, owner="ops3", scopes=["admin"], expires_in=timedelta(hours=1))
    made = {name: hooks.create(WebhookForm(owner="*", url=f"http://127.0.0.1:9/{name}"), actor=actor).id
            for name, actor in (("ops1s", "ops1"), ("ops2s", "ops2"), ("edited", "ops2"), ("operator", "operator"),
                                ("ops3s", "ops3"), ("ops1s2", "ops1"))}
    hooks.change(made["edited"], WebhookChange(url="http://127.0.0.1:9/edited-by-ops1"), actor="ops1")
    hooks.create(WebhookForm(owner="alice", url="http://127.0.0.1:9/own"), actor="ops1")  # an owner's: not this
    keeper = Housekeeping(db, token_purge_days=0)
    assert keeper.run_once() == 0 and all(h.active for h in hooks.for_owner("*"))  # everyone's token is live

    with db.session() as s:  # all that was two hours ago; ops1's unlimited administrator's token ran out since
        s.execute(update(Webhook).values(created_at=now - timedelta(hours=2)))
        s.execute(update(AuditEvent).values(at=now - timedelta(hours=2)))
        s.execute(update(AccessToken).where(AccessToken.id == ops1).values(expires_at=now - timedelta(minutes=1)))
    keeper.run_once()
    active = {h.id: h.active for h in hooks.for_owner("*")}
    assert {name: active[i] for name, i in made.items()} == {
        "ops1s": False, "ops2s": True, "edited": False, "operator": True, "ops3s": True, "ops1s2": False}
    with db.session() as s:
        reasons = {e.target: (e.actor, e.detail) for e in s.scalars(select(AuditEvent).where(
            AuditEvent.action == "webhook-update", AuditEvent.actor == "registry"))}
    expired = "holds no administrator's token any more, its last one expired (ops1)"
    assert reasons == {f"*/webhooks/{made[name]}": ("registry", {"active": False,
                                                                  "reason": f"paused: its {role} {expired}"})
                       for name, role in (("ops1s", "creator"), ("ops1s2", "creator"), ("edited", "editor"))}

    hooks.change(made["ops1s"], WebhookChange(active=True), actor="ops2")  # reviewed and resumed: ops2's now
    keeper.run_once()
    keeper.run_once()
    active = {h.id: h.active for h in hooks.for_owner("*")}
    assert (active[made["ops1s"]], active[made["ops1s2"]]) == (True, False)
    with db.session() as s:
        assert len(list(s.scalars(select(AuditEvent).where(AuditEvent.actor == "registry")))) == 3  # once each

    revoke_token(db, ops1)  # it had expired: its revocation pauses nothing, and the resumed one stays
    assert hooks.get(made["ops1s"]).active

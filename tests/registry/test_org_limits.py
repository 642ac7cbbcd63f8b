"""VERA_ORGS_PER_USER: each organisation has its own storage quota and job queue, and a renamed one's old name is
retired, so one ordinary token that creates organisations at will multiplies its quota (an outsider stored four
times it, session 43) and retires user names nobody has taken yet. A user may have created that many organisations
that still exist, and create or rename one that many times in 24 hours; registry administrators are not limited."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from registry.domain.errors import QuotaExceeded
from registry.services.access import Access
from registry.services.registry import Registry
from registry.store import models as m
from registry.store.database import Database
from tests.registry.servers import registry_in_thread, team_tokens
from tests.registry.test_org_deletion import principal


def organisations(db: Database) -> list[str]:
    with db.session() as s:
        return list(s.scalars(select(m.Organization.name).order_by(m.Organization.name)))


def age_org_events(db: Database, by: timedelta) -> None:
    """Move every organisation event ``by`` into the past, as if made that long before."""
    with db.session() as s:
        events = list(s.scalars(select(m.AuditEvent).where(m.AuditEvent.action.in_(("org-create", "org-rename")))))
        for event in events:
            event.at = event.at - by


def test_a_user_has_at_most_orgs_per_user_organisations_it_created(registry: Registry) -> None:
    db = registry.db
    access = Access(db, orgs_per_user=3)
    for name in ("m1", "m2", "m3"):
        access.create_organization(name, creator="mallory")
    with pytest.raises(QuotaExceeded) as refused:
        access.create_organization("m4", creator="mallory")
    said = str(refused.value)  # three creations today as well: both limits said, and both ways out
    assert said.startswith("mallory has created 3 organisations that still exist and has created or renamed "
                           "organisations 3 times in the last 24 hours, the most one user may (VERA_ORGS_PER_USER=3")
    assert "nothing was done. To create m4, delete one it no longer needs (`vera org delete NAME`, once it owns " \
           "nothing), then try again from " in said and "or ask a registry administrator" in said
    assert organisations(db) == ["m1", "m2", "m3"]
    access.create_organization("b1", creator="bob")  # another user's count is its own
    access.create_organization("r1", creator="root", bounded=False)  # a registry administrator's: not counted
    mallory = principal(db, "mallory", ["read", "publish"])
    access.delete_organization("m3", viewer=mallory)
    # a place is free again, but three creations in 24 hours are the day's most
    with pytest.raises(QuotaExceeded, match=r"^mallory has created or renamed organisations 3 times in the last 24 "
                                            r"hours, the most one user may \(VERA_ORGS_PER_USER=3.*To create m4, try "
                                            r"again from \d{4}-\d\d-\d\d \d\d:\d\d UTC"):
        access.create_organization("m4", creator="mallory")
    age_org_events(db, timedelta(hours=25))
    access.create_organization("m4", creator="mallory")
    assert organisations(db) == ["b1", "m1", "m2", "m4", "r1"]


def test_renames_count_against_the_days_changes_and_administrators_are_not_limited(registry: Registry) -> None:
    """A rename retires the old name for good (once it owned something): a user renames organisations at most
    VERA_ORGS_PER_USER times a day, its creations included; a rename is audited on both names, counted once."""
    db = registry.db
    access = Access(db, orgs_per_user=2)
    access.create_organization("lab", creator="mallory")
    mallory = principal(db, "mallory", ["read", "publish"])
    access.rename_organization("lab", "lab2", viewer=mallory)  # a creation and a rename: two changes
    mallory = principal(db, "mallory", ["read", "publish"])  # (its roles as they are now)
    with pytest.raises(QuotaExceeded, match="created or renamed organisations 2 times in the last 24 hours") as refused:
        access.rename_organization("lab2", "lab3", viewer=mallory)
    assert "nothing was done. To rename lab2, try again from " in str(refused.value)
    assert organisations(db) == ["lab2"]
    root = principal(db, "root", ["admin"])
    access.rename_organization("lab2", "lab3", viewer=root)  # a registry administrator: not limited
    with db.session() as s:  # nor counted against mallory (root renamed it)
        assert s.scalar(select(func.count()).select_from(m.AuditEvent).where(m.AuditEvent.actor == "mallory",
                                                                            m.AuditEvent.action == "org-rename")) == 2
    with pytest.raises(QuotaExceeded):  # mallory's day is still full
        access.create_organization("other", creator="mallory")
    age_org_events(db, timedelta(hours=25))
    access.rename_organization("lab3", "lab4", viewer=principal(db, "mallory", ["read", "publish"]))
    assert organisations(db) == ["lab4"]


def test_none_means_only_registry_administrators_create_organisations(registry: Registry) -> None:
    access = Access(registry.db, orgs_per_user=0)
    with pytest.raises(QuotaExceeded, match=r"only registry administrators create and rename organisations "
                                            r"\(VERA_ORGS_PER_USER=0\); nothing was done. Ask one to create acme and "
                                            r"make you its admin"):
        access.create_organization("acme", creator="alice")
    access.create_organization("acme", creator="root", bounded=False)
    with pytest.raises(QuotaExceeded, match=r"VERA_ORGS_PER_USER=0\); nothing was done. Use an admin token without "
                                            r"an owner limit"):  # an admin limited to some owners is told so
        access.rename_organization("acme", "acme2", viewer=principal(registry.db, "root-limited", ["admin"],
                                                                     limited_to=["acme"]))
    assert organisations(registry.db) == ["acme"]
    with pytest.raises(ValueError, match="orgs_per_user must be 0 or more"):
        Access(registry.db, orgs_per_user=-1)


def test_the_api_refuses_an_ordinary_tokens_organisation_past_the_limit(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    with registry_in_thread(url, tmp_path / "blobs", VERA_REQUIRE_TOKENS="true", VERA_ORGS_PER_USER="1") as base:
        tokens = team_tokens(url, ["mallory"], admins=["root"])

        def create(who: str, name: str) -> httpx.Response:
            return httpx.post(f"{base}/api/v1/orgs", json={"name": name}, timeout=30,
                              headers={"Authorization": f"Bearer {tokens[who]}"})

        assert create("mallory", "first").status_code == 201
        refused = create("mallory", "second")
        assert refused.status_code == 403 and refused.json()["type"] == "/problems/quota_exceeded", refused.text
        assert "VERA_ORGS_PER_USER=1" in refused.json()["detail"]
        assert create("root", "second").status_code == 201 and create("root", "third").status_code == 201
        listed = httpx.get(f"{base}/api/v1/orgs", headers={"Authorization": f"Bearer {tokens['root']}"}, timeout=30)
        assert [o["name"] for o in listed.json()] == ["first", "second", "third"]


def test_creations_at_once_take_turns_at_the_limit(registry: Registry) -> None:
    """Six creations at once made thirteen organisations past a limit of ten (a re-check's finding, session 43): a
    user's creations take turns at the count (PostgreSQL: an advisory lock; SQLite: its write lock)."""
    access = Access(registry.db, orgs_per_user=3)
    outcomes: list[str] = []

    def create(i: int) -> None:
        try:
            access.create_organization(f"race{i}", creator="mallory")
            outcomes.append("created")
        except QuotaExceeded:
            outcomes.append("refused")

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(outcomes) == ["created"] * 3 + ["refused"] * 5
    assert len(organisations(registry.db)) == 3

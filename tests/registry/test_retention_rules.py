"""An adapter's own retention rule (migration 0034; registry.services.retention.Retention.apply_rules): set by its
owner's writers (the service, PATCH /api/v1/adapters/{owner}/{name} {"retention": ...}, `vera retention`), applied by
the API's housekeeping and by `vera gc`: the versions it lets go are deleted and audited, never the newest, one an
alias points at (latest included), nor any of another adapter; each deletion asks the rule again, so a rule cleared
during a run stops it. A bad rule is refused, changing nothing. Through a real server over SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from registry.api.app import create_app
from registry.api.deps import ApiOptions
from registry.client import RegistryClient
from registry.domain.errors import Forbidden, NotFound
from registry.domain.schemas import AdapterUpdate, RetentionInfo, RetentionPolicy
from registry.services import housekeeping
from registry.services.housekeeping import Housekeeping
from registry.services.registry import Registry
from registry.services.retention import RULE_ACTOR, Retention
from registry.services.tokens import create_token
from registry.store import models as m
from tests.commands import vera as run_vera
from tests.commands import wide_vera as vera
from tests.registry.adapters import make_adapter
from tests.registry.servers import in_thread, registry_in_thread
from tests.registry.test_retention import deletions, history_on_files, publish_history, refs

LATER = timedelta(days=10)


def edits(registry: Registry, adapter: str) -> list[dict[str, object]]:
    """The adapter-edit events of ``adapter``, oldest first (their detail)."""
    return [e.detail for e in reversed(registry.audit(adapter)) if e.action == "adapter-edit"]


def rule(registry: Registry, adapter: str, **parts: Any) -> None:
    registry.update_adapter(adapter, AdapterUpdate(retention=RetentionPolicy(**parts)), actor="ann")


def publish(registry: Registry, tmp_path: Path, adapter: str, count: int) -> None:
    owner, name = adapter.split("/")
    for i in range(count):
        registry.publish(make_adapter(tmp_path / f"{name}{i}", seed=100 + i), owner=owner, name=name,
                         base_model="tiny-llama")


def test_an_adapters_rule_deletes_what_it_lets_go_and_nothing_elsewhere(registry: Registry, tmp_path: Path) -> None:
    publish_history(registry, tmp_path)  # ann/a:1-5 (prod -> 1), bob/b:1-2
    assert registry.apply_retention_rules().deleted == []  # no adapter has a rule: nothing goes
    rule(registry, "ann/a", keep_last=2)
    info = registry.adapter("ann/a")
    assert info.retention == RetentionInfo(keep_last=2) and registry.adapter("bob/b").retention is None
    assert edits(registry, "ann/a") == [{"before": {"retention": None}, "after": {"retention": {"keep_last": 2}}}]
    planned = registry.apply_retention_rules(dry_run=True)
    assert [v.ref for v in planned.deleted] == ["ann/a:2", "ann/a:3"] and planned.protected == {"ann/a:1": ["prod"]}
    assert len(refs(registry)) == 7  # a dry run deletes nothing
    done = registry.apply_retention_rules()
    assert [v.ref for v in done.deleted] == ["ann/a:2", "ann/a:3"] and done.skipped == {}
    assert refs(registry) == ["ann/a:1", "ann/a:4", "ann/a:5", "bob/b:1", "bob/b:2"]
    assert deletions(registry, "ann/a:2") == [RULE_ACTOR] and registry.apply_retention_rules().deleted == []
    deleted = next(e for e in registry.audit("ann/a:2") if e.action == "delete")
    assert deleted.detail == {"retention": {"keep_last": 2}}  # the event says which rule
    # a rule by age (kept by either part), and one removed: {} leaves no rule, and nothing more goes
    rule(registry, "bob/b", keep_last=1, keep_days=5)
    later = datetime.now(UTC) + LATER
    assert [v.ref for v in registry.apply_retention_rules(now=later, dry_run=True).deleted] == ["bob/b:1"]
    rule(registry, "bob/b")
    assert registry.adapter("bob/b").retention is None and registry.apply_retention_rules(now=later).deleted == []
    assert edits(registry, "bob/b")[-1]["after"] == {"retention": None}
    assert refs(registry) == ["ann/a:1", "ann/a:4", "ann/a:5", "bob/b:1", "bob/b:2"]


def test_a_rule_goes_with_its_adapter_when_it_moves(registry: Registry, tmp_path: Path) -> None:
    """Renamed or transferred, an adapter keeps its rule (a column of its row), applied under its new name."""
    publish_history(registry, tmp_path)  # ann/a:1-5 (prod -> 1), bob/b:1-2
    rule(registry, "ann/a", keep_last=2)
    registry.move("ann/a", "bob/kept", actor="ann")
    assert registry.adapter("bob/kept").retention == RetentionInfo(keep_last=2)
    assert [v.ref for v in registry.preview_retention("bob", "kept")[1].deleted] == ["bob/kept:2", "bob/kept:3"]
    assert [v.ref for v in registry.apply_retention_rules().deleted] == ["bob/kept:2", "bob/kept:3"]


def test_a_rule_never_empties_its_adapter_nor_takes_what_latest_names(registry: Registry, tmp_path: Path) -> None:
    """A rule by age alone keeps nothing of an adapter nobody published to for D days: its last version went, and
    with it the adapter (a private one came back public at the next publish); yanked newest versions made latest
    name an older one, which the rule then deleted (a review, session 55). The newest and latest's stay."""
    publish(registry, tmp_path, "ann/old", 3)
    registry.update_adapter("ann/old", AdapterUpdate(visibility="private"), actor="ann")
    publish(registry, tmp_path, "ann/yanked", 4)
    registry.yank("ann/yanked:4", actor="ann")
    registry.yank("ann/yanked:3", actor="ann")  # latest -> 2
    publish(registry, tmp_path, "ann/gone", 2)
    for yanked in ("ann/gone:1", "ann/gone:2"):
        registry.yank(yanked, actor="ann")  # every version yanked: latest names none
    for adapter in ("ann/old", "ann/yanked", "ann/gone"):
        rule(registry, adapter, keep_days=1)
    done = registry.apply_retention_rules(now=datetime.now(UTC) + LATER)
    assert sorted(v.ref for v in done.deleted) == [
        "ann/gone:1", "ann/old:1", "ann/old:2", "ann/yanked:1", "ann/yanked:3"]  # 3: neither newest nor latest
    assert done.protected == {"ann/yanked:2": ["latest"]}
    assert refs(registry) == ["ann/gone:2", "ann/old:3", "ann/yanked:2", "ann/yanked:4"]
    assert registry.adapter("ann/old").visibility == "private" and registry.get("ann/yanked").version == 2


def test_each_deletion_asks_the_rule_again(registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    """The plan is made once; a rule cleared, or versions deleted by hand, before its deletions run keep what the
    rule keeps now (they were deleted as planned, leaving nothing: a review, session 55)."""
    publish_history(registry, tmp_path)
    rule(registry, "ann/a", keep_last=2)
    rule(registry, "bob/b", keep_last=1)
    planned = Retention._plan

    def plan_then_change(*args: Any, **kwargs: Any) -> Any:
        retired = planned(*args, **kwargs)  # ann/a:2 and :3, bob/b:1
        rule(registry, "bob/b")  # bob's rule cleared
        registry.delete("ann/a:5", actor="ann")
        registry.delete("ann/a:4", actor="ann")  # ann's newest deleted by hand: :3 and :2 are the newest 2 now
        return retired

    monkeypatch.setattr(Retention, "_plan", plan_then_change)
    done = registry.apply_retention_rules()
    assert done.deleted == [] and done.skipped == {
        "ann/a:2": "ann/a:2 is kept: its adapter's retention rule keeps it now.",
        "ann/a:3": "ann/a:3 is kept: it is its adapter's newest version.",
        "bob/b:1": "bob/b:1 is kept: its adapter has no retention rule now."}
    assert refs(registry) == ["ann/a:1", "ann/a:2", "ann/a:3", "bob/b:1", "bob/b:2"]


def test_a_rule_written_by_hand_that_the_api_refuses_deletes_nothing(registry: Registry, tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    publish_history(registry, tmp_path)
    with registry.db.session() as s:
        s.execute(update(m.Adapter).where(m.Adapter.name == "a").values(retention_keep_last=0))
    with caplog.at_level(logging.WARNING, logger="vera.retention"):
        assert registry.apply_retention_rules().deleted == [] and len(refs(registry)) == 7
    assert "the retention rule of ann/a ({'keep_last': 0}) is not one the API takes" in caplog.text


def test_a_failing_retention_round_holds_up_no_other_housekeeping(registry: Registry,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    done: list[str] = []
    monkeypatch.setattr(housekeeping, "pause_webhooks_of_departed_admins", lambda *a, **k: done.append("pause") or [])
    monkeypatch.setattr(housekeeping, "purge_tokens", lambda *a, **k: done.append("purge") or [])

    def fails() -> Any:
        raise RuntimeError("database is locked")

    with pytest.raises(RuntimeError, match="database is locked"):
        Housekeeping(registry.db, token_purge_days=30, retention_rules=fails).run_once()
    assert done == ["pause", "purge"]


@pytest.mark.parametrize(("retention", "said"), [
    ({"keep_last": 0}, "retention.keep_last: Input should be greater than or equal to 1"),
    ({"keep_last": "2"}, "retention.keep_last: Input should be a valid integer"),
    ({"keep_last": 2.5}, "retention.keep_last: Input should be a valid integer"),
    ({"keep_last": True}, "retention.keep_last: Input should be a valid integer"),
    ({"keep_days": 0.5}, "retention.keep_days: Input should be greater than or equal to 1"),
    ({"keep_days": 1e9}, "retention.keep_days: Input should be less than or equal to 36500"),
    ({"keep_days": True}, "retention.keep_days: Input should be a valid number"),
    ({"keep_days": "30"}, "retention.keep_days: Input should be a valid number"),
    ({"keep_versions": 3}, "retention.keep_versions: Extra inputs are not permitted"),
    (5, "retention: Input should be a valid dictionary"),
], ids=["zero", "text", "fraction", "bool", "half-a-day", "too-many-days", "bool-days", "text-days", "unknown-part",
        "not-an-object"])
def test_a_bad_rule_is_refused_changing_nothing(registry: Registry, tmp_path: Path, retention: object,
                                                said: str) -> None:
    publish_history(registry, tmp_path)
    rule(registry, "ann/a", keep_days=30)
    with in_thread(create_app(registry, ApiOptions(require_tokens=False))) as url:
        answer = httpx.patch(f"{url}/api/v1/adapters/ann/a", json={"retention": retention}, timeout=30)
    assert answer.status_code == 422 and said in answer.json()["detail"], answer.text
    assert registry.adapter("ann/a").retention == RetentionInfo(keep_days=30) and len(edits(registry, "ann/a")) == 1


def test_the_api_sets_it_and_housekeeping_applies_it(registry: Registry, tmp_path: Path) -> None:
    publish_history(registry, tmp_path)
    app = create_app(registry, ApiOptions(require_tokens=False))
    with in_thread(app) as url, RegistryClient(url) as client:
        assert client.adapter("ann/a").retention is None
        assert client.set_retention("ann/a", keep_last=3).retention == RetentionInfo(keep_last=3)
        assert client.adapter("ann/a").retention == RetentionInfo(keep_last=3)
        assert client.update_adapter("ann/a", description="kept").retention == RetentionInfo(keep_last=3)
        app.state.housekeeping.run_once()  # what the API does about once an hour
        assert [v.version for v in client.list_versions(owner="ann").items] == [5, 4, 3, 1]  # 1: prod names it
        assert deletions(registry, "ann/a:2") == [RULE_ACTOR]
        assert client.set_retention("ann/a").retention is None  # neither part: the rule is removed
        app.state.housekeeping.run_once()
        assert len(refs(registry)) == 6


def test_a_preview_says_what_a_rule_would_delete_changing_nothing(registry: Registry, tmp_path: Path) -> None:
    """GET .../retention: the adapter's own rule, or one the query gives before it is set; any reader may ask. Its
    list is whole, as it was before ``limit``, or the oldest ``limit``; the count is whole."""
    publish_history(registry, tmp_path)
    with in_thread(create_app(registry, ApiOptions(require_tokens=False))) as url, RegistryClient(url) as client:
        none = client.retention_preview("ann/a")
        assert none.rule is None and none.would_delete == [] and none.kept_for_aliases == {}
        asked = client.retention_preview("ann/a", keep_last=2)
        assert asked.rule == RetentionInfo(keep_last=2) and asked.would_delete == ["ann/a:2", "ann/a:3"]
        assert asked.kept_for_aliases == {"ann/a:1": ["prod"]} and registry.adapter("ann/a").retention is None
        assert asked.applied is True  # this registry applies rules (VERA_RETENTION_RULES, below)
        assert asked.would_delete_count == asked.total == 2
        bounded = client.retention_preview("ann/a", keep_last=2, limit=1)
        assert bounded.would_delete == ["ann/a:2"] and bounded.would_delete_count == bounded.total == 2
        client.set_retention("ann/a", keep_last=4)
        own = client.retention_preview("ann/a")
        assert own.rule == RetentionInfo(keep_last=4) and own.would_delete == [] and own.adapter == "ann/a"
        by_age = client.retention_preview("bob/b", keep_days=1)  # minutes-old versions: the 1 day keeps them
        assert by_age.would_delete == []
        for query, said in (("keep_last=0", "keep_last: Input should be greater than or equal to 1"),
                            ("keep_days=nan", "keep_days: Input should be a finite number"),
                            ("keep_days=0.5", "keep_days: Input should be greater than or equal to 1")):
            answer = httpx.get(f"{url}/api/v1/adapters/ann/a/retention?{query}", timeout=30)
            assert answer.status_code == 422 and said in answer.json()["detail"], answer.text
        assert httpx.get(f"{url}/api/v1/adapters/ann/nothing/retention", timeout=30).status_code == 404
    assert len(refs(registry)) == 7


def test_only_who_may_delete_its_versions_sets_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    with registry_in_thread(url, tmp_path / "blobs", VERA_REQUIRE_TOKENS="true") as base:
        from registry.store.database import Database

        db = Database(url)
        tokens = {who: create_token(db, owner=who, scopes=scopes, limited_to=limited)[1] for who, scopes, limited in (
            ("ann", ["read", "publish"], None), ("bob", ["read", "publish"], None), ("cat", ["read"], None))}
        limited = create_token(db, owner="ann", scopes=["read", "publish"], limited_to=["ann-team"])[1]
        db.engine.dispose()
        with RegistryClient(base, tokens["ann"]) as ann:
            ann.publish(make_adapter(tmp_path / "x"), "ann/x", base_model="tiny-llama")
            ann.publish(make_adapter(tmp_path / "p"), "ann/p", base_model="tiny-llama", visibility="private")
        for token, adapter, refused in ((tokens["bob"], "ann/x", Forbidden), (tokens["cat"], "ann/x", Forbidden),
                                        (limited, "ann/x", Forbidden), (tokens["bob"], "ann/p", NotFound)):
            with RegistryClient(base, token) as other, pytest.raises(refused):
                other.set_retention(adapter, keep_last=1)
        with RegistryClient(base, tokens["ann"]) as ann:
            assert ann.adapter("ann/x").retention is None and ann.adapter("ann/p").retention is None
            assert ann.set_retention("ann/p", keep_last=1).retention == RetentionInfo(keep_last=1)


def test_the_operator_turns_the_rules_off(registry: Registry, tmp_path: Path) -> None:
    """VERA_RETENTION_RULES=false: no rule deletes anything, in the API's housekeeping (nor in `vera gc`, below):
    for a database restored from a backup to recover what a rule deleted."""
    from registry.bootstrap import build_api
    from registry.settings import Settings

    publish_history(registry, tmp_path)
    rule(registry, "ann/a", keep_last=1)
    settings = Settings(database_url=str(registry.db.engine.url.render_as_string(hide_password=False)),
                        storage_url=registry.blobs.url, retention_rules=False, require_tokens=False)
    app, served, _ = build_api(settings)
    app.state.housekeeping.run_once()
    assert len(refs(registry)) == 7 and app.state.housekeeping.retention_rules is None
    with in_thread(app) as url:  # and a preview says so: "deleted within the hour" would be untrue
        with RegistryClient(url) as client:
            preview = client.retention_preview("ann/a")
        assert preview.applied is False and preview.would_delete == [f"ann/a:{v}" for v in (2, 3, 4)]
        dry = vera("retention", "ann/a", "--dry-run", "--registry", url)
        assert "would delete ann/a:2" in dry.stdout and ("note: this registry applies no retention rule now (its "
                                                         "operator set VERA_RETENTION_RULES=false)") in " ".join(
            dry.stderr.split()), dry.stderr
        made = vera("retention", "ann/a", "--keep-last", "2", "--registry", url)
        assert "it will delete 2 versions once the registry applies rules again" in made.stdout
        assert "VERA_RETENTION_RULES=false" in made.stderr
    served.db.engine.dispose()


def test_vera_retention_and_vera_gc(tmp_path: Path) -> None:
    where, registry = history_on_files(tmp_path)
    with in_thread(create_app(registry, ApiOptions(require_tokens=False))) as base:
        shown = vera("retention", "ann/a", "--registry", base)
        assert shown.returncode == 0 and "ann/a: no retention rule" in shown.stdout, shown.stderr
        both = vera("retention", "ann/a", "--keep-last", "2", "--clear", "--registry", base)
        assert both.returncode == 1 and "--clear removes the rule" in both.stderr
        for bad, said in ((("--keep-last", "0"), "greater than or equal to 1"),
                          (("--keep-days", "nan"), "--keep-days takes a number of days from 1 to 36,500, got nan"),
                          (("--keep-days", "0.5"), "from 1 to 36,500, got 0.5")):
            refused = vera("retention", "ann/a", *bad, "--registry", base)
            assert refused.returncode == 1 and said in " ".join(refused.stderr.split()), refused.stderr
        assert registry.adapter("ann/a").retention is None
        dry = vera("retention", "ann/a", "--keep-last", "2", "--dry-run", "--registry", base)
        assert dry.returncode == 0 and "would delete ann/a:2\nwould delete ann/a:3\n" in dry.stdout, dry.stdout
        assert "kept ann/a:1: alias prod points at it" in dry.stdout and registry.adapter("ann/a").retention is None
        made = vera("retention", "ann/a", "--keep-last", "2", "--keep-days", "1", "--registry", base)
        assert made.returncode == 0 and "note" not in made.stderr, made.stderr
        assert "it deletes no version now" in made.stdout  # minutes old: the 1-day part keeps them
        assert ("ann/a: keeps the newest 2 versions, those published in the last 1 day, and any version an alias "
                "(latest included) points at") in " ".join(made.stdout.split())
        shown = vera("show", "ann/a:5", "--registry", base)  # the version's page names its adapter's rule
        assert "retention keeps the newest 2 versions, those published in the last 1 day, and" in " ".join(
            shown.stdout.split())
        narrowed = vera("retention", "ann/a", "--keep-last", "2", "--registry", base)  # the 1-day part dropped
        assert "note: the rule no longer has --keep-days 1 (a rule is set whole" in " ".join(narrowed.stderr.split())
        assert ("it will delete 2 versions within the hour (ann/a:2, ann/a:3); `vera retention ann/a --dry-run` "
                "lists them") in " ".join(narrowed.stdout.split())
        as_json = vera("retention", "ann/a", "--json", "--registry", base)
        assert as_json.stdout.strip().replace(" ", "").replace("\n", "") == \
            '{"adapter":"ann/a","retention":{"keep_last":2}}'
    off = run_vera(["gc", "--dry-run", *where], env={**os.environ, "VERA_RETENTION_RULES": "false"})
    assert "adapters' own retention rules: not applied (VERA_RETENTION_RULES=false)" in off.stdout, off.stdout
    assert "would delete" not in off.stdout
    dry = vera("gc", "--dry-run", *where)
    assert "would delete ann/a:2" in dry.stdout and "kept ann/a:1: alias prod points at it" in dry.stdout
    assert "adapters' own retention rules: would delete 2 versions" in dry.stdout and len(refs(registry)) == 7
    real = vera("gc", *where)
    assert real.returncode == 0 and "adapters' own retention rules: deleted 2 versions" in real.stdout, real.stdout
    assert refs(registry) == ["ann/a:1", "ann/a:4", "ann/a:5", "bob/b:1", "bob/b:2"]
    assert deletions(registry, "ann/a:3") == [RULE_ACTOR]
    registry.db.engine.dispose()

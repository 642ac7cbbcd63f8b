"""An adapter's own retention rule (migration 0034; registry.services.retention.Retention.apply_rules): set by its
owner's writers (the service, PATCH /api/v1/adapters/{owner}/{name} {"retention": ...}, `vera retention`), applied by
the API's housekeeping and by `vera gc`: the versions it lets go are deleted and audited, an aliased one never, and no
other adapter loses anything. A bad rule is refused, changing nothing. Through a real server over SQLite and
PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from registry.api.app import create_app
from registry.api.deps import ApiOptions
from registry.client import RegistryClient
from registry.domain.schemas import AdapterUpdate, RetentionPolicy
from registry.services.registry import Registry
from registry.services.retention import RULE_ACTOR
from tests.commands import wide_vera as vera
from tests.registry.servers import in_thread
from tests.registry.test_retention import deletions, history_on_files, publish_history, refs


def edits(registry: Registry, adapter: str) -> list[dict[str, object]]:
    """The adapter-edit events of ``adapter``, oldest first (their detail)."""
    return [e.detail for e in reversed(registry.audit(adapter)) if e.action == "adapter-edit"]


def test_an_adapters_rule_deletes_what_it_lets_go_and_nothing_elsewhere(registry: Registry, tmp_path: Path) -> None:
    publish_history(registry, tmp_path)  # ann/a:1-5 (prod -> 1), bob/b:1-2
    assert registry.apply_retention_rules().deleted == []  # no adapter has a rule: nothing goes
    info = registry.update_adapter("ann/a", AdapterUpdate(retention=RetentionPolicy(keep_last=2)), actor="ann")
    assert info.retention == RetentionPolicy(keep_last=2) and registry.adapter("ann/a").retention == info.retention
    assert registry.adapter("bob/b").retention is None
    assert edits(registry, "ann/a") == [{"before": {"retention": None}, "after": {"retention": {"keep_last": 2}}}]
    planned = registry.apply_retention_rules(dry_run=True)
    assert [v.ref for v in planned.deleted] == ["ann/a:2", "ann/a:3"] and planned.protected == {"ann/a:1": ["prod"]}
    assert len(refs(registry)) == 7  # a dry run deletes nothing
    done = registry.apply_retention_rules()
    assert [v.ref for v in done.deleted] == ["ann/a:2", "ann/a:3"]
    assert refs(registry) == ["ann/a:1", "ann/a:4", "ann/a:5", "bob/b:1", "bob/b:2"]
    assert deletions(registry, "ann/a:2") == [RULE_ACTOR] and registry.apply_retention_rules().deleted == []
    # a rule by age (kept by either part), and one removed: {} leaves no rule, and nothing more goes
    registry.update_adapter("bob/b", AdapterUpdate(retention=RetentionPolicy(keep_last=1, keep_days=5)), actor="bob")
    later = datetime.now(UTC) + timedelta(days=10)
    assert [v.ref for v in registry.apply_retention_rules(now=later, dry_run=True).deleted] == ["bob/b:1"]
    cleared = registry.update_adapter("bob/b", AdapterUpdate(retention=RetentionPolicy()), actor="bob")
    assert cleared.retention is None and registry.apply_retention_rules(now=later).deleted == []
    assert edits(registry, "bob/b")[-1]["after"] == {"retention": None}
    assert refs(registry) == ["ann/a:1", "ann/a:4", "ann/a:5", "bob/b:1", "bob/b:2"]


@pytest.mark.parametrize(("retention", "said"), [
    ({"keep_last": 0}, "retention.keep_last: Input should be greater than or equal to 1"),
    ({"keep_last": "2"}, "retention.keep_last: Input should be a valid integer"),
    ({"keep_last": 2.5}, "retention.keep_last: Input should be a valid integer"),
    ({"keep_days": 0}, "retention.keep_days: Input should be greater than 0"),
    ({"keep_days": 1e9}, "retention.keep_days: Input should be less than or equal to 36500"),
    ({"keep_versions": 3}, "retention.keep_versions: Extra inputs are not permitted"),
    (5, "retention: Input should be a valid dictionary"),
], ids=["zero", "text", "fraction", "no-days", "too-many-days", "unknown-part", "not-an-object"])
def test_a_bad_rule_is_refused_changing_nothing(registry: Registry, tmp_path: Path, retention: object,
                                                said: str) -> None:
    publish_history(registry, tmp_path)
    registry.update_adapter("ann/a", AdapterUpdate(retention=RetentionPolicy(keep_days=30)), actor="ann")
    with in_thread(create_app(registry, ApiOptions(require_tokens=False))) as url:
        answer = httpx.patch(f"{url}/api/v1/adapters/ann/a", json={"retention": retention}, timeout=30)
    assert answer.status_code == 422 and said in answer.json()["detail"], answer.text
    assert registry.adapter("ann/a").retention == RetentionPolicy(keep_days=30) and len(edits(registry, "ann/a")) == 1


def test_the_api_sets_it_and_housekeeping_applies_it(registry: Registry, tmp_path: Path) -> None:
    publish_history(registry, tmp_path)
    app = create_app(registry, ApiOptions(require_tokens=False))
    with in_thread(app) as url, RegistryClient(url) as client:
        assert client.adapter("ann/a").retention is None
        assert client.set_retention("ann/a", keep_last=3).retention == RetentionPolicy(keep_last=3)
        assert client.adapter("ann/a").retention == RetentionPolicy(keep_last=3)
        assert client.update_adapter("ann/a", description="kept").retention == RetentionPolicy(keep_last=3)
        app.state.housekeeping.run_once()  # what the API does about once an hour
        assert [v.version for v in client.list_versions(owner="ann").items] == [5, 4, 3, 1]  # 1: prod names it
        assert deletions(registry, "ann/a:2") == [RULE_ACTOR]
        assert client.set_retention("ann/a").retention is None  # neither part: the rule is removed
        app.state.housekeeping.run_once()
        assert len(refs(registry)) == 6


def test_vera_retention_and_vera_gc(tmp_path: Path) -> None:
    where, registry = history_on_files(tmp_path)
    with in_thread(create_app(registry, ApiOptions(require_tokens=False))) as base:
        shown = vera("retention", "ann/a", "--registry", base)
        assert shown.returncode == 0 and "ann/a: no retention rule" in shown.stdout, shown.stderr
        both = vera("retention", "ann/a", "--keep-last", "2", "--clear", "--registry", base)
        assert both.returncode == 1 and "--clear removes the rule" in both.stderr
        bad = vera("retention", "ann/a", "--keep-last", "0", "--registry", base)
        assert bad.returncode == 1 and "greater than or equal to 1" in bad.stderr
        assert registry.adapter("ann/a").retention is None
        made = vera("retention", "ann/a", "--keep-last", "2", "--keep-days", "1", "--registry", base)
        assert made.returncode == 0, made.stderr
        assert ("ann/a: keeps the newest 2 versions and those published in the last 1 day, and any version an alias "
                "other than latest points at") in made.stdout
        shown = vera("show", "ann/a:5", "--registry", base)  # the version's page names its adapter's rule
        assert "retention keeps the newest 2 versions and those published in the last 1 day" in " ".join(
            shown.stdout.split())
        as_json = vera("retention", "ann/a", "--json", "--registry", base)
        assert as_json.stdout.strip().replace(" ", "").replace("\n", "") == \
            '{"adapter":"ann/a","retention":{"keep_last":2,"keep_days":1.0}}'
    later = vera("gc", "--dry-run", *where)  # the versions are minutes old: the 1-day part keeps them all
    assert later.returncode == 0 and "would delete" not in later.stdout, later.stdout
    registry.update_adapter("ann/a", AdapterUpdate(retention=RetentionPolicy(keep_last=2)), actor="ann")
    dry = vera("gc", "--dry-run", *where)
    assert "would delete ann/a:2" in dry.stdout and "kept ann/a:1: alias prod points at it" in dry.stdout
    assert "adapters' own retention rules: would delete 2 versions" in dry.stdout and len(refs(registry)) == 7
    real = vera("gc", *where)
    assert real.returncode == 0 and "adapters' own retention rules: deleted 2 versions" in real.stdout, real.stdout
    assert refs(registry) == ["ann/a:1", "ann/a:4", "ann/a:5", "bob/b:1", "bob/b:2"]
    assert deletions(registry, "ann/a:3") == [RULE_ACTOR]
    registry.db.engine.dispose()

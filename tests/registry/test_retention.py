"""Retention (registry.services.retention) and `vera gc --keep-last/--keep-days/--dry-run`: which versions go, that
aliases other than latest protect theirs, that deletions are audited and their blobs collected."""

from __future__ import annotations

import os
import threading
import traceback
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from registry.domain.errors import Conflict, InvalidInput
from registry.services.registry import Registry
from registry.services.retention import RETENTION_ACTOR, RetentionRule
from registry.store.blobs import FsspecBlobStore
from registry.store.database import Database
from tests.commands import wide_vera as vera
from tests.registry.adapters import make_adapter


def publish_history(registry: Registry, tmp_path: Path) -> None:
    """ann/a:1-5 (prod -> 1) and bob/b:1-2."""
    for i in range(5):
        registry.publish(make_adapter(tmp_path / f"a{i}", seed=i), owner="ann", name="a", base_model="tiny-llama")
    for i in range(2):
        registry.publish(make_adapter(tmp_path / f"b{i}", seed=10 + i), owner="bob", name="b", base_model="tiny-llama")
    registry.set_alias("ann/a:1", "prod", actor="ann")


def deletions(registry: Registry, ref: str) -> list[str]:
    """Who deleted ``ref``, from the audit log."""
    return [e.actor for e in registry.audit(ref) if e.action == "delete"]


def refs(registry: Registry) -> list[str]:
    return sorted(v.ref for v in registry.list_versions(include_yanked=True, limit=500).items)


def test_keep_last_deletes_older_versions_but_never_an_aliased_one(registry: Registry, tmp_path: Path) -> None:
    publish_history(registry, tmp_path)
    before, blobs_before = refs(registry), len(list(registry.blobs.digests()))
    planned = registry.apply_retention(RetentionRule(keep_last=2), dry_run=True)
    assert [v.ref for v in planned.deleted] == ["ann/a:2", "ann/a:3"]  # oldest first
    assert planned.protected == {"ann/a:1": ["prod"]} and planned.dry_run
    assert refs(registry) == before and deletions(registry, "ann/a:2") == []  # a dry run changes nothing
    done = registry.apply_retention(RetentionRule(keep_last=2))
    assert [v.ref for v in done.deleted] == ["ann/a:2", "ann/a:3"] and done.skipped == {}
    assert refs(registry) == ["ann/a:1", "ann/a:4", "ann/a:5", "bob/b:1", "bob/b:2"]
    for ref in ("ann/a:2", "ann/a:3"):  # through the delete path: audited
        assert deletions(registry, ref) == [RETENTION_ACTOR]
    assert registry.gc(grace_s=0)["blobs_removed"] == 2 and len(list(registry.blobs.digests())) == blobs_before - 2
    assert registry.apply_retention(RetentionRule(keep_last=2)).deleted == []  # settled


def test_keep_days_and_latest_moving(registry: Registry, tmp_path: Path) -> None:
    publish_history(registry, tmp_path)
    registry.yank("ann/a:5", actor="ann")  # latest -> 4
    later = datetime.now(UTC) + timedelta(days=10)
    assert registry.apply_retention(RetentionRule(keep_days=30), now=later, dry_run=True).deleted == []
    old = registry.apply_retention(RetentionRule(keep_days=1), now=later, dry_run=True)
    assert sorted(v.ref for v in old.deleted) == ["ann/a:2", "ann/a:3", "ann/a:4", "ann/a:5", "bob/b:1", "bob/b:2"]
    either = registry.apply_retention(RetentionRule(keep_last=1, keep_days=1), now=later)  # kept by either rule
    assert sorted(v.ref for v in either.deleted) == ["ann/a:2", "ann/a:3", "ann/a:4", "bob/b:1"]
    assert refs(registry) == ["ann/a:1", "ann/a:5", "bob/b:2"]
    assert registry.get("ann/a").version == 1  # latest moved back past the yanked 5 to the kept 1 (prod)


def test_an_alias_set_after_the_plan_still_protects_its_version(registry: Registry, tmp_path: Path) -> None:
    publish_history(registry, tmp_path)
    registry.set_alias("ann/a:2", "staging", actor="ann")
    with pytest.raises(Conflict, match="ann/a:2 is kept: alias staging points at it"):
        registry.delete("ann/a:2", actor=RETENTION_ACTOR, keep_aliased=True)
    assert "ann/a:2" in refs(registry)
    registry.delete("ann/a:2", actor="ann")  # an owner's delete takes the alias with it, as before
    assert "ann/a:2" not in refs(registry)


@pytest.mark.parametrize(("rule", "message"), [
    ({}, "needs --keep-last N and/or --keep-days D"),
    ({"keep_last": 0}, "--keep-last must be at least 1"),
    ({"keep_days": 0}, "--keep-days must be a number of days above 0, got 0"),
    ({"keep_days": float("nan")}, "--keep-days must be a number of days above 0"),
])
def test_bad_rules_are_refused(rule: dict[str, float], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        RetentionRule(**rule)  # type: ignore[arg-type]


def history_on_files(tmp_path: Path) -> tuple[tuple[str, str, str, str], Registry]:
    """A registry on a SQLite file and a blob folder under ``tmp_path`` with publish_history's versions: the options
    that name them to `vera gc`, and the registry."""
    url, storage = f"sqlite:///{tmp_path / 'r.db'}", str(tmp_path / "blobs")
    db = Database(url)
    db.upgrade()
    registry = Registry(db, FsspecBlobStore(storage))
    publish_history(registry, tmp_path)
    return ("--database-url", url, "--storage-url", storage), registry


def test_vera_gc_applies_retention_with_a_dry_run_first(tmp_path: Path) -> None:
    where, registry = history_on_files(tmp_path)
    refused = vera("gc", "--keep-last", "0", *where)
    assert refused.returncode == 1 and "--keep-last must be at least 1" in refused.stderr
    dry = vera("gc", "--keep-last", "2", "--dry-run", *where)
    assert dry.returncode == 0, dry.stderr
    assert "would delete ann/a:2" in dry.stdout and "would delete ann/a:3" in dry.stdout
    assert "kept ann/a:1: alias prod points at it" in dry.stdout and "nothing deleted" in dry.stdout
    assert len(refs(registry)) == 7
    real = vera("gc", "--keep-last", "2", *where)
    assert real.returncode == 0, real.stderr
    assert "deleted ann/a:2" in real.stdout and "removed 2 unreferenced blob records, 0 stored files" in real.stdout
    assert "kept 2 unreferenced files younger than 3600 s" in real.stdout  # the grace period: a later run
    later = vera("gc", "--grace-s", "0", *where)
    assert later.returncode == 0 and "removed 0 unreferenced blob records, 2 stored files" in later.stdout
    assert refs(registry) == ["ann/a:1", "ann/a:4", "ann/a:5", "bob/b:1", "bob/b:2"]
    plain = vera("gc", *where)  # without a rule: blobs only, as before
    assert plain.returncode == 0 and "removed 0 unreferenced blob records, 0 stored files" in plain.stdout
    registry.db.engine.dispose()


def _age(registry: Registry, digest: str, seconds: float) -> None:
    """Make a stored blob file look ``seconds`` old (a local folder: its modification time)."""
    path = next(Path(registry.blobs.url).rglob(digest))
    then = path.stat().st_mtime - seconds
    os.utime(path, (then, then))


def test_gc_leaves_bytes_a_publish_in_progress_wrote_and_freshened_bytes_it_reuses(registry: Registry,
                                                                                  tmp_path: Path) -> None:
    """A publish writes its bytes, then commits its rows: a collection in between used to see a file no row names
    and delete it, losing a version just published (an operator's walk, session 14: 1 to 4 in 200 publishes with
    `vera gc` run beside them). Unreferenced files younger than the grace period stay; a publish that reuses old
    unreferenced bytes freshens them."""
    first = registry.publish(make_adapter(tmp_path / "a"), owner="ann", name="a", base_model="tiny-llama")
    digest = registry.get(first.ref).vectors_sha256
    registry.delete(first.ref, actor="ann")
    in_flight = registry.blobs.put(b"bytes of a publish that has not committed yet")
    assert registry.gc() == {"blobs_removed": 1, "files_removed": 0, "recent_files_kept": 2, "leftovers_removed": 0}
    assert registry.blobs.exists(in_flight) and registry.blobs.exists(digest)
    _age(registry, digest, 7200)  # an old unreferenced file: the next collection may take it...
    again = registry.publish(make_adapter(tmp_path / "a"), owner="ann", name="a", base_model="tiny-llama")
    assert registry.get(again.ref).vectors_sha256 == digest  # ...but a publish reused it, freshening it
    _age(registry, in_flight, 7200)
    assert registry.gc() == {"blobs_removed": 0, "files_removed": 1, "recent_files_kept": 0, "leftovers_removed": 0}
    assert registry.blobs.exists(digest) and not registry.blobs.exists(in_flight)
    assert registry.fsck()["missing"] == []


def test_gc_beside_publishes_and_deletes_loses_nothing(registry: Registry, tmp_path: Path) -> None:
    """Publishes of the same bytes, deletes and collections at once (SQLite and PostgreSQL): collection's row
    deletes race publishes that reference the same blob row (the database refused them: a traceback before); every
    version left has its bytes."""
    source = make_adapter(tmp_path / "a")
    errors: list[BaseException] = []
    done = threading.Event()

    def collect() -> None:
        while not done.is_set():
            try:
                registry.gc()
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
                traceback.print_exc()
                return

    collector = threading.Thread(target=collect)
    collector.start()
    kept: list[str] = []
    try:
        for i in range(12):
            version = registry.publish(source, owner="ann", name="churn", base_model="tiny-llama")
            if i % 2:
                kept.append(version.ref)
            else:
                registry.delete(version.ref, actor="ann")
    finally:
        done.set()
        collector.join()
    assert errors == []
    assert sorted(v.ref for v in registry.list_versions(owner="ann").items) == sorted(kept) and len(kept) == 6
    assert registry.fsck()["missing"] == []


def test_gc_and_fsck_refuse_a_database_that_looks_like_another_registrys(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A misspelt VERA_DATABASE_URL falls back to an empty local database; `vera gc` over the shared storage then
    deleted every blob, and `vera fsck --repair` did too (an operator's walk and its re-check, session 14). Refused,
    naming the cause, unless --force: when the database knows no blob, or when most stored files are unknown to it
    (a token created under the typo made the first guard, "never an event", miss)."""
    url, storage = f"sqlite:///{tmp_path / 'r.db'}", str(tmp_path / "blobs")
    db = Database(url)
    db.upgrade()
    registry = Registry(db, FsspecBlobStore(storage))
    for i in range(12):
        registry.publish(make_adapter(tmp_path / f"a{i}", seed=i), owner="ann", name=f"a{i}", base_model="tiny-llama")
    db.engine.dispose()
    stored = len(list(FsspecBlobStore(storage).digests()))
    # VERA_DATABSE_URL=... (misspelt) is no setting: the embedded default database, created in VERA_DATA_DIR
    monkeypatch.setenv("VERA_DATA_DIR", str(tmp_path / "default"))
    monkeypatch.delenv("VERA_DATABASE_URL", raising=False)
    assert vera("token", "create", "--owner", "ops", "--scope", "read").returncode == 0  # an event: not "fresh"
    for command in (("gc",), ("fsck", "--repair")):
        refused = vera(*command, "--grace-s", "0", "--storage-url", storage)
        said = " ".join(refused.stderr.split())
        assert refused.returncode == 1, refused.stdout
        assert f"The database knows 0 blobs, and {stored} of the {stored} files in the storage" in said
        assert "check VERA_DATABASE_URL" in said and "Nothing was deleted" in said
        assert f"run `vera {' '.join(command)} --force`" in said
        assert len(list(FsspecBlobStore(storage).digests())) == stored
    # the registry's own database over the same files: a few deleted versions are no suspicion
    registry = Registry(Database(url), FsspecBlobStore(storage))
    registry.delete("ann/a0:1", actor="ann")
    assert registry.gc(grace_s=0)["files_removed"] == 1
    registry.db.engine.dispose()
    forced = vera("gc", "--grace-s", "0", "--force", "--storage-url", storage, "--database-url",
                  f"sqlite:///{tmp_path / 'default' / 'registry.db'}")
    assert forced.returncode == 0 and f"{stored - 1} stored files no record names" in forced.stdout
    assert list(FsspecBlobStore(storage).digests()) == []

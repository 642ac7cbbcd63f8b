"""`vera db copy`: a team moves from `vera up`'s SQLite file to PostgreSQL with every row (a team admin's walk,
session 34: the docs said "move to PostgreSQL" and nothing moved the data), through the installed `vera` against
the local PostgreSQL; what it refuses leaves the target as it was."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import select

from registry.client import RegistryClient
from registry.domain.events import WebhookForm
from registry.domain.schemas import EvaluationRecord
from registry.services.delivery import Sender
from registry.services.derived import FileForm
from registry.services.jobs import Jobs
from registry.services.registry import Registry
from registry.services.tokens import LOCAL_USER, create_token
from registry.services.webhooks import Webhooks
from registry.store import models as m
from registry.store.blobs import FsspecBlobStore
from registry.store.database import Database
from tests.commands import vera as run_vera
from tests.registry.adapters import make_adapter
from tests.registry.conftest import PG_ADMIN, fresh_postgres
from tests.registry.servers import running_server


@pytest.fixture
def empty_postgres() -> Iterator[str]:
    with fresh_postgres("vera_copy") as url:
        yield url


def a_used_registry(tmp_path: Path) -> tuple[str, Path]:
    """A SQLite registry with rows in most tables: versions, aliases, tags, properties, params, evaluations, tokens, an
    organisation, a job, a webhook, downloads and the audit log."""
    url, blobs = f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "blobs"
    db = Database(url)
    db.upgrade()
    registry = Registry(db, FsspecBlobStore(str(blobs)))
    first = registry.publish(make_adapter(tmp_path / "a"), owner="ann", name="clf", base_model="tiny-llama",
                             metrics={"accuracy": 0.8}, tags=["demo"], properties={"ticket": "ML-1"},
                             params={"lr": "0.01", "epochs": "3"})
    registry.publish(make_adapter(tmp_path / "b", seed=2), owner="ann", name="clf", base_model="tiny-llama")
    registry.set_alias(first.ref, "prod", actor="ann")
    registry.evaluations.record(first.ref, EvaluationRecord(name="hellaswag", metrics={"acc": 0.3}), actor="ann")
    create_token(db, owner="ann", scopes=["read", "publish"], name="laptop")
    registry.access.create_organization("team", creator="ann")
    registry.access.set_member("team", "bob", "write", viewer=LOCAL_USER)
    registry.publish(make_adapter(tmp_path / "c", seed=3), owner="team", name="shared", base_model="tiny-llama")
    Jobs(registry).submit({"demo": True}, owner="ann", target="ann/trained")
    Webhooks(db, Sender(allow_private=True)).create(WebhookForm(owner="ann", url="http://127.0.0.1:9/hook",
                                                                events=["publish"]), actor="ann")
    registry.derived.manifest(first.ref, FileForm())
    db.close()
    return url, blobs


def rows_of(url: str) -> dict[str, list[tuple[Any, ...]]]:
    db = Database(url)
    try:
        with db.engine.connect() as conn:
            return {table.name: [tuple(row) for row in conn.execute(
                select(table).order_by(*table.primary_key.columns))] for table in m.Base.metadata.sorted_tables}
    finally:
        db.close()


def copy(source: str, target: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "250", "VERA_DATABASE_URL": source}
    return run_vera(["db", "copy", target], env=env)


def test_vera_db_copy_moves_every_row_from_sqlite_to_postgresql(tmp_path: Path, empty_postgres: str) -> None:
    source, blobs = a_used_registry(tmp_path)
    done = copy(source, empty_postgres)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "copied " in done.stdout and "rows of 32 tables into postgresql+psycopg://" in " ".join(done.stdout.split())
    before, after = rows_of(source), rows_of(empty_postgres)
    assert sum(map(len, before.values())) > 30 and {t for t, rows in before.items() if rows} >= {
        "adapters", "adapter_versions", "aliases", "version_tags", "version_properties", "version_params",
        "version_evaluations",
        "access_tokens", "organizations", "memberships", "jobs", "webhooks", "audit_events", "version_files"}
    mark = before["audit_events"].pop()  # the source's note that it was copied, written once the copy was whole
    assert mark[3:5] == ("db-copy", empty_postgres), mark
    assert after == before  # every row, every value
    # the copy is a registry: served on the same blobs, it gives the same bytes, and new rows take new ids
    with running_server(empty_postgres, blobs, VERA_REQUIRE_TOKENS="false") as url, \
            RegistryClient(url, cache=False) as client:
        manifest = client.fetch_files("ann/clf@prod", tmp_path / "fetched")
        built = {(name, sha256) for _, form, name, sha256, *_ in before["version_files"] if form == "vera"}
        assert manifest.version.ref == "ann/clf:1" and {(f.name, f.sha256) for f in manifest.files} == built
        assert client.verify("ann/clf:1").status == "passed"
        third = client.publish(make_adapter(tmp_path / "d", seed=4), "ann/clf", base_model="tiny-llama")
        assert third.ref == "ann/clf:3"
        client.set_alias("ann/clf:3", "staging")  # an audit row and an alias row, after the copied ids
    # the stale source, found again by a command without VERA_DATABASE_URL (a cron job, a misspelt variable): the
    # files published on the copy are unknown to it, and were deleted (an operator's walk, session 43)
    stored = sorted(p.name for p in blobs.rglob("*") if p.is_file())
    versions = rows_of(source)["adapter_versions"]
    # retention too, refused before its deletes (which hid the mark, and gc then deleted what the copy uses: the
    # walk's re-check)
    for command in (["gc", "--grace-s", "0"], ["fsck", "--repair", "--grace-s", "0"],
                    ["gc", "--keep-last", "1", "--grace-s", "0"]):
        stale = run_vera(command, env={**os.environ, "COLUMNS": "250", "VERA_DATABASE_URL": source,
                                       "VERA_STORAGE_URL": str(blobs)})
        said = " ".join(stale.stderr.split())
        assert stale.returncode == 1 and f"This database was copied into {empty_postgres} on " in said, said
        assert "Nothing was deleted" in said and f"`vera {command[0]}" in said
    assert sorted(p.name for p in blobs.rglob("*") if p.is_file()) == stored
    assert rows_of(source)["adapter_versions"] == versions
    # refused, changing nothing: a target that holds rows, the source itself
    again = copy(source, empty_postgres)
    assert again.returncode == 1 and "already holds rows (access_tokens, adapters" in again.stderr, again.stderr
    assert "Nothing was copied" in again.stderr
    itself = copy(source, source)
    assert itself.returncode == 1 and "the same database" in itself.stderr
    # targets it cannot open: one line each (tracebacks before), never the password
    for target, said in (("notaurl", "is not a database this release opens"),
                         ("mysql://u:TopSecret@h/x", "'mysql://u:***@h/x' is not a database this release opens"),
                         ("postgresql+psycopg://u:TopSecret@127.0.0.1:9/x", "cannot be opened (")):
        refused = copy(source, target)
        assert refused.returncode == 1 and said in " ".join(refused.stderr.split()), refused.stderr
        assert "Traceback" not in refused.stderr and "TopSecret" not in refused.stderr + refused.stdout
    # no registry where the default source would be: said, and no empty file made there
    env = {**os.environ, "VERA_DATA_DIR": str(tmp_path / "nothing-here")}
    env.pop("VERA_DATABASE_URL", None)
    nothing = run_vera(["db", "copy", empty_postgres], env=env)
    assert nothing.returncode == 1 and "There is no registry database at" in " ".join(nothing.stderr.split())
    assert not (tmp_path / "nothing-here" / "registry.db").exists()


def test_an_id_the_source_gave_to_a_row_since_deleted_is_never_given_by_the_copy(tmp_path: Path,
                                                                                empty_postgres: str) -> None:
    """The copy's counters go on where the source's were, past ids of rows deleted there (a webhook's receiver has
    seen them), SQLite to PostgreSQL and back; before, they went on after the largest id copied."""
    source, _ = a_used_registry(tmp_path)
    db = Database(source)
    hooks = Webhooks(db, Sender(allow_private=True))
    late = hooks.create(WebhookForm(owner="ann", url="http://127.0.0.1:9/late"), actor="ann")
    hooks.delete(late.id, actor="ann")  # the highest webhook id, then no row has it
    db.close()
    back = f"sqlite:///{tmp_path / 'back.db'}"
    for given, (frm, to) in enumerate(((source, empty_postgres), (empty_postgres, back)), start=late.id + 1):
        done = copy(frm, to)
        assert done.returncode == 0, done.stdout + done.stderr
        target = Database(to)
        made = Webhooks(target, Sender(allow_private=True)).create(
            WebhookForm(owner="ann", url=f"http://127.0.0.1:9/{to[:6]}"), actor="ann")
        target.close()
        assert made.id == given, (to, made.id, late.id)  # back: past the one made in PostgreSQL too


def test_vera_db_copy_refuses_a_source_behind_this_release(tmp_path: Path, empty_postgres: str) -> None:
    source = f"sqlite:///{tmp_path / 'old.db'}"
    db = Database(source)
    db.upgrade("0020")
    db.close()
    refused = copy(source, empty_postgres)
    assert refused.returncode == 1 and "is at schema revision 0020" in refused.stderr
    assert "run `vera db upgrade` on it first" in refused.stderr
    target = Database(empty_postgres)
    try:
        assert target.current_revision() is None  # not even upgraded
    finally:
        target.close()


def test_the_copy_reads_one_snapshot_of_a_sqlite_source(tmp_path: Path) -> None:
    """A re-check's finding (session 34): each table of a SQLite source was read as it was when its SELECT ran, so a
    row written during the copy was copied (and could be one whose parent row was not). One snapshot now."""
    import sqlite3

    from registry.store.copying import copy_database

    source_url, _ = a_used_registry(tmp_path)
    before = len(rows_of(source_url)["audit_events"])

    def write_meanwhile(table: str, rows: int) -> None:
        if table == "access_tokens":  # audit_events come later in the order
            with sqlite3.connect(tmp_path / "r.db") as other:
                other.execute("INSERT INTO audit_events (at, actor, action, target, detail) VALUES "
                              "('2026-12-04 00:00:00', 'ann', 'publish', 'ann/late:1', '{}')")

    source, target = Database(source_url), Database(f"sqlite:///{tmp_path / 'copy.db'}")
    try:
        copied = copy_database(source, target, progress=write_meanwhile)
    finally:
        source.close()
        target.close()
    assert copied["audit_events"] == before and len(rows_of(source_url)["audit_events"]) == before + 1
    assert rows_of(f"sqlite:///{tmp_path / 'copy.db'}")["audit_events"] == rows_of(source_url)["audit_events"][:-1]


def test_a_copy_from_postgresql_in_another_time_zone_keeps_the_instants(tmp_path: Path, empty_postgres: str) -> None:
    """A re-check's finding (session 34): PostgreSQL answers timestamps in its session's zone, and SQLite, storing
    none, kept the wall-clock time: every time 5 hours off after a copy from a database set to New York."""
    source, _ = a_used_registry(tmp_path)
    assert copy(source, empty_postgres).returncode == 0
    name = empty_postgres.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f"ALTER DATABASE \"{name}\" SET timezone TO 'America/New_York'")
    back = f"sqlite:///{tmp_path / 'back.db'}"
    env = {**os.environ, "COLUMNS": "250", "VERA_DATABASE_URL": empty_postgres}
    done = run_vera(["db", "copy", back], env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    expected = rows_of(source)
    assert expected["audit_events"].pop()[3] == "db-copy"  # the source's note of the first copy, made after it
    assert rows_of(back) == expected  # every timestamp the same instant, in UTC
    # a copy out of PostgreSQL (a backup, an export) leaves no mark on it: only a SQLite source is found again by
    # a command without VERA_DATABASE_URL (a live database was refused its gc after an export: the re-check)
    assert "db-copy" not in {event[3] for event in rows_of(empty_postgres)["audit_events"]}


def test_a_copy_of_a_database_a_registry_is_running_on_warns(tmp_path: Path) -> None:
    """`vera db copy` while `vera up` ran on the source copied without a word, and what the registry wrote after the
    snapshot was left behind (an operator's walk, session 43): its write-ahead log in use is said."""
    url = f"sqlite:///{tmp_path / 'r.db'}"
    with running_server(url, tmp_path / "blobs") as base, RegistryClient(base, cache=False) as client:
        client.publish(make_adapter(tmp_path / "a"), "ann/live", base_model="tiny-llama")
        done = copy(url, f"sqlite:///{tmp_path / 'copy.db'}")
    said = " ".join(done.stderr.split())
    assert done.returncode == 0 and "-wal is not empty: a registry or worker may be running on this database" in said
    quiet = copy(url, f"sqlite:///{tmp_path / 'again.db'}")  # stopped: its log checkpointed away, nothing to say
    assert quiet.returncode == 0 and "warning" not in quiet.stderr, quiet.stderr

"""Migrations and the schema guard, on SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import sqlite3
import subprocess
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import event, inspect, text
from sqlalchemy.exc import DatabaseError, OperationalError

from registry.api.problems import database_problem
from registry.bootstrap import open_registry
from registry.domain.errors import SchemaOutOfDate
from registry.services.tokens import authenticate, create_token
from registry.settings import Settings
from registry.store.database import Database
from registry.store.models import Base
from tests.commands import vera as run_vera
from tests.commands import wide_vera as vera
from tests.registry.servers import free_port, running_vera


def test_upgrade_to_head_gives_exactly_the_orm_metadata_and_downgrade_works(database_url: str) -> None:
    db = Database(database_url)
    db.upgrade()
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []
    assert db.current_revision() == db.head_revision()
    db.downgrade("base")
    assert set(inspect(db.engine).get_table_names()) <= {"alembic_version"}
    db.upgrade()
    assert set(Base.metadata.tables) <= set(inspect(db.engine).get_table_names())
    db.engine.dispose()


def test_an_out_of_date_schema_is_refused_with_the_command_that_fixes_it(database_url: str) -> None:
    db = Database(database_url)
    with pytest.raises(SchemaOutOfDate, match=r"revision none \(empty\).*Run `vera db upgrade`"):
        db.check_schema()
    with pytest.raises(SchemaOutOfDate):
        open_registry(Settings(database_url=database_url, storage_url="memory://vera-test"))
    db.engine.dispose()


def test_the_embedded_default_upgrades_itself(tmp_path: Path) -> None:
    registry = open_registry(Settings(data_dir=tmp_path / "data"))
    assert registry.db.current_revision() == registry.db.head_revision()
    assert (tmp_path / "data/registry.db").exists() and (tmp_path / "data/blobs/sha256").is_dir()
    registry.db.engine.dispose()


def test_settings_refuse_unsupported_databases() -> None:
    with pytest.raises(ValueError, match="VERA_DATABASE_URL='mysql://x' is not supported; use sqlite"):
        Settings(database_url="mysql://x")


def test_db_commands(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    status = vera("db", "status", "--database-url", url)
    assert status.returncode == 3 and "run `vera db upgrade`" in status.stdout
    assert vera("db", "upgrade", "--database-url", url).returncode == 0
    assert "up to date" in vera("db", "status", "--database-url", url).stdout
    fsck = vera("fsck", "--database-url", url, "--storage-url", str(tmp_path / "blobs"))
    assert fsck.returncode == 0 and "missing: 0 (files the database names that storage lacks)" in fsck.stdout
    assert "deep_json: 0 (JSON values stored nested past 64 levels)" in fsck.stdout  # each count in words
    assert fsck.stdout.rstrip().endswith("database and storage agree: nothing to repair")
    assert "removed 0" in vera("gc", "--database-url", url, "--storage-url", str(tmp_path / "blobs")).stdout
    asked = run_vera(["db", "downgrade", "base", "--database-url", url], input="n\n")  # destructive: asked first
    assert asked.returncode == 1 and "Drop" not in asked.stdout and "dropping the tables" in asked.stdout
    assert "Not downgraded" in " ".join(asked.stderr.split()) and "Pass --yes" in " ".join(asked.stderr.split())
    assert "up to date" in vera("db", "status", "--database-url", url).stdout
    unknown = vera("db", "downgrade", "0099", "--yes", "--database-url", url)  # an alembic traceback before
    assert unknown.returncode == 1 and "No schema revision '0099'" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    down = vera("db", "downgrade", "base", "--yes", "--database-url", url)
    assert down.returncode == 0 and "base (empty)" in down.stdout
    refused = vera("fsck", "--database-url", url)
    assert refused.returncode == 1 and "Run `vera db upgrade`" in " ".join(refused.stderr.split())  # however wrapped
    unreachable = vera("db", "status", "--database-url", "postgresql+psycopg://postgres@127.0.0.1:9/none")
    said = " ".join(unreachable.stderr.split())
    assert unreachable.returncode == 1 and "Traceback" not in unreachable.stderr  # ~150 lines of one before
    assert "Cannot use the registry database: connection failed" in said and "Check VERA_DATABASE_URL" in said


def test_a_release_installed_under_a_running_process_leaves_its_view_of_the_schema(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A PEFT user's walk (session 47): a newer release's migration appeared on disk under a running server (an
    upgrade in place), which then read the database that release upgraded as behind ("run `vera db upgrade`"): its
    head was read once, the revisions it knew again each time. Both are read once now: the database is ahead."""
    import shutil

    from registry.store import database

    scripts = tmp_path / "migrations"
    shutil.copytree(database.MIGRATIONS, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(database, "MIGRATIONS", scripts)
    database._scripts.cache_clear()
    database.head_revision.cache_clear()
    try:
        db = Database(f"sqlite:///{tmp_path / 'r.db'}")
        db.upgrade()
        head = db.head_revision()
        (scripts / "versions" / "9999_newer.py").write_text(  # the newer release, installed meanwhile
            f'revision = "9999"\ndown_revision = "{head}"\nbranch_labels = None\ndepends_on = None\n\n\n'
            "def upgrade() -> None:\n    pass\n\n\ndef downgrade() -> None:\n    pass\n")
        with db.engine.begin() as conn:  # ... which upgraded the database
            conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
        with pytest.raises(SchemaOutOfDate, match="which this version of vera-registry does not know") as ahead:
            db.check_schema()
        assert ahead.value.ahead and "vera db upgrade`" not in str(ahead.value).replace("`vera db upgrade` of", "")
        db.engine.dispose()
    finally:
        database._scripts.cache_clear()
        database.head_revision.cache_clear()


def test_a_schema_a_newer_release_upgraded_is_named_as_such(tmp_path: Path) -> None:
    """During a rolling upgrade the old replicas' /ready said "the schema is behind: run `vera db upgrade`", and
    running that gave an alembic traceback (an operator's walk, session 14): the schema is ahead."""
    url = f"sqlite:///{tmp_path / 'r.db'}"
    db = Database(url)
    db.upgrade()
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_from_the_future'"))
    with pytest.raises(SchemaOutOfDate, match="is at schema revision 9999_from_the_future, which this version of "
                                              "vera-registry does not know") as ahead:
        db.check_schema()
    assert ahead.value.ahead
    db.engine.dispose()
    status = vera("db", "status", "--database-url", url)
    assert status.returncode == 3 and "newer than this release" in status.stdout
    upgrade = vera("db", "upgrade", "--database-url", url)
    said = " ".join(upgrade.stderr.split())
    assert upgrade.returncode == 1 and "a newer release upgraded it" in said and "Traceback" not in said


def test_the_server_creates_the_schema_of_an_empty_database_and_refuses_an_old_one(database_url: str,
                                                                                   tmp_path: Path) -> None:
    def serve(url: str) -> AbstractContextManager[str]:  # not running_server, which upgrades the database first
        port = free_port()
        return running_vera(["serve", "--port", str(port)], port, VERA_DATABASE_URL=url,
                            VERA_STORAGE_URL=str(tmp_path / "blobs"))

    db = Database(database_url)
    assert db.is_empty()
    with serve(database_url) as url:  # empty: nothing to lose
        assert httpx.get(f"{url}/ready").json()["ready"] is True
    assert db.current_revision() == db.head_revision()
    db.downgrade("0004")  # an older schema is upgraded on purpose only
    db.engine.dispose()
    with pytest.raises(RuntimeError, match=r"(?s)revision 0004, but this version.*vera db\s+upgrade"), \
            serve(database_url):
        pass


def test_migration_0005_keeps_every_token_of_a_0004_database(database_url: str) -> None:
    from sqlalchemy import text

    db = Database(database_url)
    db.upgrade("0004")
    with db.engine.begin() as conn:  # a token as the previous version wrote it
        conn.execute(text("INSERT INTO access_tokens (token_hash, owner, name, scopes, created_at) VALUES "
                          "(:h, 'alice', 'old', :s, CURRENT_TIMESTAMP)"), {"h": "a" * 64, "s": '["read"]'})
    db.upgrade()
    with db.engine.connect() as conn:
        rows = conn.execute(text("SELECT owner, name, expires_at FROM access_tokens")).all()
    assert [tuple(r) for r in rows] == [("alice", "old", None)]  # kept, and it never expires
    db.downgrade("0004")
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT owner FROM access_tokens")).scalars().all() == ["alice"]
    db.engine.dispose()


def test_migration_0006_keeps_every_job_of_a_0005_database(database_url: str) -> None:
    from sqlalchemy import text

    db = Database(database_url)
    db.upgrade("0005")
    with db.engine.begin() as conn:  # a job as the previous version wrote it
        conn.execute(text("INSERT INTO jobs (status, spec, owner, target_name, created_at, progress, "
                          "cancel_requested, attempts) VALUES ('queued', :spec, 'ann', 'ann/old', CURRENT_TIMESTAMP, "
                          "'{}', :false, 0)"), {"spec": '{"demo": true}', "false": False})
    db.upgrade()
    with db.engine.connect() as conn:
        rows = conn.execute(text("SELECT owner, target_name, priority, time_limit_s, not_before FROM jobs")).all()
    assert [tuple(r) for r in rows] == [("ann", "ann/old", 0, None, None)]  # kept: default priority, no limit
    db.downgrade("0005")
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT target_name FROM jobs")).scalars().all() == ["ann/old"]
    db.engine.dispose()


def test_migration_0007_keeps_every_adapter_and_token_of_a_0006_database(database_url: str) -> None:
    from sqlalchemy import text

    db = Database(database_url)
    db.upgrade("0006")
    with db.engine.begin() as conn:  # an adapter and a token as the previous version wrote them
        conn.execute(text("INSERT INTO adapters (owner, name, description, created_at) VALUES "
                          "('ann', 'old', 'kept', CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO access_tokens (token_hash, owner, name, scopes, created_at) VALUES "
                          "(:h, 'ann', 'old', :s, CURRENT_TIMESTAMP)"), {"h": "b" * 64, "s": '["read"]'})
    db.upgrade("0007")
    with db.engine.connect() as conn:
        adapters = conn.execute(text("SELECT owner, name, description, visibility FROM adapters")).all()
        tokens = conn.execute(text("SELECT owner, limited_to FROM access_tokens")).all()
    assert [tuple(r) for r in adapters] == [("ann", "old", "kept", "public")]  # readable as before
    assert [tuple(r) for r in tokens] == [("ann", None)]  # no new limit
    db.downgrade("0006")
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT name FROM adapters")).scalars().all() == ["old"]
    db.engine.dispose()


def test_downgrading_to_0006_keeps_every_version_tag_alias_and_job_event(registry: Any, tmp_path: Path) -> None:
    """The downgrades of 0007-0010 drop their columns in place: a batch rebuild of adapters or jobs would drop the
    old table, and with SQLite's foreign keys on, that cascades to every version, tag, alias and job event."""
    from sqlalchemy import text

    from registry.services.jobs import Jobs
    from tests.registry.adapters import make_adapter

    registry.publish(make_adapter(tmp_path / "a"), owner="ann", name="kept", base_model="tiny-llama", tags=["t"])
    registry.set_alias("ann/kept:1", "prod", actor="ann")
    job = Jobs(registry).submit({"demo": True}, owner="ann", target="ann/next")
    with registry.db.session() as s:
        from registry.store import models as m

        s.add(m.JobEvent(job_id=job.id, kind="log", data={"line": "kept"}))
    tables = ("adapter_versions", "version_tags", "aliases", "job_events", "jobs", "adapters")

    def counts() -> dict[str, int]:
        with registry.db.engine.connect() as conn:
            return {t: conn.execute(text(f"SELECT COUNT(*) FROM {t}")).scalar_one() for t in tables}

    before = counts()
    assert all(before.values()), before
    registry.db.downgrade("0006")
    assert counts() == before
    registry.db.downgrade("0005")
    assert counts() == before
    registry.db.upgrade()
    assert counts() == before and registry.get("ann/kept@prod").version == 1


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_the_connection_pool_is_a_setting(database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Replicas x processes x 15 connections could pass PostgreSQL's max_connections with nothing to tune (an
    operator's walk, session 14)."""
    for variable, value in (("VERA_DATABASE_POOL_SIZE", "3"), ("VERA_DATABASE_MAX_OVERFLOW", "1"),
                            ("VERA_DATABASE_POOL_TIMEOUT_S", "7"), ("VERA_DATABASE_CONNECT_TIMEOUT_S", "4")):
        monkeypatch.setenv(variable, value)
    ready = Database(database_url)
    ready.upgrade()
    ready.engine.dispose()
    registry = open_registry(Settings(database_url=database_url, storage_url=str(tmp_path / "blobs")))
    try:
        pool: Any = registry.db.engine.pool
        assert (pool.size(), pool._max_overflow, pool._timeout) == (3, 1, 7.0)
        with registry.db.engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar_one() == 1
    finally:
        registry.db.engine.dispose()


def test_a_stopped_registry_leaves_everything_in_its_sqlite_file(tmp_path: Path) -> None:
    """A newcomer's backup copied registry.db alone after stopping the registry and got an empty one: everything was
    still in registry.db-wal. Stopped, the server checkpoints the log into the file (Database.close, which `vera
    worker` calls too when it exits), so the file alone is the whole registry."""
    from registry.client import RegistryClient
    from tests.registry.adapters import make_adapter
    from tests.registry.servers import running_server

    url = f"sqlite:///{tmp_path / 'r.db'}"
    with running_server(url, tmp_path / "blobs") as server, RegistryClient(server) as client:
        client.publish(make_adapter(tmp_path / "a"), "ann/kept", base_model="tiny-llama")
        assert (tmp_path / "r.db-wal").stat().st_size > 0  # while it runs, the log holds what is new
    assert not (tmp_path / "r.db-wal").exists() or (tmp_path / "r.db-wal").stat().st_size == 0
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "r.db").write_bytes((tmp_path / "r.db").read_bytes())  # the file alone, as a careless backup takes it
    assert adapters_in(copy / "r.db") == ["ann/kept"]


def test_vera_db_backup_copies_a_running_registry_whole_and_never_overwrites(tmp_path: Path) -> None:
    """`vera db backup FILE` while the server runs: the copy alone (no -wal beside it) is the whole registry; a
    destination that exists, a missing folder and a PostgreSQL database are refused, saying what to do, and leave no
    file."""
    import os

    from registry.client import RegistryClient
    from tests.registry.adapters import make_adapter
    from tests.registry.servers import running_server

    url = f"sqlite:///{tmp_path / 'r.db'}"
    env = {**os.environ, "COLUMNS": "250", "VERA_DATABASE_URL": url, "VERA_STORAGE_URL": str(tmp_path / "blobs")}

    def backup(destination: Path, **more: str) -> subprocess.CompletedProcess[str]:
        return run_vera(["db", "backup", str(destination)], env={**env, **more})

    with running_server(url, tmp_path / "blobs") as server, RegistryClient(server) as client:
        client.publish(make_adapter(tmp_path / "a"), "ann/saved", base_model="tiny-llama")
        (tmp_path / "backup").mkdir()
        done = backup(tmp_path / "backup" / "r.db")
        assert done.returncode == 0 and "backed up the database (revision" in done.stdout, done.stderr
        assert "rsync -a" in done.stdout
        again = backup(tmp_path / "backup" / "r.db")
        assert again.returncode == 1 and "exists; give a new file name" in again.stderr
        nowhere = backup(tmp_path / "missing" / "r.db")
        assert nowhere.returncode == 1 and "is not a folder; create it first" in nowhere.stderr
        postgres = backup(tmp_path / "backup" / "pg.db", VERA_DATABASE_URL="postgresql+psycopg://u@127.0.0.1:9/x")
        assert postgres.returncode == 1 and "pg_dump" in postgres.stderr
    assert sorted(p.name for p in (tmp_path / "backup").iterdir()) == ["r.db"]  # no partial file, no -wal
    assert adapters_in(tmp_path / "backup" / "r.db") == ["ann/saved"]


def test_a_damaged_file_closed_is_said_to_be_damaged_not_to_need_its_log(tmp_path: Path,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    """Closing a SQLite registry copies its write-ahead log into the file; where that fails because the file itself
    is damaged, the warning said to copy the file "with its -wal file" (there was none) or to run `vera db backup`
    (which had just refused it): a docs audit's finding, session 52. Each page of a fresh registry damaged in turn:
    where closing warns, it says the file is damaged."""
    good = tmp_path / "good.db"
    made = Database(f"sqlite:///{good}")
    made.upgrade()
    made.close()
    size, said = good.stat().st_size, []
    for page in range(1, size // 4096):
        copy = tmp_path / f"page-{page}.db"
        data = bytearray(good.read_bytes())
        data[page * 4096:page * 4096 + 2048] = bytes((i * 37 + page) % 256 for i in range(2048))
        copy.write_bytes(bytes(data))
        caplog.clear()
        db = Database(f"sqlite:///{copy}")
        with contextlib.suppress(DatabaseError):
            db.current_revision()
        db.close()
        said += [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert said, "no damaged page made closing fail: the case this test is for did not arise"
    assert all("is damaged" in line and "restore the newest good backup" in line and "-wal file" not in line
               for line in said), said


def test_maintenance_commands_refuse_a_registry_that_is_not_there_and_backups_refuse_a_damaged_one(
        tmp_path: Path) -> None:
    """A mistyped VERA_DATA_DIR made an empty registry there, which `vera fsck` found whole, `vera db status`
    current, and `vera db backup` backed up (a 4 KB file with no table); a damaged file was backed up as if whole
    (an operator's walk, session 43). Each says so, with a failing exit, and leaves no file."""
    import os

    def vera_in(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "COLUMNS": "250", "VERA_DATA_DIR": str(data_dir)}
        for variable in ("VERA_DATABASE_URL", "VERA_STORAGE_URL"):
            env.pop(variable, None)
        return run_vera(args, env=env)

    (tmp_path / "backups").mkdir()
    typo = tmp_path / "bakcup"
    # the token commands but create made an empty registry too, and listed none of its tokens (session 47)
    for args in (["fsck"], ["gc", "--dry-run"], ["db", "backup", str(tmp_path / "backups" / "a.db")],
                 ["token", "list"], ["token", "revoke", "1"], ["token", "purge", "--dry-run"]):
        refused = vera_in(typo, *args)
        said = " ".join(refused.stderr.split())
        assert refused.returncode == 1 and f"There is no registry database at {typo / 'registry.db'}" in said, said
        assert f"`vera {' '.join(args[:2]) if args[0] in ('db', 'token') else args[0]}` works on an existing " \
            "registry" in said
    config = tmp_path / "config.json"
    config.write_text('{"model_type": "llama"}')
    base = vera_in(typo, "base", "register", "b", "--config", str(config), "--database-url",
                   f"sqlite:///{typo / 'registry.db'}")
    assert base.returncode == 1 and "`vera base register` works on an existing registry" in " ".join(
        base.stderr.split()), base.stderr
    status = vera_in(typo, "db", "status")  # a check: it fails (3), saying so
    assert status.returncode == 3, status.stderr
    assert f"current: none (there is no database file at {typo / 'registry.db'}); head: " in " ".join(
        status.stdout.split())
    assert not typo.exists() and list((tmp_path / "backups").iterdir()) == []
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "registry.db").touch()  # a file, but no registry in it: opened, it was given the schema, and found whole
    for args in (["db", "backup", str(tmp_path / "backups" / "b.db")], ["fsck"], ["gc"]):
        unversioned = vera_in(empty, *args)
        assert unversioned.returncode == 1 and "holds no registry (no schema revision" in unversioned.stderr, args
    status = vera_in(empty, "db", "status")  # says so, and writes nothing either (a docs audit: 0 bytes became 4,096)
    assert status.returncode == 3 and f"current: none ({empty / 'registry.db'} holds no registry: an empty file" in \
        " ".join(status.stdout.split()), status.stdout + status.stderr
    assert (empty / "registry.db").stat().st_size == 0 and sorted(p.name for p in empty.iterdir()) == ["registry.db"]
    for table, found in (("version_params", "is damaged (SQLite's quick_check:"),  # it opens; a table is garbage
                         ("alembic_version", "The registry database is damaged: ")):  # not even its revision reads
        damaged = tmp_path / f"damaged-{table}"
        made = Database(f"sqlite:///{damaged / 'registry.db'}")
        made.upgrade()
        made.close()
        with sqlite3.connect(damaged / "registry.db") as connection:
            root = connection.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
        connection.close()
        pages = slice((root - 1) * 4096, root * 4096)  # the table's first page
        data = bytearray((damaged / "registry.db").read_bytes())
        data[pages] = b"\xa5" * len(data[pages])
        (damaged / "registry.db").write_bytes(bytes(data))
        refused = vera_in(damaged, "db", "backup", str(tmp_path / "backups" / "c.db"))
        said = " ".join(refused.stderr.split())
        assert refused.returncode == 1 and found in said and "restore the newest good backup" in said.lower(), said
        assert "Traceback" not in refused.stderr and "-wal file" not in said  # (no log to copy: the file is damaged)
        assert list((tmp_path / "backups").iterdir()) == []  # nothing, not even the partial file
        status = vera_in(damaged, "db", "status")  # it said "up to date" when the revision still read (session 43)
        said = " ".join((status.stdout + status.stderr).split())
        assert status.returncode == 3 and "damaged" in said and "up to date" not in said, said
        assert "Traceback" not in said
    header = tmp_path / "no-header"  # not even SQLite's header reads (SQLITE_NOTADB): a check's 3 too, not a 1
    header.mkdir()
    shutil.copy(damaged / "registry.db", header / "registry.db")
    with (header / "registry.db").open("r+b") as file:
        file.write(b"\xa5" * 16)
    status = vera_in(header, "db", "status")
    said = " ".join((status.stdout + status.stderr).split())
    assert status.returncode == 3 and "current: unreadable" in said and "the file is damaged" in said, said


def adapters_in(path: Path) -> list[str]:
    """The adapters (owner/name) a SQLite registry file holds by itself, after checking its schema is current."""
    db = Database(f"sqlite:///{path}")
    try:
        db.check_schema()
        with db.session() as s:
            return list(s.execute(text("SELECT owner || '/' || name FROM adapters")).scalars())
    finally:
        db.close()


def test_fsck_checks_the_sqlite_file_itself_and_mixed_revisions_are_one_line(tmp_path: Path) -> None:
    """A team admin's walk (session 34): a registry.db copied over a running registry had an index missing rows,
    and `vera fsck` said "missing: 0" (it checked only blobs); a PostgreSQL backup restored into a database that was
    not empty left two revisions in alembic_version, and `vera db status` answered a traceback."""
    import os
    import sqlite3

    path = tmp_path / "r.db"
    db = Database(f"sqlite:///{path}")
    db.upgrade()
    with db.session() as s:
        s.execute(text("INSERT INTO audit_events (at, actor, action, target, detail) VALUES (:at, 'a', 'publish', :t,"
                       " '{}')"), [{"at": "2026-12-01 00:00:00", "t": f"ann/x:{i}"} for i in range(300)])
    registry_before = open_registry(Settings(database_url=f"sqlite:///{path}", storage_url=str(tmp_path / "blobs")))
    assert registry_before.fsck()["database"] == []
    db.close()
    with sqlite3.connect(path) as raw:  # an index's root page lost, as a half-copied file loses pages
        page = raw.execute("SELECT rootpage FROM sqlite_master WHERE name = 'ix_audit_events_target'").fetchone()[0]
        size = raw.execute("PRAGMA page_size").fetchone()[0]
    with open(path, "r+b") as file:
        file.seek((page - 1) * size)
        file.write(b"\0" * size)
    env = {**os.environ, "COLUMNS": "250", "VERA_DATABASE_URL": f"sqlite:///{path}",
           "VERA_STORAGE_URL": str(tmp_path / "blobs")}
    checked = run_vera(["fsck"], env=env)
    assert checked.returncode == 3 and "database: " in checked.stdout and "Page " in checked.stdout, checked.stdout
    # --repair mends blobs, not the file: it fails too, saying so (it answered 0, and `fsck --repair && vera up` ran)
    repaired = run_vera(["fsck", "--repair"], env=env)
    assert repaired.returncode == 3 and "the database file itself is damaged" in " ".join(repaired.stderr.split())
    mixed = Database(f"sqlite:///{tmp_path / 'mixed.db'}")
    mixed.upgrade()
    with mixed.session() as s:
        s.execute(text("INSERT INTO alembic_version (version_num) VALUES ('0020')"))
    mixed.close()
    status = run_vera(["db", "status"], env={**env, "VERA_DATABASE_URL": f"sqlite:///{tmp_path / 'mixed.db'}"})
    assert status.returncode == 1 and "Traceback" not in status.stderr, status.stderr
    assert "records several schema revisions at once (" in status.stderr and "Drop the database" in status.stderr


def test_the_embedded_registry_keeps_its_file_as_it_was_before_an_upgrade(tmp_path: Path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    """`vera up` upgraded an older release's registry.db without a word, and the older release then refused it,
    with no copy to go back to (a team admin's walk, session 34): the file as it was is kept beside it, said in the
    log; the older schema's copy is whole."""
    data = tmp_path / "data"
    data.mkdir()
    old = Database(f"sqlite:///{data / 'registry.db'}")
    old.upgrade("0024")
    with old.session() as s:
        s.execute(text("INSERT INTO adapters (owner, name, description, created_at, visibility) VALUES "
                       "('ann', 'kept', '', '2026-12-01 00:00:00', 'public')"))
    old.close()
    settings = Settings(data_dir=data)
    with caplog.at_level("WARNING", logger="vera.registry"):
        registry = open_registry(settings)
    head = registry.db.head_revision()
    assert registry.db.current_revision() == head
    kept = data / f"registry.db.before-{head}"
    assert f"from schema revision 0024 to {head}; the file as it was is kept as {kept}" in caplog.text
    copy = Database(f"sqlite:///{kept}")
    try:
        assert copy.current_revision() == "0024"
        with copy.session() as s:
            assert s.execute(text("SELECT owner || '/' || name FROM adapters")).scalars().all() == ["ann/kept"]
    finally:
        copy.close()
    registry.db.close()
    caplog.clear()
    with caplog.at_level("WARNING", logger="vera.registry"):
        open_registry(settings).db.close()  # at head now: nothing kept, nothing said
    assert "upgraded" not in caplog.text and sorted(p.name for p in data.glob("registry.db.before-*")) == [kept.name]


def test_a_server_takes_no_changes_once_a_newer_release_upgraded_its_database(tmp_path: Path) -> None:
    """A team admin's walk (session 34): after `vera db upgrade` by a newer release, the old release's server said
    503 on /ready but went on taking publishes and alias moves (no load balancer in front of it). Its writes are
    refused now, saying why, within SCHEMA_RECHECK_S; its reads go on; and they are taken again once the schema is
    what it knows."""
    import time

    from registry.api.gate import SCHEMA_RECHECK_S
    from registry.client import RegistryClient
    from tests.registry.adapters import make_adapter
    from tests.registry.servers import running_server

    url = f"sqlite:///{tmp_path / 'r.db'}"
    with running_server(url, tmp_path / "blobs") as server, RegistryClient(server, cache=False, retries=0) as client:
        client.publish(make_adapter(tmp_path / "a"), "ann/x", base_model="tiny-llama")
        db = Database(url)
        head = db.head_revision()
        with db.session() as s:
            s.execute(text("UPDATE alembic_version SET version_num = '9999'"))  # as a newer release's upgrade
        time.sleep(SCHEMA_RECHECK_S + 0.5)
        with pytest.raises(SchemaOutOfDate, match=r"This server takes no changes: its database is at schema "
                                                  r"revision 9999, which this release does not know") as refused:
            client.set_alias("ann/x:1", "prod")
        assert str(tmp_path) not in str(refused.value)  # where the database is: the operator's log only
        assert client.get("ann/x:1").ref == "ann/x:1"  # reads go on
        with db.session() as s:
            s.execute(text("UPDATE alembic_version SET version_num = :head"), {"head": head})
        db.close()
        time.sleep(SCHEMA_RECHECK_S + 0.5)
        assert client.set_alias("ann/x:1", "prod").version == 1


def test_a_server_whose_database_was_downgraded_under_it_answers_503_not_500_until_upgraded(tmp_path: Path) -> None:
    """An operator's walk (session 48): `vera db downgrade` one revision under a running server; its writes were
    refused ("Reads go on"), but every read was a 500 naming a ProgrammingError (a column this release reads was
    gone). Every request but /health, /ready and the docs is a 503 saying to upgrade now, and all is answered again
    once the schema is back at head, without a restart."""
    import time

    import httpx

    from registry.api.gate import SCHEMA_RECHECK_S
    from registry.client import RegistryClient
    from tests.registry.adapters import make_adapter
    from tests.registry.servers import running_server

    url = f"sqlite:///{tmp_path / 'r.db'}"
    with running_server(url, tmp_path / "blobs") as server, RegistryClient(server, cache=False, retries=0) as client:
        client.publish(make_adapter(tmp_path / "a"), "ann/x", base_model="tiny-llama")
        db = Database(url)
        head = db.head_revision()
        db.downgrade("-1")  # as `vera db downgrade <the revision before head>`
        assert db.current_revision() not in (head, None)
        time.sleep(SCHEMA_RECHECK_S + 0.5)
        for method, path in (("GET", "/api/v1/adapters"), ("GET", "/api/v1/adapters/ann/x/versions/1"),
                             ("HEAD", "/api/v1/adapters"), ("GET", "/hf/api/models/ann/x"), ("GET", "//health"),
                             ("PUT", "/api/v1/adapters/ann/x/aliases/prod")):
            answer = httpx.request(method, f"{server}{path}")
            assert answer.status_code == 503 and answer.headers["retry-after"], (method, path, answer.text)
            if method != "HEAD":
                said = answer.json()
                assert said["type"] == "/problems/schema_out_of_date", said
                assert "answers no requests until its database is upgraded: the database is at schema revision " \
                       f"{db.current_revision()}, and this release needs {head}. Its operator runs `vera db " \
                       "upgrade`" in said["detail"] and "Nothing was read or changed" in said["detail"], said
                # told to anyone, before any token: not where the database is (a re-check's finding, session 48)
                assert str(tmp_path) not in said["detail"] and "sqlite" not in said["detail"], said
        assert httpx.get(f"{server}/health").status_code == 200
        ready = httpx.get(f"{server}/ready")
        assert ready.status_code == 503 and "vera db upgrade" in ready.text, ready.text
        assert httpx.get(f"{server}/openapi.json").status_code == 200
        docs = httpx.get(f"{server}/docs")  # and the files its page loads (they were 503s: a re-check's finding)
        assert docs.status_code == 200
        for asset in re.findall(r'(?:href|src)="(/static-offline-docs/[^"]+)"', docs.text):
            assert httpx.get(f"{server}{asset}").status_code == 200, asset
        scraped = httpx.get(f"{server}/metrics")  # Prometheus keeps the server in sight (totals it cannot read:
        # left out, vera_totals_up 0)
        assert scraped.status_code == 200 and "vera_totals_up " in scraped.text and \
            "vera_http_requests_total" in scraped.text, scraped.text[:500]
        db.upgrade()
        db.close()
        time.sleep(SCHEMA_RECHECK_S + 0.5)
        assert client.get("ann/x:1").ref == "ann/x:1" and client.set_alias("ann/x:1", "prod").version == 1


def test_a_migration_waits_for_another_writer_instead_of_failing_on_sqlite(tmp_path: Path) -> None:
    """`vera db downgrade` beside a running server (session 53's CI): the migration's transaction read the schema's
    revision, the server wrote meanwhile, and the migration's first write failed at once with "database is locked"
    (in WAL mode a transaction that has read cannot write after another connection's commit, and SQLite does not
    wait on that). The migration waits for the write lock before it reads, as long as the busy timeout allows."""
    import threading
    import time

    db = Database(f"sqlite:///{tmp_path / 'r.db'}")
    db.upgrade()
    head = db.current_revision()
    other = sqlite3.connect(tmp_path / "r.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # a writer (the server) in the middle of a write as the migration starts
    other.execute("CREATE TABLE scratch (x INTEGER)")
    failed: list[Exception] = []

    def downgrade() -> None:
        try:
            db.downgrade("-1")
        except Exception as exc:  # noqa: BLE001 - what the assertion reports
            failed.append(exc)

    migrating = threading.Thread(target=downgrade)
    migrating.start()
    time.sleep(1.0)  # the migration has begun (and, before the mend, read the revision) by now
    other.execute("COMMIT")
    migrating.join(60)
    other.close()
    assert not migrating.is_alive() and not failed, failed
    assert db.current_revision() not in (head, None)
    assert "scratch" in inspect(db.engine).get_table_names()  # the other writer's change stands beside the migration's
    db.engine.dispose()


def test_a_burst_of_requests_shares_one_look_at_the_schema(tmp_path: Path) -> None:
    """A re-check's finding (session 48): the look at the schema, at most every SCHEMA_RECHECK_S, ran once per
    request of a burst that came while it was due (40 for 40 anonymous requests): one look now, which they share."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from registry.api import ApiOptions, create_app
    from registry.services.registry import Registry
    from registry.store.blobs import FsspecBlobStore
    from tests.registry.servers import in_thread

    db = Database(f"sqlite:///{tmp_path / 'r.db'}")
    db.upgrade()
    looks, lock, real = [0], threading.Lock(), db.check_schema

    def slow_look() -> None:
        with lock:
            looks[0] += 1
        time.sleep(0.3)  # a slow database: the burst arrives while the look is under way
        real()

    db.check_schema = slow_look  # type: ignore[method-assign]
    with in_thread(create_app(Registry(db, FsspecBlobStore(str(tmp_path / "blobs"))),
                              ApiOptions(require_tokens=False))) as url, ThreadPoolExecutor(20) as pool:
        time.sleep(2.5)  # past the first look's 2 s
        looks[0] = 0
        answers = list(pool.map(lambda _: httpx.get(f"{url}/api/v1/adapters", timeout=30).status_code, range(40)))
    assert answers == [200] * 40 and 1 <= looks[0] <= 2, looks  # (a second where the burst outlasts 2 s)
    db.close()


def test_a_database_that_refuses_writes_still_authenticates_and_says_why_it_refuses(tmp_path: Path) -> None:
    """A SQLite file the registry may not write (permissions, an immutable file, a read-only mount; here SQLite's
    query_only, which refuses writes with the same SQLITE_READONLY): a token's lookup, which records its last use
    once a minute, failed every request of that token once a minute (an operator's walk, session 43). It reads on,
    and the refusal of a write says it is the file, not a primary elsewhere."""
    url = f"sqlite:///{tmp_path / 'r.db'}"
    setup = Database(url)
    setup.upgrade()
    _, secret = create_token(setup, owner="ann", scopes=["read", "publish"])
    setup.engine.dispose()
    db = Database(url)
    event.listen(db.engine, "connect", lambda connection, _: connection.execute("PRAGMA query_only = ON"))
    try:
        assert authenticate(db, secret).owner == "ann"  # its first use: the write refused, the lookup answered
        with pytest.raises(OperationalError) as refused, db.session() as s:
            s.execute(text("UPDATE access_tokens SET last_used_at = NULL"))
    finally:
        db.engine.dispose()
    answer = database_problem(refused.value, "PUT", "/api/v1/adapters/ann/x/aliases/prod")
    said = json.loads(answer.body)
    assert answer.status_code == 503 and said["type"] == "/problems/read_only", said
    assert "its SQLite file, or the folder it is in, is read-only to the registry's process" in said["detail"]
    assert "primary" not in said["detail"] and str(tmp_path) not in said["detail"]


def test_a_damaged_database_file_is_said_to_be_damaged(tmp_path: Path) -> None:
    """A SQLite file with a page overwritten answered "Unexpected DatabaseError" (an operator's walk, session 43):
    the answer says the database is damaged and is restored from a backup."""
    path = tmp_path / "r.db"
    made = Database(f"sqlite:///{path}")
    made.upgrade()
    made.close()  # everything in the file itself (its write-ahead log emptied)
    data = bytearray(path.read_bytes())
    data[4096:] = b"\xa5" * (len(data) - 4096)  # every page but the first (the header and the schema)
    path.write_bytes(bytes(data))
    db = Database(f"sqlite:///{path}")
    try:
        with pytest.raises(DatabaseError) as damaged, db.session() as s:
            for table in Base.metadata.sorted_tables:
                s.execute(text(f"SELECT * FROM {table.name}")).all()
    finally:
        db.engine.dispose()
    answer = database_problem(damaged.value, "GET", "/api/v1/adapters")
    said = json.loads(answer.body)
    assert answer.status_code == 500 and said["type"] == "/problems/database_damaged", said
    assert "database file is damaged" in said["detail"] and "restore it from a backup" in said["detail"]

"""Database access: engines, one managed session per service call, and Alembic migrations."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from registry.domain.errors import IntegrityError, InvalidInput, SchemaOutOfDate, damaged_sqlite
from registry.domain.schemas import PoolSettings
from registry.logs import first_line

log = logging.getLogger("vera.database")


def _migrations_dir() -> Path:
    """Where Alembic's scripts are: the repository's migrations/ folder, installed as ``registry.migrations``
    (pyproject.toml maps it), or the folder beside the checkout when the code runs from a source tree that is not
    installed."""
    spec = importlib.util.find_spec("registry.migrations")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(__file__).resolve().parents[2] / "migrations"


MIGRATIONS = _migrations_dir()


def dialect_insert(s: Session) -> Any:
    """The INSERT construct of the session's database, with its ON CONFLICT clause (PostgreSQL's or SQLite's)."""
    from sqlalchemy.dialects import postgresql, sqlite

    return postgresql.insert if s.get_bind().dialect.name == "postgresql" else sqlite.insert


def upsert(s: Session, table: Any, values: dict[str, Any], keys: list[str]) -> None:
    """One statement: INSERT ``values`` into ``table``, or, where a row with the same ``keys`` exists, set its other
    columns to them (concurrent writers take turns instead of failing on the key or on a row deleted meanwhile)."""
    statement = dialect_insert(s)(table).values(**values)
    s.execute(statement.on_conflict_do_update(index_elements=keys, set_={
        key: statement.excluded[key] for key in values if key not in keys}))


def insert_missing(s: Session, table: Any, values: dict[str, Any], keys: list[str]) -> None:
    """One statement: INSERT ``values`` into ``table`` unless a row with the same ``keys`` exists (or is being
    inserted by a concurrent writer, which is then waited for): for content-addressed rows, which two writers of
    the same bytes record alike (a blob: two versions' equal derived files built at once no longer collide)."""
    s.execute(dialect_insert(s)(table).values(**values).on_conflict_do_nothing(index_elements=keys))


def make_engine(url: str, pool: PoolSettings | None = None, *, read_only: bool = False) -> Engine:
    """The engine of ``url``; with ``read_only`` every connection refuses writes itself (PostgreSQL: each transaction
    begins READ ONLY; SQLite: query_only), so that a write the read-only mode missed fails instead of writing."""
    if url.startswith("postgresql") and importlib.util.find_spec("psycopg") is None:
        raise InvalidInput(f"{url.split('@')[-1]!r} is a PostgreSQL database, and its driver is not installed: "
                           "in the clone, `VERA_EXTRAS=postgres bash .ci/setup` (or `pip install -c "
                           "requirements.lock -e '.[postgres]'`; with a wheel, its [postgres] extra).")
    if url.startswith("sqlite"):
        if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:") and not read_only:
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            if read_only:
                cursor.execute("PRAGMA query_only=ON")
            cursor.close()

        return engine
    pool = pool or PoolSettings()
    engine = create_engine(url, pool_pre_ping=True, pool_size=pool.size, max_overflow=pool.max_overflow,
                           pool_timeout=pool.timeout_s, connect_args={"connect_timeout": pool.connect_timeout_s})
    if read_only:
        @event.listens_for(engine, "connect")
        def _read_only(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.read_only = True  # psycopg begins every transaction with BEGIN READ ONLY (no round trip more)

    return engine


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


@functools.cache
def _scripts() -> ScriptDirectory:
    """This release's migration scripts, read once per process: what it knows stays what its code was written for,
    also after a newer release is installed under it (its head was read once and kept, while which revisions it knew
    was read again: a database upgraded by the newer release was told to run `vera db upgrade`, as if behind, by a
    server still running the older code; a PEFT user's walk, session 47)."""
    return ScriptDirectory.from_config(alembic_config("sqlite://"))


@functools.cache
def head_revision() -> str | None:
    """This release's newest schema revision, read from its migration scripts (once: 20 ms a time)."""
    return _scripts().get_current_head()


class Database:
    """An engine plus the transaction boundary: ``with db.session() as s:`` commits once, or rolls back. A
    ``read_only`` database (VERA_READ_ONLY) is one the services do not write to (they check ``read_only``), and
    whose connections refuse writes besides (make_engine)."""

    def __init__(self, url: str, pool: PoolSettings | None = None, *, read_only: bool = False) -> None:
        self.url, self.read_only = url, read_only
        self.engine = make_engine(url, pool, read_only=read_only)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        session = self._sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def close(self) -> None:
        """Close the pooled connections (a later session opens new ones). On a SQLite file, first copy what the
        write-ahead log holds into the database file (a checkpoint that empties the log): else registry.db alone
        can stay a 4 KB shell with everything in registry.db-wal, and a copy of it alone is an empty registry."""
        if self.engine.dialect.name == "sqlite":
            if self.engine.url.database in (None, "", ":memory:"):
                return  # its one connection is the database: closing it would lose everything
            if not self.read_only:
                try:
                    with self.engine.connect() as conn:
                        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
                except SQLAlchemyError as exc:  # (said: it failed unsaid, an operator's walk, session 43)
                    if damaged_sqlite(exc):  # not a log left to copy: the file itself (told to copy its -wal file,
                        # which there was not, and to run the backup that had just refused it: a docs audit, session 52)
                        log.warning(f"{self.engine.url.database} is damaged ({first_line(exc)}): restore the newest "
                                    "good backup (docs/guide.md, \"Back up and upgrade the registry\")")
                    else:
                        log.warning(f"{self.engine.url.database}: the write-ahead log could not be copied into the "
                                    f"file ({first_line(exc)}), so the file is not whole alone: copy it with its -wal "
                                    "file, or back it up with `vera db backup`")
        self.engine.dispose()

    def backup(self, destination: Path) -> None:
        """A consistent copy of a SQLite registry database at ``destination`` (a file that must not exist), taken
        while the registry runs (SQLite's online backup: the write-ahead log's pages included), written beside
        the destination first and renamed into place, so that a failed backup leaves no file. InvalidInput for
        PostgreSQL (pg_dump backs it up) and for a destination that exists or whose folder does not; IntegrityError,
        leaving no file, when the copy fails SQLite's quick_check: a damaged database was backed up as if whole, each
        night's copy taking the place of a good one (an operator's walk, session 43)."""
        if self.engine.dialect.name != "sqlite" or self.url.startswith("sqlite:///:memory:"):
            where = self.engine.url.render_as_string(hide_password=True)
            raise InvalidInput(f"`vera db backup` copies a SQLite file; {where} is not one. Back up PostgreSQL with "
                               "its own tools, e.g. `pg_dump -Fc DBNAME > vera.dump` (docs/deployment.md, Backups).")
        if destination.exists():
            raise InvalidInput(f"{destination} exists; give a new file name (a backup never overwrites a file).")
        if not destination.parent.is_dir():
            raise InvalidInput(f"{destination.parent} is not a folder; create it first (mkdir -p "
                               f"{destination.parent}).")
        if self.current_revision() is None:  # (a backup of it would restore nothing)
            raise InvalidInput(f"{self.engine.url.render_as_string(hide_password=True)} holds no registry (no schema "
                               "revision: an empty file); check the path. Nothing was written.")
        partial = destination.with_name(f".{destination.name}.partial")
        raw = self.engine.raw_connection()
        try:
            target = sqlite3.connect(partial)
            try:
                raw.driver_connection.backup(target)  # type: ignore[union-attr]
                found = [str(row[0]) for row in target.execute("PRAGMA quick_check").fetchall()]
            except sqlite3.DatabaseError as exc:  # too damaged to be copied or checked at all
                found = [f"the check itself failed: {first_line(exc)}"]
            finally:
                target.close()
            if found != ["ok"]:
                raise IntegrityError(
                    f"The database {self.engine.url.render_as_string(hide_password=True)} is damaged (SQLite's "
                    f"quick_check: {'; '.join(found[:3])[:500]}); no backup was written, so keep the ones you have. "
                    "Restore the newest good backup (docs/guide.md, \"Back up and upgrade the registry\"); `vera fsck` "
                    "says what else it finds.")
            partial.rename(destination)
        finally:
            raw.close()
            partial.unlink(missing_ok=True)

    def integrity_problems(self) -> list[str]:
        """What SQLite's quick_check finds wrong in the file (an index missing rows, pages out of place: a file
        copied over a running registry showed both, while every blob check passed); none on PostgreSQL, which keeps
        its own files consistent."""
        if self.engine.dialect.name != "sqlite":
            return []
        try:
            with self.engine.connect() as conn:
                found = [str(row[0]) for row in conn.exec_driver_sql("PRAGMA quick_check").fetchall()]
        except SQLAlchemyError as exc:  # too damaged to be checked at all
            return [f"the check itself failed: {first_line(exc)}"]
        return [] if found == ["ok"] else [line for text in found for line in text.splitlines()][:100]

    def refuses_writes(self) -> str | None:
        """Why this database takes no writes although the registry was not told it is read-only, or None: a SQLite
        file, or the folder where SQLite keeps its log beside it, that the process may not write (permissions, an
        immutable file, a read-only mount); a PostgreSQL hot standby, or one whose default_transaction_read_only is
        on. /ready and whoami said ``read_only: false`` there while every change was refused (an operator's walk,
        session 43). One query on PostgreSQL; none on SQLite."""
        if self.engine.dialect.name == "sqlite":
            if self.engine.url.database in (None, "", ":memory:"):
                return None
            path = Path(self.engine.url.database)
            if (path.exists() and not os.access(path, os.W_OK)) or not os.access(path.parent, os.W_OK):
                return "its SQLite file, or the folder it is in, is read-only to the registry's process"
            return None
        if self.engine.dialect.name != "postgresql":
            return None
        with self.engine.connect() as conn:
            standby, read_only = conn.execute(text(
                "SELECT pg_is_in_recovery(), current_setting('default_transaction_read_only')")).one()
        if standby:
            return "a PostgreSQL hot standby (in recovery): changes go to the primary"
        return "PostgreSQL's default_transaction_read_only is on" if read_only == "on" else None

    def current_revision(self) -> str | None:
        with self.engine.connect() as conn:
            try:
                return MigrationContext.configure(conn).get_current_revision()
            except CommandError as exc:  # alembic_version names several revisions
                heads = MigrationContext.configure(conn).get_current_heads()
                where = self.engine.url.render_as_string(hide_password=True)
                raise SchemaOutOfDate(f"{where} records several schema revisions at once ({', '.join(heads)}): two "
                                      "registries' tables mixed, as a backup restored into a database that was not "
                                      "empty leaves them. Drop the database, create it empty, restore the backup "
                                      "into it, then `vera db upgrade` and `vera fsck` (docs/deployment.md, "
                                      "Restoring).") from exc

    def knows(self, revision: str) -> bool:
        """Whether ``revision`` is one of this release's schema revisions."""
        try:
            return _scripts().get_revision(revision) is not None
        except CommandError:  # alembic: "Can't locate revision identified by ..."
            return False

    def head_revision(self) -> str | None:
        """This release's newest schema revision (read from its migration scripts once: 20 ms a time)."""
        return head_revision()

    def upgrade(self, revision: str = "head") -> None:
        with self._migrating() as config:
            command.upgrade(config, revision)

    def downgrade(self, revision: str = "base") -> None:
        with self._migrating() as config:
            command.downgrade(config, revision)

    @contextlib.contextmanager
    def _migrating(self) -> Iterator[Config]:
        """Alembic's config for migrating on one connection, in one transaction that commits at the end or rolls
        back every step: on SQLite too, whose driver opens a transaction only for a write of rows, so that a
        migration's CREATE and DROP before its first write committed at once (0028 remakes tables: a failure
        midway left them dropped). IMMEDIATE: the write lock is taken (waited for) before the first read, because a
        transaction that has read and then writes after another connection wrote fails at once in WAL mode, whatever
        the busy timeout (`vera db downgrade` beside a running server: "database is locked", session 53's CI)."""
        with self.engine.begin() as conn:
            if self.engine.dialect.name == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            config = alembic_config(self.url)
            config.attributes["connection"] = conn
            yield config

    def is_empty(self) -> bool:
        """No registry table and no schema revision: a database never used by the registry (or downgraded to base)."""
        return self.current_revision() is None and set(inspect(self.engine).get_table_names()) <= {"alembic_version"}

    def check_not_ahead(self) -> None:
        """Refuse a schema that a newer release upgraded (a revision this one does not know), saying so."""
        self._check_schema(at_head=False)

    def check_schema(self) -> None:
        """Refuse to run on a schema that is not at head, with the command that fixes it."""
        self._check_schema(at_head=True)

    def _check_schema(self, *, at_head: bool) -> None:
        current, head = self.current_revision(), self.head_revision()
        if current is not None and current != head and not self.knows(current):
            raise SchemaOutOfDate(
                f"The registry database at {self.engine.url.render_as_string(hide_password=True)} is at schema "
                f"revision {current}, which this version of vera-registry does not know (it knows up to {head}): a "
                "newer release upgraded it. Run that release here too; `vera db upgrade` of this one cannot help.",
                ahead=True, current=current, head=head)
        if at_head and current != head:
            raise SchemaOutOfDate(
                f"The registry database at {self.engine.url.render_as_string(hide_password=True)} is at schema "
                f"revision {current or 'none (empty)'}, but this version of vera-registry needs {head}. "
                "Run `vera db upgrade` (with the same VERA_DATABASE_URL) and start again.", current=current, head=head
            )


def refused_write(exc: Exception) -> bool:
    """Whether a database error is the database refusing a write because it is read-only: PostgreSQL's
    read_only_sql_transaction (SQLSTATE 25006), SQLite's SQLITE_READONLY (a file or folder without write
    permission, an immutable file, a read-only mount)."""
    orig = exc.orig if isinstance(exc, DBAPIError) else None
    return getattr(orig, "sqlstate", None) == "25006" or getattr(orig, "sqlite_errorname", None) == "SQLITE_READONLY"

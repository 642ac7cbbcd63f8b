"""Registry fixtures: a real database (SQLite file, and the local PostgreSQL) and real blob storage (a folder)."""

from __future__ import annotations

import contextlib
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from registry.services.registry import Registry
from registry.store.blobs import FsspecBlobStore
from registry.store.database import Database
from tests.registry.served_lm import served  # noqa: F401 - a module-scoped fixture: a tiny LM served in OpenAI's API
from tests.registry.servers import head_sqlite, upgraded

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


def _pg_admin() -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(PG_ADMIN, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN} ({exc}); .ci/setup starts it.")


@contextlib.contextmanager
def fresh_postgres(prefix: str = "vera_test", *, template: str | None = None) -> Iterator[str]:
    """The URL of a new database on the local PostgreSQL, dropped afterwards: empty, or a copy of ``template`` (a
    database nobody is connected to)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = _pg_admin()
    admin.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(scope="session")
def head_postgres() -> Iterator[str]:
    """A PostgreSQL database upgraded to head once per test process, which a test's registry starts as a copy of
    (CREATE DATABASE ... TEMPLATE, 0.03 s): the migrations take 0.3 s on a new database (head_sqlite's reason)."""
    name = f"vera_head_{uuid.uuid4().hex[:12]}"
    with contextlib.closing(_pg_admin()) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            upgraded(f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}")
            yield name
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A new database of each dialect: at head already where the test has a ``registry`` (a copy of the process's
    template, head_sqlite or head_postgres), empty otherwise (migration tests, servers and commands that upgrade it
    themselves)."""
    at_head = "registry" in request.fixturenames
    if request.param == "sqlite":
        path = tmp_path / "registry.db"
        if at_head:
            shutil.copyfile(head_sqlite(), path)
        yield f"sqlite:///{path}"
        return
    with fresh_postgres(template=request.getfixturevalue("head_postgres") if at_head else None) as url:
        yield url


@pytest.fixture
def registry(database_url: str, tmp_path: Path) -> Iterator[Registry]:
    db = Database(database_url)  # at head: a copy of the process's template (database_url)
    yield Registry(db, FsspecBlobStore(str(tmp_path / "blobs")))
    db.engine.dispose()

"""Registry fixtures: a real database (SQLite file, and the local PostgreSQL) and real blob storage (a folder)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from registry.services.registry import Registry
from registry.store.blobs import FsspecBlobStore
from registry.store.database import Database
from tests.registry.served_lm import served  # noqa: F401 - a module-scoped fixture: a tiny LM served in OpenAI's API

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


@contextlib.contextmanager
def fresh_postgres(prefix: str = "vera_test") -> Iterator[str]:
    """The URL of a new, empty database on the local PostgreSQL, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN} ({exc}); .ci/setup starts it.")
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'registry.db'}"
        return
    with fresh_postgres() as url:
        yield url


@pytest.fixture
def registry(database_url: str, tmp_path: Path) -> Iterator[Registry]:
    db = Database(database_url)
    db.upgrade()
    yield Registry(db, FsspecBlobStore(str(tmp_path / "blobs")))
    db.engine.dispose()

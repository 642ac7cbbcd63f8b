"""What the registry holds and whether it can serve: the counts behind /metrics and the checks behind /ready."""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Callable

from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError

from registry.domain.errors import SchemaOutOfDate, StorageUnavailable
from registry.domain.schemas import JOB_STATUSES, StoreCounts
from registry.store import models as m
from registry.store.blobs import BlobStore
from registry.store.database import Database

log = logging.getLogger("vera.status")


#: How long /ready waits for one of its checks.
READY_CHECK_TIMEOUT_S = 5.0


class Status:
    def __init__(self, db: Database, blobs: BlobStore) -> None:
        self.db, self.blobs = db, blobs
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="vera-ready")
        self._running: dict[str, concurrent.futures.Future[None]] = {}

    def counts(self) -> StoreCounts:
        with self.db.session() as s:
            jobs = {status: count for status, count in s.execute(
                select(m.Job.status, func.count()).group_by(m.Job.status))}
            workers = s.scalar(select(func.count(func.distinct(m.Job.claimed_by))).where(m.Job.status == "running"))
            return StoreCounts(adapters=s.scalar(select(func.count()).select_from(m.Adapter)) or 0,
                               versions=s.scalar(select(func.count()).select_from(m.AdapterVersion)) or 0,
                               stored_bytes=s.scalar(select(func.coalesce(func.sum(m.Blob.size), 0))) or 0,
                               jobs={status: jobs.get(status, 0) for status in JOB_STATUSES},
                               workers=workers or 0)

    def readiness(self) -> dict[str, str]:
        """"ok" or "error: <kind> (...)" for the database (reachable, schema current) and the blob storage. The
        answer goes to callers without a token: it names the kind of failure, and the server's log has the rest
        (hosts, users and buckets stay there)."""
        return {"database": self._checked("database", self._database), "storage": self._checked("storage",
                                                                                                 self._storage)}

    def refused_writes(self) -> str | None:
        """Why the database takes no writes (Database.refuses_writes), or None; None too while it cannot be asked
        (the readiness check says the database is away)."""
        try:
            return self.db.refuses_writes()
        except SQLAlchemyError as exc:
            log.debug("readiness: whether the database takes writes could not be asked: %s", exc)
            return None

    def _database(self) -> None:
        with self.db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        self.db.check_schema()

    def _storage(self) -> None:
        """Reachable and writable (blobs.check), and not an empty folder or bucket under a database that names blobs:
        storage that was not mounted, or a misspelt VERA_STORAGE_URL, would answer every download with a 404."""
        self.blobs.check()
        if not self.blobs.holds_any() and names_any_blob(self.db):
            raise StorageUnavailable("the storage holds no blob, but the database names some: is it mounted, and "
                                     "is VERA_STORAGE_URL the registry's?")

    def _checked(self, what: str, check: Callable[[], None]) -> str:
        """"ok", or why not, within READY_CHECK_TIMEOUT_S: a check that hangs (an object store that stopped
        answering) is reported as such, and not started again until it ends, so that hung checks do not pile up."""
        running = self._running.get(what)
        if running is None or running.done():
            running = self._running[what] = self._pool.submit(check)
        try:
            running.result(timeout=READY_CHECK_TIMEOUT_S)
        except concurrent.futures.TimeoutError:
            log.warning("readiness: the %s check has not answered for %s s", what, READY_CHECK_TIMEOUT_S)
            return f"error: no answer within {READY_CHECK_TIMEOUT_S:g} s; the server's log says more"
        except Exception as exc:  # noqa: BLE001 - readiness reports any failure
            return _failed(what, exc)
        return "ok"


def names_any_blob(db: Database) -> bool:
    """Whether the database names any blob: then storage that holds none is not the registry's (not mounted, or
    another URL), for /ready and for the writes FsspecBlobStore.guard_writes refuses."""
    with db.session() as s:
        return s.scalar(select(m.Blob.sha256).limit(1)) is not None


def _failed(what: str, exc: Exception) -> str:
    log.warning("readiness: the %s check failed: %s: %s", what, type(exc).__name__, exc)
    hint = f" ({exc})" if isinstance(exc, StorageUnavailable) else ""  # its messages name no place
    if isinstance(exc, SchemaOutOfDate):
        hint = (" (the schema is newer than this release: run the release that upgraded it)" if exc.ahead
                else " (the schema is behind: run `vera db upgrade`)")
    return f"error: {type(exc).__name__}{hint}; the server's log says more"

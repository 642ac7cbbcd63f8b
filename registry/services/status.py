"""What the registry holds and whether it can serve: the counts behind /metrics and the checks behind /ready."""

from __future__ import annotations

import logging

from sqlalchemy import func, select, text

from registry.domain.errors import SchemaOutOfDate
from registry.domain.schemas import StoreCounts
from registry.store import models as m
from registry.store.blobs import BlobStore
from registry.store.database import Database

log = logging.getLogger("vera.status")


class Status:
    def __init__(self, db: Database, blobs: BlobStore) -> None:
        self.db, self.blobs = db, blobs

    def counts(self) -> StoreCounts:
        with self.db.session() as s:
            return StoreCounts(adapters=s.scalar(select(func.count()).select_from(m.Adapter)) or 0,
                               versions=s.scalar(select(func.count()).select_from(m.AdapterVersion)) or 0,
                               stored_bytes=s.scalar(select(func.coalesce(func.sum(m.Blob.size), 0))) or 0)

    def readiness(self) -> dict[str, str]:
        """"ok" or "error: <kind> (...)" for the database (reachable, schema current) and the blob storage. The
        answer goes to callers without a token: it names the kind of failure, and the server's log has the rest
        (hosts, users and buckets stay there)."""
        checks: dict[str, str] = {}
        try:
            with self.db.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            self.db.check_schema()
            checks["database"] = "ok"
        except Exception as exc:  # noqa: BLE001 - readiness reports any failure
            checks["database"] = _failed("database", exc)
        try:
            self.blobs.check()
            checks["storage"] = "ok"
        except Exception as exc:  # noqa: BLE001
            checks["storage"] = _failed("storage", exc)
        return checks


def _failed(what: str, exc: Exception) -> str:
    log.warning("readiness: the %s check failed: %s: %s", what, type(exc).__name__, exc)
    hint = ""
    if isinstance(exc, SchemaOutOfDate):
        hint = (" (the schema is newer than this release: run the release that upgraded it)" if exc.ahead
                else " (the schema is behind: run `vera db upgrade`)")
    return f"error: {type(exc).__name__}{hint}; the server's log says more"

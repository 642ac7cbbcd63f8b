"""What the registry holds and whether it can serve: the counts behind /metrics and the checks behind /ready."""

from __future__ import annotations

from sqlalchemy import func, select, text

from registry.domain.schemas import StoreCounts
from registry.store import models as m
from registry.store.blobs import BlobStore
from registry.store.database import Database


class Status:
    def __init__(self, db: Database, blobs: BlobStore) -> None:
        self.db, self.blobs = db, blobs

    def counts(self) -> StoreCounts:
        with self.db.session() as s:
            return StoreCounts(adapters=s.scalar(select(func.count()).select_from(m.Adapter)) or 0,
                               versions=s.scalar(select(func.count()).select_from(m.AdapterVersion)) or 0,
                               stored_bytes=s.scalar(select(func.coalesce(func.sum(m.Blob.size), 0))) or 0)

    def readiness(self) -> dict[str, str]:
        """"ok" or "error: ..." for the database (reachable, schema current) and the blob storage."""
        checks: dict[str, str] = {}
        try:
            with self.db.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            self.db.check_schema()
            checks["database"] = "ok"
        except Exception as exc:  # noqa: BLE001 - readiness reports any failure
            checks["database"] = f"error: {exc}"
        try:
            self.blobs.check()
            checks["storage"] = "ok"
        except Exception as exc:  # noqa: BLE001
            checks["storage"] = f"error: {exc}"
        return checks

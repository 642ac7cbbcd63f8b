"""Download counts per version, cheap on the hot path: a download only adds one to a counter in this process's
memory; a background thread adds the counts to the table version_downloads every ``flush_every_s`` seconds, sooner
once ``flush_every`` downloads are waiting, and once more when the process stops. Each flush adds (an UPSERT
``downloads = downloads + n``, never a write of a total), so several API processes on one database add up.

A download is one GET that returns a version's weights (adapter_model.safetensors) through the file route or the
Hub protocol's resolve; revalidations (304), HEADs and redirects are not downloads. Counts are at most one flush
interval behind (a count under a name the adapter has since moved from goes where it moved), and a process killed
without its shutdown loses what it had not flushed. A read-only registry (VERA_READ_ONLY) counts none: the downloads
a read replica serves are not in the counts.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from datetime import UTC, datetime

from sqlalchemy import literal, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from registry.domain.errors import InvalidInput
from registry.store import models as m
from registry.store.database import Database, dialect_insert

log = logging.getLogger("vera.downloads")

#: (owner, name, version number): how the routes know a version (a deleted one is skipped at the flush).
VersionKey = tuple[str, str, int]
DEFAULT_FLUSH_S = 10.0
DEFAULT_FLUSH_EVERY = 1000


class DownloadCounter:
    """Counts downloads in memory and adds them to the database in batches (see the module's docstring)."""

    def __init__(self, db: Database, *, flush_every_s: float = DEFAULT_FLUSH_S,
                 flush_every: int = DEFAULT_FLUSH_EVERY) -> None:
        if not flush_every_s > 0 or flush_every < 1:
            raise InvalidInput(f"Download counts flush every s > 0 seconds and n >= 1 downloads; got "
                               f"{flush_every_s} s and {flush_every}.")
        self.db, self.flush_every_s, self.flush_every = db, flush_every_s, flush_every
        self._pending: Counter[VersionKey] = Counter()
        self._waiting = 0
        self._lock = threading.Lock()  # guards _pending and _waiting: held for a dict update only
        self._flushing = threading.Lock()  # one flush at a time
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None

    def count(self, owner: str, name: str, version: int) -> None:
        """One download of ``owner/name:version`` (memory only; the flusher is woken when a batch is full). A
        read-only registry (VERA_READ_ONLY) counts nothing: it could never add its counts to the database."""
        if self.db.read_only:
            return
        with self._lock:
            self._pending[(owner, name, version)] += 1
            self._waiting += 1
            full = self._waiting >= self.flush_every
        if full:
            self._wake.set()

    def pending(self) -> int:
        """Downloads counted here and not yet flushed."""
        with self._lock:
            return self._waiting

    def start(self) -> None:
        """Flush in a background thread until close()."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="vera-downloads", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop the background thread and flush what is left."""
        if self._thread is not None:
            self._stop.set()
            self._wake.set()
            self._thread.join(timeout=30)
            self._thread = None
        self._flush_logged()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_every_s)
            self._wake.clear()
            if not self._stop.is_set():
                self._flush_logged()

    def _flush_logged(self) -> None:
        try:
            self.flush()
        except SQLAlchemyError as exc:  # kept for the next flush
            log.warning(f"download counts not flushed (kept for the next try): {type(exc).__name__}: {exc}")

    def flush(self) -> int:
        """Add the waiting counts to the database in one transaction; return how many were flushed (those of versions
        deleted meanwhile are dropped). On a database error the counts are kept for the next flush, and the error is
        raised."""
        with self._flushing:
            with self._lock:
                batch, self._pending, self._waiting = self._pending, Counter(), 0
            if not batch:
                return 0
            try:
                with self.db.session() as s:
                    add_downloads(s, batch)
            except BaseException:
                with self._lock:
                    self._pending.update(batch)
                    self._waiting += sum(batch.values())
                raise
            return sum(batch.values())


def add_downloads(s: Session, counts: dict[VersionKey, int]) -> None:
    """Add ``counts`` to version_downloads: an UPSERT per version that adds to what other processes added, for the
    versions that still exist. A count under a name the adapter had before it moved (counted in this process or
    another before the move, flushed after) goes to the adapter under its name now, through ``adapter_moves``."""
    insert = dialect_insert(s)
    table = m.VersionDownloads.__table__
    now = datetime.now(UTC)
    for (owner, name, number), n in sorted(counts.items()):
        named = select(m.Adapter.id).where(m.Adapter.owner == owner, m.Adapter.name == name).union(
            select(m.AdapterMove.adapter_id).where(m.AdapterMove.owner == owner, m.AdapterMove.name == name))
        version = (select(m.AdapterVersion.id, literal(n), literal(now, m.VersionDownloads.updated_at.type))
                   .where(m.AdapterVersion.adapter_id.in_(named), m.AdapterVersion.version == number))
        statement = insert(table).from_select(["version_id", "downloads", "updated_at"], version)
        s.execute(statement.on_conflict_do_update(
            index_elements=["version_id"],
            set_={"downloads": table.c.downloads + statement.excluded.downloads,
                  "updated_at": statement.excluded.updated_at}))


def download_counts(s: Session, version_ids: list[int]) -> dict[int, int]:
    """The flushed download counts of these versions (versions never downloaded are left out)."""
    if not version_ids:
        return {}
    rows = s.execute(select(m.VersionDownloads.version_id, m.VersionDownloads.downloads)
                     .where(m.VersionDownloads.version_id.in_(version_ids)))
    return {version_id: downloads for version_id, downloads in rows}

"""Copying a registry database into another: `vera db copy` moves a team from `vera up`'s SQLite file to PostgreSQL
(or back), every row of every table kept: versions, aliases, tokens, organisations, jobs, the audit log, webhooks.

The target is brought to this release's schema and must hold no row. The source is read in one transaction (one
snapshot, whatever writes meanwhile: stop the registry, or let it read only, for a copy that misses none) and the
target written in one, table after table in the order their foreign keys need, each in key order and in batches;
a failure leaves the target without a row (its schema made: the same copy can run again). The target's id counters
then go on where the source's were (past the copied ids, and past ids the source gave to rows since deleted: an id
never names two rows). Blobs are not in the database: keep VERA_STORAGE_URL, or copy the blob
folder beside the database.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Integer, func, insert, inspect, select, text
from sqlalchemy.engine import Connection

from registry.domain.errors import InvalidInput
from registry.store import models as m
from registry.store.database import Database

#: Rows per insert: few round trips, bounded memory.
BATCH = 1000


def _where(db: Database) -> str:
    return db.engine.url.render_as_string(hide_password=True)


def _check_source(source: Database) -> None:
    current, head = source.current_revision(), source.head_revision()
    if current != head:
        raise InvalidInput(f"The source database {_where(source)} is at schema revision {current or 'none (empty)'}, "
                           f"not this release's {head}: run `vera db upgrade` on it first (back it up before). "
                           "Nothing was copied.")
    unknown = set(inspect(source.engine).get_table_names()) - set(m.Base.metadata.tables) - {"alembic_version"}
    if unknown:
        raise InvalidInput(f"The source database holds tables this release does not know ({', '.join(sorted(unknown))})"
                           "; their rows would be left behind. Nothing was copied.")


def _check_target(source: Database, target: Database) -> None:
    if source.engine.url == target.engine.url:
        raise InvalidInput("The source and the target are the same database; give another target. Nothing was copied.")
    if target.read_only:
        raise InvalidInput(f"The target {_where(target)} is opened read-only; nothing was copied.")
    current = target.current_revision()
    if current is not None and current != target.head_revision():
        raise InvalidInput(f"The target database {_where(target)} is at schema revision {current}, not "
                           f"{target.head_revision()}: copy into an empty database (drop it and create it again). "
                           "Nothing was copied.")
    target.upgrade()
    with target.engine.connect() as conn:
        held = [t.name for t in m.Base.metadata.sorted_tables
                if conn.execute(select(1).select_from(t).limit(1)).first() is not None]
    if held:
        raise InvalidInput(f"The target database {_where(target)} already holds rows ({', '.join(held[:6])}"
                           f"{', ...' if len(held) > 6 else ''}); copy into an empty database, so that nothing of "
                           "either registry is mixed or lost. Nothing was copied.")


def copy_database(source: Database, target: Database, *, progress: Callable[[str, int], None] | None = None
                  ) -> dict[str, int]:
    """Copy every row of ``source`` (at this release's schema) into ``target`` (empty; upgraded to it first); the
    rows copied per table. InvalidInput, with nothing written, for a source not at this release's schema or with
    tables it does not know, and a target that holds rows or another schema."""
    _check_source(source)
    _check_target(source, target)
    copied: dict[str, int] = {}
    snapshot = {"isolation_level": "REPEATABLE READ"} if source.engine.dialect.name == "postgresql" else {}
    with source.engine.connect().execution_options(**snapshot) as reading, target.engine.begin() as writing:
        with reading.begin():
            if source.engine.dialect.name == "sqlite":  # its driver starts no transaction for reads: each SELECT
                reading.exec_driver_sql("BEGIN")        # saw the file as it was then, rows written meanwhile included
            counters = _counters(reading)
            for table in m.Base.metadata.sorted_tables:
                rows = reading.execution_options(yield_per=BATCH).execute(
                    select(table).order_by(*table.primary_key.columns))
                count = 0
                for batch in rows.partitions():
                    writing.execute(insert(table), [dict(row._mapping) for row in batch])
                    count += len(batch)
                copied[table.name] = count
                if progress is not None:
                    progress(table.name, count)
        for table in m.Base.metadata.sorted_tables:  # checked before the target's transaction commits
            landed = writing.execute(select(func.count()).select_from(table)).scalar_one()
            if landed != copied[table.name]:
                raise InvalidInput(f"{table.name}: {copied[table.name]:,} rows read, {landed:,} in the target; "
                                   "nothing was copied.")
        _continue_counters(writing, counters)
    return copied


def _id_keys(dialect: str) -> list[tuple[str, str]]:
    """(table, id column) of the tables whose ids a counter hands out: SQLite's AUTOINCREMENT ones (0028), each
    integer single-column key on PostgreSQL (a serial's sequence)."""
    keys = []
    for table in m.Base.metadata.sorted_tables:
        columns = list(table.primary_key.columns)
        if len(columns) != 1 or not isinstance(columns[0].type, Integer) or columns[0].autoincrement is False:
            continue
        if dialect == "sqlite" and not table.dialect_kwargs.get("sqlite_autoincrement"):
            continue
        keys.append((table.name, columns[0].name))
    return keys


def _counters(conn: Connection) -> dict[str, int]:
    """Each table's highest id handed out so far, deleted rows' included: where the target's counters go on from."""
    if conn.dialect.name == "sqlite":
        return {name: int(seq) for name, seq in conn.execute(text("SELECT name, seq FROM sqlite_sequence"))}
    counters = {}
    for table, column in _id_keys("postgresql"):
        sequence = conn.execute(text("SELECT pg_get_serial_sequence(:table, :column)"),
                                {"table": table, "column": column}).scalar()
        if sequence is not None:
            last, called = conn.execute(text(f"SELECT last_value, is_called FROM {sequence}")).one()
            counters[table] = int(last) if called else int(last) - 1
    return counters


def _continue_counters(conn: Connection, given: dict[str, int]) -> None:
    """Each id counter of the target goes on after the largest id copied and after every id the source had handed out
    (``given``: a row deleted there keeps its id unused here too, as there); rows were inserted with their ids, which
    a PostgreSQL sequence does not see (SQLite's counter does)."""
    for table, column in _id_keys(conn.dialect.name):
        largest = max(conn.execute(text(f'SELECT max("{column}") FROM "{table}"')).scalar() or 0, given.get(table, 0))
        if conn.dialect.name == "sqlite":
            conn.execute(text("DELETE FROM sqlite_sequence WHERE name = :table"), {"table": table})
            if largest:
                conn.execute(text("INSERT INTO sqlite_sequence (name, seq) VALUES (:table, :seq)"),
                             {"table": table, "seq": largest})
            continue
        sequence = conn.execute(text("SELECT pg_get_serial_sequence(:table, :column)"),
                                {"table": table, "column": column}).scalar()
        if sequence is not None:
            conn.execute(text("SELECT setval(CAST(:sequence AS regclass), :value, :called)"),
                         {"sequence": sequence, "value": largest or 1, "called": largest > 0})


#: The audit action `vera db copy` records in the source once the copy is whole (its ``target``: where to).
COPIED = "db-copy"


def mark_copied(source: Database, target: Database, rows: int, *, actor: str) -> None:
    """Record in ``source`` that it was copied into ``target`` (an audit event, ``db-copy``): a source left beside
    the storage its copy now uses, found again by a command without VERA_DATABASE_URL (a cron job, a misspelt
    variable), made `vera gc` delete every blob published on the copy since (an operator's walk, session 43);
    copied_away finds the mark while nothing was written after it."""
    with source.session() as s:
        s.add(m.AuditEvent(actor=actor, action=COPIED, target=_where(target)[:200], detail={"rows": rows}))


def copied_away(db: Database) -> m.AuditEvent | None:
    """The ``db-copy`` event of ``db`` when it is its newest event (it was copied elsewhere, and nothing has been
    published, deleted, moved or otherwise audited here since: the registry most likely runs on the copy), else
    None."""
    with db.session() as s:
        newest = s.scalar(select(m.AuditEvent).order_by(m.AuditEvent.id.desc()).limit(1))
        if newest is None or newest.action != COPIED:
            return None
        s.expunge(newest)
        return newest

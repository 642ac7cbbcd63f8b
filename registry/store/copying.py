"""Copying a registry database into another: `vera db copy` moves a team from `vera up`'s SQLite file to PostgreSQL
(or back), every row of every table kept: versions, aliases, tokens, organisations, jobs, the audit log, webhooks.

The target is brought to this release's schema and must hold no row. The source is read in one transaction (one
snapshot, whatever writes meanwhile: stop the registry, or let it read only, for a copy that misses none) and the
target written in one, table after table in the order their foreign keys need, each in key order and in batches;
a failure leaves the target without a row (its schema made: the same copy can run again). On PostgreSQL the id
sequences then continue after the copied ids. Blobs are not in the database: keep VERA_STORAGE_URL, or copy the blob
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
        if target.engine.dialect.name == "postgresql":
            _continue_sequences(writing)
    return copied


def _continue_sequences(conn: Connection) -> None:
    """PostgreSQL: each table's id sequence goes on after the largest id copied (rows were inserted with their
    ids, which a sequence does not see)."""
    for table in m.Base.metadata.sorted_tables:
        keys = list(table.primary_key.columns)
        if len(keys) != 1 or not isinstance(keys[0].type, Integer) or keys[0].autoincrement is False:
            continue
        sequence = conn.execute(text("SELECT pg_get_serial_sequence(:table, :column)"),
                                {"table": table.name, "column": keys[0].name}).scalar()
        if sequence is None:
            continue
        largest = conn.execute(select(func.max(keys[0])).select_from(table)).scalar()
        conn.execute(text("SELECT setval(CAST(:sequence AS regclass), :value, :called)"),
                     {"sequence": sequence, "value": largest or 1, "called": largest is not None})

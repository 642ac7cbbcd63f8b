"""SQLite never hands an id out twice (as PostgreSQL's sequences never do): every table whose rows are named by an
integer id is made AUTOINCREMENT. Without it SQLite gives a new row the highest id in use plus one, so the id of a
deleted row that had the highest one came back: a webhook deleted and made again to the same receiver was sent
deliveries numbered from 1 again (its receiver, dropping the `X-Vera-Delivery` ids it had seen, dropped them), and a
job whose result version was deleted named the next version published anywhere as its result.

SQLite sets AUTOINCREMENT only when a table is created, so each such table is made again with its rows: together with
the tables whose foreign keys point into it (a table dropped while the registry's foreign keys are on deletes the
rows that cascade from it, so those are kept aside and made again too), children dropped first, parents made first.
Each table is made from what the database holds (reflected: columns, keys, indexes, as earlier migrations left
them). Where rows still name ids that are gone (a job's result version, a token's parent: columns with no foreign
key), the table's counter starts past them, so that those ids are never given to a new row either. Nothing changes
on PostgreSQL. The downgrade makes the tables again without AUTOINCREMENT (every row kept).

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-05 11:00:00
"""

from __future__ import annotations

import warnings

import sqlalchemy as sa
from alembic import op

from registry.domain.errors import IntegrityError

revision = "0028"
down_revision = "0027"
branch_labels = None
depends_on = None

#: The tables whose rows have an integer id of their own (registry.store.models: ``sqlite_autoincrement``).
ID_TABLES = ("base_models", "projections", "adapters", "adapter_moves", "adapter_versions", "aliases",
             "access_tokens", "organizations", "jobs", "job_events", "hub_syncs", "audit_events", "webhooks",
             "webhook_deliveries", "webhook_attempts")

#: Every table of the registry at 0027 (a table besides these is an operator's own).
REGISTRY_TABLES = frozenset({
    "access_tokens", "adapter_cards", "adapter_moves", "adapter_versions", "adapters", "aliases", "audit_events",
    "base_models", "blobs", "hub_syncs", "job_checkpoint_files", "job_checkpoints", "job_events", "jobs",
    "memberships", "org_invitations", "organizations", "owner_quotas", "projections", "protected_aliases",
    "version_counters", "version_downloads", "version_evaluations", "version_files", "version_metrics",
    "version_properties", "version_tags", "webhook_attempts", "webhook_cursors", "webhook_deliveries", "webhooks"})

#: Columns that name another table's id with no foreign key (a row named there may be gone): table -> columns.
NAMED_BY = {"adapter_versions": (("jobs", "result_version_id"), ("adapter_versions", "parent_version_id")),
            "access_tokens": (("access_tokens", "parent_id"),),
            "jobs": (("adapter_versions", "source_job_id"),),
            "audit_events": (("webhook_deliveries", "event_id"), ("webhooks", "after_event_id"),
                             ("webhook_cursors", "last_event_id"))}


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _remake(autoincrement=True)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _remake(autoincrement=False)


def _remake(*, autoincrement: bool) -> None:
    conn = op.get_bind()
    metadata = sa.MetaData()
    with warnings.catch_warnings():  # an index reflection cannot read is refused by _check_schema, saying which
        warnings.simplefilter("ignore", sa.exc.SAWarning)
        metadata.reflect(conn)
    order = _remade(metadata)
    _check_schema(conn, order)
    _check_references(conn, order)
    shapes = {table.name: _shape(conn, table.name) for table in order}
    highest = {name: _highest(conn, name) for name in ID_TABLES}
    for table in order:
        conn.execute(sa.text(f'CREATE TABLE "_keep_{table.name}" AS SELECT * FROM "{table.name}"'))
    for table in reversed(order):
        table.drop(conn)
    for table in order:
        table.dialect_kwargs["sqlite_autoincrement"] = autoincrement and table.name in ID_TABLES
        table.create(conn)
        columns = ", ".join(f'"{c.name}"' for c in table.columns)
        conn.execute(sa.text(f'INSERT INTO "{table.name}" ({columns}) SELECT {columns} FROM "_keep_{table.name}"'))
        conn.execute(sa.text(f'DROP TABLE "_keep_{table.name}"'))
    changed = [table.name for table in order if _shape(conn, table.name) != shapes[table.name]]
    if changed:  # rolled back with the whole upgrade
        raise IntegrityError(f"Migration 0028 changed nothing: {', '.join(changed)} would not have been made again "
                             "as they are (columns, indexes or foreign keys). Please report it with `vera db "
                             "status` and the output of `.schema` for those tables.")
    if autoincrement:  # the counters: past every id in use, and every id a row still names
        for name, value in highest.items():
            conn.execute(sa.text("DELETE FROM sqlite_sequence WHERE name = :name"), {"name": name})
            if value:
                conn.execute(sa.text("INSERT INTO sqlite_sequence (name, seq) VALUES (:name, :seq)"),
                             {"name": name, "seq": value})


def _remade(metadata: sa.MetaData) -> list[sa.Table]:
    """ID_TABLES and every table whose foreign keys point into one remade (transitively), parents first."""
    remade = set(ID_TABLES)
    while more := {t.name for t in metadata.tables.values()
                   if any(fk.column.table.name in remade for fk in t.foreign_keys)} - remade:
        remade |= more
    return [t for t in metadata.sorted_tables if t.name in remade]


def _check_schema(conn: sa.Connection, order: list[sa.Table]) -> None:
    """Refuse, before anything changes, what making a table again from its reflection would lose: a table of the
    operator's with foreign keys into the registry's, a trigger, an index reflection cannot read (on an expression),
    a collation, a generated or untyped column (none is the registry's)."""
    names = [table.name for table in order]
    reflected = {index.name for table in order for index in table.indexes}
    problems = [f"table {name} is not the registry's" for name in names if name not in REGISTRY_TABLES]
    for kind, name, table, sql in conn.execute(sa.text(
            "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE tbl_name IN :names ORDER BY name").bindparams(
            sa.bindparam("names", expanding=True)), {"names": names}):
        if kind == "trigger" or (kind == "index" and sql is not None and name not in reflected):
            problems.append(f"{kind} {name} on {table}")
        elif kind == "table" and "COLLATE" in sql.upper():
            problems.append(f"a collation in table {name}")
    for name in names:
        for column in conn.execute(sa.text(f'PRAGMA table_xinfo("{name}")')).mappings():
            if column["hidden"] or not column["type"]:
                problems.append(f"column {name}.{column['name']} (generated, hidden or without a type)")
    if problems:
        raise IntegrityError(
            f"Migration 0028 stopped before changing anything: it makes tables {', '.join(names)} again (SQLite sets "
            f"AUTOINCREMENT only then), and would lose what was added to them besides the registry's schema: "
            f"{'; '.join(problems)}. Keep their definitions, drop them, run `vera db upgrade`, then make them again.")


def _shape(conn: sa.Connection, name: str) -> list[list[tuple[object, ...]]]:
    """A table's columns, indexes (with their columns, collations and where they are partial) and foreign keys, as
    SQLite reports them."""
    indexes = [tuple(row) for row in conn.execute(sa.text(f'PRAGMA index_list("{name}")'))]
    return [[tuple(row) for row in conn.execute(sa.text(f'PRAGMA table_xinfo("{name}")'))],
            sorted((row[1:] for row in indexes), key=str),
            sorted((tuple(row) for index in indexes if not str(index[1]).startswith("sqlite_autoindex")
                    for row in conn.execute(sa.text(f'PRAGMA index_xinfo("{index[1]}")'))), key=str),
            sorted((tuple(row[2:]) for row in conn.execute(sa.text(f'PRAGMA foreign_key_list("{name}")'))), key=str)]


def _check_references(conn: sa.Connection, order: list[sa.Table]) -> None:
    """Refuse, before anything changes, rows naming rows that do not exist (written with foreign keys off): their
    copy would fail midway."""
    for table in order:
        broken = conn.execute(sa.text(f'PRAGMA foreign_key_check("{table.name}")')).all()
        if broken:
            raise IntegrityError(
                f"Migration 0028 stopped before changing anything: {len(broken)} row(s) of {table.name} name rows of "
                f"{', '.join(sorted({row[2] for row in broken}))} that do not exist (rowid {broken[0][1]} first), "
                "written while SQLite's foreign keys were off. `PRAGMA foreign_key_check` lists them; delete them "
                "or restore the rows they name, then run `vera db upgrade` again.")


def _highest(conn: sa.Connection, name: str) -> int:
    """The highest id of ``name`` in use or named by a row elsewhere (0: none)."""
    found = [conn.execute(sa.text(f'SELECT max(id) FROM "{name}"')).scalar()]
    for table, column in NAMED_BY.get(name, ()):
        found.append(conn.execute(sa.text(f'SELECT max("{column}") FROM "{table}"')).scalar())
    return max((int(value) for value in found if value is not None), default=0)

"""Administration, run on the registry's machine against its database and storage: db upgrade / downgrade /
status, fsck, gc, token create / revoke / list, base register, worker and serve."""

from __future__ import annotations

import contextlib
import difflib
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from registry.cli.common import (
    DatabaseUrl,
    LogLevel,
    ReadOnlyMode,
    RegistryUrl,
    StorageUrl,
    Token,
    call_registry,
    check_failed,
    console,
    err_console,
    fail,
    load_settings,
    read_json_object,
    start_logging,
    styled,
)
from registry.cli.output import JsonOutput, print_json
from registry.cli.run import run_api
from registry.domain.errors import InvalidInput, ReadOnly, damaged_sqlite
from registry.domain.schemas import GC_GRACE_S
from registry.domain.words import counted

if TYPE_CHECKING:
    from registry.services.registry import Registry
    from registry.services.retention import RetentionResult
    from registry.settings import Settings
    from registry.store.database import Database

# The store, the services and torch are imported by the commands that use them, so that every `vera` command starts
# without them (`vera ls` needs none).


def operator() -> str:
    """Who runs a command on the registry's machine, for the audit log: ``operator (USER)``, the machine's user (the
    events of tokens minted there named only "operator", not who minted an administrator's token: a team admin's
    walk, session 34)."""
    import pwd

    from registry.services.tokens import OPERATOR

    try:  # the account of the process, not LOGNAME (which any caller sets to anything: a re-check's finding)
        user = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # no passwd entry (a container's uid)
        return OPERATOR
    user = re.sub(r"[^A-Za-z0-9._-]", "?", user)[:64 - len(OPERATOR) - 3]
    return f"{OPERATOR} ({user})"


def open_registry(settings: Settings) -> Registry:
    from registry.bootstrap import open_registry as open_configured

    return open_configured(settings)


def _database(database_url: str | None, *, writes: str = "", reads: str = "") -> Database:
    """The registry's database; ``writes``: the command, refused on a read-only machine; ``reads``: the command,
    refused where there is no database yet (existing)."""
    from registry.store.database import Database

    settings = load_settings(database_url)
    if writes:
        refuse_read_only(settings, writes)
    if reads:
        existing(settings, reads)
    return Database(settings.resolved_database_url)


def existing(settings: Settings, command: str) -> Settings:
    """``settings``, unless their database is a SQLite file that does not exist: then one line saying so. Opening it
    would make an empty registry there, which `vera fsck` found whole, `vera db status` current and `vera db backup`
    backed up, for a mistyped VERA_DATA_DIR (an operator's walk, session 43)."""
    path = missing_file(settings)
    where = "VERA_DATA_DIR's registry.db" if settings.database_url is None else "VERA_DATABASE_URL or --database-url"
    if path is not None:
        fail(InvalidInput(f"There is no registry database at {path} ({where}): `vera {command}` works on an existing "
                          "registry, and nothing was made there. Check the path (or give the database with "
                          "--database-url); `vera up` or `vera db upgrade` makes a new registry."))
    path = unversioned_file(settings)
    if path is not None:  # an empty or foreign file: opened, it was given the schema and found whole (a re-check)
        fail(InvalidInput(f"{path} ({where}) holds no registry (no schema revision: an empty file, or another "
                          f"program's database): `vera {command}` works on an existing registry, and nothing was "
                          "changed there. Check the path; `vera db upgrade` makes a new registry in it."))
    return settings


def unversioned_file(settings: Settings) -> Path | None:
    """The SQLite file the settings name when it holds no schema revision (empty, or not a registry's), read
    without writing to it; None otherwise (a registry's, missing, damaged: said when opened, or not SQLite)."""
    import sqlite3

    path = _sqlite_file(settings)
    if path is None or not path.is_file():
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as conn:
            found = conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'alembic_version'").fetchone()
    except sqlite3.Error:
        return None
    return path if found == (0,) else None


def _sqlite_file(settings: Settings) -> Path | None:
    """The SQLite file the settings name; None for another database (or SQLite in memory)."""
    from sqlalchemy.engine import make_url

    url = make_url(settings.resolved_database_url)
    path = url.database or ""
    if url.get_backend_name() != "sqlite" or path in ("", ":memory:") or path.startswith("file:"):
        return None
    return Path(path)


def missing_file(settings: Settings) -> Path | None:
    """The SQLite file the settings name when it does not exist (opening it would make it); None otherwise (it
    exists, or the database is not a SQLite file)."""
    path = _sqlite_file(settings)
    return path if path is not None and not path.is_file() else None


def refuse_read_only(settings: Settings, command: str, does: str = "writes to the registry") -> Settings:
    """``settings``, unless they make this machine a read-only one (VERA_READ_ONLY) and ``command`` writes to the
    registry: then one line saying so, before anything is opened."""
    if settings.read_only:
        fail(ReadOnly(f"VERA_READ_ONLY is set, and `vera {command}` {does}: run it where VERA_READ_ONLY is not set, "
                      "against the primary registry's database and storage."))
    return settings


def db_upgrade(database_url: DatabaseUrl = None, revision: str = "head") -> None:
    """Create or upgrade the registry schema (Alembic)."""
    db = _database(database_url, writes="db upgrade")
    db.check_not_ahead()
    db.upgrade(revision)
    console.print(f"database at revision {db.current_revision()}")


def db_downgrade(revision: Annotated[str, typer.Argument(help="Target revision, e.g. base.")],
                 yes: Annotated[bool, typer.Option("--yes", help="Do not ask: drop what later revisions added.")
                                ] = False,
                 database_url: DatabaseUrl = None) -> None:
    """Downgrade the registry schema (destructive: drops what later revisions added, with their rows)."""
    db = _database(database_url, writes="db downgrade")
    where = db.engine.url.render_as_string(hide_password=True)
    if revision != "base" and not db.knows(revision):
        raise InvalidInput(f"No schema revision {revision!r}: give base, or one of 0001 to {db.head_revision()} "
                           "(`vera db status` shows the current one).")
    if not yes and not typer.confirm(f"Downgrade {where} from {db.current_revision()} to {revision}, dropping the "
                                     "tables and columns of every later revision with what they hold?"):
        raise InvalidInput(f"Not downgraded: {where} is as it was. Pass --yes to downgrade without asking.")
    db.downgrade(revision)
    console.print(f"database at revision {db.current_revision() or 'base (empty)'}")


def db_backup(destination: Annotated[Path, typer.Argument(help="A new file, e.g. backup/registry.db.")],
              database_url: DatabaseUrl = None) -> None:
    """Copy a SQLite registry database to a new file while the registry runs (SQLite's online backup); then copy
    the blob folder. PostgreSQL: use pg_dump."""
    settings = load_settings(database_url)
    db = _database(database_url, reads="db backup")
    try:
        db.backup(destination)
        revision = db.current_revision()
    finally:
        db.close()
    console.print(f"backed up the database (revision {revision}) to {destination}; now copy the blobs, e.g. "
                  f"`rsync -a {settings.resolved_storage_url}/ BACKUP/blobs/` (and no `vera gc` before that)")


def db_copy(target: Annotated[str, typer.Argument(help="The database to copy into, empty: e.g. "
                                                "postgresql+psycopg://vera@db.example/vera.")],
            database_url: DatabaseUrl = None) -> None:
    """Copy every row of the registry database (default: VERA_DATABASE_URL, else `vera up`'s SQLite file) into an
    empty one, e.g. from SQLite to PostgreSQL; blobs stay where they are. Stop the registry first (or run it with
    VERA_READ_ONLY=true): what it writes during the copy is not copied."""
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    from registry.logs import first_line, masked_url
    from registry.store.copying import copy_database, mark_copied
    from registry.store.database import Database

    settings = existing(load_settings(database_url), "db copy")
    source_file = _sqlite_file(settings)
    wal = source_file.with_name(f"{source_file.name}-wal") if source_file is not None else None
    if wal is not None and wal.is_file() and wal.stat().st_size:
        # a registry (or a worker) has the file open: what it writes after the copy's snapshot is not copied (it
        # went on unsaid: an operator's walk, session 43)
        err_console.print(styled("warning:", "yellow", f" {wal} is not empty: a registry or worker may be running on "
                                 "this database. What it writes after the copy's snapshot is not copied: stop it "
                                 "first (or start it with VERA_READ_ONLY=true), then copy again into an empty "
                                 "database."), soft_wrap=True)
    shown = masked_url(target)
    if not target.startswith(("sqlite", "postgresql")):
        fail(InvalidInput(f"The target {shown!r} is not a database this release opens; give e.g. "
                          "postgresql+psycopg://USER:PASSWORD@HOST/DB or sqlite:////path/registry.db."))
    try:
        destination = Database(target)
        with destination.engine.connect():
            pass
    except (ArgumentError, ImportError, SQLAlchemyError) as exc:
        fail(InvalidInput(f"The target {shown!r} cannot be opened ({first_line(exc)}); check its URL, and that the "
                          "database exists (PostgreSQL: createdb) and takes this user. Nothing was copied."))
    source = _database(database_url)
    marked = True
    try:
        copied = copy_database(source, destination, progress=lambda table, rows: console.print(
            f"  {table}: {rows:,} rows"))
        try:  # a SQLite source only: commands without VERA_DATABASE_URL find VERA_DATA_DIR's file again, and
            # a copy out of PostgreSQL is a backup or an export more often than a move
            marked = source.engine.dialect.name == "sqlite"
            if marked:
                mark_copied(source, destination, sum(copied.values()), actor=operator())
        except SQLAlchemyError as exc:  # a source opened read-only, or on a read-only file: the copy stands
            marked = False
            err_console.print(styled("warning:", "yellow", f" the source could not be marked as copied "
                                     f"({first_line(exc)}): move it aside before anything runs `vera gc` on it."),
                              soft_wrap=True)
    finally:
        source.close()
        destination.close()
    where = destination.engine.url.render_as_string(hide_password=True)
    console.print(f"copied {sum(copied.values()):,} rows of {len(copied)} tables into {where} (revision "
                  f"{source.head_revision()}); serve it with VERA_DATABASE_URL=<that URL> and the same "
                  "VERA_STORAGE_URL (or a copy of the blob folder), then `vera fsck`."
                  + (" The source is marked as copied: until something is written to it again, `vera gc` and "
                     "`vera fsck --repair` on it refuse to delete the files published on the copy, and `vera up` "
                     "on it warns; move it aside all the same (e.g. `mv registry.db registry.db.copied`)."
                     if marked else ""), soft_wrap=True)


def db_status(database_url: DatabaseUrl = None) -> None:
    """Show the schema revision, and whether it is current."""
    from registry.store.database import head_revision

    settings = load_settings(database_url)
    absent = missing_file(settings)
    if absent is not None:  # said without making the file (a mistyped VERA_DATA_DIR got an empty registry there)
        console.print(f"current: none (there is no database file at {absent}); head: {head_revision()}; check the "
                      "path, or run `vera db upgrade` (or `vera up`) to make a new registry there")
        check_failed()
    if (unversioned := unversioned_file(settings)) is not None:  # read without writing: opened, an empty file was
        # given SQLite's header and journal mode (a docs audit's finding, session 52: 0 bytes became 4,096)
        console.print(f"current: none ({unversioned} holds no registry: an empty file, or another program's; nothing "
                      f"was written to it); head: {head_revision()}; check the path, or run `vera db upgrade` to make "
                      "a registry in it")
        check_failed()
    from sqlalchemy.exc import DatabaseError

    from registry.logs import first_line

    db = _database(database_url)
    head = db.head_revision()
    try:
        current = db.current_revision()
    except DatabaseError as exc:  # not even its revision reads: a check that found a problem (3), not a failure (1)
        if not damaged_sqlite(exc):
            raise
        console.print(f"current: unreadable; head: {head}; the file is damaged ({first_line(exc)}): restore the "
                      "newest good backup (docs/guide.md, \"Back up and upgrade the registry\")")
        check_failed()
    if current is not None and not db.knows(current):
        state = "newer than this release: run the release that upgraded it"
    else:
        state = "up to date" if current == head else "run `vera db upgrade`"
    # a SQLite file whose revision reads but whose pages do not was "up to date" (an operator's walk, session 43)
    if damaged := db.integrity_problems():
        state = (f"but the file is damaged (SQLite's quick_check: {'; '.join(damaged[:3])[:300]}): restore the "
                 "newest good backup (docs/guide.md, \"Back up and upgrade the registry\"); `vera fsck` says what "
                 "else it finds")
    console.print(f"current: {current or 'none (empty)'}; head: {head}; {state}")
    if current != head or damaged:
        check_failed()


#: What each count of `vera fsck` is (registry.services.verification's report).
FSCK_FINDINGS = {
    "missing": "files the database names that storage lacks",
    "corrupted": "stored files whose bytes no longer match their SHA-256",
    "orphans": "stored files no record names",
    "database": "problems the database's own integrity check found",
    "deep_json": "JSON values stored nested past 64 levels",
    "partial_blobs": "pieces left by publishes that were killed",
    "stale_uploads": "upload scratch files of requests that died",
}


def fsck(
    repair: Annotated[bool, typer.Option(
        help="Delete orphan (older than --grace-s) and corrupted blobs; mark affected versions failed; cut JSON "
        "stored nested past 64 levels (before the registry refused it), which replies cannot carry.")] = False,
    grace_s: Annotated[float, typer.Option(min=0, help="--repair leaves orphans younger than this many seconds (a "
                                           "publish in progress writes its bytes before it commits).")
                       ] = GC_GRACE_S,
    force: Annotated[bool, typer.Option(help="--repair even when the database looks like another registry's (it "
                                        "knows none, or under half, of the stored files).")] = False,
    database_url: DatabaseUrl = None, storage_url: StorageUrl = None,
) -> None:
    """Report (and repair) disagreement between the database and blob storage."""
    settings = load_settings(database_url, storage_url)
    settings = existing(refuse_read_only(settings, "fsck --repair") if repair else settings, "fsck")
    registry = open_registry(settings)
    done: list[str] = []
    report = registry.fsck(repair=repair, force=force, grace_s=grace_s, said=done.append)
    for kind, digests in report.items():  # each count said in words ("deep_json: 0" said nothing: session 40)
        console.print(f"{kind}: {len(digests)}" + (f" ({FSCK_FINDINGS[kind]})" if kind in FSCK_FINDINGS else "")
                      + "".join(f"\n  {d}" for d in digests))
    if not any(report.values()):
        console.print("database and storage agree: nothing to repair")
    for line in done:  # what --repair did (it said nothing: an operator's walk, session 43)
        console.print(f"repaired: {line}", soft_wrap=True)
    if repair and report["database"]:  # nothing --repair mends: a script's `fsck --repair && vera up` must stop
        err_console.print(styled("error:", "red", " the database file itself is damaged, which --repair does not "
                                 "mend: stop the registry and restore a backup (docs/deployment.md, Restoring)."),
                          soft_wrap=True)
        check_failed()
    if any(report.values()) and not repair:
        check_failed()


def gc(
    keep_last: Annotated[int | None, typer.Option(help="Retention: keep the newest N versions of each adapter.")
                         ] = None,
    keep_days: Annotated[float | None, typer.Option(help="Retention: keep versions published in the last D days.")
                         ] = None,
    dry_run: Annotated[bool, typer.Option(help="List the versions retention would delete; delete nothing.")] = False,
    grace_s: Annotated[float, typer.Option(min=0, help="Leave unreferenced files younger than this many seconds "
                                           "(a publish in progress writes its bytes before it commits).")
                       ] = GC_GRACE_S,
    force: Annotated[bool, typer.Option(help="Collect even when the database looks like another registry's (it "
                                        "knows none, or under half, of the stored files): refused otherwise, since "
                                        "the wrong database would delete everything.")] = False,
    database_url: DatabaseUrl = None, storage_url: StorageUrl = None,
) -> None:
    """Delete blobs and projections that no version references. With --keep-last and/or --keep-days, first delete
    the versions that neither rule keeps (never one that an alias other than latest points at), each audited; and
    the versions that their adapter's own retention rule does not keep (`vera retention`), as the API does hourly."""
    from registry.services.retention import RetentionRule
    from registry.services.verification import refuse_if_copied_away

    rule = RetentionRule(keep_last, keep_days) if keep_last is not None or keep_days is not None else None
    settings = load_settings(database_url, storage_url)
    registry = open_registry(existing(settings if dry_run else refuse_read_only(settings, "gc"), "gc"))
    if not (dry_run or force):  # before retention: its deletes would hide the mark
        refuse_if_copied_away(registry.db, "vera gc")
    if rule is not None:
        _print_retention(registry.apply_retention(rule, dry_run=dry_run))
    if settings.retention_rules:
        own = registry.apply_retention_rules(dry_run=dry_run)  # what the API's housekeeping does hourly, now
        if own.deleted or own.protected or own.skipped:
            _print_retention(own, "adapters' own retention rules")
    else:
        console.print("adapters' own retention rules: not applied (VERA_RETENTION_RULES=false)")
    if dry_run:
        console.print("dry run: nothing deleted (blobs are collected only by a real run)")
        return
    result = registry.gc(grace_s=grace_s, force=force)
    console.print(f"removed {result['blobs_removed']} unreferenced blob records, {result['files_removed']} stored "
                  f"files no record names and {result['leftovers_removed']} leftovers of killed publishes; kept "
                  f"{result['recent_files_kept']} unreferenced files younger than {grace_s:g} s (a later run takes "
                  "them)")


def _print_retention(result: RetentionResult, whose: str = "retention") -> None:
    verb = "would delete" if result.dry_run else "deleted"
    for version in result.deleted:
        console.print(f"{verb} {version.ref} (published {version.created_at:%Y-%m-%d %H:%M})")
    for ref, aliases in result.protected.items():
        console.print(f"kept {ref}: alias {', '.join(aliases)} points at it")
    for ref, why in result.skipped.items():
        console.print(f"skipped {ref}: {why}")
    console.print(f"{whose}: {verb} {counted(len(result.deleted), 'version')}, kept {len(result.protected)} for "
                  "their aliases")


def token_create(
    owner: Annotated[str, typer.Option(help="Owner namespace the token acts for.")],
    scope: Annotated[list[str], typer.Option(help="read, publish, hub (may use the server's VERA_HUB_TOKEN) or admin; "
                                             "repeat for several.")],
    name: Annotated[str, typer.Option(help="A label.")] = "",
    expires_days: Annotated[float | None, typer.Option(
        help="Days until the token stops working (default: never, or VERA_MAX_TOKEN_DAYS where it is set).")] = None,
    limit_to: Annotated[list[str] | None, typer.Option(help="Only these owner namespaces (private reads and "
                                                            "writes); repeat for several.")] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Create a token; the secret is printed once and only its hash is stored.

    On the registry's machine, for any --owner, with no server or token needed (the way to the first admin token).
    To make one of your own from any machine, through the registry: `vera auth create-token`."""
    from registry.domain.schemas import expiry_in
    from registry.services.tokens import create_token, within_max_life

    settings = refuse_read_only(load_settings(database_url), "token create")
    try:
        expires_at = within_max_life(expiry_in(expires_days), settings.max_token_days)
    except InvalidInput as exc:
        fail(exc)
    new = settings.database_url is None and not settings.embedded_database.exists()
    registry = open_registry(settings)
    token_id, secret = create_token(registry.db, owner=owner, scopes=scope, name=name, expires_at=expires_at,
                                    limited_to=limit_to, actor=operator())
    console.print(f"token {token_id} for {owner} {sorted(set(scope))}"
                  + (f", expires {expires_at:%Y-%m-%d %H:%M} UTC" if expires_at is not None else "") + ":")
    print(secret)
    # which registry holds it: a shell without the server's VERA_DATA_DIR made a token in a new, empty one, which
    # the server then called unknown (a newcomer's walk, session 38)
    where = registry.db.engine.url.render_as_string(hide_password=True)
    err_console.print(styled("warning:" if new else "note:", "yellow", f" the token is in {where}" + (
        ", a registry database made just now: a server that runs on another (its VERA_DATA_DIR or "
        "VERA_DATABASE_URL) does not know it; set those as the server has them and create it again." if new else
        ".")), soft_wrap=True)


def token_revoke(token_id: Annotated[int | None, typer.Argument(help="Token id.")] = None,
                 owner: Annotated[str | None, typer.Option(help="Revoke every live token of this user instead "
                                                           "(signed out everywhere).")] = None,
                 database_url: DatabaseUrl = None) -> None:
    """Revoke a token, and the tokens made from it through the API (its dashboard sign-ins, the tokens `vera auth
    create-token` made with it); or, with --owner, every token of a user."""
    from registry.services.tokens import list_tokens, revoke_all, revoke_token

    if (token_id is None) == (owner is None):
        fail(InvalidInput("Give a token id (`vera token list` shows them) or --owner USER, not both and not neither."))
    db = open_registry(existing(refuse_read_only(load_settings(database_url), "token revoke"), "token revoke")).db
    if owner is not None:
        revoked = revoke_all(db, owner, actor=operator())
        if not revoked and owner not in (users := {t.owner for t in list_tokens(db)}):  # a misspelt user's name
            # was "none was live", exit 0: the real user kept every token (an operator's walk, session 48)
            if _is_organisation(db, owner):  # (it was offered a user's name: a re-check's finding)
                fail(InvalidInput(f"{owner} is an organisation: tokens are its members', each their own; nothing was "
                                  f"revoked. `vera org show {owner}` lists its members."))
            close = difflib.get_close_matches(owner, sorted(users), n=3)
            fail(InvalidInput(f"No token was ever made for {owner!r} here: nothing was revoked. "
                              + (f"Did you mean {' or '.join(close)}? " if close else "")
                              + "`vera token list` lists every token with its user."))
        console.print(f"revoked every token of {owner}: " + (f"ids {', '.join(map(str, revoked))}" if revoked
                                                             else "none was live"))
        return
    assert token_id is not None  # one of the two, checked above
    made = [t for t in revoke_token(db, token_id, actor=operator()) if t != token_id]
    console.print(f"revoked token {token_id}" + (f" and {len(made)} made from it (ids {', '.join(map(str, made))})"
                                                 if made else ""))


def _is_organisation(db: Database, name: str) -> bool:
    from sqlalchemy import select

    from registry.store import models as m

    with db.session() as s:
        return s.scalar(select(m.Organization.id).where(m.Organization.name == name)) is not None


def token_list(database_url: DatabaseUrl = None, as_json: JsonOutput = False) -> None:
    """List tokens (never their secrets)."""
    from registry.cli.access import token_table
    from registry.services.tokens import list_tokens

    tokens = list_tokens(open_registry(existing(load_settings(database_url), "token list")).db)
    if as_json:
        print_json(tokens)
        return
    console.print(token_table(tokens))


def token_purge(
    days: Annotated[float, typer.Option(help="Purge the tokens that ended (were revoked or expired) more than this "
                                             "many days ago.", min=0)] = 30,
    owner: Annotated[str | None, typer.Option(help="Only this user's tokens.")] = None,
    dry_run: Annotated[bool, typer.Option(help="List the tokens it would delete; delete nothing.")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Delete the tokens that ended long ago (revoked or expired: they authenticate nothing, and each browser that
    remembers a dashboard sign-in adds one a week). Their audit events stay; the purge is audited (`token-purge`).
    The API does it hourly on its own after VERA_TOKEN_PURGE_DAYS (30); a trusted publisher's token stays a day."""
    from registry.services.tokens import purge_tokens

    settings = load_settings(database_url)
    db = open_registry(existing(settings if dry_run else refuse_read_only(settings, "token purge"), "token purge")).db
    before = datetime.now(UTC) - timedelta(days=days)
    gone = purge_tokens(db, before=before, owner=owner, dry_run=dry_run, actor=operator())
    verb = "would delete" if dry_run else "deleted"
    for t in gone:
        ended = "revoked" if t.revoked else f"expired {t.expires_at:%Y-%m-%d}"
        console.print(f"{verb} token {t.id} of {t.owner}" + (f" ({t.name})" if t.name else "") + f": {ended}")
    console.print(f"{verb} {counted(len(gone), 'token')} that ended before {before:%Y-%m-%d %H:%M} UTC")


def base_register(
    name: Annotated[str, typer.Argument(help="The base model's name as adapters are published with it.")],
    config: Annotated[Path, typer.Option(help="Its transformers config.json (no weights needed).")],
    revision: Annotated[str, typer.Option(help="Base model revision.")] = "",
    database_url: DatabaseUrl = None, storage_url: StorageUrl = None,
    registry_url: RegistryUrl = None, token: Token = None,
) -> None:
    """Declare a base model's exact layer shapes: publishes are then checked against them, seed-only adapters PEFT
    wrote can be published, and adapters that do not record their layer sizes can be exported as LoRA. Over HTTP
    (publish scope) unless a database URL is given (then on the registry's machine)."""
    if database_url is None:
        body = read_json_object(config, "--config")
        known = call_registry(registry_url, token, lambda c: c.base_models())
        before = {b.revision: b.shapes_source for b in known if b.name == name}
        info = call_registry(registry_url, token, lambda c: c.register_base_model(name, body, revision=revision))
    else:
        registry = open_registry(existing(refuse_read_only(load_settings(database_url, storage_url), "base register"),
                                          "base register"))
        before = {b.revision: b.shapes_source for b in registry.list_base_models() if b.name == name}
        info = registry.register_base_model_from_config(name=name, revision=revision, config_path=str(config))
    was = before.get(revision)
    how = {None: "new", "implied": "upgraded from the shapes its published adapters implied, which agree"}.get(
        was, "already declared with these shapes")
    console.print(f"registered {info.name}@{info.revision or 'default'}: {info.layers} layers, {info.shapes_source} "
                  f"({how})")
    for other, source in sorted(before.items()):
        if other != revision and source == "implied":
            flag = f"--revision {other}" if other else "no --revision"
            console.print(f"note: {name}@{other or 'default'} (another revision) stays implied; declare it with "
                          f"{flag}.")


def worker(
    poll: Annotated[float, typer.Option(help="Seconds between polls when the queue is empty.")] = 2.0,
    heartbeat: Annotated[float, typer.Option(help="Seconds between heartbeats while a job runs.")] = 5.0,
    once: Annotated[bool, typer.Option(help="Run at most one job, then exit.")] = False,
    database_url: DatabaseUrl = None, storage_url: StorageUrl = None, log_level: LogLevel = None,
    device: Annotated[str, typer.Option(help="The devices it owns: cpu, cuda:N, a list (cuda:0,cuda:1) or cuda:all. "
                                        "It claims jobs asking for up to as many GPUs as it owns (a CPU worker: "
                                        "none); a job with --gpus k > 1 trains in k processes, one per GPU.")
                      ] = "cpu",
    nproc: Annotated[int, typer.Option(min=1, max=64, help="CPU workers: train each job in up to this many "
                                       "processes (torchrun, gloo), sharing its batch.")] = 1,
    status_port: Annotated[int | None, typer.Option(min=0, max=65535, help="Serve GET /health (503 when stuck) and "
                                                    "GET /metrics (Prometheus) on this port; 0: any free port (the "
                                                    "log says which). Off when left out.")] = None,
    status_host: Annotated[str, typer.Option(help="The status server's bind address.")] = "127.0.0.1",
) -> None:
    """Claim and run fine-tune jobs from the registry database (several workers may share it), one at a time. The
    first SIGTERM (or Ctrl-C) drains: no new job, exit once the current one is done; the second gives the current
    job back to the queue after its training step, for another worker. On a machine with several GPUs, run one
    worker per GPU (--device cuda:0, --device cuda:1, ...), or per set of GPUs for jobs that need several
    (--device cuda:0,cuda:1); docs/jobs.md says how."""
    import signal

    settings = refuse_read_only(load_settings(database_url, storage_url), "worker",
                                "claims jobs and publishes the adapters they train")
    settings = start_logging(settings, log_level)  # before the HF libraries load

    from registry.bootstrap import job_queue
    from registry.worker import Worker, check_heartbeat, checked_worker_devices

    checked_worker_devices(device, nproc)  # devices this machine lacks are refused before the registry is opened
    check_heartbeat(heartbeat, settings.job_lease_s)

    runner = Worker(job_queue(open_registry(settings), settings), poll_s=poll, heartbeat_s=heartbeat, device=device,
                    nproc=nproc, state_dir=settings.data_dir / "worker")  # job folders: a lost attempt resumes
    if status_port is not None:
        from registry.worker_status import serve_status

        server = serve_status(runner.status, status_host, status_port)
        runner.log(f"worker {runner.name}: status on http://{status_host}:{server.server_port}/health and /metrics")

    def on_signal(signum: int, _frame: object) -> None:
        if runner.draining.is_set():
            runner.log("stopping: the current job goes back to the queue after its step")
            runner.release()
        else:
            runner.log("draining: no new jobs; exiting when the current one is done (signal again to let it go)")
            runner.drain()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    try:
        if once:
            runner.run_once()
        else:
            runner.run_forever()
    finally:
        runner.jobs.db.close()


def serve(
    host: Annotated[str, typer.Option(help="Bind address. Tokens are required on any non-loopback address, and on "
                                           "loopback too over PostgreSQL or object storage (VERA_REQUIRE_TOKENS "
                                           "overrides).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8765,
    database_url: DatabaseUrl = None, storage_url: StorageUrl = None,
    workers: Annotated[int, typer.Option(min=1, help="API processes (one per core): each has its own file cache and "
                                         "rate limits; the database and storage are shared.")] = 1,
    log_level: LogLevel = None, read_only: ReadOnlyMode = False,
) -> None:
    """Run the registry API."""
    run_api(host, port, load_settings(database_url, storage_url, read_only=read_only), workers=workers,
            log_level=log_level, say_url=True)

"""The registry's exception tree, documented in one place (mapped to HTTP statuses at the API edge).

    RegistryError                 base of everything the registry raises on purpose
    ├── InvalidInput              the request is malformed or the adapter fails validation      (422)
    │   └── ContentTooLarge       an upload over the size limit                                 (413)
    ├── NotFound                  no such adapter, version, alias, base model or blob          (404)
    │   ├── AdapterNotFound       no adapter owner/name at all                                  (404)
    │   ├── RevisionNotFound      the adapter exists, the Hub revision names no version of it   (404)
    │   └── EntryNotFound         the Hub revision exists, the file does not                   (404)
    ├── Conflict                  the request contradicts what is stored (shapes, duplicates)  (409)
    ├── IntegrityError            stored bytes do not match their hash; never served           (500, logged)
    ├── SchemaOutOfDate           the database needs `vera db upgrade`                          (503)
    ├── Unauthorized              no valid token                                                (401)
    ├── Forbidden                 a valid token without the right to do this                    (403)
    │   └── QuotaExceeded         the owner's storage quota would be passed                    (403)
    ├── HubError                  the HuggingFace Hub refused, failed or could not be reached   (502)
    ├── Busy                      costly work (generating projections) is at capacity; retry    (503)
    ├── StorageUnavailable        blob storage cannot be reached or failed mid-read; retry      (503)
    ├── ReadOnly                  the registry takes no changes (VERA_READ_ONLY, a standby)     (503)
    └── RateLimited               this caller sent too many costly requests; retry after a while (429)

HTTP_STATUS is the one table from this tree to HTTP statuses (the API answers with it, the client reads it back).
Messages say what was expected, what was found, and how to fix it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")


class RegistryError(Exception):
    """Base class of every error the registry raises on purpose."""

    code = "registry_error"
    #: the messages of the several problems this one error answers at once (Problems.raise_found), else None
    problems: list[str] | None = None


class InvalidInput(RegistryError, ValueError):
    code = "invalid_input"


class ContentTooLarge(InvalidInput):
    code = "content_too_large"


#: The header of a 404 for a name an adapter had before it moved: the owner/name it has now (to who may read it).
MOVED_HEADER = "X-Vera-Moved-To"


class NotFound(RegistryError, LookupError):
    code = "not_found"
    #: owner/name an adapter that had the name asked for has now (the API's X-Vera-Moved-To, read by the client)
    moved_to: str | None = None


class AdapterNotFound(NotFound):
    """No adapter of that owner and name (rather than a missing version, alias or file of one that exists)."""

    def __init__(self, message: str, *, adapter: tuple[str, str] | None = None) -> None:
        super().__init__(message)
        #: (owner, name) asked for, when known: the API then says where an adapter of that name moved to
        self.adapter = adapter


class RevisionNotFound(NotFound):
    """The adapter exists but the Hub revision names no version of it (or a form it cannot take)."""


class EntryNotFound(NotFound):
    """The Hub revision exists but has no such file."""


class Conflict(RegistryError):
    code = "conflict"



def yanked_copy(ref: str, reason: str | None = None) -> Conflict:
    """The refusal of a copy of the yanked version ``ref`` (`vera cp`, within a registry or to another), with the
    yank's reason when it has one."""
    return Conflict(f"{ref} is yanked{f' ({reason})' if reason else ''}: a copy would promote what its owner "
                    f"withdrew. Unyank it first (`vera yank {ref} --undo`), or copy another version.")

class IntegrityError(RegistryError):
    code = "integrity_error"


class SchemaOutOfDate(RegistryError):
    """The database's schema is not the one this release needs: behind (``vera db upgrade``), or ``ahead`` (a newer
    release upgraded it)."""

    code = "schema_out_of_date"

    def __init__(self, message: str, *, ahead: bool = False, current: str | None = None,
                 head: str | None = None) -> None:
        super().__init__(message)
        self.ahead = ahead
        #: the database's revision and this release's, where known: what a server says to callers, never the
        #: database's address, which the message names for its operator
        self.current, self.head = current, head


class Unauthorized(RegistryError):
    """No valid token (401)."""

    code = "unauthorized"


class Forbidden(RegistryError):
    """A valid token without the right to do this (403)."""

    code = "forbidden"


class QuotaExceeded(Forbidden):
    """The owner's storage quota would be passed (403; registry.services.quotas)."""

    code = "quota_exceeded"


class HubError(RegistryError):
    """The HuggingFace Hub answered with an error, timed out or could not be reached; nothing was recorded."""

    code = "hub_error"


class IssuerUnavailable(RegistryError):
    """A trusted publisher's OpenID Connect issuer (its discovery document, its keys) could not be read; nothing was
    done, retry shortly (registry.services.trusted)."""

    code = "issuer_unavailable"


class Busy(RegistryError):
    """The server is already doing as much costly work as it allows at once; nothing was done, retry shortly."""

    code = "busy"


class StorageUnavailable(RegistryError):
    """Blob storage (a folder, an object store) could not be reached or failed while reading; nothing was changed."""

    code = "storage_unavailable"


class ReadOnly(RegistryError):
    """The registry is read-only (VERA_READ_ONLY: a read replica, a maintenance window, a public mirror) or its database
    takes no writes (a hot standby); nothing was changed. Waiting does not help: send the change to the primary."""

    code = "read_only"


class RateLimited(RegistryError):
    """Too many costly requests from one caller; ``retry_after`` seconds until the next is allowed."""

    code = "rate_limited"

    def __init__(self, message: str, retry_after: int = 60) -> None:
        super().__init__(message)
        self.retry_after = retry_after


#: The one table from the exception tree to HTTP statuses (most specific first).
HTTP_STATUS: dict[type[RegistryError], int] = {
    ContentTooLarge: 413, InvalidInput: 422, NotFound: 404, Conflict: 409, IntegrityError: 500,
    SchemaOutOfDate: 503, Unauthorized: 401, Forbidden: 403, QuotaExceeded: 403, HubError: 502, IssuerUnavailable: 502,
    Busy: 503,
    StorageUnavailable: 503, ReadOnly: 503, RateLimited: 429,
}


def status_of(exc: RegistryError) -> int:
    return next((code for cls, code in HTTP_STATUS.items() if isinstance(exc, cls)), 500)


class Problems:
    """The problems of one request, gathered to be answered at once: a job refused for one mistake per submission
    wore its submitter out (the dashboard's Train page, `vera job submit`). ``check`` runs one check and keeps the
    caller's mistake it raises (bad input, something not found, a conflict, a quota); ``raise_found`` raises what
    was kept: the one error as it was, or several as one error of the first one's kind (its HTTP status), whose
    message numbers each on one line and whose ``problems`` holds their messages (the API's problem details list
    them as ``problems``; the dashboard shows one a line, the CLI the numbered line). A check that depends on
    another runs only once that one passed (its ``check`` returned, ``value`` gave a value): a problem listed is
    never a consequence of another."""

    KINDS = (InvalidInput, NotFound, Conflict, QuotaExceeded)

    def __init__(self, what: str) -> None:
        self.what = what
        self.found: list[RegistryError] = []

    def __len__(self) -> int:
        return len(self.found)

    @contextmanager
    def check(self) -> Iterator[None]:
        try:
            yield
        except self.KINDS as exc:
            self.found.append(exc)

    def passed(self, check: Callable[[], object]) -> bool:
        """Whether ``check()`` ran without a problem (one it raised is kept)."""
        before = len(self.found)
        with self.check():
            check()
        return len(self.found) == before

    def value(self, check: Callable[[], T]) -> T | None:
        """``check()``'s value, or None where it raised a problem (kept)."""
        with self.check():
            return check()
        return None

    def raise_found(self) -> None:
        if len(self.found) == 1:
            raise self.found[0]
        if self.found:
            messages = [message for exc in self.found for message in problems_of(exc)]
            # one line, as every message (logs and grep hold it whole); clients list ``problems`` one per line
            combined = type(self.found[0])(f"{self.what} has {len(messages)} problems; nothing was done: "
                                           + " ".join(f"({n}) {message}" for n, message in enumerate(messages, 1)))
            combined.problems = messages
            raise combined


def problems_of(exc: RegistryError) -> list[str]:
    """The messages of the problems ``exc`` stands for: one, or those Problems gathered into it."""
    return list(exc.problems) if exc.problems else [str(exc)]


def damaged_sqlite(exc: BaseException) -> bool:
    """Whether a database error (SQLAlchemy's, whose ``orig`` is the driver's) is SQLite finding its file damaged:
    SQLITE_CORRUPT (a page that does not read) or SQLITE_NOTADB (no database header at all). The API's 500
    database_damaged, the CLI's one line and `vera db status`'s exit 3 (this module imports no SQLAlchemy: the CLI
    does not load it for commands that need no database)."""
    return getattr(getattr(exc, "orig", None), "sqlite_errorname", None) in ("SQLITE_CORRUPT", "SQLITE_NOTADB")


def protected_alias(owner: str, alias: str, doing: str) -> str:
    """Why a change is refused for an alias ``owner``, an organisation, protects: only its admins ``doing``, and whom
    to ask; said by the registry (registry.services.moves.refuse_protected) and, before it asks or copies anything,
    by the CLI (`vera delete`)."""
    return (f"The alias {alias!r} is protected in {owner}: only its admins {doing}. Ask one of them (`vera org show "
            f"{owner}` lists them), or have them unprotect it (`vera org unprotect {owner} {alias}`).")

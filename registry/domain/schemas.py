"""Domain objects the services return (pydantic), never ORM rows: what the API, CLI and dashboard see."""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, NamedTuple, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, field_validator

from registry.domain.errors import InvalidInput
from registry.domain.words import counted, parse_size, size
from vera_core.errors import JSONTextError, KeyGivenTwice, each_key_once, not_unicode, parse_json

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
JOB_STATUSES: tuple[JobStatus, ...] = get_args(JobStatus)
ACTIVE_JOB_STATUSES: tuple[JobStatus, ...] = ("queued", "running")
FINAL_JOB_STATUSES: tuple[JobStatus, ...] = ("succeeded", "failed", "cancelled")
VerificationStatus = Literal["unverified", "passed", "failed"]
#: A Literal in the code, documented as a plain string in the OpenAPI document (as it always was).
_Str = WithJsonSchema({"type": "string"})

#: The most rows a listing's page holds (GET /api/v1/adapters' limit; `vera ls --limit`).
MAX_PAGE = 500
#: The largest upload the API accepts by default (VERA_MAX_UPLOAD_BYTES).
MAX_UPLOAD_BYTES = 256 * 2**20
#: The largest dataset a fine-tune job's submission uploads (VERA_MAX_DATASET_BYTES): the API reads it whole and
#: parses it to check its columns and labels, and stores it until the job ends.
MAX_DATASET_BYTES = 64 * 2**20
#: The most numbers (r * (max_in + max_out)) of a projection the registry generates by default: 64 Mi floats, 256 MiB
#: for A and B together. The widest layer of Llama-2-70B (28,672) at the paper's r=1024 needs 58.7 Mi.
MAX_PROJECTION_ELEMENTS = 2**26
#: The largest LoRA export the registry builds, in bytes of factors (VERA_MAX_EXPORT_BYTES): a 7B model's exact r=1024
#: export on q and v is 2.1 GB in float32.
MAX_EXPORT_BYTES = 16 << 30
#: The most work one LoRA export may cost, in vera_core.lora.lora_export_work's units (float32 multiply-adds' worth,
#: each number written counted too; 2^39 is 7-17 s on the machine of bench/RESULTS.md, a 7B model's exact r=1024
#: export on q and v just under it) (VERA_MAX_EXPORT_WORK): a rank-capped export factors every layer (QR, SVD), and
#: 50 KB of a VeRA adapter could cost hours (an outsider's finding, session 39).
MAX_EXPORT_WORK = 1 << 39
#: The most multiply-adds of weight-delta arithmetic one comparison of versions may cost (VERA_MAX_COMPARE_WORK):
#: about 5 s of this project's 2-core test machine (bench/compare_cost.py); a comparison of large ranks reached hours
#: and 7.5 GB before it (an outsider's, session 38).
MAX_COMPARE_WORK = 1 << 37
#: A fine-tune job's priority lies in [-MAX_JOB_PRIORITY, MAX_JOB_PRIORITY]; its time limit is at most 30 days.
MAX_JOB_PRIORITY = 100
MAX_JOB_TIME_LIMIT_S = 30 * 24 * 3600.0
#: The most jobs one owner may have queued or running at once (VERA_JOB_MAX_PENDING_PER_OWNER's default).
MAX_PENDING_JOBS = 100
#: VERA_ORGS_PER_USER's default: how many organisations one user may have created that still exist, and how many
#: times in 24 hours it may create or rename one (registry administrators: any number; registry.services.access).
ORGS_PER_USER = 10
@dataclass(frozen=True)
class PoolSettings:
    """A PostgreSQL engine's connection pool, per process (VERA_DATABASE_POOL_SIZE and the rest): at most ``size``
    + ``max_overflow`` connections, ``timeout_s`` to wait for a free one, ``connect_timeout_s`` to open one. Every
    API process and worker has its own pool: replicas x processes x (size + max_overflow) must stay under the
    server's max_connections (100 by default)."""

    size: int = 5
    max_overflow: int = 10
    timeout_s: float = 30.0
    connect_timeout_s: int = 10


#: How old an unreferenced blob file must be before garbage collection deletes it: longer than any publish takes
#: between writing its bytes and committing (`vera gc --grace-s`; registry.services.verification).
GC_GRACE_S = 3600.0
#: The most GPUs a fine-tune job may ask for (a worker owns at most one device today: `vera worker --device`).
MAX_JOB_GPUS = 64
#: The largest storage quota (registry.services.quotas): what a 64-bit integer column holds, 8 EiB.
MAX_QUOTA_BYTES = 2**63 - 1
#: A storage quota: bytes, or a size with a unit ("50GB", "50GiB"), read as bytes.
QuotaSize = Annotated[int, BeforeValidator(lambda v: parse_size(v, most=MAX_QUOTA_BYTES)),
                      WithJsonSchema({"anyOf": [{"type": "integer", "minimum": 0, "maximum": MAX_QUOTA_BYTES},
                                                {"type": "string", "examples": ["50GB", "50GiB"]}]})]
#: The largest training checkpoint a job's worker stores in the registry by default (VERA_JOB_CHECKPOINT_MAX_BYTES):
#: VeRA's vectors with their optimizer state are kilobytes to a few MB even at 7B scale; a job that trains a whole
#: head (a language model's lm_head) can pass it, and then resumes only on its own machine.
MAX_JOB_CHECKPOINT_BYTES = 256 * 2**20
#: The most a read-only registry's process keeps of the download forms it built itself (registry.services.derived's
#: Scratch) unless VERA_READ_ONLY_SCRATCH_BYTES says otherwise.
SCRATCH_BYTES = 4 * 2**30
#: The most bytes of built download forms (LoRA exports, folders with A and B) the registry keeps stored, all
#: versions together (VERA_DERIVED_MAX_BYTES's default); the least recently built go first.
DERIVED_MAX_BYTES = 32 * 2**30
#: Request temp folders are named with this prefix, so that `vera fsck` can find those a killed server left behind.
UPLOAD_PREFIX = "vera-upload-"
#: The files of an adapter version, as PEFT's directory format names them.
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "README.md")

#: The highest version number: what a reference writes after ':' (at most nine digits).
MAX_VERSION = 999_999_999
#: A name that reads as a version number (``5``, ``v5``; fullmatch): the Hub protocol's revisions read it so, and a
#: new alias may not be one.
VERSION_LIKE = re.compile(r"v?([0-9]{1,9})")
#: A commit id as the Hub protocol writes one (fullmatch): a new alias may not be one either, nor ``main``.
COMMIT_LIKE = re.compile(r"[0-9a-f]{40}")
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")  # fullmatch: no trailing newline slips through "$"
_REF = re.compile(r"(?P<owner>[^/:@]+)/(?P<name>[^/:@]+)(?::(?P<version>[1-9][0-9]{0,8})|@(?P<alias>[^/:@]+))?")


def json_object(text: str | bytes, what: str) -> dict[str, Any]:
    """``text`` parsed as a JSON object, or InvalidInput naming ``what`` (a form field, a file). A key given twice is
    refused, not one of its values dropped unseen: a publish's params ``{"lr": "0.01", "lr": "0.02"}`` kept 0.02 (an
    outsider's walk), and its metrics and a job's spec did the same until session 44."""
    try:
        value = parse_json(text, keys_once=True)
    except KeyGivenTwice as exc:
        raise _key_twice(what, exc) from None
    except JSONTextError as exc:
        raise InvalidInput(f"{what} {exc}; send a JSON object a few levels deep, its numbers of a float's size (at "
                           "most about 1.8e308).") from None
    if not isinstance(value, dict):
        raise InvalidInput(f"{what} must be a JSON object, got {type(value).__name__}.")
    _check_unicode(value, what)
    return value


def check_keys_once(text: str | bytes, what: str) -> None:
    """InvalidInput when an object of the JSON ``text`` (at any depth) gives a key more than once, which a parser
    keeps one value of, unsaid; nothing for text that is not JSON (its reader says what is wrong with it). Bytes are
    decoded as ``json.loads`` decodes them, which FastAPI reads request bodies with: UTF-16 and -32 too, and an
    encoded lone surrogate kept (a strict UTF-8 reading skipped the check of both, and the body's last value was
    taken: a re-check's finding, session 44)."""
    try:
        decoded = text.decode(json.detect_encoding(text), "surrogatepass") if isinstance(text, bytes) else text
        json.loads(decoded, object_pairs_hook=each_key_once)
    except KeyGivenTwice as exc:
        raise _key_twice(what, exc) from None
    except (ValueError, RecursionError):
        return


def _key_twice(what: str, exc: KeyGivenTwice) -> InvalidInput:
    return InvalidInput(f"{what} gives the key {exc.key[:64]!r} more than once; give each key once.")


def _check_unicode(value: object, what: str) -> None:
    """Refuse a lone UTF-16 surrogate (JSON's "\\ud800" decodes to one): stored, it made every later read of the
    listing and the audit log a 500, as no response can encode it (an outsider's walk, session 29). The same check as
    vera_core's config and dataset readers."""
    if (bad := not_unicode(value)) is not None:
        raise InvalidInput(f"{what} holds {bad!r}, half of a UTF-16 surrogate pair, which is not text; send valid "
                           "Unicode.")


def check_text(value: object, what: str, *, max_length: int, multiline: bool = False) -> str:
    """A free-text field (base model, revision, description, search text): a string of at most ``max_length``
    characters without control characters (newlines and tabs only where ``multiline``). NUL and other control
    characters are refused here, on every database alike, rather than failing deep in PostgreSQL."""
    allowed = "\n\t" if multiline else ""
    if not isinstance(value, str) or len(value) > max_length:
        raise InvalidInput(f"{what} must be text of at most {max_length:,} characters.")
    c1 = _C1_INTRODUCERS if multiline else _C1
    bad = next((c for c in value if (ord(c) < 32 and c not in allowed) or ord(c) == 127 or c in c1), None)
    if bad is not None:
        raise InvalidInput(f"{what} contains the control character {bad!r}; remove it.")
    if not multiline and (bad := next((c for c in value if c in LINE_AND_BIDI_CONTROLS), None)) is not None:
        raise InvalidInput(f"{what} contains {bad!r}, a line separator or a bidirectional override that makes "
                           "text show other than it reads; remove it (this field is one line of plain text).")
    _check_unicode(value, what)
    return value


#: C1 control characters: refused in one line of plain text. Text of several lines (descriptions, cards) refuses only
#: those that start a terminal's control sequence (\x9b is CSI, as ESC [ is; DCS, SOS, OSC, PM, APC): pasted text
#: holds the others (Windows-1252 quotes read as Latin-1, NEL), which stored descriptions may have.
_C1 = frozenset(chr(c) for c in range(0x80, 0xA0))
_C1_INTRODUCERS = frozenset("\x90\x98\x9b\x9d\x9e\x9f")
#: What one line of plain text may not hold beyond control characters: line and paragraph separators, and the
#: bidirectional embeddings, overrides and isolates that reorder what a terminal or page shows ("Trojan Source").
LINE_AND_BIDI_CONTROLS = frozenset("\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


#: The deepest JSON the registry stores (metrics, evaluation details, job specs): the parser reads about 1,000
#: levels, but pydantic writes replies of at most 255, so deeper JSON, once stored, made every listing that showed it
#: a 500 (an outsider's re-check, session 33).
MAX_JSON_DEPTH = 64


def too_deep(value: Any) -> bool:
    """Whether ``value`` nests more than MAX_JSON_DEPTH lists and objects deep (walked without recursion, and no
    further than that depth)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > MAX_JSON_DEPTH:
                return True
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return False


def non_finite_at(value: Any, path: str = "") -> tuple[str, str] | None:
    """Where ``value`` first holds NaN or an infinity, and which (``("eval_loss", "NaN")``; list items by index,
    ``train_loss[3]``), or None. ``value`` is at most MAX_JSON_DEPTH deep (too_deep refused it before)."""
    if isinstance(value, float) and not math.isfinite(value):
        return path, "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        inner = f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}" if path else str(key)
        if (found := non_finite_at(item, inner)) is not None:
            return found
    return None


def check_json(value: Any, what: str, *, max_bytes: int) -> str:
    """``value`` as JSON text: finite numbers only, no NUL character, at most ``max_bytes`` and MAX_JSON_DEPTH levels
    of lists and objects."""
    if too_deep(value):
        raise InvalidInput(f"{what} nests lists and objects more than {MAX_JSON_DEPTH} levels deep; flatten it.")
    try:
        text = json.dumps(value, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        if (where := non_finite_at(value)) is not None:  # HF Trainer writes NaN for a run that diverged
            raise InvalidInput(f"{what} must be JSON of finite numbers, strings, lists and objects: {where[1]} at "
                               f"{where[0] or 'its top'} is not a number JSON has; drop that entry, or write it as "
                               "null.") from exc
        why = (f"it holds an integer of over {sys.get_int_max_str_digits():,} digits" if "integer string conversion"
               in str(exc) else str(exc))  # (not Python's "use sys.set_int_max_str_digits()": a re-check, session 44)
        raise InvalidInput(f"{what} must be JSON of finite numbers, strings, lists and objects: {why}") from exc
    if "\\u0000" in text:
        raise InvalidInput(f"{what} contains a NUL character (\\u0000); remove it.")
    if len(text.encode()) > max_bytes:
        raise InvalidInput(f"{what} is {len(text.encode()):,} bytes as JSON; the limit is {max_bytes:,}.")
    _check_unicode(value, what)
    return text


def check_plain(value: Any, what: str, *, multiline_strings: bool = False) -> None:
    """Every key of ``value``'s objects, at any depth, is one line of plain text and not empty, and every string in
    it is plain text too (one line, or lines where ``multiline_strings``): metrics and evaluation details are printed
    by `vera show`, `vera eval ls` and `vera compare`, where an escape sequence in a key cleared an admin's screen and
    forged a line (an outsider's, session 38). Call after check_json (which bounds the depth)."""
    pending: list[tuple[Any, str]] = [(value, what)]  # (an item, where it is: metrics.labels[3])
    while pending:
        item, where = pending.pop()
        if isinstance(item, dict):
            for key, inner in item.items():
                if key == "":
                    raise InvalidInput(f"{where} has an empty key; name each value.")
                check_text(key, f"{where}'s key {key[:100]!r}", max_length=1000)
                if (hidden := next((c for c in key if unicodedata.category(c) == "Cf"), None)) is not None:
                    # a key that shows as another (acc\u200buracy as accuracy: an outsider's re-check, session 38)
                    raise InvalidInput(f"{where}'s key {key[:100]!r} contains {hidden!r}, a character that does not "
                                       "show; remove it (a key is searched and sorted by as it is written).")
                pending.append((inner, f"{where}.{key}"))
        elif isinstance(item, list):
            pending.extend((inner, f"{where}[{i}]") for i, inner in enumerate(item))
        elif isinstance(item, str):
            check_text(item, f"{where}'s text {item[:100]!r}", max_length=len(item), multiline=multiline_strings)


def path_like(name: str) -> bool:
    """Whether a base model name reads as a folder path (a machine's), not a Hub id (org/name) or a registry name:
    such a name became a base for good, and servers of the real name refuse its versions (a newcomer's walk and an
    outsider's re-check, session 33: the CLI refused it, the API took it)."""
    return name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1 or ":" in name


def check_name(value: str, what: str) -> str:
    """Owner, adapter, alias and tag names: 1-64 of [a-z0-9._-], starting with a letter or digit."""
    if not isinstance(value, str) or not _NAME.fullmatch(value) or ".." in value:
        lower = value.lower() if isinstance(value, str) else ""
        meant = f" Did you mean {lower!r}?" if lower != value and _NAME.fullmatch(lower) and ".." not in lower else ""
        raise InvalidInput(
            f"{what} {value!r} is not a valid name: use 1-64 lowercase letters, digits, '.', '_' or '-', starting "
            f"with a letter or digit (no '/', spaces, control characters or '..').{meant}"
        )
    return value


def check_new_name(value: str, what: str) -> str:
    """A name given now to a new owner (user, organisation) or adapter: check_name's, and the Hugging Face Hub's rules
    for a repo id besides (huggingface_hub's validate_repo_id: no '.' or '-' at the end, no '--', no '.git' at the
    end), which PEFT and huggingface_hub apply before they ask this registry's /hf for ``owner/name``: such a name
    could not be loaded by them, and ``alice.`` or ``alice-`` passed for ``alice`` in a listing (an outsider's
    finding, session 51). Names given before 2026-12-07 keep working: only new ones are checked."""
    check_name(value, what)
    problem = ("ends with '.git'" if value.endswith(".git") else f"ends with {value[-1]!r}" if value[-1] in ".-"
               else "holds '--'" if "--" in value else None)
    if problem is not None:
        meant = value.rstrip(".-").replace("--", "-").removesuffix(".git")
        hint = f" Did you mean {meant!r}?" if meant and _NAME.fullmatch(meant) and ".." not in meant else ""
        raise InvalidInput(f"{what} {value!r} {problem}, which a Hugging Face Hub name may not (PEFT and "
                           "huggingface_hub refuse it as a repo id, so it could not be loaded through this registry's "
                           f"/hf): end a new name with a letter, a digit or '_', without '--' or '.git'.{hint}")
    return value


def hub_reading(alias: str) -> str | None:
    """How the Hub protocol (/hf; registry.services.hub_view) reads ``alias`` as a revision when that is not the
    alias: a version number, ``main`` (the newest version) or a commit id; None when it reads the alias."""
    if VERSION_LIKE.fullmatch(alias):
        both = f" and the API's .../versions/{alias} give" if alias.isdigit() else " gives"
        return (f"reads as version {int(alias.lstrip('v'))}: the Hub protocol's revision {alias} "
                f"(from_pretrained's revision=){both} that version")
    if alias == "main":
        return ("is the Hub protocol's name of the newest version (revision main, from_pretrained's default), which "
                "it gives")
    if COMMIT_LIKE.fullmatch(alias):
        return "reads as a commit id to the Hub protocol, which would look for that commit"
    return None


def alias_problem(alias: str, *, new: bool = True) -> str | None:
    """Why the registry refuses to point ``alias`` at a version, or None: not a name, ``latest`` (the registry's
    own), or, for an alias the adapter does not have yet (``new``), a name the Hub protocol reads otherwise
    (hub_reading). The server's check (Versions.set_alias), and the clients' before a copy they would then alias
    (`vera cp --alias`, the dashboard's Copy form: a refused alias left the copy made, a walk's finding, session 46)."""
    try:
        check_name(alias, "Alias")
    except InvalidInput as exc:
        return str(exc)
    if alias == "latest":
        return "'latest' always points at the newest version that is not yanked; pick another alias."
    if new and (reading := hub_reading(alias)) is not None:
        return (f"The alias {alias!r} {reading}, while a reference @{alias} would give the alias. Pick another name "
                "(prod, release-5, v1-rc).")
    return None


class Ref(BaseModel):
    """``owner/name``, ``owner/name:3`` or ``owner/name@prod`` (default: ``@latest``)."""

    model_config = ConfigDict(frozen=True)
    owner: str
    name: str
    version: int | None = None
    alias: str | None = None

    @classmethod
    def of(cls, owner: str, name: str, *, version: int | None = None, alias: str | None = None) -> Ref:
        """A reference from its parts (path parameters, say), checked like a parsed one (InvalidInput)."""
        if version is not None and not 1 <= version <= MAX_VERSION:
            raise InvalidInput(f"Version {version} is not between 1 and {MAX_VERSION}.")
        return cls(owner=check_name(owner, "Owner"), name=check_name(name, "Adapter name"), version=version,
                   alias=check_name(alias, "Alias") if alias is not None and version is None else None)

    @classmethod
    def parse(cls, text: str) -> Ref:
        try:
            return cls._parse(text)
        except InvalidInput as exc:
            if (mended := _mended(text)) is not None:  # only spaces or capital letters are wrong: say that
                raise InvalidInput(mended) from None
            raise exc from None

    @classmethod
    def _parse(cls, text: str) -> Ref:
        match = _REF.fullmatch(text) if isinstance(text, str) and len(text) <= 300 else None
        if not match:
            # owner/name:prod (an alias written as a version): say how to write it (a new user's walk)
            head, colon, tail = text.rpartition(":") if isinstance(text, str) and len(text) <= 300 else ("", "", "")
            as_alias = f"{head}@{tail}"
            if as_alias != as_alias.lower() and _REF.fullmatch(as_alias) and is_reference(as_alias.lower()):
                as_alias = as_alias.lower()  # owner/name:Prod: names are lowercase
            hint = (f" An alias follows '@': {as_alias}." if colon and not tail.isdigit()
                    and _REF.fullmatch(as_alias) else "")
            if colon and re.fullmatch(r"[vV]\d{1,9}", tail) and is_reference(f"{head}:{int(tail[1:])}"):
                # owner/name:v2, as the Hub's revision "v2" reads (a newcomer's walk, session 38): was "@v2"
                hint = f" A version is a number after ':': {head}:{int(tail[1:])}."
            raise InvalidInput(f"{text!r} is not an adapter reference; expected owner/name, owner/name:VERSION "
                               f"(1 to {MAX_VERSION}) or owner/name@ALIAS.{hint}")
        owner, name = check_name(match["owner"], "Owner"), check_name(match["name"], "Adapter name")
        version = int(match["version"]) if match["version"] else None
        alias = check_name(match["alias"], "Alias") if match["alias"] else None
        return cls(owner=owner, name=name, version=version, alias=alias if version is None else None)

    @classmethod
    def parse_adapter(cls, text: str) -> Ref:
        """``owner/name``: an adapter, not one of its versions (what is published to, edited, trained into), or
        InvalidInput saying so."""
        if not (isinstance(text, str) and len(text) <= 300 and _REF.fullmatch(text)):
            raise InvalidInput(f"{text!r} is not an adapter name; expected owner/name, e.g. alice/polarity.")
        ref = cls.parse(text)
        if ref.version is not None or ref.alias is not None:
            raise InvalidInput(f"{text!r} names a version; name the adapter, {ref.owner}/{ref.name} (the registry "
                               "numbers its versions).")
        return ref

    def __str__(self) -> str:
        suffix = f":{self.version}" if self.version is not None else f"@{self.alias}" if self.alias else ""
        return f"{self.owner}/{self.name}{suffix}"


def is_reference(text: str) -> bool:
    """Whether ``text`` is a reference (owner/name, owner/name:N or owner/name@alias)."""
    try:
        Ref._parse(text)
    except InvalidInput:
        return False
    return True


def _mended(text: str) -> str | None:
    """What is wrong with a reference that Ref.parse refuses, when it is only spaces at its ends or around '/', ':'
    and '@' (``you/polarity @latest``: the name was blamed for its trailing space) or capital letters (``@Prod``:
    names are lowercase, so no alias is called that): the message naming it and the reference meant. None when the
    reference is valid as it is, or more is wrong (a space inside a name: check_name's message names the name)."""
    if not isinstance(text, str) or len(text) > 300:
        return None
    squeezed = re.sub(r"\s*([/:@])\s*", r"\1", text.strip())
    for candidate in (squeezed, squeezed.lower()):
        try:
            meant = Ref._parse(candidate)
        except InvalidInput:
            continue
        if candidate == text:
            return None
        parts = _REF.fullmatch(squeezed)
        capitals = [f"{what} {parts[what]!r}" for what in ("owner", "name", "alias")
                    if parts is not None and parts[what] and parts[what] != parts[what].lower()]
        space = "a space" if {c for c in text if c.isspace()} <= {" "} else "white space (a tab or line break)"
        called = "alias" if capitals and capitals[-1].startswith("alias") else "adapter"
        lowercase = f"names are lowercase, so no {called} is called that"
        if not capitals:
            wrong = f"holds {space}: a reference has none"
        elif squeezed == text:
            wrong = f"has capital letters ({', '.join(capitals)}): {lowercase}"
        else:
            wrong = f"holds {space} (a reference has none) and capital letters ({', '.join(capitals)}: {lowercase})"
        return f"{text!r} {wrong}. Did you mean {meant}?"
    return None


class BaseModelInfo(BaseModel):
    id: int
    name: str
    revision: str
    shapes_fingerprint: str
    shapes_source: str
    layers: int
    created_at: datetime


class ProjectionInfo(BaseModel):
    """A shared projection: regenerated from (generator, seed, r, shape), or stored once when not reproducible."""

    id: int
    generator: str
    seed: int
    r: int
    max_in: int
    max_out: int
    fingerprint: str
    reproducible: bool
    stored: bool
    versions: int  # how many versions use it


class AuditEventInfo(BaseModel):
    at: datetime
    actor: str
    action: str
    target: str
    detail: dict[str, Any]


#: The longest life a token may be given, in days (ten years).
MAX_TOKEN_DAYS = 3650


def expiry_in(days: float | None) -> datetime | None:
    """When a token asked to live ``days`` days expires (None: never); InvalidInput unless 0 < days <=
    MAX_TOKEN_DAYS (NaN and infinities included), as `vera token create --expires-days` and the API take it."""
    if days is None:
        return None
    if not 0 < days <= MAX_TOKEN_DAYS:  # false for NaN too
        raise InvalidInput(f"--expires-days must be more than 0 and at most {MAX_TOKEN_DAYS} (ten years); got {days}.")
    return datetime.now(UTC) + timedelta(days=days)


class TokenInfo(BaseModel):
    """An access token as `vera token list` shows it: never its secret."""

    id: int
    owner: str
    name: str
    scopes: list[str]
    created_at: datetime
    revoked: bool
    last_used_at: datetime | None
    expires_at: datetime | None
    limited_to: list[str] | None = None
    #: The token it was made with (`vera auth create-token`, a dashboard sign-in): revoking that revokes this too.
    #: None: made by an administrator or the operator (or a server before this field).
    parent_id: int | None = None


class StoreCounts(BaseModel):
    """What the registry holds (the /metrics gauges)."""

    adapters: int
    versions: int
    stored_bytes: int
    jobs: dict[str, int] = {}  # jobs by status (queued, running, ...), for queue depth and stuck workers
    workers: int = 0  # distinct workers running a job now


class MemberInfo(BaseModel):
    member: str
    role: str  # read | write | admin
    added_at: datetime
    # whether a token was ever created for this user on this registry (False: nobody uses the name yet; a misspelt
    # name shows so); None from a server before this field, or from a registry that checks no tokens (local mode:
    # nobody has one there)
    has_token: bool | None = None


class InvitationInfo(BaseModel):
    """A pending invitation to join an organisation (VERA_ORG_INVITATIONS): ``member`` becomes a member with
    ``role`` by accepting it before ``expires_at``."""

    organization: str
    member: str
    role: str  # read | write | admin
    invited_by: str
    invited_at: datetime
    expires_at: datetime


#: Where an owner's storage quota comes from (registry.services.quotas): set by an admin through the API, or the
#: settings' per-owner or every-owner quota.
QuotaSource = Literal["admin", "VERA_OWNER_QUOTAS", "VERA_OWNER_QUOTA_BYTES"]


class OwnerUsage(BaseModel):
    """What an owner namespace's adapters store (the versions' ``stored_bytes``), and its quota (None: none), with
    where the quota comes from (None: no quota from anywhere) and, when an admin set it, who and when."""

    owner: str
    adapters: int
    versions: int
    stored_bytes: int
    quota_bytes: int | None
    quota_from: QuotaSource | None = None
    quota_set_by: str | None = None
    quota_set_at: datetime | None = None
    #: the uploaded datasets the owner's queued and running jobs hold until they end, which a job's submission counts
    #: against the quota with ``stored_bytes`` (since 2026-12-06: a refusal for them showed "0 B stored")
    job_dataset_bytes: int = 0

    @property
    def share(self) -> float | None:
        """The part of the quota used, 0 to 1 or more (None: no quota; a quota of 0 is full)."""
        if self.quota_bytes is None:
            return None
        return self.stored_bytes / self.quota_bytes if self.quota_bytes else 1.0

    def summary(self) -> str:
        """'acme: 3 adapters, 7 versions, 1.2 MB stored (12% of its 10.0 MB quota, set by root on 2026-12-01)', as
        `vera usage` and the dashboard say it."""
        quota = "no quota" if self.quota_bytes is None else (
            f"{100 * self.stored_bytes / self.quota_bytes:.0f}% of its {size(self.quota_bytes)} quota"
            if self.quota_bytes else "a quota of 0 B: it may publish nothing")
        source = (f"set by {self.quota_set_by} on {self.quota_set_at:%Y-%m-%d}" if self.quota_from == "admin"
                  and self.quota_set_at else f"from {self.quota_from}" if self.quota_from else "")
        held = (f", and {size(self.job_dataset_bytes)} of datasets its queued jobs hold" if self.job_dataset_bytes
                else "")
        return (f"{self.owner}: {counted(self.adapters, 'adapter')}, {counted(self.versions, 'version')}, "
                f"{size(self.stored_bytes)} stored ({quota}{', ' + source if source else ''}){held}")


class OrganizationInfo(BaseModel):
    """An organisation: an owner namespace shared by its members."""

    name: str
    description: str
    created_by: str
    created_at: datetime
    members: list[MemberInfo]
    # its pending invitations (VERA_ORG_INVITATIONS), shown to its admins and the registry's; empty for its other
    # members, and from a server before this field
    invitations: list[InvitationInfo] = Field(default_factory=list)
    # alias names that, in every adapter of the organisation, only its admins move (empty from a server before this
    # field)
    protected_aliases: list[str] = Field(default_factory=list)

    def role_of(self, member: str) -> str | None:
        """``member``'s role here (None: no member)."""
        return next((x.role for x in self.members if x.member == member), None)

    def invited(self, member: str) -> InvitationInfo | None:
        """``member``'s pending invitation when they are invited and no member yet (None otherwise): what a
        registry with invitations on answers adding a user (`vera org add` says so)."""
        if self.role_of(member) is not None:
            return None
        return next((i for i in self.invitations if i.member == member), None)


class WhoAmI(BaseModel):
    """The caller as the registry sees it (GET /api/v1/whoami)."""

    user: str
    anonymous: bool
    scopes: list[str]
    organizations: dict[str, str]  # organisation -> role
    token_id: int | None
    limited_to: list[str] | None
    expires_at: datetime | None = None
    #: The registry takes no changes from anyone (VERA_READ_ONLY: a read replica, a maintenance window, a mirror).
    read_only: bool = False
    #: How many invitations to organisations wait for this user's answer (`vera org invitations`); None: anonymous,
    #: or a server before this field.
    pending_invitations: int | None = None
    #: The longest a new token lives on this registry (VERA_MAX_TOKEN_DAYS); None: no limit, or a server before
    #: this field.
    max_token_days: float | None = None
    #: The registry checks no tokens (VERA_REQUIRE_TOKENS off, as `vera up` runs): every caller is the local user,
    #: whatever token it sends.
    local: bool = False


class VersionInfo(BaseModel):
    owner: str
    name: str
    version: int
    ref: str
    aliases: list[str]
    base_model: str
    base_revision: str
    r: int
    seed: int
    generator: str
    projection_fingerprint: str
    seed_reproducible: bool
    target_modules: list[str] | str | None
    trainable_parameters: int
    adapter_parameters: int
    stored_bytes: int
    vectors_sha256: str
    metrics: dict[str, Any]
    tags: list[str]
    description: str
    published_by: str
    created_at: datetime
    yanked: bool
    #: why it was yanked, as its publisher said (PEP 592's yank reason; None: none given, or not yanked)
    yank_reason: str | None = None
    verification_status: Annotated[VerificationStatus, _Str]
    verified_at: datetime | None
    lineage: dict[str, Any]
    downloads: int = 0  # weights downloads, counted in batches (registry.services.downloads)
    visibility: str = "public"  # the adapter's: public or private (registry.services.access)
    #: key=value properties (``validation=passed``), set at publish or after (``PATCH``, `vera property`)
    properties: dict[str, str] = {}
    #: what it was trained with (``lr=0.01``, ``epochs=3``: MLflow's run params), recorded at publish and never
    #: changed; `vera train` and fine-tune jobs record every setting (vera_core.recipes.training_params)
    params: dict[str, str] = {}

    @property
    def pinned(self) -> Ref:
        """owner/name:N: this version by number, whatever alias named it."""
        return Ref.of(self.owner, self.name, version=self.version)

    def projection_differences(self, other: VersionInfo) -> list[str]:
        """How ``other``'s projection differs from this one's: 'another generator', 'another seed', 'another
        rank' (none: the same A and B, where their weight deltas can be compared)."""
        return [f"another {what}" for what, a, b in (("generator", self.generator, other.generator),
                                                     ("seed", self.seed, other.seed), ("rank", self.r, other.r))
                if a != b]


class ParamsCompared(NamedTuple):
    """How ``versions`` were trained, compared (compare_params): what `vera compare` and the dashboard's Compare say."""

    recorded: list[VersionInfo]  # the versions that record any parameter
    differing: list[str]  # the keys whose values differ among them (one a version lacks differs)
    shared: int  # how many keys they all record with one value


def compare_params(versions: Sequence[VersionInfo]) -> ParamsCompared:
    """The parameters of ``versions`` compared over the versions that record any (one published without them would
    make every key differ); nothing differs when fewer than two record any. What Compare shows of how versions were
    trained, as MLflow's run comparison does."""
    recorded = [v for v in versions if v.params]
    if len(recorded) < 2:
        return ParamsCompared(recorded, [], 0)
    keys = sorted(set().union(*(v.params for v in recorded)))
    differing = [key for key in keys if len({v.params.get(key) for v in recorded}) > 1]
    return ParamsCompared(recorded, differing, len(keys) - len(differing))


class FileEntry(BaseModel):
    """One file of a version's download: its size, its SHA-256 (the download's ETag) and where to GET it by hash
    (immutable: the same URL always answers the same bytes)."""

    name: str
    size: int = Field(ge=0)
    sha256: str = Field(pattern="^[0-9a-f]{64}$")
    url: str
    #: The file's bytes in base64, when the list was asked for with ``inline`` and the file is at most that size
    #: (absent otherwise): a small adapter's whole download in one request, like GitHub's contents API.
    content: str | None = None


class FileManifest(BaseModel):
    """A version's files in one download form (``vera``, ``vera+projection``, ``vera+seed-only``, ``lora`` or
    ``lora:<options>``), built and stored the first time any caller asks for them."""

    version: VersionInfo
    form: str
    files: list[FileEntry]

    @property
    def digest(self) -> str:
        """files_digest of this list (the ``X-Vera-Files`` header of its response)."""
        return files_digest(self.version.ref, ((f.name, f.sha256, f.size) for f in self.files))


def files_digest(pinned: str, files: Iterable[tuple[str, str, int]]) -> str:
    """What identifies a download: SHA-256 over the pinned version (owner/name:N) and each file's name, SHA-256 and
    size, in the list's order. The file list's ``X-Vera-Files`` header, also answered to ``HEAD``: a client that
    holds a list with this digest holds exactly that download's list (registry.local_cache)."""
    text = f"{pinned}\n" + "".join(f"{name}\0{sha256}\0{size}\n" for name, sha256, size in files)
    return hashlib.sha256(text.encode()).hexdigest()


class Page(BaseModel):
    items: list[VersionInfo]
    next_cursor: str | None
    total: int | None = None  # all matches, when asked for (with_total)


#: The most references one lookup (POST /api/v1/adapters/lookup) resolves: a listing page's worth.
MAX_LOOKUP = 500


class LookupBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    refs: list[Annotated[str, Field(max_length=300)]] = Field(
        min_length=1, max_length=MAX_LOOKUP,
        description=f"1 to {MAX_LOOKUP} references: owner/name:N, owner/name@ALIAS or owner/name (its latest)")


class LookedUp(BaseModel):
    requested: str  # the reference as it was sent
    version: VersionInfo | None  # None: no such version, or one the caller may not read (alike, as a GET's 404)
    #: with ``version`` None: owner/name the adapter that had the name asked for has now (`vera mv`), told to a
    #: caller that may read it there, as a GET's X-Vera-Moved-To; the client looks it up there
    moved_to: str | None = None


class Lookup(BaseModel):
    results: list[LookedUp]  # one per reference sent, in that order


class VerificationReport(BaseModel):
    ref: str
    status: Annotated[VerificationStatus, _Str]  # passed or failed
    checked_at: datetime
    checks: dict[str, dict[str, Any]]


class LayerComparison(BaseModel):
    module: str
    d_norms: list[float]
    b_norms: list[float]
    delta_cosine: list[list[float | None]]


class LayerWithFirst(BaseModel):
    """One of the first version's layers, compared with each version that adapts it too."""

    module: str
    cosine: list[float | None]  # per version, as ``refs``: None where it does not adapt the layer or shapes differ


class Comparison(BaseModel):
    refs: list[str]
    versions: list[VersionInfo]
    layers: list[LayerComparison]  # the layers every version adapts (none when one is on another base model)
    # The first version's layers that at least one other version adapts, each with every version's delta cosine
    # with the first's: versions on another base model leave the others their grid. None from a registry older
    # than the field.
    with_first: list[LayerWithFirst] | None = None


class JobCheckpointInfo(BaseModel):
    """The newest training checkpoint a job's worker stored in the registry (registry.services.job_checkpoints): an
    attempt on another machine resumes from it."""

    step: int  # optimizer steps done when it was written
    world_size: int  # processes that trained it
    attempt: int  # the attempt that wrote it
    worker: str
    size: int  # bytes of its files
    saved_at: datetime

    def summary(self, size: str | None = None) -> str:
        """It in words, as `vera job show` and the dashboard say it; ``size``: its size as the caller writes sizes
        (bytes by default)."""
        processes = f" in {self.world_size} processes" if self.world_size > 1 else ""
        return (f"step {self.step:,}{processes}, {size or f'{self.size:,} bytes'}, saved "
                f"{self.saved_at:%Y-%m-%d %H:%M:%S} UTC by {self.worker} (attempt {self.attempt})")


class JobInfo(BaseModel):
    id: int
    status: Annotated[JobStatus, _Str]
    owner: str
    target_name: str
    spec: dict[str, Any]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    claimed_by: str | None
    heartbeat_at: datetime | None
    attempts: int
    cancel_requested: bool
    progress: dict[str, Any]
    error: str | None
    result_ref: str | None
    priority: int = 0  # higher runs first
    time_limit_s: float | None = None  # training stops (failed) after this long
    not_before: datetime | None = None  # queued again after its worker died: claimable from then
    gpus: int = 0  # GPUs its training needs: claimed only by a worker with that many (0: any worker, CPU included)
    checkpoint: JobCheckpointInfo | None = None  # while it is queued or running: the checkpoint a new attempt resumes
    submitted_by: str | None = None  # the member of the owning organisation who submitted it (None: owner or admin)
    # submitted with a token that trusted publishing minted: what for (publisher, issuer, subject, claims); its
    # result records it as lineage published_via
    submitted_via: dict[str, Any] | None = None
    requested_by: str | None = None  # who submitted it, named as its result's publisher (None: before 0023)
    # it published a version that was deleted since (result_ref is then None; the job's log names the version)
    result_deleted: bool = False
    # what its result is labelled with, as asked at submission (besides the fine-tune tag; none before 0030)
    result_tags: list[str] = Field(default_factory=list)
    result_description: str = ""  # "": the version says "fine-tuned by job N"
    result_properties: dict[str, str] = Field(default_factory=dict)


#: What a job's events are: a training step's loss and learning rate, an evaluation's numbers, a line of its log.
JobEventKind = Literal["step", "evaluate", "log"]
#: The most events one read of a job's (GET /api/v1/jobs/{id}/events) answers, and by default: a job that logs
#: every step of millions holds millions, and one read built them all (an outsider's walk, session 44).
JOB_EVENT_PAGE = 1000
#: The most events a job's log keeps from its workers' heartbeats (its training records, at most
#: vera_core.trainer.MAX_LOSS_RECORDS a run, and evaluations: eval_every=1 over millions of steps is still millions);
#: past it they are dropped and the log says so once. Log lines, the registry's and the workers' (queued, lost,
#: published, failed), are always kept, and so is the job's progress.
MAX_JOB_EVENTS = 20_000


class JobEventInfo(BaseModel):
    id: int
    at: datetime
    kind: str
    data: dict[str, Any]


class HubSyncInfo(BaseModel):
    """One push of a version to a Hub repo, or one pull of a Hub repo into a version, at one commit."""

    ref: str
    direction: str  # push | pull
    endpoint: str
    repo_id: str
    revision: str
    commit_sha: str
    commit_url: str
    with_projection: bool
    format: str  # vera | lora
    content_sha256: str
    actor: str
    at: datetime


class HubSyncResult(BaseModel):
    """What a push or pull did: ``changed`` is False when it made no new Hub commit (push) or version (pull)."""

    sync: HubSyncInfo
    changed: bool
    version: VersionInfo
    peft_loadable: bool = True
    notes: list[str] = []


# ---- editable metadata and lineage (issue 16) ---------------------------------------------------------------------
#: Bounds of what may be written after publish: descriptions, tags per version, and the model card (Markdown, as a
#: Hub repo's README.md), measured in UTF-8 bytes.
MAX_DESCRIPTION = 10_000
#: The longest yank reason (one line: pip prints PyPI's in its warning).
MAX_YANK_REASON = 500
MAX_TAGS = 64
#: A version's key=value properties: at most this many, each value at most this many characters of one line.
MAX_PROPERTIES = 64
MAX_PROPERTY_VALUE = 500
#: A version's parameters (what it was trained with): at most this many, each value as a property's.
MAX_PARAMS = 100
MAX_PARAM_VALUE = MAX_PROPERTY_VALUE
MAX_CARD_BYTES = 64 * 1024
#: How far, and how many versions, a lineage graph reaches at most in each direction.
MAX_LINEAGE_DEPTH = 20
MAX_LINEAGE_NODES = 200


def check_card(value: str) -> str:
    """A model card: Markdown text of at most MAX_CARD_BYTES in UTF-8, newlines and tabs allowed (checked by the
    registry, and by `vera publish --card` before anything is uploaded)."""
    check_text(value, "card", max_length=MAX_CARD_BYTES, multiline=True)
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > MAX_CARD_BYTES:
        raise InvalidInput(f"card is {size:,} bytes of UTF-8; the limit is {MAX_CARD_BYTES:,} ({MAX_CARD_BYTES // 1024}"
                           " KiB). Shorten it, or link to a longer document.")
    return value


def check_yank_reason(reason: str | None, yanked: bool) -> str | None:
    """A yank's reason as stored: one line of plain text of at most MAX_YANK_REASON characters once stripped, some
    of them visible; None for none or blank. A reason with an unyank is refused (it would be dropped: an unyanked
    version has none)."""
    if reason is None:
        return None
    if not isinstance(reason, str):
        raise InvalidInput("The yank reason must be text.")
    if not (reason := check_text(reason.strip(), "The yank reason", max_length=MAX_YANK_REASON)):
        return None
    if shows_nothing(reason):  # zero-width characters, a BOM, Hangul fillers: unseen
        raise InvalidInput("The yank reason holds no visible character; say why in words, or give none.")
    if not yanked:
        raise InvalidInput("A reason goes with a yank; an unyank clears the version's reason. Leave the reason out "
                           "(`vera yank REF --undo`).")
    return reason


#: The longest an adapter's retention rule may keep versions by age, in days (a hundred years).
MAX_RETENTION_DAYS = 36_500
#: The most versions the dashboard asks a retention preview to list (``?limit=``: the oldest; ``would_delete_count``
#: says how many there are in all). Without a limit a preview lists them all, as it did before the limit.
MAX_RETENTION_PREVIEW = 1000


class RetentionInfo(BaseModel):
    """An adapter's own retention rule as the registry answers it (registry.services.retention): about once an hour
    it deletes the versions that neither part keeps (``keep_last``: the newest N by number, yanked ones included;
    ``keep_days``: those published in the last D days), never one that an alias points at (``latest`` included),
    nor the adapter's newest. A part a later server adds is ignored here, not refused."""

    keep_last: int | None = None
    keep_days: float | None = None


class RetentionPolicy(RetentionInfo):
    """A retention rule as a change sends it (``PATCH /api/v1/adapters/{owner}/{name}`` ``{"retention": ...}``):
    each part strictly a number in its range; a part left out or null is not part of the rule, and neither (``{}``)
    removes it."""

    model_config = ConfigDict(extra="forbid")
    keep_last: int | None = Field(None, ge=1, le=MAX_VERSION, strict=True, description=(
        "keep the newest N versions (by number, yanked ones included)"))
    keep_days: float | None = Field(None, ge=1, le=MAX_RETENTION_DAYS, strict=True, allow_inf_nan=False, description=(
        f"keep the versions published in the last D days (1 to {MAX_RETENTION_DAYS:,})"))


class RetentionPreview(BaseModel):
    """What a retention rule of one adapter (its own, or one asked about before it is set) would delete now
    (``GET /api/v1/adapters/{owner}/{name}/retention``): the versions, oldest first, and those it would but an alias
    (``latest`` included) keeps, with their aliases."""

    adapter: str
    rule: RetentionInfo | None
    would_delete: list[str] = []  # all of them, or the oldest ``limit`` the request asked for
    kept_for_aliases: dict[str, list[str]] = {}
    #: How many versions it would delete in all (``would_delete`` lists the oldest ``limit`` where one was asked);
    #: None from a server before this field, whose list was whole.
    would_delete_count: int | None = None
    #: Whether this registry applies adapters' rules (False: its operator set VERA_RETENTION_RULES=false, and nothing
    #: is deleted by a rule until it is set back); None from a server before this field.
    applied: bool | None = None

    @property
    def total(self) -> int:
        """How many versions the rule would delete in all."""
        return len(self.would_delete) if self.would_delete_count is None else self.would_delete_count


class AdapterInfo(BaseModel):
    """An adapter (``owner/name``) as a whole: its description and model card, and what its versions are."""

    owner: str
    name: str
    description: str
    card: str  # Markdown; "" when none was written
    created_at: datetime
    versions: int  # how many versions it has, yanked ones included
    latest_version: int | None  # what ``latest`` points at (None when every version is yanked)
    aliases: dict[str, int]  # alias -> version number, ``latest`` included
    visibility: str = "public"  # public or private (registry.services.access)
    #: its own retention rule (None: none; or a server before this field)
    retention: RetentionInfo | None = None


class MovedAdapter(AdapterInfo):
    """A move's answer: the adapter under its new name, the name it left, and the fine-tune jobs the move changed:
    after a rename, the queued and running jobs that now publish to the new name; after a transfer to another owner,
    those it cancelled (their rights were the old owner's; each job's log says why)."""

    moved_from: str
    jobs_retargeted: list[int] = []
    jobs_cancelled: list[int] = []


class AdapterUpdate(BaseModel):
    """What to change of an adapter (``PATCH /api/v1/adapters/{owner}/{name}``): each field left out, or null, stays
    as it is. Unknown fields are refused, so that a misspelt one is never silently ignored."""

    model_config = ConfigDict(extra="forbid")
    description: str | None = None
    card: str | None = None
    visibility: Literal["public", "private"] | None = None  # who may read it (registry.services.access)
    retention: RetentionPolicy | None = Field(None, description=(
        "the adapter's own retention rule; {} removes it"))


class TagChange(BaseModel):
    """A version's tags: replace them all (``set``), or ``add`` and ``remove`` some (not both ways at once)."""

    model_config = ConfigDict(extra="forbid")
    # bounded work before anything is looked at: a version holds at most MAX_TAGS, so longer lists say nothing more
    # (up to 4x, the refusal counts what the change would leave)
    set: list[str] | None = Field(None, max_length=4 * MAX_TAGS)
    add: list[str] = Field([], max_length=4 * MAX_TAGS)
    remove: list[str] = Field([], max_length=4 * MAX_TAGS)


class PropertyChange(BaseModel):
    """A version's key=value properties: ``set`` gives keys their values (new ones added, others changed), ``remove``
    drops keys; a key in both is refused."""

    model_config = ConfigDict(extra="forbid")
    # bounded as TagChange's lists are (a version holds at most MAX_PROPERTIES)
    set: dict[str, str] = Field({}, max_length=4 * MAX_PROPERTIES)
    remove: list[str] = Field([], max_length=4 * MAX_PROPERTIES)


class VersionUpdate(BaseModel):
    """What to change of a version's metadata (``PATCH .../versions/{version}``); its bytes never change. Each field
    left out, or null, stays as it is; unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")
    description: str | None = None
    tags: TagChange | None = None
    properties: PropertyChange | None = None


def tags_field(text: str) -> list[str]:
    """A form's comma-separated tags as given: 'a, b,,c ' -> ['a', 'b', 'c'] (each checked by check_tags)."""
    return [t.strip() for t in text.split(",") if t.strip()]


def check_tags(tags: Iterable[str], most: int = MAX_TAGS) -> list[str]:
    """Tags as a version takes them: each a name (check_name), sorted, each once, at most ``most``; one holding a
    space is said to be one tag (several were typed in one: a walk's, session 42)."""
    named: set[str] = set()
    for tag in tags:
        try:
            named.add(check_name(tag, "Tag"))
        except InvalidInput as exc:
            if any(c.isspace() for c in tag.strip()):
                raise InvalidInput(f"{exc} Several tags are given apart: comma-separated in a form or the API, "
                                   "--tag once each on the command line.") from None
            raise
    checked = sorted(named)
    if len(checked) > most:
        raise InvalidInput(f"A version takes at most {most} tags, got {len(checked)}.")
    return checked


def check_properties(given: object, what: str = "properties") -> dict[str, str]:
    """Key=value properties as given (a JSON object of strings): keys are names (check_name), values one line of at
    most MAX_PROPERTY_VALUE characters, at most MAX_PROPERTIES of them."""
    return _check_pairs(given, what, noun="property", plural="properties", most=MAX_PROPERTIES,
                        example='{"validation": "passed"}')


def check_params(given: object, what: str = "params") -> dict[str, str]:
    """A version's parameters as given (a JSON object of strings), checked as properties are (check_properties), at
    most MAX_PARAMS of them."""
    return _check_pairs(given, what, noun="parameter", plural="parameters", most=MAX_PARAMS,
                        example='{"lr": "0.01", "epochs": "3"}', strict=True)


#: Characters that show as nothing beyond the format ones (Unicode category Cf): a value of only these (and spaces)
#: holds no value that can be read.
_BLANK = frozenset("ᅟᅠ⠀ㅤﾠ")


def shows_nothing(text: str) -> bool:
    """Whether ``text`` shows no character: only spaces, format characters (zero-width ones, a BOM, a soft hyphen),
    combining marks, and letters drawn blank (_BLANK: Hangul fillers, the Braille blank)."""
    return not any(not c.isspace() and c not in _BLANK and unicodedata.category(c) not in ("Cf", "Mn", "Me")
                   for c in text)


def _check_pairs(given: object, what: str, *, noun: str, plural: str, most: int, example: str, strict: bool = False
                 ) -> dict[str, str]:
    """``check_properties`` and ``check_params``; ``strict`` (parameters, values compared as text): a value must
    show something (an unset shell variable, ``--param lr=$LR``, recorded nothing as if it were the value) and may
    hold no invisible format character (``0.0\u200b1`` printed as 0.01 and matched no ``params.lr = '0.01'``: an
    outsider's walk)."""
    if not isinstance(given, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in given.items()):
        raise InvalidInput(f"{what} must be a JSON object of text values, e.g. {example}.")
    if len(given) > most:
        raise InvalidInput(f"A version takes at most {most} {plural}; {what} has {len(given)}.")
    problems: list[str] = []
    bad_keys: list[str] = []
    first_key = 0  # where the first bad key's message is: the others are named right after it
    for key, value in given.items():  # every problem in one answer, not one per attempt (session 29's walk)
        try:
            check_name(key, f"{noun.capitalize()} key")
        except InvalidInput as exc:
            if not bad_keys:
                first_key = len(problems)
                problems.append(str(exc))  # the first says what a name may be
            bad_keys.append(key)
        try:
            check_text(value, f"{noun} {key[:64]!r}", max_length=MAX_PROPERTY_VALUE)
        except InvalidInput as exc:
            long = isinstance(value, str) and len(value) > MAX_PROPERTY_VALUE
            problems.append(f"{str(exc).removesuffix('.')} (it has {len(value):,})." if long else str(exc))
        if strict and shows_nothing(value):
            problems.append(f"{noun.capitalize()} {key[:64]!r} has no value: give one ({key[:64]}=...) or leave it "
                            "out.")
        elif strict and (hidden := next((c for c in value if unicodedata.category(c) == "Cf"), None)) is not None:
            problems.append(f"{noun} {key[:64]!r} holds U+{ord(hidden):04X}, a character that shows as nothing "
                            f"({unicodedata.name(hidden, 'a format character')}); remove it: parameters are "
                            "compared as the text they show.")
    if len(bad_keys) > 1:
        listed = ", ".join(repr(k[:64]) for k in bad_keys[1:6])
        problems.insert(first_key + 1, f"Nor are {listed}" + (
            f" and {len(bad_keys) - 6} more." if len(bad_keys) > 6 else "."))
    _refuse_all(problems)
    return dict(sorted(given.items()))


def _refuse_all(problems: list[str], shown: int = 5) -> None:
    """One InvalidInput saying the first ``shown`` of ``problems`` (and how many more), if there are any."""
    if problems:
        more = len(problems) - shown
        raise InvalidInput(" ".join(problems[:shown]) + (f" ({more} more like these.)" if more > 0 else ""))


def parse_properties(pairs: Iterable[str], noun: str = "Property", example: str = "validation=passed",
                     check: Callable[[dict[str, str]], object] | None = None) -> dict[str, str]:
    """KEY=VALUE texts as a dict, as `vera publish --property`, `vera property` and the dashboard's Properties box
    (one a line) read them: the first '=' splits (a value may hold more), the key is trimmed; a text without '=' or
    key, or a key given twice (collapsed, one value would be dropped unseen), is refused saying which. The registry
    checks keys and values (check_properties); ``check`` (that, or check_params) checks them here too, its problems
    said with the others in one refusal."""
    found: dict[str, str] = {}
    problems, repeated = [], set()
    for pair in pairs:
        key, equals, value = pair.partition("=")
        key = key.strip()
        if not equals or not key:
            problems.append(f"{noun} {pair.strip()[:80]!r} is not KEY=VALUE, e.g. {example}.")
        elif key in found:
            if key not in repeated:  # said once, however often it comes
                repeated.add(key)
                problems.append(f"{noun} {key[:64]!r} is given more than once ({found[key][:40]!r} and "
                                f"{value[:40]!r}); give it once.")
        else:
            found[key] = value
    if check is not None:
        try:
            check(found)
        except InvalidInput as exc:
            problems.append(str(exc))
    _refuse_all(problems)
    return found


#: An evaluation's numbers and its details, each at most this many bytes as JSON.
MAX_EVALUATION_BYTES = 64 * 1024
_EVALUATION_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


class EvaluationRecord(BaseModel):
    """An evaluation of a version, recorded after publish (``POST .../versions/{version}/evaluations``): its
    numbers join the version's metrics under ``name`` (searchable as ``metrics.<name>.<key>``); ``details`` say how
    they were measured (harness, its version, tasks and their settings). Unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="1-64 of a-z, 0-9, '_' and '-' (a task's name: hellaswag, arc_easy, ...)")
    metrics: dict[str, Any] = Field(description="what was measured: numbers, nested objects of numbers, text")
    details: dict[str, Any] = Field(default_factory=dict, description="how it was measured")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _EVALUATION_NAME.fullmatch(value):
            raise ValueError(f"{value!r} is not an evaluation name: use 1-64 lowercase letters, digits, '_' or '-', "
                             "starting with a letter or digit (no '.': the name is one level of the metrics)")
        return value


class EvaluationInfo(BaseModel):
    """An evaluation recorded on a version: its numbers (as in the version's metrics, under its name), how they
    were measured, who recorded them and when."""

    ref: str
    name: str
    metrics: dict[str, Any]
    details: dict[str, Any]
    recorded_by: str
    recorded_at: datetime


class LineageNode(BaseModel):
    """One version in a lineage graph. ``depth`` is its distance from the version asked about: negative for what it
    came from (-1 its parent), 0 for itself, positive for what was made from it (1 its children)."""

    ref: str
    owner: str
    name: str
    version: int
    depth: int
    yanked: bool
    published_by: str
    created_at: datetime
    lineage: dict[str, Any]  # the version's own lineage block (as in VersionInfo)


class LineageEdge(BaseModel):
    """``child`` was fine-tuned from ``parent`` (both refs of nodes in the graph)."""

    parent: str
    child: str


class LineageGraph(BaseModel):
    """A version's ancestors and descendants as nodes and edges, ready to draw (each node once, edges parent->child).
    ``truncated`` says the walk stopped at ``max_depth`` or ``max_nodes`` with more beyond."""

    ref: str
    nodes: list[LineageNode]
    edges: list[LineageEdge]
    max_depth: int
    max_nodes: int
    truncated: bool
    #: the version this one is a copy of (`vera cp`), when the caller may read it (the version's own lineage block,
    #: which every reader of it reads, names it only where they all may), or the URL and ref of another registry's
    #: version it was copied from; None otherwise
    copied_from: str | None = None
    #: the copies made of this version that the caller may read, oldest first, at most ``max_nodes``
    copies: list[str] = []

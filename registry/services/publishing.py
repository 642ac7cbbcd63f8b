"""Publishing: validate an adapter directory, store its blobs, and record it as the next version of owner/name.

The one public method that is not a single transaction, on purpose: blob storage is not transactional, so the
blobs are written first (content-addressed, so a retry or a concurrent identical publish writes the same names),
then the version is recorded in one transaction, retried when a concurrent publish takes the version number; on any
failure the blobs this call created and no row references are removed again. Nothing is half-recorded.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError as DbIntegrityError
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from registry.domain.errors import Conflict, InvalidInput, NotFound, yanked_copy
from registry.domain.schemas import (
    MAX_DESCRIPTION,
    Ref,
    VersionInfo,
    check_json,
    check_name,
    check_new_name,
    check_params,
    check_plain,
    check_properties,
    check_tags,
    check_text,
)
from registry.services.access import Visibility, check_visibility
from registry.services.base_configs import (
    BUNDLED_SOURCE,
    BaseConfigSource,
    BaseConfigUnavailable,
    bundled_config,
)
from registry.services.base_models import BaseModels, refuse_a_new_path
from registry.services.filters import add_metric_rows
from registry.services.lookup import move_latest, resolve, version_info, version_ref
from registry.services.moves import lock_adapter, refuse_publish_to_old_name
from registry.services.quotas import Quotas, check_room
from registry.services.tokens import check_new_owner, lock_owner
from registry.services.validation import SHAPELESS_SEED_ONLY, CheckedAdapter, ProjectionBudget, validate
from registry.store import models as m
from registry.store.blobs import BlobStore
from registry.store.database import Database
from vera_core.errors import VeraError
from vera_core.keys import META_IN_FEATURES, PROJECTION_KEYS

log = logging.getLogger("vera.publish")

if TYPE_CHECKING:  # torch: imported by the first publish, not when a server or command starts
    from vera_core import AdapterFiles

PUBLISH_ATTEMPTS = 8
MAX_METRICS_BYTES = 1 << 20  # metrics keep a thinned loss curve: far below this
#: Called in the publish's transaction once the version row exists (Hub sync records its pull there).
OnRecord = Callable[[Session, m.AdapterVersion], None]
#: What a publish may say of where the version came from (``lineage``), and the longest code revision.
LINEAGE_KEYS = frozenset({"job_id", "hub_repo", "hub_commit", "parent", "code_revision", "published_via",
                          "dataset_sha256", "dataset_bytes", "parent_may_be_gone", "copied_from"})
#: A version in another registry that a publish says it copies (`vera cp --to-registry`): that registry's address
#: and the version's ref, ``https://staging.example.org/alice/polarity:3`` (no credentials, query or fragment).
ELSEWHERE = re.compile(r"https?://[^\s/@?#]+(?:/[^\s@?#]*)?/[a-z0-9][a-z0-9._-]{0,63}/[a-z0-9][a-z0-9._-]{0,63}"
                       r":[1-9][0-9]{0,8}")
MAX_CODE_REVISION = 200
#: From how many bytes to store a publish's quota is checked before they are stored, not only as it is recorded.
EARLY_CHECK_BYTES = 1 << 20


@dataclass(frozen=True)
class _Publication:
    """Who publishes what under which name, checked."""

    owner: str
    name: str
    base_model: str
    base_revision: str
    metrics: dict[str, Any]
    tags: list[str]
    description: str
    published_by: str
    lineage: dict[str, Any] = field(default_factory=dict)
    visibility: Visibility | None = None  # of a new adapter (None: the registry's default)
    properties: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    adapter_description: str | None = None  # of a new adapter (None: the version's description)


def _next_number(s: Session, adapter: m.Adapter) -> int:
    """The next version number of ``adapter``, recorded: never one it had before, even if that version (or the whole
    adapter) was deleted since. A concurrent publish that takes the same number fails on the unique constraints (the
    version's or the counter's) and is retried."""
    counter = s.get(m.VersionCounter, (adapter.owner, adapter.name))
    present = s.scalar(select(func.max(m.AdapterVersion.version)).where(m.AdapterVersion.adapter_id == adapter.id))
    number = max(present or 0, counter.last_version if counter is not None else 0) + 1
    if counter is None:
        s.add(m.VersionCounter(owner=adapter.owner, name=adapter.name, last_version=number))
    else:
        counter.last_version = number
    return number


def _retryable(exc: Exception) -> bool:
    text = str(exc).lower()
    return isinstance(exc, DbIntegrityError) or "locked" in text or "busy" in text


class Publisher:
    def __init__(self, db: Database, blobs: BlobStore, base_models: BaseModels, *,
                 budget: ProjectionBudget, base_configs: BaseConfigSource | None = None,
                 default_visibility: Visibility = "public", quotas: Quotas | None = None) -> None:
        self.db, self.blobs, self.base_models = db, blobs, base_models
        self.budget, self.base_configs, self.default_visibility = budget, base_configs, default_visibility
        self.quotas = quotas or Quotas()

    def _refuse_a_new_path(self, base_model: str) -> None:
        with self.db.session() as s:
            refuse_a_new_path(s, base_model)

    def publish(
        self, source: str | os.PathLike[str], *, owner: str, name: str, base_model: str, base_revision: str = "",
        metrics: dict[str, Any] | None = None, tags: Iterable[str] = (), description: str = "",
        published_by: str | None = None, lineage: dict[str, Any] | None = None, on_record: OnRecord | None = None,
        visibility: str | None = None, properties: dict[str, str] | None = None,
        adapter_description: str | None = None, params: dict[str, str] | None = None,
    ) -> VersionInfo:
        """Validate a PEFT-format adapter directory and record it as the next version of ``owner/name``.
        ``visibility`` (public or private) applies when this creates the adapter (default: the registry's,
        VERA_DEFAULT_VISIBILITY); an existing adapter keeps its own, and saying otherwise is refused.
        ``properties``: the version's key=value properties (check_properties); ``params``: what it was trained with
        (check_params), never changed after. ``adapter_description``: the
        adapter's description when this creates it (None: the version's ``description``, as `vera publish` and the
        API give it; a job's worker gives '', since its "fine-tuned by job N" says how the version was made, not
        what the adapter is)."""
        what = _checked_publication(owner=owner, name=name, base_model=base_model, base_revision=base_revision,
                                    metrics=metrics, tags=tags, description=description,
                                    published_by=published_by or owner, lineage=lineage or {})
        what = replace(what, properties=check_properties(properties or {}), params=check_params(params or {}),
                       adapter_description=_checked_description(adapter_description))
        self._refuse_a_new_path(base_model)
        if visibility is not None:
            what = replace(what, visibility=check_visibility(visibility))
        from vera_core import read_adapter
        from vera_core.serialization import to_bytes

        try:
            files = read_adapter(source)
        except VeraError as exc:
            raise InvalidInput(str(exc)) from exc
        if files.spec is None:  # seed-only and written by PEFT: the base model's shapes give the projection size
            files = self._with_base_shapes(files, what)
        checked = validate(files, self.budget)
        meta = {"format": "pt", **{k: v for k, v in files.metadata.items() if k == META_IN_FEATURES}}
        vectors = to_bytes({k: v.float().contiguous() for k, v in checked.vectors.items()}, meta)
        projection_blob = None
        if not checked.reproducible:
            a, b = (files.tensors[k].float() for k in PROJECTION_KEYS)
            projection_blob = to_bytes({PROJECTION_KEYS[0]: a, PROJECTION_KEYS[1]: b}, {"format": "pt"})
        # before anything is stored (and again as it is recorded)
        self._check_room(what, len(vectors), spared=len(vectors) + len(projection_blob or b""))
        written: list[str] = []  # digests this call created, removed again if the publish fails
        try:
            for data in (vectors, projection_blob):
                if data is not None:
                    written.append(self._put_new(data))
            info = self._record_with_retries(what, files, checked, vectors, projection_blob, on_record)
            # a failed concurrent publish of identical bytes may have removed a blob we found present
            for data in (vectors, projection_blob):
                if data is not None and not self.blobs.exists(hashlib.sha256(data).hexdigest()):
                    self.blobs.put(data)
        except BaseException:
            self._discard_unreferenced([d for d in written if d])
            raise
        self._declare_bundled_base(what, files)
        return info

    def _check_room(self, what: _Publication, size: int, *, spared: int) -> None:
        """Refuse early, before storing anything, what the publish's transaction would refuse for its quota (``size``
        bytes more), when the bytes it would store are worth sparing (``spared``): under ``EARLY_CHECK_BYTES`` the
        transaction's own check refuses, and the few bytes written meanwhile are removed again (a transaction saved
        on every publish: bench/publish_cost.py)."""
        if spared < EARLY_CHECK_BYTES:
            return
        with self.db.session() as s:
            refuse_publish_to_old_name(s, what.owner, what.name)  # said first: room would not help
            check_room(s, self.quotas, what.owner, size, f"publishing {what.owner}/{what.name}")

    def _with_base_shapes(self, files: AdapterFiles, what: _Publication) -> AdapterFiles:
        """A PEFT-written seed-only adapter sized from its base model's declared shapes; undeclared, from the base's
        config.json (minilm's from its package here, another's on the Hub; declared from then on); else the refusal
        says what was tried and how to go on."""
        files = self.base_models.with_declared_shapes(files, what.base_model, what.base_revision)
        if files.spec is not None:
            return files
        found = self._base_config_source(what)
        if found is None:
            return files
        source, recorded, read = found
        try:
            self.base_models.register_from_config_dict(name=what.base_model, revision=what.base_revision,
                                                       config=read(), actor=what.published_by, source=recorded)
        except (BaseConfigUnavailable, InvalidInput, Conflict) as exc:
            raise InvalidInput(f"{SHAPELESS_SEED_ONLY} The registry looked for the config.json of base model "
                               f"{what.base_model!r} on {source}: {str(exc).rstrip('.')}.") from exc
        return self.base_models.with_declared_shapes(files, what.base_model, what.base_revision)

    def _declare_bundled_base(self, what: _Publication, files: AdapterFiles) -> None:
        """After a publish: an adapter PEFT wrote with its projection (its default) records no layer's input size,
        which its LoRA export and comparisons need from the base's declared shapes: the demo's minilm, whose
        config.json is on this machine, is declared at its first such publish, as at a seed-only one's (a PEFT
        user's walk, session 47: its LoRA export was a 409 or not depending on which kind was published first).
        After, not before: a publish refused declares nothing. Another base stays as it is, with no request to the
        Hub on a publish that does not need one (`vera base register` declares it)."""
        if META_IN_FEATURES in files.metadata:
            return
        bundled = bundled_config(what.base_model, what.base_revision)
        if bundled is None or self.base_models.is_declared(what.base_model, what.base_revision):
            return
        try:
            self.base_models.register_from_config_dict(name=what.base_model, revision=what.base_revision,
                                                       config=bundled, actor=what.published_by, source=BUNDLED_SOURCE)
        except (InvalidInput, Conflict):  # shapes its adapters contradict (another model published as minilm)
            pass
        except Exception:  # noqa: BLE001 - the version is published: its publisher must not be told otherwise
            log.warning(f"publishing {what.owner}/{what.name}: declaring base model {what.base_model} from its "
                        "package failed", exc_info=True)

    def _base_config_source(self, what: _Publication) -> tuple[str, str, Callable[[], dict[str, Any]]] | None:
        """Where the base's config.json is read (for messages; for the audit log) and how: the demo's minilm from its
        package on this machine (a name only vera resolves: the Hub was asked for it, a newcomer's walk, session
        38), else the Hub (base_configs); None where neither can."""
        if (bundled := bundled_config(what.base_model, what.base_revision)) is not None:
            return BUNDLED_SOURCE, BUNDLED_SOURCE, lambda: bundled
        if (configs := self.base_configs) is None:
            return None
        source = configs.describe()
        return source, f"{source}/{what.base_model}", lambda: configs.config(what.base_model, what.base_revision)

    def _record_with_retries(self, what: _Publication, files: AdapterFiles, checked: CheckedAdapter, vectors: bytes,
                             projection_blob: bytes | None, on_record: OnRecord | None) -> VersionInfo:
        return self._with_retries(lambda s: self._record(s, what, files, checked, vectors, projection_blob,
                                                         on_record))

    def _with_retries(self, record: Callable[[Session], VersionInfo]) -> VersionInfo:
        """``record`` in a transaction, again (in a new one) when a concurrent publish took the version number."""
        for attempt in range(PUBLISH_ATTEMPTS):
            try:
                with self.db.session() as s:
                    return record(s)
            except (DbIntegrityError, OperationalError) as exc:
                # a concurrent publish took the version number (or, on SQLite, the write lock): retry
                if attempt == PUBLISH_ATTEMPTS - 1 or not _retryable(exc):
                    raise
                time.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def copy(self, source: Ref, *, owner: str, name: str, actor: str, description: str | None = None,
             visibility: str | None = None) -> VersionInfo:
        """Record a copy of the version ``source`` names as the next version of ``owner/name`` (another adapter,
        made when it does not exist, or the same one): MLflow's copy_model_version, a staging adapter's version
        promoted into a production one. The copy has the source's bytes (the same blobs: nothing is stored again,
        while the owner's quota counts them as a publish would), base model and projection, metrics (evaluations
        included), parameters, properties, tags, verification and lineage (what it was fine-tuned from, its job,
        data, code and Hub origin), ``description`` (default: the source's), ``published_by`` ``actor``, and says
        what it copies (``lineage.copied_from``). ``visibility`` applies when this creates the adapter, as in
        publish. A yanked source is refused (Conflict); one transaction, audited as a ``publish`` with
        ``detail.copied_from`` (null when the source is another adapter's that is not public). Who may read the
        source and write ``owner`` is the caller's to check."""
        check_name(owner, "Owner")
        check_name(name, "Adapter name")
        if description is not None:
            check_text(description, "description", max_length=MAX_DESCRIPTION, multiline=True)
        chosen = check_visibility(visibility) if visibility is not None else None
        return self._with_retries(lambda s: self._copy(s, source, owner, name, actor, description, chosen))

    def _copy(self, s: Session, source: Ref, owner: str, name: str, actor: str, description: str | None,
              visibility: Visibility | None) -> VersionInfo:
        original = resolve(s, source)
        from_ref = version_ref(original)
        if original.yanked:
            raise yanked_copy(from_ref, original.yank_reason)
        adapter = self._adapter_for(s, owner, name, visibility, original.adapter.description)
        check_room(s, self.quotas, owner, original.stored_bytes, f"copying {from_ref} to {owner}/{name}")
        copied = {column: getattr(original, column) for column in _COPIED_COLUMNS}
        version = m.AdapterVersion(**copied, adapter_id=adapter.id, version=_next_number(s, adapter),
                                   description=original.description if description is None else description,
                                   published_by=actor, copied_from_version_id=original.id, copied_from_ref=from_ref)
        version.tags = [m.VersionTag(tag=t.tag) for t in original.tags]
        version.properties = [m.VersionProperty(key=p.key, value=p.value) for p in original.properties]
        version.params = [m.VersionParam(key=p.key, value=p.value) for p in original.params]
        s.add(version)
        s.flush()  # the unique (adapter, version) constraint catches a concurrent publish here
        s.add_all(m.VersionEvaluation(version_id=version.id, name=e.name, details=e.details,
                                      recorded_by=e.recorded_by, recorded_at=e.recorded_at)
                  for e in s.scalars(select(m.VersionEvaluation).where(m.VersionEvaluation.version_id == original.id)))
        add_metric_rows(s, version)
        move_latest(s, adapter)
        # the event is read by whoever reads the copy: the source named only when they may read it too (a public
        # adapter's, or the copy's own adapter's), else null, as a private transfer's move event names no new name
        # (an outsider's finding, session 46: a public copy's event named its private source to everyone)
        told = from_ref if original.adapter_id == adapter.id or original.adapter.visibility == "public" else None
        s.add(m.AuditEvent(actor=actor[:64], action="publish", target=version_ref(version),
                           detail={"vectors": version.vectors_sha256, "base_model": original.base_model.name,
                                   "copied_from": told}))
        s.flush()
        return version_info(s, version)

    def _adapter_for(self, s: Session, owner: str, name: str, visibility: Visibility | None,
                     description: str) -> m.Adapter:
        """The adapter a new version of ``owner/name`` goes into, locked: made (with ``visibility``, else the
        registry's default, and ``description``) when there is none; Conflict when it exists with another
        visibility than one asked; an old name of a moved adapter, or an owner deleted meanwhile, refused."""
        adapter = lock_adapter(s, owner, name)  # numbered after a concurrent move of it, never beside it
        if adapter is None:  # an old name says where its adapter went (an organisation renamed, too) before all else
            refuse_publish_to_old_name(s, owner, name)
        lock_owner(s, owner)  # not into an organisation deleted (or renamed) meanwhile
        if adapter is None:
            check_new_owner(s, owner)
            check_new_name(name, "Adapter name")
            adapter = m.Adapter(owner=owner, name=name, description=description,
                                visibility=visibility or self.default_visibility)
            s.add(adapter)
            s.flush()
        elif visibility is not None and visibility != adapter.visibility:
            raise Conflict(f"{owner}/{name} is {adapter.visibility}; a publish does not change that. Use "
                           f"`vera visibility {owner}/{name} {visibility}` (PATCH "
                           f"/api/v1/adapters/{owner}/{name}), or publish without saying.")
        return adapter

    def _put_new(self, data: bytes) -> str:
        return put_new(self.blobs, data)

    def _discard_unreferenced(self, digests: list[str]) -> None:
        discard_unreferenced(self.db, self.blobs, digests)

    def _record(self, s: Session, what: _Publication, files: AdapterFiles, checked: CheckedAdapter, vectors: bytes,
                projection_blob: bytes | None, on_record: OnRecord | None) -> VersionInfo:
        base = self.base_models.for_publish(s, what.base_model, what.base_revision, checked)
        for data, kind in ((vectors, "vectors"), (projection_blob, "projection")):
            if data is not None:
                m.record_blob(s, hashlib.sha256(data).hexdigest(), len(data), kind)
        s.flush()
        projection = _projection_row(s, checked, projection_blob)
        adapter = self._adapter_for(s, what.owner, what.name, what.visibility, what.description
                                    if what.adapter_description is None else what.adapter_description)
        check_room(s, self.quotas, what.owner, len(vectors), f"publishing {what.owner}/{what.name}")
        number = _next_number(s, adapter)
        version = _version_row(what, files, checked, vectors, adapter_id=adapter.id, number=number, base_id=base.id,
                               projection_id=projection.id)
        _record_sources(s, version, what.lineage)
        s.add(version)
        s.flush()  # the unique (adapter, version) constraint catches a concurrent publish here
        add_metric_rows(s, version)  # searchable by metric (registry.services.filters)
        if on_record is not None:
            on_record(s, version)
        move_latest(s, adapter)
        via = version.published_via
        s.add(m.AuditEvent(actor=what.published_by, action="publish", target=version_ref(version),
                           detail={"vectors": version.vectors_sha256, "base_model": what.base_model,
                                   **({"trusted_publisher": via.get("publisher")} if via else {})}))
        s.flush()
        return version_info(s, version)


#: What a copy takes of the version it copies, as it is: its bytes, base model, projection, sizes, numbers,
#: verification and lineage (the trusted publisher's run that published the source, published_via, is not the copy's:
#: the copy says what it copies instead).
_COPIED_COLUMNS = ("base_model_id", "projection_id", "r", "seed", "generator", "config", "vectors_sha256",
                   "projection_fingerprint", "seed_reproducible", "trainable_parameters", "adapter_parameters",
                   "stored_bytes", "metrics", "verification_status", "verified_at", "verification_report",
                   "source_job_id", "source_hub_repo", "source_hub_commit", "parent_version_id", "parent_ref",
                   "code_revision", "dataset_sha256", "dataset_bytes")


def _checked_description(description: str | None) -> str | None:
    if description is not None:
        check_text(description, "adapter description", max_length=MAX_DESCRIPTION, multiline=True)
    return description


def _checked_publication(*, owner: str, name: str, base_model: str, base_revision: str,
                         metrics: dict[str, Any] | None, tags: Iterable[str], description: str, published_by: str,
                         lineage: dict[str, Any]) -> _Publication:
    check_name(owner, "Owner")
    check_name(name, "Adapter name")
    if not check_text(base_model, "base_model", max_length=200):
        raise InvalidInput("base_model is empty; name the base model (a Hub id or a name).")
    check_text(base_revision, "base_revision", max_length=100)
    check_text(description, "description", max_length=MAX_DESCRIPTION, multiline=True)
    metrics = dict(metrics or {})
    check_json(metrics, "metrics", max_bytes=MAX_METRICS_BYTES)
    check_plain(metrics, "metrics")
    tags = check_tags(tags)
    return _Publication(owner=owner, name=name, base_model=base_model, base_revision=base_revision, metrics=metrics,
                        tags=tags, description=description, published_by=published_by,
                        lineage=_checked_lineage(lineage))


def _checked_lineage(lineage: dict[str, Any]) -> dict[str, Any]:
    """The lineage a publish states, checked; empty values dropped (a form's blank field states nothing)."""
    unknown = set(lineage) - LINEAGE_KEYS
    if unknown:
        raise InvalidInput(f"Unknown lineage {sorted(unknown)}; expected some of {sorted(LINEAGE_KEYS)}.")
    given = {k: v for k, v in lineage.items() if v not in (None, "")}
    if "parent" in given:
        parent = Ref.parse(given["parent"]) if isinstance(given["parent"], str) else None
        if parent is None:
            raise InvalidInput("parent must be an adapter reference, e.g. alice/base:3 or alice/base@prod.")
        given["parent"] = parent
    if "code_revision" in given:
        check_text(given["code_revision"], "code_revision", max_length=MAX_CODE_REVISION)
    if "copied_from" in given:
        stated = given["copied_from"]
        if not isinstance(stated, str) or not ELSEWHERE.fullmatch(check_text(stated, "copied_from", max_length=200)):
            raise InvalidInput("copied_from is the version this one copies in another registry: that registry's URL "
                               "and the version's ref, e.g. https://staging.example.org/alice/polarity:3 (at most "
                               "200 characters; no credentials, query or fragment). A copy within this registry is "
                               "made by POST .../versions/{selector}/copy (`vera cp`).")
    _check_dataset(given)
    if "published_via" in given and not isinstance(given["published_via"], Mapping):
        raise InvalidInput("published_via is what a trusted publisher's token was minted for (a mapping); it comes "
                           "from the publishing token, not from the caller.")
    return given


def _check_dataset(given: dict[str, Any]) -> None:
    """The training data a publisher states (its SHA-256, lower-cased here, and size in bytes), checked in place."""
    if "dataset_sha256" in given:
        digest = given["dataset_sha256"]
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
            raise InvalidInput("dataset_sha256 must be the training data's SHA-256: 64 hexadecimal digits (`sha256sum "
                               "train.jsonl`, or `vera publish --dataset train.jsonl`, which hashes it here).")
        given["dataset_sha256"] = digest.lower()
    if "dataset_bytes" in given:
        size = given["dataset_bytes"]
        if "dataset_sha256" not in given:
            raise InvalidInput("dataset_bytes goes with dataset_sha256: state the data's hash too, or neither.")
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size < 2**63:
            raise InvalidInput(f"dataset_bytes must be the training data's size in bytes, 0 to 2**63 - 1; got "
                               f"{size!r}.")


def _record_sources(s: Session, version: m.AdapterVersion, lineage: dict[str, Any]) -> None:
    """Link the new version to its parent (resolved now: an alias names the version it points at today) and copy
    its job's dataset hash and size, so that the version keeps them whatever happens to the job; a version published
    from outside records the hash and size its publisher stated (``dataset_sha256``, ``dataset_bytes``)."""
    parent: Ref | None = lineage.get("parent")
    if parent is not None:
        try:
            row = resolve(s, parent)
        except NotFound as exc:
            if not lineage.get("parent_may_be_gone"):
                raise InvalidInput(f"parent {parent}: {exc} Name an existing version (owner/name:N or "
                                   "owner/name@ALIAS), or publish without a parent.") from exc
            # a job's start, deleted while it trained: recorded by the ref it had (lineage: parent_deleted)
            version.parent_ref = str(parent)
        else:
            version.parent_version_id, version.parent_ref = row.id, version_ref(row)
    version.code_revision = lineage.get("code_revision")
    version.copied_from_ref = lineage.get("copied_from")  # stated, in another registry: never a version id here
    via = lineage.get("published_via")
    version.published_via = dict(via) if via is not None else None
    job = s.get(m.Job, version.source_job_id) if version.source_job_id is not None else None
    if job is not None and job.dataset_sha256 is not None:  # what the registry holds wins over what is stated
        blob = s.get(m.Blob, job.dataset_sha256)
        version.dataset_sha256, version.dataset_bytes = job.dataset_sha256, blob.size if blob else None
    elif lineage.get("dataset_sha256") is not None:  # the publisher's statement: the data stays where it is
        version.dataset_sha256, version.dataset_bytes = lineage["dataset_sha256"], lineage.get("dataset_bytes")


def _version_row(what: _Publication, files: AdapterFiles, checked: CheckedAdapter, vectors: bytes, *,
                 adapter_id: int, number: int, base_id: int, projection_id: int) -> m.AdapterVersion:
    cfg = files.config.replace(base_model_name_or_path=what.base_model, revision=what.base_revision or None,
                               save_projection=False, inference_mode=True)
    heads = sum(v.numel() for k, v in checked.vectors.items() if ".vera_lambda_" not in k)
    adapter_params = sum(v.numel() for k, v in checked.vectors.items() if ".vera_lambda_" in k)
    version = m.AdapterVersion(
        adapter_id=adapter_id, version=number, base_model_id=base_id, projection_id=projection_id,
        r=cfg.r, seed=str(cfg.projection_prng_key), generator=cfg.projection_generator, config=cfg.to_peft_dict(),
        vectors_sha256=hashlib.sha256(vectors).hexdigest(), projection_fingerprint=checked.fingerprint,
        seed_reproducible=checked.reproducible, trainable_parameters=adapter_params + heads,
        adapter_parameters=adapter_params, stored_bytes=len(vectors), metrics=what.metrics,
        description=what.description, published_by=what.published_by, source_job_id=what.lineage.get("job_id"),
        source_hub_repo=what.lineage.get("hub_repo"), source_hub_commit=what.lineage.get("hub_commit"),
    )
    version.tags = [m.VersionTag(tag=t) for t in what.tags]
    version.properties = [m.VersionProperty(key=k, value=v) for k, v in what.properties.items()]
    version.params = [m.VersionParam(key=k, value=v) for k, v in what.params.items()]
    return version


def _projection_row(s: Session, checked: CheckedAdapter, blob: bytes | None) -> m.Projection:
    """The shared projection row for (generator, seed, r, shape, fingerprint): found, or created once."""
    spec = checked.spec
    key = (m.Projection.generator == spec.generator, m.Projection.seed == str(spec.seed), m.Projection.r == spec.r,
           m.Projection.max_in == spec.max_in, m.Projection.max_out == spec.max_out,
           m.Projection.fingerprint == checked.fingerprint)
    row = s.scalar(select(m.Projection).where(*key))
    if row is None:
        try:
            with s.begin_nested():
                row = m.Projection(generator=spec.generator, seed=str(spec.seed), r=spec.r, max_in=spec.max_in,
                                   max_out=spec.max_out, fingerprint=checked.fingerprint,
                                   reproducible=checked.reproducible,
                                   blob_sha256=hashlib.sha256(blob).hexdigest() if blob else None)
                s.add(row)
        except DbIntegrityError:  # created concurrently: use that one
            row = s.scalar(select(m.Projection).where(*key))
            if row is None:
                raise
    return row


def put_new(blobs: BlobStore, data: bytes) -> str:
    """Store a blob; return its digest if this call created it (so a failure can remove it), else ''."""
    digest = hashlib.sha256(data).hexdigest()
    existed = blobs.exists(digest)
    blobs.put(data)
    return "" if existed else digest


def discard_unreferenced(db: Database, blobs: BlobStore, digests: list[str]) -> None:
    """Remove the blobs of ``digests`` (written by a request that then failed) that no row names."""
    digests = [d for d in digests if d]
    if not digests:
        return
    with db.session() as s:
        known = set(s.scalars(select(m.Blob.sha256).where(m.Blob.sha256.in_(digests))))
    for digest in digests:
        if digest not in known:
            blobs.delete(digest)

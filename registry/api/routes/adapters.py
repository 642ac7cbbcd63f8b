"""Adapters and their versions: list and search, publish, read, verify, aliases, yank, delete; the adapter as a whole
(description, model card), versions' editable metadata and lineage."""

from __future__ import annotations

import contextlib
import tempfile
from functools import partial
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from registry.api.bodies import CheckedRoute, before_body
from registry.api.deps import (
    JobsDep,
    NewVersionPublisher,
    Options,
    OwnerPublisher,
    Reader,
    RegistryDep,
    authorize,
    authorize_new_version,
    may_publish_here,
    ref_of,
)
from registry.api.ratelimit import CostlyReader
from registry.api.uploads import save_upload, without_server_paths
from registry.domain.errors import Conflict, Forbidden
from registry.domain.schemas import (
    MAX_LINEAGE_DEPTH,
    MAX_LINEAGE_NODES,
    MAX_PAGE,
    MAX_RETENTION_DAYS,
    MAX_VERSION,
    MAX_YANK_REASON,
    UPLOAD_PREFIX,
    AdapterInfo,
    AdapterUpdate,
    EvaluationInfo,
    EvaluationRecord,
    LineageGraph,
    Lookup,
    LookupBody,
    MovedAdapter,
    Page,
    Ref,
    RetentionInfo,
    RetentionPreview,
    VerificationReport,
    VersionInfo,
    VersionUpdate,
    json_object,
    tags_field,
)
from registry.services.filters import FIELDS, MAX_FILTER_LENGTH, OPERATORS
from registry.services.search import SORTS
from registry.services.tokens import Principal
from registry.services.validation import MAX_RANK

router = APIRouter(prefix="/api/v1/adapters", route_class=CheckedRoute)

MAX_ID = 2**31 - 1
#: Row ids and version numbers in paths: bounded, so that no backend overflows on a huge number.
RowId = Annotated[int, PathParam(ge=1, le=MAX_ID)]
VERSION = "/{owner}/{name}/versions/{selector}"


class AliasBody(BaseModel):
    model_config = ConfigDict(extra="forbid")  # every body refuses a field it has not (session 43: AliasBody and
    # six others dropped one, so {"version": 1, "protect": true} answered 200 unprotected)
    # (was 2**31 - 1: a version a reference cannot write); a JSON number, strictly: true and "2" were taken as
    # versions 1 and 2 (an outsider's finding, session 54)
    version: int = Field(ge=1, le=MAX_VERSION, strict=True)


class YankBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    yanked: bool = True
    reason: str | None = Field(default=None, description=(  # (its length is checked once, with the rest: one message)
        f"why it is yanked, one line of at most {MAX_YANK_REASON} characters (PEP 592's yank reason: `vera fetch` "
        "and `vera show` say it); a yank again replaces it, an unyank clears it (a reason with an unyank is "
        "refused)"))


class MoveBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: str = Field(max_length=300, description="the adapter's new name, owner/name (another owner transfers it)")


@router.get("", response_model=Page)
def list_adapters(
    who: Reader, registry: RegistryDep, owner: str | None = None, name: str | None = None,
    base_model: str | None = None, r: Annotated[int | None, Query(ge=1, le=MAX_RANK)] = None,
    seed: Annotated[int | None, Query(ge=0, le=2**64 - 1)] = None,
    generator: str | None = None, tag: str | None = None,
    q: str | None = None, include_yanked: bool = False, cursor: Annotated[str | None, Query(max_length=500)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    sort: Annotated[str, Query(description=f"one of {', '.join(SORTS)} or metrics.<key> (only versions that "
                               "record it); '-' prefix: descending")] = "-created",
    with_total: bool = False,
    filter_text: Annotated[str | None, Query(alias="filter", max_length=MAX_FILTER_LENGTH, description=(
        "clauses joined by 'and' (MLflow's search syntax), e.g. metrics.accuracy > 0.9 and r <= 256 and "
        "base_model = 'minilm'; fields: metrics.<key>, published_via.<key> (publisher, issuer, subject or a claim "
        "of the CI run that published it: repository, ref, sha...), properties.<key>, params.<key> (what it was "
        "trained with, as text: params.lr = '0.01'), " + ", ".join(FIELDS)
        + "; operators: " + ", ".join(OPERATORS) + " (is null and is not null after a <key> field: the key missing, "
        "or there); strings in single quotes"))] = None,
    latest: Annotated[bool, Query(description=(
        "one version an adapter: the newest of those the other parameters match (a list of adapters, each by its "
        "newest matching version; yanked ones count only with include_yanked)"))] = False,
) -> Page:
    return registry.list_versions(owner=owner, name=name, base_model=base_model, r=r, seed=seed,
                                  generator=generator, tag=tag, text=q, include_yanked=include_yanked,
                                  cursor=cursor, limit=limit, sort=sort, with_total=with_total,
                                  filter_text=filter_text, viewer=who, latest=latest)


@router.post("/lookup", response_model=Lookup)
def lookup(who: Reader, registry: RegistryDep, body: LookupBody) -> Lookup:
    """What each reference names now, in one request: up to 500 of owner/name:N, owner/name@ALIAS or owner/name
    (its latest), each answered with its version or null where there is none the caller may read (as a GET's 404:
    missing and unreadable alike). For whoever holds many versions (a serving fleet, a deployment manifest of
    @prod aliases) and re-checks them: one request, not one each."""
    return Lookup(results=registry.lookup(body.refs, viewer=who))


@router.post("/{owner}/{name}/versions", response_model=VersionInfo, status_code=201)
@before_body(may_publish_here)  # who may publish here, before the upload is read
async def publish(
    who: NewVersionPublisher, registry: RegistryDep, options: Options, owner: str, name: str,
    adapter_config: Annotated[UploadFile, File(description="adapter_config.json")],
    adapter_model: Annotated[UploadFile, File(description="adapter_model.safetensors")],
    base_model: Annotated[str, Form()], base_revision: Annotated[str, Form()] = "",
    metrics: Annotated[str, Form(description="a JSON object")] = "{}",
    tags: Annotated[str, Form(description="comma-separated")] = "", description: Annotated[str, Form()] = "",
    parent: Annotated[str, Form(description="the version this one was fine-tuned from: owner/name:N or "
                                "owner/name@ALIAS (lineage)")] = "",
    visibility: Annotated[str, Form(description="public or private, for a new adapter (default: the registry's, "
                                    "VERA_DEFAULT_VISIBILITY); an existing one keeps its own")] = "",
    code_revision: Annotated[str, Form(description="the code that trained it, e.g. a git commit (lineage)")] = "",
    dataset_sha256: Annotated[str, Form(description="the SHA-256 of the data it was trained on (lineage; the data is "
                                        "not uploaded)")] = "",
    dataset_bytes: Annotated[int | None, Form(description="that data's size in bytes (with dataset_sha256)")] = None,
    properties: Annotated[str, Form(description="key=value properties, a JSON object of text values (e.g. "
                                    "{\"validation\": \"passed\"})")] = "{}",
    params: Annotated[str, Form(description="what it was trained with, a JSON object of text values (e.g. "
                                "{\"lr\": \"0.01\", \"epochs\": \"3\"}; vera train's metrics.json records them "
                                "as \"params\"); never changed after")] = "{}",
    copied_from: Annotated[str, Form(description="the version this one copies in another registry: its URL and "
                                     "ref, e.g. https://staging.example.org/alice/polarity:3 (lineage; stated, not "
                                     "checked: `vera cp --to-registry`)")] = "",
) -> VersionInfo:
    parsed = json_object(metrics, "metrics")
    held = json_object(properties, "properties")
    trained_with = json_object(params, "params")
    if parent:  # a parent the publisher may not read does not exist for it (nor its versions and aliases)
        await run_in_threadpool(registry.access.check_readable, who, Ref.parse(parent))
    with tempfile.TemporaryDirectory(prefix=UPLOAD_PREFIX) as tmp:
        for upload, filename in ((adapter_config, "adapter_config.json"),
                                 (adapter_model, "adapter_model.safetensors")):
            await save_upload(upload, Path(tmp) / filename, options.max_upload_bytes)
        publish = partial(registry.publish, tmp, owner=owner, name=name, base_model=base_model,
                          base_revision=base_revision, metrics=parsed,
                          tags=tags_field(tags), description=description,
                          published_by=who.owner, lineage={"parent": parent, "code_revision": code_revision,
                                                            "published_via": who.provenance,
                                                            "dataset_sha256": dataset_sha256,
                                                            "dataset_bytes": dataset_bytes,
                                                            "copied_from": copied_from},
                          visibility=visibility or None, properties=held, params=trained_with)
        with without_server_paths(tmp, "the upload"):
            return await run_in_threadpool(publish)  # torch and database work: never on the event loop


@router.get("/{owner}/{name}", response_model=AdapterInfo)
def get_adapter(_: Reader, registry: RegistryDep, owner: str, name: str) -> AdapterInfo:
    """The adapter as a whole: description, model card, how many versions, its aliases."""
    return registry.adapter(Ref.of(owner, name))


@router.get("/{owner}/{name}/retention", response_model=RetentionPreview)
def retention_preview(
    _: Reader, registry: RegistryDep, options: Options, owner: str, name: str,
    keep_last: Annotated[int | None, Query(ge=1, le=MAX_VERSION, description=(
        "preview this rule instead of the adapter's own (with keep_days, or alone)"))] = None,
    keep_days: Annotated[float | None, Query(ge=1, le=MAX_RETENTION_DAYS, allow_inf_nan=False)] = None,
    limit: Annotated[int | None, Query(ge=1, le=MAX_VERSION, description=(
        "list the oldest this many (would_delete_count counts them all); none: every one"))] = None,
) -> RetentionPreview:
    """What the adapter's own retention rule, or the rule the query gives, would delete now: the versions, oldest
    first (the oldest ``limit``, where one is given), how many in all, and those an alias keeps. Nothing is deleted
    or changed."""
    from registry.services.retention import RetentionRule

    asked = RetentionRule(keep_last, keep_days) if keep_last is not None or keep_days is not None else None
    rule, result = registry.preview_retention(owner, name, asked)
    return RetentionPreview(adapter=f"{owner}/{name}",
                            rule=None if rule is None else RetentionInfo.model_validate(rule.said()),
                            would_delete=[v.ref for v in result.deleted[:limit]],
                            would_delete_count=len(result.deleted), kept_for_aliases=result.protected,
                            applied=options.retention_rules)


@router.patch("/{owner}/{name}", response_model=AdapterInfo)
def update_adapter(who: OwnerPublisher, registry: RegistryDep, owner: str, name: str,
                   body: AdapterUpdate) -> AdapterInfo:
    """Change the description, the model card or the visibility (fields left out stay); audited. Making private
    an adapter that holds an alias its organisation protects needs an admin of it (403 otherwise)."""
    return registry.update_adapter(Ref.of(owner, name), body, actor=who.owner, protected_too=administers(who, owner))


@router.get(VERSION, response_model=VersionInfo)
def get_version(_: Reader, registry: RegistryDep, owner: str, name: str, selector: str) -> VersionInfo:
    return registry.get(ref_of(owner, name, selector))


@router.get(f"{VERSION}/lineage", response_model=LineageGraph)
def lineage(
    who: Reader, registry: RegistryDep, owner: str, name: str, selector: str,
    depth: Annotated[int, Query(ge=1, le=MAX_LINEAGE_DEPTH, description="generations each way")] = MAX_LINEAGE_DEPTH,
    limit: Annotated[int, Query(ge=1, le=MAX_LINEAGE_NODES, description="versions each way")] = MAX_LINEAGE_NODES,
) -> LineageGraph:
    """What the version came from and what was made from it: nodes (depth < 0 ancestors, > 0 descendants) and
    parent -> child edges."""
    return registry.lineage(ref_of(owner, name, selector), depth=depth, limit=limit, viewer=who)


@router.get(f"{VERSION}/evaluations", response_model=list[EvaluationInfo])
def evaluations(_: Reader, registry: RegistryDep, owner: str, name: str, selector: str) -> list[EvaluationInfo]:
    """Evaluations recorded after publish, oldest first: their numbers (also in the version's metrics, under each
    evaluation's name), how they were measured, who recorded them and when."""
    return registry.evaluations.evaluations(ref_of(owner, name, selector))


@router.post(f"{VERSION}/evaluations", response_model=EvaluationInfo, status_code=201)
def record_evaluation(who: OwnerPublisher, registry: RegistryDep, owner: str, name: str, selector: str,
                      body: EvaluationRecord) -> EvaluationInfo:
    """Record what the version scored (e.g. an lm-evaluation-harness task): the numbers join its metrics under
    ``name`` (searchable as ``metrics.<name>.<key>``); a name already there (published, or recorded) is a 409.
    Audited as ``version-evaluate``."""
    return registry.evaluations.record(ref_of(owner, name, selector), body, actor=who.owner)


@router.delete(f"{VERSION}/evaluations/{{evaluation}}", status_code=204)
def delete_evaluation(who: OwnerPublisher, registry: RegistryDep, owner: str, name: str, selector: str,
                      evaluation: Annotated[str, PathParam(max_length=64)]) -> Response:
    """Remove an evaluation (its numbers leave the version's metrics); published metrics never change."""
    registry.evaluations.delete(ref_of(owner, name, selector), evaluation, actor=who.owner)
    return Response(status_code=204)


@router.post(f"{VERSION}/verify", response_model=VerificationReport)
def verify(_: CostlyReader, registry: RegistryDep, owner: str, name: str, selector: str) -> VerificationReport:
    return registry.verify(ref_of(owner, name, selector))


@router.get(f"{VERSION}/verification")
def verification(_: Reader, registry: RegistryDep, owner: str, name: str, selector: str) -> dict[str, Any]:
    return registry.last_verification(ref_of(owner, name, selector))


@router.put("/{owner}/{name}/aliases/{alias}", response_model=VersionInfo)
def put_alias(who: OwnerPublisher, registry: RegistryDep, owner: str, name: str, alias: str,
              body: AliasBody) -> VersionInfo:
    return registry.set_alias(Ref.of(owner, name, version=body.version), alias, actor=who.owner,
                              protected_too=administers(who, owner))


@router.delete("/{owner}/{name}/aliases/{alias}", status_code=204)
def delete_alias(who: OwnerPublisher, registry: RegistryDep, owner: str, name: str, alias: str) -> Response:
    registry.remove_alias(f"{owner}/{name}", alias, actor=who.owner, protected_too=administers(who, owner))
    return Response(status_code=204)


@router.post("/{owner}/{name}/versions/{version}/yank", response_model=VersionInfo)
def yank(who: OwnerPublisher, registry: RegistryDep, owner: str, name: str, version: RowId,
         body: YankBody) -> VersionInfo:
    return registry.yank(Ref.of(owner, name, version=version), actor=who.owner, yanked=body.yanked,
                         reason=body.reason)


@router.patch("/{owner}/{name}/versions/{version}", response_model=VersionInfo)
def update_version(who: OwnerPublisher, registry: RegistryDep, owner: str, name: str, version: RowId,
                   body: VersionUpdate) -> VersionInfo:
    """Change a version's description or tags (its bytes never change); audited."""
    return registry.update_version(Ref.of(owner, name, version=version), body, actor=who.owner)


@router.post("/{owner}/{name}/move", response_model=MovedAdapter)
def move_adapter(who: OwnerPublisher, options: Options, registry: RegistryDep, jobs: JobsDep, owner: str,
                 name: str, body: MoveBody) -> MovedAdapter:
    """Rename the adapter, or transfer it to another owner, with all its versions, aliases, tags and card; needs
    write rights on both owners (and, to transfer it out of an organisation, the organisation's admin role). Its old
    name then answers 404 naming the new one (to whoever may read it), and a publish to the old name is refused;
    audited (``move``). Answers the adapter under its new name, with the jobs the move retargeted or cancelled."""
    destination = Ref.parse_adapter(body.to)
    authorize(who, options, "publish", destination.owner)
    if destination.owner != owner and owner != who.owner and not who.can_manage(owner):
        # out of an organisation: as a repo transfer on a forge, for its admins (a writer may rename within it)
        raise Forbidden(f"Only admins of {owner} transfer its adapters to another owner; your role there is "
                        f"{who.roles.get(owner, 'none')!r}. Ask one of them, or rename it within {owner}/.")
    protected_at = frozenset(o for o in (owner, destination.owner) if not administers(who, o))
    moved = registry.move(Ref.of(owner, name), destination, actor=who.owner, protected_at=protected_at)
    cancelled = []
    for job in moved.orphaned_jobs:  # a transfer: the jobs' rights were the old owner's; cancelled, saying why
        with contextlib.suppress(Conflict):  # it ended meanwhile
            jobs.cancel(job, actor=who.owner, reason=f"cancelled: the adapter it trains into, {moved.old}, moved to "
                        f"another owner{f' ({moved.new})' if moved.public else ''}; submit the job again there")
            cancelled.append(job)
    return MovedAdapter(**registry.adapter(moved.new).model_dump(), moved_from=f"{moved.old.owner}/{moved.old.name}",
                        jobs_retargeted=moved.retargeted_jobs, jobs_cancelled=cancelled)


class CopyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: str = Field(max_length=300, description="the adapter the copy becomes the next version of, owner/name (made "
                                                "when it does not exist; the source's own adapter too)")
    description: str | None = Field(default=None, description="the copy's description (default: the source's)")
    visibility: str | None = Field(default=None, description="public or private, when the copy makes the adapter "
                                                             "(default: the registry's)")


@router.post(f"{VERSION}/copy", response_model=VersionInfo, status_code=201)
async def copy_version(who: Reader, options: Options, registry: RegistryDep, owner: str, name: str, selector: str,
                       body: CopyBody) -> VersionInfo:
    """Copy the version into ``to`` as its next version (MLflow's copy_model_version: promote a staging adapter's
    version into a production one): the same bytes (nothing is stored again; the owner's quota counts them), metrics,
    evaluations, parameters, properties, tags, verification and lineage, with ``lineage.copied_from`` naming the
    source. Needs read rights on the source and publish rights on ``to``'s owner; a yanked source is a 409. Audited as
    a ``publish`` whose detail has ``copied_from``."""
    destination = Ref.parse_adapter(body.to)
    who = await authorize_new_version(registry, options, None if who.anonymous else who, destination.owner,
                                      destination.name)  # an anonymous reader: 401, a token is needed
    return await run_in_threadpool(registry.copy_version, ref_of(owner, name, selector), owner=destination.owner,
                                   name=destination.name, actor=who.owner, description=body.description,
                                   visibility=body.visibility)


@router.delete("/{owner}/{name}", status_code=204)
def delete_adapter(who: OwnerPublisher, registry: RegistryDep, owner: str, name: str) -> Response:
    """Every version of the adapter, newest first, each audited as a version delete; then the adapter. Its version
    numbers are never given again."""
    registry.delete_adapter(f"{owner}/{name}", actor=who.owner, protected_too=administers(who, owner))
    return Response(status_code=204)


@router.delete("/{owner}/{name}/versions/{version}", status_code=204)
def delete_version(who: OwnerPublisher, registry: RegistryDep, owner: str, name: str, version: RowId) -> Response:
    registry.delete(Ref.of(owner, name, version=version), actor=who.owner, protected_too=administers(who, owner))
    return Response(status_code=204)


def administers(who: Principal, owner: str) -> bool:
    """Whether the caller may move the aliases ``owner`` protects (registry.services.versions.refuse_protected):
    the owner itself, an admin of the organisation, or a registry admin."""
    return who.owner == owner or who.can_manage(owner)

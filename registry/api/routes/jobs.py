"""Fine-tune jobs: submit (with an optional dataset upload), list, read, follow events, cancel."""

from __future__ import annotations

import tempfile
from functools import partial
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile
from fastapi.concurrency import run_in_threadpool

from registry.api.bodies import CheckedRoute, before_body
from registry.api.deps import (
    Caller,
    JobsDep,
    Options,
    Reader,
    authorize,
    authorize_new_version,
    link_next_page,
    may_publish,
)
from registry.api.ratelimit import spend
from registry.api.routes.adapters import MAX_ID, RowId
from registry.api.uploads import save_upload
from registry.domain.schemas import (
    JOB_EVENT_PAGE,
    MAX_JOB_GPUS,
    MAX_JOB_PRIORITY,
    MAX_JOB_TIME_LIMIT_S,
    UPLOAD_PREFIX,
    JobEventInfo,
    JobEventKind,
    JobInfo,
    JobStatus,
    Ref,
    json_object,
    tags_field,
)

router = APIRouter(prefix="/api/v1/jobs", route_class=CheckedRoute)


@router.post("", response_model=JobInfo, status_code=201)
@before_body(may_publish)  # a caller that may publish nowhere is refused before its dataset is read
async def submit_job(
    request: Request, caller: Caller, options: Options, jobs: JobsDep,
    target: Annotated[str, Form(description="owner/name to publish the result as")],
    spec: Annotated[str, Form(description="the training spec, a JSON object (vera_core.recipes.TrainSpec)")],
    dataset: Annotated[UploadFile | None, File(description=".csv or .jsonl")] = None,
    priority: Annotated[int, Form(ge=-MAX_JOB_PRIORITY, le=MAX_JOB_PRIORITY, description="higher runs first")] = 0,
    time_limit_s: Annotated[float | None, Form(gt=0, le=MAX_JOB_TIME_LIMIT_S, allow_inf_nan=False,
                                               description="training stops (the job fails, saying so) after this "
                                               "many seconds")] = None,
    gpus: Annotated[int, Form(ge=0, le=MAX_JOB_GPUS, description="GPUs its training needs; only a worker that owns "
                              "them claims it (0: any worker, a CPU one included)")] = 0,
    tags: Annotated[str, Form(description="comma-separated tags for the version it publishes (besides fine-tune)")
                    ] = "",
    description: Annotated[str, Form(description="the version's description (default: fine-tuned by job N)")] = "",
    properties: Annotated[str, Form(description="key=value properties of the version it publishes, a JSON object "
                                    "of text values (e.g. {\"experiment\": \"baseline\"})")] = "{}",
) -> JobInfo:
    ref = Ref.parse(target)
    owner = ref.owner
    who = await authorize_new_version(jobs.registry, options, caller, owner, ref.name)  # the target's owner's job
    spend(request, who)  # it stores and parses a dataset of up to VERA_MAX_DATASET_BYTES: a costly request
    parsed = json_object(spec, "spec")
    held = json_object(properties, "properties")
    data = None
    if dataset is not None:
        with tempfile.TemporaryDirectory(prefix=UPLOAD_PREFIX) as tmp:
            path = Path(tmp) / "upload"
            small = options.max_dataset_bytes <= options.max_upload_bytes
            await save_upload(dataset, path, min(options.max_dataset_bytes, options.max_upload_bytes),
                              "VERA_MAX_DATASET_BYTES" if small else "VERA_MAX_UPLOAD_BYTES")
            data = path.read_bytes()
    name = (dataset.filename or "data.csv") if dataset is not None else "data.csv"
    return await run_in_threadpool(partial(jobs.submit, parsed, owner=owner, target=target, dataset=data,
                                           dataset_name=name, priority=priority, time_limit_s=time_limit_s,
                                           gpus=gpus, actor=who.owner,
                                           member=None if who.owner == owner or who.is_admin else who.owner,
                                           provenance=dict(who.provenance) if who.provenance else None,
                                           viewer=who, tags=tags_field(tags),
                                           description=description, properties=held))


@router.get("", response_model=list[JobInfo])
def list_jobs(who: Reader, jobs: JobsDep, response: Response, owner: str | None = None,
              status: JobStatus | None = None, limit: Annotated[int, Query(ge=1, le=500, description=(
                  "the most a page holds; when there are more, the `Link` header names the next page "
                  "(rel=\"next\")"))] = 100,
              before: Annotated[int | None, Query(ge=1, le=MAX_ID, description=(
                  "the page of jobs older than this id: the last of the page before, as the `Link` header's next "
                  "page names it"))] = None) -> list[JobInfo]:
    """Jobs, newest first, a page at a time (until 2026-12-06 only the newest 500 could be listed)."""
    found = jobs.list_jobs(owner=owner, status=status, limit=limit + 1, before=before, viewer=who)
    if len(found) > limit:
        link_next_page(response, {**({"owner": owner} if owner else {}), **({"status": status} if status else {}),
                                  "before": found[limit - 1].id, "limit": limit})
    return found[:limit]


@router.get("/{job_id}", response_model=JobInfo)
def get_job(who: Reader, jobs: JobsDep, job_id: RowId) -> JobInfo:
    return jobs.get(job_id, viewer=who)


@router.get("/{job_id}/events", response_model=list[JobEventInfo])
def job_events(who: Reader, jobs: JobsDep, job_id: RowId, after: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
               kind: JobEventKind | None = None,
               limit: Annotated[int, Query(ge=1, le=JOB_EVENT_PAGE)] = JOB_EVENT_PAGE) -> list[JobEventInfo]:
    """The job's events after event id ``after``, oldest first, at most ``limit`` (1,000: a longer log is read a
    page at a time, ``after`` the last id read, as `vera job logs` does)."""
    # (one read answered every event until session 44: millions for a job that logs each of millions of steps)
    return jobs.events(job_id, after=after, kind=kind, limit=limit, viewer=who)


@router.post("/{job_id}/cancel", response_model=JobInfo)
def cancel_job(reader: Reader, caller: Caller, options: Options, jobs: JobsDep, job_id: RowId) -> JobInfo:
    # a reader learns whether the job exists (if it may see it); cancelling needs the publish scope of its owner
    who = authorize(caller, options, "publish", jobs.get(job_id, viewer=reader).owner)
    return jobs.cancel(job_id, actor=who.owner)

"""The HTTP API (FastAPI), versioned under /api/v1. Routes only translate HTTP to a service call; errors map
from one exception tree to RFC 9457 problem details in one table.
"""

from __future__ import annotations

import hashlib
import ipaddress
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, File, Form, Header, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from pydantic import BaseModel, Field
from sqlalchemy import func, select, text

from registry.domain.errors import ContentTooLarge, NotFound, RegistryError, Unauthorized, status_of
from registry.domain.schemas import (
    BaseModelInfo,
    Comparison,
    HubSyncInfo,
    HubSyncResult,
    JobEventInfo,
    JobInfo,
    Page,
    Ref,
    VerificationReport,
    VersionInfo,
    json_object,
)
from registry.services.hub import HubSync
from registry.services.jobs import Jobs
from registry.services.registry import MAX_RANK, SORTS, Registry
from registry.services.tokens import LOCAL_USER, Principal, authenticate
from registry.store import models as m

FILES = ("adapter_config.json", "adapter_model.safetensors", "README.md")
CHUNK = 1 << 16


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ApiOptions(BaseModel):
    """How the API authenticates and what it accepts."""

    require_tokens: bool = True
    anonymous_read: bool = False
    max_upload_bytes: int = 256 * 2**20


def problem(status: int, code: str, detail: str, instance: str) -> JSONResponse:
    titles = {401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 409: "Conflict", 413: "Content Too Large",
              422: "Invalid input", 500: "Internal error", 502: "Bad gateway", 503: "Service unavailable"}
    body = {"type": f"/problems/{code}", "title": titles.get(status, "Error"), "status": status, "detail": detail,
            "instance": instance}
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type="application/problem+json", headers=headers)


class _StoreGauges:
    """Adapters, versions and stored bytes, read from the database at scrape time."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self.registry.db.session() as s:
            adapters = s.scalar(select(func.count()).select_from(m.Adapter)) or 0
            versions = s.scalar(select(func.count()).select_from(m.AdapterVersion)) or 0
            stored = s.scalar(select(func.coalesce(func.sum(m.Blob.size), 0))) or 0
        yield GaugeMetricFamily("vera_adapters", "Adapters in the registry", value=adapters)
        yield GaugeMetricFamily("vera_versions", "Adapter versions in the registry", value=versions)
        yield GaugeMetricFamily("vera_stored_bytes", "Bytes of blobs in storage", value=stored)


def _principal(request: Request, authorization: Annotated[str | None, Header()] = None) -> Principal | None:
    """The caller: the local user when tokens are off, a token's principal, or None (no token sent)."""
    options: ApiOptions = request.app.state.options
    if not options.require_tokens:
        return LOCAL_USER
    if authorization is None:
        return None
    scheme, _, secret = authorization.partition(" ")
    if scheme.lower() != "bearer" or not secret:
        raise Unauthorized("Authorization must be 'Bearer <token>'.")
    registry: Registry = request.app.state.registry
    return authenticate(registry.db, secret.strip())


Caller = Annotated[Principal | None, Depends(_principal)]


class Problem(BaseModel):
    """RFC 9457 problem details, the body of every error response."""

    type: str
    title: str
    status: int
    detail: str
    instance: str


_PROBLEM = {"model": Problem, "content": {"application/problem+json": {"schema": Problem.model_json_schema()}}}
#: Documented on every route: the API answers these with problem details.
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {**_PROBLEM, "description": text} for code, text in (
        (401, "No valid token"), (403, "The token may not do this"), (404, "No such adapter, version or alias"),
        (409, "Conflicts with what is stored"), (413, "Upload too large"), (422, "Invalid input"),
        (500, "Stored bytes failed their hash check"), (502, "The HuggingFace Hub failed or refused"),
        (503, "Database schema out of date"))
}


MAX_ID = 2**31 - 1
#: Row ids and version numbers in paths: bounded, so that no backend overflows on a huge number.
RowId = Annotated[int, PathParam(ge=1, le=MAX_ID)]


class AliasBody(BaseModel):
    version: int = Field(ge=1, le=MAX_ID)


class YankBody(BaseModel):
    yanked: bool = True


class CompareBody(BaseModel):
    refs: list[str]


class HubPushBody(BaseModel):
    repo_id: str = Field(max_length=200, description="namespace/name on the Hub")
    revision: str = Field("main", max_length=200)
    private: bool = False
    with_projection: bool = Field(True, description="materialise A and B, so any PEFT loads it from the repo id")
    format: Literal["vera", "lora"] = Field("vera", description="lora: push the equivalent rank-r LoRA")


class HubPullBody(BaseModel):
    repo_id: str = Field(max_length=200)
    target: str = Field(max_length=200, description="owner/name to record the adapter as")
    revision: str = Field("main", max_length=200)
    base_model: str | None = Field(None, max_length=200, description="default: the adapter config's")
    base_revision: str | None = Field(None, max_length=100)


#: The Hub token of one request; never stored or logged (the server's VERA_HUB_TOKEN is used without it).
HubToken = Annotated[str | None, Header(alias="X-Hub-Token", description="a HuggingFace token for this request")]


def create_app(registry: Registry, options: ApiOptions | None = None, jobs: Jobs | None = None,
               hub: HubSync | None = None) -> FastAPI:
    options = options or ApiOptions()
    jobs = jobs or Jobs(registry)
    hub = hub or HubSync(registry)
    app = FastAPI(title="vera-registry", version="1", description="Publish, fetch and verify VeRA adapters.",
                  responses=PROBLEM_RESPONSES)
    app.state.options, app.state.registry = options, registry
    metrics = CollectorRegistry()
    requests = Counter("vera_http_requests", "HTTP requests", ["method", "route", "status"], registry=metrics)
    latency = Histogram("vera_http_request_seconds", "HTTP request latency", ["method", "route"], registry=metrics)
    metrics.register(_StoreGauges(registry))

    @app.middleware("http")
    async def measure(request: Request, call_next: Any) -> Any:
        start = time.perf_counter()
        response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        requests.labels(request.method, route, str(response.status_code)).inc()
        latency.labels(request.method, route).observe(time.perf_counter() - start)
        return response

    @app.exception_handler(RegistryError)
    async def registry_error(request: Request, exc: RegistryError) -> JSONResponse:
        return problem(status_of(exc), exc.code, str(exc), request.url.path)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return problem(422, "invalid_input", details, request.url.path)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        return problem(500, "internal_error", f"Unexpected {type(exc).__name__}; see the server log.",
                       request.url.path)

    def need(caller: Principal | None, scope: str, owner: str | None = None) -> Principal:
        if caller is None:
            if scope == "read" and options.anonymous_read:
                return Principal(owner="anonymous", scopes=frozenset({"read"}))
            raise Unauthorized("This registry requires a token: pass 'Authorization: Bearer <token>' "
                               "(VERA_TOKEN for the CLI).")
        caller.require(scope, owner=owner)
        return caller

    v1 = "/api/v1"

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", responses={503: {"description": "Database or storage unreachable",
                                        "content": {"application/json": {}}}})
    def ready() -> JSONResponse:
        checks: dict[str, str] = {}
        try:
            with registry.db.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            registry.db.check_schema()
            checks["database"] = "ok"
        except Exception as exc:  # noqa: BLE001 - readiness reports any failure
            checks["database"] = f"error: {exc}"
        try:
            registry.blobs.check()
            checks["storage"] = "ok"
        except Exception as exc:  # noqa: BLE001
            checks["storage"] = f"error: {exc}"
        ok = all(v == "ok" for v in checks.values())
        return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)

    @app.get("/metrics", response_class=Response,
             responses={200: {"description": "Prometheus text format", "content": {CONTENT_TYPE_LATEST: {}}}})
    def prometheus() -> Response:
        return Response(generate_latest(metrics), media_type=CONTENT_TYPE_LATEST)

    @app.get(f"{v1}/adapters", response_model=Page)
    def list_adapters(
        caller: Caller, owner: str | None = None, name: str | None = None, base_model: str | None = None,
        r: Annotated[int | None, Query(ge=1, le=MAX_RANK)] = None,
        seed: Annotated[int | None, Query(ge=0, le=2**64 - 1)] = None,
        generator: str | None = None, tag: str | None = None,
        q: str | None = None, include_yanked: bool = False, cursor: Annotated[str | None, Query(max_length=500)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        sort: Annotated[str, Query(description=f"one of {', '.join(SORTS)}; '-' prefix: descending")] = "-created",
        with_total: bool = False,
    ) -> Page:
        need(caller, "read")
        return registry.list_versions(owner=owner, name=name, base_model=base_model, r=r, seed=seed,
                                      generator=generator, tag=tag, text=q, include_yanked=include_yanked,
                                      cursor=cursor, limit=limit, sort=sort, with_total=with_total)

    @app.post(f"{v1}/adapters/{{owner}}/{{name}}/versions", response_model=VersionInfo, status_code=201)
    async def publish(
        caller: Caller, owner: str, name: str,
        adapter_config: Annotated[UploadFile, File(description="adapter_config.json")],
        adapter_model: Annotated[UploadFile, File(description="adapter_model.safetensors")],
        base_model: Annotated[str, Form()], base_revision: Annotated[str, Form()] = "",
        metrics: Annotated[str, Form(description="a JSON object")] = "{}",
        tags: Annotated[str, Form(description="comma-separated")] = "", description: Annotated[str, Form()] = "",
    ) -> VersionInfo:
        who = need(caller, "publish", owner)
        parsed = json_object(metrics, "metrics")
        with tempfile.TemporaryDirectory() as tmp:
            for upload, filename in ((adapter_config, "adapter_config.json"),
                                     (adapter_model, "adapter_model.safetensors")):
                await _save_upload(upload, Path(tmp) / filename, options.max_upload_bytes)
            return registry.publish(tmp, owner=owner, name=name, base_model=base_model, base_revision=base_revision,
                                    metrics=parsed, tags=[t.strip() for t in tags.split(",") if t.strip()],
                                    description=description, published_by=who.owner)

    def ref_of(owner: str, name: str, selector: str) -> Ref:
        """A version number, or an alias name."""
        return Ref.parse(f"{owner}/{name}:{selector}" if selector.isdigit() else f"{owner}/{name}@{selector}")

    @app.get(f"{v1}/adapters/{{owner}}/{{name}}/versions/{{selector}}", response_model=VersionInfo)
    def get_version(caller: Caller, owner: str, name: str, selector: str) -> VersionInfo:
        need(caller, "read")
        return registry.get(ref_of(owner, name, selector))

    @app.get(f"{v1}/adapters/{{owner}}/{{name}}/versions/{{selector}}/files/{{filename}}", response_class=Response,
             responses={200: {"description": "The file (ETag: its SHA-256)", "content": {
                 "application/octet-stream": {}, "application/json": {}, "text/markdown": {}}},
                 304: {"description": "Not modified (If-None-Match matched the ETag)"}})
    def download(
        caller: Caller, owner: str, name: str, selector: str, filename: str,
        projection: Annotated[bool, Query(description="always materialise A and B (by default they are included "
                                          "unless PEFT's own generator regenerates them)")] = False,
        seed_only: Annotated[bool, Query(description="leave A and B out even where PEFT cannot regenerate them "
                                         "(for vera_core; PEFT refuses such files)")] = False,
        format: Annotated[Literal["vera", "lora"], Query(description="lora: the equivalent rank-r LoRA")] = "vera",
        if_none_match: Annotated[str | None, Header()] = None,
    ) -> Response:
        need(caller, "read")
        if filename not in FILES:
            raise NotFound(f"{filename!r} is not an adapter file; expected one of {', '.join(FILES)}.")
        info, files = registry.files(ref_of(owner, name, selector), with_projection=projection,
                                     seed_only=seed_only, as_lora=format == "lora")
        if filename not in files:
            raise NotFound(f"The {format} export has no {filename}; it has {', '.join(files)}.")
        data = files[filename]
        etag = f'"{hashlib.sha256(data).hexdigest()}"'
        headers = {"ETag": etag, "Cache-Control": "private, max-age=0, must-revalidate",
                   "X-Vera-Version": info.ref}
        if if_none_match is not None and etag in {t.strip() for t in if_none_match.split(",")}:
            return Response(status_code=304, headers=headers)

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(data), CHUNK):
                yield data[i:i + CHUNK]

        media = "application/json" if filename.endswith(".json") else (
            "text/markdown" if filename.endswith(".md") else "application/octet-stream")
        headers["Content-Length"] = str(len(data))
        return StreamingResponse(chunks(), media_type=media, headers=headers)

    @app.post(f"{v1}/adapters/{{owner}}/{{name}}/versions/{{selector}}/verify", response_model=VerificationReport)
    def verify(caller: Caller, owner: str, name: str, selector: str) -> VerificationReport:
        need(caller, "read")
        return registry.verify(ref_of(owner, name, selector))

    @app.get(f"{v1}/adapters/{{owner}}/{{name}}/versions/{{selector}}/verification")
    def verification(caller: Caller, owner: str, name: str, selector: str) -> dict[str, Any]:
        need(caller, "read")
        return registry.last_verification(ref_of(owner, name, selector))

    @app.put(f"{v1}/adapters/{{owner}}/{{name}}/aliases/{{alias}}", response_model=VersionInfo)
    def put_alias(caller: Caller, owner: str, name: str, alias: str, body: AliasBody) -> VersionInfo:
        who = need(caller, "publish", owner)
        return registry.set_alias(f"{owner}/{name}:{body.version}", alias, actor=who.owner)

    @app.delete(f"{v1}/adapters/{{owner}}/{{name}}/aliases/{{alias}}", status_code=204)
    def delete_alias(caller: Caller, owner: str, name: str, alias: str) -> Response:
        who = need(caller, "publish", owner)
        registry.remove_alias(f"{owner}/{name}", alias, actor=who.owner)
        return Response(status_code=204)

    @app.post(f"{v1}/adapters/{{owner}}/{{name}}/versions/{{version}}/yank", response_model=VersionInfo)
    def yank(caller: Caller, owner: str, name: str, version: RowId, body: YankBody) -> VersionInfo:
        who = need(caller, "publish", owner)
        return registry.yank(f"{owner}/{name}:{version}", actor=who.owner, yanked=body.yanked)

    @app.delete(f"{v1}/adapters/{{owner}}/{{name}}/versions/{{version}}", status_code=204)
    def delete_version(caller: Caller, owner: str, name: str, version: RowId) -> Response:
        who = need(caller, "publish", owner)
        registry.delete(f"{owner}/{name}:{version}", actor=who.owner)
        return Response(status_code=204)

    @app.post(f"{v1}/adapters/{{owner}}/{{name}}/versions/{{selector}}/hub/push", response_model=HubSyncResult)
    def hub_push(caller: Caller, owner: str, name: str, selector: str, body: HubPushBody,
                 hub_token: HubToken = None) -> HubSyncResult:
        who = need(caller, "publish", owner)
        return hub.push(ref_of(owner, name, selector), body.repo_id, actor=who.owner, token=hub_token,
                        revision=body.revision, private=body.private, with_projection=body.with_projection,
                        as_lora=body.format == "lora")

    @app.get(f"{v1}/adapters/{{owner}}/{{name}}/versions/{{selector}}/hub", response_model=list[HubSyncInfo])
    def hub_status(caller: Caller, owner: str, name: str, selector: str) -> list[HubSyncInfo]:
        need(caller, "read")
        return hub.status(ref_of(owner, name, selector))

    @app.post(f"{v1}/hub/pull", response_model=HubSyncResult,
              responses={201: {"description": "Pulled as a new version", "model": HubSyncResult}})
    def hub_pull(caller: Caller, body: HubPullBody, response: Response, hub_token: HubToken = None) -> HubSyncResult:
        who = need(caller, "publish", Ref.parse(body.target).owner)
        result = hub.pull(body.repo_id, target=body.target, actor=who.owner, token=hub_token,
                          revision=body.revision, base_model=body.base_model, base_revision=body.base_revision)
        response.status_code = 201 if result.changed else 200
        return result

    @app.post(f"{v1}/compare", response_model=Comparison)
    def compare(caller: Caller, body: CompareBody) -> Comparison:
        need(caller, "read")
        return registry.compare(body.refs)

    @app.post(f"{v1}/jobs", response_model=JobInfo, status_code=201)
    async def submit_job(
        caller: Caller, target: Annotated[str, Form(description="owner/name to publish the result as")],
        spec: Annotated[str, Form(description="the training spec, a JSON object (vera_core.recipes.TrainSpec)")],
        dataset: Annotated[UploadFile | None, File(description=".csv or .jsonl")] = None,
    ) -> JobInfo:
        owner = Ref.parse(target).owner
        who = need(caller, "publish", owner)
        parsed = json_object(spec, "spec")
        data = None
        if dataset is not None:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "upload"
                await _save_upload(dataset, path, options.max_upload_bytes)
                data = path.read_bytes()
        del who  # allowed to publish under the target's owner, who owns the job
        name = (dataset.filename or "data.csv") if dataset is not None else "data.csv"
        return jobs.submit(parsed, owner=owner, target=target, dataset=data, dataset_name=name)

    @app.get(f"{v1}/jobs", response_model=list[JobInfo])
    def list_jobs(caller: Caller, owner: str | None = None, status: str | None = None,
                  limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[JobInfo]:
        need(caller, "read")
        return jobs.list_jobs(owner=owner, status=status, limit=limit)

    @app.get(f"{v1}/jobs/{{job_id}}", response_model=JobInfo)
    def get_job(caller: Caller, job_id: RowId) -> JobInfo:
        need(caller, "read")
        return jobs.get(job_id)

    @app.get(f"{v1}/jobs/{{job_id}}/events", response_model=list[JobEventInfo])
    def job_events(caller: Caller, job_id: RowId, after: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
                   kind: str | None = None) -> list[JobEventInfo]:
        need(caller, "read")
        return jobs.events(job_id, after=after, kind=kind)

    @app.post(f"{v1}/jobs/{{job_id}}/cancel", response_model=JobInfo)
    def cancel_job(caller: Caller, job_id: RowId) -> JobInfo:
        need(caller, "read")  # 401 before revealing whether the job exists
        job = jobs.get(job_id)
        who = need(caller, "publish", job.owner)
        return jobs.cancel(job_id, actor=who.owner)

    @app.get(f"{v1}/base-models", response_model=list[BaseModelInfo])
    def base_models(caller: Caller) -> list[BaseModelInfo]:
        need(caller, "read")
        return registry.list_base_models()

    @app.get(f"{v1}/projections")
    def projections(caller: Caller) -> list[dict[str, Any]]:
        need(caller, "read")
        return registry.list_projections()

    return app


async def _save_upload(upload: UploadFile, path: Path, limit: int) -> None:
    size = 0
    with path.open("wb") as handle:
        while chunk := await upload.read(CHUNK):
            size += len(chunk)
            if size > limit:
                raise ContentTooLarge(f"{upload.filename or path.name} exceeds the upload limit of {limit:,} bytes "
                                      "(VERA_MAX_UPLOAD_BYTES).")
            handle.write(chunk)


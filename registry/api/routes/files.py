"""A version's files. Each download form is built once and stored (registry.services.derived); from then on every
download streams the stored blob in chunks (a local folder's file is sent as a file).

    GET .../versions/{v}/files                 the form's files: name, size, SHA-256 and hash-addressed URL (with
                                               ?inline=N, the bytes of files up to N bytes too)
    HEAD .../versions/{v}/files                the list's headers only: the pinned version and the list's digest
    GET .../versions/{v}/files/{filename}      one file by name (ETag: its SHA-256; 304 when the caller has it)
    HEAD .../versions/{v}/files/{filename}     its headers only: ETag, Content-Length, Accept-Ranges (not counted)
    GET .../versions/{N}/blobs/{sha256}        one file by hash: immutable; on S3 with VERA_PRESIGNED_DOWNLOADS_S, a
                                               307 to a short-lived presigned URL, so the object store carries it
                                               (HEAD: the headers, from here)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated, Literal, TypeVar
from urllib.parse import quote

import anyio
from fastapi import APIRouter, Header, Path, Query
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.concurrency import run_in_threadpool

from registry.api.bodies import CheckedRoute
from registry.api.deps import ApiOptions, Options, Reader, ReadPool, RegistryDep, ref_of
from registry.api.ratelimit import CostlyReader
from registry.api.uploads import SMALL_FILE, Asked, etag_matches, file_response, head_response, reads_from_start
from registry.domain.errors import Busy, NotFound
from registry.domain.schemas import ADAPTER_FILES, MAX_VERSION, FileEntry, FileManifest, Ref, VersionInfo, files_digest
from registry.services.derived import DerivedFile, FileForm, NotBuilt, named
from registry.services.registry import Registry
from registry.services.validation import MAX_RANK
from registry.services.versions import BOTH_FORMS
from vera_core.lora_options import LoraExport

router = APIRouter(prefix="/api/v1/adapters", route_class=CheckedRoute)
MEDIA_TYPES = {".json": "application/json", ".md": "text/markdown"}
_FILE_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"description": "The file (ETag: its SHA-256)", "content": {
        "application/octet-stream": {}, "application/json": {}, "text/markdown": {}}},
    304: {"description": "Not modified (If-None-Match matched the ETag)"}}


class FileQuery(BaseModel):
    """The download form a request asks for, as query parameters: one model, validated in one pass, where FastAPI
    checks separate parameters one by one (with the cheaper auth dependencies: a file list 1.116 -> 1.073 ms of
    server CPU in-process; bench/RESULTS.md, session 12). The OpenAPI document is the same. A parameter it does not
    know is refused: `?as=lora` (the CLI's option, not the API's) answered the VeRA files (an outsider's finding,
    session 33)."""

    model_config = ConfigDict(extra="forbid")

    projection: bool = Field(False, description="always materialise A and B (by default they are included unless "
                             "PEFT's own generator regenerates them)")
    seed_only: bool = Field(False, description="leave A and B out even where PEFT cannot regenerate them (for "
                            "vera_core; PEFT refuses such files)")
    format: Literal["vera", "lora"] = Field("vera", description="lora: the equivalent rank-r LoRA")
    max_rank: int | None = Field(None, ge=1, le=MAX_RANK, description="lora: at most this rank per layer (the best "
                                 "approximation; errors per layer in README.md)")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="lora: the tensors' dtype")
    engine: Literal["vllm"] | None = Field(None, alias="for", description="lora: at most the rank this serving "
                                           "engine serves (vLLM: 512)")

    @model_validator(mode="after")
    def _options_that_apply(self) -> FileQuery:
        """Options of one form with another are refused, not ignored: `max_rank=8` without format=lora answered the
        VeRA files (an outsider's finding, session 33)."""
        if self.format != "lora" and (self.max_rank is not None or self.dtype != "float32" or self.engine):
            raise ValueError("max_rank, dtype and for shape a LoRA export: add format=lora, or leave them out")
        if self.format == "lora" and (self.projection or self.seed_only):
            raise ValueError("projection and seed_only shape the VeRA form; a LoRA export (format=lora) has no A "
                             "and B to include or leave out: leave them out")
        if self.projection and self.seed_only:  # refused here, not only where the form is built: once anyone had
            raise ValueError(BOTH_FORMS)  # built it, both at once answered its files (an outsider's finding)
        return self

    def form(self) -> FileForm:
        lora = LoraExport(max_rank=self.max_rank, dtype=self.dtype, for_vllm=self.engine == "vllm") \
            if self.format == "lora" else None
        return FileForm(with_projection=self.projection, seed_only=self.seed_only, lora=lora)


class ListQuery(FileQuery):
    inline: int = Field(0, ge=0, le=SMALL_FILE, description="also give the bytes (base64, as each file's content) of "
                        "every file of at most this many bytes: a small adapter's whole download in one request")


RangeHeader = Annotated[str | None, Header(include_in_schema=False)]
IfRangeHeader = Annotated[str | None, Header(include_in_schema=False)]
#: A request that reads a version's weights to show them (the dashboard's Layers tab) says so, and is not counted.
Purpose = Annotated[Literal["download", "inspect"], Header(
    alias="X-Vera-Purpose", description="inspect: the weights are read to be shown (the dashboard's analysis), not "
    "downloaded; such a request is not counted in the version's downloads")]


_LIST_HEADERS = {"X-Vera-Version": "The version the list is of (owner/name:N)",
                 "X-Vera-Files": "The list's digest (FileManifest.digest): equal digests, equal lists",
                 "X-Vera-Yanked": "true or false: whether the version is yanked now",
                 "X-Vera-Yank-Reason": "why it is yanked, percent-encoded UTF-8 (only when it is and one was given)"}


_T = TypeVar("_T")


async def _in(pool: anyio.CapacityLimiter, registry: Registry, ref: Ref, form: FileForm | None,
              work: Callable[..., _T], *args: object) -> _T:
    """``work(*args)`` in the hot reads' threads (deps.ReadPool): blocking work never runs on the event loop. A
    form nobody asked for yet (``form``; NotBuilt) is built in the general pool first, then read: a build may wait
    up to 30 s for a projection slot, and a burst of them must not hold every read thread. The read after the
    build can find the form unbuilt again (an alias moved to a new version, `vera fsck --repair` forgot it):
    built and read again, three times at most, then 503 (Busy: retry)."""
    for _ in range(3):
        try:
            return await anyio.to_thread.run_sync(functools.partial(work, *args), limiter=pool)
        except NotBuilt:
            if form is None:
                raise
        await run_in_threadpool(registry.derived.manifest, ref, form)
    raise Busy(f"The files of {ref} ({form.key if form else 'by hash'}) changed while they were read; retry.")


def _entry(registry: Registry, info: VersionInfo, file: DerivedFile, inline: int) -> str:
    """The file's entry in the list, as JSON: FileEntry's fields, ``content`` (base64) when it is at most ``inline``
    bytes (null when it is larger, absent without ``inline``). Written out here because base64 needs no escaping,
    and the text comes from the file cache: validating and escaping ~150 KB per fetch was a tenth of a busy
    server's time."""
    url = f"{router.prefix}/{info.owner}/{info.name}/versions/{info.version}/blobs/{file.sha256}"
    entry = FileEntry(name=file.filename, size=file.size, sha256=file.sha256, url=url).model_dump_json(
        exclude={"content"})
    if not inline:
        return entry
    if file.size > inline:
        return f'{entry[:-1]},"content":null}}'
    content = registry.derived.base64(info.pinned, file)
    _count(registry, info.pinned, file)
    return f'{entry[:-1]},"content":"{content}"}}'


def _list_headers(pinned: Ref, files: list[DerivedFile], yanked: bool, reason: str | None) -> dict[str, str]:
    """The list's headers; with its yank state, which a client's cached list (checked by its digest, which files
    alone make) is told of: a version yanked after its list was cached was fetched without a warning, and one
    unyanked still warned (a re-check, session 47)."""
    return {"X-Vera-Version": str(pinned),
            "X-Vera-Files": files_digest(str(pinned), ((f.filename, f.sha256, f.size) for f in files)),
            "X-Vera-Yanked": "true" if yanked else "false",
            **({"X-Vera-Yank-Reason": quote(reason, safe="")} if yanked and reason else {})}


@router.get("/{owner}/{name}/versions/{selector}/files", response_model=FileManifest,
            responses={200: {"headers": {k: {"description": v, "schema": {"type": "string"}}
                                         for k, v in _LIST_HEADERS.items()}}})
async def manifest(_: CostlyReader, registry: RegistryDep, pool: ReadPool, owner: str, name: str, selector: str,
                   query: Annotated[ListQuery, Query()]) -> Response:
    """The files a download of this version in this form gives, each with its size, SHA-256 and immutable URL:
    one request tells a client everything it needs (and which files its cache already holds); with ``inline``,
    the small files' bytes too."""
    form, ref = query.form(), ref_of(owner, name, selector)
    return await _in(pool, registry, ref, form, _manifest, registry, ref, form, query.inline)


def _manifest(registry: Registry, ref: Ref, form: FileForm, inline: int) -> Response:
    info, files = registry.derived.manifest(ref, form, build=False)
    # a FileManifest's JSON, written here: the hot path of every fetch, which FastAPI would validate once more
    # through response_model; the entries are written by _entry
    head = FileManifest(version=info, form=form.key, files=[]).model_dump_json()
    assert head.endswith('"files":[]}'), "FileManifest's last field must be files"
    body = f"{head[:-3]}[{','.join(_entry(registry, info, f, inline) for f in files)}]}}"
    return Response(body, media_type="application/json",
                    headers=_list_headers(info.pinned, files, info.yanked, info.yank_reason))


@router.head("/{owner}/{name}/versions/{selector}/files", response_class=Response,
             responses={200: {"description": "The list's headers, no body", "content": None,
                              "headers": {k: {"description": v, "schema": {"type": "string"}}
                                          for k, v in _LIST_HEADERS.items()}}})
async def manifest_head(_: CostlyReader, registry: RegistryDep, pool: ReadPool, owner: str, name: str,
                        selector: str, query: Annotated[ListQuery, Query()]) -> Response:
    """The file list's headers only (the pinned version and the list's digest), from one query once the files
    are built: how a client's cache checks that the files it holds are still what this reference gives."""
    form, ref = query.form(), ref_of(owner, name, selector)
    listed = await _in(pool, registry, ref, form, functools.partial(registry.derived.listing, build=False), ref, form)
    response = Response(headers=_list_headers(*listed), media_type="application/json")
    # the list's length is known only by writing it, which this one query does not: said by none rather than as 0
    # (RFC 9110 9.3.2 lets a HEAD omit what only the content determines; "0" was a wrong one)
    del response.headers["content-length"]
    return response


@router.get("/{owner}/{name}/versions/{selector}/files/{filename}", response_class=Response,
            responses=_FILE_RESPONSES)
async def download(
    _: CostlyReader, registry: RegistryDep, pool: ReadPool, owner: str, name: str, selector: str, filename: str,
    query: Annotated[FileQuery, Query()], if_none_match: Annotated[str | None, Header()] = None,
    purpose: Purpose = "download", range: RangeHeader = None, if_range: IfRangeHeader = None,
) -> Response:
    _check_file_name(filename)
    form, ref = query.form(), ref_of(owner, name, selector)
    return await _in(pool, registry, ref, form, _download, registry, ref, form, filename, if_none_match,
                     purpose == "download", False, (range, if_range))


@router.head("/{owner}/{name}/versions/{selector}/files/{filename}", response_class=Response,
             summary="A file's headers, no body",
             responses={200: {"description": "The file's headers, no body (ETag, Content-Length, Accept-Ranges)",
                              "content": None}, 304: _FILE_RESPONSES[304]})
async def download_head(
    _: CostlyReader, registry: RegistryDep, pool: ReadPool, owner: str, name: str, selector: str, filename: str,
    query: Annotated[FileQuery, Query()], if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """The headers a GET of the file answers (its SHA-256 as ETag, its size, whether it takes a Range, the pinned
    version), without its bytes, and not counted as a download: what `curl -I` and download managers ask first
    (a 405 until 2026-12-06)."""
    _check_file_name(filename)
    form, ref = query.form(), ref_of(owner, name, selector)
    return await _in(pool, registry, ref, form, _download, registry, ref, form, filename, if_none_match, False,
                     True)


def _check_file_name(filename: str) -> None:
    if filename not in ADAPTER_FILES:
        raise NotFound(f"{filename!r} is not an adapter file; expected one of {', '.join(ADAPTER_FILES)}.")


def _download(registry: Registry, ref: Ref, form: FileForm, filename: str, if_none_match: str | None,
              counted: bool, head: bool = False, asked: Asked = (None, None)) -> Response:
    info, files = registry.derived.manifest(ref, form, build=False)
    file = named(info, form, files, filename)
    headers = {"Cache-Control": "private, max-age=0, must-revalidate"}
    if form.lora is not None and (error := registry.derived.lora_max_relative_error(file, files)) is not None:
        headers["X-Vera-Lora-Max-Relative-Error"] = error  # a rank-capped LoRA: its largest per-layer error
    return _send(registry, info.pinned, file, headers, if_none_match, counted, head, asked)


@router.get("/{owner}/{name}/versions/{version}/blobs/{sha256}", response_class=Response,
            responses={**_FILE_RESPONSES, 307: {"description": "Get it from the object store (a presigned URL, "
                                                "VERA_PRESIGNED_DOWNLOADS_S)"}})
async def blob(
    _: Reader, registry: RegistryDep, options: Options, pool: ReadPool, owner: str, name: str,
    version: Annotated[int, Path(ge=1, le=MAX_VERSION)], sha256: Annotated[str, Path(pattern="^[0-9a-f]{64}$")],
    if_none_match: Annotated[str | None, Header()] = None, purpose: Purpose = "download",
    range: RangeHeader = None, if_range: IfRangeHeader = None,
) -> Response:
    """A file of the version by its SHA-256 (as the file list names it): the same URL always answers the same
    bytes, so it may be cached for good."""
    ref = Ref.of(owner, name, version=version)
    return await _in(pool, registry, ref, None, _blob, registry, options, ref, sha256, if_none_match,
                     purpose == "download", False, (range, if_range))


@router.head("/{owner}/{name}/versions/{version}/blobs/{sha256}", response_class=Response,
             summary="A file's headers by its SHA-256, no body",
             responses={200: {"description": "The file's headers, no body", "content": None},
                        304: _FILE_RESPONSES[304]})
async def blob_head(
    _: Reader, registry: RegistryDep, options: Options, pool: ReadPool, owner: str, name: str,
    version: Annotated[int, Path(ge=1, le=MAX_VERSION)], sha256: Annotated[str, Path(pattern="^[0-9a-f]{64}$")],
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """The headers a GET of the file by its SHA-256 answers, from this server (never a redirect), not counted."""
    ref = Ref.of(owner, name, version=version)
    return await _in(pool, registry, ref, None, _blob, registry, options, ref, sha256, if_none_match, False, True)


def _blob(registry: Registry, options: ApiOptions, ref: Ref, sha256: str, if_none_match: str | None,
          counted: bool, head: bool = False, asked: Asked = (None, None)) -> Response:
    file = registry.derived.by_digest(ref, sha256)
    headers = {"Cache-Control": "private, max-age=31536000, immutable"}
    if options.presigned_downloads_s and (if_none_match is None) and not head and (
            url := registry.derived.presigned_url(file, options.presigned_downloads_s)):
        if counted:
            _count(registry, ref, file)
        return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store", "X-Vera-Version": str(ref)})
    return _send(registry, ref, file, headers, if_none_match, counted, head, asked)


def _count(registry: Registry, ref: Ref, file: DerivedFile) -> None:
    if file.filename == ADAPTER_FILES[1] and ref.version is not None:  # the weights: one download of the version
        registry.downloads.count(ref.owner, ref.name, ref.version)  # (in memory; flushed in batches)


def _send(registry: Registry, ref: Ref, file: DerivedFile, headers: dict[str, str],
          if_none_match: str | None, counted: bool, head: bool = False, asked: Asked = (None, None)) -> Response:
    """The stored file (or 304 if the caller holds it): a checked local file, or streamed from storage in chunks;
    ``head``: only the headers of that answer. Counted (``counted``) when the answer holds the file from its start
    (``asked``: the request's Range and If-Range)."""
    etag = f'"{file.sha256}"'
    headers = {**headers, "ETag": etag, "X-Vera-Version": str(ref),
               "Content-Disposition": f'attachment; filename="{file.filename}"'}
    if etag_matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    source = registry.derived.source(ref, file)
    if counted and reads_from_start(source, file.size, asked, etag):
        _count(registry, ref, file)
    media = next((t for suffix, t in MEDIA_TYPES.items() if file.filename.endswith(suffix)), "application/octet-stream")
    return (head_response if head else file_response)(source, file.size, media, headers)

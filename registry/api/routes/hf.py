"""The HuggingFace Hub's read protocol under /hf, so that `huggingface_hub` and everything built on it (PEFT,
transformers, vLLM, `hf download`) pull the registry's adapters by name with ``HF_ENDPOINT=<registry>/hf``.

Spoken: model info (``/api/models/{repo}`` and ``/revision/{rev}``), the file tree (``/api/models/{repo}/tree/{rev}``)
and file resolution (GET and HEAD ``/{repo}/resolve/{rev}/{file}``) with the headers the client relies on
(``X-Repo-Commit``, ``ETag``, ``Content-Length``); errors carry the Hub's ``X-Error-Code`` (RepoNotFound,
RevisionNotFound, EntryNotFound) so that the client raises its own error classes. A file asked for by a revision that
is not a commit is redirected (307, relative) to the same file at the commit, so a client never stores a file of one
version under another's commit while an alias moves. What the revisions mean: registry.services.hub_view. Writes are
answered 405 by registry.api.gate before any body is read.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response

from registry.api.deps import Reader, RegistryDep
from registry.api.problems import HUB_PREFIX, LORA_HUB_PREFIX
from registry.api.ratelimit import CostlyReader, spend
from registry.api.uploads import etag_matches, file_response, head_response, reads_from_start
from registry.domain.errors import EntryNotFound
from registry.domain.schemas import ADAPTER_FILES
from registry.services.hub_view import HubRevision, HubView

_routes = APIRouter()
_FILE: dict[int | str, dict[str, Any]] = {
    200: {"description": "The file", "content": {"application/octet-stream": {}}},
    307: {"description": "The same file at the revision's commit"},
}


async def _view(request: Request, registry: RegistryDep, who: Reader) -> HubView:
    """The Hub view of this request: a form it builds (model info and tree build them too, a LoRA export, A and
    B) counts against the caller's costly budget; until 2026-12-06 only a file's GET counted, and model info
    built forms past a spent budget (an outsider's finding)."""
    return HubView(registry, default_variant=_default_variant(request), on_build=lambda: spend(request, who))


async def _costly_view(request: Request, registry: RegistryDep) -> HubView:
    """The Hub view of a route that counts every request already (CostlyReader): a build is not counted twice."""
    return HubView(registry, default_variant=_default_variant(request))


def _default_variant(request: Request) -> str:
    return "lora" if request.scope["path"].startswith(LORA_HUB_PREFIX + "/") else ""


View = Annotated[HubView, Depends(_view)]
CostlyView = Annotated[HubView, Depends(_costly_view)]


def _hub_time(at: datetime) -> str:
    """The Hub's timestamps: UTC, milliseconds, 'Z' (what huggingface_hub parses)."""
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def _model_info(rev: HubRevision, blobs: bool) -> dict[str, Any]:
    info = rev.info
    siblings = [{"rfilename": name, **({"size": rev.size(name), "blobId": rev.blob_id(name)} if blobs else {})}
                for name in rev.names]
    card = rev.card_data()
    return {
        "_id": rev.commit[:24], "id": rev.repo_id, "modelId": rev.repo_id, "author": info.owner, "sha": rev.commit,
        "lastModified": _hub_time(rev.last_modified), "createdAt": _hub_time(rev.last_modified),
        "private": info.visibility == "private", "disabled": False, "gated": False, "downloads": info.downloads,
        "likes": 0,
        "library_name": card.get("library_name", "peft"), "tags": card.get("tags", []), "pipeline_tag": None,
        "cardData": card, "siblings": siblings, "spaces": [],
        "usedStorage": sum(rev.size(name) for name in rev.names),
    }


@_routes.get("/api/models/{owner}/{name}", summary="Model info at main (the latest version)")
def model_info(_: Reader, view: View, owner: str, name: str,
               blobs: Annotated[bool, Query(description="file sizes and blob ids in siblings")] = False
               ) -> JSONResponse:
    return JSONResponse(_model_info(view.revision(owner, name, "main"), blobs))


@_routes.get("/api/models/{owner}/{name}/revision/{revision}", summary="Model info at a revision")
def model_info_at(_: Reader, view: View, owner: str, name: str, revision: str,
                  blobs: Annotated[bool, Query(description="file sizes and blob ids in siblings")] = False
                  ) -> JSONResponse:
    return JSONResponse(_model_info(view.revision(owner, name, revision), blobs))


@_routes.get("/api/models/{owner}/{name}/tree/{revision}", summary="The files of a revision (one folder)")
@_routes.get("/api/models/{owner}/{name}/tree/{revision}/{path:path}", include_in_schema=False)
def tree(_: Reader, view: View, owner: str, name: str, revision: str, path: str = "") -> JSONResponse:
    """The revision's files (all at the top: ``recursive`` changes nothing)."""
    rev = view.revision(owner, name, revision)
    if path.strip("/"):
        raise EntryNotFound(f"{rev.repo_id} has no folder {path[:100]!r}: its files are all at the top.")
    return JSONResponse([{"type": "file", "oid": rev.blob_id(n), "size": rev.size(n), "path": n}
                         for n in rev.names])


@_routes.get("/{owner}/{name}/resolve/{revision}/{filename:path}", response_class=Response,
             summary="A file of a revision (HEAD: its headers)", responses=_FILE)
@_routes.head("/{owner}/{name}/resolve/{revision}/{filename:path}", response_class=Response, include_in_schema=False)
def resolve(request: Request, _: CostlyReader, view: CostlyView, owner: str, name: str, revision: str,
            filename: str) -> Response:
    rev = view.revision(owner, name, revision)
    size = rev.size(filename)  # EntryNotFound first
    headers = {"X-Repo-Commit": rev.commit, "ETag": f'"{rev.sha256(filename)}"', "X-Vera-Version": rev.info.ref}
    if revision != rev.commit:  # to the commit: what the client stores under it is what that commit holds
        headers["Location"] = f"../{rev.commit}/{filename}"
        headers["Cache-Control"] = "no-cache"
        return Response(status_code=307, headers=headers)
    headers["Cache-Control"] = "private, max-age=31536000, immutable"  # a commit's files never change
    if etag_matches(request.headers.get("if-none-match"), headers["ETag"]):  # (the whole file until 2026-12-06)
        return Response(status_code=304, headers=headers)
    if request.method == "HEAD":  # the GET's headers, Accept-Ranges as it answers (always "none" until 2026-12-06)
        return head_response(rev.source(filename), size, "application/octet-stream", headers)
    source = rev.source(filename)
    asked = (request.headers.get("range"), request.headers.get("if-range"))
    if filename == ADAPTER_FILES[1] and reads_from_start(source, size, asked, headers["ETag"]):
        view.registry.downloads.count(rev.info.owner, rev.info.name, rev.info.version)  # (the weights, from their
    return file_response(source, size, "application/octet-stream", headers)  # start: in memory, flushed in batches)


#: /hf: revisions without a suffix give what a default fetch gives (VeRA, PEFT-correct).
router = APIRouter(prefix=HUB_PREFIX, tags=["hub protocol (read-only)"])
router.include_router(_routes)
#: /hf-lora: the same, with the LoRA form by default, for clients that cannot name a revision (vLLM's LoRA requests
#: by repo id): HF_ENDPOINT=<registry>/hf-lora.
lora_router = APIRouter(prefix=LORA_HUB_PREFIX, include_in_schema=False)
lora_router.include_router(_routes)

"""A version's files, streamed with an ETag (their SHA-256) and answered 304 when the caller has them."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query
from fastapi.responses import Response

from registry.api.deps import RegistryDep, ref_of
from registry.api.ratelimit import CostlyReader
from registry.api.uploads import streamed
from registry.domain.errors import NotFound
from registry.domain.schemas import ADAPTER_FILES
from registry.services.validation import MAX_RANK
from vera_core.lora import LoraExport
from vera_core.serialization import metadata_of

router = APIRouter(prefix="/api/v1/adapters")
MEDIA_TYPES = {".json": "application/json", ".md": "text/markdown"}


@router.get("/{owner}/{name}/versions/{selector}/files/{filename}", response_class=Response,
            responses={200: {"description": "The file (ETag: its SHA-256)", "content": {
                "application/octet-stream": {}, "application/json": {}, "text/markdown": {}}},
                304: {"description": "Not modified (If-None-Match matched the ETag)"}})
def download(
    _: CostlyReader, registry: RegistryDep, owner: str, name: str, selector: str, filename: str,
    projection: Annotated[bool, Query(description="always materialise A and B (by default they are included "
                                      "unless PEFT's own generator regenerates them)")] = False,
    seed_only: Annotated[bool, Query(description="leave A and B out even where PEFT cannot regenerate them "
                                     "(for vera_core; PEFT refuses such files)")] = False,
    format: Annotated[Literal["vera", "lora"], Query(description="lora: the equivalent rank-r LoRA")] = "vera",
    max_rank: Annotated[int | None, Query(ge=1, le=MAX_RANK, description="lora: at most this rank per layer (the "
                                          "best approximation; errors per layer in README.md)")] = None,
    dtype: Annotated[Literal["float32", "bfloat16", "float16"], Query(description="lora: the tensors' dtype")
                     ] = "float32",
    engine: Annotated[Literal["vllm"] | None, Query(alias="for", description="lora: snap the rank down to one "
                                                    "this serving engine accepts")] = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    if filename not in ADAPTER_FILES:
        raise NotFound(f"{filename!r} is not an adapter file; expected one of {', '.join(ADAPTER_FILES)}.")
    lora = LoraExport(max_rank=max_rank, dtype=dtype, for_vllm=engine == "vllm")
    info, built = registry.built(ref_of(owner, name, selector), with_projection=projection,
                                 seed_only=seed_only, as_lora=format == "lora", lora=lora)
    files = built.files
    if filename not in files:
        raise NotFound(f"The {format} export has no {filename}; it has {', '.join(files)}.")
    data = files[filename]
    etag = f'"{built.sha256[filename]}"'
    headers = {"ETag": etag, "Cache-Control": "private, max-age=0, must-revalidate", "X-Vera-Version": info.ref}
    error = metadata_of(files[ADAPTER_FILES[1]]).get("vera_core.lora_max_relative_error") if format == "lora" else None
    if error is not None:  # a rank-capped LoRA: its largest per-layer error (each layer's is in README.md)
        headers["X-Vera-Lora-Max-Relative-Error"] = error
    if if_none_match is not None and etag in {t.strip() for t in if_none_match.split(",")}:
        return Response(status_code=304, headers=headers)

    if filename == ADAPTER_FILES[1]:  # the weights: one download of the version (in memory; flushed in batches)
        registry.downloads.count(info.owner, info.name, info.version)
    media = next((t for suffix, t in MEDIA_TYPES.items() if filename.endswith(suffix)), "application/octet-stream")
    return streamed(data, media, headers)

"""Uploaded files, spooled to a temporary folder in chunks and refused as soon as they pass the size limit; and
downloads, answered in the same chunks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi import UploadFile
from fastapi.responses import StreamingResponse

from registry.domain.errors import ContentTooLarge, RegistryError

CHUNK = 1 << 16


def streamed(data: bytes, media_type: str, headers: dict[str, str]) -> StreamingResponse:
    """``data`` as a response sent in CHUNK-sized pieces, with its Content-Length."""

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(data), CHUNK):
            yield data[i:i + CHUNK]

    return StreamingResponse(chunks(), media_type=media_type, headers={**headers, "Content-Length": str(len(data))})


async def save_upload(upload: UploadFile, path: Path, limit: int) -> None:
    size = 0
    with path.open("wb") as handle:
        while chunk := await upload.read(CHUNK):
            size += len(chunk)
            if size > limit:
                raise ContentTooLarge(f"{upload.filename or path.name} exceeds the upload limit of {limit:,} bytes "
                                      "(VERA_MAX_UPLOAD_BYTES).")
            handle.write(chunk)


@contextmanager
def without_server_paths(folder: str, name: str) -> Iterator[None]:
    """Registry errors raised inside name ``name`` where they named the server's temporary ``folder``."""
    try:
        yield
    except RegistryError as exc:
        text = str(exc)
        if folder not in text:
            raise
        raise type(exc)(text.replace(f"{folder}/", "").replace(folder, name)) from None

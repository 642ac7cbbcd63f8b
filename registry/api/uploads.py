"""Uploaded files, spooled to a temporary folder in chunks and refused as soon as they pass the size limit; and
downloads, answered without holding a large file in memory."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi import UploadFile
from fastapi.responses import FileResponse, Response, StreamingResponse

from registry.domain.errors import ContentTooLarge, RegistryError
from registry.store.blobs import BlobReader, chunks

CHUNK = 1 << 16
#: Downloads up to this size are answered whole; larger ones are sent as a file or streamed.
SMALL_FILE = 1 << 20


def file_response(source: bytes | str | BlobReader, size: int, media_type: str, headers: dict[str, str]
                  ) -> Response:
    """A download as a response, never a whole large file in memory: bytes as they are; a checked local path or a
    storage reader (registry.services.derived) read whole when small (here, in the route's worker thread, which
    saves the thread-pool hops of a file response), else sent as a file or streamed in pieces."""
    if isinstance(source, bytes):
        return Response(source, media_type=media_type, headers=headers)
    if size <= SMALL_FILE:
        return Response(b"".join(chunks(source)), media_type=media_type, headers=headers)
    if isinstance(source, str):
        return FileResponse(source, media_type=media_type, headers=headers)
    return StreamingResponse(iter(source), media_type=media_type, headers={**headers, "Content-Length": str(size)})


async def save_upload(upload: UploadFile, path: Path, limit: int, setting: str = "VERA_MAX_UPLOAD_BYTES") -> None:
    """Write ``upload`` to ``path``, ContentTooLarge once it passes ``limit`` bytes (``setting``: what sets it)."""
    size = 0
    with path.open("wb") as handle:
        while chunk := await upload.read(CHUNK):
            size += len(chunk)
            if size > limit:
                raise ContentTooLarge(f"{upload.filename or path.name} exceeds the upload limit of {limit:,} bytes "
                                      f"({setting}).")
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

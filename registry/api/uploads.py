"""Uploaded files, spooled to a temporary folder in chunks and refused as soon as they pass the size limit; and
downloads, answered without holding a large file in memory."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi import UploadFile
from fastapi.responses import FileResponse, Response, StreamingResponse
from starlette.responses import MalformedRangeHeader

from registry.domain.errors import ContentTooLarge, RegistryError
from registry.store.blobs import BlobReader, chunks

CHUNK = 1 << 16
#: Downloads up to this size are answered whole; larger ones are sent as a file or streamed.
SMALL_FILE = 1 << 20


def file_response(source: bytes | str | BlobReader, size: int, media_type: str, headers: dict[str, str]
                  ) -> Response:
    """A download as a response, never a whole large file in memory: bytes as they are; a checked local path or a
    storage reader (registry.services.derived) read whole when small (here, in the route's worker thread, which
    saves the thread-pool hops of a file response), else sent as a file or streamed in pieces. Only the file
    answers a Range (``Accept-Ranges: bytes``; the others say ``none``, and answer a Range with the whole body)."""
    if isinstance(source, bytes):
        return Response(source, media_type=media_type, headers={**headers, "Accept-Ranges": "none"})
    if size <= SMALL_FILE:
        return Response(b"".join(chunks(source)), media_type=media_type, headers={**headers, "Accept-Ranges": "none"})
    if isinstance(source, str):
        return RangedFile(source, media_type=media_type, headers={**headers, "Accept-Ranges": "bytes"})
    return StreamingResponse(iter(source), media_type=media_type,
                             headers={**headers, "Content-Length": str(size), "Accept-Ranges": "none"})


class RangedFile(FileResponse):
    """A file that answers a Range header as RFC 9110 says: one it cannot read (another unit, ``bytes=5-1``, no
    range at all) is ignored, and the whole file answered (200), where Starlette answered 400 in plain text, the
    one error of the API that was not a problem document (an outsider's finding, session 43). A range past the
    end is still 416 with its Content-Range."""

    @classmethod
    def _parse_range_header(cls, http_range: str, file_size: int) -> list[tuple[int, int]]:
        try:
            return super()._parse_range_header(http_range, file_size)
        except MalformedRangeHeader:
            return []  # (Starlette's own answer to too many ranges: the whole file)


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

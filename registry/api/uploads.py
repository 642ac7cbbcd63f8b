"""Uploaded files, spooled to a temporary folder in chunks and refused as soon as they pass the size limit; and
downloads, answered without holding a large file in memory."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio.to_thread
from fastapi import UploadFile
from fastapi.responses import FileResponse, Response, StreamingResponse
from starlette.datastructures import Headers
from starlette.responses import RangeNotSatisfiable
from starlette.types import Receive, Scope, Send

from registry.api.problems import problem
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
    if takes_ranges(source, size):
        return RangedFile(str(source), media_type=media_type, headers={**headers, "Accept-Ranges": "bytes"})
    if isinstance(source, bytes):
        return Response(source, media_type=media_type, headers={**headers, "Accept-Ranges": "none"})
    if size <= SMALL_FILE:
        return Response(b"".join(chunks(source)), media_type=media_type, headers={**headers, "Accept-Ranges": "none"})
    assert not isinstance(source, str), "a local file larger than SMALL_FILE takes ranges"
    return StreamingResponse(iter(source), media_type=media_type,
                             headers={**headers, "Content-Length": str(size), "Accept-Ranges": "none"})


def takes_ranges(source: bytes | str | BlobReader, size: int) -> bool:
    """Whether file_response answers a Range for this source: a local file larger than SMALL_FILE."""
    return isinstance(source, str) and size > SMALL_FILE


#: A request's Range and If-Range headers (None where absent).
Asked = tuple[str | None, str | None]


def reads_from_start(source: bytes | str | BlobReader, size: int, asked: Asked, etag: str) -> bool:
    """Whether file_response's answer to a GET with this Range (and If-Range) holds the file from its first byte:
    no Range, a file that answers a Range whole, a Range it ignores or whose If-Range is not this file's ``etag``,
    or one whose first piece starts at 0. A download is counted then, not for each later piece of a resumed or
    parallel download, nor for a 416 (each was counted until 2026-12-06: an outsider's finding)."""
    http_range, if_range = asked
    if http_range is None or not takes_ranges(source, size):
        return True
    if if_range is not None and not if_range_holds(if_range, etag):  # a stale If-Range: the whole file
        return True
    try:
        ranges = RangedFile._parse_range_header(http_range, size)
    except RangeNotSatisfiable:
        return False
    return not ranges or ranges[0][0] == 0


def if_range_holds(if_range: str, etag: str | None) -> bool:
    """Whether an If-Range lets its Range apply: it holds this file's entity tag, strong (RFC 9110 compares If-Range
    strongly; a date matches nothing here, where no Last-Modified is sent: the whole file is answered)."""
    return not if_range.startswith("W/") and if_range == etag


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an If-None-Match header names ``etag`` (RFC 9110's weak comparison: ``W/"x"`` matches ``"x"``) or
    is ``*``: the caller holds the file, a 304. A weak tag or ``*`` answered the whole file until 2026-12-06."""
    if if_none_match is None:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in tags or etag in tags


def head_response(source: bytes | str | BlobReader, size: int, media_type: str, headers: dict[str, str]
                  ) -> Response:
    """The headers file_response would answer a GET with (its length, type, and whether it takes a Range), no body
    read: a HEAD's answer. A storage reader opened for it is closed unread."""
    if isinstance(source, BlobReader):
        source.close()
    return Response(media_type=media_type, headers={
        **headers, "Content-Length": str(size), "Accept-Ranges": "bytes" if takes_ranges(source, size) else "none"})


#: A Range header as RFC 9110 writes one: ``bytes=`` then ranges ``first-last``, ``first-`` or ``-suffix``.
_RANGES = re.compile(r"bytes=(?:\d+-\d*|-\d+)(?:[ \t]*,[ \t]*(?:\d+-\d*|-\d+))*", re.IGNORECASE)


class RangedFile(FileResponse):
    """A file that answers a Range header as RFC 9110 says: one it cannot read (another unit, ``bytes=5-1``,
    ``bytes=--5``, ``bytes=+5-10``, no range at all) is ignored, and the whole file answered (200), where Starlette
    answered 400 in plain text, the one error of the API that was not a problem document, or read some of them (an
    outsider's findings, session 43); ranges past the end are left out, and only when all are is the answer 416
    (with its Content-Range), where one of them made it so: a problem document saying the file's size (Starlette's
    was an empty text/plain, until session 44)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope)
        http_range, if_range = headers.get("range"), headers.get("if-range")
        if http_range is not None and scope["type"] == "http" and scope["method"].upper() in ("GET", "HEAD"):
            if self.stat_result is None:  # (what FileResponse does next, done once here)
                self.stat_result = await anyio.to_thread.run_sync(os.stat, self.path)
                self.set_stat_headers(self.stat_result)
            size = self.stat_result.st_size
            try:
                if if_range is None or self._should_use_range(if_range):
                    self._parse_range_header(http_range, size)
            except RangeNotSatisfiable:
                asked = " ".join(http_range.split())[:100]
                answer = problem(416, "range_not_satisfiable", f"The Range {asked!r} asks for no byte of this file, "
                                 f"which holds {size:,} bytes: ask for bytes from 0 to {size - 1} (bytes=0-"
                                 f"{size - 1}), or send no Range for the whole file." if size else
                                 f"The Range {asked!r} asks for bytes of an empty file; send no Range.",
                                 scope["path"])
                answer.headers["Content-Range"] = f"bytes */{size}"
                await answer(scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    def set_stat_headers(self, stat_result: os.stat_result) -> None:
        """Its length only: no Last-Modified (the stored blob's time, not the version's, and another after a form
        is built again, where the ETag, the bytes' SHA-256, stays: a HEAD said none), and the route's ETag."""
        self.headers.setdefault("content-length", str(stat_result.st_size))

    def _should_use_range(self, http_if_range: str) -> bool:
        return if_range_holds(http_if_range, self.headers.get("etag"))

    @classmethod
    def _parse_range_header(cls, http_range: str, file_size: int) -> list[tuple[int, int]]:
        """(start, end) of each range to send, ``end`` excluded, overlapping ones merged; [] for the whole file."""
        text = http_range.strip()
        if not _RANGES.fullmatch(text) or text.count(",") + 1 > cls.max_ranges:
            return []  # (Starlette's own answer to too many ranges: the whole file)
        ranges: list[tuple[int, int]] = []
        for spec in text.split("=", 1)[1].split(","):
            first, last = (part.strip() for part in spec.split("-"))
            if not first:  # the last ``last`` bytes
                if int(last) > 0 and file_size > 0:
                    ranges.append((max(file_size - int(last), 0), file_size))
                continue
            if last and int(last) < int(first):
                return []  # an invalid range: the header is ignored
            if int(first) < file_size:  # (one that starts past the end is left out)
                ranges.append((int(first), min(int(last) + 1, file_size) if last else file_size))
        if not ranges:
            raise RangeNotSatisfiable(file_size)
        ranges.sort()
        merged = [ranges[0]]
        for start, end in ranges[1:]:
            if start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], end))
            else:
                merged.append((start, end))
        return merged


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

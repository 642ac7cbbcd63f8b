"""The header of a safetensors file (8 bytes of little-endian length, then JSON) and its ``__metadata__``, read
without torch: the registry's metadata paths (a download's listing, a version's layer sizes) read them, and a
server that only lists and serves never imports torch (vera_core.serialization writes and reads the tensors)."""

from __future__ import annotations

import io
import struct
from typing import IO

from vera_core.errors import JSONTextError, parse_json

#: The longest safetensors header read (safetensors' own limit is 100 MB).
MAX_HEADER_BYTES = 100 << 20


def read_header(file: IO[bytes], size: int | None = None) -> tuple[dict[str, object], int]:
    """The JSON header of the safetensors file open in ``file`` at its start (8 bytes of little-endian length, then
    the JSON), and that length; ``size``: the file's, when known, which the header must fit. Anything else is a
    ValueError saying what is wrong: the one reader of headers for untrusted files."""
    head = file.read(8)
    (length,) = struct.unpack("<Q", head) if len(head) == 8 else (0,)
    limit = MAX_HEADER_BYTES if size is None else min(size - 8, MAX_HEADER_BYTES)
    if not 0 < length <= limit:
        raise ValueError(f"not a safetensors file: its header length {length:,} does not fit "
                         + (f"its {size:,} bytes" if size is not None else f"the {MAX_HEADER_BYTES:,}-byte limit"))
    text = file.read(length)
    try:
        # keys_once: a tensor named twice was read as its last entry by safetensors and by this reader alike, the
        # file stored with both (an outsider's finding, session 54)
        header = parse_json(text, keys_once=True) if len(text) == length else None
    except JSONTextError as exc:
        raise ValueError(f"not a safetensors file: its header {str(exc)[:200]}") from None
    if not isinstance(header, dict):
        raise ValueError("not a safetensors file: its header is not a JSON object (or ends early)")
    return header, length


def metadata_of(data: bytes | IO[bytes]) -> dict[str, str]:
    """The ``__metadata__`` of safetensors bytes or of a file open at its start (strings to strings; an entry that
    is not is left out); a header that is not one is a ValueError."""
    file = io.BytesIO(data) if isinstance(data, bytes) else data
    header, _ = read_header(file, len(data) if isinstance(data, bytes) else None)
    metadata = header.get("__metadata__")
    return {k: v for k, v in metadata.items() if isinstance(k, str) and isinstance(v, str)} \
        if isinstance(metadata, dict) else {}

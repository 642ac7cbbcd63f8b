"""Deterministic safetensors bytes.

The safetensors library writes its ``__metadata__`` map in hash order, so the same tensors and metadata give
different bytes from run to run. Content addressing and byte-for-byte stable downloads need one fixed layout:
this writes the standard format (8-byte little-endian header length, JSON header, raw little-endian data) with
the metadata keys and tensor names sorted and compact JSON, padded to 8 bytes like the library does. Any
safetensors reader loads it; reading still goes through the safetensors library.
"""

from __future__ import annotations

import ctypes
import io
import json
import math
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import IO

import torch

from vera_core.headers import MAX_HEADER_BYTES as MAX_HEADER_BYTES  # their home: torch-free, for metadata readers
from vera_core.headers import metadata_of as metadata_of
from vera_core.headers import read_header

_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}
_DTYPE_OF = {name: dtype for dtype, name in _DTYPES.items()}  # a header's dtype name: the torch dtype


@dataclass(frozen=True)
class Streamed:
    """A tensor written piece by piece (``write``): its dtype and shape, and its row blocks in order, never whole."""

    dtype: torch.dtype
    shape: tuple[int, ...]
    blocks: Iterable[torch.Tensor]


def to_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """The safetensors encoding of ``tensors`` and ``metadata``; equal inputs give equal bytes."""
    out = io.BytesIO()
    write(out, tensors, metadata)
    return out.getvalue()


def write(out: IO[bytes], tensors: Mapping[str, torch.Tensor | Streamed], metadata: dict[str, str] | None = None
          ) -> None:
    """``to_bytes`` written to ``out``; a ``Streamed`` tensor's blocks are written as they come, so the largest
    piece held is one block (checked: its blocks must add up to its shape exactly)."""
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {k: metadata[k] for k in sorted(metadata)}
    offset, sizes = 0, dict[str, int]()
    for name in sorted(tensors):
        tensor = tensors[name]
        dtype, shape = tensor.dtype, tuple(tensor.shape)
        if dtype not in _DTYPES:
            raise TypeError(f"Tensor {name!r} has dtype {dtype}, which safetensors cannot store here.")
        size = math.prod(shape) * dtype.itemsize
        header[name] = {"dtype": _DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset, sizes[name] = offset + size, size
    encoded = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)
    out.write(struct.pack("<Q", len(encoded)) + encoded)
    for name in sorted(tensors):
        tensor = tensors[name]
        pieces = tensor.blocks if isinstance(tensor, Streamed) else (tensor,)
        written = 0
        for piece in pieces:
            written += _write_tensor(out, piece.detach().to("cpu", tensor.dtype).contiguous())
        if written != sizes[name]:
            raise ValueError(f"Tensor {name!r}: its blocks gave {written:,} bytes, not the {tuple(tensor.shape)} "
                             "its header declares.")


def _write_tensor(out: IO[bytes], tensor: torch.Tensor) -> int:
    size = tensor.numel() * tensor.element_size()
    if size:
        out.write(ctypes.string_at(tensor.data_ptr(), size))
    return size


def read_rows(file: IO[bytes], key: str, block_bytes: int) -> Streamed:
    """Tensor ``key`` of the safetensors file open for reading in ``file``, as row blocks of about ``block_bytes``
    read with plain reads as they are consumed: no memory map, so the file's pages are not mapped into the process
    however large it is (safetensors' ``safe_open`` maps the whole file, and every page it reads stays resident).
    ``file`` must stay open while the blocks are read. A header that does not fit the file is a ValueError."""
    file.seek(0, 2)
    end = file.tell()
    file.seek(0)
    header, length = read_header(file, end)
    entry = header.get(key)
    if not isinstance(entry, dict) or entry.get("dtype") not in _DTYPE_OF:
        raise ValueError(f"the safetensors file has no tensor {key!r} of a known dtype")
    shape, offsets = entry.get("shape"), entry.get("data_offsets")
    if not (isinstance(shape, list) and shape and all(type(n) is int and n >= 0 for n in shape)
            and isinstance(offsets, list) and len(offsets) == 2 and all(type(n) is int for n in offsets)):
        raise ValueError(f"tensor {key!r} needs a shape of at least one dimension and two data offsets; got "
                         f"{str(shape)[:100]} and {str(offsets)[:100]}")
    dtype, shape, (start, stop) = _DTYPE_OF[entry["dtype"]], tuple(shape), offsets
    per_row = dtype.itemsize * math.prod(shape[1:])
    if not (0 <= start <= stop and 8 + length + stop <= end and stop - start == per_row * shape[0]):
        raise ValueError(f"tensor {key!r}'s offsets {start}..{stop} do not fit its shape {shape} and the file")
    step = max(1, block_bytes // max(1, per_row))

    def blocks() -> Iterable[torch.Tensor]:
        for row in range(0, shape[0], step):
            count = min(step, shape[0] - row)
            file.seek(8 + length + start + row * per_row)
            data = bytearray(file.read(count * per_row))
            if len(data) != count * per_row:
                raise ValueError(f"tensor {key!r} ends before its rows do")
            yield torch.frombuffer(data, dtype=dtype).reshape(count, *shape[1:]) if data else \
                torch.empty((count, *shape[1:]), dtype=dtype)

    return Streamed(dtype, shape, blocks())

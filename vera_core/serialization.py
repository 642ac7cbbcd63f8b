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

_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}


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


def metadata_of(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of safetensors bytes (the header is JSON after an 8-byte little-endian length)."""
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    return dict(header.get("__metadata__", {}))

"""Deterministic safetensors bytes.

The safetensors library writes its ``__metadata__`` map in hash order, so the same tensors and metadata give
different bytes from run to run. Content addressing and byte-for-byte stable downloads need one fixed layout:
this writes the standard format (8-byte little-endian header length, JSON header, raw little-endian data) with
the metadata keys and tensor names sorted and compact JSON, padded to 8 bytes like the library does. Any
safetensors reader loads it; reading still goes through the safetensors library.
"""

from __future__ import annotations

import ctypes
import json
import struct

import torch

_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}


def to_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """The safetensors encoding of ``tensors`` and ``metadata``; equal inputs give equal bytes."""
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {k: metadata[k] for k in sorted(metadata)}
    chunks: list[bytes] = []
    offset = 0
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        if tensor.dtype not in _DTYPES:
            raise TypeError(f"Tensor {name!r} has dtype {tensor.dtype}, which safetensors cannot store here.")
        size = tensor.numel() * tensor.element_size()
        data = ctypes.string_at(tensor.data_ptr(), size) if size else b""
        header[name] = {"dtype": _DTYPES[tensor.dtype], "shape": list(tensor.shape), "data_offsets": [offset,
                                                                                                      offset + size]}
        chunks.append(data)
        offset += size
    encoded = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)
    return struct.pack("<Q", len(encoded)) + encoded + b"".join(chunks)


def metadata_of(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of safetensors bytes (the header is JSON after an 8-byte little-endian length)."""
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    return dict(header.get("__metadata__", {}))

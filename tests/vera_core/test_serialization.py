from __future__ import annotations

import io
import json
import struct
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load

from vera_core.serialization import Streamed, to_bytes, write

SCRIPT = """
import hashlib, torch
from vera_core.serialization import to_bytes
t = {"b": torch.arange(6, dtype=torch.float32).reshape(2, 3), "a": torch.ones(2, dtype=torch.bfloat16)}
print(hashlib.sha256(to_bytes(t, {"z": "1", "format": "pt", "m": "2"})).hexdigest())
"""


def test_bytes_are_identical_across_processes() -> None:
    """The safetensors library orders metadata by hash seed; ours must not (content addressing depends on it)."""
    digests = {subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True).stdout
               for _ in range(3)}
    assert len(digests) == 1


def test_the_library_reads_what_we_write(tmp_path: object) -> None:
    tensors = {"x.weight": torch.randn(3, 4), "h": torch.randn(5).to(torch.float16), "e": torch.zeros(0),
               "i": torch.tensor([1, 2], dtype=torch.int64)}
    data = to_bytes(tensors, {"format": "pt", "k": "v"})
    loaded = load(data)
    assert set(loaded) == set(tensors)
    assert all(torch.equal(loaded[k], tensors[k]) and loaded[k].dtype == tensors[k].dtype for k in tensors)
    path = f"{tmp_path}/f.safetensors"
    with open(path, "wb") as f:
        f.write(data)
    with safe_open(path, "pt") as f:
        assert f.metadata() == {"format": "pt", "k": "v"}
    assert int.from_bytes(data[:8], "little") % 8 == 0  # header padded to 8 bytes, as the library does


def test_a_streamed_tensor_writes_the_same_bytes_and_its_blocks_must_add_up() -> None:
    """``write`` with a tensor given as row blocks (Streamed) writes exactly what to_bytes writes for it whole; blocks
    that do not add up to the declared shape are an error, not a file with a wrong header."""
    whole = {"a": torch.randn(5, 3), "z": torch.arange(4, dtype=torch.int64)}
    streamed = {"a": Streamed(torch.float32, (5, 3), iter(whole["a"].split(2))), "z": whole["z"]}
    out = io.BytesIO()
    write(out, streamed, {"format": "pt"})
    assert out.getvalue() == to_bytes(whole, {"format": "pt"})
    short = {"a": Streamed(torch.float32, (5, 3), iter(whole["a"][:4].split(2)))}
    with pytest.raises(ValueError, match="its blocks gave 48 bytes, not the .5, 3."):
        write(io.BytesIO(), short)


@pytest.mark.parametrize("block_bytes", [1, 24, 64, 1 << 20])
def test_rows_read_in_blocks_are_the_tensor(block_bytes: int) -> None:
    """read_rows gives a tensor of a safetensors file (ours or the library's) in row blocks of about block_bytes
    (at least one row), with plain reads; written back as Streamed it is the same bytes."""
    from safetensors.torch import save

    from vera_core.serialization import read_rows

    tensors = {"a": torch.randn(7, 6), "b": torch.randn(3, 2, 2).to(torch.bfloat16), "e": torch.zeros(0, 4)}
    for data in (to_bytes(tensors), save(tensors)):
        file = io.BytesIO(data)
        for key, tensor in tensors.items():
            rows = read_rows(file, key, block_bytes)
            assert (rows.dtype, rows.shape) == (tensor.dtype, tuple(tensor.shape))
            blocks = list(rows.blocks)
            per_row = tensor[0:1].numel() * tensor.element_size() if len(tensor) else 0
            assert all(len(b) <= max(1, block_bytes // max(1, per_row)) for b in blocks)
            assert torch.equal(torch.cat(blocks) if blocks else tensor[:0], tensor)
        out = io.BytesIO()
        write(out, {k: read_rows(io.BytesIO(data), k, block_bytes) for k in tensors})
        assert out.getvalue() == to_bytes(tensors)


def test_rows_of_a_file_that_does_not_fit_its_header_are_refused() -> None:
    from vera_core.serialization import read_rows

    data = to_bytes({"a": torch.randn(4, 4)})
    with pytest.raises(ValueError, match="no tensor 'b'"):
        read_rows(io.BytesIO(data), "b", 64)
    with pytest.raises(ValueError, match="header length"):
        read_rows(io.BytesIO(b"\xff" * 8 + data[8:]), "a", 64)
    with pytest.raises(ValueError, match=r"offsets 0\.\.64 do not fit its shape \(4, 4\) and the file"):
        read_rows(io.BytesIO(data[:-8]), "a", 16)  # cut short
    with pytest.raises(ValueError, match="header length 0"):
        read_rows(io.BytesIO(b"\x01\x00"), "a", 16)  # not even a header length

    def with_header(header: object) -> io.BytesIO:
        text = json.dumps(header).encode()
        return io.BytesIO(struct.pack("<Q", len(text)) + text + bytes(64))

    with pytest.raises(ValueError, match="not a JSON object"):
        read_rows(with_header([1, 2]), "a", 16)  # JSON, not an object
    with pytest.raises(ValueError, match=r"offsets -8\.\.8 do not fit"):  # would read the header as data
        read_rows(with_header({"a": {"dtype": "F32", "shape": [4], "data_offsets": [-8, 8]}}), "a", 16)
    with pytest.raises(ValueError, match="needs a shape of at least one dimension"):
        read_rows(with_header({"a": {"dtype": "F32", "shape": [-1, -4], "data_offsets": [0, 16]}}), "a", 16)
    with pytest.raises(ValueError, match="needs a shape of at least one dimension"):
        read_rows(with_header({"a": {"dtype": "F32", "shape": [2]}}), "a", 16)
    with pytest.raises(ValueError, match=r"header is not UTF-8 text \(invalid start byte at byte 0\)"):
        read_rows(io.BytesIO(struct.pack("<Q", 4) + b"\xff\xfe{]" + bytes(8)), "a", 16)
    with pytest.raises(ValueError, match=r"header is not JSON \(Expecting"):
        read_rows(io.BytesIO(struct.pack("<Q", 2) + b"{]" + bytes(8)), "a", 16)
    with pytest.raises(ValueError, match="header nests too deeply"):
        read_rows(io.BytesIO(struct.pack("<Q", 10_000) + b"[" * 5000 + b"]" * 5000 + bytes(8)), "a", 16)


def test_metadata_is_read_from_the_header_alone_and_a_header_that_is_not_one_is_refused() -> None:
    """metadata_of, the one reader of headers (serialization.read_header) with read_rows: bytes or an open file;
    what is not a safetensors header is a ValueError (never a struct.error or a KeyError)."""
    from vera_core.serialization import metadata_of

    data = to_bytes({"a": torch.randn(2)}, metadata={"vera_core.in_features": "4", "k": "v"})
    assert metadata_of(data) == metadata_of(io.BytesIO(data)) == {"vera_core.in_features": "4", "k": "v"}
    assert metadata_of(to_bytes({"a": torch.randn(2)})) == {}
    for bad in (b"", b"\x01", b"\xff" * 8 + data[8:], data[:12], struct.pack("<Q", 2) + b"[]"):
        with pytest.raises(ValueError, match="not a safetensors file"):
            metadata_of(bad)

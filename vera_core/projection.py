"""The shared random projections A (r, max_in) and B (max_out, r): named generators and the fingerprint.

Two generators, chosen by name and recorded with every adapter (the names are never reused):

- ``torch-kaiming-uniform`` reproduces PEFT bit for bit: one CPU ``torch.Generator`` seeded with the key,
  A drawn first, then B, each ``uniform_(-bound, bound)`` with bound = sqrt(3) * sqrt(2) / sqrt(fan_in).
- ``philox4x32-10-kaiming-uniform-v1`` is counter-based: every element is a pure function of
  (seed, matrix, row, column), computed with 32-bit integer arithmetic in int64 tensors, so it gives the same
  bits on any device and torch version, and a top-left window of a larger matrix equals the smaller matrix's
  raw draws. The byte-exact specification with test vectors is docs/projections.md.

The fingerprint is SHA-256 over a documented layout of A and B (docs/projections.md), so that anyone can prove
that a seed regenerates exactly the matrices an adapter was trained with.
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from vera_core.config import KNOWN_GENERATORS, PEFT_GENERATOR, PORTABLE_GENERATOR
from vera_core.errors import ProjectionMismatchError, UnknownGeneratorError, VeraConfigError

FINGERPRINT_MAGIC = b"vera-projection-fingerprint-v1\x00"

# Philox4x32-10 constants (Salmon et al., SC'11; Random123).
_PHILOX_M0, _PHILOX_M1 = 0xD2511F53, 0xCD9E8D57
_PHILOX_W0, _PHILOX_W1 = 0x9E3779B9, 0xBB67AE85
_MASK32 = 0xFFFFFFFF
_STREAM_A, _STREAM_B = 0, 1
_CHUNK_COUNTERS = 1 << 16  # counters per block: keeps the int64 temporaries in cache


@dataclass(frozen=True)
class ProjectionSpec:
    """Everything that determines a projection pair: it is regenerated from this, never stored."""

    generator: str
    seed: int
    r: int
    max_in: int
    max_out: int

    def __post_init__(self) -> None:
        if self.generator not in KNOWN_GENERATORS:
            raise UnknownGeneratorError(
                f"Unknown projection generator {self.generator!r}; known: {', '.join(KNOWN_GENERATORS)}."
            )
        for name in ("r", "max_in", "max_out"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise VeraConfigError(f"Projection {name} must be a positive integer, got {value!r}.")
        # an integer: a float seed (1.5) failed inside the generator with a TypeError, and True passed as seed 1 (a
        # docs audit, session 54)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**64:
            raise VeraConfigError(f"Projection seed must be an integer in [0, 2**64 - 1], got {self.seed!r}.")

    @property
    def nbytes(self) -> int:
        """Bytes of A and B in float32."""
        return 4 * self.r * (self.max_in + self.max_out)


class ProjectionGenerator(Protocol):
    name: str

    def generate(self, spec: ProjectionSpec, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Return float32 A (r, max_in) and B (max_out, r) on ``device``."""
        ...


def kaiming_bound(fan_in: int) -> float:
    """PEFT's bound for kaiming_uniform with gain sqrt(2), computed in the same order as PEFT."""
    return math.sqrt(3.0) * (math.sqrt(2) / math.sqrt(fan_in))


class TorchKaimingUniform:
    """PEFT's generator: a CPU torch.Generator, A then B from the same stream."""

    name = PEFT_GENERATOR

    def generate(self, spec: ProjectionSpec, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator(device="cpu").manual_seed(spec.seed)
        bound_a, bound_b = kaiming_bound(spec.max_in), kaiming_bound(spec.r)
        a = torch.empty(spec.r, spec.max_in).uniform_(-bound_a, bound_a, generator=gen)  # A first, as PEFT
        b = torch.empty(spec.max_out, spec.r).uniform_(-bound_b, bound_b, generator=gen)
        return a.to(device), b.to(device)


def _mulhilo32(a: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """High and low 32 bits of a * m for a, m in [0, 2**32), a held in int64.

    The 64-bit product can exceed int64's range; torch's int64 multiply wraps modulo 2**64 on CPU and CUDA, which
    keeps all 64 bits of the product exact, and the arithmetic shift plus mask recovers the unsigned high word.
    ``_self_test`` checks this against Random123's known answers on each device before first use.
    """
    p = a * m
    return (p >> 32) & _MASK32, p & _MASK32


def philox4x32_10(
    c0: torch.Tensor, c1: torch.Tensor, c2: int, c3: int, k0: int, k1: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Philox4x32-10 on int64 tensors holding 32-bit words; c0 and c1 broadcast against each other."""
    x0, x1 = c0, c1
    x2 = torch.full_like(c0, c2)
    x3 = torch.full_like(c0, c3)
    for rnd in range(10):
        if rnd:
            k0 = (k0 + _PHILOX_W0) & _MASK32
            k1 = (k1 + _PHILOX_W1) & _MASK32
        hi0, lo0 = _mulhilo32(x0, _PHILOX_M0)
        hi1, lo1 = _mulhilo32(x2, _PHILOX_M1)
        x0, x1, x2, x3 = hi1 ^ x1 ^ k0, lo1, hi0 ^ x3 ^ k1, lo0
    return x0, x1, x2, x3


# Random123's known-answer vectors for philox4x32-10: (counter, key, output).
PHILOX_KAT = (
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((_MASK32,) * 4, (_MASK32, _MASK32), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
)
_VERIFIED_DEVICES: set[str] = set()


def _self_test(device: torch.device) -> None:
    """Refuse to generate on a device whose integer arithmetic does not reproduce Random123's answers."""
    if device.type in _VERIFIED_DEVICES:
        return
    for ctr, key, want in PHILOX_KAT:
        c0 = torch.tensor([ctr[0]], dtype=torch.int64, device=device)
        c1 = torch.tensor([ctr[1]], dtype=torch.int64, device=device)
        got = tuple(int(w) for w in philox4x32_10(c0, c1, ctr[2], ctr[3], key[0], key[1]))
        if got != want:
            raise ProjectionMismatchError(
                f"Philox4x32-10 self-test failed on {device}: got {[hex(w) for w in got]}, expected "
                f"{[hex(w) for w in want]}. This device's int64 arithmetic cannot reproduce portable projections; "
                "generate them on the CPU and move them instead."
            )
    _VERIFIED_DEVICES.add(device.type)


def philox_uniform_matrix(
    seed: int, stream: int, rows: int, cols: int, bound: float, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """A (rows, cols) float32 matrix of U[-bound, bound) draws, element (i, j) from counter (j // 4, i, stream, 0)."""
    out = torch.empty(rows, cols, dtype=torch.float32, device=device)
    start = 0
    for block in _philox_blocks(seed, stream, rows, cols, bound, device, max(1, _CHUNK_COUNTERS // ((cols + 3) // 4))):
        out[start:start + block.shape[0]] = block
        start += block.shape[0]
    return out


def _philox_blocks(seed: int, stream: int, rows: int, cols: int, bound: float, device: torch.device | str,
                   rows_per_block: int) -> Iterator[torch.Tensor]:
    """``philox_uniform_matrix``'s rows, ``rows_per_block`` at a time (each block's rows need nothing else)."""
    device = torch.device(device)
    _self_test(device)
    groups = (cols + 3) // 4
    # bound rounded to float32, times 2**-23: exact, so one float32 multiply rounds each element once.
    scale = torch.tensor(float(torch.tensor(bound, dtype=torch.float32)) * 2.0**-23, dtype=torch.float32, device=device)
    k0, k1 = seed & _MASK32, (seed >> 32) & _MASK32
    col_groups = torch.arange(groups, dtype=torch.int64, device=device).unsqueeze(0)  # (1, G)
    for start in range(0, rows, rows_per_block):
        stop = min(rows, start + rows_per_block)
        row_ids = torch.arange(start, stop, dtype=torch.int64, device=device).unsqueeze(1)  # (R, 1)
        c0 = col_groups.expand(stop - start, groups)
        c1 = row_ids.expand(stop - start, groups)
        words = torch.stack(philox4x32_10(c0, c1, stream, 0, k0, k1), dim=-1)  # (R, G, 4)
        signed = (words >> 8) - (1 << 23)  # 24 random bits, centred: [-2**23, 2**23)
        block = (signed.to(torch.float32) * scale).reshape(stop - start, groups * 4)
        yield block[:, :cols] if cols != groups * 4 else block


def portable_bound(fan_in: int) -> float:
    """sqrt(6 / fan_in) in float64; rounded to float32 by the generator (docs/projections.md)."""
    return math.sqrt(6.0 / fan_in)


class PhiloxKaimingUniform:
    """The portable generator: Philox4x32-10, one counter per 4 elements, A and B on separate streams."""

    name = PORTABLE_GENERATOR

    def generate(self, spec: ProjectionSpec, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        a = philox_uniform_matrix(spec.seed, _STREAM_A, spec.r, spec.max_in, portable_bound(spec.max_in), device)
        b = philox_uniform_matrix(spec.seed, _STREAM_B, spec.max_out, spec.r, portable_bound(spec.r), device)
        return a, b


GENERATORS: dict[str, ProjectionGenerator] = {g.name: g for g in (PhiloxKaimingUniform(), TorchKaimingUniform())}


def get_generator(name: str) -> ProjectionGenerator:
    try:
        return GENERATORS[name]
    except KeyError:
        raise UnknownGeneratorError(
            f"Unknown projection generator {name!r}; this version implements {', '.join(GENERATORS)}."
        ) from None


def generate(spec: ProjectionSpec, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Regenerate the float32 projections A (r, max_in) and B (max_out, r) described by ``spec``."""
    return get_generator(spec.generator).generate(spec, device)


def projection_blocks(spec: ProjectionSpec, block_elements: int = 1 << 18
                      ) -> tuple[Iterator[torch.Tensor], Iterator[torch.Tensor]]:
    """A and B exactly as ``generate(spec)`` gives them on the CPU, as row blocks of about ``block_elements`` float32
    elements each (at least one row): a 7B-scale projection written out without either matrix held whole. PEFT's
    generator draws B from where A's stream ends, so A's blocks must all be read before B's (checked)."""
    def rows(cols: int) -> int:
        return max(1, block_elements // max(1, cols))

    if spec.generator == PORTABLE_GENERATOR:
        return (_philox_blocks(spec.seed, _STREAM_A, spec.r, spec.max_in, portable_bound(spec.max_in), "cpu",
                               rows(spec.max_in)),
                _philox_blocks(spec.seed, _STREAM_B, spec.max_out, spec.r, portable_bound(spec.r), "cpu",
                               rows(spec.r)))
    get_generator(spec.generator)  # UnknownGeneratorError for any other name
    gen = torch.Generator(device="cpu").manual_seed(spec.seed)
    a_done = False

    def uniform_rows(total: int, cols: int, bound: float) -> Iterator[torch.Tensor]:
        for start in range(0, total, rows(cols)):  # CPU uniform_ draws element by element: blocks continue it
            yield torch.empty(min(rows(cols), total - start), cols).uniform_(-bound, bound, generator=gen)

    def a_blocks() -> Iterator[torch.Tensor]:
        nonlocal a_done
        yield from uniform_rows(spec.r, spec.max_in, kaiming_bound(spec.max_in))
        a_done = True

    def b_blocks() -> Iterator[torch.Tensor]:
        if not a_done:
            raise RuntimeError("PEFT's generator draws B after A: read all of A's blocks first.")
        yield from uniform_rows(spec.max_out, spec.r, kaiming_bound(spec.r))

    return a_blocks(), b_blocks()


def fingerprint(a: torch.Tensor, b: torch.Tensor) -> str:
    """SHA-256 (hex) of the layout in docs/projections.md: magic, then for A and B their shape and float32 bytes."""
    digest = hashlib.sha256(FINGERPRINT_MAGIC)
    for mat in (a, b):
        if mat.dim() != 2:
            raise VeraConfigError(f"A projection must be a matrix, got shape {tuple(mat.shape)}.")
        _hash_matrix(digest, tuple(mat.shape), (mat,))
    return digest.hexdigest()


def regenerated_fingerprint(spec: ProjectionSpec) -> str:
    """``fingerprint(*generate(spec))`` without holding A or B whole: hashed as projection_blocks generates them
    (a 7B-scale pair at r=1024 is 90 MB; this holds about 1 MiB)."""
    digest = hashlib.sha256(FINGERPRINT_MAGIC)
    a_blocks, b_blocks = projection_blocks(spec)
    _hash_matrix(digest, (spec.r, spec.max_in), a_blocks)  # A first: PEFT's generator draws B after it
    _hash_matrix(digest, (spec.max_out, spec.r), b_blocks)
    return digest.hexdigest()


def _hash_matrix(digest: Any, shape: tuple[int, ...], blocks: Iterable[torch.Tensor]) -> None:
    """A matrix's part of the fingerprint: its shape, then its float32 bytes (row blocks in order)."""
    digest.update(struct.pack("<QQ", *shape))
    for block in blocks:
        data = block.detach().to(device="cpu", dtype=torch.float32).contiguous()
        if data.numel():  # the float32 bytes, little-endian row-major, read in place (no numpy needed)
            digest.update((ctypes.c_char * (data.numel() * 4)).from_address(data.data_ptr()))

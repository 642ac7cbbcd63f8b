"""An independent pure-NumPy implementation of the portable generator, written from docs/projections.md.

It uses unsigned 32/64-bit NumPy arithmetic (no torch), so agreement with vera_core's int64 torch kernel shows
that the specification, not one implementation, defines the bits.
"""

from __future__ import annotations

import numpy as np

M0, M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
W0, W1 = 0x9E3779B9, 0xBB67AE85
MASK = np.uint64(0xFFFFFFFF)


def philox4x32_10(ctr: tuple[np.ndarray, ...], key: tuple[int, int]) -> tuple[np.ndarray, ...]:
    x0, x1, x2, x3 = (np.asarray(c, dtype=np.uint64) for c in ctr)
    k0, k1 = key
    for rnd in range(10):
        if rnd:
            k0, k1 = (k0 + W0) & 0xFFFFFFFF, (k1 + W1) & 0xFFFFFFFF
        p0, p1 = x0 * M0, x2 * M1  # exact: both factors < 2**32, so the product < 2**64
        x0, x1, x2, x3 = (p1 >> np.uint64(32)) ^ x1 ^ np.uint64(k0), p1 & MASK, \
            (p0 >> np.uint64(32)) ^ x3 ^ np.uint64(k1), p0 & MASK
    return x0, x1, x2, x3


def uniform_matrix(seed: int, stream: int, rows: int, cols: int, fan_in: int) -> np.ndarray:
    groups = (cols + 3) // 4
    g, i = np.meshgrid(np.arange(groups, dtype=np.uint64), np.arange(rows, dtype=np.uint64))
    zeros = np.zeros_like(g)
    words = philox4x32_10((g, i, zeros + np.uint64(stream), zeros), (seed & 0xFFFFFFFF, seed >> 32))
    raw = np.stack(words, axis=-1).reshape(rows, groups * 4)[:, :cols]
    signed = (raw >> np.uint64(8)).astype(np.int64) - (1 << 23)
    scale = np.float32(np.float32(np.sqrt(6.0 / fan_in)) * np.float32(2.0**-23))
    return signed.astype(np.float32) * scale


def projections(seed: int, r: int, max_in: int, max_out: int) -> tuple[np.ndarray, np.ndarray]:
    return uniform_matrix(seed, 0, r, max_in, max_in), uniform_matrix(seed, 1, max_out, r, r)

"""Regenerating the projections for Llama-2-7B shapes at r=1024 (A 1024x11008, B 11008x1024), against the
memory-bandwidth limit (writing the same number of bytes) and PEFT's generator. Prints a markdown table.

    .venv/bin/python bench/projection_generation.py [--reps 5] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from datetime import date

import torch

from vera_core import PEFT_GENERATOR, PORTABLE_GENERATOR, ProjectionSpec, fingerprint, generate

R, N = 1024, 11008


def timed(fn: Callable[[], object], reps: int, device: str) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = args.device
    nbytes = 2 * R * N * 4

    def write_bytes() -> None:
        torch.empty(R, N, device=device).fill_(1.0)
        torch.empty(N, R, device=device).fill_(1.0)

    portable = ProjectionSpec(PORTABLE_GENERATOR, 0, R, N, N)
    peft = ProjectionSpec(PEFT_GENERATOR, 0, R, N, N)
    a, b = generate(portable, device)
    rows = {
        "write the same bytes (fill_)": timed(write_bytes, args.reps, device),
        f"portable `{PORTABLE_GENERATOR}`": timed(lambda: generate(portable, device), args.reps, device),
        f"PEFT `{PEFT_GENERATOR}` (always drawn on CPU)": timed(lambda: generate(peft, device), args.reps, device),
        "fingerprint (SHA-256 of A and B)": timed(lambda: fingerprint(a, b), args.reps, device),
    }
    limit = rows["write the same bytes (fill_)"]
    print(f"## Projection generation, {date.today()}: r={R}, A {R}x{N} + B {N}x{R} float32 "
          f"({nbytes / 2**20:.0f} MiB), {device} ({platform.machine()}), {args.threads} threads, torch "
          f"{torch.__version__}, median of {args.reps}\n")
    print("| what | seconds | GB/s | x the write-bandwidth limit |\n|---|---|---|---|")
    for name, seconds in rows.items():
        print(f"| {name} | {seconds:.3f} | {nbytes / seconds / 1e9:.2f} | {seconds / limit:.1f} |")


if __name__ == "__main__":
    main()

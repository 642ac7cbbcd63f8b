"""Each of several torch processes on one machine gets its share of the cores. Torch starts as many OpenMP threads as
there are cores in every process, so N processes training at once fight for them: two workers on 2 cores took 3x as
long as with a thread each (bench/RESULTS.md, session 26). Used by `vera cluster` for its job workers and by the test
suite for its pytest-xdist workers; imports nothing heavy, so it can run before torch is imported."""

from __future__ import annotations

import os

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def cores() -> int:
    """The cores this process may run on (its CPU affinity where the platform says, else every core)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def share_cores(env: dict[str, str], processes: int) -> dict[str, str]:
    """``env`` for one of ``processes`` torch processes sharing this machine: OMP_NUM_THREADS and MKL_NUM_THREADS set
    to its share of the cores (at least 1). Returned unchanged (the same object) when one process has them all or the
    caller chose OMP_NUM_THREADS; a chosen MKL_NUM_THREADS is kept."""
    if processes < 2 or "OMP_NUM_THREADS" in env:
        return env
    threads = str(max(1, cores() // processes))
    return {**env, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": env.get("MKL_NUM_THREADS", threads)}

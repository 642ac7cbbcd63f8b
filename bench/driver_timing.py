"""What both drivers of bench/vs_mlflow.py share (standard library only: it runs in MLflow's environment too)."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor


def timed(fn: Callable[[int], None], requests: int, threads: int, *, warm: bool = False) -> dict[str, object]:
    """Run fn(0..requests-1) from ``threads`` threads: the wall time and each call's latency (seconds). ``warm``:
    first, untimed, ``threads`` calls (fn(requests..requests+threads-1)) through the same pool, so that its threads
    exist and each client's connections are open: the steady state a long-running client sees, not 32 thread and
    connection start-ups inside a few hundred timed calls."""
    latencies: list[float] = []

    def one(i: int) -> None:
        start = time.perf_counter()
        fn(i)
        latencies.append(time.perf_counter() - start)

    with ThreadPoolExecutor(threads) as pool:
        if warm:
            list(pool.map(fn, range(requests, requests + threads)))
        start = time.perf_counter()
        list(pool.map(one, range(requests)))
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "latencies": latencies}

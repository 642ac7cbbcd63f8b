"""What both drivers of bench/vs_mlflow.py share (standard library only: it runs in MLflow's environment too)."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor


def timed(fn: Callable[[int], None], requests: int, threads: int) -> dict[str, object]:
    """Run fn(0..requests-1) from ``threads`` threads: the wall time and each call's latency (seconds)."""
    latencies: list[float] = []

    def one(i: int) -> None:
        start = time.perf_counter()
        fn(i)
        latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(requests)))
    return {"seconds": time.perf_counter() - start, "latencies": latencies}

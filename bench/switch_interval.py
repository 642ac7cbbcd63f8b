"""`vera serve-model` sets Python's thread switch interval to 0.5 ms (5 ms is Python's default): what that costs, or
gains, in ordinary traffic, with no attacker. Over real HTTP, clients in another process:

- classification: ``--clients`` connections each sending 1-text `/v1/classify` requests back to back, for
  ``--seconds``: requests/s and the latency p50/p99;
- generation: ``--streams`` OpenAI streaming completions at once (``--tokens`` tokens each, greedy), sent again as
  each ends, for ``--seconds``: tokens/s and the gap between two chunks of a stream (p50, p99, the longest).

One process serves (a registry on loopback, a ModelServer per task in this process, as `vera serve-model` runs);
the two intervals alternated round by round; medians of the rounds and ratios to 5 ms.

    .venv/bin/python bench/switch_interval.py [--seconds 10] [--rounds 3] [--clients 16] [--streams 8]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent
INTERVALS = (0.005, 0.0005)


def client(spec: dict[str, Any]) -> dict[str, Any]:
    """The load, in its own process: what it measured, as JSON on stdout."""
    import httpx

    until = time.monotonic() + spec["seconds"]
    latency: list[float] = []
    gaps: list[float] = []
    tokens = [0]
    lock = threading.Lock()

    def classify() -> None:
        with httpx.Client(base_url=spec["url"], timeout=120) as http:
            k = 0
            while time.monotonic() < until:
                started = time.perf_counter()
                answer = http.post("/v1/classify", json={"adapter": spec["adapters"][k % len(spec["adapters"])],
                                                         "inputs": ["an ordinary sentence about the weather"]})
                answer.raise_for_status()
                with lock:
                    latency.append(time.perf_counter() - started)
                k += 1

    def stream() -> None:
        with httpx.Client(base_url=spec["url"], timeout=120) as http:
            k = 0
            while time.monotonic() < until:
                body = {"model": spec["adapters"][k % len(spec["adapters"])], "prompt": f"w{k % 50} w{k % 7}",
                        "max_tokens": spec["tokens"], "temperature": 0, "stream": True}
                last, mine, got = time.perf_counter(), [], 0
                with http.stream("POST", "/v1/completions", json=body) as answer:
                    answer.raise_for_status()
                    for line in answer.iter_lines():
                        if line.startswith("data: {"):
                            now = time.perf_counter()
                            mine.append(now - last)
                            last = now
                            got += 1
                with lock:
                    gaps.extend(mine[1:])  # the first is the prompt's wait, not a gap
                    tokens[0] += got
                k += 1

    work = classify if spec["task"] == "classification" else stream
    threads = [threading.Thread(target=work) for _ in range(spec["connections"])]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    took = time.perf_counter() - started
    return {"latency": latency, "gaps": gaps, "requests": len(latency) / took, "tokens": tokens[0] / took}


def load(spec: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run([sys.executable, __file__, "--client", json.dumps(spec)], capture_output=True, text=True,
                          check=True, timeout=spec["seconds"] + 300)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=16, help="classification connections")
    parser.add_argument("--streams", type=int, default=8, help="streaming completions at once")
    parser.add_argument("--tokens", type=int, default=32, help="tokens per completion")
    parser.add_argument("--client", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        print(json.dumps(client(json.loads(args.client))))
        return

    sys.path.insert(0, str(HERE))
    import torch

    from bench.continuous import pct, save_base
    from bench.generation import publish
    from bench.serving import publish_adapters
    from registry.client import RegistryClient
    from registry.serving.api import create_serving_app
    from registry.serving.server import ModelServer
    from tests.registry.servers import in_thread, running_server

    torch.set_num_threads(2)
    default = sys.getswitchinterval()
    results: dict[tuple[str, float], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp, running_server(f"sqlite:///{tmp}/r.db", Path(tmp) / "blobs") as url:
        root = Path(tmp)
        base = save_base(root / "base", 256, 4, words=200)
        with RegistryClient(url) as registry:
            tasks = {"classification": ("minilm", publish_adapters(registry, root, 4, 256), args.clients),
                     "causal-lm": (str(base), [ref for ref, _ in publish(registry, base, root, 4, 256)], args.streams)}
        for task, (model, adapters, connections) in tasks.items():
            server = ModelServer(model, task=task, base_name="bench" if task == "causal-lm" else None,  # type: ignore[arg-type]
                                 client_for=lambda token: RegistryClient(url, token or ""), resolve_ttl_s=3600)
            try:
                with in_thread(create_serving_app(server), "the model server") as serving:
                    spec = {"url": serving, "task": task, "adapters": adapters, "connections": connections,
                            "tokens": args.tokens}
                    load({**spec, "seconds": 2.0})  # every adapter loaded, every path warm
                    for round_ in range(args.rounds):
                        for interval in INTERVALS if round_ % 2 == 0 else INTERVALS[::-1]:
                            sys.setswitchinterval(interval)
                            results.setdefault((task, interval), []).append(load({**spec, "seconds": args.seconds}))
                            sys.setswitchinterval(default)
            finally:
                server.close()

    def figure(task: str, interval: float, what: str) -> float:
        values = []
        for res in results[task, interval]:
            if what in ("requests", "tokens"):
                values.append(res[what])
            else:
                key, q = what.split()
                values.append(max(res[key]) if q == "max" else pct(res[key], float(q) / 100))
        return statistics.median(values)

    print(f"## {date.today()} — the thread switch interval in ordinary traffic (bench/switch_interval.py --seconds "
          f"{args.seconds} --rounds {args.rounds} --clients {args.clients} --streams {args.streams} --tokens "
          f"{args.tokens})\n")
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, 2 threads, CPU; clients in "
          f"another process over HTTP. Classification: the bundled MiniLM, 4 adapters (r=256), {args.clients} "
          f"connections of 1-text requests. Generation: a Llama-shaped base (4 layers of 256), 4 adapters (r=256), "
          f"{args.streams} streaming completions of {args.tokens} tokens at once. Medians of {args.rounds} "
          f"alternated rounds of {args.seconds} s.\n")
    print("| | 5 ms (Python's default) | 0.5 ms (`vera serve-model`) |")
    print("|---|---|---|")
    rows = [("classification", "requests", "requests/s"), ("classification", "latency 50", "latency p50, s"),
            ("classification", "latency 99", "latency p99, s"), ("causal-lm", "tokens", "tokens/s"),
            ("causal-lm", "gaps 50", "gap between chunks p50, s"), ("causal-lm", "gaps 99", "gap p99, s"),
            ("causal-lm", "gaps max", "longest gap, s")]
    for task, what, label in rows:
        old, new = figure(task, INTERVALS[0], what), figure(task, INTERVALS[1], what)
        print(f"| {task}: {label} | {old:.4g} | {new:.4g} ({new / old:.2f}x) |")


if __name__ == "__main__":
    main()

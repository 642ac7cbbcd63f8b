"""Chunked prefill: how long rows that are decoding (streaming their answers) pause while long prompts arrive, with
the model server's prefill whole (as before) and in chunks of ``--chunks`` tokens.

Rows of one family decode (each to its budget) when long prompts arrive at a steady pace. A prompt prefilled whole
runs between two steps in one forward, so every decoding row waits for it; in chunks, the decoding rows take a
step between two chunks. Reported: the decoding rows' gaps between two tokens (p50, p99, the longest), the long
prompts' latency (arrival to answer), and the time for everything. One process, one registry and base; each
setting a fresh ModelServer (adapters loaded and a forward run before the clock starts), settings alternated
round by round, medians of the rounds and ratios to whole (the machine is noisy).

    .venv/bin/python bench/prefill.py [--hidden 1024] [--layers 8] [--prompt 1000] [--chunks 512,128] [--rounds 3]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent


def run(config: dict[str, Any], chunk: int | None) -> dict[str, Any]:
    """One setting: the decoding rows start, then the long prompts arrive every ``gap_s``; the decoding rows' gaps
    between tokens, the long prompts' latencies and the time for everything."""
    from registry.client import RegistryClient
    from registry.serving.decode import Row
    from registry.serving.server import ModelServer

    url = config["registry"]
    server = ModelServer(config["base"], task="causal-lm", base_name="bench", max_batch=64, prefill_chunk=chunk,
                         client_for=lambda token: RegistryClient(url, token or ""), resolve_ttl_s=3600)
    try:
        residents = [server.generator_for(name, None) for name in config["adapters"]]
        for resident in residents:  # loaded, and a first forward run, before the clock starts
            server.wait(server.start(resident, [Row(server.prompt_ids("w1 w2"), 2)]))
        long_ids = [server.prompt_ids(" ".join(f"w{(7 * k + j) % 200}" for j in range(config["prompt"])))
                    for k in range(config["prompts"])]
        server.wait(server.start(residents[0], [Row(long_ids[0], 1)]))  # a long prompt's first forward too
        seen: list[list[float]] = [[] for _ in range(config["rows"])]
        begun = threading.Event()

        def heard(i: int) -> Any:
            def on_text(text: str) -> None:
                seen[i].append(time.perf_counter())
                begun.set()
            return on_text

        started = time.perf_counter()
        decoding = [server.start(residents[i % len(residents)], [
            Row(server.prompt_ids(f"w{i} w{i + 1} w{i + 2}"), config["tokens"], on_text=heard(i))])[0]
            for i in range(config["rows"])]
        begun.wait(60)
        latency: list[float] = []
        futures = []
        for k, ids in enumerate(long_ids):
            time.sleep(config["gap_s"])
            arrived = time.perf_counter()
            future = server.start(residents[k % len(residents)], [Row(ids, 8)])[0]
            future.add_done_callback(lambda _, arrived=arrived: latency.append(time.perf_counter() - arrived))
            futures.append(future)
        done = server.wait(futures + decoding)
        if {len(d.tokens) for d in done} != {8, config["tokens"]}:
            raise SystemExit(f"rows made {sorted({len(d.tokens) for d in done})} tokens, not their budgets")
        gaps = [b - a for times in seen for a, b in zip(times, times[1:], strict=False)]
        return {"gaps": gaps, "latency": latency, "makespan": time.perf_counter() - started}
    finally:
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--rows", type=int, default=8, help="rows decoding when the long prompts arrive")
    parser.add_argument("--tokens", type=int, default=300, help="each decoding row's budget")
    parser.add_argument("--prompt", type=int, default=1000, help="tokens of each long prompt")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--gap-s", type=float, default=0.3, help="seconds between two long prompts")
    parser.add_argument("--chunks", default="512,128", help="prefill chunks (tokens) to measure against whole")
    parser.add_argument("--r", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    sys.path.insert(0, str(HERE))
    import torch

    from bench.continuous import pct, save_base
    from bench.generation import publish
    from registry.client import RegistryClient
    from tests.registry.servers import running_server

    torch.set_num_threads(2)
    settings: list[int | None] = [None, *(int(c) for c in args.chunks.split(","))]
    results: dict[int | None, list[dict[str, Any]]] = {c: [] for c in settings}
    with tempfile.TemporaryDirectory() as tmp, running_server(f"sqlite:///{tmp}/r.db", Path(tmp) / "blobs") as url:
        root = Path(tmp)
        base = save_base(root / "base", args.hidden, args.layers, words=200)
        with RegistryClient(url) as client:
            adapters = [ref for ref, _ in publish(client, base, root, 4, args.r)]
        config = {"registry": url, "base": str(base), "adapters": adapters, "rows": args.rows, "tokens": args.tokens,
                  "prompt": args.prompt, "prompts": args.prompts, "gap_s": args.gap_s}
        for round_ in range(args.rounds):
            for chunk in settings if round_ % 2 == 0 else settings[::-1]:
                results[chunk].append(run(config, chunk))

    def figure(chunk: int | None, what: str) -> float:
        values = []
        for res in results[chunk]:
            if what == "makespan":
                values.append(res["makespan"])
            elif what.startswith("gap"):
                values.append(max(res["gaps"]) if what == "gap max" else pct(res["gaps"], float(what[5:]) / 100))
            else:
                values.append(pct(res["latency"], 0.5))
        return statistics.median(values)

    print(f"## {date.today()} — chunked prefill (bench/prefill.py --hidden {args.hidden} --layers {args.layers} "
          f"--rows {args.rows} --tokens {args.tokens} --prompt {args.prompt} --prompts {args.prompts} --gap-s "
          f"{args.gap_s} --chunks {args.chunks} --r {args.r} --rounds {args.rounds})\n")
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, 2 threads, CPU. A Llama-shaped "
          f"base ({args.layers} layers of {args.hidden}), 4 adapters (r={args.r}) of one family; {args.rows} rows "
          f"decoding {args.tokens} tokens each when {args.prompts} prompts of {args.prompt} tokens (8 new tokens "
          f"each) arrive {args.gap_s} s apart; seconds, medians of {args.rounds} alternated rounds, each setting a "
          f"fresh server.\n")
    names = {c: "whole" if c is None else f"chunks of {c}" for c in settings}
    print("| seconds | " + " | ".join(names[c] for c in settings) + " |")
    print("|---|" + "---|" * len(settings))
    for what in ("gap p50", "gap p99", "gap max", "long prompt latency p50", "makespan"):
        whole = figure(None, what)
        cells = [f"{whole:.3f}"] + [f"{figure(c, what):.3f} ({figure(c, what) / whole:.2f}x)" for c in settings[1:]]
        print(f"| decoding rows' {what} between tokens | " + " | ".join(cells) + " |" if what.startswith("gap")
              else f"| {what} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

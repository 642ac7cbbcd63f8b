"""Continuous batching against a batch at a time: the model server's latency when requests arrive while others
decode, against the server as it was before continuous batching (the code of an earlier commit, ``--before``,
run the same way in its own process).

A stream of generation requests arrives at a steady rate (exponential gaps, a fixed seed): most ask for few
tokens, some for many, over four adapters of one family. Before, a request that arrived while a batch decoded
waited for the whole batch to end; now it joins the running batch at its next step. Each side runs in a process of
its own (a fresh ModelServer on the same registry and base, adapters loaded before the clock starts), rounds
alternate the sides, and ratios are reported (the machine is noisy). The base is Llama-shaped with random weights
and a word-level tokenizer whose end-of-sequence token the model cannot produce, so every row runs to its budget.

    .venv/bin/python bench/continuous.py [--hidden 512] [--layers 4] [--requests 48] [--rate 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from datetime import date
from io import BytesIO
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent


def save_base(directory: Path, hidden: int, layers: int, words: int) -> Path:
    """A Llama-shaped causal LM (random weights) over ``words`` made-up words; its end-of-sequence token is one
    id past the model's vocabulary, so no row ends before its budget."""
    import torch
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "[PAD]": 1, **{f"w{i}": i + 2 for i in range(words)}}
    eos = len(vocab)
    vocab["[EOS]"] = eos
    tokenizer = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = Whitespace()
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=eos, hidden_size=hidden, intermediate_size=hidden * 2,
                                         num_hidden_layers=layers, num_attention_heads=8, num_key_value_heads=8,
                                         max_position_embeddings=1024, pad_token_id=1, eos_token_id=eos))
    model.save_pretrained(directory)
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                            eos_token="[EOS]").save_pretrained(directory)
    return directory


def schedule(requests: int, rate: float, short: int, long: int, long_share: float) -> list[dict[str, Any]]:
    """The arrivals: time (s from the start), budget, adapter index and prompt words, the same for both sides."""
    rng = random.Random(0)
    at, plan = 0.0, []
    for i in range(requests):
        plan.append({"at": at, "tokens": long if rng.random() < long_share else short, "adapter": i % 4,
                     "prompt": " ".join(f"w{rng.randrange(200)}" for _ in range(rng.randrange(4, 16)))})
        at += rng.expovariate(rate)
    return plan


def run_side(config: dict[str, Any]) -> dict[str, Any]:
    """In the side's own process (its code first on sys.path): a ModelServer answers the schedule; each request's
    latency (arrival to answer) and tokens."""
    import torch

    from registry.client import RegistryClient
    from registry.serving.decode import Row
    from registry.serving.server import ModelServer

    torch.set_num_threads(2)
    url = config["registry"]
    server = ModelServer(config["base"], task="causal-lm", base_name="bench", max_batch=64,
                         client_for=lambda token: RegistryClient(url, token or ""), resolve_ttl_s=3600)
    try:
        residents = [server.generator_for(name, None) for name in config["adapters"]]
        for resident in residents:  # loaded, and a first forward run, before the clock starts
            server.wait(server.start(resident, [Row(server.prompt_ids("w1 w2"), 2)]))
        plan = config["plan"]
        answered: dict[int, float] = {}
        futures = []
        started = time.perf_counter()
        for i, request in enumerate(plan):
            time.sleep(max(0.0, started + request["at"] - time.perf_counter()))
            arrived = time.perf_counter()
            future = server.start(residents[request["adapter"]],
                                  [Row(server.prompt_ids(request["prompt"]), request["tokens"])])[0]
            future.add_done_callback(lambda _, i=i, arrived=arrived: answered.__setitem__(
                i, time.perf_counter() - arrived))
            futures.append(future)
        done = server.wait(futures)
        return {"latency": [answered[i] for i in range(len(plan))], "tokens": [len(g.tokens) for g in done],
                "makespan": time.perf_counter() - started}
    finally:
        server.close()


def unpack(commit: str, folder: Path) -> Path:
    """The packages of ``commit`` (registry, vera_core) in ``folder``, to import instead of this checkout's."""
    archive = subprocess.run(["git", "-C", str(HERE), "archive", commit, "registry", "vera_core"], check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder


def side(code: Path, config: dict[str, Any], folder: Path, script: str = __file__) -> dict[str, Any]:
    """``script --side`` run with ``code`` first on the path (an earlier commit's, or this checkout's): its result."""
    (folder / "config.json").write_text(json.dumps(config))
    env = {**os.environ, "PYTHONPATH": f"{code}{os.pathsep}{HERE}"}
    out = subprocess.run([sys.executable, script, "--side", str(folder / "config.json")], env=env, check=True,
                         capture_output=True, text=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def alternated(commit: str, config: dict[str, Any], root: Path, rounds: int, script: str = __file__
               ) -> dict[str, list[dict[str, Any]]]:
    """``script``'s sides, ``commit``'s code ("before") and this checkout's ("now"), each in a process of its own,
    ``rounds`` times, the order alternating round by round (the machine is noisy): their results by side."""
    before = unpack(commit, root / "before")
    results: dict[str, list[dict[str, Any]]] = {"before": [], "now": []}
    for round_ in range(rounds):
        for name in ("before", "now") if round_ % 2 == 0 else ("now", "before"):
            results[name].append(side(before if name == "before" else HERE, config, root, script))
    return results


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--rate", type=float, default=8.0, help="requests per second")
    parser.add_argument("--short", type=int, default=16)
    parser.add_argument("--long", type=int, default=128)
    parser.add_argument("--long-share", type=float, default=0.25)
    parser.add_argument("--r", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", default="4c5dfe5", help="the commit whose server is the peer")
    parser.add_argument("--side", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        print(json.dumps(run_side(json.loads(Path(args.side).read_text()))))
        return

    sys.path.insert(0, str(HERE))
    import torch

    from bench.generation import publish
    from registry.client import RegistryClient
    from tests.registry.servers import running_server

    plan = schedule(args.requests, args.rate, args.short, args.long, args.long_share)
    with tempfile.TemporaryDirectory() as tmp, running_server(f"sqlite:///{tmp}/r.db", Path(tmp) / "blobs") as url:
        root = Path(tmp)
        base = save_base(root / "base", args.hidden, args.layers, words=200)
        with RegistryClient(url) as client:
            adapters = [ref for ref, _ in publish(client, base, root, 4, args.r)]
        config = {"registry": url, "base": str(base), "adapters": adapters, "plan": plan}
        results = alternated(args.before, config, root, args.rounds)
    for name, runs in results.items():
        made = {t for run in runs for t in run["tokens"]}
        if made - {args.short, args.long}:
            raise SystemExit(f"{name}: rows made {sorted(made)} tokens, not their budgets")
    longs = [i for i, request in enumerate(plan) if request["tokens"] == args.long]
    shorts = [i for i in range(len(plan)) if i not in longs]

    def figure(name: str, what: str) -> tuple[float, float, float]:
        values = []
        for run in results[name]:
            if what == "makespan":
                values.append(run["makespan"])
            else:
                picked = [run["latency"][i] for i in (shorts if what.startswith("short") else longs)]
                values.append(pct(picked, 0.95 if what.endswith("p95") else 0.5))
        return statistics.median(values), min(values), max(values)

    print(f"## {date.today()} — continuous batching vs a batch at a time (bench/continuous.py --hidden {args.hidden} "
          f"--layers {args.layers} --requests {args.requests} --rate {args.rate} --short {args.short} --long "
          f"{args.long} --long-share {args.long_share} --r {args.r} --rounds {args.rounds} --before {args.before})\n")
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, 2 threads, CPU. A Llama-shaped "
          f"base ({args.layers} layers of {args.hidden}), 4 adapters (r={args.r}) of one family; {args.requests} "
          f"requests arriving at {args.rate}/s (exponential gaps, seed 0), {len(longs)} asking for {args.long} "
          f"tokens and {len(shorts)} for {args.short}, every row to its budget; medians (and spread) of "
          f"{args.rounds} alternated rounds, each side a fresh process and server.\n")
    print("| seconds | before (a batch at a time) | now (continuous) | now / before |")
    print("|---|---|---|---|")
    for what in ("short p50", "short p95", "long p50", "long p95", "makespan"):
        if what != "makespan" and not (shorts if what.startswith("short") else longs):
            # a small --requests or an extreme --long-share can draw no request of a kind: its row has no figure
            print(f"| {what} | — | — | — (no {what.split()[0]} request in this plan) |")
            continue
        b, n = figure("before", what), figure("now", what)
        print(f"| {what} | {b[0]:.2f} ({b[1]:.2f}-{b[2]:.2f}) | {n[0]:.2f} ({n[1]:.2f}-{n[2]:.2f}) | "
              f"{n[0] / b[0]:.2f}x |")


if __name__ == "__main__":
    main()

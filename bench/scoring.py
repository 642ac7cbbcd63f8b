"""Evaluating many adapters: lm-evaluation-harness's log-likelihood requests (a context and a continuation, scored
with ``echo``, ``logprobs: 1`` and ``max_tokens: 1``) for K registry adapters, answered by one `vera serve-model`
in mixed batches, against the peer: lm-eval's own ``hf`` model (HFLM) on PEFT, one adapter after the other
(``load_adapter`` and ``set_adapter`` on one PeftModel, the fastest way PEFT offers; `lm_eval --model hf
--model_args peft=...` also reloads the base for each). Both include loading the adapters. The two must agree:
the largest difference between their log-likelihoods is reported. Also: what asking for log-probabilities costs a
generation batch (``logprobs: 5`` on every row against none).

Real parts: a `vera serve` registry on loopback, adapters published over HTTP and hot-loaded by a ModelServer; a
Llama-shaped base with random weights and a word-level tokenizer of ``--vocab`` words; PEFT and lm-eval as
installed. Rounds alternate the ways, so that drift falls on both; ratios are reported (the machine is noisy).

    .venv/bin/python bench/scoring.py [--hidden 512] [--layers 4] [--vocab 32000] [--adapters 8] [--requests 32]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
import warnings
from datetime import date
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.generation import publish, save_base  # noqa: E402
from registry.client import RegistryClient  # noqa: E402
from registry.serving.decode import Row  # noqa: E402
from registry.serving.server import ModelServer  # noqa: E402
from tests.registry.servers import running_server  # noqa: E402


def ours(url: str, base: Path, names: list[str], requests: list[tuple[list[int], list[int]]],
         batch: int) -> tuple[float, dict[str, list[float]]]:
    """A fresh model server (adapters hot-loaded on their first request): every adapter's requests queued at
    once, as lm-eval runs with num_concurrent; the time to the last answer, and each adapter's log-likelihoods."""
    started = time.perf_counter()
    server = ModelServer(str(base), task="causal-lm", base_name="bench", batch_window_s=0.01, max_batch=batch,
                         client_for=lambda token: RegistryClient(url, token or ""), resolve_ttl_s=3600)
    try:
        futures = {}
        for name in names:
            resident = server.generator_for(name, None)
            rows = [Row(context + continuation, 1, logprobs=1, score_prompt=True)
                    for context, continuation in requests]
            futures[name] = server.start(resident, rows)
        sums = {}
        for name, waiting in futures.items():
            done = server.wait(waiting)
            sums[name] = [sum(s.logprob or 0.0 for s in g.prompt_scores[len(context):])
                          for g, (context, _) in zip(done, requests, strict=True)]
        return time.perf_counter() - started, sums
    finally:
        server.close()


def peer(base: Path, adapters: list[tuple[str, Path]], requests: list[tuple[list[int], list[int]]],
         batch: int) -> tuple[float, dict[str, list[float]]]:
    """lm-eval's HFLM on one PeftModel, each adapter loaded and set in turn, its requests in batches of ``batch``."""
    import logging

    from lm_eval.models.huggingface import HFLM
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    started = time.perf_counter()
    model: Any = None
    sums = {}
    tokenizer = AutoTokenizer.from_pretrained(base)
    for i, (name, folder) in enumerate(adapters):
        if model is None:
            model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), folder, adapter_name=f"a{i}")
            lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch, max_length=1024)
        else:
            model.load_adapter(folder, adapter_name=f"a{i}")
            model.set_adapter(f"a{i}")
        model.eval()
        # HFLM's own scoring of token ids (what loglikelihood runs once it has tokenized the requests)
        scored = lm._loglikelihood_tokens([(("", ""), context, continuation) for context, continuation in requests],
                                          disable_tqdm=True)
        sums[name] = [logprob for logprob, _ in scored]
    return time.perf_counter() - started, sums


def generation(server: ModelServer, names: list[str], prompts: list[list[int]], tokens: int,
               logprobs: int | None) -> float:
    rows = [Row(p, tokens, logprobs=logprobs) for p in prompts]
    started = time.perf_counter()
    server.wait([f for name, row in zip(names, rows, strict=True) for f in server.start(server.residents[name],
                                                                                         [row])])
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--adapters", type=int, default=8)
    parser.add_argument("--requests", type=int, default=32, help="log-likelihood requests per adapter")
    parser.add_argument("--context", type=int, default=48)
    parser.add_argument("--continuation", type=int, default=8)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--r", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    warnings.filterwarnings("ignore")  # PEFT warns at every adapter it loads without projections
    gen = torch.Generator().manual_seed(1)
    requests = [(torch.randint(3, args.vocab, (args.context,), generator=gen).tolist(),
                 torch.randint(3, args.vocab, (args.continuation,), generator=gen).tolist())
                for _ in range(args.requests)]
    times: dict[str, list[float]] = {"lm-eval hf + PEFT, one adapter after another": [],
                                     "vera serve-model, mixed batches": [],
                                     "generation, no logprobs": [], "generation, logprobs 5": []}
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp, running_server(f"sqlite:///{tmp}/r.db", Path(tmp) / "blobs") as url:
        base = save_base(Path(tmp) / "base", args.hidden, args.layers, [f"w{i}" for i in range(3, args.vocab)])
        with RegistryClient(url) as client:
            adapters = publish(client, base, Path(tmp), args.adapters, args.r, scale=0.3, prefix="s")
        names = [name for name, _ in adapters]
        server = ModelServer(str(base), task="causal-lm", base_name="bench", batch_window_s=0.5, max_batch=16,
                             client_for=lambda token: RegistryClient(url, token or ""), resolve_ttl_s=3600)
        try:
            some = names[:4]
            for name in some:
                server.generate(name, "w5 w6", max_new_tokens=1)
            rows = [server.residents[some[i % len(some)]].ref for i in range(16)]
            prompts = [requests[i % len(requests)][0][:16] for i in range(16)]
            for round_ in range(args.rounds):
                order = ["peer", "ours", "plain", "logprobs"]
                for kind in order if round_ % 2 == 0 else order[::-1]:
                    if kind == "peer":
                        took, theirs = peer(base, adapters, requests, args.batch)
                        times["lm-eval hf + PEFT, one adapter after another"].append(took)
                    elif kind == "ours":
                        took, mine = ours(url, base, names, requests, args.batch)
                        times["vera serve-model, mixed batches"].append(took)
                    else:
                        times[f"generation, {'logprobs 5' if kind == 'logprobs' else 'no logprobs'}"].append(
                            generation(server, rows, prompts, 32, 5 if kind == "logprobs" else None))
                worst = max(worst, max(abs(a - b) for name in names for a, b in zip(mine[name], theirs[name],
                                                                                     strict=True)))
        finally:
            server.close()
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"## {date.today()} — evaluating many adapters: lm-eval log-likelihood requests (bench/scoring.py "
          f"--hidden {args.hidden} --layers {args.layers} --vocab {args.vocab} --adapters {args.adapters} "
          f"--requests {args.requests} --context {args.context} --continuation {args.continuation} --batch "
          f"{args.batch} --r {args.r} --rounds {args.rounds})\n")
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, 2 threads, CPU. A Llama-shaped "
          f"base ({args.layers} layers of {args.hidden}, vocabulary {args.vocab}), {args.adapters} VeRA adapters "
          f"(r={args.r}), {args.requests} requests each ({args.context}-token context, {args.continuation}-token "
          f"continuation); adapters loaded within the time; medians of {args.rounds} alternated rounds.\n")
    print("| what | median s | spread s | ratio |")
    print("|---|---|---|---|")
    pairs = [("lm-eval hf + PEFT, one adapter after another", "lm-eval hf + PEFT, one adapter after another"),
             ("vera serve-model, mixed batches", "lm-eval hf + PEFT, one adapter after another"),
             ("generation, no logprobs", "generation, no logprobs"),
             ("generation, logprobs 5", "generation, no logprobs")]
    for kind, against in pairs:
        values = times[kind]
        print(f"| {kind} | {med[kind]:.3f} | {min(values):.3f}-{max(values):.3f} | {med[kind] / med[against]:.2f}x |")
    print(f"\nLargest difference between the two ways' log-likelihoods: {worst:.2e} (of sums over "
          f"{args.continuation} tokens). Generation: 16 rows of up to 4 adapters, 32 new tokens each.")


if __name__ == "__main__":
    main()

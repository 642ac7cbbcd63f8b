"""The model server's generation batches: what per-row decoding (registry/serving/decode.py: each row its own
sampling, budget, stops, and its answer as soon as it ends) costs against transformers' plain greedy ``generate``
of the same routed batch (what the server ran before), and what it gives back: the time to answer rows that ask
for few tokens when they share a batch with rows that ask for many.

Real parts: a `vera serve` registry on loopback, adapters published over HTTP, a ModelServer fetching them, on a
Llama-shaped base with random weights (its size set by flags) and a word-level tokenizer. Rounds alternate the
two ways, so that drift falls on both; ratios are reported (the machine is noisy).

    .venv/bin/python bench/generation.py [--hidden 512] [--layers 4] [--rows 16] [--tokens 64] [--rounds 5]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from registry.client import RegistryClient  # noqa: E402
from registry.serving.decode import Row, Sampling  # noqa: E402
from registry.serving.server import ModelServer  # noqa: E402
from tests.registry.servers import running_server  # noqa: E402
from tests.registry.tiny_lm import WORDS  # noqa: E402
from vera_core import PEFT_GENERATOR, VeraConfig, VeraModel, save_adapter  # noqa: E402


def save_base(directory: Path, hidden: int, layers: int, words: list[str] = WORDS) -> Path:
    """A Llama-shaped causal LM (random weights) with a word-level tokenizer of ``words`` (the tests' by default;
    ids 0-2 are [UNK], [PAD], [EOS]), saved like any HF model."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "[PAD]": 1, "[EOS]": 2, **{w: i + 3 for i, w in enumerate(words)}}
    tokenizer = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = Whitespace()
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(vocab), hidden_size=hidden, intermediate_size=hidden * 2,
                                         num_hidden_layers=layers, num_attention_heads=8, num_key_value_heads=8,
                                         max_position_embeddings=1024, pad_token_id=1, eos_token_id=2))
    model.save_pretrained(directory)
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                            eos_token="[EOS]").save_pretrained(directory)
    return directory


def publish(client: RegistryClient, base: Path, root: Path, count: int, r: int, *, scale: float = 0.1,
            prefix: str = "g") -> list[tuple[str, Path]]:
    """``count`` adapters of one family (PEFT's generator, one seed), vectors drawn N(0, ``scale``), published as
    bench/PREFIXi; their refs and folders."""
    from transformers import AutoModelForCausalLM

    model = VeraModel(AutoModelForCausalLM.from_pretrained(base), VeraConfig(
        r=r, target_modules=["q_proj", "v_proj"], save_projection=False, projection_generator=PEFT_GENERATOR))
    gen = torch.Generator().manual_seed(0)
    published = []
    for i in range(count):
        with torch.no_grad():
            for p in model.trainable_parameters().values():
                p.normal_(0, scale, generator=gen)
        folder = save_adapter(model, root / f"{prefix}{i}")
        published.append((client.publish(folder, f"bench/{prefix}{i}", base_model="bench").ref, folder))
    return published


def plain(server: ModelServer, names: list[str], prompts: list[list[int]], tokens: int) -> float:
    """transformers' greedy generate of the routed batch, every row to ``tokens`` (the server before)."""
    bank = server.banks[server.residents[names[0]].bank]
    enc = server.tokenizer.pad({"input_ids": prompts}, padding=True, return_tensors="pt")
    model: Any = bank.model.model
    started = time.perf_counter()
    with torch.no_grad(), bank.route(names):
        out = model.generate(**enc, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                             pad_token_id=1)
    [server.tokenizer.decode(row[enc["input_ids"].shape[1]:], skip_special_tokens=True) for row in out]
    return time.perf_counter() - started


#: four long stop strings no random text contains: every token of every row is checked, none ends early
STOPS = tuple(f"zz{i} " + "never " * 30 for i in range(4))


def per_row(server: ModelServer, names: list[str], prompts: list[list[int]], budgets: list[int],
            sampled: bool, streamed: bool = False) -> tuple[float, list[float], float]:
    """The server's batch (one window: every row queued at once), each row to its own budget; the batch's time,
    each row's time to its answer, and the tokens a row made on average (a row ends early at EOS). ``streamed``:
    each row's text is decoded as it grows and checked against four long stop strings (STOPS)."""
    answered: dict[int, float] = {}
    started = time.perf_counter()
    rows = [Row(p, n, Sampling(temperature=0.8, seed=i) if sampled else Sampling(), STOPS if streamed else (),
                on_text=(lambda _: None) if streamed else None)
            for i, (p, n) in enumerate(zip(prompts, budgets, strict=True))]
    futures = [f for name, row in zip(names, rows, strict=True)
               for f in server.start(server.residents[name], [row])]
    for i, future in enumerate(futures):
        future.add_done_callback(lambda _, i=i: answered.__setitem__(i, time.perf_counter() - started))
    done = server.wait(futures)
    return (time.perf_counter() - started, [answered[i] for i in range(len(rows))],
            statistics.mean(len(g.tokens) for g in done))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--r", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp, running_server(f"sqlite:///{tmp}/r.db", Path(tmp) / "blobs") as url:
        base = save_base(Path(tmp) / "base", args.hidden, args.layers)
        with RegistryClient(url) as client:
            adapters = [ref for ref, _ in publish(client, base, Path(tmp), 4, args.r)]
        server = ModelServer(str(base), task="causal-lm", base_name="bench", batch_window_s=0.5, max_batch=args.rows,
                             client_for=lambda token: RegistryClient(url, token or ""), resolve_ttl_s=3600)
        try:
            for name in adapters:
                server.generate(name, "the cat", max_new_tokens=1)
            names = [adapters[i % len(adapters)] for i in range(args.rows)]
            refs = [server.residents[n].ref for n in names]
            words = WORDS * 4
            prompts = [server.prompt_ids(" ".join(words[i:i + 8])) for i in range(args.rows)]
            # plain generate makes every row's tokens (min_new_tokens); a server row ends early at EOS, so the
            # tokens its rows made are reported beside the times
            short = max(1, args.tokens // 8)
            mixed = [short if i % 2 else args.tokens for i in range(args.rows)]
            times: dict[str, list[float]] = {"plain greedy": [], "per-row greedy": [], "per-row sampled": [],
                                             "per-row greedy, streamed, 4 stop strings": [],
                                             "mixed: short rows answered": [], "mixed: long rows answered": []}
            made: dict[str, list[float]] = {k: [] for k in times}
            for round_ in range(args.rounds):
                order = ["plain", "greedy", "sampled", "streamed", "mixed"]
                for kind in order if round_ % 2 == 0 else order[::-1]:
                    if kind == "plain":
                        times["plain greedy"].append(plain(server, refs, prompts, args.tokens))
                    elif kind == "mixed":
                        _, answered, _ = per_row(server, refs, prompts, mixed, sampled=False)
                        times["mixed: short rows answered"].append(statistics.mean(answered[1::2]))
                        times["mixed: long rows answered"].append(statistics.mean(answered[0::2]))
                    else:
                        batch, _, tokens = per_row(server, refs, prompts, [args.tokens] * args.rows,
                                                   kind == "sampled", streamed=kind == "streamed")
                        name = "per-row greedy, streamed, 4 stop strings" if kind == "streamed" else f"per-row {kind}"
                        times[name].append(batch)
                        made[name].append(tokens)
        finally:
            server.close()
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"## {date.today()} — generation batches: per-row decoding vs plain greedy generate (bench/generation.py "
          f"--hidden {args.hidden} --layers {args.layers} --rows {args.rows} --tokens {args.tokens} --r {args.r} "
          f"--rounds {args.rounds})\n")
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, 2 threads, CPU. A Llama-shaped "
          f"base ({args.layers} layers of {args.hidden}), {len(adapters)} adapters (r={args.r}) in one batch of "
          f"{args.rows} rows, {args.tokens} new tokens each; medians of {args.rounds} alternated rounds.\n")
    print("| what | median s | spread s | vs plain greedy | tokens per row |")
    print("|---|---|---|---|---|")
    for kind, values in times.items():
        per = f"{statistics.mean(made[kind]):.1f}" if made[kind] else "-"
        print(f"| {kind} | {med[kind]:.3f} | {min(values):.3f}-{max(values):.3f} | "
              f"{med[kind] / med['plain greedy']:.2f}x | {per} |")
    print(f"\nIn the mixed batch half the rows ask for {short} tokens, half for {args.tokens}: before, every row "
          f"waited for the batch's end.")


if __name__ == "__main__":
    main()

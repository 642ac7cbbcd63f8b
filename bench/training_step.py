"""Training-step time and peak memory: vera_core vs PEFT's VeRA, with PEFT LoRA r=8 as the reference.

RoBERTa-base-sized sequence classifier built from a config (random weights; speed does not depend on them),
batch 8, sequence 128, CPU, 2 threads, AdamW. Each configuration runs in its own subprocess so that its peak
memory is its own. Prints a markdown table with ratios; a per-layer table compares the two computation orders.

    .venv/bin/python bench/training_step.py [--steps 3] [--rounds 1] [--only NAME ...] [--layer-only]

``--rounds N`` runs every configuration N times, round-robin (each round runs them all, one after the other), so
that the machine's drift hits all of them alike; the table then gives each configuration's median over rounds and
its spread (min-max), and the ratios are taken within each round, then their median and range.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import date

import torch

BATCH, SEQ, THREADS = 8, 128, 2
CONFIGS = [
    ("peft-lora-r8", "peft-lora", 8),
    ("peft-vera-r1024", "peft-vera", 1024),
    ("ours-vera-r1024", "ours", 1024),
    ("peft-vera-r16", "peft-vera", 16),
    ("ours-vera-r16", "ours", 16),
    ("peft-vera-r256", "peft-vera", 256),
    ("ours-vera-r256", "ours", 256),
]


def build(kind: str, r: int) -> torch.nn.Module:
    from transformers import RobertaConfig, RobertaForSequenceClassification

    torch.manual_seed(0)
    base = RobertaForSequenceClassification(RobertaConfig(num_labels=2))  # roberta-base shapes
    targets = ["query", "value"]
    if kind == "peft-lora":
        from peft import LoraConfig, get_peft_model

        return get_peft_model(base, LoraConfig(r=r, lora_alpha=16, target_modules=targets, task_type="SEQ_CLS"))
    if kind == "peft-vera":
        from peft import VeraConfig, get_peft_model

        return get_peft_model(base, VeraConfig(r=r, target_modules=targets, task_type="SEQ_CLS"))
    from vera_core import VeraConfig, VeraModel

    return VeraModel(base, VeraConfig(r=r, target_modules=targets, task_type="SEQ_CLS"))


def worker(kind: str, r: int, steps: int) -> dict[str, float]:
    torch.set_num_threads(THREADS)
    model = build(kind, r).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 50265, (BATCH, SEQ), generator=gen)
    labels = torch.randint(0, 2, (BATCH,), generator=gen)

    def step() -> float:
        start = time.perf_counter()
        loss = model(input_ids=ids, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - start

    step()  # warm-up: allocations, optimizer state
    times = [step() for _ in range(steps)]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # whole process: weights + training
    return {"step_s": statistics.median(times), "peak_rss_mib": peak, "trainable": sum(p.numel() for p in params)}


def layer_table(tokens: int = BATCH * SEQ, n: int = 768, m: int = 768, reps: int = 5) -> list[str]:
    """One adapted 768x768 layer, forward + backward, factored (PEFT's order) vs fused, at several ranks."""
    from vera_core import PORTABLE_GENERATOR, ProjectionSpec, SharedProjection, VeraLinear, generate

    torch.set_num_threads(THREADS)
    rows = ["| r | factored ms | fused ms | factored / fused | auto picks | model MACs factored / fused |",
            "|---|---|---|---|---|---|"]
    for r in (16, 64, 256, 1024):
        base = torch.nn.Linear(n, m).requires_grad_(False)
        a, b = generate(ProjectionSpec(PORTABLE_GENERATOR, 0, r, n, m))
        layer = VeraLinear(base, SharedProjection(a, b), r=r, dropout=0.0, init_weights=False, d_initial=0.1)
        x = torch.randn(tokens, n, requires_grad=True)
        result = {}
        for strategy in ("factored", "fused"):
            layer.strategy = strategy  # type: ignore[assignment]
            times = []
            for _ in range(reps + 1):
                start = time.perf_counter()
                layer(x).sum().backward()
                times.append(time.perf_counter() - start)
            result[strategy] = statistics.median(times[1:]) * 1e3
        layer.strategy = "auto"
        factored_macs = 2 * tokens * r * (n + m)
        fused_macs = 2 * m * r * n + tokens * m * n
        rows.append(f"| {r} | {result['factored']:.1f} | {result['fused']:.1f} | "
                    f"{result['factored'] / result['fused']:.2f} | {layer.choose_strategy(x)} | "
                    f"{factored_macs / 1e6:.0f}M / {fused_macs / 1e6:.0f}M |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--worker", nargs=2)
    parser.add_argument("--layer-only", action="store_true")
    parser.add_argument("--rounds", type=int, default=1, help="runs of every configuration, round-robin")
    parser.add_argument("--only", nargs="+", help="configuration names to run (default: all)")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), args.steps)))
        return
    print(f"## Training step, {date.today()}: RoBERTa-base shapes, batch {BATCH}, seq {SEQ}, CPU {THREADS} threads "
          f"({platform.processor() or platform.machine()}), torch {torch.__version__}, median of {args.steps} steps\n")
    print("Per-layer (one 768x768 nn.Linear, 1024 tokens, forward + backward incl. grad of x):\n")
    print("\n".join(layer_table()))
    if args.layer_only:
        return
    configs = [c for c in CONFIGS if not args.only or c[0] in args.only]
    rounds: list[dict[str, dict[str, float]]] = []
    for number in range(args.rounds):
        rounds.append({})
        for name, kind, r in configs:
            out = subprocess.run([sys.executable, __file__, "--worker", kind, str(r), "--steps", str(args.steps)],
                                 capture_output=True, text=True, check=True)
            rounds[-1][name] = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"  round {number + 1} {name}: {rounds[-1][name]}", file=sys.stderr)
    print(f"\n{args.rounds} round(s), configurations alternated within each; step s: median over rounds "
          "(min-max); ratios taken within each round, then their median (range).\n")
    print("| config | trainable | step s | PEFT VeRA / ours, same r (> 1: ours faster) | / PEFT LoRA r=8 | "
          "peak RSS MiB |\n|---|---|---|---|---|---|")
    for name, _, _ in configs:
        steps = [rnd[name]["step_s"] for rnd in rounds]
        peer = name.replace("ours", "peft")
        speedup = _ratio(rounds, peer, name) if name.startswith("ours") and peer in rounds[0] else ""
        vs_lora = _ratio(rounds, name, "peft-lora-r8") if "peft-lora-r8" in rounds[0] else ""
        print(f"| {name} | {rounds[0][name]['trainable']:,.0f} | {statistics.median(steps):.2f} "
              f"({min(steps):.2f}-{max(steps):.2f}) | {speedup} | {vs_lora} | "
              f"{max(rnd[name]['peak_rss_mib'] for rnd in rounds):.0f} |")


def _ratio(rounds: list[dict[str, dict[str, float]]], numerator: str, denominator: str) -> str:
    """``numerator``'s step time over ``denominator``'s, within each round: the median and, over several rounds,
    the range."""
    ratios = [rnd[numerator]["step_s"] / rnd[denominator]["step_s"] for rnd in rounds]
    spread = f" ({min(ratios):.2f}-{max(ratios):.2f})" if len(ratios) > 1 else ""
    return f"{statistics.median(ratios):.2f}x{spread}"

if __name__ == "__main__":
    main()

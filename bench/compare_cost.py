"""What a comparison of versions (``POST /api/v1/compare``) costs, before and after session 38's bound: the delta
cosines of every layer of MiniLM-shaped adapters (6 layers; query, value and the attention output dense at 384 x 384,
the intermediate dense at 1536 x 384 and the output dense at 384 x 1536), computed

- as before 2026-12-05 (the peer): r x r products of each pair's factors, for every ordered pair of the versions
  named (a version named twice compared again), each pair computing both deltas' norms again;
- as now (registry.services.analysis): each distinct version once, each pair once, each layer the cheaper of the
  factored way and the deltas formed whole, with the cost estimated first (what VERA_MAX_COMPARE_WORK bounds).

Rounds alternate the two in one process; the cosines are checked equal. Tensors are built in memory (no server:
the arithmetic is what the outsider's r=16384 request spent hours and 7.5 GB on).

    .venv/bin/python bench/compare_cost.py [--ranks 256,1024] [--versions 2,8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from registry.services import analysis  # noqa: E402
from vera_core.keys import LAMBDA_B, LAMBDA_D, PEFT_PREFIX, PROJECTION_KEYS  # noqa: E402

SHAPES = {"attention.self.query": (384, 384), "attention.self.value": (384, 384),
          "attention.output.dense": (384, 384), "intermediate.dense": (1536, 384), "output.dense": (384, 1536)}
LAYERS = {f"encoder.layer.{i}.{name}": shape for i in range(6) for name, shape in SHAPES.items()}


def version(r: int, seed: int) -> analysis.Loaded:
    """One adapter's tensors (its own d and b, the shared A and B) and its layers' input sizes."""
    g = torch.Generator().manual_seed(seed)
    tensors = {f"{PEFT_PREFIX}{path}{LAMBDA_D}": torch.rand(r, generator=g) for path in LAYERS}
    tensors.update({f"{PEFT_PREFIX}{path}{LAMBDA_B}": torch.rand(out, generator=g)
                    for path, (out, _) in LAYERS.items()})
    shared = torch.Generator().manual_seed(0)
    tensors[PROJECTION_KEYS[0]] = torch.randn(r, 1536, generator=shared)
    tensors[PROJECTION_KEYS[1]] = torch.randn(1536, r, generator=shared)
    return tensors, {path: width for path, (_, width) in LAYERS.items()}


def before(loaded: list[analysis.Loaded]) -> list[list[list[float | None]]]:
    """Session 37's compare: every ordered pair by r x r products, the norms of both again for each pair."""
    def cosine(x: analysis.Factors, y: analysis.Factors) -> float | None:
        denom = (analysis._inner(x, x) * analysis._inner(y, y)) ** 0.5
        return analysis._inner(x, y) / denom if denom > 0 else None

    result = []
    for path in LAYERS:
        factors = [analysis._factors(path, v) for v in loaded]
        result.append([[cosine(x, y) for y in factors] for x in factors])
    return result


def now(loaded: list[analysis.Loaded], at: list[int]) -> tuple[list[list[list[float | None]]], int, int]:
    """This session's: distinct versions, each pair once, the cheaper way; with its estimated work and how many
    layers were formed whole."""
    distinct = sorted(set(at))
    plans = {path: analysis._plan(path, loaded, distinct, None) for path in LAYERS}
    cosines = {path: plan.cosines(loaded) for path, plan in plans.items()}
    result = [[[cosines[path].get(analysis._pair(i, j)) for j in at] for i in at] for path in LAYERS]
    return result, sum(p.work for p in plans.values()), sum(p.formed for p in plans.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranks", default="256,1024")
    parser.add_argument("--versions", default="2,8", help="references compared: half of them name one version twice")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {len(LAYERS)} MiniLM-shaped layers")
    print("| r | refs (distinct) | before, s | now, s | before / now | now: work (multiply-adds), layers formed |")
    print("|---|---|---|---|---|---|")
    for r in map(int, args.ranks.split(",")):
        for count in map(int, args.versions.split(",")):
            distinct = max(2, count // 2 + count % 2)
            loaded = [version(r, seed) for seed in range(distinct)]
            at = [i % distinct for i in range(count)]  # the later references name the first ones again
            named = [loaded[i] for i in at]
            times: dict[str, list[float]] = {"before": [], "now": []}
            for _ in range(args.rounds):
                start = time.perf_counter()
                old = before(named)
                times["before"].append(time.perf_counter() - start)
                start = time.perf_counter()
                new, work, formed = now(loaded, at)
                times["now"].append(time.perf_counter() - start)
                for old_layer, new_layer in zip(old, new, strict=True):
                    for old_row, new_row in zip(old_layer, new_layer, strict=True):
                        assert all(abs((a or 0) - (b or 0)) < 1e-6 for a, b in zip(old_row, new_row, strict=True))
            b, n = statistics.median(times["before"]), statistics.median(times["now"])
            print(f"| {r} | {count} ({distinct}) | {b:.2f} | {n:.2f} | {b / n:.1f}x | {work:.2g}, {formed} of "
                  f"{len(LAYERS)} |")


if __name__ == "__main__":
    main()

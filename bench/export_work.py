"""What a LoRA export costs against what vera_core.lora.lora_export_work estimates before computing anything (the
registry refuses an export over VERA_MAX_EXPORT_WORK on that estimate): for each shape, the estimate, the seconds
``write_lora_files`` takes (median of ``--rounds``), and estimate units per second, which should stay within a few
times of one another across shapes for the bound to mean seconds. With ``--before REV``, the exact export of many
tiny layers in that revision too (a process each, alternated), whose layer sizes were read once per layer.

    .venv/bin/python bench/export_work.py [--rounds 3] [--threads 2] [--before REV]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import revisions  # noqa: E402 (bench/revisions.py, beside this script)

#: (layers, in, out, r, max_rank or None): a few large layers factored, many tiny ones exact, everyday shapes, tall
#: and thin layers factored (a huge recorded input size at a small r) and wide exact ones (the bytes written).
SHAPES = [(4, 1024, 1024, 2048, 2), (4, 4096, 4096, 1024, 64), (32, 512, 512, 256, None), (32, 512, 512, 256, 16),
          (200, 64, 64, 64, 8), (4, 1 << 21, 1, 8, 1), (4, 65535, 1, 1024, None), (6000, 8, 8, 4, None)]

#: One measurement in whichever tree is on PYTHONPATH: argv = layers, in, out, r, max_rank (0: exact), threads;
#: prints seconds and the estimated work (0 where the tree has no estimate).
MEASURE = """
import json, sys, tempfile, time
from pathlib import Path
import torch
from vera_core import VeraConfig
from vera_core.checkpoint import META_IN_FEATURES, AdapterFiles
from vera_core import lora
layers, n_in, n_out, r, k, threads = map(int, sys.argv[1:7])
torch.set_num_threads(threads)
torch.manual_seed(0)
tensors, ins = {}, {}
for i in range(layers):
    path = f"base_model.model.layers.{i}.proj"
    tensors[path + ".vera_lambda_d"], tensors[path + ".vera_lambda_b"] = torch.randn(r), torch.randn(n_out)
    ins[f"layers.{i}.proj"] = n_in
files = AdapterFiles(VeraConfig(r=r, target_modules=["proj"]), tensors, {META_IN_FEATURES: json.dumps(ins)})
a, b = torch.randn(r, n_in), torch.randn(n_out, r)
export = lora.LoraExport(max_rank=k or None)
work = lora.lora_export_work(files, a, b, export) if hasattr(lora, "lora_export_work") else 0
# ExportCost now; (work, held) or the work alone in the trees of session 39 before it
work = work.work if hasattr(work, "work") else work[0] if isinstance(work, tuple) else work
with tempfile.TemporaryDirectory() as folder:
    start = time.perf_counter()
    lora.write_lora_files(Path(folder), files, a, b, export)
    print(json.dumps({"seconds": time.perf_counter() - start, "work": work}))
"""


def measure(tree: Path, shape: tuple[int, int, int, int, int | None], threads: int) -> dict[str, float]:
    layers, n_in, n_out, r, k = shape
    done = subprocess.run([sys.executable, "-c", MEASURE, str(layers), str(n_in), str(n_out), str(r), str(k or 0),
                           str(threads)],
                          env={**os.environ, "PYTHONPATH": str(tree)}, cwd=tree, capture_output=True, text=True,
                          check=True, timeout=1800)  # cwd: `python -c` puts it first on the path
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--before", help="a git revision whose exact export of many tiny layers runs alternately")
    args = parser.parse_args()
    print(f"## {date.today()} — LoRA export cost vs its estimate (bench/export_work.py --rounds {args.rounds} "
          f"--threads {args.threads}{f' --before {args.before}' if args.before else ''})\n")
    print("| layers | in | out | r | max_rank | estimate (units) | seconds (median) | units per second |")
    print("|---|---|---|---|---|---|---|---|")
    for shape in SHAPES:
        measured = [measure(ROOT, shape, args.threads) for _ in range(args.rounds)]
        seconds = statistics.median(run["seconds"] for run in measured)
        work = measured[0]["work"]
        layers, n_in, n_out, r, k = shape
        print(f"| {layers:,} | {n_in:,} | {n_out:,} | {r} | {k or 'exact'} | {work:.3g} | {seconds:.2f} | "
              f"{work / seconds:.3g} |", flush=True)
    if args.before:
        tiny = SHAPES[-1]
        with tempfile.TemporaryDirectory() as scratch, revisions.trees(args.before, Path(scratch)) as trees:
            runs: dict[tuple[str, str], list[float]] = {}
            for _ in range(args.rounds):
                for label, tree in trees.items():
                    runs.setdefault((f"{tiny[0]:,} layers of width {tiny[1]}, r={tiny[3]}, exact", label),
                                    []).append(measure(tree, tiny, args.threads)["seconds"])
            print()
            revisions.print_rounds(runs, kind="export", unit="s", scale=1.0, digits=2, before=args.before)


if __name__ == "__main__":
    main()

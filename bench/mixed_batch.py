"""Many adapters in one batch: 64 rows, each naming a different one of 64 VeRA adapters, on the bundled MiniLM.

Compared in one run:
- ours, mixed: AdapterBank, one forward for the 64 rows;
- ours, single adapter: the same 64 rows through one adapter (VeraModel), with the cost-chosen strategy (fused
  here) and with the factored order, which is the arithmetic a mixed batch must do;
- PEFT: a PeftModel holding the same 64 adapters, switching adapter per group of rows (PEFT's VeRA has no mixed
  batches), here one row per group.
Also how many adapters fit in 1 GiB: ours (bank slot bytes, and RSS growth for 1,000 adapters) and PEFT's (RSS
growth per adapter loaded with load_adapter). Outputs of the mixed batch are checked against PEFT's.

    .venv/bin/python bench/mixed_batch.py [--adapters 64] [--reps 5]
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import torch

from vera_core import PEFT_GENERATOR, AdapterBank, AdapterFiles, VeraConfig, VeraModel, save_adapter
from vera_core.recipes import DEMO_TARGETS, resolve_base

R = 256


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))


def base_model() -> torch.nn.Module:
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(resolve_base("minilm"), num_labels=2).eval()


def config() -> VeraConfig:
    # PEFT's generator and seed-only files, so that PEFT can load the very same adapters
    return VeraConfig(r=R, target_modules=DEMO_TARGETS, task_type="SEQ_CLS", save_projection=False,
                      projection_generator=PEFT_GENERATOR)


def make_adapters(template: VeraModel, count: int, seed: int = 0) -> list[AdapterFiles]:
    gen = torch.Generator().manual_seed(seed)
    base = template.adapter_state_dict(save_projection=False)
    out = []
    for _ in range(count):
        tensors = {k: v + torch.randn(v.shape, generator=gen) * (0.05 if "vera_lambda" in k else 0.01)
                   for k, v in base.items()}
        out.append(AdapterFiles(template.config, tensors, {}))
    return out


def timed(fn: Callable[[], object], reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--adapters", type=int, default=64)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--resident", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(2)
    from peft import PeftModel
    from transformers import AutoTokenizer

    n = args.adapters
    tokenizer = AutoTokenizer.from_pretrained(resolve_base("minilm"))
    words = ["good", "awful", "fine", "dull", "bright", "sad", "kind", "cruel"]
    texts = [f"the film was {words[i % 8]} and the cast was {words[(i * 3) % 8]}" for i in range(n)]
    inputs = dict(tokenizer(texts, padding=True, return_tensors="pt"))
    names = [f"a{i}" for i in range(n)]

    template = VeraModel(base_model(), config())
    adapters = make_adapters(template, n)
    bank = AdapterBank(VeraModel(base_model(), config()).eval(), capacity=n)
    for name, files in zip(names, adapters, strict=True):
        bank.add(name, files)
    single = VeraModel(base_model(), config()).eval()
    single.load_adapter_state_dict(adapters[0].tensors)

    with tempfile.TemporaryDirectory() as tmp:
        dirs = []
        for name, files in zip(names, adapters, strict=True):
            template.load_adapter_state_dict(files.tensors)
            dirs.append(save_adapter(template, Path(tmp) / name))
        gc.collect()
        before = rss_mib()
        peft = PeftModel.from_pretrained(base_model(), dirs[0], adapter_name=names[0]).eval()
        after_first = rss_mib()
        for name, d in zip(names[1:], dirs[1:], strict=True):
            peft.load_adapter(d, adapter_name=name)
        peft_per_adapter = (rss_mib() - after_first) / max(1, n - 1) * 2**20
        del before

    def peft_switching() -> torch.Tensor:
        rows = []
        with torch.no_grad():
            for i, name in enumerate(names):
                peft.set_adapter(name)
                rows.append(peft(**{k: v[i:i + 1] for k, v in inputs.items()}).logits)
        return torch.cat(rows)

    mixed = bank(names, **inputs).logits
    torch.testing.assert_close(mixed, peft_switching(), rtol=1e-4, atol=1e-4)  # the same function

    with torch.no_grad():
        t_mixed = timed(lambda: bank(names, **inputs), args.reps)
        t_single = timed(lambda: single(**inputs), args.reps)
        single.set_strategy("factored")
        t_factored = timed(lambda: single(**inputs), args.reps)
        single.set_strategy("auto")
        t_same = timed(lambda: bank([names[0]] * n, **inputs), args.reps)
        t_peft = timed(peft_switching, max(1, args.reps // 2))

    gc.collect()
    resident_before = rss_mib()
    big = AdapterBank(VeraModel(base_model(), config()).eval(), capacity=16)
    model_mib = rss_mib() - resident_before
    extra = make_adapters(template, args.resident, seed=1)
    gc.collect()
    start = rss_mib()
    for i, files in enumerate(extra):
        big.add(f"r{i}", files)
    del extra
    gc.collect()
    ours_rss = (rss_mib() - start) / args.resident * 2**20

    print(f"## Mixed batches, {date.today()}: {n} rows x {n} adapters, MiniLM-L6-H384 classifier, VeRA r={R} on "
          f"{DEMO_TARGETS} + head, {inputs['input_ids'].shape[1]} tokens per row, CPU 2 threads "
          f"({platform.machine()}), torch {torch.__version__}, median of {args.reps}\n")
    print("| path | seconds per batch | rows/s | vs PEFT | vs our single adapter |\n|---|---|---|---|---|")
    for label, t in [("ours, mixed (64 adapters, 1 forward)", t_mixed),
                     ("ours, bank with every row on one adapter", t_same),
                     ("ours, single adapter (VeraModel, auto: fused here)", t_single),
                     ("ours, single adapter (VeraModel, factored: PEFT's arithmetic)", t_factored),
                     ("PEFT, set_adapter per row group", t_peft)]:
        print(f"| {label} | {t:.3f} | {n / t:.0f} | {t_peft / t:.1f}x | {t / t_single:.2f}x cost |")
    print(f"\nResident adapters: ours {bank.bytes_per_adapter():,} B per adapter in bank slots "
          f"({2**30 // bank.bytes_per_adapter():,} per GiB), RSS growth {ours_rss:,.0f} B per adapter over "
          f"{args.resident:,} adapters ({2**30 / ours_rss:,.0f} per GiB); PEFT RSS growth {peft_per_adapter:,.0f} B "
          f"per adapter over {n - 1} load_adapter calls ({2**30 / peft_per_adapter:,.0f} per GiB). "
          f"Base model with bank: {model_mib:.0f} MiB.")


if __name__ == "__main__":
    main()

"""The paper's claims at small scale, on the offline demo task (word polarity on the bundled MiniLM).

Same task, data, budget (1 epoch, batch 32) and trainer for every row; 3 seeds each (seed changes head init,
data order and dropout; the projection seed stays 0). Rows: head only; PEFT LoRA r=8; VeRA at several ranks;
VeRA with d initialised to 1.0 vs 0.1; VeRA training only d (b fixed at 1) or only b (d fixed at 0.1).
Prints a markdown table (test accuracy mean and spread, trainable parameters).

    .venv/bin/python bench/paper_claims.py [--seeds 0 1 2] [--rows head lora vera-256 ...]
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import date
from typing import Any

import torch

from vera_core import VeraModel
from vera_core.data import SequenceClassification, word_polarity
from vera_core.recipes import DEMO_TARGETS, TrainSpec, build
from vera_core.trainer import Trainer, TrainingArguments

ROWS: dict[str, dict[str, Any]] = {
    "head": {"kind": "head"},
    "head-lr1e-2": {"kind": "head", "head_lr": 1e-2},
    "lora-r8": {"kind": "lora", "r": 8},
    "vera-r16": {"kind": "vera", "r": 16},
    "vera-r64": {"kind": "vera", "r": 64},
    "vera-r256": {"kind": "vera", "r": 256},
    "vera-r1024": {"kind": "vera", "r": 1024},
    "vera-r256-d1.0": {"kind": "vera", "r": 256, "d_initial": 1.0},
    "vera-r256-only-d": {"kind": "vera", "r": 256, "only": "d"},
    "vera-r256-only-b": {"kind": "vera", "r": 256, "only": "b"},
}


def make_model(row: dict[str, Any], seed: int) -> tuple[torch.nn.Module, Any, float]:
    spec = TrainSpec(demo=True, r=row.get("r", 16), seed=seed, d_initial=row.get("d_initial", 0.1))
    model, tokenizer = build(spec, num_labels=2)
    lr = 1e-2
    if row["kind"] == "head":
        for name, p in model.trainable_parameters().items():
            p.requires_grad_(name.startswith("classifier."))
    elif row["kind"] == "lora":
        from peft import LoraConfig, get_peft_model

        base = model.merge_and_unload()  # b = 0: the untouched base model with its seeded head
        model = get_peft_model(base, LoraConfig(r=row["r"], lora_alpha=16, target_modules=DEMO_TARGETS,
                                                task_type="SEQ_CLS"))
        lr = 1e-3
    elif row.get("only"):
        assert isinstance(model, VeraModel)
        with torch.no_grad():
            for layer in model.vera_layers():
                if row["only"] == "d":  # b fixed at 1, d learns from 0 (the delta still starts at zero)
                    layer.vera_lambda_b.fill_(1.0)
                    layer.vera_lambda_d.zero_()
                    layer.vera_lambda_b.requires_grad_(False)
                else:  # d fixed at its initial 0.1, b learns from 0
                    layer.vera_lambda_d.requires_grad_(False)
    return model, tokenizer, lr


def run(row: dict[str, Any], seed: int) -> dict[str, float]:
    splits = word_polarity()
    model, tokenizer, lr = make_model(row, seed)
    task = SequenceClassification(tokenizer, max_length=64)
    args = TrainingArguments(lr=lr, head_lr=row.get("head_lr", 1e-3), epochs=1, batch_size=32, seed=seed,
                             metric_for_best="accuracy", greater_is_better=True)
    trainer = Trainer(model, task, args, train_data=splits.train, eval_data=splits.eval)
    start = time.perf_counter()
    trainer.train()
    trainable = sum(p.numel() for p in trainer.trainable().values())
    head = sum(p.numel() for n, p in trainer.trainable().items() if "classifier" in n)
    return {"test": trainer.evaluate(splits.test)["accuracy"], "trainable": trainable, "head": head,
            "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rows", nargs="+", default=list(ROWS))
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(f"## Paper claims at small scale, {date.today()}: word polarity (vaderSentiment lexicon, hash split "
          f"6,023 / 731 / 766), MiniLM-L6-H384, targets {DEMO_TARGETS} + classifier head, 1 epoch, batch 32, "
          f"seeds {args.seeds}, CPU 2 threads\n")
    print("| row | test accuracy mean | spread (min-max) | trainable (adapter + head) | train s |\n"
          "|---|---|---|---|---|")
    for name in args.rows:
        results = [run(ROWS[name], seed) for seed in args.seeds]
        accs = [r["test"] for r in results]
        t, h = results[0]["trainable"], results[0]["head"]
        print(f"| {name} | {statistics.mean(accs):.4f} | {min(accs):.4f}-{max(accs):.4f} | {t - h:,} + {h:,} | "
              f"{statistics.mean(r['seconds'] for r in results):.0f} |", flush=True)


if __name__ == "__main__":
    main()

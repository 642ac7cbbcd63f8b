"""The steps of bench/gpu_check.sh, one per call, each writing a markdown section for bench/RESULTS.md.

    python bench/gpu_check.py STEP --device cuda|cpu [--quick] --out DIR

Steps: device, projection, train, mixed, decode, serve, worker (the CUDA tests are run by the shell script through
pytest). Each prints its section and writes it to DIR/<step>.md; a check that fails exits 1 after writing what it
found, so the fragment says which figure is wrong. ``--quick`` uses small shapes (the CPU run the test suite makes);
the full run uses the issue's shapes: 7B projections at r=1024, RoBERTa-base r=1024 fp32 and a ~1B Llama-shaped LM
in bf16.
A bf16 case trains as mixed precision does (vera_core's Trainer, accelerate): the base cast to bf16, every adapter
float32 (PEFT's default too), each step under autocast; casting whole PEFT models to bf16 instead would race PEFT's
pure-bf16 vectors against vera_core's float32 ones (an earlier version of this script did).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from vera_core import (  # noqa: E402
    PEFT_GENERATOR,
    PORTABLE_GENERATOR,
    AdapterBank,
    ProjectionSpec,
    VeraConfig,
    VeraModel,
    generate,
    read_adapter,
    save_adapter,
)

Lines = list[str]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: str, reps: int) -> float:
    """Median seconds of ``reps`` calls after one warm-up."""
    fn()
    times = []
    for _ in range(reps):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ---- device ------------------------------------------------------------------------------------------------------
def step_device(device: str, quick: bool) -> tuple[Lines, bool]:
    lines = [f"torch {torch.__version__} (CUDA build {torch.version.cuda or 'none'}), python "
             f"{sys.version.split()[0]}, CUDA available: {torch.cuda.is_available()}"]
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(device)
        lines.append(f"device {device}: {props.name}, {props.total_memory / 2**30:.0f} GiB, compute capability "
                     f"{props.major}.{props.minor}, {torch.cuda.device_count()} device(s); bf16 supported: "
                     f"{torch.cuda.is_bf16_supported()}")
    else:
        lines.append(f"device cpu, {torch.get_num_threads()} threads (--cpu run: CUDA figures are skipped)")
    return lines, True


# ---- projection --------------------------------------------------------------------------------------------------
def step_projection(device: str, quick: bool) -> tuple[Lines, bool]:
    """The portable generator on ``device`` against the CPU, bit for bit, many seeds and shapes."""
    seeds = [0, 1, 7, 2**31 - 1, 2**40 + 1, 2**63 - 1] if not quick else [0, 2**40 + 1]
    shapes = [(8, 64, 64), (16, 768, 768), (256, 2048, 5632), (1024, 4096, 4096), (1024, 4096, 11008),
              (1024, 11008, 4096)] if not quick else [(8, 64, 64), (16, 96, 200)]
    checked, mismatches = 0, []
    for r, n, m in shapes:
        for seed in seeds if r * max(n, m) <= 2**22 else seeds[:2]:  # 7B shapes: two seeds (each pair is 90 MiB)
            spec = ProjectionSpec(PORTABLE_GENERATOR, seed, r, n, m)
            on_cpu, there = generate(spec, "cpu"), generate(spec, device)
            checked += 1
            if not all(torch.equal(x, y.cpu()) for x, y in zip(on_cpu, there, strict=True)):
                mismatches.append(f"seed {seed}, r={r}, {n}x{m}")
    r, n, m = shapes[-1]
    spec = ProjectionSpec(PORTABLE_GENERATOR, 0, r, n, m)
    seconds = timed(lambda: generate(spec, device), device, 3)
    verdict = "**equal bit for bit**" if not mismatches else f"**DIFFERENT** for {', '.join(mismatches)}"
    if device == "cpu":
        verdict += " (--cpu run: the CPU against itself; the figure that matters is the CUDA run's)"
    lines = [f"portable generator `{PORTABLE_GENERATOR}` on {device} vs the CPU: {checked} (seed, shape) pairs "
             f"(shapes r x in x out: {', '.join(f'{r}x{n}x{m}' for r, n, m in shapes)}): {verdict}",
             f"generating the largest pair ({r}x{max(n, m)}) on {device}: {seconds * 1e3:.1f} ms (median of 3)"]
    return lines, not mismatches


# ---- training step -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """A base model to train, with its shapes and precision."""

    name: str
    family: str  # roberta | llama
    sizes: dict[str, int]
    r: int
    dtype: torch.dtype
    batch: int
    seq: int
    tolerance: float

    def base(self) -> torch.nn.Module:
        """The same random weights for every contestant: made once (a 1B model takes a while on a CPU), copied, in
        the case's dtype. Adapters are added to it afterwards, so that they stay float32 (PEFT's default,
        autocast_adapter_dtype, and vera_core's), and every contestant trains under autocast in that dtype, as
        vera_core's Trainer and accelerate's mixed precision do."""
        key = f"{self.family} {sorted(self.sizes.items())}"  # the cases of one base (a rank sweep) share it
        if key not in _BASES:
            _BASES.clear()
            _BASES[key] = self._make()
        return copy.deepcopy(_BASES[key]).to(self.dtype)

    def _make(self) -> torch.nn.Module:
        torch.manual_seed(0)
        if self.family == "roberta":
            from transformers import RobertaConfig, RobertaForSequenceClassification

            # dropout off: the contestants draw random numbers in different orders, and must compute the same
            return RobertaForSequenceClassification(RobertaConfig(
                num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **self.sizes))
        from transformers import LlamaConfig, LlamaForCausalLM

        return LlamaForCausalLM(LlamaConfig(**self.sizes))

    @property
    def targets(self) -> list[str]:
        return ["query", "value"] if self.family == "roberta" else ["q_proj", "v_proj"]

    @property
    def task_type(self) -> str:
        return "SEQ_CLS" if self.family == "roberta" else "CAUSAL_LM"

    def inputs(self, device: str) -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(0)
        ids = torch.randint(0, self.sizes.get("vocab_size", 50265), (self.batch, self.seq), generator=gen)
        labels = torch.randint(0, 2, (self.batch,), generator=gen) if self.family == "roberta" else ids
        return {"input_ids": ids.to(device), "labels": labels.to(device)}


_BASES: dict[str, torch.nn.Module] = {}
TINY_ROBERTA = {"vocab_size": 1000, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                "intermediate_size": 128, "max_position_embeddings": 80}
TINY_LLAMA = {"vocab_size": 1000, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
              "intermediate_size": 128, "num_key_value_heads": 4}
# TinyLlama-1.1B's shapes (random weights: speed does not depend on them)
LLAMA_1B = {"vocab_size": 32000, "hidden_size": 2048, "num_hidden_layers": 22, "num_attention_heads": 32,
            "intermediate_size": 5632, "num_key_value_heads": 4}


def cases(quick: bool) -> list[Case]:
    if quick:
        return [Case("tiny RoBERTa fp32", "roberta", TINY_ROBERTA, 64, torch.float32, 4, 16, 1e-4),
                # bf16 on the CPU too (autocast runs there): the suite walks the path a GPU run takes
                Case("tiny Llama bf16", "llama", TINY_LLAMA, 32, torch.bfloat16, 2, 16, 2e-2)]
    # the two cases, and RoBERTa-base at lower ranks too ("never slower than PEFT at any rank")
    return [*(Case("RoBERTa-base fp32", "roberta", {}, r, torch.float32, 32, 128, 1e-4) for r in (1024, 256, 16)),
            Case("Llama ~1.1B bf16", "llama", LLAMA_1B, 256, torch.bfloat16, 4, 512, 2e-2)]


def contestant(case: Case, kind: str, device: str) -> torch.nn.Module:
    """``ours`` loads PEFT VeRA's initial vectors (same generator and seed), so the two train the same function."""
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    from peft import VeraConfig as PeftVeraConfig

    if kind == "peft-lora-r8":
        model = get_peft_model(case.base(), LoraConfig(r=8, lora_alpha=16, target_modules=case.targets,
                                                       task_type=case.task_type))
    else:
        base = case.base()
        torch.manual_seed(5)  # after the base: PEFT draws the initial vectors from the global generator
        model = get_peft_model(base, PeftVeraConfig(r=case.r, target_modules=case.targets, init_weights=False,
                                                           task_type=case.task_type))
        if kind.startswith("ours"):
            peft_state = get_peft_model_state_dict(model)
            model = VeraModel(case.base(), VeraConfig(r=case.r, target_modules=case.targets,
                                                      task_type=case.task_type, init_weights=False,
                                                      projection_generator=PEFT_GENERATOR))
            model.load_adapter_state_dict(peft_state)
            if kind != "ours":  # ours-factored, ours-fused: one order forced instead of the cheaper one per call
                model.set_strategy(kind.removeprefix("ours-"))
    return model.to(device=device).train()  # not cast: that would round PEFT's adapters to the base's dtype


class Contestant:
    """One model in the training race: its optimizer, its losses, its step times and the memory of its step."""

    def __init__(self, case: Case, kind: str, device: str) -> None:
        self.model, self.device = contestant(case, kind, device), device
        self.autocast = {"device_type": device.split(":")[0], "dtype": case.dtype,
                         "enabled": case.dtype != torch.float32}
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.SGD(self.params, lr=1e-2)  # plain SGD: the first update is the gradient, comparable
        self.inputs = case.inputs(device)
        self.losses: list[float] = []
        self.times: list[float] = []
        self.peak_mib: float | None = None

    def step(self) -> None:
        sync(self.device)
        start = time.perf_counter()
        with torch.autocast(**self.autocast):
            loss = self.model(**self.inputs).loss
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.losses.append(loss.item())  # .item() waits for the device
        self.times.append(time.perf_counter() - start)

    def first_step(self) -> None:
        """The warm-up step (not timed), measuring the memory this model needs: its own weights and projections plus
        what its step allocates beyond what was resident (the other contestants' weights are not counted)."""
        if not self.device.startswith("cuda"):
            self.step()
            return
        own = sum(t.numel() * t.element_size() for t in [*self.model.parameters(), *self.model.buffers()])
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self.step()
        self.peak_mib = (own + torch.cuda.max_memory_allocated(self.device) - before) / 2**20


KINDS = ("peft-vera", "ours", "peft-lora-r8")
#: vera_core with each order forced (``auto`` picks per call): which order pays on this device. Float32 cases only:
#: under autocast the fused order does not apply (vera_core/layer.py), so both would run the factored one.
ORDERS = ("ours-factored", "ours-fused")


def race(case: Case, device: str, steps: int) -> dict[str, Contestant]:
    """Every contestant resident at once, one warm-up step each, then ``steps`` rounds with one step of each,
    alternating the order, so that drift and warm-up effects fall on all of them alike."""
    kinds = KINDS + (ORDERS if case.dtype == torch.float32 else ())
    runs = {kind: Contestant(case, kind, device) for kind in kinds}
    for run in runs.values():
        run.first_step()
        run.times.clear()
    for round_ in range(steps):
        for kind in kinds if round_ % 2 == 0 else kinds[::-1]:
            runs[kind].step()
    return runs


def step_train(device: str, quick: bool) -> tuple[Lines, bool]:
    steps = 3 if quick else 6
    ok, lines = True, []
    for case in cases(quick):
        runs = race(case, device, steps)
        ours, peft, lora = runs["ours"], runs["peft-vera"], runs["peft-lora-r8"]
        first = abs(ours.losses[0] - peft.losses[0]) / max(1e-8, abs(peft.losses[0]))
        after = abs(ours.losses[1] - peft.losses[1]) / max(1e-8, abs(peft.losses[1]))
        same = first <= case.tolerance and after <= case.tolerance * 10
        for kind in set(runs) & set(ORDERS):  # each forced order trains the same function too
            pairs = zip(runs[kind].losses[:2], peft.losses[:2], strict=True)
            worst = max(abs(a - b) / max(1e-8, abs(b)) for a, b in pairs)
            if worst > case.tolerance * 10:
                same = False
                lines.append(f"**{kind} DIFFERENT** from PEFT VeRA: loss rel. diff {worst:.1e} in the first two steps")
        ok &= same
        lines += [f"**{case.name}**, VeRA r={case.r} on {'+'.join(case.targets)}, batch {case.batch} x seq "
                  f"{case.seq}, SGD, median of {steps} alternated rounds on {device}: ours vs PEFT VeRA loss at step "
                  f"1 {ours.losses[0]:.6g} vs {peft.losses[0]:.6g} (rel. diff {first:.1e}), after one update rel. "
                  f"diff {after:.1e} (tolerance {case.tolerance:g}): {'**same**' if same else '**DIFFERENT**'}",
                  "", "| config | trainable | step ms (median) | spread ms | PEFT VeRA / this | this / PEFT LoRA r=8 "
                  "| peak GPU MiB (own weights + step) |", "|---|---|---|---|---|---|---|"]
        medians = {kind: statistics.median(run.times) for kind, run in runs.items()}
        for kind, run in runs.items():
            peak = "-" if run.peak_mib is None else f"{run.peak_mib:,.0f}"
            lines.append(f"| {kind} | {sum(p.numel() for p in run.params):,} | {medians[kind] * 1e3:.1f} | "
                         f"{min(run.times) * 1e3:.1f}-{max(run.times) * 1e3:.1f} | "
                         f"{medians['peft-vera'] / medians[kind]:.2f}x | "
                         f"{medians[kind] / medians['peft-lora-r8']:.2f}x | {peak} |")
        lines.append("")
        del runs, ours, peft, lora
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    return lines, ok


# ---- the MiniLM-shaped base --------------------------------------------------------------------------------------
MINILM_ASSETS = "VERA_GPU_CHECK_MINILM"


def minilm_path() -> str:
    """The demo's pretrained MiniLM where its package is installed; on a machine without it (the GPU machine: nothing
    can be downloaded there, and its 88 MB do not fit what travels), the same architecture with random weights,
    built from the config and tokenizer that `gpu_check.sh --prepare` carries (VERA_GPU_CHECK_MINILM). Every check
    compares ours with PEFT on the same weights, so random ones prove as much."""
    import os

    assets = os.environ.get(MINILM_ASSETS)
    if not assets:
        from vera_core.recipes import resolve_base

        return str(resolve_base("minilm"))
    built = Path(tempfile.gettempdir()) / "vera-gpu-check-minilm"
    if not (built / "model.safetensors").is_file():
        from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

        torch.manual_seed(0)
        config = AutoConfig.from_pretrained(assets, num_labels=2)
        AutoModelForSequenceClassification.from_config(config).save_pretrained(built)
        AutoTokenizer.from_pretrained(assets).save_pretrained(built)
    return str(built)


# ---- mixed-adapter batches ---------------------------------------------------------------------------------------
def step_mixed(device: str, quick: bool) -> tuple[Lines, bool]:
    """Rows naming different adapters in one forward on ``device`` vs each adapter alone on the CPU and PEFT."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    count = 4 if quick else 64
    path = minilm_path()
    base = lambda: AutoModelForSequenceClassification.from_pretrained(path, num_labels=2).eval()  # noqa: E731
    texts = [f"sentence number {i} about the weather and the news" for i in range(count)]
    enc = AutoTokenizer.from_pretrained(path)(texts, return_tensors="pt", padding=True)
    names = [f"a{i}" for i in range(count)]
    with tempfile.TemporaryDirectory() as tmp:
        model = VeraModel(base(), VeraConfig(r=256, target_modules=["query", "value"], task_type="SEQ_CLS",
                                             save_projection=False, projection_generator=PEFT_GENERATOR))
        gen = torch.Generator().manual_seed(0)
        for name in names:
            with torch.no_grad():
                for p in model.trainable_parameters().values():
                    p.normal_(0, 0.1, generator=gen)
            save_adapter(model, Path(tmp) / name)
        bank = AdapterBank(VeraModel(base(), read_adapter(Path(tmp) / "a0").config).eval().to(device))
        for name in names:
            bank.add(name, Path(tmp) / name)
        inputs = {k: v.to(device) for k, v in enc.items()}
        mixed = bank(names, **inputs).logits.float().cpu()
        mixed_s = timed(lambda: bank(names, **inputs), device, 3)
        peft = PeftModel.from_pretrained(base(), Path(tmp) / "a0", adapter_name="a0")
        for name in names[1:]:
            peft.load_adapter(Path(tmp) / name, adapter_name=name)
        peft = peft.to(device).eval()

        def peft_rows() -> torch.Tensor:
            rows = []
            with torch.no_grad():
                for i, name in enumerate(names):
                    peft.set_adapter(name)
                    rows.append(peft(**{k: v[i:i + 1] for k, v in inputs.items()}).logits.float())
            return torch.cat(rows).cpu()

        want = peft_rows()
        peft_s = timed(peft_rows, device, 3)
    diff = (mixed - want).abs().max().item()
    same = diff <= 1e-3
    return [f"mixed batch on {device}: {count} rows, each naming a different one of {count} VeRA r=256 adapters on "
            f"MiniLM: max |ours - PEFT (set_adapter per row)| = {diff:.1e}: {'**same**' if same else '**DIFFERENT**'}"
            f"; one mixed forward {mixed_s * 1e3:.1f} ms vs PEFT switching per row {peft_s * 1e3:.1f} ms "
            f"({peft_s / mixed_s:.1f}x)"], same


# ---- continuous batching -----------------------------------------------------------------------------------------
def step_decode(device: str, quick: bool) -> tuple[Lines, bool]:
    """The model server's decode loop (registry/serving/batching.py) on ``device``: rows of 8 adapters, half of
    them joining the running batch mid-flight (prefilled in chunks between its steps), each choose the tokens their
    adapter alone does (every token is, in a forward of the row alone, the likeliest or within 1e-3 of it: a near
    tie may go either way on a GPU); and the batch queued at once, against transformers' ``generate`` of it."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from registry.serving.batching import RunningBatch

    hidden, layers, vocab, count, new = (64, 2, 96, 4, 8) if quick else (1024, 8, 32000, 32, 64)
    chunk = 8 if quick else 64  # prefill tokens per forward of the rows that join: several chunks each
    torch.manual_seed(0)
    base = LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden * 2,
                                        num_hidden_layers=layers, num_attention_heads=8, num_key_value_heads=8,
                                        max_position_embeddings=512)).eval()
    model = VeraModel(base, VeraConfig(r=256, target_modules=["q_proj", "v_proj"], save_projection=False,
                                       projection_generator=PEFT_GENERATOR))
    gen = torch.Generator().manual_seed(0)
    names = [f"a{i}" for i in range(8)]
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            with torch.no_grad():
                for p in model.trainable_parameters().values():
                    p.normal_(0, 0.1, generator=gen)
            save_adapter(model, Path(tmp) / name)
        bank = AdapterBank(model.to(device).eval())
        for name in names:
            bank.add(name, Path(tmp) / name)
    refs = [names[i % len(names)] for i in range(count)]
    prompts = [torch.randint(3, vocab, (8 + (5 * i) % 33,), generator=gen).tolist() for i in range(count)]
    on = torch.device(device)

    def continuous(join_at: int) -> list[list[int]]:
        return _decode_rows(RunningBatch(bank, pad_id=0, eos=set(), decode=lambda ids: "", device=on), prompts,
                            refs, new=new, join_at=join_at, chunk=chunk)

    joined = continuous(new // 2)
    worst, chose = 0.0, 0
    with torch.no_grad():
        for ref, prompt, tokens in zip(refs, prompts, joined, strict=True):
            with bank.route([ref]):
                logits = bank.model.model(input_ids=torch.tensor([prompt + tokens[:-1]], device=on)).logits[0].float()
            at = logits[len(prompt) - 1:]
            gap = (at.max(-1).values - at.gather(1, torch.tensor(tokens, device=on)[:, None])[:, 0]).max().item()
            worst, chose = max(worst, gap), chose + int(gap <= 1e-3)
    ours_s = timed(lambda: continuous(0), device, 3)
    ids = torch.tensor([[0] * (max(map(len, prompts)) - len(p)) + p for p in prompts], device=on)
    mask = (torch.arange(ids.shape[1], device=on)[None, :] >= (ids.shape[1] - torch.tensor(
        [len(p) for p in prompts], device=on))[:, None]).long()

    def plain() -> None:
        with torch.no_grad(), bank.route(refs):
            bank.model.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
                                      do_sample=False, pad_token_id=0)

    plain_s = timed(plain, device, 3)
    same = chose == count
    return [f"continuous batching on {device}: {count} rows of 8 VeRA r=256 adapters on a Llama-shaped base ({layers} "
            f"layers of {hidden}, vocabulary {vocab}), half joining after {new // 2} of {new} steps (prefilled "
            f"{chunk} tokens a forward between steps): {chose} of "
            f"{count} rows chose their adapter's likeliest token at every step (largest gap {worst:.1e}): "
            f"{'**same**' if same else '**DIFFERENT**'}; the batch queued at once {ours_s * 1e3:.0f} ms vs "
            f"transformers' generate {plain_s * 1e3:.0f} ms ({plain_s / ours_s:.2f}x), "
            f"{count * new / ours_s:.0f} tokens/s"], same


def _decode_rows(batch: Any, prompts: list[list[int]], refs: list[str], *, new: int, join_at: int, chunk: int
                 ) -> list[list[int]]:
    """Every row decoded to ``new`` tokens by ``batch`` (a RunningBatch); with ``join_at``, the second half joins
    after that many steps, a chunk of its prefill (``chunk`` tokens) before each step, as the server runs them."""
    from registry.serving.decode import Row

    done: dict[int, list[int]] = {}
    rows = [Row(p, new, on_end=lambda t, *_, i=i: done.__setitem__(i, t)) for i, p in enumerate(prompts)]
    half = len(rows) // 2 if join_at else len(rows)
    batch.join(rows[:half], refs[:half], list(range(half)))
    for step in range(10 * new):
        if step == join_at and half < len(rows):
            batch.join(rows[half:], refs[half:], list(range(half, len(rows))), chunk=chunk)
        else:
            batch.prefill()  # the next chunk of rows still being prefilled, if any
        if not batch:
            break
        if len(batch):
            batch.step()
    return [done[i] for i in range(len(rows))]


# ---- serve-model -------------------------------------------------------------------------------------------------
def classify(url: str, adapter: str, texts: list[str]) -> dict[str, Any]:
    body = json.dumps({"adapter": adapter, "inputs": texts}).encode()
    request = urllib.request.Request(f"{url}/v1/classify", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        result: dict[str, Any] = json.load(response)
        return result


def step_serve(device: str, quick: bool, out: Path) -> tuple[Lines, bool]:
    """`vera serve-model --device` answering classify requests for an adapter published to a real registry."""
    from registry.client import RegistryClient
    from tests.registry.servers import free_port, running_server, running_vera

    seconds = 2.0 if quick else 20.0
    text = ["an ordinary sentence about the weather today"]
    with tempfile.TemporaryDirectory() as tmp, running_server(f"sqlite:///{tmp}/r.db", Path(tmp) / "blobs") as url:
        from transformers import AutoModelForSequenceClassification

        path = minilm_path()
        base = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
        model = VeraModel(base, VeraConfig(r=256, target_modules=["query", "value"], task_type="SEQ_CLS",
                                           save_projection=False, projection_generator=PEFT_GENERATOR))
        with RegistryClient(url) as client:
            ref = client.publish(save_adapter(model, Path(tmp) / "a"), "bench/gpu", base_model="minilm").ref
        port = free_port()
        with running_vera(["serve-model", "--base", path, "--base-name", "minilm", "--device", device, "--port",
                           str(port), "--registry", url], port,
                          log_path=out / "serve-model.log") as served:
            first = time.perf_counter()
            answer = classify(served, ref, text)
            first_s = time.perf_counter() - first
            done, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                classify(served, ref, text * 8)
                done += 1
            rate = done * 8 / (time.perf_counter() - start)
    ok = isinstance(answer, dict) and bool(answer)
    return [f"`vera serve-model --device {device}`: a classify request for {ref} answered "
            f"({', '.join(sorted(answer))}); first request (fetch + bank + forward) {first_s * 1e3:.0f} ms; one "
            f"client, 8 texts per request for {seconds:g} s: {rate:.0f} texts/s"], ok


# ---- vera worker --device ----------------------------------------------------------------------------------------
WORKER_BASE = "tiny/llama"  # jobs train a Hub id, never a path: the test suite's tiny Llama in a Hub cache made here


def _vera_once(args: list[str], env: dict[str, str], log: Path) -> tuple[int, str]:
    """`vera ARGS` to its end (at most 240 s); its exit code and output, also written to ``log``."""
    import os
    import subprocess

    from tests.registry.servers import VERA_COMMAND

    done = subprocess.run([*VERA_COMMAND, *args], env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=240, check=False)
    log.write_text(done.stdout + done.stderr)
    return done.returncode, done.stdout + done.stderr


def step_worker(device: str, quick: bool, out: Path) -> tuple[Lines, bool]:
    """`vera worker --device` owning the device, against a real registry (`vera serve`, SQLite, a blob folder): it
    claims the job asking for the GPU it owns and trains it there, leaves a job asking for more GPUs than it owns
    queued, and a worker naming a device this machine lacks is refused before it opens the registry. In the full
    run a CPU worker then trains the same job (float32): the vectors published from the device and the CPU agree."""
    from safetensors.torch import load_file

    from registry.client import RegistryClient
    from tests.registry.servers import running_server
    from tests.registry.tiny_lm import WORDS, save_tiny_llama_in_hub_cache

    gpu = device.startswith("cuda")
    count = torch.cuda.device_count() if gpu else 0
    owns = "cuda:0" if gpu else "cpu"
    texts = [f"{WORDS[i % 27]} {WORDS[(i // 3) % 27]} {WORDS[(i // 9) % 27]} on the mat" for i in range(60)]
    data = "".join(json.dumps({"text": text}) + "\n" for text in texts).encode()
    spec = {"base_model": WORKER_BASE, "task": "causal-lm", "r": 8,
            "training": {"batch_size": 4, "max_steps": 8, "precision": "fp32"}}
    lines: Lines = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        save_tiny_llama_in_hub_cache(root / "hub", WORKER_BASE)
        env = {"VERA_DATABASE_URL": f"sqlite:///{tmp}/r.db", "VERA_STORAGE_URL": str(root / "blobs"),
               "VERA_JOB_BASE_MODELS": json.dumps([WORKER_BASE]), "HF_HUB_CACHE": str(root / "hub"),
               "HF_HUB_OFFLINE": "1", "VERA_LOG_FORMAT": "text"}
        with running_server(env["VERA_DATABASE_URL"], root / "blobs", log_path=out / "worker-serve.log",
                            **env) as url, RegistryClient(url) as client:
            def submit(name: str, gpus: int, priority: int) -> int:
                return client.submit_job(name, spec, dataset=("data.jsonl", data), gpus=gpus, priority=priority).id

            too_big = submit("bench/too-big", count + 1, 50)  # first in line, but asks for more than the machine has
            owned = submit("bench/on-device", 1 if gpu else 0, 10)
            compared = None if quick else submit("bench/on-cpu", 0, 0)
            code, said = _vera_once(["worker", "--device", owns, "--once", "--poll", "0.2"],
                                    {**env, "VERA_DATA_DIR": str(root / "w1")},
                                    out / f"worker-{owns.replace(':', '')}.log")
            job = client.job(owned)
            trained = job.status == "succeeded" and code == 0 and f"on {owns}" in said
            lines.append(f"`vera worker --device {owns} --once` (exit {code}): job {owned} asking for "
                         f"{job.gpus} GPU(s) **{job.status}** on {owns} in {_job_seconds(job)}, "
                         f"published {job.result_ref}" + ("" if trained else f"; error: {job.error}"))
            waiting = client.job(too_big)
            queued = waiting.status == "queued" and waiting.attempts == 0
            lines.append(f"job {too_big} asking for {count + 1} GPU(s), first in line: "
                         f"{'**still queued**, never attempted' if queued else f'**{waiting.status}** (wrong)'}")
            missing = f"cuda:{count}"
            refused_code, refusal = _vera_once(["worker", "--device", missing, "--once"],
                                               {**env, "VERA_DATA_DIR": str(root / "w0")},
                                               out / "worker-missing-device.log")
            refused = refused_code != 0 and "CUDA device" in refusal and client.job(too_big).status == "queued"
            said_all = " ".join(refusal.split())  # the console wraps long lines
            reason = said_all[said_all.find("Device '"):][:240] if "Device '" in said_all else said_all[-240:]
            lines.append(f"`vera worker --device {missing}` on this machine of {count} GPU(s): exit {refused_code}, "
                         f"{'**refused**' if refused else '**not refused** (wrong)'}: {reason}")
            same = True
            if compared is not None and trained:
                code, _ = _vera_once(["worker", "--device", "cpu", "--once", "--poll", "0.2"],
                                     {**env, "VERA_DATA_DIR": str(root / "w2")}, out / "worker-cpu-same-job.log")
                cpu_job = client.job(compared)
                vectors = {}
                for ref in (job.result_ref, cpu_job.result_ref):
                    if ref is not None:
                        client.fetch(ref, root / ref.replace("/", "-"))
                        vectors[ref] = load_file(str(root / ref.replace("/", "-") / "adapter_model.safetensors"))
                same = cpu_job.status == "succeeded" and len(vectors) == 2
                if same:
                    ours, theirs = vectors[job.result_ref], vectors[cpu_job.result_ref]
                    moved = max(float((t - 0.1 if "lambda_d" in k else t).abs().max()) for k, t in theirs.items())
                    gap = max(float((ours[k] - t).abs().max()) for k, t in theirs.items())
                    same = set(ours) == set(theirs) and gap <= 1e-3 * max(moved, 1e-6)
                    lines.append(f"the same job (float32) on a CPU worker: {cpu_job.status} in {_job_seconds(cpu_job)};"
                                 f" its {len(theirs)} vectors vs those trained on {owns}: largest difference "
                                 f"{gap:.1e}, {gap / max(moved, 1e-12):.1e} of the largest move from the start "
                                 f"({moved:.2e}): "
                                 f"{'**same**' if same else '**differ**'} (tolerance 1e-3 of the move)")
                else:
                    lines.append(f"the same job on a CPU worker: **{cpu_job.status}** ({cpu_job.error})")
    return lines, trained and queued and refused and same


def _job_seconds(job: Any) -> str:
    if job.started_at is None or job.finished_at is None:
        return "(not finished)"
    return f"{(job.finished_at - job.started_at).total_seconds():.1f} s"


STEPS = {"device": step_device, "projection": step_projection, "train": step_train, "mixed": step_mixed,
         "decode": step_decode}
#: The steps that also write logs of their own into the output folder.
OUT_STEPS = {"serve": step_serve, "worker": step_worker}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=[*STEPS, *OUT_STEPS])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("gpu_check_out"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.device == "cpu":
        torch.set_num_threads(min(4, torch.get_num_threads()))
    if args.step in OUT_STEPS:
        lines, ok = OUT_STEPS[args.step](args.device, args.quick, args.out)
    else:
        lines, ok = STEPS[args.step](args.device, args.quick)
    text = "\n".join(lines) + "\n"
    (args.out / f"{args.step}.md").write_text(text)
    print(text, end="")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

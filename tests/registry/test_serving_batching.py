"""Continuous batching (registry/serving/batching.py): rows join a running batch between its steps and leave it
when they end, each decoding as it would alone; and the model server built on it answers a request that arrives
while others decode without waiting for them."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from registry.client import RegistryClient
from registry.serving.batching import RunningBatch
from registry.serving.decode import Row, Sampling
from registry.serving.server import TURN_TTL_S, Evicted, ModelServer
from tests.conftest import TINY_MODELS, TinyModel
from tests.registry.adapters import make_model
from vera_core import AdapterBank, save_adapter


def _mistral() -> nn.Module:
    from transformers import MistralConfig, MistralForCausalLM

    return MistralForCausalLM(MistralConfig(
        vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=40, sliding_window=4))


MISTRAL = TinyModel("mistral-sliding", _mistral, ["q_proj", "v_proj"], "CAUSAL_LM")
CPU = torch.device("cpu")


def bank_of(tiny: TinyModel, folder: Path) -> AdapterBank:
    """A bank on ``tiny``'s base with adapters ``a`` and ``b`` (one projection family, other vectors)."""
    bank = AdapterBank(make_model(0, tiny))
    for name, seed in (("a", 1), ("b", 2)):
        bank.add(name, save_adapter(make_model(seed, tiny), folder / name))
    return bank


def alone(bank: AdapterBank, ref: str, prompt: list[int], new: int) -> list[int]:
    """Greedy tokens of adapter ``ref`` by transformers' own generate, the row alone."""
    model: Any = bank.model.model
    with torch.no_grad(), bank.route([ref]):
        out = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                             max_new_tokens=new, do_sample=False, pad_token_id=1, eos_token_id=None)
    return [int(t) for t in out[0, len(prompt):]]


def batch_of(bank: AdapterBank) -> RunningBatch:
    return RunningBatch(bank, pad_id=1, eos=set(), decode=lambda ids: " ".join(map(str, ids)), device=CPU)


@pytest.mark.parametrize("tiny", [TINY_MODELS[1], TINY_MODELS[2]], ids=["gpt2", "llama"])
def test_rows_that_join_mid_flight_decode_as_each_alone_and_the_cache_never_outgrows_its_longest_row(
        tiny: TinyModel, tmp_path: Path) -> None:
    """Rows of two adapters join a running batch at three moments, with prompts of other lengths (so both the
    batch's cache and theirs are padded to merge) and other budgets (so they leave at other steps): every greedy
    row's tokens equal generate's of its adapter alone (GPT-2's learned positions and Llama's rotary ones count
    from each row's own start), and after every step the cache is as long as the longest row it holds, no more."""
    bank = bank_of(tiny, tmp_path)
    batch = batch_of(bank)
    answers: dict[int, list[int]] = {}
    plan = {0: [([5, 6, 7], "a", 9)], 2: [([8, 9, 10, 11, 12, 13, 14], "b", 4), ([4], "a", 12)],
            5: [([20, 21], "b", 6), ([30, 31, 32, 33, 34], "a", 3)]}
    rows: list[tuple[list[int], str, int]] = []
    for step in range(40):
        for prompt, ref, new in plan.get(step, []):
            i = len(rows)
            rows.append((prompt, ref, new))
            row = Row(prompt, new, on_end=lambda tokens, text, reason, i=i: answers.__setitem__(i, tokens))
            batch.join([row], [ref], [i])
        if not batch:
            break
        assert batch.length == max(len(s.row.prompt_ids) + len(s.tokens) - 1 for s in batch.states)
        batch.step()
    assert not batch and sorted(answers) == list(range(len(rows)))
    assert batch.joinable  # GPT-2's and Llama's caches merge
    for i, (prompt, ref, new) in enumerate(rows):
        assert answers[i] == alone(bank, ref, prompt, new), (i, ref)


def test_a_seeded_row_draws_the_same_tokens_whenever_it_joins(tmp_path: Path) -> None:
    """A sampled row with a seed gives the same tokens alone and joining a crowded batch mid-flight (it draws once
    per token from its own generator, whatever else is in the batch)."""
    bank = bank_of(TINY_MODELS[2], tmp_path)
    sampling = Sampling(temperature=1.3, top_k=20, top_p=0.9, seed=7)

    def seeded(batch: RunningBatch, before: int) -> list[int]:
        got: list[list[int]] = []
        for step in range(before):
            batch.join([Row([7 + step, 8], 20, sampling=Sampling(temperature=1.0, seed=step))], ["b"], [step])
            batch.step()
        batch.join([Row([5, 6, 7], 10, sampling=sampling, on_end=lambda t, *_: got.append(t))], ["a"], ["it"])
        while not got:
            batch.step()
        return got[0]

    assert seeded(batch_of(bank), 0) == seeded(batch_of(bank), 4)


def test_a_cache_that_cannot_merge_decodes_its_rows_and_takes_no_more_until_it_is_empty(tmp_path: Path) -> None:
    """A sliding-window model's cache (transformers' DynamicSlidingWindowLayer) cannot be padded and stacked: its
    batch decodes the rows that started together (as generate would) and is closed to others until it is empty;
    then it takes rows again."""
    bank = bank_of(MISTRAL, tmp_path)
    batch = batch_of(bank)
    answers: dict[int, list[int]] = {}
    prompts = [[5, 6, 7, 8, 9, 10], [11, 12]]
    batch.join([Row(p, 8, on_end=lambda t, *_, i=i: answers.__setitem__(i, t)) for i, p in enumerate(prompts)],
               ["a", "b"], [0, 1])
    assert not batch.joinable and not batch.open
    while batch:
        batch.step()
    assert batch.open
    assert answers == {0: alone(bank, "a", prompts[0], 8), 1: alone(bank, "b", prompts[1], 8)}


@pytest.mark.parametrize("tiny", [TINY_MODELS[1], TINY_MODELS[2], MISTRAL], ids=["gpt2", "llama", "mistral"])
def test_a_prompt_prefilled_in_chunks_decodes_as_alone_and_the_running_rows_step_between_its_chunks(
        tiny: TinyModel, tmp_path: Path) -> None:
    """Chunked prefill: two rows whose prompts (11 and 7 tokens) are prefilled 6 tokens a forward (3 columns of
    the two rows) take four forwards, not one; the row already decoding takes a step between two of them, and
    every row's tokens equal generate's of its adapter alone. The sliding-window Mistral (window 4, shorter than a
    prompt, so its cache rolls between chunks) has no running row: its cache never merges."""
    bank = bank_of(tiny, tmp_path)
    batch = batch_of(bank)
    answers: dict[int, list[int]] = {}

    def row(prompt: list[int], new: int, i: int) -> Row:
        return Row(prompt, new, on_end=lambda tokens, *_: answers.__setitem__(i, tokens))

    plan = [([5, 6, 7], "a", 12), ([8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18], "b", 6), ([4, 20, 21, 22, 23, 24, 25],
                                                                                         "a", 5)]
    running = tiny is not MISTRAL
    if running:
        batch.join([row(*plan[0][::2], 0)], ["a"], [0], chunk=6)  # 3 tokens: one forward
        assert batch.pending is None and len(batch) == 1
        batch.step()
    batch.join([row(plan[1][0], plan[1][2], 1), row(plan[2][0], plan[2][2], 2)], ["b", "a"], [1, 2], chunk=6)
    forwards, steps = 1, 0
    while batch.pending is not None:
        assert not batch.open and len(batch) == int(running)  # nothing joins meanwhile; the rows wait outside it
        if len(batch):
            batch.step()
            steps += 1
        batch.prefill()
        forwards += 1
    assert forwards == 4 and steps == 3 * int(running)
    while batch:
        batch.step()
    assert batch.joinable is running
    for i, (prompt, ref, new) in enumerate(plan):
        if i or running:
            assert answers[i] == alone(bank, ref, prompt, new), (i, ref)


def test_rows_whose_callers_left_during_their_prefill_end_without_another_chunk(tmp_path: Path,
                                                                                 monkeypatch: pytest.MonkeyPatch
                                                                                 ) -> None:
    """Rows prefilled in chunks whose callers all left (``cancelled``) end at the next turn, answered with nothing
    and no further forward; the row decoding beside them goes on."""
    bank = bank_of(TINY_MODELS[2], tmp_path)
    batch = batch_of(bank)
    ended: dict[int, tuple[list[int], str]] = {}
    batch.join([Row([5, 6], 6, on_end=lambda t, _, reason: ended.__setitem__(0, (t, reason)))], ["a"], [0])
    rows = [Row(list(range(3, 15)), 6, on_end=lambda t, _, reason, i=i: ended.__setitem__(i, (t, reason)))
            for i in (1, 2)]
    batch.join(rows, ["a", "b"], [1, 2], chunk=4)
    assert batch.pending is not None and batch.pending.done == 2
    forwards = []
    real = batch._prefill
    monkeypatch.setattr(batch, "_prefill", lambda pending: (forwards.append(1), real(pending))[1])
    for row in rows:
        row.cancelled = True
    left = batch.prefill()
    assert [(x.row, x.owner, x.error) for x in left] == [(-1, 1, None), (-1, 2, None)] and not forwards
    assert batch.pending is None and len(batch) == 1 and ended == {1: ([], "stop"), 2: ([], "stop")}
    while batch:
        batch.step()
    assert ended[0] == (alone(bank, "a", [5, 6], 6), "length")


def test_a_consumer_that_raises_fails_its_own_row_only(tmp_path: Path) -> None:
    """A row whose consumer raises leaves the batch with that error; the others decode on, as alone."""
    bank = bank_of(TINY_MODELS[2], tmp_path)
    batch = batch_of(bank)
    answers: dict[int, list[int]] = {}

    def breaks(text: str) -> None:
        raise RuntimeError("the consumer broke")

    left = batch.join([Row([5, 6], 6, on_end=lambda t, *_: answers.__setitem__(0, t)),
                       Row([7, 8], 6, on_text=breaks)], ["a", "b"], [0, 1])  # it raises at its first token
    while batch:
        left += batch.step()
    assert [(x.owner, str(x.error)) for x in left] == [(1, "the consumer broke"), (0, "None")]
    assert answers == {0: alone(bank, "a", [5, 6], 6)}


def test_a_request_that_arrives_while_another_decodes_is_answered_before_that_one_ends(
        served: dict[str, Any]) -> None:
    """Continuous batching in the server: a short request sent while a long one decodes joins it at the next step
    and is answered long before the long one ends (a batch at a time, it waited for all of it), each with its
    adapter's text alone. The long row's consumer is slow on purpose (30 ms a piece), so that it decodes for
    about a second."""
    server: ModelServer = served["server"]
    long_row_ids = server.prompt_ids("the cat sits on the mat")
    started, ended = threading.Event(), []

    def slowly(text: str) -> None:
        started.set()
        time.sleep(0.03)

    long_row = Row(long_row_ids, 30, on_text=slowly, on_end=lambda *_: ended.append("long"))
    short_row = Row(server.prompt_ids("a dog"), 3, on_end=lambda *_: ended.append("short"))
    long_future = server.start(server.generator_for("alice/gen0", served["writer"]), [long_row])[0]
    assert started.wait(30)
    short_future = server.start(server.generator_for("alice/gen1", served["writer"]), [short_row])[0]
    short = short_future.result(timeout=30)
    assert not long_future.done()
    long = long_future.result(timeout=60)
    assert ended == ["short", "long"] and long.finish_reason == "length" and len(long.tokens) == 30
    want_long = server.wait(server.start(server.generator_for("alice/gen0", served["writer"]),
                                         [Row(long_row_ids, 30)]))[0]
    want_short = server.wait(server.start(server.generator_for("alice/gen1", served["writer"]),
                                          [Row(short_row.prompt_ids, 3)]))[0]
    assert (long.tokens, short.tokens) == (want_long.tokens, want_short.tokens)


def test_an_adapter_evicted_while_its_row_decodes_fails_that_row_only(served: dict[str, Any]) -> None:
    """Evicting an adapter between two steps of a batch: its row fails saying to send it again; the other
    adapter's row decodes on to the text it has alone."""
    server: ModelServer = served["server"]
    started = threading.Event()

    def slowly(text: str) -> None:
        started.set()
        time.sleep(0.03)

    victim = server.generator_for("alice/gen1", served["writer"])  # gen0's family: one batch
    keeper = server.generator_for("alice/gen0", served["writer"])
    doomed = server.start(victim, [Row(server.prompt_ids("the cat"), 30, on_text=slowly)])[0]
    kept = server.start(keeper, [Row(server.prompt_ids("a dog runs"), 12)])[0]
    assert started.wait(30)
    server.evict(victim.ref)
    with pytest.raises(Evicted, match="evicted meanwhile; send it again"):
        doomed.result(timeout=30)
    want = server.wait(server.start(keeper, [Row(server.prompt_ids("a dog runs"), 12)]))[0]
    assert kept.result(timeout=30).tokens == want.tokens


def test_a_bug_in_the_batcher_fails_the_rows_it_held_and_the_batcher_lives_on(served: dict[str, Any],
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A safety net: an exception the batcher did not expect (here put into its step) fails the rows it held with
    the generic 500, and the next request is answered (a dead batcher thread would leave every request hanging)."""
    from registry.serving.server import GenerationFailed

    server: ModelServer = served["server"]
    resident = server.generator_for("alice/gen0", served["writer"])
    real, calls = server._step_all, []

    def broken_once() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug")
        real()

    monkeypatch.setattr(server, "_step_all", broken_once)
    first = server.start(resident, [Row(server.prompt_ids("the cat"), 4)])[0]
    with pytest.raises(GenerationFailed, match="failed to generate this answer"):
        first.result(timeout=30)
    again = server.wait(server.start(resident, [Row(server.prompt_ids("the cat"), 4)]))[0]
    want = server.wait(server.start(resident, [Row(server.prompt_ids("the cat"), 4)]))[0]
    assert again.tokens == want.tokens and len(calls) > 1


def test_a_full_batch_of_one_family_never_keeps_another_familys_request_waiting(served: dict[str, Any]) -> None:
    """With a family's batch full (max_batch rows) and more of its rows waiting to join than max_batch x max_banks,
    a request for an adapter of another family is taken from the queue at once (a family's rows beyond max_batch
    waiting stay in the queue) and decodes in its own batch, the batches stepping in turn: it is answered before any
    of the full family's rows."""
    server = ModelServer(str(served["base"]), task="causal-lm", base_name="tiny-lm", max_batch=2,
                         batch_window_s=0.05, client_for=lambda token: RegistryClient(served["registry"], token or ""))
    try:
        busy = server.generator_for("alice/gen0", served["writer"])
        other = server.generator_for("alice/secret", served["writer"])  # another projection family: its own bank
        assert other.bank != busy.bank
        finished: list[str] = []
        # more rows than max_batch x max_banks (the cap on rows taken from the queue was global before: 8 rows of
        # one family filled it)
        started = threading.Event()  # the flood's consumers are slow (30 ms a token): its rows last, whatever the
        flood = server.start(busy, [Row(server.prompt_ids("the cat"), 30, on_text=_slowly(started))  # machine
                                    for _ in range(12)], "mallory")
        assert started.wait(30)
        mine = server.start(other, [Row(server.prompt_ids("a dog"), 3)], "alice")
        for name, futures in (("mallory", flood), ("alice", mine)):
            for future in futures:
                future.add_done_callback(lambda _, name=name: finished.append(name))
        server.wait([*flood, *mine])
        assert finished[0] == "alice", finished
    finally:
        server.close()


def test_more_requests_than_the_thread_pool_has_threads_decode_at_once(served: dict[str, Any],
                                                                       tmp_path: Path) -> None:
    """60 completion requests at once over HTTP (OpenAI's route) all decode in one batch: requests wait on the
    event loop. Before, each waiting request held one of the thread pool's 40 threads, so no more than 40 were
    ever in flight whatever --max-batch allowed (this test saw 40 then)."""
    import httpx

    from registry.serving.api import create_serving_app
    from tests.registry.servers import in_thread
    from tests.registry.tiny_lm import save_tiny_llama

    base = save_tiny_llama(tmp_path / "base", positions=1024)  # room for long rows: they overlap in time
    server = ModelServer(str(base), task="causal-lm", base_name="tiny-lm", batch_window_s=0.05,
                         client_for=lambda token: RegistryClient(served["registry"], token or ""))
    widest, watching = [0], threading.Event()

    def watch() -> None:
        while not watching.is_set():
            widest[0] = max([widest[0], *(len(batch) for batch in list(server._running.values()))])
            time.sleep(0.001)

    try:
        with in_thread(create_serving_app(server), "the model server") as url:
            server.generator_for("alice/gen0", served["writer"])
            watcher = threading.Thread(target=watch)
            watcher.start()

            def ask(i: int) -> tuple[int, Any]:
                body = {"model": "alice/gen0", "prompt": "the cat", "max_tokens": 400, "temperature": 0}
                answer = httpx.post(f"{url}/v1/completions", json=body, timeout=120,
                                    headers={"Authorization": f"Bearer {served['writer']}"})
                return answer.status_code, answer.json()["choices"][0]["text"]

            with ThreadPoolExecutor(60) as pool:
                answers = list(pool.map(ask, range(60)))
            watching.set()
            watcher.join()
    finally:
        server.close()
    assert {status for status, _ in answers} == {200} and len({text for _, text in answers}) == 1
    assert widest[0] > 40, widest


def _slowly(started: threading.Event, pause: float = 0.03) -> Any:
    """A row's consumer that takes ``pause`` seconds a piece (in the batcher's thread: the batch steps that slowly),
    setting ``started`` at the first."""
    def consume(text: str) -> None:
        started.set()
        time.sleep(pause)
    return consume


def _soon(what: Callable[[], bool], within: float = 30) -> bool:
    """Whether ``what`` holds within ``within`` seconds."""
    deadline = time.monotonic() + within
    while not what() and time.monotonic() < deadline:
        time.sleep(0.005)
    return what()


def _two_banks_and_a_third_family(served: dict[str, Any], tmp_path: Path, name: str, **adapter: int) -> ModelServer:
    """A server of two banks (gen0's and secret's families fill them), and ``name`` published: a third family."""
    from tests.registry.adapters import make_adapter

    with RegistryClient(served["registry"], served["writer"]) as client:
        client.publish(make_adapter(tmp_path / "third", **adapter), name, base_model="tiny-lm")
    return ModelServer(str(served["base"]), task="causal-lm", base_name="tiny-lm", max_banks=2, batch_window_s=0.01,
                       client_for=lambda token: RegistryClient(served["registry"], token or ""))


def test_a_new_family_waits_for_a_bank_to_drain_and_never_cuts_a_row_off(served: dict[str, Any],
                                                                          tmp_path: Path) -> None:
    """With every bank decoding, an adapter that needs a bank of its own waits: the least recently used bank takes
    no more rows, and once its rows end it goes for the new family. Before, the bank was dropped at once (another
    caller's answer failed mid-stream), and then a 503 to retry (a caller who kept every bank busy kept new
    families out for as long as it liked: an outsider's finding). A row waiting to join the drained bank is told
    to send again, the other bank still decoding (were it idle by then, it would go instead: the next test)."""
    server = _two_banks_and_a_third_family(served, tmp_path, "alice/third-family", seed=3, projection_prng_key=99)
    try:
        first, second = (server.generator_for(name, served["writer"]) for name in ("alice/gen0", "alice/secret"))
        started = [threading.Event(), threading.Event()]
        ended: list[str] = []
        # gen0's row ends 20 tokens (at least a second) before secret's: when gen0's bank has drained, the other
        # still decodes
        futures = [server.start(resident, [Row(server.prompt_ids("the cat"), tokens, on_text=_slowly(event, 0.05),
                                               on_end=lambda *_, n=name: ended.append(n))])[0]
                   for resident, event, name, tokens in zip((first, second), started, ("gen0", "secret"), (15, 35),
                                                            strict=True)]
        assert all(event.wait(30) for event in started)
        loaded: list[Any] = []
        loader = threading.Thread(target=lambda: loaded.append(
            server.generator_for("alice/third-family", served["writer"])))
        loader.start()
        assert _soon(lambda: bool(server._draining))  # the least recently used bank (gen0's) drains: a row sent
        late = server.start(first, [Row(server.prompt_ids("a dog"), 3)])[0]  # to it now waits, then is refused
        loader.join(60)
        ended.append("third loaded")
        answers = server.wait(futures)
        assert [len(a.tokens) for a in answers] == [15, 35]  # nobody's row was cut off
        assert ended.index("gen0") < ended.index("third loaded"), ended
        with pytest.raises(Evicted, match="evicted meanwhile; send it again"):
            late.result(timeout=30)
        assert server.wait(server.start(loaded[0], [Row(server.prompt_ids("a dog"), 3)]))[0].tokens
    finally:
        server.close()


def test_a_new_family_takes_the_bank_nobody_is_waiting_for(served: dict[str, Any], tmp_path: Path) -> None:
    """With every bank taken and none decoding, a new family's bank replaces one whose adapters nobody is waiting
    for, even if it was used more recently: the least recently used bank went before, and a request for it that was
    being prepared meanwhile was told it had been evicted and to send it again."""
    server = _two_banks_and_a_third_family(served, tmp_path, "alice/quiet-family", seed=4, projection_prng_key=77)
    try:
        waited = server.generator_for("alice/gen0", served["writer"])  # taken: its prompt is being prepared
        done = server.generator_for("alice/secret", served["writer"])
        assert server.wait(server.start(done, [Row(server.prompt_ids("a dog"), 2)]))[0].tokens  # answered
        assert waited.last_used < done.last_used  # gen0's bank is the least recently used
        server.generator_for("alice/quiet-family", served["writer"])
        assert waited.ref in server.residents and done.ref not in server.residents
        assert server.wait(server.start(waited, [Row(server.prompt_ids("the cat"), 2)]))[0].tokens
    finally:
        server.close()


def test_a_callers_rows_of_a_full_family_never_hold_its_rows_of_another(served: dict[str, Any]) -> None:
    """A caller's backlog for a full family stays in the queue, in order, while its own request for another family
    is taken past it (only the oldest row of each caller was looked at before: it waited for the backlog)."""
    server = ModelServer(str(served["base"]), task="causal-lm", base_name="tiny-lm", max_batch=2,
                         batch_window_s=0.05, client_for=lambda token: RegistryClient(served["registry"], token or ""))
    try:
        busy = server.generator_for("alice/gen0", served["writer"])
        other = server.generator_for("alice/secret", served["writer"])
        finished: list[str] = []
        started = threading.Event()  # slow consumers (30 ms a token): the backlog's rows last, whatever the machine
        backlog = server.start(busy, [Row(server.prompt_ids("the cat"), 30, on_text=_slowly(started),
                                          on_end=lambda *_, i=i: finished.append(f"backlog{i}")) for i in range(8)],
                               "mallory")
        assert started.wait(30)
        mine = server.start(other, [Row(server.prompt_ids("a dog"), 3, on_end=lambda *_: finished.append("other"))],
                            "mallory")
        server.wait([*backlog, *mine])
        assert finished[0] == "other", finished
        assert [f for f in finished if f.startswith("backlog")][::2] == [f"backlog{i}" for i in range(0, 8, 2)]
    finally:
        server.close()


def test_another_callers_row_joins_a_full_batch_before_the_backlog_of_the_caller_filling_it(
        served: dict[str, Any]) -> None:
    """A caller's backlog of one family waits in the queue while its batch runs full, so that the next room goes to
    the caller served longest ago: another caller's row that arrives meanwhile joins in the next wave (before, the
    batcher had taken max_batch more of the backlog to wait for room, first come first served, and that row waited
    for a whole batch more of them: an outsider's finding)."""
    server = ModelServer(str(served["base"]), task="causal-lm", base_name="tiny-lm", max_batch=2,
                         batch_window_s=0.05, client_for=lambda token: RegistryClient(served["registry"], token or ""))
    try:
        resident = server.generator_for("alice/gen0", served["writer"])
        finished: list[str] = []
        started = threading.Event()  # slow consumers (30 ms a token): each wave of the backlog lasts
        backlog = server.start(resident, [Row(server.prompt_ids("the cat"), 30, on_text=_slowly(started),
                                              on_end=lambda *_, i=i: finished.append(f"backlog{i}"))
                                          for i in range(8)], "mallory")
        assert started.wait(30)
        time.sleep(0.2)  # the batcher has looked at the queue again: the backlog's next rows could have been taken
        victim = server.start(resident, [Row(server.prompt_ids("a dog"), 3,
                                             on_end=lambda *_: finished.append("victim"))], "bob")
        server.wait([*backlog, *victim])
        assert finished.index("victim") < finished.index("backlog2"), finished  # the second wave, not the third
        assert sorted(finished[:2]) == ["backlog0", "backlog1"], finished
    finally:
        server.close()


def test_rows_that_failed_in_company_run_alone_before_newcomers_join(served: dict[str, Any],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Two rows whose prefill failed together (a failure put in here; none could be caused from outside) run again
    one at a time once the running batch drains, and rows that arrive meanwhile wait for them: before, newcomers
    kept joining, the batch never drained under steady traffic, and the failed rows waited for a lull."""
    server: ModelServer = served["server"]
    resident = server.generator_for("alice/gen0", served["writer"])
    real, failed = RunningBatch._prefill, list[bool]()

    def fails_once(self: RunningBatch, pending: Any) -> Any:
        if len(pending.rows) == 2 and not failed:
            failed.append(True)
            raise RuntimeError("a prefill that failed")
        return real(self, pending)

    monkeypatch.setattr(RunningBatch, "_prefill", fails_once)
    ended: list[str] = []
    started = threading.Event()
    long_row = Row(server.prompt_ids("the cat"), 25, on_text=_slowly(started), on_end=lambda *_: ended.append("L"))
    futures = server.start(resident, [long_row])
    assert started.wait(30)
    futures += server.start(resident, [Row(server.prompt_ids("a dog"), 3, on_end=lambda *_, v=v: ended.append(v))
                                       for v in ("V1", "V2")])
    assert _soon(lambda: bool(failed))  # newcomers arrive after the failure
    for i in range(4):
        time.sleep(0.1)
        futures += server.start(resident, [Row(server.prompt_ids("the sun"), 3,
                                               on_end=lambda *_, i=i: ended.append(f"N{i}"))])
    server.wait(futures)
    assert failed and ended.index("V1") < ended.index("N0") and ended.index("V2") < ended.index("N0"), ended


def test_evicting_the_only_adapter_of_a_batch_fails_its_row_and_logs_no_failure(
        served: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    """A batch whose every row's adapter was evicted is gone: its rows are told to send again, and nothing runs a
    step of it (which failed on the missing adapter and logged a generation failure)."""
    server: ModelServer = served["server"]
    started = threading.Event()
    victim = server.generator_for("alice/gen1", served["writer"])
    doomed = server.start(victim, [Row(server.prompt_ids("the cat"), 30, on_text=_slowly(started))])[0]
    assert started.wait(30)
    with caplog.at_level("ERROR", logger="vera.serving"):
        server.evict(victim.ref)
        with pytest.raises(Evicted, match="evicted meanwhile; send it again"):
            doomed.result(timeout=30)
        server.wait(server.start(server.generator_for("alice/gen0", served["writer"]),
                                 [Row(server.prompt_ids("a dog"), 3)]))
    assert not [r for r in caplog.records if "failed" in r.getMessage()], caplog.text


def test_a_client_that_hangs_up_ends_its_rows_at_their_next_token(served: dict[str, Any], tmp_path: Path) -> None:
    """A completion's client (not streamed) that closes its connection while its 64 rows decode: the rows end at
    their next token (cancelled: OpenAI's route asks every 0.2 s whether the client is there), instead of decoding
    512 tokens each for nobody."""
    import socket
    from urllib.parse import urlsplit

    from registry.serving.api import create_serving_app
    from tests.registry.servers import in_thread
    from tests.registry.tiny_lm import save_tiny_llama

    base = save_tiny_llama(tmp_path / "base", positions=1024)
    server = ModelServer(str(base), task="causal-lm", base_name="tiny-lm", batch_window_s=0.01,
                         client_for=lambda token: RegistryClient(served["registry"], token or ""))
    ended: list[tuple[int, str]] = []
    real_start = server.start

    def start(resident: Any, rows: Any, caller: Any = None) -> Any:  # hears how each row ended
        for row in rows:
            row.on_end = lambda tokens, text, reason: ended.append((len(tokens), reason))
        return real_start(resident, rows, caller)

    server.start = start  # type: ignore[method-assign]
    try:
        with in_thread(create_serving_app(server), "the model server") as url:
            server.generator_for("alice/gen0", served["writer"])
            body = json.dumps({"model": "alice/gen0", "prompt": "the cat", "max_tokens": 512, "n": 64,
                               "temperature": 0}).encode()
            where = urlsplit(url)
            with socket.create_connection((where.hostname, where.port)) as client:
                client.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                               + f"Authorization: Bearer {served['writer']}\r\n".encode()
                               + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
                deadline = time.monotonic() + 30
                while not any(len(b) for b in list(server._running.values())) and time.monotonic() < deadline:
                    time.sleep(0.005)
            deadline = time.monotonic() + 30
            while len(ended) < 64 and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        server.close()
    assert len(ended) == 64 and {reason for _, reason in ended} == {"stop"}
    assert max(tokens for tokens, _ in ended) < 512, ended


def test_a_users_tokens_share_one_turn_in_the_queue(served: dict[str, Any]) -> None:
    """Rows queue under their user (the registry's whoami, asked once a minute per token when its adapter is
    resolved), not their token: a user who mints more tokens gets no more turns, nor a larger share of the queue
    (an outsider filled it with two minted tokens). Another user has a turn of its own."""
    server: ModelServer = served["server"]
    with RegistryClient(served["registry"], served["writer"]) as client:
        _, minted = client.create_token(["read"], name="a second token")
    for token in (served["writer"], minted, served["reader"]):
        server.generator_for("alice/gen0", token)
    assert server._turn_of(served["writer"]) == server._turn_of(minted) == "user:alice"
    assert server._turn_of(served["reader"]) == "user:bob" and server._turn_of(None) == ""
    assert server._turn_of("vera_never_seen") == "token:vera_never_seen"
    # an answer older than TURN_TTL_S still names the user: a request whose texts took long to tokenize after
    # activate() let a minted token stand for itself, with a share of its own (an outsider's finding)
    seen, who = server._who._kept[minted]
    server._who._kept[minted] = (seen - 2 * TURN_TTL_S, who)
    assert server._turn_of(minted) == "user:alice"


def test_a_long_prompt_is_prefilled_between_the_steps_of_a_streaming_row(served: dict[str, Any],
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """In the server, with prefill_chunk 2: a prompt sent while another row decodes is prefilled two tokens a
    turn, the decoding row taking a step in each turn (before, it paused for the whole prefill), and both answers
    are their adapters' texts alone."""
    server: ModelServer = served["server"]
    monkeypatch.setattr(server, "prefill_chunk", 2)
    calls: list[str] = []
    for name in ("prefill", "step"):
        real = getattr(RunningBatch, name)
        monkeypatch.setattr(RunningBatch, name, lambda self, real=real, name=name: (calls.append(name), real(self))[1])
    started = threading.Event()
    first, second = (server.generator_for(f"alice/gen{i}", served["writer"]) for i in range(2))  # one family
    streaming = server.start(first, [Row(server.prompt_ids("a dog"), 40, on_text=_slowly(started, 0.02))])[0]
    assert started.wait(30)
    calls.clear()
    long_ids = server.prompt_ids("the cat sits on the mat and the dog sits on the rug")
    late = server.start(second, [Row(long_ids, 4)])[0]
    got = late.result(timeout=60)
    prefills = [i for i, call in enumerate(calls) if call == "prefill"]  # the first chunk's as the row joins too
    assert len(long_ids) > 8 and len(prefills) == -(-len(long_ids) // 2), calls
    for a, b in itertools.pairwise(prefills):
        assert calls[a + 1:b] == ["step"], calls  # one step of the streaming row between two chunks
    assert not streaming.done()
    monkeypatch.setattr(server, "prefill_chunk", None)
    assert got.tokens == server.wait(server.start(second, [Row(long_ids, 4)]))[0].tokens
    assert streaming.result(timeout=60).tokens == server.wait(server.start(first, [Row(server.prompt_ids("a dog"),
                                                                                        40)]))[0].tokens


def test_rows_being_prefilled_when_an_adapter_goes_fail_for_it_alone(
        served: dict[str, Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Two rows prefilled in chunks together; one's adapter is evicted between two chunks: that row is told to
    send again, the other is prefilled again from its start and answers its text alone; nothing logs a failure."""
    server: ModelServer = served["server"]
    monkeypatch.setattr(server, "prefill_chunk", 4)
    victim = server.generator_for("alice/gen1", served["writer"])
    keeper = server.generator_for("alice/gen0", served["writer"])
    prompt = server.prompt_ids("the cat sits on the mat and the dog sits on the rug")
    real, chunks = RunningBatch.prefill, []

    def evicting(self: RunningBatch) -> Any:  # once, between the pair's first and second chunks
        if not chunks and self.pending is not None and len(self.pending.rows) == 2 and self.pending.done:
            chunks.append(self.pending.done)
            server.evict(victim.ref)
            return []
        return real(self)

    monkeypatch.setattr(RunningBatch, "prefill", evicting)
    with caplog.at_level("ERROR", logger="vera.serving"):
        doomed, kept = server.start(victim, [Row(prompt, 5)])[0], server.start(keeper, [Row(prompt, 5)])[0]
        with pytest.raises(Evicted, match="evicted meanwhile; send it again"):
            doomed.result(timeout=30)
        got = kept.result(timeout=30)
    assert chunks and not [r for r in caplog.records if "failed" in r.getMessage()], caplog.text
    monkeypatch.setattr(RunningBatch, "prefill", real)
    assert got.tokens == server.wait(server.start(keeper, [Row(prompt, 5)]))[0].tokens


def test_the_batcher_decodes_while_a_request_holds_the_tokenizer(served: dict[str, Any],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoding (the batcher's rows' text, log-probabilities' texts) uses a tokenizer copy that only decodes, never
    the lock a request's tokenizing holds (reading an outsider's 500,000 log-probabilities held it 1.6 s a request,
    and every stream with it): rows decode while the lock is held. token_pieces decodes a slice a call, and reads
    the same pieces whatever the slice."""
    import registry.serving.server as serving

    server: ModelServer = served["server"]
    resident = server.generator_for("alice/gen0", served["writer"])
    ids = server.prompt_ids("the cat sits")
    sequence = server.prompt_ids("the cat sits on the mat and the dog sits on the rug")
    candidates = [[t, 5, 6] for t in sequence]
    whole = server.token_pieces(sequence, candidates)
    monkeypatch.setattr(serving, "PIECES_PER_CALL", 5)
    assert server.token_pieces(sequence, candidates) == whole
    with server._tokenizer_lock:  # as a request reading 500,000 log-probabilities' texts would
        done = server.start(resident, [Row(ids, 8, on_text=lambda text: None)])[0].result(timeout=30)
    assert len(done.tokens) == 8 and done.text

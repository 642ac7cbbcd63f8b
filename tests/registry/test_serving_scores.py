"""Log-probabilities from `vera serve-model`, and what evaluates adapters with them: OpenAI's ``logprobs`` on
completions (with ``echo``: the prompt's tokens' too) and chat, token-id prompts, vLLM's tokenizer routes, and
lm-evaluation-harness's own ``local-completions`` model scoring and generating with a registry adapter by name,
each checked against the adapter loaded alone in transformers."""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from registry.cli import app
from registry.client import RegistryClient
from registry.serving import openai as openai_routes
from registry.serving.openai import MAX_TOKENIZE_CHARS, NO_CHANCE
from tests.registry.served_lm import alone, oa, text_of
from vera_core import load_adapter


def model_logprobs(served: dict[str, Any], seed: int, ids: list[int]) -> torch.Tensor:
    """Adapter ``alice/gen{seed}`` loaded alone: the log-probabilities after each of ``ids`` (len(ids) x vocab)."""
    model = load_adapter(AutoModelForCausalLM.from_pretrained(served["base"]), served["dirs"][seed]).eval()
    with torch.no_grad():
        return model.model(torch.tensor([ids])).logits[0].float().log_softmax(-1)


def ids_of(served: dict[str, Any], text: str) -> list[int]:
    return list(AutoTokenizer.from_pretrained(served["base"])(text)["input_ids"])


def words(served: dict[str, Any], ids: list[int]) -> list[str]:
    tokenizer = AutoTokenizer.from_pretrained(served["base"])
    return [tokenizer.decode([t]) for t in ids]


def check_scored(served: dict[str, Any], seed: int, ids: list[int], logprobs: Any, *, top: int,
                 first: int = 0) -> None:
    """``logprobs`` (a completion's) holds ``ids[first:]``'s log-probabilities under the adapter alone, and at each
    place the ``top`` likeliest tokens' (with the token itself), within float tolerance."""
    truth = model_logprobs(served, seed, ids)
    assert [t.strip() for t in logprobs.tokens] == words(served, ids[first:])  # each read in place: " cat"
    offsets = [sum(len(t) for t in logprobs.tokens[:i]) for i in range(len(logprobs.tokens))]
    assert logprobs.text_offset == offsets
    for j, (token, got, tops) in enumerate(zip(ids[first:], logprobs.token_logprobs, logprobs.top_logprobs,
                                               strict=True)):
        at = first + j
        if at == 0:  # the prompt's first token: nothing before it
            assert got is None and tops is None
            continue
        want = truth[at - 1]
        assert got == pytest.approx(float(want[token]), abs=1e-4)
        values, likeliest = want.topk(top)
        expected = dict(zip(words(served, likeliest.tolist()), values.tolist(), strict=True))
        expected.setdefault(words(served, [token])[0], float(want[token]))
        tops = {k.strip(): v for k, v in tops.items()}
        assert tops.keys() == expected.keys() and all(tops[k] == pytest.approx(v, abs=1e-4)
                                                      for k, v in expected.items())


def test_echo_with_logprobs_scores_each_prompt_as_the_adapter_alone_whatever_its_padding(
        served: dict[str, Any]) -> None:
    """Two prompts of different lengths in one request share one left-padded batch: each prompt's tokens, and
    the new ones, get the log-probabilities the adapter alone gives them (lm-evaluation-harness's scoring)."""
    prompts = ["the cat sits on the", "a dog"]
    done = oa(served).completions.create(model="alice/gen0", prompt=prompts, max_tokens=3, temperature=0,
                                         logprobs=2, echo=True)
    assert len(done.choices) == 2
    for choice in done.choices:
        prompt = prompts[choice.index]
        new = alone(served, 0, prompt, 3)
        assert choice.text == prompt + text_of(served, new, prompt=prompt)
        ids = ids_of(served, prompt) + new
        check_scored(served, 0, ids, choice.logprobs, top=2)
        greedy = choice.logprobs.token_logprobs[len(ids_of(served, prompt)):]
        tops = choice.logprobs.top_logprobs[len(ids_of(served, prompt)):]
        assert all(lp == max(top.values()) for lp, top in zip(greedy, tops, strict=True))  # greedy took the top
    # without echo: the new tokens only, their offsets in the new text
    plain = oa(served).completions.create(model="alice/gen0", prompt=prompts[0], max_tokens=3, temperature=0,
                                          logprobs=0)
    new = alone(served, 0, prompts[0], 3)
    check_scored(served, 0, ids_of(served, prompts[0]) + new, plain.choices[0].logprobs, top=0,
                 first=len(ids_of(served, prompts[0])))
    assert all(len(top) == 1 for top in plain.choices[0].logprobs.top_logprobs)  # logprobs 0: the token itself


def test_a_streamed_completions_logprobs_come_chunk_by_chunk_and_add_up_to_the_answers(
        served: dict[str, Any]) -> None:
    """A streamed completion with echo and logprobs: chunks carry the log-probabilities of the tokens they bring
    (the prompt's with the first), with text offsets going on, and together they are the unstreamed answer's."""
    settings: dict[str, Any] = {"model": "alice/gen0", "prompt": "the cat sits on the", "max_tokens": 6,
                                "temperature": 0, "logprobs": 2, "echo": True}
    whole = oa(served).completions.create(**settings).choices[0]
    chunks = [c.choices[0] for c in oa(served).completions.create(**settings, stream=True) if c.choices]
    carrying = [c.logprobs for c in chunks if c.logprobs is not None]
    assert len(carrying) > 1 and "".join(c.text for c in chunks) == whole.text
    for field in ("tokens", "token_logprobs", "top_logprobs", "text_offset"):
        assert [x for part in carrying for x in getattr(part, field)] == getattr(whole.logprobs, field), field


def test_a_sampled_token_is_scored_under_the_models_distribution_not_the_sampling_one(
        served: dict[str, Any]) -> None:
    prompt = "the big red"
    done = oa(served).completions.create(model="alice/gen1", prompt=prompt, max_tokens=6, temperature=1.7,
                                         extra_body={"top_k": 5}, seed=11, logprobs=1).choices[0]
    start = len(ids_of(served, prompt))
    tokens = ids_of(served, prompt) + AutoTokenizer.from_pretrained(served["base"]).convert_tokens_to_ids(
        [t.strip() for t in done.logprobs.tokens])  # a word-level vocabulary: each token's text is its entry
    assert len(tokens) > start + 2
    truth = model_logprobs(served, 1, tokens)
    for j, got in enumerate(done.logprobs.token_logprobs):  # the raw model's, before temperature and top_k
        assert got == pytest.approx(float(truth[start + j - 1][tokens[start + j]]), abs=1e-4)


def test_token_id_prompts_are_the_text_prompts_they_spell_and_answers_are_bounded(
        served: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    client = oa(served)
    ids = ids_of(served, "the cat sits")
    by_text = client.completions.create(model="alice/gen1", prompt="the cat sits", max_tokens=5, temperature=0,
                                        logprobs=1, echo=True).choices[0]
    by_ids = client.completions.create(model="alice/gen1", prompt=ids, max_tokens=5, temperature=0, logprobs=1,
                                       echo=True).choices[0]
    assert by_ids.text == by_text.text and by_ids.logprobs.tokens == by_text.logprobs.tokens
    assert by_ids.logprobs.token_logprobs[0] is None
    assert by_ids.logprobs.token_logprobs[1:] == pytest.approx(by_text.logprobs.token_logprobs[1:], abs=1e-5)
    monkeypatch.setattr(openai_routes, "MAX_LOGPROB_ENTRIES", 40_000)  # this base's 40 positions reach no more
    with pytest.raises(openai.BadRequestError, match=r"up to 43,008 log-probabilities .* at most 40,000 per"):
        client.completions.create(model="alice/gen1", prompt=[[5] * 30] * 16, n=4, max_tokens=2, logprobs=20,
                                  echo=True)  # 64 choices x 32 tokens scored x 21 entries
    several = client.completions.create(model="alice/gen1", prompt=[ids, ids[:2]], max_tokens=2, temperature=0)
    assert sorted(c.index for c in several.choices) == [0, 1]
    assert several.usage is not None and several.usage.prompt_tokens == len(ids) + 2


def test_chat_logprobs_come_with_each_new_token_and_chunk_by_chunk_in_a_stream(served: dict[str, Any]) -> None:
    client = oa(served)
    messages: Any = [{"role": "user", "content": "the cat runs"}]
    chat = client.chat.completions.create(model="alice/gen0", messages=messages, max_tokens=4, temperature=0,
                                          logprobs=True, top_logprobs=3).choices[0]
    assert chat.logprobs is not None and chat.logprobs.content is not None
    prompt = ids_of(served, "the cat runs the ")  # the template's words, then the assistant's turn
    new = alone(served, 0, "the cat runs the", 4)
    truth = model_logprobs(served, 0, prompt + new)
    assert [c.token.strip() for c in chat.logprobs.content] == words(served, new)
    for j, entry in enumerate(chat.logprobs.content):
        want = truth[len(prompt) + j - 1]
        assert entry.logprob == pytest.approx(float(want[new[j]]), abs=1e-4)
        assert entry.bytes == list(entry.token.encode())
        assert [t.token.strip() for t in entry.top_logprobs] == words(served, want.topk(3).indices.tolist())
    # streamed: each chunk carries its tokens' (as OpenAI's), together the answer's, each read in its context
    streamed = list(client.chat.completions.create(model="alice/gen0", messages=messages, max_tokens=4,
                                                   temperature=0, logprobs=True, top_logprobs=3, stream=True))
    carrying = [c.choices[0] for c in streamed if c.choices and c.choices[0].logprobs is not None]
    assert len(carrying) > 1 and streamed[-1].choices[0].finish_reason == chat.finish_reason
    assert [e.model_dump() for c in carrying for e in c.logprobs.content] == \
        [e.model_dump() for e in chat.logprobs.content]
    assert "".join(c.delta.content or "" for c in carrying) == chat.message.content  # each with its tokens' text
    with pytest.raises(openai.BadRequestError, match="top_logprobs needs logprobs: true"):
        client.chat.completions.create(model="alice/gen0", messages=messages, top_logprobs=2)


def test_a_ruled_out_token_reads_as_vllms_stand_in_number() -> None:
    from registry.serving.openai import _number

    assert _number(float("-inf")) == NO_CHANCE and _number(float("nan")) == NO_CHANCE and _number(-1.5) == -1.5


def test_vllms_tokenizer_routes(served: dict[str, Any]) -> None:
    url = served["url"]
    said = httpx.post(f"{url}/tokenize", json={"prompt": "the cat sits", "return_token_strs": True}).json()
    assert said == {"count": 3, "max_model_len": 40, "tokens": ids_of(served, "the cat sits"),
                    "token_strs": ["the", "cat", "sits"]}
    chat = httpx.post(f"{url}/tokenize", json={"messages": [{"role": "user", "content": "the cat"}]}).json()
    assert chat["tokens"] == ids_of(served, "the cat the ")
    assert httpx.post(f"{url}/detokenize", json={"tokens": said["tokens"]}).json() == {"prompt": "the cat sits"}
    info = httpx.get(f"{url}/tokenizer_info").json()
    assert info["eos_token"] == "[EOS]" and info["pad_token"] == "[PAD]" and info["model_max_length"] == 40
    assert info["chat_template"] and info["vocab_size"] == 96
    for route, body, says in (
            ("tokenize", {"prompt": "x" * (MAX_TOKENIZE_CHARS + 1)}, "at most 100000 characters"),
            ("tokenize", {}, "send a prompt or messages"),
            ("tokenize", {"prompt": "a", "messages": [{"role": "user", "content": "b"}]}, "send a prompt or messages"),
            ("detokenize", {"tokens": [5, -1]}, "Token id -1 is not one of this base model's"),
            ("detokenize", {"tokens": list(range(40_000))}, "at most 32768 items")):
        refused = httpx.post(f"{url}/{route}", json=body)
        assert refused.status_code == 400 and says in refused.json()["error"]["message"], refused.text


def test_lm_evaluation_harness_scores_and_generates_with_a_registry_adapter_by_name(
        served: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """lm-evaluation-harness's own OpenAI-completions model, given only the server's URL and an adapter's name
    (its tokenizer is the server's, through /tokenize), scores continuations as the adapter alone does and
    generates its greedy text."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    monkeypatch.setenv("OPENAI_API_KEY", served["writer"])  # how lm-eval sends its token
    lm = LocalCompletionsAPI(base_url=f"{served['url']}/v1/completions", model="alice/gen1", batch_size=3,
                             max_length=40, num_concurrent=1, max_retries=1)
    assert lm.tokenizer_backend == "remote"  # found /tokenize and /tokenizer_info: no tokenizer of its own
    pairs = [("the cat sits", " on the mat"), ("a dog", " runs far"), ("the sun and the", " moon"),
             ("big red", " house near the tree")]
    scored = lm.loglikelihood([Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)],
                              disable_tqdm=True)
    for (context, continuation), (logprob, greedy) in zip(pairs, scored, strict=True):
        ctx, cont = ids_of(served, context), ids_of(served, continuation)
        truth = model_logprobs(served, 1, ctx + cont)
        steps = [truth[len(ctx) + j - 1] for j in range(len(cont))]
        assert logprob == pytest.approx(sum(float(s[t]) for s, t in zip(steps, cont, strict=True)), abs=1e-3)
        assert greedy == all(int(s.argmax()) == t for s, t in zip(steps, cont, strict=True))
    assert not math.isclose(scored[0][0], scored[1][0])
    generated = lm.generate_until([Instance("generate_until", {}, ("the cat sits", {"until": ["zzz"],
                                                                                      "max_gen_toks": 6}), 0)],
                                  disable_tqdm=True)
    assert generated == [text_of(served, alone(served, 1, "the cat sits", 6), prompt="the cat sits")]


def test_scoring_rows_share_the_batcher_with_plain_ones(served: dict[str, Any]) -> None:
    """Scoring and plain rows sent together: each gets its own answer (scoring rows run in their own generate
    calls, whose prefill keeps every position's logits)."""
    client, answers = oa(served), {}

    def ask(k: int) -> None:
        settings: dict[str, Any] = {"logprobs": 1, "echo": True} if k % 2 else {}
        answers[k] = client.completions.create(model=f"alice/gen{k % 2}", prompt="the cat " * (k + 1),
                                               max_tokens=3, temperature=0, **settings).choices[0]

    threads = [threading.Thread(target=ask, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for k, choice in answers.items():
        prompt = "the cat " * (k + 1)
        assert choice.text == (prompt if k % 2 else "") + text_of(served, alone(served, k % 2, prompt, 3),
                                                                  prompt=prompt)
        assert (choice.logprobs is not None) == bool(k % 2)


def test_scoring_rows_are_prefilled_within_the_logits_budget(served: dict[str, Any]) -> None:
    """A scoring row's prefill keeps rows x longest prompt x vocabulary logits: rows join in prefills that stay
    within SCORING_LOGITS (a row alone may exceed it)."""
    from registry.serving import server as serving
    from registry.serving.decode import Row

    server: serving.ModelServer = served["server"]
    works = [serving._Work("generate", None, Row([5] * 8, 2, score_prompt=True)) for _ in range(5)]  # type: ignore
    works += [serving._Work("generate", None, Row([5] * 30, 2, score_prompt=True))]  # type: ignore
    parts = server._fitted(works, logits_budget=96 * 8 * 3)  # three rows of 8 tokens at this base's 96 ids
    assert [[len(w.payload.prompt_ids) for w in part] for part in parts] == [[8, 8, 8], [8, 8], [30]]


#: a multiple-choice task's documents: context, choices, the right one
DOCS = [("the cat sits on the", [" mat", " tree", " sun"], 0), ("a dog", [" runs", " eats", " moon"], 1),
        ("the sun and the", [" moon", " cat"], 0), ("big red", [" house", " dog", " far"], 2),
        ("the small green", [" tree", " cat"], 1), ("a cat eats", [" the mat", " a big dog"], 0)]


def tiny_task(folder: Path) -> Path:
    """DOCS as a custom lm-eval task, ``tiny_choice`` (a YAML and a local JSONL, as any team's own task)."""
    (folder / "docs.jsonl").write_text("".join(json.dumps({"context": c, "choices": ch, "answer": a}) + "\n"
                                               for c, ch, a in DOCS))
    (folder / "tiny_choice.yaml").write_text(
        "task: tiny_choice\ndataset_path: json\ndataset_kwargs:\n"
        f"  data_files:\n    test: {folder / 'docs.jsonl'}\n  cache_dir: {folder / 'cache'}\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: '{{context}}'\n"
        "doc_to_choice: '{{choices}}'\ndoc_to_target: '{{answer}}'\nmetric_list:\n  - metric: acc\n")
    return folder


def choice_logprobs(served: dict[str, Any], seed: int) -> list[list[float]]:
    """Each document's choices' log-likelihoods under adapter ``alice/gen{seed}`` loaded alone."""
    truth = []
    for context, choices, _ in DOCS:
        truth.append([])
        for choice in choices:
            ctx, cont = ids_of(served, context), ids_of(served, context + choice)[len(ids_of(served, context)):]
            logprobs = model_logprobs(served, seed, ctx + cont)
            truth[-1].append(sum(float(logprobs[len(ctx) + j - 1][t]) for j, t in enumerate(cont)))
    return truth


def accuracy(truth: list[list[float]]) -> float:
    return sum(max(range(len(t)), key=t.__getitem__) == doc[2] for t, doc in zip(truth, DOCS, strict=True)) / len(DOCS)


def test_an_lm_evaluation_harness_task_scores_a_registry_adapter_as_the_adapter_alone_would(
        served: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A whole multiple-choice task through ``simple_evaluate`` with ``local-completions``, as `lm_eval --model
    local-completions` runs it: its accuracy is the one the adapter loaded alone gives, and so is each choice's
    log-likelihood; its results file recorded with `vera eval record --lm-eval` is a searchable metric."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    monkeypatch.setenv("OPENAI_API_KEY", served["writer"])
    out = simple_evaluate(model="local-completions", tasks=["tiny_choice"], log_samples=True,
                          model_args=f"model=alice/gen1,base_url={served['url']}/v1/completions,num_concurrent=2,"
                                     "max_length=40", task_manager=TaskManager(include_path=str(tiny_task(tmp_path))))
    assert out is not None
    truth = choice_logprobs(served, 1)
    for sample in sorted(out["samples"]["tiny_choice"], key=lambda s: s["doc_id"]):
        assert [r[0][0] for r in sample["resps"]] == pytest.approx(truth[sample["doc_id"]], abs=1e-3)
    assert out["results"]["tiny_choice"]["acc,none"] == pytest.approx(accuracy(truth))
    # and recorded on the version as lm_eval --output_path writes it: a searchable metric
    results = tmp_path / "results.json"
    results.write_text(json.dumps({k: v for k, v in out.items() if k != "samples"}, default=str))
    recorded = CliRunner().invoke(app, ["eval", "record", "alice/gen1:1", "--lm-eval", str(results), "--registry",
                                        served["registry"], "--token", served["writer"]])
    assert recorded.exit_code == 0, recorded.output
    with RegistryClient(served["registry"], served["reader"]) as client:
        assert client.get("alice/gen1:1").metrics["tiny_choice"]["acc"] == pytest.approx(accuracy(truth))
        found = client.list_versions(filter=f"metrics.tiny_choice.acc = {accuracy(truth)}").items
        assert "alice/gen1:1" in [v.ref for v in found]
        evaluation = client.evaluations("alice/gen1:1")[0]
        assert evaluation.details["model"] == "local-completions" and "alice/gen1" in evaluation.details["model_args"]


def test_vera_eval_run_evaluates_the_pinned_version_and_records_each_task(
        served: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`vera eval run REF --tasks ... --server URL`: lm-evaluation-harness through the model server, the alias
    resolved to its version first, each task's results recorded on that version (the adapter alone's accuracy);
    --no-record only prints; a task already recorded is refused before anything runs; without tasks named, a
    clear refusal."""
    monkeypatch.setenv("OPENAI_API_KEY", "")  # restored afterwards: the command sets it for lm-eval
    monkeypatch.chdir(tmp_path)  # where the results file goes when --output is not given
    with RegistryClient(served["registry"], served["writer"]) as client:
        client.set_alias("alice/gen0:1", "eval-me")
    common = ["--server", served["url"], "--include-path", str(tiny_task(tmp_path)), "--max-length", "40",
              "--num-concurrent", "2", "--registry", served["registry"], "--token", served["writer"]]
    trial = CliRunner().invoke(app, ["eval", "run", "alice/gen0@eval-me", "--tasks", "tiny_choice", "--no-record",
                                     "--output", str(tmp_path / "out.json"), *common])
    assert trial.exit_code == 0, trial.output
    assert "alice/gen0:1 tiny_choice: acc" in trial.output
    assert json.loads((tmp_path / "out.json").read_text())["results"]["tiny_choice"]["acc,none"] == pytest.approx(
        accuracy(choice_logprobs(served, 0)))
    with RegistryClient(served["registry"], served["reader"]) as client:
        assert "tiny_choice" not in client.get("alice/gen0:1").metrics
    done = CliRunner().invoke(app, ["eval", "run", "alice/gen0@eval-me", "--tasks", "tiny_choice", *common])
    assert done.exit_code == 0, done.output
    assert "alice/gen0:1: recorded tiny_choice (acc " in done.output
    kept = list(tmp_path.glob("vera-eval-alice-gen0-1-*.json"))  # lm-eval's results, written before recording
    assert len(kept) == 1 and "tiny_choice" in json.loads(kept[0].read_text())["results"]
    with RegistryClient(served["registry"], served["reader"]) as client:
        assert client.get("alice/gen0:1").metrics["tiny_choice"]["acc"] == pytest.approx(
            accuracy(choice_logprobs(served, 0)))
        details = client.evaluations("alice/gen0:1")[0].details
        assert details["harness"] == "lm-evaluation-harness"
        assert "model=alice/gen0:1," in details["model_args"]  # lm-eval was given the number, not the alias
    again = CliRunner().invoke(app, ["eval", "run", "alice/gen0:1", "--tasks", "tiny_choice", *common])
    assert again.exit_code != 0 and "alice/gen0:1 already has tiny_choice" in again.output  # before running
    assert "Evaluating" not in again.output
    empty = CliRunner().invoke(app, ["eval", "run", "alice/gen0:1", "--tasks", " , ", *common])
    assert empty.exit_code != 0 and "--tasks names no task" in empty.output
    foreign = CliRunner().invoke(app, ["eval", "run", "alice/foreign", "--tasks", "tiny_choice", *common])
    assert foreign.exit_code != 0 and "serves 'tiny-lm' (causal-lm); this version is for 'org/other'" in \
        " ".join(foreign.output.split())  # the console wraps lines
    nowhere = CliRunner().invoke(app, ["eval", "run", "alice/gen0:1", "--tasks", "tiny_choice", *common,
                                       "--server", "http://127.0.0.1:9"])
    assert nowhere.exit_code != 0 and "No vera serve-model answers at http://127.0.0.1:9" in \
        " ".join(nowhere.output.split())


def test_token_texts_join_into_the_text_and_offsets_index_it(served: dict[str, Any]) -> None:
    """Each token's text is read where it stands (its space included), so that a choice's tokens join into its
    text and each offset points at its token (an outsider's finding: each token decoded alone lost the spaces)."""
    client = oa(served)
    for settings in ({"echo": True}, {}):
        choice = client.completions.create(model="alice/gen0", prompt="the cat sits", max_tokens=4, temperature=0,
                                           logprobs=2, **settings).choices[0]
        tokens, offsets = choice.logprobs.tokens, choice.logprobs.text_offset
        new = alone(served, 0, "the cat sits", 4)
        generated = text_of(served, new, prompt="the cat sits")
        assert "".join(tokens) == ("the cat sits" if settings else "") + generated
        assert all(choice.text[at:at + len(token)] == token for at, token in zip(offsets, tokens, strict=True))
        assert " cat" in tokens or not settings
        for top in choice.logprobs.top_logprobs[1:]:
            assert all(key == key.strip() or key.startswith(" ") for key in top)  # alternatives read in place
    chat = client.chat.completions.create(model="alice/gen0", messages=[{"role": "user", "content": "the cat"}],
                                          max_tokens=4, temperature=0, logprobs=True).choices[0]
    assert "".join(c.token for c in chat.logprobs.content) == chat.message.content


def test_scoring_alone_with_max_tokens_0_costs_one_forward_and_matches(served: dict[str, Any]) -> None:
    """max_tokens 0 with echo and logprobs (OpenAI's old way, and older lm-eval's) scores the prompt and generates
    nothing; its numbers are the adapter's alone, as with max_tokens 1; without echo and logprobs it is refused."""
    client = oa(served)
    prompts = ["the cat sits on the mat", "a dog"]
    scored = client.completions.create(model="alice/gen1", prompt=prompts, max_tokens=0, logprobs=1, echo=True)
    for choice in scored.choices:
        prompt = prompts[choice.index]
        assert choice.text == prompt and choice.finish_reason == "length"
        check_scored(served, 1, ids_of(served, prompt), choice.logprobs, top=1)
    assert scored.usage is not None and scored.usage.completion_tokens == 0
    with pytest.raises(openai.BadRequestError, match="max_tokens 0 asks for nothing"):
        client.completions.create(model="alice/gen1", prompt="the cat", max_tokens=0)


@pytest.mark.parametrize(("change", "says"), [
    ({"prompt": [1] * 1_000_001}, "prompt: the list of token ids is 1,000,001 token ids; at most 32,768"),
    ({"prompt": ["the cat"] * 65}, "prompt: a list of 65 prompts; at most 64"),
    ({"prompt": [[1] * 40_000]}, "prompt: prompt[0] is 40,000 token ids; at most 32,768"),
    ({"prompt": "x" * 20_001}, "prompt: the text is 20,001 characters; at most 20,000"),
    ({"prompt": [1, "a"]}, "of token ids; the list of token ids holds something other than whole numbers"),
    ({"prompt": [True, False]}, "; prompt[0] is a bool"),
    ({"prompt": 5}, "prompt: expected a text, a list of texts, a list of token ids, or a list of lists of token "
                    "ids; got int"),
    ({"prompt": [[1], ["a"]]}, "prompt[1] holds something other than whole numbers"),
    ({"stop": [1] * 100_000}, "stop must be a text or a list of at most 4 texts"),
    ({"logit_bias": {str(i): 1 for i in range(100_000)}}, "logit_bias is not supported"),
    ({"repetition_penalty": 1.3}, "repetition_penalty is not supported by vera serve-model with the value sent"),
    ({"min_tokens": 3, "ignore_eos": True}, "ignore_eos, min_tokens are not supported"),
    ({"prompt_logprobs": 1}, "prompt_logprobs is not supported"),
    ({"add_special_tokens": False}, "add_special_tokens is not supported"),
    ({"max_completion_tokens": 2}, "max_completion_tokens is not supported"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools is not supported"),  # was ignored: a 200
    ({"echo": "yes"}, "echo: Input should be a valid boolean"),
    ({"logprobs": True}, "logprobs: Input should be a valid integer"),
    ({"max_tokens": True}, "max_tokens: Input should be a valid integer"),  # was 1 token (an outsider's finding)
    ({"max_tokens": "3"}, "max_tokens: Input should be a valid integer"),  # was 3, as OpenAI's API never takes
    ({"n": 2.0}, "n: Input should be a valid integer"),
    ({"seed": "7"}, "seed: Input should be a valid integer"),
    ({"stream": True, "stream_options": {"continuous_usage_stats": True}}, "continuous_usage_stats is not supported"),
])
def test_bad_completions_are_refused_in_one_sentence_at_little_cost(served: dict[str, Any], change: dict[str, Any],
                                                                     says: str) -> None:
    """Each bad field is a 400 saying what was expected; a long list is refused by its length, not item by item
    (an outsider's finding: a million-item prompt of the wrong shape cost 20 s of the event loop and 2.6 GB)."""
    answer = httpx.post(f"{served['url']}/v1/completions", timeout=60,
                        headers={"Authorization": f"Bearer {served['reader']}"},
                        json={"model": "alice/gen0", "prompt": "the cat", "max_tokens": 2,
                              "repetition_penalty": 1.0, **change})  # vLLM's fields at their defaults are fine
    assert answer.status_code == 400 and says in answer.json()["error"]["message"], answer.text


def test_vllms_fields_at_their_defaults_and_chats_own_refusals(served: dict[str, Any]) -> None:
    client = oa(served)
    plain = client.completions.create(model="alice/gen0", prompt="the cat", max_tokens=3, temperature=0)
    defaults = client.completions.create(model="alice/gen0", prompt="the cat", max_tokens=3, temperature=0,
                                         extra_body={"repetition_penalty": 1.0, "min_p": 0, "ignore_eos": False,
                                                     "skip_special_tokens": True, "stop_token_ids": []})
    assert defaults.choices[0].text == plain.choices[0].text
    for field in ({"echo": True}, {"chat_template": "{{ messages }}"}, {"add_generation_prompt": False},
                  {"repetition_penalty": 2.0}):
        with pytest.raises(openai.BadRequestError, match=f"{next(iter(field))} is not supported"):
            client.chat.completions.create(model="alice/gen0", messages=[{"role": "user", "content": "the cat"}],
                                           max_tokens=2, extra_body=field)
    with pytest.raises(openai.BadRequestError, match="content must be a text or a list of at most 256 text parts"):
        client.chat.completions.create(model="alice/gen0", messages=[{"role": "user", "content": 5}])  # type: ignore


def test_chat_log_probabilities_are_bounded_too(served: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openai_routes, "MAX_LOGPROB_ENTRIES", 1_000)  # this base's 40 positions reach no more
    with pytest.raises(openai.BadRequestError, match=r"up to 1,260 log-probabilities .* at most 1,000"):
        oa(served).chat.completions.create(model="alice/gen0", messages=[{"role": "user", "content": "the"}],
                                           max_tokens=30, n=2, logprobs=True, top_logprobs=20)


def test_an_unknown_token_costs_one_registry_call_in_listings(served: dict[str, Any],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A junk token's listing asks the registry who it is once, not about every private resident (an outsider's
    finding: one call per private resident per fresh token)."""
    server = served["server"]
    oa(served).completions.create(model="alice/secret", prompt="the cat", max_tokens=1)  # a private resident
    calls: list[str | None] = []
    making = server.client_for
    monkeypatch.setattr(server, "client_for", lambda token: calls.append(token) or making(token))
    for i in range(3):
        listed = httpx.get(f"{served['url']}/v1/models", headers={"Authorization": f"Bearer vera_junk{i}"})
        assert listed.status_code == 200 and "alice/secret:1" not in {m["id"] for m in listed.json()["data"]}
    # and whether the registry takes callers without a token, once (it does not: they read nothing)
    assert [c for c in calls if c is not None] == ["vera_junk0", "vera_junk1", "vera_junk2"] and calls.count(None) == 1
    assert "alice/secret:1" in {m.id for m in oa(served).models.list()}


def test_tokenizing_nothing_is_nothing(served: dict[str, Any]) -> None:
    empty = httpx.post(f"{served['url']}/tokenize", json={"prompt": "", "return_token_strs": True})
    assert empty.status_code == 200 and empty.json()["tokens"] == [] and empty.json()["token_strs"] == []


def test_the_generate_route_takes_numbers_and_numeric_texts_but_never_true_or_false(served: dict[str, Any]) -> None:
    """`/v1/generate` over HTTP: its number fields take numbers, and numeric texts as they always did (a client may
    send them), but JSON's true and false are refused (`max_new_tokens: true` was one token); the answer
    is the greedy continuation, as `generate` in process gives it."""
    url, auth = f"{served['url']}/v1/generate", {"Authorization": f"Bearer {served['reader']}"}
    body = {"adapter": "alice/gen0", "prompt": "the cat"}
    answer = httpx.post(url, json={**body, "max_new_tokens": "3", "seed": 4}, headers=auth, timeout=60)
    assert answer.status_code == 200, answer.text
    want = served["server"].generate("alice/gen0", "the cat", max_new_tokens=3, token=served["reader"])
    assert answer.json()["tokens"] == want["tokens"] and len(want["tokens"]) <= 3
    for field in ("max_new_tokens", "top_k", "seed", "temperature", "top_p"):
        refused = httpx.post(url, json={**body, field: True}, headers=auth, timeout=60)
        assert refused.status_code == 422 and "expected a number, not true or false" in refused.text, (
            field, refused.text)


def test_a_choice_generates_at_most_the_servers_max_tokens(served: dict[str, Any]) -> None:
    """--max-tokens bounds what one choice may ask for on every route (512 by default; it was a fixed 512): more is a
    refusal naming the setting, and a chat that leaves max_tokens out gets what the context leaves up to it."""
    server = served["server"]
    auth = {"Authorization": f"Bearer {served['reader']}"}
    url = served["url"]
    before = server.max_tokens
    try:
        server.max_tokens = 3
        for route, body in (("completions", {"model": "alice/gen0", "prompt": "the cat", "max_tokens": 4}),
                            ("chat/completions", {"model": "alice/gen0", "max_tokens": 4,
                                                  "messages": [{"role": "user", "content": "the cat"}]}),
                            ("generate", {"adapter": "alice/gen0", "prompt": "the cat", "max_new_tokens": 4})):
            refused = httpx.post(f"{url}/v1/{route}", json=body, headers=auth, timeout=60)
            assert refused.status_code == (422 if route == "generate" else 400), refused.text  # its own API: 422
            field = "max_new_tokens" if route == "generate" else "max_tokens"
            assert f"{field} is 4; this server generates at most 3 new tokens per choice (vera serve-model " \
                   "--max-tokens)" in refused.text, refused.text
        chat = httpx.post(f"{url}/v1/chat/completions", headers=auth, timeout=60, json={
            "model": "alice/gen0", "temperature": 0, "messages": [{"role": "user", "content": "the cat"}]})
        assert chat.status_code == 200 and chat.json()["usage"]["completion_tokens"] <= 3, chat.text
        server.max_tokens = 600  # past the old fixed 512 (refused by the schema then): now the context decides
        long = httpx.post(f"{url}/v1/completions", headers=auth, timeout=60, json={
            "model": "alice/gen0", "prompt": "the cat", "max_tokens": 600})
        assert long.status_code == 400 and "over this base model's context of 40 tokens" in long.text, long.text
    finally:
        server.max_tokens = before

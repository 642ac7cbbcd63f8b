"""`vera serve-model` in OpenAI's API, driven by OpenAI's own Python client over real HTTP: registry adapters by
name as ``model``, completions and chat completions, greedy and seeded sampling, stop strings, streaming, and
OpenAI's errors; plus the per-row decoding underneath (registry/serving/decode.py), checked against transformers'
own ``generate`` of each adapter loaded alone."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import torch
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from transformers import AutoTokenizer

from registry.api.gate import BodyLimit
from registry.client import RegistryClient
from registry.serving.api import MAX_BODY_BYTES, create_serving_app
from registry.serving.decode import Row, Sampling, _draw
from registry.serving.server import ModelServer
from tests.conftest import TINY_MODELS
from tests.registry.adapters import make_adapter
from tests.registry.served_lm import alone, oa, text_of
from tests.registry.servers import in_thread, trickle


def test_completions_by_adapter_name_equal_each_adapter_alone(served: dict[str, Any]) -> None:
    """Greedy completions of two adapters sent at once (one batch) equal transformers' generate of each alone;
    `model` answers with the version served, usage counts the tokens."""
    client, answers = oa(served), {}
    prompts = {0: "the cat sits on", 1: "a dog runs far and"}

    def ask(seed: int) -> None:
        answers[seed] = client.completions.create(model=f"alice/gen{seed}", prompt=prompts[seed], max_tokens=8,
                                                  temperature=0)

    threads = [threading.Thread(target=ask, args=(seed,)) for seed in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for seed in (0, 1):
        want = alone(served, seed, prompts[seed], 8)
        got = answers[seed]
        assert got.model == f"alice/gen{seed}:1" and got.object == "text_completion" and got.id.startswith("cmpl-")
        assert got.choices[0].text == text_of(served, want, prompt=prompts[seed])
        ended_at_eos = 2 in want
        assert got.choices[0].finish_reason == ("stop" if ended_at_eos else "length")
        assert got.usage is not None and got.usage.prompt_tokens == len(prompts[seed].split())
        assert got.usage.completion_tokens == (want.index(2) + 1 if ended_at_eos else 8)
    assert answers[0].choices[0].text != answers[1].choices[0].text


def test_a_seed_gives_the_same_text_alone_or_in_any_batch_and_n_choices_differ(served: dict[str, Any]) -> None:
    client = oa(served)
    settings: dict[str, Any] = {"model": "alice/gen0", "prompt": "the cat", "max_tokens": 10, "temperature": 1.5,
                                "top_p": 0.95, "seed": 1234}
    first = client.completions.create(**settings).choices[0].text
    crowd: dict[int, str] = {}

    def other(i: int) -> None:  # the same batch window, other adapters, prompts and settings
        crowd[i] = client.completions.create(model=f"alice/gen{i % 2}", prompt="a big red " * (i + 1),
                                             max_tokens=12, temperature=1.0).choices[0].text

    threads = [threading.Thread(target=other, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    again = client.completions.create(**settings).choices[0].text
    for thread in threads:
        thread.join()
    assert again == first and len(crowd) == 3
    four = client.completions.create(**{**settings, "n": 4})
    texts = [c.text for c in sorted(four.choices, key=lambda c: c.index)]
    assert texts[0] == first  # choice i samples with seed + i
    assert len(set(texts)) > 1
    assert client.completions.create(**{**settings, "seed": 99}).choices[0].text != first or \
        client.completions.create(**{**settings, "seed": 100}).choices[0].text != first


def test_streams_add_up_to_the_answer_and_stop_strings_cut_it(served: dict[str, Any]) -> None:
    client = oa(served)
    settings: dict[str, Any] = {"model": "alice/gen1", "prompt": "the sun and the moon", "max_tokens": 12,
                                "temperature": 0.8, "seed": 7}
    whole = client.completions.create(**settings).choices[0]
    chunks = list(client.completions.create(**settings, stream=True, stream_options={"include_usage": True}))
    streamed = "".join(c.choices[0].text for c in chunks if c.choices)
    assert streamed == whole.text and len(whole.text.split()) > 2
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    # a stop string: the text cut just before it, in the whole answer and in the stream
    words = whole.text.split()
    stop = words[2]
    cut = whole.text[:whole.text.find(stop)]
    stopped = client.completions.create(**settings, stop=[stop, "zzz never"]).choices[0]
    assert stopped.text == cut and stopped.finish_reason == "stop"
    streamed = "".join(c.choices[0].text for c in client.completions.create(**settings, stop=stop, stream=True)
                       if c.choices)
    assert streamed == cut
    echoed = client.completions.create(**settings, echo=True).choices[0].text
    assert echoed == settings["prompt"] + whole.text


def test_chat_completions_use_the_base_models_chat_template(served: dict[str, Any]) -> None:
    client = oa(served)
    messages: Any = [{"role": "system", "content": "the cat"}, {"role": "user", "content": "runs far"}]
    chat = client.chat.completions.create(model="alice/gen0", messages=messages, max_tokens=6, temperature=0)
    # the template writes "the cat runs far the " and the assistant's turn continues it
    completion = client.completions.create(model="alice/gen0", prompt="the cat runs far the ", max_tokens=6,
                                           temperature=0)
    assert chat.object == "chat.completion" and chat.model == "alice/gen0:1"
    assert chat.choices[0].message.role == "assistant"
    assert chat.choices[0].message.content == completion.choices[0].text
    streamed = list(client.chat.completions.create(model="alice/gen0", messages=messages, max_tokens=6,
                                                   temperature=0, stream=True))
    assert streamed[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == chat.choices[0].message.content
    assert streamed[-1].choices[0].finish_reason == chat.choices[0].finish_reason
    # without max_tokens: what the context (40 tokens) leaves
    assert client.chat.completions.create(model="alice/gen0", messages=messages, temperature=0).usage is not None
    # and a chat that fills it is told so, not that "1 new tokens were asked for" (an inference engineer's walk)
    with pytest.raises(openai.BadRequestError, match="which leaves no room for an answer in this base model's "
                                                     "context of 40 tokens. Shorten the messages"):
        client.chat.completions.create(model="alice/gen0", messages=[{"role": "user", "content": "cat " * 60}])


def test_openais_errors_for_what_cannot_be_served(served: dict[str, Any]) -> None:
    client = oa(served)
    cases: list[tuple[type[Exception], dict[str, Any], str]] = [
        (openai.BadRequestError, {"logprobs": 21}, "logprobs: Input should be less than or equal to 20"),
        (openai.BadRequestError, {"extra_body": {"top_logprobs": 2}}, "on /v1/completions send logprobs: N"),
        (openai.BadRequestError, {"prompt": [3, 96]}, "Token id 96 is not one of this base model's: ids run from "
                                                      "0 to 95"),
        (openai.BadRequestError, {"prompt": [[3, 4], []]}, "must hold at least one id"),
        (openai.BadRequestError, {"presence_penalty": 0.5}, "presence_penalty is not supported"),
        (openai.BadRequestError, {"temperature": 3}, "temperature"),
        (openai.BadRequestError, {"temperature": "0.5"}, "temperature: Input should be a valid number"),
        (openai.BadRequestError, {"top_p": True}, "top_p: Input should be a valid number"),
        (openai.BadRequestError, {"max_tokens": 513}, "max_tokens is 513; this server generates at most 512"),
        # past the schema's bound too: the server's limit, not the bound (an inference engineer's walk, session 47)
        (openai.BadRequestError, {"max_tokens": 100000}, "max_tokens is 100000; this server generates at most 512"),
        (openai.BadRequestError, {"prompt": " ".join(["cat"] * 30), "max_tokens": 16},
         "30 tokens and 16 new tokens were asked for: 46 in all, over this base model's context of 40"),
        (openai.BadRequestError, {"prompt": ["the cat"] * 20, "n": 4}, "80 choices; at most 64"),
        (openai.BadRequestError, {"stop": ["a", "b", "c", "d", "e"]}, "a list of at most 4 texts"),
        (openai.NotFoundError, {"model": "alice/nothing"}, "alice/nothing"),
        # a conflict that sending again cannot resolve is a 400: OpenAI's clients retry a 409 by themselves
        (openai.BadRequestError, {"model": "alice/foreign"}, "published for base model 'org/other'"),
        (openai.BadRequestError, {"extra_body": {"response_format": {"type": "json_object"}}},
         "response_format is not supported"),
        (openai.BadRequestError, {"stream_options": {"include_usage": True}}, "only allowed with stream: true"),
    ]
    server: ModelServer = served["server"]
    client.completions.create(model="alice/gen0", prompt="the cat", max_tokens=1)  # (loaded)
    gen0 = server.residents["alice/gen0:1"]
    claims = len(gen0.claims)
    for error, change, says in cases:
        with pytest.raises(error) as raised:
            client.completions.create(**{"model": "alice/gen0", "prompt": "the cat", "max_tokens": 4, **change})
        assert says in raised.value.message, (change, raised.value.message)
        assert isinstance(raised.value.body, dict) and raised.value.body.get("message"), raised.value.body
    # a request refused after it took its adapter gave its claim back: none kept it from eviction meanwhile
    assert len(gen0.claims) == claims and gen0.holds == 0
    with pytest.raises(openai.BadRequestError) as named:
        client.completions.create(model="alice/gen0", prompt="the cat", max_tokens=100000)
    assert "max_tokens is 100000; " in named.value.message  # the field named once ("max_tokens: max_tokens is ...")
    assert "max_tokens: max_tokens" not in named.value.message, named.value.message
    nulls = httpx.post(f"{served['url']}/v1/completions", headers={"Authorization": f"Bearer {served['writer']}"},
                       json={"model": "alice/gen0", "prompt": "the cat", "max_tokens": None, "temperature": None,
                             "top_p": None, "n": None, "stream": None, "echo": None, "presence_penalty": None})
    assert nulls.status_code == 200 and nulls.json()["usage"]["completion_tokens"] <= 16  # null: the default
    writer = {"Authorization": f"Bearer {served['writer']}", "Content-Type": "application/json"}
    for route, body in (("completions", b'{"model": "alice/gen0", "prompt": "the \\ud800 cat"}'),
                        ("chat/completions", b'{"model": "alice/gen0", "messages": [{"role": "user", '
                                             b'"content": "\\udfff"}]}')):  # JSON escapes no encoder writes
        surrogate = httpx.post(f"{served['url']}/v1/{route}", content=body, headers=writer)
        assert surrogate.status_code == 400 and "lone UTF-16 surrogate" in surrogate.json()["error"]["message"]
    stop = httpx.post(f"{served['url']}/v1/completions", headers=writer,  # taken, and never matched (an outsider's)
                      content=b'{"model": "alice/gen0", "prompt": "the cat", "stop": ["x", "\\ud800"]}')
    assert stop.status_code == 400 and "A stop string holds a lone UTF-16 surrogate" in stop.json()["error"]["message"]
    for body in (b"{not json", b'{"model": "\xff\xfe"}', b'{"n": ' + b"9" * 5000 + b"}"):  # a re-attack's finding
        unparsed = httpx.post(f"{served['url']}/v1/completions", content=body, headers=writer)
        assert unparsed.status_code in (400, 422) and unparsed.json()["error"]["message"], unparsed.text
    # said as what it is: "1: JSON decode error" with param "1", and "Field required" for null (session 47's walk)
    broken = httpx.post(f"{served['url']}/v1/completions", content=b"{bad", headers=writer).json()["error"]
    assert broken["message"].startswith("The body is not JSON at character 1") and broken["param"] is None
    null = httpx.post(f"{served['url']}/v1/chat/completions", content=b"null", headers=writer).json()["error"]
    assert null["message"] == "The body must be a JSON object with the request's fields (model, ...)."
    for token in ("vera_wrong", "vera_\u00e9t\u00e9"):  # unknown, and not even ASCII: 401 both, never a 500
        answer = httpx.post(f"{served['url']}/v1/completions", json={"model": "alice/gen0", "prompt": "the"},
                            headers={"Authorization": f"Bearer {token}".encode()})
        assert answer.status_code == 401 and answer.json()["error"]["type"] == "authentication_error"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{served['url']}/v1", api_key="vera_wrong", max_retries=0).completions.create(
            model="alice/gen0", prompt="the cat", max_tokens=2)
    with pytest.raises(openai.NotFoundError):  # bob may not read alice's private adapter: it does not exist
        oa(served, "reader").completions.create(model="alice/secret", prompt="the cat", max_tokens=2)
    assert oa(served, "writer").completions.create(model="alice/secret", prompt="the cat", max_tokens=2).choices
    server: ModelServer = served["server"]
    template, server.tokenizer.chat_template = server.tokenizer.chat_template, None  # a base without one
    try:
        with pytest.raises(openai.BadRequestError, match="has no chat template"):
            client.chat.completions.create(model="alice/gen0", messages=[{"role": "user", "content": "cat"}])
    finally:
        server.tokenizer.chat_template = template
    big = httpx.post(f"{served['url']}/v1/completions", content=b"x" * (MAX_BODY_BYTES + 1),
                     headers={"Authorization": f"Bearer {served['writer']}", "Content-Type": "application/json"})
    assert big.status_code == 413


def test_models_lists_the_adapters_loaded_for_the_caller(served: dict[str, Any]) -> None:
    oa(served).completions.create(model="alice/secret", prompt="the cat", max_tokens=1)
    oa(served, "reader").completions.create(model="alice/gen0", prompt="the cat", max_tokens=1)  # (loaded here)
    mine = {m.id for m in oa(served).models.list()}
    theirs = {m.id for m in oa(served, "reader").models.list()}
    assert "alice/secret:1" in mine and "alice/secret:1" not in theirs and "alice/gen0:1" in theirs
    # one model, as models.retrieve asks (a problem document before, which OpenAI's clients could not read)
    found = oa(served).models.retrieve("alice/secret")
    assert (found.id, found.owned_by, found.model_extra) == ("alice/secret", "alice", {"root": "alice/secret:1"})
    for who, name, said in (("reader", "alice/secret", "alice/secret"),  # private: not there for bob
                            ("writer", "alice/nothing", "alice/nothing"),
                            ("writer", "alice/foreign", "published for base model 'org/other'")):
        with pytest.raises(openai.NotFoundError, match=said):
            oa(served, who).models.retrieve(name)


def test_a_short_row_is_answered_before_its_batch_ends_and_a_bad_prompt_fails_only_its_own_request(
        served: dict[str, Any]) -> None:
    server: ModelServer = served["server"]
    resident = server.generator_for("alice/gen0", served["writer"])
    seen: list[bool] = []
    ids = server.prompt_ids("the cat")
    short = Row(ids, 2, Sampling(temperature=1.0, seed=1))
    futures: list[Any] = []
    long = Row(ids, 20, Sampling(temperature=1.0, seed=2), on_text=lambda _: seen.append(futures[0].done()))
    futures.extend(server.start(resident, [short, long]))
    done = server.wait(futures)
    assert len(done[0].tokens) <= 2 and len(done[1].tokens) > 2
    assert seen and seen[-1]  # the long row was still speaking when the short one's answer was out
    # an over-long prompt is refused before it is queued, so nothing it shares a window with fails
    answers: dict[str, Any] = {}

    def ask(name: str, prompt: str) -> None:
        try:
            answers[name] = server.generate("alice/gen1", prompt, max_new_tokens=4, token=served["writer"])
        except Exception as exc:  # noqa: BLE001 - the test looks at which request failed
            answers[name] = exc

    threads = [threading.Thread(target=ask, args=("bad", "cat " * 39)), threading.Thread(target=ask,
                                                                                      args=("good", "the dog"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert "over this base model's context" in str(answers["bad"]) and answers["good"]["text"] is not None


def test_a_cancelled_row_ends_at_its_next_token(served: dict[str, Any]) -> None:
    server: ModelServer = served["server"]
    resident = server.generator_for("alice/gen1", served["writer"])
    row = Row(server.prompt_ids("the"), 30, Sampling(temperature=1.0, seed=3))
    row.on_text = lambda _: setattr(row, "cancelled", True)  # a client that hangs up after the first words
    done = server.wait(server.start(resident, [row]))[0]
    assert done.finish_reason == "stop" and 1 <= len(done.tokens) < 30


def test_sampling_draws_what_its_settings_allow() -> None:
    logits = torch.tensor([0.0, torch.log(torch.tensor(3.0)), -1.0, -2.0])
    generator = torch.Generator().manual_seed(0)
    draws = [int(_draw(logits, Sampling(temperature=1.0, top_k=2), generator)) for _ in range(4000)]
    assert set(draws) == {0, 1} and 0.72 < draws.count(1) / 4000 < 0.78  # 0.25 : 0.75 among the top two
    assert {int(_draw(logits, Sampling(temperature=1.0, top_p=0.5), generator)) for _ in range(200)} == {1}
    assert {int(_draw(logits, Sampling(temperature=0.05), generator)) for _ in range(200)} == {1}
    spread = {int(_draw(logits, Sampling(temperature=2.0), generator)) for _ in range(400)}
    assert spread == {0, 1, 2, 3}
    # a top_p that is zero in float32 keeps the likeliest token (an outsider's 1e-300 drew token 0, [UNK])
    assert {int(_draw(logits, Sampling(temperature=1.0, top_p=1e-300), generator)) for _ in range(50)} == {1}


def test_one_callers_numbers_never_fail_another_callers_request_in_the_same_batch(served: dict[str, Any]) -> None:
    """An outsider's attack: a temperature that overflows float32, and an adapter whose (finite) vectors make its
    logits infinite, sampled beside a victim's request in one batch: every request is answered (the victim's as
    alone). And a row that fails even alone (a token id the model does not have) fails alone: its batchmate, that
    sent no text yet, runs again on its own."""
    client, server = oa(served), served["server"]
    want = client.completions.create(model="alice/gen0", prompt="the cat", max_tokens=6, temperature=0)
    answers: dict[str, Any] = {}

    def ask(name: str, **settings: Any) -> None:
        try:
            answers[name] = client.completions.create(prompt="the cat", max_tokens=6, **settings)
        except openai.APIError as exc:
            answers[name] = exc

    threads = [threading.Thread(target=ask, args=("victim",), kwargs={"model": "alice/gen0", "temperature": 0}),
               threading.Thread(target=ask, args=("tiny",), kwargs={"model": "alice/gen1", "temperature": 1e-300}),
               threading.Thread(target=ask, args=("huge",), kwargs={"model": "alice/huge", "temperature": 1.0})]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers["victim"].choices[0].text == want.choices[0].text
    assert all(not isinstance(a, Exception) for a in answers.values()), answers
    resident = server.generator_for("alice/gen0", served["writer"])
    broken = Row([server.tokenizer.eos_token_id, 10_000], 3)  # an id past the vocabulary: generate fails
    fine = Row(server.prompt_ids("the cat"), 6)
    futures = server.start(resident, [broken, fine])
    assert futures[1].result(timeout=60).text == want.choices[0].text
    with pytest.raises(Exception, match="failed to generate this answer"):
        futures[0].result(timeout=60)


def test_rows_that_each_fit_the_context_are_batched_so_that_together_they_fit(
        served: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> None:
    """On a base with learned positions (GPT-2: 40), a 1-token prompt asking for 39 tokens and a 30-token prompt
    asking for 8 each fit; in one batch they would need 30 + 39 positions. They run as two batches."""
    root = tmp_path_factory.mktemp("gpt2")
    model = TINY_MODELS[1].make(seed=3)
    model.config.pad_token_id, model.config.eos_token_id = 1, 2
    model.save_pretrained(root / "base")
    AutoTokenizer.from_pretrained(served["base"]).save_pretrained(root / "base")
    registry = served["registry"]
    with RegistryClient(registry, served["writer"]) as client:
        client.publish(make_adapter(root / "a", seed=1, tiny=TINY_MODELS[1]), "alice/gpt", base_model="tiny-gpt2")
    server = ModelServer(str(root / "base"), task="causal-lm", base_name="tiny-gpt2", batch_window_s=0.3,
                         client_for=lambda token: RegistryClient(registry, token or ""))
    try:
        resident = server.generator_for("alice/gpt", served["writer"])
        rows = [Row(server.prompt_ids("the"), 39), Row(server.prompt_ids(" ".join(["cat"] * 30)), 8)]
        assert [len(r.prompt_ids) + r.max_new_tokens for r in rows] == [40, 38]
        done = server.wait(server.start(resident, rows))  # raises for a row that failed
        assert len(done) == 2 and all(g.tokens for g in done)
    finally:
        server.close()


def test_a_chat_template_that_refuses_the_messages_is_a_400_with_its_words(served: dict[str, Any]) -> None:
    server: ModelServer = served["server"]
    template = server.tokenizer.chat_template
    server.tokenizer.chat_template = ("{% for m in messages %}{% if loop.index0 % 2 == 1 and m['role'] == 'user' %}"
                                      "{{ raise_exception('Conversation roles must alternate') }}{% endif %}"
                                      "{{ m['content'] }} {% endfor %}")
    try:
        with pytest.raises(openai.BadRequestError, match="refused the messages: Conversation roles must alternate"):
            oa(served).chat.completions.create(model="alice/gen0", max_tokens=2, messages=[
                {"role": "user", "content": "cat"}, {"role": "user", "content": "dog"}])
    finally:
        server.tokenizer.chat_template = template


def test_listings_show_only_what_the_caller_may_read_now(served: dict[str, Any]) -> None:
    """A version made private after it loaded leaves the listings of those who may not read it once it is
    requested again; nobody learns the projection family (its seed) of a private adapter from /v1/adapters."""
    server: ModelServer = served["server"]
    writer, reader = served["writer"], served["reader"]
    oa(served).completions.create(model="alice/secret", prompt="the cat", max_tokens=1)  # portable generator
    oa(served).completions.create(model="alice/gen1", prompt="the cat", max_tokens=1)
    theirs = httpx.get(f"{served['url']}/v1/adapters", headers={"Authorization": f"Bearer {reader}"}).json()
    mine = httpx.get(f"{served['url']}/v1/adapters", headers={"Authorization": f"Bearer {writer}"}).json()
    assert any(k.startswith("philox4x32-10") for k in mine["bytes_per_adapter"])  # alice/secret's family
    assert not any(k.startswith("philox4x32-10") for k in theirs["bytes_per_adapter"]) and theirs["bytes_per_adapter"]
    with RegistryClient(served["registry"], writer) as client:
        client.set_visibility("alice/gen1", "private")
        try:
            server.resolve_ttl_s = 0.0
            oa(served).completions.create(model="alice/gen1", prompt="the cat", max_tokens=1)
            assert "alice/gen1:1" not in {m.id for m in oa(served, "reader").models.list()}
            assert "alice/gen1:1" in {m.id for m in oa(served).models.list()}
        finally:
            server.resolve_ttl_s = 2.0
            client.set_visibility("alice/gen1", "public")


def test_a_body_trickled_byte_by_byte_is_cut_off_when_its_time_is_up() -> None:
    """A byte every half second never stalls 1 s, but the whole body must arrive within 1 s (the model server's
    BodyLimit: 60 s); before, each byte reset the clock and the connection was held for as long as it trickled."""
    app = FastAPI()

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    @app.post("/slow")
    def slow() -> StreamingResponse:  # answers for longer than the body may take to arrive
        def pieces() -> Iterator[bytes]:
            for i in range(5):
                time.sleep(0.5)
                yield f"{i}\n".encode()
        return StreamingResponse(pieces(), media_type="text/plain")

    with in_thread(BodyLimit(app, limit=1000, timeout_s=1.0)) as url:
        # the deadline ends with the body: a stream that outlasts it is not cut (a re-attack's finding: every
        # stream was dropped 60 s after its request began)
        assert httpx.post(f"{url}/slow", content=b"{}").text == "0\n1\n2\n3\n4\n"
        assert httpx.post(f"{url}/echo", content=b"x" * 10).json() == {"bytes": 10}
        answer, took = trickle(url, "/echo", b"x" * 100, every_s=0.5)
        assert answer.startswith(b"HTTP/1.1 408") and b"was not whole within 1 s" in answer
        assert took < 5


@pytest.mark.parametrize("stops", [(), ("ran",), ("far", "ünï")])
def test_text_is_decoded_a_few_tokens_at_a_time_and_never_shows_half_a_character(stops: tuple[str, ...]) -> None:
    """A byte-level BPE (GPT-2's kind, trained here on a few words) splits an emoji over several tokens: the
    streamed pieces never hold U+FFFD, add up to the answer, and the answer is the whole decode cut before the
    first stop string (RowState decodes only the last tokens at each step, not the whole row)."""
    from tokenizers import ByteLevelBPETokenizer

    from registry.serving.decode import RowState

    tokenizer = ByteLevelBPETokenizer()
    tokenizer.train_from_iterator(["the cat sat on the mat", "a dog ran far", "héllo wörld ünïcode"] * 5,
                                  vocab_size=300, min_frequency=1, show_progress=False)
    text = "the cat 😺 sat on the mat, héllo wörld 🐶 ran far ünïcode"
    ids = tokenizer.encode(text).ids
    assert tokenizer.decode(ids) == text and len(ids) > len(text.split())
    pieces: list[str] = []
    ended: dict[str, str] = {}
    row = Row([0], len(ids), stops=stops, on_text=pieces.append,
              on_end=lambda tokens, answer, reason: ended.update(text=answer, reason=reason))
    state = RowState(row, torch.device("cpu"), eos={-1}, decode=tokenizer.decode)
    for token in ids:
        if state.advance(token):
            break
    cut = min((text.find(s) for s in stops), default=len(text))
    assert ended == {"text": text[:cut], "reason": "stop" if stops else "length"}
    assert "".join(pieces) == text[:cut] and not any("\ufffd" in piece for piece in pieces) and len(pieces) > 5


def test_callers_take_turns_and_none_fills_the_queue_alone(served: dict[str, Any]) -> None:
    """A caller with many rows waiting delays another's by at most a row per turn (first in, first out kept the
    other waiting behind all of them), and may fill at most half of the queue."""
    from registry.domain.errors import Busy
    from registry.serving.server import _Waiting, _Work

    server = ModelServer(str(served["base"]), task="causal-lm", base_name="tiny-lm", max_batch=2,
                         batch_window_s=0.05, client_for=lambda token: RegistryClient(served["registry"], token or ""))
    try:
        resident = server.generator_for("alice/gen0", served["writer"])
        ids, finished = server.prompt_ids("the cat"), []
        with server.lock:  # the batcher takes its first window, then waits for the lock: everything queues
            many = server.start(resident, [Row(ids, 3) for _ in range(8)], "mallory")
            mine = server.start(resident, [Row(ids, 3)], "alice")
            for name, futures in (("mallory", many), ("alice", mine)):
                for future in futures:
                    future.add_done_callback(lambda _, name=name: finished.append(name))
            time.sleep(0.2)
        server.wait([*many, *mine])
        assert finished.index("alice") <= 3, finished  # the second batch at the latest, not the fifth
    finally:
        server.close()
    waiting = _Waiting(limit=4, per_caller=2)
    waiting.put("mallory", [_Work("generate", resident, Row(ids, 1)) for _ in range(2)])
    with pytest.raises(Busy, match="2 of them yours"):
        waiting.put("mallory", [_Work("generate", resident, Row(ids, 1))])
    waiting.put("alice", [_Work("generate", resident, Row(ids, 1)) for _ in range(2)])
    with pytest.raises(Busy, match="4 rows are waiting"):
        waiting.put("bob", [_Work("generate", resident, Row(ids, 1))])
    assert [waiting.get(0) is not None for _ in range(5)] == [True, True, True, True, False]


def test_a_failure_mid_batch_fails_the_streams_that_spoke_and_reruns_the_others(served: dict[str, Any]) -> None:
    """A row's consumer that raises after its first words fails the batch's generate mid-way: that row (its text
    already sent) gets the error, and each row that had sent nothing yet runs again alone and gets its own answer
    (a re-attack found the streamed row answered with no error at all once a rerun before it had succeeded)."""
    server: ModelServer = served["server"]
    resident = server.generator_for("alice/gen0", served["writer"])
    heard: list[str] = []

    def speaks_once(text: str) -> None:
        heard.append(text)
        if len(heard) > 1:
            raise RuntimeError("the consumer broke")

    quiet = [Row(server.prompt_ids("the"), 4), Row(server.prompt_ids("a dog"), 4)]  # shorter prompts: rerun first
    loud = Row(server.prompt_ids("the cat sits on the mat"), 8, on_text=speaks_once)
    alone = [server.wait(server.start(resident, [Row(r.prompt_ids, 4)]))[0].text for r in quiet]
    futures = server.start(resident, [*quiet, loud])
    assert [f.result(timeout=60).text for f in futures[:2]] == alone
    with pytest.raises(Exception, match="failed to generate this answer") as failed:
        futures[2].result(timeout=60)
    assert failed.value is not None and heard


def test_generation_config_auto_samples_with_the_bases_defaults_where_a_request_leaves_them_out(
        served: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """`--generation-config auto` (vLLM's): a base whose generation_config.json sets temperature 0.7 and top_k 5
    samples a request that leaves them out (or sends null) as one that sends them; a request's own values win;
    what the server does not do (repetition_penalty) is named in a warning. With none (the default), a request
    that leaves them out samples as OpenAI's defaults (temperature 1, all tokens). A value a request could not
    send is refused when the server starts, saying how to go on."""
    from transformers import GenerationConfig

    from registry.domain.errors import InvalidInput
    from tests.registry.tiny_lm import save_tiny_llama

    base = save_tiny_llama(tmp_path / "base")
    GenerationConfig(do_sample=True, temperature=0.7, top_k=5, repetition_penalty=1.2).save_pretrained(base)
    texts: dict[str, list[str]] = {}
    for mode in ("auto", "none"):
        with caplog.at_level("WARNING", logger="vera.serving"):
            server = ModelServer(str(base), task="causal-lm", base_name="tiny-lm", generation_config=mode,
                                 client_for=lambda token: RegistryClient(served["registry"], token or ""))
        try:
            with in_thread(create_serving_app(server), "the model server") as url:
                client = openai.OpenAI(base_url=f"{url}/v1", api_key=served["writer"], max_retries=0, timeout=60)
                asks = [{}, {"temperature": None, "top_k": None}, {"temperature": 0.7, "top_k": 5},
                        {"temperature": 1.0, "top_k": 0}, {"temperature": 0.7, "top_p": 1.0, "top_k": 5}]
                texts[mode] = [client.completions.create(model="alice/gen0", prompt="the cat", max_tokens=12,
                                                         seed=7, extra_body={k: v for k, v in ask.items()
                                                                             if k == "top_k"},
                                                         **{k: v for k, v in ask.items() if k != "top_k"}
                                                         ).choices[0].text for ask in asks]
        finally:
            server.close()
        assert server.sampling_defaults == ({"temperature": 0.7, "top_k": 5.0} if mode == "auto" else {})
    auto, plain = texts["auto"], texts["none"]
    assert auto[0] == auto[1] == auto[2] == auto[4] and auto[3] == plain[3]  # left out or null: the base's
    assert plain[0] == plain[1] == plain[3]  # none: OpenAI's defaults
    assert auto[2] != auto[3]  # the settings change this prompt's sampled text: the equalities above tell apart
    assert "repetition_penalty in generation_config.json are not applied" in caplog.text
    GenerationConfig(do_sample=True, temperature=3.0).save_pretrained(base)
    with pytest.raises(InvalidInput, match=r"sets temperature 3.0, outside .* --generation-config none"):
        ModelServer(str(base), task="causal-lm", generation_config="auto", client_for=lambda token: None)

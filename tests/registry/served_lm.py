"""A registry with adapters of a tiny Llama and `vera serve-model` serving them in OpenAI's API (the fixture
``served``, registered in conftest.py), and what the tests compare it with: each adapter loaded alone."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from registry.client import RegistryClient
from registry.serving.api import create_serving_app
from registry.serving.server import ModelServer
from tests.registry.adapters import make_adapter, make_model
from tests.registry.servers import in_thread, issued_tokens, running_server
from tests.registry.tiny_lm import save_tiny_llama
from vera_core import PEFT_GENERATOR, load_adapter, save_adapter

#: a chat template of the simplest kind (the tiny tokenizer's words only, so every message is plain tokens)
CHAT_TEMPLATE = ("{% for m in messages %}{{ m['content'] }} {% endfor %}"
                 "{% if add_generation_prompt %}the {% endif %}")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A registry (tokens required) with two adapters of a tiny Llama, one private, and one for another base; a
    model server for the tiny Llama (its tokenizer with a chat template) in OpenAI's API."""
    root = tmp_path_factory.mktemp("openai")
    base = save_tiny_llama(root / "base")
    tokenizer = AutoTokenizer.from_pretrained(base)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(base)
    url = f"sqlite:///{root / 'r.db'}"
    with running_server(url, root / "blobs", VERA_REQUIRE_TOKENS="true") as registry:
        writer, reader = issued_tokens(url, ("alice", ["read", "publish"]), ("bob", ["read"]))
        dirs = {}
        with RegistryClient(registry, writer) as client:
            for seed in range(2):
                dirs[seed] = make_adapter(root / f"gen{seed}", seed=seed, projection_generator=PEFT_GENERATOR)
                client.publish(dirs[seed], f"alice/gen{seed}", base_model="tiny-lm")
            client.publish(make_adapter(root / "secret", seed=5), "alice/secret", base_model="tiny-lm",
                           visibility="private")
            client.publish(make_adapter(root / "foreign", seed=6), "alice/foreign", base_model="org/other")
            huge = make_model(7, projection_generator=PEFT_GENERATOR)  # gen0's family: they share batches
            with torch.no_grad():
                for vector in huge.trainable_parameters().values():
                    vector.mul_(1e37)  # finite, so the registry takes it; its logits are not
            client.publish(save_adapter(huge, root / "huge"), "alice/huge", base_model="tiny-lm")
        server = ModelServer(str(base), task="causal-lm", base_name="tiny-lm", batch_window_s=0.2,
                             client_for=lambda token: RegistryClient(registry, token or ""))
        try:
            with in_thread(create_serving_app(server), "the model server") as serving:
                yield {"url": serving, "server": server, "base": base, "dirs": dirs, "writer": writer,
                       "reader": reader, "registry": registry}
        finally:
            server.close()


def oa(served: dict[str, Any], who: str = "writer") -> openai.OpenAI:
    """OpenAI's client for the model server, its api_key a registry token."""
    return openai.OpenAI(base_url=f"{served['url']}/v1", api_key=served[who], max_retries=0, timeout=60)


def alone(served: dict[str, Any], seed: int, prompt: str, max_new_tokens: int) -> list[int]:
    """Greedy tokens of adapter ``alice/gen{seed}`` loaded alone on the base, by transformers' own generate."""
    tokenizer = AutoTokenizer.from_pretrained(served["base"])
    model = load_adapter(AutoModelForCausalLM.from_pretrained(served["base"]), served["dirs"][seed]).eval()
    ids = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=1,
                                   eos_token_id=2)
    return [int(t) for t in out[0, ids["input_ids"].shape[1]:]]


def text_of(served: dict[str, Any], tokens: list[int], *, prompt: str) -> str:
    """The text ``tokens`` add after ``prompt``, as the whole decodes (the test tokenizer, as SentencePiece's, drops
    the space of the first token it decodes: decoded alone, the completion ran into the prompt)."""
    tokenizer = AutoTokenizer.from_pretrained(served["base"])
    ids = list(tokenizer(prompt)["input_ids"])
    head = str(tokenizer.decode(ids, skip_special_tokens=True))
    whole = str(tokenizer.decode(ids + [t for t in tokens if t != 2], skip_special_tokens=True))
    assert whole.startswith(head)
    return whole[len(head):]



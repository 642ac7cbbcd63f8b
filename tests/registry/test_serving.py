"""Serving many registry adapters on one base: real MiniLM (classification) and a tiny Llama with a real tokenizer
(generation), adapters fetched over HTTP from a real registry server with tokens required."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from registry.client import RegistryClient
from registry.domain.errors import Conflict, Forbidden, NotFound
from registry.services.tokens import Unauthorized
from registry.serving.server import ModelServer
from tests.registry.adapters import make_adapter
from tests.registry.servers import free_port, issued_tokens, running_server, running_vera
from tests.registry.test_api_docs import assert_docs_served_here
from vera_core import PEFT_GENERATOR, VeraConfig, VeraModel, load_adapter, save_adapter
from vera_core.recipes import resolve_base

TEXTS = ["a wonderful, joyful day", "terrible and sad news", "an ordinary table"]


def minilm_adapter(directory: Path, seed: int, *, prng_key: int = 0, r: int = 16) -> Path:
    """A MiniLM sequence-classification adapter with trained-looking vectors and head."""
    torch.manual_seed(seed)
    base = AutoModelForSequenceClassification.from_pretrained(resolve_base("minilm"), num_labels=2)
    model = VeraModel(base, VeraConfig(r=r, target_modules=["query", "value"], task_type="SEQ_CLS",
                                       projection_prng_key=prng_key, save_projection=False))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.trainable_parameters().values():
            p.add_(torch.randn(p.shape, generator=gen) * 0.2)
    return save_adapter(model.eval(), directory)


def reference_probs(adapter_dir: Path, texts: list[str]) -> torch.Tensor:
    """The adapter on its own, loaded the ordinary way: what a served request must equal."""
    path = resolve_base("minilm")
    model = load_adapter(AutoModelForSequenceClassification.from_pretrained(path, num_labels=2), adapter_dir).eval()
    enc = AutoTokenizer.from_pretrained(path)(texts, padding=True, truncation=True, max_length=256,
                                              return_tensors="pt")
    with torch.no_grad():
        return model(**enc).logits.softmax(-1)


@pytest.fixture(scope="module")
def registry_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("serving")
    url = f"sqlite:///{root / 'r.db'}"
    with running_server(url, root / "blobs", VERA_REQUIRE_TOKENS="true") as base:
        writer, reader, admin = issued_tokens(url, ("alice", ["read", "publish"]), ("bob", ["read"]),
                                              ("root", ["admin"]))
        dirs = {}
        with RegistryClient(base, writer) as client:
            for i in range(3):
                dirs[f"alice/clf{i}"] = minilm_adapter(root / f"clf{i}", seed=i)
                client.publish(dirs[f"alice/clf{i}"], f"alice/clf{i}", base_model="minilm",
                               metrics={"labels": ["negative", "positive"]})
            dirs["alice/clf0:2"] = minilm_adapter(root / "clf0-v2", seed=10)
            client.publish(dirs["alice/clf0:2"], "alice/clf0", base_model="minilm")
            client.set_alias("alice/clf0:1", "prod")
            dirs["alice/other-seed"] = minilm_adapter(root / "other", seed=4, prng_key=99)
            client.publish(dirs["alice/other-seed"], "alice/other-seed", base_model="minilm")
            client.publish(minilm_adapter(root / "foreign", seed=5), "alice/foreign", base_model="org/other-base")
            client.publish(make_adapter(root / "llama"), "alice/llama", base_model="minilm-b")
        yield {"url": base, "writer": writer, "reader": reader, "admin": admin, "dirs": dirs, "root": root}


@pytest.fixture
def server(registry_server: dict[str, Any]) -> Iterator[ModelServer]:
    made = ModelServer("minilm", client_for=lambda token: RegistryClient(registry_server["url"], token or ""),
                       max_resident=3, resolve_ttl_s=0.0)
    yield made
    made.close()


def test_concurrent_requests_for_different_adapters_batch_together_and_equal_each_adapter_alone(
    server: ModelServer, registry_server: dict[str, Any]
) -> None:
    token, dirs = registry_server["reader"], registry_server["dirs"]
    names = ["alice/clf0@prod", "alice/clf1", "alice/clf2:1", "alice/clf1"]
    results: dict[int, dict[str, Any]] = {}
    for name in set(names):  # load first, so that the concurrent requests below meet in one window
        server.activate(name, token)
    server.batch_window_s = 0.2
    threads = [threading.Thread(target=lambda i=i, n=n: results.__setitem__(i, server.classify(n, TEXTS, token)))
               for i, n in enumerate(names)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[i]["adapter"] for i in range(4)] == ["alice/clf0:1", "alice/clf1:1", "alice/clf2:1",
                                                        "alice/clf1:1"]
    for i, name in enumerate(["alice/clf0", "alice/clf1", "alice/clf2", "alice/clf1"]):
        want = reference_probs(dirs[name], TEXTS)
        got = torch.tensor([[p["scores"]["negative"], p["scores"]["positive"]] for p in results[i]["predictions"]])
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
        assert results[i]["predictions"][0]["label"] in ("negative", "positive")
    assert sum(r["requests"] for r in server.listing()) == 4


def test_adapters_hot_load_list_pin_evict_and_follow_an_alias(
    server: ModelServer, registry_server: dict[str, Any]
) -> None:
    token = registry_server["writer"]
    assert server.listing() == []
    server.classify("alice/clf0@prod", TEXTS[:1], token)
    (entry,) = server.listing()
    assert entry["ref"] == "alice/clf0:1" and entry["base_model"] == "minilm" and entry["load_s"] > 0
    server.pin("alice/clf1", token)
    server.classify("alice/clf2", TEXTS[:1], token)
    server.classify("alice/other-seed", TEXTS[:1], token)  # a 4th adapter, another family: the LRU unpinned goes
    resident = {e["ref"]: e for e in server.listing()}
    assert set(resident) == {"alice/clf1:1", "alice/clf2:1", "alice/other-seed:1"}
    assert resident["alice/clf1:1"]["pinned"] and resident["alice/other-seed:1"]["family"]["seed"] == 99
    assert len(server.banks) == 2
    with RegistryClient(registry_server["url"], token) as client:  # move the alias: the next request follows it
        client.set_alias("alice/clf0:2", "prod")
        try:
            assert server.classify("alice/clf0@prod", TEXTS[:1], token)["adapter"] == "alice/clf0:2"
        finally:
            client.set_alias("alice/clf0:1", "prod")
    server.evict("alice/clf1:1")
    assert "alice/clf1:1" not in {e["ref"] for e in server.listing()}
    with pytest.raises(NotFound, match="not loaded"):
        server.evict("alice/clf1:1")


def test_adapters_for_another_base_or_matching_no_module_are_refused(
    server: ModelServer, registry_server: dict[str, Any]
) -> None:
    token = registry_server["reader"]
    with pytest.raises(Conflict, match="published for base model 'org/other-base'; this server serves 'minilm'"):
        server.classify("alice/foreign", TEXTS, token)
    server.base_name = "minilm-b"  # the Llama adapter claims this base: its modules exist nowhere in MiniLM
    with pytest.raises(Conflict, match="does not fit the served base 'minilm-b'"):
        server.classify("alice/llama", TEXTS, token)
    assert server.listing() == [] and server.banks == {}


def test_pins_belong_to_the_adapters_writers_and_leave_room_for_the_unpinned(
    registry_server: dict[str, Any]
) -> None:
    """An outsider's attack: any reader could pin, unpin and evict anyone's adapters (evicting in a loop failed
    most of the owner's requests), and pinning four families locked every other family out for good."""
    writer, reader = registry_server["writer"], registry_server["reader"]
    server = ModelServer("minilm", client_for=lambda token: RegistryClient(registry_server["url"], token or ""),
                         max_resident=4, max_banks=2, resolve_ttl_s=0.0)
    try:
        server.classify("alice/clf1", TEXTS[:1], reader)
        for verb in (server.pin, server.unpin, server.evict_for):
            with pytest.raises(Forbidden, match="Only those who may publish under alice/"):
                verb("alice/clf1", reader)
        server.pin("alice/clf1", writer)
        with pytest.raises(Conflict, match="the last is kept for adapters nobody pinned"):
            server.pin("alice/other-seed", writer)  # another family: pins may not hold both banks
        server.pin("alice/clf2", writer)  # clf1's family
        with pytest.raises(Conflict, match="the most this server pins"):
            server.pin("alice/clf0", writer)  # half of --max-resident are pinned already
        server.base_name = "minilm-b"  # an adapter whose modules MiniLM lacks: refused, dropping no bank
        with pytest.raises(Conflict, match="does not fit the served base"):
            server.classify("alice/llama", TEXTS, reader)
        assert {e["ref"] for e in server.listing(writer)} >= {"alice/clf1:1", "alice/clf2:1", "alice/other-seed:1"}
        with pytest.raises(Conflict, match="unpin it first"):
            server.evict_for("alice/clf1", writer)
        assert server.unpin("alice/clf1", writer) == "alice/clf1:1"
        assert server.evict_for("alice/clf1", writer) == "alice/clf1:1"
        # pinned, then deleted from the registry: its name is a 404 to everyone, and a registry admin still
        # unpins and evicts the resident by its exact ref (it would hold a bank until a restart otherwise)
        server.base_name = "minilm"
        with RegistryClient(registry_server["url"], writer) as client:
            client.publish(minilm_adapter(registry_server["root"] / "gone", seed=8), "alice/gone", base_model="minilm")
            server.pin("alice/gone", writer)
            client.delete_adapter("alice/gone")
        with pytest.raises(NotFound):
            server.unpin("alice/gone:1", writer)
        assert server.unpin("alice/gone:1", registry_server["admin"]) == "alice/gone:1"
        assert server.evict_for("alice/gone:1", registry_server["admin"]) == "alice/gone:1"
    finally:
        server.close()


def test_requests_need_a_token_that_may_read_the_adapter(server: ModelServer,
                                                         registry_server: dict[str, Any]) -> None:
    with pytest.raises(Unauthorized, match="requires a token"):
        server.classify("alice/clf1", TEXTS, None)
    with pytest.raises(Unauthorized):
        server.classify("alice/clf1", TEXTS, "vera_not-a-token")
    assert server.classify("alice/clf1", TEXTS, registry_server["reader"])["adapter"] == "alice/clf1:1"


def test_a_private_adapter_is_served_and_listed_only_to_callers_who_may_read_it(
        server: ModelServer, registry_server: dict[str, Any], tmp_path: Path) -> None:
    writer, reader = registry_server["writer"], registry_server["reader"]
    with RegistryClient(registry_server["url"], writer) as client:
        client.publish(minilm_adapter(tmp_path / "private", seed=7), "alice/private-clf", base_model="minilm",
                       visibility="private")
    with pytest.raises(NotFound, match="No adapter alice/private-clf"):
        server.classify("alice/private-clf", TEXTS, reader)  # bob reads the registry, not alice's private adapters
    assert server.classify("alice/private-clf", TEXTS, writer)["adapter"] == "alice/private-clf:1"
    with pytest.raises(NotFound, match="No adapter alice/private-clf"):
        server.classify("alice/private-clf", TEXTS, reader)  # resident now, and still not for bob
    server.classify("alice/clf1", TEXTS, reader)
    assert {a["ref"] for a in server.listing(writer)} == {"alice/private-clf:1", "alice/clf1:1"}
    assert {a["ref"] for a in server.listing(reader)} == {"alice/clf1:1"}
    assert {a["ref"] for a in server.listing(None)} == {"alice/clf1:1"}


def test_vera_serve_model_over_http(registry_server: dict[str, Any]) -> None:
    port = free_port()
    args = ["serve-model", "--base", "minilm", "--port", str(port), "--registry", registry_server["url"]]
    with running_vera(args, port) as url:
        auth = {"Authorization": f"Bearer {registry_server['reader']}"}
        response = httpx.post(f"{url}/v1/classify", json={"adapter": "alice/clf2", "inputs": TEXTS}, headers=auth,
                              timeout=120)
        assert response.status_code == 200, response.text
        got = torch.tensor([[p["scores"]["negative"], p["scores"]["positive"]] for p in response.json()["predictions"]])
        torch.testing.assert_close(got, reference_probs(registry_server["dirs"]["alice/clf2"], TEXTS),
                                   rtol=1e-4, atol=1e-4)
        refused = httpx.post(f"{url}/v1/classify", json={"adapter": "alice/foreign", "inputs": TEXTS},
                             headers=auth, timeout=60)
        assert refused.status_code == 409 and "published for base model" in refused.json()["detail"]
        anonymous = httpx.post(f"{url}/v1/classify", json={"adapter": "alice/clf2", "inputs": TEXTS}, timeout=60)
        assert anonymous.status_code == 401
        assert httpx.post(f"{url}/v1/classify", json={"adapter": "alice/clf2", "inputs": []}, headers=auth,
                          timeout=60).status_code == 422
        owner = {"Authorization": f"Bearer {registry_server['writer']}"}
        for route in ("pin", "unpin", "evict"):  # what every caller of the server waits for: alice's to decide
            refused = httpx.post(f"{url}/v1/adapters/{route}", json={"adapter": "alice/clf1"}, headers=auth,
                                 timeout=60)
            assert refused.status_code == 403 and "may publish under alice/" in refused.json()["detail"], route
        pinned = httpx.post(f"{url}/v1/adapters/pin", json={"adapter": "alice/clf1"}, headers=owner, timeout=60)
        assert pinned.json() == {"ref": "alice/clf1:1", "pinned": True}
        still = httpx.post(f"{url}/v1/adapters/evict", json={"adapter": "alice/clf1"}, headers=owner, timeout=60)
        assert still.status_code == 409 and "unpin it first" in still.json()["detail"]
        listing = httpx.get(f"{url}/v1/adapters", timeout=10).json()
        assert {a["ref"] for a in listing["adapters"]} == {"alice/clf1:1", "alice/clf2:1"}
        assert listing["base_model"] == "minilm" and list(listing["bytes_per_adapter"].values())[0] > 0
        anonymous_evict = httpx.post(f"{url}/v1/adapters/evict", json={"adapter": "alice/clf2:1"}, timeout=10)
        assert anonymous_evict.status_code == 401
        evicted = httpx.post(f"{url}/v1/adapters/evict", json={"adapter": "alice/clf2:1"}, headers=owner, timeout=10)
        assert evicted.status_code == 200
        assert {a["ref"] for a in httpx.get(f"{url}/v1/adapters", timeout=10).json()["adapters"]} == {"alice/clf1:1"}
        assert_docs_served_here(url)  # its /docs and /redoc too need no CDN


def test_generation_batches_adapters_and_equals_each_alone(tmp_path: Path, registry_server: dict[str, Any]) -> None:
    from tests.registry.tiny_lm import save_tiny_llama

    base_dir = save_tiny_llama(tmp_path / "base")
    token = registry_server["writer"]
    dirs = []
    with RegistryClient(registry_server["url"], token) as client:
        for seed in range(2):
            dirs.append(make_adapter(tmp_path / f"gen{seed}", seed=seed, projection_generator=PEFT_GENERATOR))
            client.publish(dirs[-1], f"alice/gen{seed}", base_model="tiny-lm")
    server = ModelServer(str(base_dir), task="causal-lm", base_name="tiny-lm",
                         client_for=lambda t: RegistryClient(registry_server["url"], t or ""), batch_window_s=0.3)
    try:
        results: dict[int, dict[str, Any]] = {}
        for name in ("alice/gen0", "alice/gen1"):
            server.activate(name, token)
        prompts = ["the cat", "a dog runs far", "the cat"]
        threads = [threading.Thread(target=lambda i=i: results.__setitem__(
            i, server.generate(f"alice/gen{i % 2}", prompts[i], max_new_tokens=6, token=token))) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for i in range(3):
            alone = ModelServer(str(base_dir), task="causal-lm", base_name="tiny-lm",
                                client_for=lambda t: RegistryClient(registry_server["url"], t or ""))
            try:
                want = alone.generate(f"alice/gen{i % 2}", prompts[i], max_new_tokens=6, token=token)
            finally:
                alone.close()
            assert results[i]["tokens"] == want["tokens"] and len(want["tokens"]) == 6
        assert results[0]["tokens"] != results[1]["tokens"] or prompts[0] != prompts[1]
    finally:
        server.close()

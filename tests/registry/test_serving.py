"""Serving many registry adapters on one base: real MiniLM (classification) and a tiny Llama with a real tokenizer
(generation), adapters fetched over HTTP from a real registry server with tokens required."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from registry.client import RegistryClient
from registry.domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from registry.services.tokens import Unauthorized
from registry.serving import server as server_module
from registry.serving.server import ModelServer
from tests.registry.adapters import make_adapter
from tests.registry.servers import client_calls, free_port, issued_tokens, registry_in_thread, running_vera
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
    with registry_in_thread(url, root / "blobs", VERA_REQUIRE_TOKENS="true") as base:
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
    assert sum(r["requests"] for r in server.listing(token)) == 4


def test_more_adapters_in_use_than_max_resident_are_all_answered_and_the_idle_go_at_the_next_load(
    registry_server: dict[str, Any]
) -> None:
    """An inference engineer's walk (session 47): at --max-resident 2, 8 clients over 4 adapters had 38 of 48
    requests answered 409 "evicted meanwhile; send it again": a load evicted adapters whose requests were queued."""
    token, dirs = registry_server["reader"], registry_server["dirs"]
    names = ["alice/clf0@prod", "alice/clf0:2", "alice/clf1", "alice/clf2"]  # one family: one bank
    server = ModelServer("minilm", client_for=lambda t: RegistryClient(registry_server["url"], t or ""),
                         max_resident=2, resolve_ttl_s=0.0)
    server.batch_window_s = 0.05  # requests meet in batches: several adapters in use at once
    answered: list[tuple[str, dict[str, Any]]] = []
    failed: list[BaseException] = []

    def client(k: int) -> None:
        for i in range(6):
            name = names[(k + i) % len(names)]
            try:
                answered.append((name, server.classify(name, TEXTS[:1], token)))
            except Exception as exc:  # noqa: BLE001 - every failure is the finding
                failed.append(exc)

    try:
        threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert failed == [] and len(answered) == 48
        want = {name: reference_probs(dirs[{"alice/clf0@prod": "alice/clf0"}.get(name, name)], TEXTS[:1])
                for name in names}
        for name, result in answered:  # (clf0:2 was published without labels: its scores are by index)
            got = torch.tensor([list(p["scores"].values()) for p in result["predictions"]])
            torch.testing.assert_close(got, want[name], rtol=1e-4, atol=1e-4)
        # once idle, those past the bound go, without waiting for the next load (an outsider's finding)
        deadline = time.monotonic() + 10
        while len(server.residents) > 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(server.residents) == 2
        server.classify("alice/other-seed", TEXTS[:1], token)  # a load: the least recently used goes
        assert len(server.residents) == 2 and "alice/other-seed:1" in server.residents
        assert all(not r.holds for r in server.residents.values())  # every hold released
    finally:
        server.close()


def test_adapters_hot_load_list_pin_evict_and_follow_an_alias(
    server: ModelServer, registry_server: dict[str, Any]
) -> None:
    token = registry_server["writer"]
    assert server.listing(token) == []
    server.classify("alice/clf0@prod", TEXTS[:1], token)
    (entry,) = server.listing(token)
    assert entry["ref"] == "alice/clf0:1" and entry["base_model"] == "minilm" and entry["load_s"] > 0
    server.pin("alice/clf1", token)
    server.classify("alice/clf2", TEXTS[:1], token)
    server.classify("alice/other-seed", TEXTS[:1], token)  # a 4th adapter, another family: the LRU unpinned goes
    resident = {e["ref"]: e for e in server.listing(token)}
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
    assert "alice/clf1:1" not in {e["ref"] for e in server.listing(token)}
    with pytest.raises(NotFound, match="not loaded"):
        server.evict("alice/clf1:1")


def test_adapters_for_another_base_or_matching_no_module_are_refused(
    server: ModelServer, registry_server: dict[str, Any]
) -> None:
    token = registry_server["reader"]
    with pytest.raises(Conflict, match="published for base model 'org/other-base'; this server serves 'minilm'.* start "
                       "the server with --base-name org/other-base\\."):
        server.classify("alice/foreign", TEXTS, token)
    server.base_name = "minilm-b"  # the Llama adapter claims this base: its modules exist nowhere in MiniLM
    with pytest.raises(Conflict, match="does not fit the served base 'minilm-b'"):
        server.classify("alice/llama", TEXTS, token)
    assert server.listing(token) == [] and server.banks == {}


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
        # a pin, refused or not, queues no work: its claim went back (a refused pin's kept adapters loaded past
        # --max-resident: an outsider's finding)
        assert all(not r.claims for r in server.residents.values())
        server.base_name = "minilm-b"  # an adapter whose modules MiniLM lacks: refused, dropping no bank
        with pytest.raises(Conflict, match="does not fit the served base"):
            server.classify("alice/llama", TEXTS, reader)
        assert {e["ref"] for e in server.listing(writer)} >= {"alice/clf1:1", "alice/clf2:1", "alice/other-seed:1"}
        with pytest.raises(Conflict, match="unpin it first"):
            server.evict_for("alice/clf1", writer)
        assert server.unpin("alice/clf1", writer) == "alice/clf1:1"
        assert server.evict_for("alice/clf1", writer) == "alice/clf1:1"
        # pinned, then deleted from the registry: its name is a 404 to everyone, and its pinner and a registry
        # admin still unpin and evict the resident by its exact ref (it would hold a bank until a restart otherwise;
        # an outsider's pins of deleted adapters held banks no one but an admin could free)
        server.base_name = "minilm"
        with RegistryClient(registry_server["url"], writer) as client:
            client.publish(minilm_adapter(registry_server["root"] / "gone", seed=8), "alice/gone", base_model="minilm")
            server.pin("alice/gone", writer)
            client.delete_adapter("alice/gone")
        for who in (reader, writer):
            with pytest.raises(NotFound):
                server.unpin("alice/gone", who)  # its name resolves to nothing: the exact ref is asked for
        with pytest.raises(NotFound):
            server.unpin("alice/gone:1", reader)  # not bob's pin
        assert server.unpin("alice/gone:1", writer) == "alice/gone:1"
        # and it is listed no more, to its owner either (a re-check's finding): the registry has it no more
        assert "alice/gone:1" not in {e["ref"] for e in server.listing(writer)}
        assert server.evict_for("alice/gone:1", registry_server["admin"]) == "alice/gone:1"
    finally:
        server.close()


def test_a_resident_whose_adapter_moved_is_listed_under_its_name_now(registry_server: dict[str, Any]) -> None:
    """After `vera mv`, a resident loaded under the adapter's old name leaves the listings (the listing's lookup
    does not follow the move: that name names nothing now), and a request under the old name is served by the
    adapter under its new name (the client follows the move, as for any read), listed as such."""
    writer = registry_server["writer"]
    server = ModelServer("minilm", client_for=lambda token: RegistryClient(registry_server["url"], token or ""),
                         resolve_ttl_s=0.0)

    def listed() -> set[str]:
        return {e["ref"] for e in server.listing(writer)}

    try:
        with RegistryClient(registry_server["url"], writer) as client:
            client.publish(minilm_adapter(registry_server["root"] / "moving", seed=9), "alice/moving",
                           base_model="minilm")
            assert server.classify("alice/moving", TEXTS[:1], writer)["adapter"] == "alice/moving:1"
            assert "alice/moving:1" in listed()
            client.move("alice/moving", "alice/moved")
        assert "alice/moving:1" not in listed()
        assert server.classify("alice/moving:1", TEXTS[:1], writer)["adapter"] == "alice/moved:1"
        assert "alice/moved:1" in listed() and "alice/moving:1" not in listed()
    finally:
        server.close()


def test_one_users_pins_hold_one_bank_and_an_admins_more(registry_server: dict[str, Any]) -> None:
    """An outsider pinned three projection families of its own on a server of four banks: three copies of the base
    for good, and every other caller's families sharing the last bank (a 2-token request waited 3.7 s instead of
    0.27). One user's pins hold at most --pinned-banks-per-user banks (1); registry admins' as all pins together."""
    writer, admin = registry_server["writer"], registry_server["admin"]
    server = ModelServer("minilm", client_for=lambda token: RegistryClient(registry_server["url"], token or ""),
                         max_resident=8, max_banks=4, resolve_ttl_s=0.0)
    try:
        server.pin("alice/clf1", writer)
        server.pin("alice/clf2", writer)  # the same family: the same bank
        with pytest.raises(Conflict, match=r"Your pins hold 1 of this server's banks, the most one user's pins may "
                                           r"\(--pinned-banks-per-user 1; each is a copy of the base\): "
                                           r"alice/other-seed:1 is of another projection family"):
            server.pin("alice/other-seed", writer)
        assert server.pin("alice/other-seed", admin).pinned_by == "root"
        assert {(e["ref"], e["pinned"]) for e in server.listing(writer)} >= {
            ("alice/clf1:1", True), ("alice/clf2:1", True), ("alice/other-seed:1", True)}
    finally:
        server.close()


def test_requests_need_a_token_that_may_read_the_adapter(server: ModelServer,
                                                         registry_server: dict[str, Any]) -> None:
    with pytest.raises(Unauthorized, match="requires a token"):
        server.classify("alice/clf1", TEXTS, None)
    with pytest.raises(Unauthorized):
        server.classify("alice/clf1", TEXTS, "vera_not-a-token")
    assert server.classify("alice/clf1", TEXTS, registry_server["reader"])["adapter"] == "alice/clf1:1"


def counts(calls: dict[str, list[tuple[Any, ...]]]) -> dict[str, int]:
    """How many calls of each method were made (client_calls' lists), those made."""
    return {method: len(made) for method, made in calls.items() if made}


def test_a_private_adapter_is_served_and_listed_only_to_callers_who_may_read_it(
        server: ModelServer, registry_server: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
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
    # a caller the registry does not know reads nothing there (tokens required), and nothing here: an outsider
    # listed the residents (names, requests, families) anonymously and with a junk token
    assert server.listing(None) == [] and server.listing("vera_junk") == []
    # made private after it loaded: listed to bob no more at his next listing, though nobody asked for it (it was
    # listed to everyone until a request of it was refused), and still to alice; public again, listed again;
    # deleted, listed to nobody. Each listing asks the registry once for all residents whose answer is older than
    # resolve_ttl_s (0 here), not once each
    asked = {method: client_calls(monkeypatch, method) for method in ("lookup", "get")}
    with RegistryClient(registry_server["url"], writer) as client:
        client.publish(minilm_adapter(tmp_path / "later", seed=9), "alice/later", base_model="minilm")
        server.classify("alice/later", TEXTS, reader)
        client.set_visibility("alice/later", "private")
        for made in asked.values():
            made.clear()
        assert {a["ref"] for a in server.listing(reader)} == {"alice/clf1:1"}
        assert counts(asked) == {"lookup": 1}  # three residents, one question
        assert {a["ref"] for a in server.listing(writer)} == {"alice/private-clf:1", "alice/clf1:1", "alice/later:1"}
        client.set_visibility("alice/later", "public")
        assert {a["ref"] for a in server.listing(reader)} == {"alice/clf1:1", "alice/later:1"}
        client.delete("alice/later:1")
        assert "alice/later:1" not in {a["ref"] for a in server.listing(writer)}
        assert {a["ref"] for a in server.listing(reader)} == {"alice/clf1:1"}


def test_a_token_that_may_not_read_lists_what_a_caller_without_one_does(
        server: ModelServer, registry_server: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """A publish-only token reads nothing in the registry: its listings are a caller's without a token (here, with
    tokens required, none), and asked of the registry once per resolve_ttl_s, not once per listing (an outsider's
    finding, session 36: one refused lookup per listing, and the public residents shown)."""
    [publisher] = issued_tokens(f"sqlite:///{registry_server['root'] / 'r.db'}", ("carol", ["publish"]))
    server.classify("alice/clf1", TEXTS, registry_server["reader"])
    server.resolve_ttl_s = 60.0
    asked = {method: client_calls(monkeypatch, method) for method in ("lookup", "get", "whoami")}
    try:
        assert [server.listing(publisher) for _ in range(5)] == [[]] * 5
    finally:
        server.resolve_ttl_s = 0.0
    assert counts(asked) == {"whoami": 2}, asked  # the token's, then a caller's without one: each once


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
        # one text alone, as HuggingFace's inference API takes it: a list of one (a newcomer's walk, session 33)
        one = httpx.post(f"{url}/v1/classify", json={"adapter": "alice/clf2", "inputs": TEXTS[0]}, headers=auth,
                         timeout=60)
        assert one.status_code == 200 and one.json()["predictions"] == response.json()["predictions"][:1], one.text
        owner = {"Authorization": f"Bearer {registry_server['writer']}"}
        for route in ("pin", "unpin", "evict"):  # what every caller of the server waits for: alice's to decide
            refused = httpx.post(f"{url}/v1/adapters/{route}", json={"adapter": "alice/clf1"}, headers=auth,
                                 timeout=60)
            assert refused.status_code == 403 and "may publish under alice/" in refused.json()["detail"], route
        pinned = httpx.post(f"{url}/v1/adapters/pin", json={"adapter": "alice/clf1"}, headers=owner, timeout=60)
        assert pinned.json() == {"ref": "alice/clf1:1", "pinned": True}
        still = httpx.post(f"{url}/v1/adapters/evict", json={"adapter": "alice/clf1"}, headers=owner, timeout=60)
        assert still.status_code == 409 and "unpin it first" in still.json()["detail"]
        assert httpx.get(f"{url}/v1/adapters", timeout=10).json()["adapters"] == []  # tokens required: none, none
        listing = httpx.get(f"{url}/v1/adapters", headers=auth, timeout=10).json()
        assert {a["ref"] for a in listing["adapters"]} == {"alice/clf1:1", "alice/clf2:1"}
        assert listing["base_model"] == "minilm" and list(listing["bytes_per_adapter"].values())[0] > 0
        anonymous_evict = httpx.post(f"{url}/v1/adapters/evict", json={"adapter": "alice/clf2:1"}, timeout=10)
        assert anonymous_evict.status_code == 401
        evicted = httpx.post(f"{url}/v1/adapters/evict", json={"adapter": "alice/clf2:1"}, headers=owner, timeout=10)
        assert evicted.status_code == 200
        assert {a["ref"] for a in httpx.get(f"{url}/v1/adapters", headers=auth, timeout=10).json()["adapters"]} \
            == {"alice/clf1:1"}
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


@pytest.mark.parametrize("text", ["!" * 20_000, "hello world " * 1_700, " " * 19_990 + "good", "a" * 20_000,
                                  "a short one", "ünïcödé 日本語 " * 900, "!" * 2_050, ""],
                         ids=["one-token-chars", "words", "spaces-then-a-word", "one-long-word", "short", "unicode",
                              "just-past-the-prefix", "empty"])
def test_a_classified_text_is_read_as_its_whole_text_truncated_tokenizing_only_what_it_needs(
        server: ModelServer, text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ids classified are those of the whole text truncated to 256 tokens, whatever the text; a long text's
    tokenizer calls see a prefix only (an outsider's 256 texts of 20,000 one-token characters were tokenized whole
    in the batcher and held every other caller for 10 to 36 s)."""
    seen: list[int] = []
    real = type(server.tokenizer).__call__

    def counting(self: Any, text: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(len(text))
        return real(self, text, *args, **kwargs)

    want = server.tokenizer(text, truncation=True, max_length=256)["input_ids"]
    monkeypatch.setattr(type(server.tokenizer), "__call__", counting)
    assert server._classify_ids(text) == want
    if text.startswith("!"):
        assert max(seen) <= 4_096, seen  # 256 tokens need 256 of its 20,000 characters: 2,048 then 4,096
    assert len(seen) == len(set(seen)), seen  # each prefix tokenized once (a long text's last one was twice)


def test_a_tokenizer_whose_specials_cannot_be_added_after_truncation_is_asked_twice(server: ModelServer) -> None:
    """The one-pass reading needs the tokenizer's truncation from the right and its special tokens built as its
    own truncation builds them; otherwise the text is tokenized again, truncated by the tokenizer itself."""
    import copy

    specials = server._classify_specials
    assert specials == ((101,), (102,))  # MiniLM's [CLS] ... [SEP]
    left = copy.deepcopy(server.tokenizer)
    left.truncation_side = "left"
    assert server_module._specials_added_alike(left) is None
    text = "!" * 5_000
    want = server.tokenizer(text, truncation=True, max_length=256)["input_ids"]
    server._classify_specials = None
    try:
        assert server._classify_ids(text) == want
    finally:
        server._classify_specials = specials


def test_a_request_of_more_texts_than_a_forward_takes_is_answered_in_several(
        server: ModelServer, registry_server: dict[str, Any]) -> None:
    """max_batch bounds a classify forward's rows too: 7 texts with max_batch 3 go in three forwards, each text
    scored as the adapter alone scores it."""
    texts = [*TEXTS, "the end", "a glorious win", "a dreadful loss", "neutral words"]
    server.max_batch = 3
    calls: list[int] = []
    token = registry_server["reader"]
    bank = server.banks[server.activate("alice/clf1", token).bank]
    real = type(bank).__call__
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(type(bank), "__call__", lambda self, names, **kw: (calls.append(len(names)),
                                                                         real(self, names, **kw))[1])
        result = server.classify("alice/clf1", texts, token)
    assert calls == [3, 3, 1]
    got = torch.tensor([[p["scores"]["negative"], p["scores"]["positive"]] for p in result["predictions"]])
    torch.testing.assert_close(got, reference_probs(registry_server["dirs"]["alice/clf1"], texts), rtol=1e-4,
                               atol=1e-4)


def test_a_classify_forward_holds_at_most_classify_tokens(server: ModelServer,
                                                         registry_server: dict[str, Any]) -> None:
    """classify_tokens bounds a forward's texts x its longest text (a text alone may hold more): another caller's
    text waits for one such forward at most (64 texts of 256 tokens were one forward, 4 to 6 s on a CPU, and the
    smaller forwards were faster in all). Each text is scored as the adapter alone scores it."""
    texts = ["short", "a little longer than that", "short", "short", "short", "the longest text of them all, by far"]
    lengths = [len(server._classify_ids(text)) for text in texts]
    server.classify_tokens = 3 * lengths[0]  # three short texts in a forward; a longer one alone
    calls: list[list[int]] = []
    token = registry_server["reader"]
    bank = server.banks[server.activate("alice/clf1", token).bank]
    real = type(bank).__call__

    def recording(self: Any, names: Any, input_ids: torch.Tensor, **kw: Any) -> Any:
        calls.append(list(input_ids.shape))
        return real(self, names, input_ids=input_ids, **kw)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(type(bank), "__call__", recording)
        result = server.classify("alice/clf1", texts, token)
        server.classify_tokens = None
        server.classify("alice/clf1", texts, token)
    short, longer, longest = lengths[0], lengths[1], lengths[-1]
    assert 2 * longer > 3 * short and 2 * longest > 3 * short, lengths  # the texts are what this test needs
    assert calls == [[1, short], [1, longer], [3, short], [1, longest], [6, longest]], (calls, lengths)
    got = torch.tensor([[p["scores"]["negative"], p["scores"]["positive"]] for p in result["predictions"]])
    torch.testing.assert_close(got, reference_probs(registry_server["dirs"]["alice/clf1"], texts), rtol=1e-4,
                               atol=1e-4)


def test_a_request_cancelled_during_its_forward_never_fails_anothers(
        server: ModelServer, registry_server: dict[str, Any]) -> None:
    """Two callers' texts in one forward; the first caller's request is cancelled during it (its client gone, or
    its time up): the second gets its answer. Before, setting the cancelled one's result raised, and that error
    went to every request of the forward as a 500 (an outsider's finding)."""
    token = registry_server["reader"]
    first, second = (server.activate(name, token) for name in ("alice/clf1", "alice/clf2"))
    server.batch_window_s = 0.5
    bank = server.banks[first.bank]
    real, futures = type(bank).__call__, []

    def cancelling(self: Any, names: Any, **kw: Any) -> Any:
        futures[0].cancel()
        return real(self, names, **kw)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(type(bank), "__call__", cancelling)
        futures += [server.start_classify("alice/clf1", TEXTS[:1], token),
                    server.start_classify("alice/clf2", TEXTS[1:], token)]
        answer = futures[1].result(timeout=60)
    assert futures[0].cancelled() and answer["adapter"] == "alice/clf2:1" and len(answer["predictions"]) == 2
    assert second.requests == 1


def test_the_queue_counts_a_classify_requests_texts_as_rows() -> None:
    """--max-queue counts rows, a classify request's texts each (it counted a request of 256 texts as one: an
    outsider's share of the queue held 131,000 texts); a caller's share frees as its rows are taken."""
    from registry.serving.server import Busy, _Waiting, _Work

    queue = _Waiting(10, per_caller=6)
    resident: Any = None
    queue.put("bob", [_Work("classify", resident, [[1]] * 4)])
    with pytest.raises(Busy, match=r"4 rows are waiting .*4 of them yours; at most 10, 6 of one caller's; this "
                                   r"request has 3"):
        queue.put("bob", [_Work("classify", resident, [[1]] * 3)])
    queue.put("carol", [_Work("classify", resident, [[1]] * 6)])
    with pytest.raises(Busy, match="10 rows are waiting"):
        queue.put("dave", [_Work("generate", resident, None)])
    assert queue.get(0) is not None  # bob's 4
    queue.put("bob", [_Work("classify", resident, [[1]] * 3), _Work("generate", resident, None)])
    # a request that could never fit is no 503 to retry, whenever it came (a docs audit, session 53)
    with pytest.raises(InvalidInput, match=r"This request has 7 rows .* at most 6 waiting on this model server \(of "
                                           r"its --max-queue 10\): send at most 6 a request"):
        _Waiting(10, per_caller=6).put("erin", [_Work("classify", resident, [[1]] * 7)])


def test_the_queues_turn_is_the_caller_served_longest_ago() -> None:
    """Callers with rows waiting take turns; one who arrives while another's row is being worked on goes before
    that caller's next row (it went after: behind an outsider's 64-text forwards another caller's one text waited
    for two of them), and a caller whose rows all went and who sends again at once gets no fresh turn."""
    from registry.serving.server import _Waiting, _Work

    queue = _Waiting(100, per_caller=50)
    resident: Any = None

    def work(name: str) -> _Work:
        return _Work("classify", resident, [[1]])

    made = {name: work(name) for name in ("m1", "m2", "m3", "v1", "a1", "a2", "b1", "b2")}
    names = {id(w): name for name, w in made.items()}

    def taken(count: int) -> list[str]:
        return [names[id(queue.get(0))] for _ in range(count)]

    queue.put("mallory", [made["m1"], made["m2"]])
    assert taken(1) == ["m1"]  # being worked on, mallory's next waiting
    queue.put("victim", [made["v1"]])
    assert taken(2) == ["v1", "m2"]
    queue.put("victim", [made["a1"], made["a2"]])
    queue.put("mallory", [made["m3"]])  # mallory was served last, and comes back at once: after the victim
    queue.put("bob", [made["b1"], made["b2"]])  # never served: first
    assert taken(5) == ["b1", "a1", "m3", "b2", "a2"]
    assert queue.get(0) is None


def test_a_classify_client_that_hangs_up_takes_its_texts_out_of_the_queue(
        server: ModelServer, registry_server: dict[str, Any]) -> None:
    """A client that closes its connection while its texts wait: they are never classified (before, every such
    request was worked through and logged 200 for nobody: an outsider queued costly ones and hung up)."""
    import json
    from urllib.parse import urlsplit

    from registry.serving.api import create_serving_app
    from tests.registry.servers import in_thread

    token = registry_server["reader"]
    resident = server.activate("alice/clf1", token)
    server.batch_window_s = 1.5  # the texts wait that long for company: time for the client to go
    with in_thread(create_serving_app(server), "the model server") as url:
        body = json.dumps({"adapter": "alice/clf1", "inputs": TEXTS}).encode()
        where = urlsplit(url)
        with socket.create_connection((where.hostname, where.port)) as client:
            client.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           + f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
            time.sleep(0.3)
        time.sleep(2.0)
        assert resident.requests == 0  # skipped, not classified
        answered = httpx.post(f"{url}/v1/classify", json={"adapter": "alice/clf1", "inputs": TEXTS},
                              headers={"Authorization": f"Bearer {token}"}, timeout=60)
    assert answered.status_code == 200 and resident.requests == 1


def test_callers_take_turns_between_the_forwards_of_a_long_classify_request(
        server: ModelServer, registry_server: dict[str, Any]) -> None:
    """A request of more texts than a forward takes queues a forward's worth at a time, so another caller's request
    goes between two of its forwards (an outsider's 256 texts ran as four forwards in a row, another caller waiting
    7 s for all of them); the long request's answer is its texts' in order, counted as one request."""
    bob, carol = registry_server["writer"], registry_server["reader"]
    long_one, short_one = server.activate("alice/clf1", bob), server.activate("alice/clf2", carol)
    server.max_batch = 2
    bank = server.banks[long_one.bank]
    real, order, carol_queued = type(bank).__call__, [], threading.Event()

    def recording(self: Any, names: Any, **kw: Any) -> Any:
        carol_queued.wait(30)  # the first forward waits until carol's request is queued
        order.append(names[0])
        return real(self, names, **kw)

    texts = [*TEXTS, "the end", "a glorious win", "a dreadful loss", "neutral words", "more words"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(type(bank), "__call__", recording)
        long_future = server.start_classify("alice/clf1", texts, bob)
        short_future = server.start_classify("alice/clf2", TEXTS[:1], carol)
        carol_queued.set()
        long_answer, short_answer = long_future.result(timeout=60), short_future.result(timeout=60)
    # carol's text goes right after the forward that was running when it came (it went after the next one too)
    assert order.index("alice/clf2:1") == 1 and order.count("alice/clf1:1") == 4, order
    assert short_answer["adapter"] == "alice/clf2:1" and long_one.requests == 1 and short_one.requests == 1
    got = torch.tensor([[p["scores"]["negative"], p["scores"]["positive"]] for p in long_answer["predictions"]])
    torch.testing.assert_close(got, reference_probs(registry_server["dirs"]["alice/clf1"], texts), rtol=1e-4,
                               atol=1e-4)


def test_a_window_takes_only_what_fits_one_forward_and_answers_each_request_after_its_own(
        server: ModelServer, registry_server: dict[str, Any]) -> None:
    """A caller's one text is answered once its own forward is done: another caller's texts that would not fit in
    that forward (max_batch rows) wait for the next (they went in its window, and an outsider's 64-text works kept
    another caller's one text waiting for their forwards, about 8 s); a caller's texts go in order."""
    carol, bob = registry_server["reader"], registry_server["writer"]
    short_one, long_one = server.activate("alice/clf2", carol), server.activate("alice/clf1", bob)
    server.max_batch, server.batch_window_s = 2, 0.5
    bank = server.banks[long_one.bank]
    real, seen, futures = type(bank).__call__, [], []

    def recording(self: Any, names: Any, **kw: Any) -> Any:
        seen.append((list(names), futures[0].done()))
        return real(self, names, **kw)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(type(bank), "__call__", recording)
        futures.append(server.start_classify("alice/clf2", TEXTS[:1], carol))
        futures.append(server.start_classify("alice/clf1", TEXTS, bob))
        short_answer, long_answer = (f.result(timeout=60) for f in futures)
    assert seen == [(["alice/clf2:1"], False), (["alice/clf1:1"] * 2, True), (["alice/clf1:1"], True)], seen
    assert len(short_answer["predictions"]) == 1 and len(long_answer["predictions"]) == 3
    assert short_one.requests == 1 and long_one.requests == 1


def test_labels_that_name_an_output_twice_give_way_to_indices() -> None:
    """A version's `labels` metric names the outputs when it names each once; a name given twice (or a count that
    is not the head's) falls back to the indices, so that no score is lost (a dict kept one of two)."""
    from types import SimpleNamespace

    from registry.serving.server import _classified

    probs = torch.tensor([[0.2, 0.5, 0.3]])
    for labels, want in ((["neg", "pos", "mixed"], ["neg", "pos", "mixed"]), (["neg", "pos", "pos"], ["0", "1", "2"]),
                         (["neg", "pos"], ["0", "1", "2"])):
        answer = _classified(SimpleNamespace(ref="a/b:1", labels=labels), probs)  # type: ignore[arg-type]
        [prediction] = answer["predictions"]
        assert list(prediction["scores"]) == want and prediction["label"] == want[1], answer
        assert sum(prediction["scores"].values()) == pytest.approx(1.0)


def test_an_adapter_whose_scores_are_not_numbers_is_refused_saying_so(
        server: ModelServer, registry_server: dict[str, Any], tmp_path: Path) -> None:
    """Vectors that overflow on the base (x 1e30) gave NaN: answered 200 with null scores and a label picked among
    them (an outsider's finding). Refused now, naming the text; other adapters' answers are as before."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    folder = minilm_adapter(tmp_path / "huge", seed=11)
    weights_file = folder / "adapter_model.safetensors"
    with safe_open(weights_file, "pt") as handle:
        metadata, weights = handle.metadata(), {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    save_file({k: v * 1e30 if "vera_lambda" in k else v for k, v in weights.items()}, weights_file, metadata=metadata)
    with RegistryClient(registry_server["url"], registry_server["writer"]) as client:
        client.publish(folder, "alice/huge", base_model="minilm")
    with pytest.raises(Conflict, match=r"alice/huge:1 gave scores that are not finite numbers for text 0 \(its "
                                       r"vectors overflow on this base\): it cannot classify it"):
        server.classify("alice/huge", TEXTS[:2], registry_server["reader"])
    assert server.classify("alice/clf1", TEXTS[:2], registry_server["reader"])["adapter"] == "alice/clf1:1"


def test_ready_says_when_the_registry_that_resolves_every_request_does_not_answer(
        server: ModelServer, registry_server: dict[str, Any]) -> None:
    """An inference engineer's walk (session 47): with the registry stopped every request failed with a 503 while
    /health said ok, so a load balancer kept sending them. /ready says so; /health stays the process's liveness."""
    from registry.serving.api import create_serving_app
    from tests.registry.servers import in_thread

    server.activate("alice/clf1", registry_server["reader"])
    with in_thread(create_serving_app(server), "the model server") as url:
        up = httpx.get(f"{url}/ready")
        assert up.status_code == 200 and up.json() == {"status": "ready", "registry": "ok", "base_model": "minilm"}
        assert httpx.head(f"{url}/ready").status_code == 200  # HEAD too, as on the registry
        nowhere = f"http://127.0.0.1:{free_port()}"
        server.client_for = lambda token: RegistryClient(nowhere, token or "")
        assert httpx.get(f"{url}/ready").status_code == 200  # the answer is kept a few seconds: not asked again
        server._registry_seen = server_module._Recent(1)  # (as once READY_TTL_S has passed)
        down = httpx.get(f"{url}/ready")
        assert down.status_code == 503 and down.headers["retry-after"] == "5"
        assert down.json()["status"] == "not ready" and f"Cannot reach the registry at {nowhere}" in \
            down.json()["registry"]
        assert httpx.get(f"{url}/health").json()["status"] == "ok"
        # a registry that takes connections and never answers: one question at a time, within READY_TIMEOUT_S
        # (each probe held a thread for minutes, and enough of them every thread: an outsider's finding)
        accepted: list[socket.socket] = []
        with socket.create_server(("127.0.0.1", 0)) as hung:
            hung.settimeout(0.2)
            stop = threading.Event()

            def take() -> None:
                while not stop.is_set():
                    with suppress(TimeoutError):
                        accepted.append(hung.accept()[0])

            taker = threading.Thread(target=take)
            taker.start()
            server.client_for = lambda token: RegistryClient(f"http://127.0.0.1:{hung.getsockname()[1]}", "")
            server._registry_seen = server_module._Recent(1)
            started = time.monotonic()
            with ThreadPoolExecutor(8) as pool:
                probes = list(pool.map(lambda _: httpx.get(f"{url}/ready", timeout=30), range(8)))
            stop.set()
            taker.join()
        assert time.monotonic() - started < server_module.READY_TIMEOUT_S + 5
        assert [p.status_code for p in probes] == [503] * 8 and len(accepted) == 1
        for conn in accepted:
            conn.close()


def test_the_requests_waiting_on_the_registry_are_bounded(server: ModelServer, registry_server: dict[str, Any]
                                                          ) -> None:
    """An outsider's re-check (session 47): anonymous /v1/models against a registry that hung held a thread each,
    until no route had one (/tokenize included). Past REGISTRY_QUESTIONS waiting, a request is told to retry."""
    from registry.domain.errors import Busy

    token = registry_server["reader"]
    server._questions = threading.BoundedSemaphore(1)
    server._questions.acquire()  # one request waiting on the registry: the bound, here
    try:
        with pytest.raises(Busy, match="requests waiting on its registry already .* retry in a few seconds"):
            server.classify("alice/clf1", TEXTS[:1], token)
    finally:
        server._questions.release()
    assert server.classify("alice/clf1", TEXTS[:1], token)["adapter"] == "alice/clf1:1"

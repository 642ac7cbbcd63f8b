"""The HTTP API through a real server and the real client (and the `vera` commands that use it)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch
from pydantic import SecretStr
from sqlalchemy import event

from registry.api.metrics import COUNTS_TTL_S, StoreGauges
from registry.client import RegistryClient, RegistryUnavailable
from registry.client import load_adapter as load_adapter_from_registry
from registry.domain.errors import InvalidInput, NotFound
from registry.domain.schemas import JOB_STATUSES, FileManifest, StoreCounts
from registry.services.derived import FileForm
from registry.services.registry import Registry
from registry.services.tokens import Forbidden, Unauthorized, create_token, revoke_token
from registry.settings import Settings
from registry.store.database import Database
from tests.commands import wide_vera as vera
from tests.registry.adapters import LLAMA, make_adapter, make_model, peft_logits, vera_logits
from tests.registry.servers import free_port, in_thread, registry_in_thread, running_server
from vera_core import PEFT_GENERATOR, export_lora, load_adapter, read_adapter, save_adapter
from vera_core.keys import PROJECTION_KEYS

Clients = Callable[..., RegistryClient]
#: The secured server's VERA_METRICS_TOKEN.
METRICS_TOKEN = "metrics-0123456789abcdef"


@pytest.fixture
def clients() -> Iterator[Clients]:
    """Makes clients and closes them all after the test."""
    made: list[RegistryClient] = []

    def make(url: str, token: str | None = None) -> RegistryClient:
        made.append(RegistryClient(url, token))
        return made[-1]

    yield make
    for client in made:
        client.close()


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("local")
    with registry_in_thread(f"sqlite:///{root / 'r.db'}", root / "blobs", VERA_MAX_UPLOAD_BYTES="65536") as url:
        yield url, root


def test_publish_fetch_verify_through_the_cli(clients: Clients, local: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = local
    source = make_adapter(tmp_path / "src", seed=3)
    (tmp_path / "metrics.json").write_text(json.dumps({"final_eval": {"accuracy": 0.9}, "test": {"accuracy": 0.88}}))
    result = vera("publish", str(source), "--name", "cli/demo", "--base-model", "tiny-llama", "--tag", "demo",
                  "--metrics", str(tmp_path / "metrics.json"), "--registry", url)
    assert result.returncode == 0, result.stderr
    assert "published cli/demo:1" in result.stdout and "seed-reproducible" in result.stdout
    listing = vera("ls", "--owner", "cli", "--registry", url)
    assert "cli/demo:1" in listing.stdout and "latest" in listing.stdout
    fetched = vera("fetch", "cli/demo@latest", "--out", str(tmp_path / "out"), "--registry", url)
    assert fetched.returncode == 0, fetched.stderr
    # the default is what PEFT loads correctly: this portable-generator adapter comes with its A and B
    assert read_adapter(tmp_path / "out").tensors.keys() == read_adapter(source).tensors.keys() | set(PROJECTION_KEYS)
    torch.testing.assert_close(peft_logits(tmp_path / "out"), vera_logits(load_adapter(LLAMA.make(), source)),
                               rtol=0, atol=5e-7)
    seed_only = vera("fetch", "cli/demo", "--seed-only", "--out", str(tmp_path / "seed-only"), "--registry", url)
    assert seed_only.returncode == 0, seed_only.stderr
    assert read_adapter(tmp_path / "seed-only").tensors.keys() == read_adapter(source).tensors.keys()
    with pytest.raises(KeyError, match="PEFT cannot load this adapter"):
        peft_logits(tmp_path / "seed-only")
    both = vera("fetch", "cli/demo", "--seed-only", "--with-projection", "--out", str(tmp_path / "x"),
                "--registry", url)
    assert both.returncode == 1 and "contradict each other" in both.stderr and not (tmp_path / "x").exists()
    verified = vera("verify", "cli/demo", "--registry", url)
    assert verified.returncode == 0 and "cli/demo:1: passed" in verified.stdout
    assert vera("alias", "cli/demo:1", "prod", "--registry", url).stdout.strip() == "cli/demo@prod -> 1"
    client = clients(url)
    assert client.get("cli/demo@prod").metrics == {"final_eval": {"accuracy": 0.9}, "test": {"accuracy": 0.88}}
    missing = vera("fetch", "cli/nothing", "--out", str(tmp_path / "x"), "--registry", url)
    assert missing.returncode == 1 and "No adapter cli/nothing" in missing.stderr and "Traceback" not in missing.stderr


@pytest.mark.parametrize("generator", ["portable", PEFT_GENERATOR])
def test_every_default_download_is_what_peft_loads_correctly(
    clients: Clients, local: tuple[str, Path], tmp_path: Path, generator: str
) -> None:
    """The raw file route without options, and the client's fetch and download, as a PEFT user takes them."""
    url, _ = local
    model = make_model(seed=6, **({"projection_generator": generator} if generator != "portable" else {}))
    client = clients(url)
    info = client.publish(save_adapter(model, tmp_path / "src"), f"peft/{generator[:8]}", base_model="tiny-llama")
    want = vera_logits(model)
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        response = httpx.get(f"{url}/api/v1/adapters/{info.owner}/{info.name}/versions/1/files/{name}")
        assert response.status_code == 200, response.text
        (raw / name).write_bytes(response.content)
    torch.testing.assert_close(peft_logits(raw), want, rtol=0, atol=5e-7)
    torch.testing.assert_close(peft_logits(client.fetch(info.ref, tmp_path / "fetched")), want, rtol=0, atol=5e-7)
    assert client.download(info.ref, "adapter_model.safetensors") == (raw / "adapter_model.safetensors").read_bytes()
    seed_only = client.fetch(info.ref, tmp_path / "seed-only", seed_only=True)
    torch.testing.assert_close(vera_logits(load_adapter(LLAMA.make(), seed_only)), want, rtol=0, atol=5e-7)
    files = f"{url}/api/v1/adapters/{info.owner}/{info.name}/versions/1/files"
    assert httpx.get(files, params={"projection": "true"}).status_code == 200  # that form built: both still refused
    for asked in (files, f"{files}/adapter_config.json"):  # (until 2026-12-06 its files answered once it was built)
        for method in ("GET", "HEAD"):
            refused = httpx.request(method, asked, params={"projection": "true", "seed_only": "true"})
            assert refused.status_code == 422, (asked, method, refused.status_code)
            if method == "GET":
                assert "not both" in refused.text
                assert "projection=true" in refused.json()["detail"]  # the parameter's name, not the client's


def test_downloads_carry_an_etag_and_honour_conditional_requests(
    clients: Clients, local: tuple[str, Path], tmp_path: Path
) -> None:
    url, _ = local
    client = clients(url)
    client.publish(make_adapter(tmp_path / "a", seed=4), "etag/a", base_model="tiny-llama")
    path = f"{url}/api/v1/adapters/etag/a/versions/1/files/adapter_model.safetensors"
    first = httpx.get(path)
    assert first.status_code == 200 and first.headers["etag"] == f'"{hashlib.sha256(first.content).hexdigest()}"'
    assert httpx.get(path).content == first.content  # byte-for-byte stable
    assert httpx.get(path, headers={"If-None-Match": first.headers["etag"]}).status_code == 304
    small = httpx.get(path, params={"seed_only": "true"})
    assert len(small.content) < len(first.content) and small.headers["etag"] != first.headers["etag"]
    client.fetch("etag/a:1", tmp_path / "full", with_projection=True)
    assert read_adapter(tmp_path / "full").has_projection


def test_a_version_lists_its_files_and_serves_each_by_hash_for_good(
    clients: Clients, local: tuple[str, Path], tmp_path: Path
) -> None:
    """One request lists a download form's files with sizes and SHA-256; each file's hash-addressed URL answers the
    same bytes as the download by name, immutable, 304 for a caller that holds it."""
    url, _ = local
    clients(url).publish(make_adapter(tmp_path / "a", seed=5), "hashed/a", base_model="tiny-llama")
    for params in ({}, {"seed_only": "true"}, {"format": "lora", "max_rank": "2"}):
        listing = httpx.get(f"{url}/api/v1/adapters/hashed/a/versions/latest/files", params=params)
        assert listing.status_code == 200, listing.text
        manifest = listing.json()
        assert manifest["version"]["ref"] == "hashed/a:1"
        assert [f["name"] for f in manifest["files"]] == ["adapter_config.json", "adapter_model.safetensors",
                                                          "README.md"]
        for entry in manifest["files"]:
            assert entry["url"] == f"/api/v1/adapters/hashed/a/versions/1/blobs/{entry['sha256']}"
            by_hash = httpx.get(url + entry["url"])
            by_name = httpx.get(f"{url}/api/v1/adapters/hashed/a/versions/1/files/{entry['name']}", params=params)
            assert by_hash.status_code == by_name.status_code == 200
            assert by_hash.content == by_name.content and len(by_hash.content) == entry["size"]
            assert hashlib.sha256(by_hash.content).hexdigest() == entry["sha256"]
    # options of another form are refused, not ignored (max_rank without format=lora answered the VeRA files: an
    # outsider's finding, session 33)
    for params, said in (({"max_rank": "2"}, "max_rank, dtype and for shape a LoRA export: add format=lora"),
                         ({"dtype": "bfloat16"}, "add format=lora"), ({"for": "vllm"}, "add format=lora"),
                         ({"format": "lora", "projection": "true"}, "a LoRA export (format=lora) has no A and B"),
                         ({"format": "lora", "seed_only": "true"}, "has no A and B"),
                         # an unknown parameter is refused too: `?as=lora`, the CLI's option, answered VeRA files
                         ({"as": "lora"}, "does not take the query parameter 'as'; it takes dtype, for, format")):
        for path in ("files", "files/adapter_model.safetensors"):
            refused = httpx.get(f"{url}/api/v1/adapters/hashed/a/versions/1/{path}", params=params)
            assert refused.status_code == 422 and said in refused.json()["detail"], (params, refused.text)
            assert by_hash.headers["etag"] == by_name.headers["etag"] == f'"{entry["sha256"]}"'
            assert "immutable" in by_hash.headers["cache-control"]
            assert "must-revalidate" in by_name.headers["cache-control"]  # a name can mean new bytes at an alias
            assert httpx.get(url + entry["url"], headers={"If-None-Match": by_hash.headers["etag"]}
                             ).status_code == 304
        if params.get("format") == "lora":
            assert float(by_name.headers["x-vera-lora-max-relative-error"]) >= 0
    wrong = httpx.get(f"{url}/api/v1/adapters/hashed/a/versions/1/blobs/{'0' * 64}")
    assert wrong.status_code == 404 and "has no file with SHA-256" in wrong.json()["detail"]
    assert httpx.get(f"{url}/api/v1/adapters/hashed/a/versions/1/blobs/not-a-hash").status_code == 422


@pytest.mark.parametrize(("path", "query", "said"), [
    # session 45's findings: /orgs and /invitations ignored what they did not know; every route kept the last of a
    # repeated value
    ("/api/v1/orgs", "limt=5", "GET /api/v1/orgs does not take the query parameter 'limt'; it takes"),
    ("/api/v1/invitations", "everything=1", "does not take the query parameter 'everything'"),
    ("/api/v1/events", "limit=2&limit=3", "The query gives 'limit' more than once"),
    ("/api/v1/adapters", "owner=a&owner=b", "The query gives 'owner' more than once"),
    ("/api/v1/adapters", "ownr=a&sort=-created", "it takes base_model, cursor, filter"),
    ("/api/v1/whoami", "x=1", "it takes none"),
])
def test_a_query_parameter_a_route_does_not_take_or_given_twice_is_refused(
        local: tuple[str, Path], path: str, query: str, said: str) -> None:
    answer = httpx.get(f"{local[0]}{path}?{query}")
    assert answer.status_code == 422 and said in answer.json()["detail"], answer.text
    assert httpx.get(f"{local[0]}{path}").status_code == 200  # without it: answered


def test_a_file_list_gives_small_files_inline_and_its_digest_to_head(
    clients: Clients, local: tuple[str, Path], tmp_path: Path
) -> None:
    """``inline=N`` puts the bytes of each file of at most N bytes into the list (base64; the others keep only their
    URL); HEAD answers the list's pinned version and digest without a body, from the first request on."""
    url, _ = local
    client = clients(url)
    client.publish(make_adapter(tmp_path / "a", seed=8), "inlined/a", base_model="tiny-llama")
    lists = f"{url}/api/v1/adapters/inlined/a/versions/latest/files"
    head = httpx.head(lists, params={"format": "lora"})  # a form nobody asked for yet: HEAD builds it too
    assert head.status_code == 200 and head.content == b"" and head.headers["x-vera-version"] == "inlined/a:1"
    plain = httpx.get(lists, params={"format": "lora"})
    assert plain.headers["x-vera-files"] == head.headers["x-vera-files"]
    assert "content" not in plain.text  # without inline the list is as it always was
    manifest = FileManifest.model_validate_json(plain.content)
    assert manifest.digest == head.headers["x-vera-files"]
    sizes = sorted(f.size for f in manifest.files)
    cut = sizes[0]  # the config inline, the weights not (a LoRA export without max_rank has no README)
    partly = httpx.get(lists, params={"format": "lora", "inline": cut})
    inlined = FileManifest.model_validate_json(partly.content)
    assert inlined.digest == manifest.digest
    # the GET's own query checked by HEAD: the same headers (inline was a 422 until 2026-12-06)
    same = httpx.head(lists, params={"format": "lora", "inline": cut})
    assert same.status_code == 200 and same.headers["x-vera-files"] == partly.headers["x-vera-files"]
    # the server writes the list's JSON itself (the inline text from its file cache): exactly pydantic's JSON
    assert plain.text == manifest.model_dump_json(exclude={"files": {"__all__": {"content"}}})
    assert partly.text == inlined.model_dump_json() and '"content":null' in partly.text
    assert httpx.get(lists, params={"format": "lora", "inline": cut}).content == partly.content
    assert sorted(f.content is None for f in inlined.files) == [False, True]
    for entry in inlined.files:
        by_hash = httpx.get(url + entry.url).content
        if entry.size <= cut:
            assert entry.content is not None and base64.b64decode(entry.content) == by_hash
        else:
            assert entry.content is None
    assert httpx.get(lists, params={"inline": 1 << 21}).status_code == 422  # at most 1 MiB
    everything = FileManifest.model_validate_json(httpx.get(lists, params={"inline": 1 << 20}).content)
    assert all(f.content is not None for f in everything.files)
    assert httpx.head(f"{url}/api/v1/adapters/inlined/nothing/versions/latest/files").status_code == 404
    assert httpx.head(f"{url}/api/v1/adapters/inlined/a/versions/9/files").status_code == 404


def test_errors_are_problem_details(clients: Clients, local: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = local
    response = httpx.get(f"{url}/api/v1/adapters/nobody/none/versions/latest")
    assert response.status_code == 404 and response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == "/problems/not_found" and body["status"] == 404
    assert "No adapter nobody/none" in body["detail"]
    bad = httpx.get(f"{url}/api/v1/adapters", params={"limit": 0})
    assert bad.status_code == 422 and "limit" in bad.json()["detail"]
    client = clients(url)
    with pytest.raises(InvalidInput, match="Owner 'bad owner' is not a valid name"):
        client.publish(make_adapter(tmp_path / "a"), "bad owner/x", base_model="b")
    client.publish(make_adapter(tmp_path / "own"), "errors/a", base_model="tiny-llama")  # its own: run alone too
    with pytest.raises(NotFound, match="has no version 9"):
        client.get("errors/a:9")
    big = tmp_path / "big"
    save_adapter(make_model(), big)
    (big / "adapter_model.safetensors").write_bytes(b"\0" * 70_000)
    with pytest.raises(InvalidInput, match="exceeds the upload limit of 65,536 bytes"):
        client.publish(big, "limits/big", base_model="b")
    with pytest.raises(RegistryUnavailable, match="Cannot reach the registry"):
        clients(f"http://127.0.0.1:{free_port()}").get("a/b")


def test_a_missing_version_or_alias_is_said_with_those_there_are(clients: Clients, local: tuple[str, Path],
                                                                   tmp_path: Path) -> None:
    """A new user's walk (session 23): "has no version 9" and "has no alias 'staging'" said nothing of what there
    is, and owner/name:prod was only "not an adapter reference": now the versions or aliases are named, and an
    alias written after ':' is shown written after '@'."""
    url, _ = local
    client = clients(url)
    for seed in (1, 2):
        client.publish(make_adapter(tmp_path / f"m{seed}", seed=seed), "said/a", base_model="b")
    client.set_alias("said/a:1", "prod")
    with pytest.raises(NotFound, match=r"^said/a has no version 9; its versions: 1, 2\.$"):
        client.get("said/a:9")
    with pytest.raises(NotFound, match=r"^said/a has no alias 'staging'; its aliases: latest, prod\. An alias is "
                                       r"set with `vera alias said/a:N staging`\.$"):  # how (a newcomer's walk)
        client.get("said/a@staging")
    with pytest.raises(InvalidInput, match=r"An alias follows '@': said/a@prod\.$"):
        client.get("said/a:prod")
    # the Hub's revision "v2" written after ':' is version 2, not an alias v2 (a newcomer's walk, session 38)
    with pytest.raises(InvalidInput, match=r"A version is a number after ':': said/a:2\.$"):
        client.get("said/a:v2")
    with pytest.raises(NotFound, match=r"^said/a has no alias 'prdo'; its aliases: latest, prod\. Did you mean "
                                       r"said/a@prod\?$"):  # a typo: the close alias named
        client.get("said/a@prdo")
    # a space, or capitals (names are lowercase: no alias is called Prod), named as what is wrong, not the name
    with pytest.raises(InvalidInput, match=r"^'said/a @prod' holds a space: a reference has none\. Did you mean "
                                           r"said/a@prod\?$"):
        client.get("said/a @prod")
    with pytest.raises(InvalidInput, match=r"^'said/a@Prod' has capital letters \(alias 'Prod'\): names are "
                                           r"lowercase, so no alias is called that\. Did you mean said/a@prod\?$"):
        client.get("said/a@Prod")
    with pytest.raises(InvalidInput, match=r"An alias follows '@': said/a@prod\.$"):  # lowercase, as names are
        client.get("said/a:Prod")
    with pytest.raises(InvalidInput, match=r"^Adapter name 'a b' is not a valid name"):  # inside a name: its own
        client.get("said/a b")


def test_health_ready_and_metrics(local: tuple[str, Path]) -> None:
    url, _ = local
    assert httpx.get(f"{url}/ready").json() == {"ready": True, "checks": {"database": "ok", "storage": "ok"},
                                                "read_only": False, "writes": "ok"}
    assert httpx.get(f"{url}/api/v1/adapters/nobody/nothing/versions/1").status_code == 404
    assert httpx.get(f"{url}/no/such/route").status_code == 404
    # the server's address says where things are (a bare 404: a newcomer's walk, session 40), each of them there
    where = httpx.get(url).json()
    assert where["service"] == "vera-registry" and where["docs"] == "/docs"
    for path in ("docs", "openapi", "health"):
        assert httpx.get(f"{url}{where[path]}").status_code == 200, path
    assert httpx.get(f"{url}{where['api']}/adapters").status_code == 200
    text = httpx.get(f"{url}/metrics").text
    assert "vera_versions " in text and "vera_stored_bytes " in text
    assert 'vera_jobs{status="queued"}' in text and "vera_busy_workers " in text  # the queue, for alerts
    # counted by route template (never the path a caller sent), method and status
    assert 'vera_http_requests_total{method="GET",route="/ready",status="200"}' in text
    assert ('vera_http_requests_total{method="GET",route="/api/v1/adapters/{owner}/{name}/versions/{selector}",'
            'status="404"}') in text
    assert 'vera_http_requests_total{method="GET",route="unmatched",status="404"}' in text
    assert 'vera_http_request_seconds_count{method="GET",route="/ready"}' in text
    # the process's own, as any service's (an operator's walk, session 48: none)
    assert "process_resident_memory_bytes " in text and "process_cpu_seconds_total " in text
    assert "process_start_time_seconds " in text and 'python_info{' in text


def test_openapi_lists_every_route(local: tuple[str, Path]) -> None:
    url, _ = local
    paths = httpx.get(f"{url}/openapi.json").json()["paths"]
    assert {"/api/v1/adapters", "/api/v1/adapters/{owner}/{name}/versions",
            "/api/v1/adapters/{owner}/{name}/versions/{selector}/files/{filename}", "/api/v1/compare",
            "/api/v1/adapters/{owner}/{name}/aliases/{alias}", "/api/v1/base-models",
            "/api/v1/projections"} <= set(paths)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Database]]:
    root = tmp_path_factory.mktemp("secured")
    url = f"sqlite:///{root / 'r.db'}"
    with registry_in_thread(url, root / "blobs", VERA_REQUIRE_TOKENS="true", VERA_ANONYMOUS_READ="true",
                            VERA_METRICS_TOKEN=METRICS_TOKEN) as server:
        db = Database(url)
        yield server, db
        db.engine.dispose()


def test_tokens_scopes_and_namespaces(clients: Clients, secured: tuple[str, Database], tmp_path: Path) -> None:
    url, db = secured
    source = make_adapter(tmp_path / "a")
    with pytest.raises(Unauthorized, match="requires a token: .*for the CLI, `vera login` once, or VERA_TOKEN"):
        clients(url).publish(source, "alice/x", base_model="b")
    assert clients(url).list_versions().items == []  # anonymous read is on
    _, reader = create_token(db, owner="alice", scopes=["read"])
    # how to get one: a token makes only tokens of its scopes, so a registry admin for a reader (it was told only
    # `vera auth create-token --scope publish`, which its token is refused: a PEFT user's walk, session 47)
    with pytest.raises(Forbidden, match="'publish' is needed: use a token that has it .* or ask a registry admin for "
                                        "one \\(`vera token create --owner alice --scope publish` on the registry's"):
        clients(url, reader).publish(source, "alice/x", base_model="b")
    token_id, writer = create_token(db, owner="alice", scopes=["read", "publish"])
    assert clients(url, writer).publish(source, "alice/x", base_model="b").ref == "alice/x:1"
    with pytest.raises(Forbidden, match="cannot write under bob/: this token writes under alice/"):
        clients(url, writer).publish(source, "bob/x", base_model="b")
    _, admin = create_token(db, owner="ops", scopes=["admin"])
    assert clients(url, admin).publish(source, "bob/x", base_model="b").ref == "bob/x:1"
    revoke_token(db, token_id)
    with pytest.raises(Unauthorized, match="unknown or revoked"):
        clients(url, writer).publish(source, "alice/x", base_model="b")
    with pytest.raises(Unauthorized):
        clients(url, "vera_made_up").get("alice/x")
    response = httpx.get(f"{url}/api/v1/adapters", headers={"Authorization": "Basic abc"})
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"


def test_a_metrics_token_keeps_metrics_to_the_scraper_that_has_it(secured: tuple[str, Database]) -> None:
    url, db = secured
    _, admin = create_token(db, owner="ops", scopes=["admin"])
    for headers in ({}, {"Authorization": f"Bearer {admin}"}, {"Authorization": f"Bearer {METRICS_TOKEN[:-1]}x"},
                    {"Authorization": f"Basic {METRICS_TOKEN}"}):
        refused = httpx.get(f"{url}/metrics", headers=headers)
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer", refused.text
        assert "VERA_METRICS_TOKEN" in refused.json()["detail"] and "vera_versions" not in refused.text
    scraped = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert scraped.status_code == 200 and "vera_versions " in scraped.text
    assert 'vera_http_requests_total{method="GET",route="/metrics",status="401"} 4.0' in scraped.text
    assert httpx.get(f"{url}/ready").status_code == 200  # probes need no token


def test_store_gauges_count_at_most_once_per_interval(registry: Registry, tmp_path: Path) -> None:
    """However often /metrics is scraped, the registry's totals (a scan of every version and blob) are read once per
    COUNTS_TTL_S; a scrape after that interval sees what was published meanwhile."""
    now = [0.0]
    gauges = StoreGauges(registry.status, clock=lambda: now[0])
    queries: list[str] = []
    event.listen(registry.db.engine, "before_cursor_execute", lambda *args: queries.append(args[2]))
    assert gauges.counts().versions == 0 and len(queries) == 5  # adapters, versions, bytes, jobs, busy workers
    registry.publish(make_adapter(tmp_path / "a"), owner="ops", name="a", base_model="b")
    queries.clear()
    now[0] = COUNTS_TTL_S - 0.1
    assert [gauges.counts().versions for _ in range(50)] == [0] * 50 and queries == []
    now[0] = COUNTS_TTL_S
    assert gauges.counts() == StoreCounts(adapters=1, versions=1, stored_bytes=registry.status.counts().stored_bytes,
                                          jobs=dict.fromkeys(JOB_STATUSES, 0))
    assert gauges.counts().stored_bytes > 0


def test_two_api_replicas_behave_as_one_registry(clients: Clients, tmp_path: Path) -> None:
    """Scale-out: two processes, one PostgreSQL database, one storage folder; concurrent publishes and fetches."""
    import uuid

    import psycopg

    name = f"vera_scale_{uuid.uuid4().hex[:10]}"
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
            with running_server(url, tmp_path / "blobs") as a, running_server(url, tmp_path / "blobs") as b:
                sources = [make_adapter(tmp_path / f"s{i}", seed=i) for i in range(8)]
                errors: list[BaseException] = []

                def publish(i: int) -> None:
                    try:
                        clients(a if i % 2 else b).publish(sources[i], "team/shared", base_model="tiny-llama")
                    except BaseException as exc:  # noqa: BLE001 - asserted below
                        errors.append(exc)

                threads = [threading.Thread(target=publish, args=(i,)) for i in range(8)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                assert errors == []
                versions = clients(a).list_versions(owner="team").items
                assert sorted(v.version for v in versions) == list(range(1, 9))
                for v in versions:
                    one = clients(a).download(v.ref, "adapter_model.safetensors")
                    two = clients(b).download(v.ref, "adapter_model.safetensors")
                    assert one == two and hashlib.sha256(one).hexdigest()
                assert clients(b).get("team/shared").version == 8
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_end_to_end_into_vera_core_and_peft(clients: Clients, local: tuple[str, Path], tmp_path: Path) -> None:
    """publish -> list -> fetch -> verify -> load into a model; PEFT loads what was fetched with projections."""
    from peft import PeftModel

    from tests.conftest import output_of
    from tests.registry.adapters import LLAMA
    from vera_core import load_adapter

    url, _ = local
    model = make_model(seed=11)
    source = save_adapter(model, tmp_path / "src")
    client = clients(url)
    client.publish(source, "e2e/llama", base_model="tiny-llama", metrics={"accuracy": 0.5})
    assert [v.ref for v in client.list_versions(owner="e2e").items] == ["e2e/llama:1"]
    client.fetch("e2e/llama", tmp_path / "seed-only")
    client.fetch("e2e/llama", tmp_path / "full", with_projection=True)
    assert client.verify("e2e/llama").status == "passed"
    inputs = LLAMA.inputs()
    want = output_of(model, inputs)
    torch.testing.assert_close(output_of(load_adapter(LLAMA.make(), tmp_path / "seed-only"), inputs), want,
                               rtol=0, atol=0)
    peft_model = PeftModel.from_pretrained(LLAMA.make(), tmp_path / "full").eval()
    torch.testing.assert_close(output_of(peft_model, inputs), want, rtol=1e-5, atol=1e-5)


def test_fetch_as_lora_loads_in_peft_as_a_lora(clients: Clients, local: tuple[str, Path], tmp_path: Path) -> None:
    from peft import PeftModel

    from tests.conftest import output_of
    from tests.registry.adapters import LLAMA

    url, _ = local
    model = make_model(seed=21)
    clients(url).publish(save_adapter(model, tmp_path / "src"), "lora/llama", base_model="tiny-llama")
    result = vera("fetch", "lora/llama", "--as", "lora", "--out", str(tmp_path / "lora"), "--registry", url)
    assert result.returncode == 0, result.stderr
    assert "(LoRA, r = lora_alpha = 8, exact)" in result.stdout  # which LoRA it is (a newcomer's walk, session 38)
    assert json.loads((tmp_path / "lora/adapter_config.json").read_text())["peft_type"] == "LORA"
    lora = PeftModel.from_pretrained(LLAMA.make(), tmp_path / "lora").eval()
    inputs = LLAMA.inputs()
    torch.testing.assert_close(output_of(lora, inputs), output_of(model, inputs), rtol=1e-5, atol=1e-5)
    # a seed-only fetch keeps the layer sizes, so the LoRA export also works offline from the fetched copy
    clients(url).fetch("lora/llama", tmp_path / "fetched")
    export_lora(tmp_path / "fetched", tmp_path / "lora2")
    assert (tmp_path / "lora2/adapter_model.safetensors").read_bytes() == (
        tmp_path / "lora/adapter_model.safetensors").read_bytes()
    readme = httpx.get(f"{url}/api/v1/adapters/lora/llama/versions/1/files/README.md", params={"format": "lora"})
    assert readme.status_code == 404 and "has no README.md" in readme.json()["detail"]


def test_one_line_load_from_the_registry_with_a_cache(
    clients: Clients, local: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = local
    model = make_model(seed=9)
    client = clients(url)
    info = client.publish(save_adapter(model, tmp_path / "src"), "oneline/m", base_model="tiny-llama")
    client.set_alias(info.ref, "prod")
    monkeypatch.setenv("VERA_CACHE_DIR", str(tmp_path / "cache"))
    loaded = load_adapter_from_registry(LLAMA.make(), "oneline/m@prod", registry=url)
    torch.testing.assert_close(vera_logits(loaded), vera_logits(model), rtol=0, atol=0)
    [cached] = (tmp_path / "cache" / "adapters").glob("*/oneline/m/1")  # under a key of the registry's URL
    assert not read_adapter(cached).has_projection  # seed-only: A and B regenerated here, fingerprint checked

    def offline(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("the cached version was downloaded again")

    monkeypatch.setattr(RegistryClient, "download", offline)
    monkeypatch.setattr(RegistryClient, "_download_once", offline)  # what fetch streams files with
    again = client.load_adapter(LLAMA.make(), "oneline/m:1")
    torch.testing.assert_close(vera_logits(again), vera_logits(model), rtol=0, atol=0)


def test_base_shapes_declared_over_http_let_seed_only_peft_adapters_publish(
    clients: Clients, local: tuple[str, Path], tmp_path: Path
) -> None:
    """`vera publish --base-config` and `vera base register` over HTTP: no administrator, no database access."""
    from tests.vera_core.test_peft_interop import peft_model, train_a_little

    url, _ = local
    theirs = peft_model(LLAMA, seed=13, save_projection=False)
    train_a_little(theirs, LLAMA)
    theirs.save_pretrained(tmp_path / "peft")
    config = LLAMA.make().config
    config.save_pretrained(tmp_path / "base")
    refused = vera("publish", str(tmp_path / "peft"), "--name", "remote/p", "--base-model", "llama-remote",
                   "--registry", url)
    assert refused.returncode == 1 and "declare its base model's layer shapes first" in refused.stderr
    published = vera("publish", str(tmp_path / "peft"), "--name", "remote/p", "--base-model", "llama-remote",
                     "--base-config", str(tmp_path / "base" / "config.json"), "--registry", url)
    assert published.returncode == 0 and "published remote/p:1" in published.stdout, published.stderr
    client = clients(url)
    torch.testing.assert_close(peft_logits(client.fetch("remote/p:1", tmp_path / "fetched")),
                               theirs(**LLAMA.inputs()).logits.detach(), rtol=0, atol=5e-7)
    again = vera("base", "register", "llama-other", "--config", str(tmp_path / "base" / "config.json"),
                 "--registry", url)
    assert again.returncode == 0 and "registered llama-other@default: 14 layers, declared (new)" in again.stdout
    for body, message in (({}, "no model_type"), ({"model_type": "no-such-arch"}, "Unrecognized model identifier"),
                          ({**config.to_dict(), "num_hidden_layers": 10**9}, "num_hidden_layers=1000000000")):
        response = httpx.post(f"{url}/api/v1/base-models", json={"name": "bad", "config": body})
        assert response.status_code == 422 and message in response.json()["detail"], response.text
    assert "bad" not in {b.name for b in client.base_models()}


def test_rank_capped_lora_exports_for_serving_engines(clients: Clients, local: tuple[str, Path],
                                                      tmp_path: Path) -> None:
    from peft import PeftModel

    url, _ = local
    model = make_model(seed=3)  # r = 8
    client = clients(url)
    info = client.publish(save_adapter(model, tmp_path / "src"), "lora/cap", base_model="tiny-llama")
    done = vera("fetch", info.ref, "--as", "lora", "--max-rank", "4", "--dtype", "bfloat16", "--out",
                str(tmp_path / "k4"), "--registry", url)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "k4" / "adapter_config.json").read_text())["r"] == 4
    assert "(LoRA, r = lora_alpha = 4 of the adapter's 8: --max-rank 4; the best rank-4 approximation; errors per " \
           "layer in its README.md)" in " ".join(done.stdout.split()), done.stdout
    # for vLLM: exact below its cap (it was snapped down to rank 1, said "exact"), with the server's setting named
    for_vllm = vera("fetch", info.ref, "--as", "lora", "--for-vllm", "--out", str(tmp_path / "vllm"), "--registry",
                    url)
    assert for_vllm.returncode == 0 and "(LoRA, r = lora_alpha = 8, exact; vLLM serves it started with " \
        "--max-lora-rank 8 or more)" in " ".join(for_vllm.stdout.split()), for_vllm.stdout
    assert "relative Frobenius error" in (tmp_path / "k4" / "README.md").read_text()
    PeftModel.from_pretrained(LLAMA.make(), tmp_path / "k4")  # PEFT loads it as a rank-4 LoRA
    exact = client.fetch(info.ref, tmp_path / "k8", as_lora=True, lora={"max_rank": 8})  # K = r: the exact model
    torch.testing.assert_close(peft_logits(exact), vera_logits(model), rtol=1e-5, atol=1e-5)
    too_big = httpx.get(f"{url}/api/v1/adapters/lora/cap/versions/1/files/adapter_config.json",
                        params={"format": "lora", "max_rank": 64})
    assert too_big.status_code == 422 and "larger than the adapter's r=8" in too_big.json()["detail"]
    kept = httpx.get(f"{url}/api/v1/adapters/lora/cap/versions/1/files/adapter_config.json",
                     params={"format": "lora", "max_rank": 7, "for": "vllm"})
    assert kept.status_code == 200 and kept.json()["r"] == 7  # vLLM serves rank 7 (--max-lora-rank 8): not cut to 1
    weights = httpx.get(f"{url}/api/v1/adapters/lora/cap/versions/1/files/adapter_model.safetensors",
                        params={"format": "lora", "max_rank": 4})
    assert 0 < float(weights.headers["x-vera-lora-max-relative-error"]) < 1


def _children_of_server(port: int) -> list[int]:
    """The processes that the `vera serve --port PORT` process started (Linux /proc)."""
    procs = [p for p in Path("/proc").iterdir() if p.name.isdigit()]

    def cmdline(p: Path) -> list[str]:
        try:
            return p.joinpath("cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            return []

    [server] = [int(p.name) for p in procs if "serve" in cmdline(p) and str(port) in cmdline(p)]
    children = []
    for p in procs:
        try:
            ppid = int(p.joinpath("stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == server:
            children.append(int(p.name))
    return children


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_serve_with_several_worker_processes(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                             ) -> None:
    """`vera serve --workers 2`: two API processes on one port, each built from the settings the parent passed on
    (tokens required here, because the database is PostgreSQL: the parent's decision reached the children as a
    boolean; as the text naming the backend it failed every child, a re-check in session 14), sharing the database
    and the storage."""
    from tests.registry.servers import running_vera

    url = database_url
    port = free_port()
    monkeypatch.delenv("VERA_REQUIRE_TOKENS", raising=False)
    with running_vera(["serve", "--port", str(port), "--workers", "2"], port, VERA_DATABASE_URL=url,
                      VERA_STORAGE_URL=str(tmp_path / "blobs")) as base:
        assert len(_children_of_server(port)) >= 2
        db = Database(url)
        token = create_token(db, owner="kim", scopes=["read", "publish"])[1]
        db.engine.dispose()
        assert httpx.get(f"{base}/api/v1/adapters").status_code == 401  # the setting reached the workers
        with RegistryClient(base, token, cache=False) as client:
            client.publish(make_adapter(tmp_path / "a", seed=4), "kim/multi", base_model="tiny")
            for i in range(6):  # new connections: the kernel spreads them over the processes
                with RegistryClient(base, token, cache=False) as fresh:
                    fresh.fetch("kim/multi", tmp_path / f"out{i}")
            assert read_adapter(tmp_path / "out5").tensors.keys() == read_adapter(tmp_path / "out0").tensors.keys()


def test_settings_pass_to_worker_processes_as_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(database_url="sqlite:////tmp/x.db", require_tokens=True, hub_token=SecretStr("hf_secret"),
                        job_base_models=["minilm", "org/llama"], file_cache_bytes=5, hub_base_configs=False)
    for name in list(os.environ):
        if name.startswith("VERA_"):
            monkeypatch.delenv(name)
    for name, value in settings.environment().items():
        monkeypatch.setenv(name, value)
    rebuilt = Settings()
    assert rebuilt.model_dump() == settings.model_dump()
    assert rebuilt.hub_token is not None and rebuilt.hub_token.get_secret_value() == "hf_secret"


def serving(registry: Registry, read_threads: int) -> contextlib.AbstractContextManager[str]:
    """The API over ``registry`` served in this process (so that the test can slow its services)."""
    from registry.api import ApiOptions, create_app

    return in_thread(create_app(registry, ApiOptions(require_tokens=False, read_threads=read_threads)))


class Slowed:
    """Wraps a service method: each call sleeps first, and the calls under way are counted (``inside``, ``most``)."""

    def __init__(self, real: Callable[..., object], seconds: float) -> None:
        self.real, self.seconds = real, seconds
        self.inside = self.most = 0
        self.lock = threading.Lock()

    def __call__(self, *args: object, **kwargs: object) -> object:
        with self.lock:
            self.inside += 1
            self.most = max(self.most, self.inside)
        try:
            time.sleep(self.seconds)  # a slow storage read, or a build waiting for a projection slot
            return self.real(*args, **kwargs)
        finally:
            with self.lock:
                self.inside -= 1

    def wait_for(self, count: int) -> None:
        deadline = time.monotonic() + 30
        while self.inside < count:
            assert time.monotonic() < deadline, f"{self.inside} calls under way, not {count}"
            time.sleep(0.01)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_file_lists_run_in_a_pool_of_read_threads_off_the_event_loop(registry: Registry, tmp_path: Path) -> None:
    """The hot reads take at most ``read_threads`` threads (VERA_READ_THREADS) of their own, never the event loop:
    while every read thread is busy, more reads wait their turn and /health still answers."""
    registry.publish(make_adapter(tmp_path / "a"), owner="pool", name="a", base_model="tiny-llama")
    registry.derived.manifest("pool/a:1", FileForm())  # built: the reads below only read
    slow = registry.derived.manifest = Slowed(registry.derived.manifest, 0.8)  # type: ignore[method-assign]
    with serving(registry, read_threads=2) as url, ThreadPoolExecutor(5) as pool:
        reads = [pool.submit(httpx.get, f"{url}/api/v1/adapters/pool/a/versions/1/files", timeout=30)
                 for _ in range(5)]
        slow.wait_for(2)
        health = httpx.get(f"{url}/health", timeout=30)
        assert health.status_code == 200 and slow.inside == 2  # answered while both read threads were busy
        assert all(r.result().status_code == 200 for r in reads)
    assert slow.most == 2  # five reads at once, two at a time


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_form_being_built_holds_no_read_thread(registry: Registry, tmp_path: Path) -> None:
    """A form nobody asked for yet is built in the general pool (a build may wait for a projection slot): with one
    read thread and two builds under way, a list of a form built before still answers, and then the builds'."""
    registry.publish(make_adapter(tmp_path / "a"), owner="pool", name="b", base_model="tiny-llama")
    lists = "/api/v1/adapters/pool/b/versions/1/files"
    with serving(registry, read_threads=1) as url:
        assert httpx.get(url + lists, params={"seed_only": True}, timeout=30).status_code == 200  # built now
        slow = registry.derived._build = Slowed(registry.derived._build, 1.5)  # type: ignore[method-assign]
        with ThreadPoolExecutor(2) as pool:
            builds = [pool.submit(httpx.get, url + lists, params=params, timeout=30)
                      for params in ({"projection": True}, {"format": "lora"})]
            slow.wait_for(2)
            built_before = httpx.get(url + lists, params={"seed_only": True}, timeout=30)
            assert built_before.status_code == 200 and slow.inside == 2  # the one read thread was free
            forms = {FileManifest.model_validate_json(b.result().content).form for b in builds}
        assert forms == {"vera+projection", "lora"}


def test_vera_read_threads_sizes_the_read_pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from registry.bootstrap import build_api

    monkeypatch.setenv("VERA_READ_THREADS", "3")
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'r.db'}", storage_url=str(tmp_path / "blobs"),
                        require_tokens=True)
    app, registry, _ = build_api(settings)
    assert app.state.options.read_threads == 3
    registry.db.engine.dispose()
    monkeypatch.setenv("VERA_READ_THREADS", "0")
    with pytest.raises(ValueError, match="read_threads"):
        Settings()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_form_that_keeps_vanishing_while_read_is_a_503_to_retry(registry: Registry, tmp_path: Path) -> None:
    """Built, then gone again before it is read (an alias moved on, fsck forgot it), three times: 503 busy, not a
    500 and not an endless loop."""
    from registry.services.derived import NotBuilt

    registry.publish(make_adapter(tmp_path / "a"), owner="pool", name="c", base_model="tiny-llama")
    real, reads = registry.derived.manifest, []

    def vanishing(ref: object, form: FileForm, *, build: bool = True) -> object:
        if not build:
            reads.append(ref)
            raise NotBuilt(f"{ref} has no {form.key} files yet.")
        return real(ref, form)  # type: ignore[arg-type]

    registry.derived.manifest = vanishing  # type: ignore[method-assign,assignment]
    with serving(registry, read_threads=2) as url:
        answer = httpx.get(f"{url}/api/v1/adapters/pool/c/versions/latest/files", timeout=30)
    assert answer.status_code == 503 and "changed while they were read; retry" in answer.json()["detail"]
    assert len(reads) == 3

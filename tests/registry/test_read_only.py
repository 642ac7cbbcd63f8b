"""Read-only mode (VERA_READ_ONLY): every request that would change the registry is refused before any work, and no
read writes anything, to the database or to the blob storage.

The proof: a registry filled in normal mode (adapters, aliases, a private adapter, an organisation, a job, tokens, a
webhook, a recorded verification, a download form built), then a `vera serve --read-only` over the same PostgreSQL
database set to refuse every write (``default_transaction_read_only``) and the same blob folder made read-only (where
the test runs as root, the server runs without root's power to override file modes). Every read a user has answers
200 with what the primary stored, and afterwards every row and every stored file is as it was."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from fastapi.routing import iter_route_contexts
from huggingface_hub import hf_hub_download, snapshot_download
from sqlalchemy import select, text

from registry.api import create_app
from registry.api.deps import ApiOptions
from registry.api.gate import READ_ONLY_SAFE, read_only_safe
from registry.api.metrics import READY_TTL_S
from registry.bootstrap import open_registry
from registry.client import RegistryClient
from registry.domain.errors import ReadOnly
from registry.domain.schemas import Ref
from registry.services.derived import FileForm, Scratch
from registry.services.registry import Registry
from registry.settings import Settings
from registry.store import models as m
from registry.store.blobs import FsspecBlobStore
from registry.store.database import Database
from tests.commands import vera as run_vera
from tests.registry.adapters import make_adapter
from tests.registry.conftest import PG_ADMIN, fresh_postgres
from tests.registry.servers import free_port, in_thread, issued_tokens, registry_in_thread, running_server, running_vera
from vera_core.lora import LoraExport

pytestmark = pytest.mark.slow

PRIMARY = "https://primary.example.org"
#: Values for the path parameters of every route, so that each write route can be asked for real.
PATH_VALUES = {"owner": "alice", "name": "m", "selector": "1", "version": "1", "alias": "prod", "job_id": "1",
               "token_id": "1", "org": "acme", "member": "bob", "webhook_id": "1"}


def _database_rows(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every registry table (and the schema revision), in primary-key order."""
    db = Database(url)
    try:
        with db.engine.connect() as conn:
            rows = {t.name: [tuple(r) for r in conn.execute(select(t).order_by(*t.primary_key.columns))]
                    for t in m.Base.metadata.sorted_tables}
            rows["alembic_version"] = [tuple(r) for r in conn.execute(text("SELECT * FROM alembic_version"))]
        return rows
    finally:
        db.engine.dispose()


def _stored_files(folder: Path) -> dict[str, tuple[int, int, int, str]]:
    """Every file and folder under ``folder``: mode, size, modification time and (files) SHA-256."""
    found = {}
    for path in sorted(folder.rglob("*")):
        info = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        found[str(path.relative_to(folder))] = (info.st_mode, info.st_size if path.is_file() else 0,
                                                info.st_mtime_ns, digest)
    return found


def _set_writable(folder: Path, writable: bool) -> None:
    for path in [folder, *folder.rglob("*")]:
        mode = path.stat().st_mode & 0o777
        if writable:
            path.chmod(mode | stat.S_IWUSR)
        else:
            path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


@dataclass
class Replica:
    """The read-only server over a registry filled in normal mode."""

    url: str
    database_url: str
    storage: Path
    alice: str  # a token of alice, created through the API in normal mode
    alice_token_id: int
    job_id: int
    webhook_id: int
    fetched: dict[str, bytes]  # alice/m:1 as `vera fetch` gave it in normal mode
    rows: dict[str, list[tuple[Any, ...]]]
    files: dict[str, tuple[int, int, int, str]]
    log: Path
    tmp: Path

    def client(self, token: str | None = None, **options: Any) -> RegistryClient:
        return RegistryClient(self.url, self.alice if token is None else token, **options)

    def assert_unchanged(self) -> None:
        """The database's rows and the storage's files are as the primary left them; the server logged no warning."""
        assert _database_rows(self.database_url) == self.rows
        assert _stored_files(self.storage) == self.files
        log = self.log.read_text()
        assert "Traceback" not in log and "read-only transaction" not in log, log[-3000:]
        assert not re.search(r'"level": "(warning|error|critical)"', log), log[-3000:]


def _fill(url: str, storage: Path, tmp: Path) -> dict[str, Any]:
    """The registry in normal mode: what a team's registry holds, through the API as its users make it."""
    db = Database(url)
    db.upgrade()
    db.engine.dispose()
    [alice_admin, bob] = issued_tokens(url, ("alice", ["read", "publish"]), ("bob", ["read", "publish"]))
    with registry_in_thread(url, storage, VERA_REQUIRE_TOKENS="true", VERA_WEBHOOK_ALLOW_PRIVATE="true") as base, \
            RegistryClient(base, alice_admin, cache=False) as alice, RegistryClient(base, bob) as bobs:
        hook = alice.create_webhook("alice", "http://127.0.0.1:9/hook")  # nothing listens: deliveries fail, retried
        alice.publish(make_adapter(tmp / "a1", seed=1), "alice/m", base_model="org/tiny-llama", tags=["first"],
                      metrics={"accuracy": 0.5})
        alice.publish(make_adapter(tmp / "a2", seed=2), "alice/m", base_model="org/tiny-llama", parent="alice/m:1",
                      metrics={"accuracy": 0.75})
        alice.publish(make_adapter(tmp / "a3", seed=3), "alice/secret", base_model="org/tiny-llama",
                      visibility="private")
        bobs.publish(make_adapter(tmp / "b1", seed=4), "bob/draft", base_model="org/tiny-llama")
        bobs.move("bob/draft", "bob/other")  # the old name answers where it went
        alice.set_alias("alice/m:1", "prod")
        alice.create_organization("acme")
        alice.set_member("acme", "bob", "read")
        job = alice.submit_job("alice/trained", {"demo": True})  # no worker: it stays queued
        read_token, secret = alice.create_token(["read", "publish"], name="replica")
        alice.verify("alice/m:1")  # a recorded report
        out = tmp / "fetched"
        alice.fetch("alice/m:1", out)  # the default form, built and stored
        alice.fetch("alice/m:1", tmp / "again")  # two downloads counted (flushed when the server stops)
        httpx.get(f"{base}/hf/alice/m/resolve/main/README.md", headers={"Authorization": f"Bearer {secret}"})
        fetched = {p.name: p.read_bytes() for p in out.iterdir()}
        # the dispatcher's first failed attempts, which the replica lists, before the server stops: it polls in a
        # thread of its own (a server in this process's thread could stop before its first poll, session 53's CI)
        deadline = time.monotonic() + 60
        while not alice.webhook_deliveries(hook.id) and time.monotonic() < deadline:
            time.sleep(0.2)
    return {"alice": secret, "alice_token_id": read_token.id, "job_id": job.id, "webhook_id": hook.id,
            "fetched": fetched}


@pytest.fixture(scope="module")
def replica() -> Iterator[Replica]:
    name = f"vera_read_only_{uuid.uuid4().hex[:12]}"
    admin = psycopg.connect(PG_ADMIN, autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    tmp = Path(tempfile.mkdtemp(prefix="vera-replica-test-"))
    storage = tmp / "blobs"
    try:
        filled = _fill(url, storage, tmp)
        admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')  # any write now fails
        _set_writable(storage, False)
        rows, files = _database_rows(url), _stored_files(storage)
        port, log = free_port(), tmp / "replica.log"
        with running_vera(["serve", "--read-only", "--port", str(port)], port, log_path=log, file_modes_bind=True,
                          VERA_DATABASE_URL=url, VERA_STORAGE_URL=str(storage), VERA_REQUIRE_TOKENS="true",
                          VERA_PRIMARY_URL=PRIMARY, VERA_LOG_FORMAT="json", VERA_DOWNLOAD_FLUSH_S="0.2") as base:
            yield Replica(base, url, storage, fetched=filled["fetched"], rows=rows, files=files, log=log, tmp=tmp,
                          alice=filled["alice"], alice_token_id=filled["alice_token_id"], job_id=filled["job_id"],
                          webhook_id=filled["webhook_id"])
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
        if storage.exists():
            _set_writable(storage, True)
        shutil.rmtree(tmp, ignore_errors=True)


def _write_routes() -> list[tuple[str, str]]:
    """(method, path template) of every route of the app that is not a GET or HEAD, from app.routes."""
    with tempfile.TemporaryDirectory() as folder:
        db = Database(f"sqlite:///{folder}/r.db")
        db.upgrade()
        try:
            app = create_app(Registry(db, FsspecBlobStore(f"{folder}/blobs")))
            routes = [(method, route.path or "") for route in iter_route_contexts(app.routes)
                      for method in sorted(route.methods or ()) if method not in ("GET", "HEAD")]
        finally:
            db.engine.dispose()
    return sorted(set(routes))


def _concrete(template: str) -> str:
    return re.sub(r"\{(\w+)(:\w+)?\}", lambda found: PATH_VALUES.get(found.group(1), "x1"), template)


def test_every_route_that_changes_anything_is_refused_before_any_work(replica: Replica) -> None:
    """Each route of the app other than GET and HEAD, asked for as a user would with a valid body, with a token, a
    wrong token or none: 503 read_only naming the primary, before the token is looked up or the body read. The
    exceptions are the READ_ONLY_SAFE routes (each said why), which answer and record nothing."""
    routes = _write_routes()
    assert len(routes) >= 25, routes  # publish, aliases, yank, delete, edits, move, jobs, tokens, orgs, webhooks, ...
    safe = [(method, path) for method, path in routes if read_only_safe(method, _concrete(path))]
    assert sorted(safe) == [("POST", "/api/v1/adapters/lookup"),
                            ("POST", "/api/v1/adapters/{owner}/{name}/versions/{selector}/verify"),
                            ("POST", "/api/v1/compare")]
    for method, pattern, why in READ_ONLY_SAFE:  # no stale entry: each names a route that exists
        assert why and any(m_ == method and pattern.match(_concrete(p)) for m_, p in routes), pattern
    refused = [(method, path) for method, path in routes if (method, path) not in safe]
    with httpx.Client(base_url=replica.url, timeout=30) as http:
        for method, template in refused:
            path = _concrete(template)
            for headers in ({"Authorization": f"Bearer {replica.alice}"}, {"Authorization": "Bearer vera_wrong"}, {}):
                answer = http.request(method, path, json={"version": 1, "yanked": True}, headers=headers)
                assert answer.status_code == 503, (method, path, answer.text)
                assert answer.headers["content-type"] == "application/problem+json"
                assert answer.headers["retry-after"] == "3600"
                problem = answer.json()
                assert problem["type"] == "/problems/read_only" and problem["instance"] == path
                assert f"{method} {path}" in problem["detail"] and PRIMARY in problem["detail"]
                assert "read-only" in problem["detail"] and "nothing was changed" in problem["detail"]
    # an upload of a terabyte is refused from its headers: nothing of it is read
    host, port = replica.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"POST /api/v1/adapters/alice/m/versions HTTP/1.1\r\nHost: vera\r\nContent-Length: %d\r\n"
                     b"Content-Type: multipart/form-data; boundary=x\r\n\r\n" % (1 << 40))
        raw = b""
        while chunk := sock.recv(1 << 16):  # to the end: the server closes the connection after its answer
            raw += chunk
    assert raw.startswith(b"HTTP/1.1 503") and b"/problems/read_only" in raw, raw
    replica.assert_unchanged()


def test_clients_are_told_at_once_where_changes_go(replica: Replica) -> None:
    """The client raises ReadOnly without retrying (its 503 says wait an hour); `vera publish` prints one line."""
    with replica.client(retries=3, backoff_s=2) as client:
        started = time.monotonic()
        with pytest.raises(ReadOnly, match="primary.example.org"):
            client.set_alias("alice/m:2", "prod")  # a PUT: idempotent, retried on a 503 unless told to wait long
        with pytest.raises(ReadOnly):
            client.submit_job("alice/again", {"demo": True})
        assert time.monotonic() - started < 2
    run = run_vera(["publish", str(make_adapter(replica.tmp / "new", seed=9)), "--name", "alice/new", "--base-model",
                    "org/tiny-llama", "--registry", replica.url, "--token", replica.alice])
    assert run.returncode == 1, run.stderr
    assert "read-only" in run.stderr and PRIMARY in run.stderr and "Traceback" not in run.stderr
    replica.assert_unchanged()


def test_every_read_answers_what_the_primary_stored(replica: Replica) -> None:
    with replica.client() as client:
        me = client.whoami()
        assert (me.user, me.token_id, me.read_only) == ("alice", replica.alice_token_id, True)
        page = client.list_versions(with_total=True)
        assert {v.ref for v in page.items} == {"alice/m:1", "alice/m:2", "alice/secret:1", "bob/other:1"}
        assert page.total == 4
        assert [v.ref for v in client.list_versions(filter="metrics.accuracy > 0.6").items] == ["alice/m:2"]
        assert [v.ref for v in client.list_versions(tag="first").items] == ["alice/m:1"]
        assert [v.ref for v in client.list_versions(q="secret").items] == ["alice/secret:1"]
        assert client.get("alice/m@prod").version == 1 and client.get("alice/m").version == 2
        assert client.get("alice/m:1").downloads == 2  # what the primary counted; reads here add none
        adapter = client.adapter("alice/m")
        assert (adapter.versions, adapter.aliases["prod"]) == (2, 1)
        assert sorted(n.ref for n in client.lineage("alice/m:2").nodes) == ["alice/m:1", "alice/m:2"]
        # the form the primary built, from its storage; the same bytes as `vera fetch` gave there
        listed = client.files("alice/m:1")
        assert {f.name: f.sha256 for f in listed.files} == {
            name: hashlib.sha256(data).hexdigest() for name, data in replica.fetched.items()}
        assert client.download("alice/m:1", "adapter_model.safetensors") == replica.fetched["adapter_model.safetensors"]
        _assert_built_here(replica, client)
        report = client.verify("alice/m:2")  # verified, not recorded
        assert report.status == "passed"
        assert client.get("alice/m:2").verification_status == "unverified"
        assert client.get("alice/m:1").verification_status == "passed"  # the primary's record
        comparison = client.compare(["alice/m:1", "alice/m:2"])
        assert comparison.refs == ["alice/m:1", "alice/m:2"] and comparison.layers
        looked = client.lookup(["alice/m@prod", "alice/m", "bob/draft:1"])  # a moved name followed, as get does
        assert [v.ref if v else None for v in looked.values()] == ["alice/m:1", "alice/m:2", "bob/other:1"]
        assert client.lookup(["bob/draft:1"], follow_moves=False) == {"bob/draft:1": None}
        actions = [e.action for e in client.events(limit=200).events]
        assert actions.count("publish") >= 3 and {"alias", "move", "token-create"} <= set(actions)
        assert [b.name for b in client.base_models()] == ["org/tiny-llama"]
        assert client.hub_status("alice/m:1") == []
        jobs = client.jobs()
        assert [(j.id, j.status) for j in jobs] == [(replica.job_id, "queued")]
        assert client.job(replica.job_id).target_name == "alice/trained"
        assert [e.data.get("message") for e in client.job_events(replica.job_id)] == ["queued"]
        tokens = {t.id: t for t in client.tokens()}
        assert tokens[replica.alice_token_id].name == "replica"
        assert [o.name for o in client.organizations()] == ["acme"]
        assert {(x.member, x.role) for x in client.organization("acme").members} == {("alice", "admin"),
                                                                                      ("bob", "read")}
        assert [w.id for w in client.webhooks("alice")] == [replica.webhook_id]
        assert client.webhook_deliveries(replica.webhook_id)  # the primary's failed attempts, listed
    with httpx.Client(base_url=replica.url, headers={"Authorization": f"Bearer {replica.alice}"}, timeout=60) as http:
        for path in ("/api/v1/projections", "/api/v1/adapters/alice/m/versions/1/verification", "/metrics",
                     "/openapi.json"):
            assert http.get(path).status_code == 200, path
        moved = http.get("/api/v1/adapters/bob/draft/versions/1")
        assert moved.status_code == 404 and moved.headers["X-Vera-Moved-To"] == "bob/other"
        assert http.get("/health").json() == {"status": "ok"}
        assert http.get("/ready").json() == {"ready": True, "checks": {"database": "ok", "storage": "ok"},
                                             "read_only": True, "writes": "refused: VERA_READ_ONLY"}
        assert "vera_versions 4.0" in http.get("/metrics").text
        head = http.head("/api/v1/adapters/alice/m/versions/1/files")
        assert head.status_code == 200 and head.headers["X-Vera-Version"] == "alice/m:1"
    time.sleep(0.5)  # a read-only registry counts no download: nothing to flush (VERA_DOWNLOAD_FLUSH_S=0.2)
    replica.assert_unchanged()


def _assert_built_here(replica: Replica, client: RegistryClient) -> None:
    """Forms the primary never built (LoRA exports, A and B materialised): built by the replica into its own
    temporary folder, and the same bytes the registry's own build gives, by name, by hash and through `vera
    fetch`."""
    expected = _built(replica, "alice/m:2", FileForm(lora=LoraExport()))
    listed = client.files("alice/m:2", as_lora=True, inline=1 << 20)
    assert {f.name: f.sha256 for f in listed.files} == {n: hashlib.sha256(b).hexdigest() for n, b in expected.items()}
    for entry in listed.files:  # the hash-addressed URLs a fetch follows
        answer = httpx.get(replica.url + entry.url, headers={"Authorization": f"Bearer {replica.alice}"})
        assert answer.status_code == 200 and answer.content == expected[entry.name]
    assert client.download("alice/m:2", "adapter_model.safetensors", as_lora=True) == \
        expected["adapter_model.safetensors"]
    capped = client.download("alice/m:1", "adapter_model.safetensors", as_lora=True,
                             lora={"max_rank": 4, "dtype": "bfloat16"})
    assert capped == _built(replica, "alice/m:1", FileForm(lora=LoraExport(max_rank=4, dtype="bfloat16")))[
        "adapter_model.safetensors"]
    projected = client.download("alice/m:2", "adapter_model.safetensors", with_projection=True)
    assert projected == _built(replica, "alice/m:2", FileForm(with_projection=True))["adapter_model.safetensors"]
    out = replica.tmp / "vera-fetch-lora"
    run = run_vera(["fetch", "alice/m:2", "--as", "lora", "--out", str(out), "--registry", replica.url, "--token",
                    replica.alice], env={**os.environ, "VERA_NO_CACHE": "1"})
    assert run.returncode == 0, run.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == expected


def _built(replica: Replica, ref: str, form: FileForm) -> dict[str, bytes]:
    """What the registry's own code builds for ``ref`` in ``form`` (a read-only registry in this process: reads
    only)."""
    registry = open_registry(Settings(database_url=replica.database_url, storage_url=str(replica.storage),
                                      read_only=True))
    try:
        _, built = registry.versions.built(ref, with_projection=form.with_projection, as_lora=form.lora is not None,
                                           lora=form.lora)
        return dict(built.files)
    finally:
        registry.db.engine.dispose()


def test_the_hub_protocol_serves_from_a_replica(replica: Replica) -> None:
    """huggingface_hub's own downloads against /hf and /hf-lora: the primary's stored form, and LoRA built here."""
    endpoint, cache = f"{replica.url}/hf", replica.tmp / "hf-cache"
    weights = hf_hub_download("alice/m", "adapter_model.safetensors", revision="prod", endpoint=endpoint,
                              token=replica.alice, cache_dir=cache)
    assert Path(weights).read_bytes() == replica.fetched["adapter_model.safetensors"]
    folder = Path(snapshot_download("alice/m", endpoint=f"{replica.url}/hf-lora", token=replica.alice,
                                    cache_dir=cache))
    expected = _built(replica, "alice/m:2", FileForm(lora=LoraExport()))
    assert {name: (folder / name).read_bytes() for name in expected} == expected
    refused = httpx.post(f"{endpoint}/api/repos/create", headers={"Authorization": f"Bearer {replica.alice}"})
    assert refused.status_code == 405  # the Hub protocol takes no writes in any mode
    replica.assert_unchanged()


# ---- the same guarantees, in process ---------------------------------------------------------------------------


def test_a_database_that_refuses_writes_answers_503_read_only(database_url: str, tmp_path: Path) -> None:
    """An API not told it is read-only, over a database that refuses writes (a hot standby; here the registry's own
    read-only connections): a change answers 503 read_only, not a 500, and reads still answer."""
    primary = Database(database_url)
    primary.upgrade()
    blobs = FsspecBlobStore(str(tmp_path / "blobs"))
    Registry(primary, blobs).publish(str(make_adapter(tmp_path / "a", seed=1)), owner="alice", name="m",
                                     base_model="org/tiny-llama", published_by="alice")
    primary.engine.dispose()
    standby = Database(database_url, read_only=True)
    try:
        app = create_app(Registry(standby, blobs), ApiOptions(require_tokens=False))
        with in_thread(app) as url, httpx.Client(base_url=url) as http:
            assert http.get("/api/v1/adapters/alice/m/versions/1").status_code == 200
            answer = http.put("/api/v1/adapters/alice/m/aliases/prod", json={"version": 1})
            assert (answer.status_code, answer.json()["type"]) == (503, "/problems/read_only"), answer.text
            assert answer.headers["retry-after"] == "3600"
            assert http.get("/api/v1/adapters/alice/m").json()["aliases"] == {"latest": 1}
    finally:
        standby.engine.dispose()


def _takes_writes(http: httpx.Client) -> tuple[bool, str, bool]:
    """(/ready's read_only, its writes, whoami's read_only)."""
    ready = http.get("/ready").json()
    return ready["read_only"], ready["writes"], http.get("/api/v1/whoami").json()["read_only"]


def test_ready_and_whoami_say_a_database_that_refuses_writes_is_read_only(tmp_path: Path) -> None:
    """A registry not told it is read-only, over a database that takes no writes: /ready and whoami said
    ``read_only: false`` while every change was refused (an operator's walk, session 43). Now they say true, and
    /ready's ``writes`` why: a PostgreSQL database whose default_transaction_read_only is on (as a hot standby
    refuses), a SQLite file made immutable (as root, whom permissions do not stop; chattr +i)."""
    blobs = FsspecBlobStore(str(tmp_path / "blobs"))
    with fresh_postgres() as url:
        db = Database(url)
        db.upgrade()
        try:
            with in_thread(create_app(Registry(db, blobs), ApiOptions(require_tokens=False))) as base, \
                    httpx.Client(base_url=base) as http:
                assert _takes_writes(http) == (False, "ok", False)
                with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
                    admin.execute(f'ALTER DATABASE "{url.rsplit("/", 1)[1]}" SET default_transaction_read_only = on')
                db.engine.dispose()  # (new connections take the setting)
                time.sleep(READY_TTL_S)
                assert _takes_writes(http) == (True, "refused: PostgreSQL's default_transaction_read_only is on", True)
                refused = http.put("/api/v1/orgs/acme/members/ann", json={"role": "read"})
                assert refused.status_code in (404, 503)  # (no such organisation, or the write refused: never a 500)
        finally:
            db.engine.dispose()
    path = tmp_path / "sqlite" / "registry.db"
    path.parent.mkdir()
    made = Database(f"sqlite:///{path}")
    made.upgrade()
    made.close()
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False).returncode != 0:
        pytest.skip("chattr +i is not available on this filesystem")
    try:
        db = Database(f"sqlite:///{path}")
        with in_thread(create_app(Registry(db, blobs), ApiOptions(require_tokens=False))) as base, \
                httpx.Client(base_url=base) as http:
            said = "refused: its SQLite file, or the folder it is in, is read-only to the registry's process"
            assert _takes_writes(http) == (True, said, True)
            answer = http.post("/api/v1/orgs", json={"name": "acme"})
            assert (answer.status_code, answer.json()["type"]) == (503, "/problems/read_only"), answer.text
        db.engine.dispose()
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)
    with in_thread(create_app(Registry(db := Database(f"sqlite:///{path}"), blobs), ApiOptions(
            require_tokens=False, read_only=True))) as base, httpx.Client(base_url=base) as http:
        assert _takes_writes(http) == (True, "refused: VERA_READ_ONLY", True)
    db.engine.dispose()


def test_a_read_only_registry_builds_a_damaged_form_again_in_its_own_folder(tmp_path: Path) -> None:
    """A stored download file that is missing: the primary rebuilds it into storage; a read-only registry leaves the
    storage and the rows alone and serves its own build."""
    settings = Settings(data_dir=tmp_path / "data", require_tokens=False)
    primary = open_registry(settings)
    primary.publish(str(make_adapter(tmp_path / "a", seed=1)), owner="alice", name="m", base_model="org/tiny-llama",
                    published_by="alice")
    info, files = primary.derived.manifest("alice/m:1", FileForm(with_projection=True))
    weights = next(f for f in files if f.filename == "adapter_model.safetensors")
    expected = b"".join(primary.blobs.reader(weights.sha256))
    primary.blobs.delete(weights.sha256)  # lost from storage
    primary.db.engine.dispose()
    folder = tmp_path / "data" / "blobs"
    before = (_stored_files(folder), _database_rows(settings.resolved_database_url))
    replica = open_registry(settings.model_copy(update={"read_only": True}))
    try:
        source = replica.derived.source(info.pinned, weights)
        assert b"".join(source if not isinstance(source, str) else [Path(source).read_bytes()]) == expected
        assert replica.derived.by_digest(Ref.parse("alice/m:1"), weights.sha256) == weights  # the primary's listing
        lora = replica.derived.manifest("alice/m:1", FileForm(lora=LoraExport()))[1]  # a new form, built here
        assert replica.derived.by_digest(Ref.parse("alice/m:1"), lora[1].sha256) == lora[1]
        assert (_stored_files(folder), _database_rows(settings.resolved_database_url)) == before
        with pytest.raises(ReadOnly):  # the storage itself refuses: a write the mode missed fails, never writes
            replica.blobs.put(b"x")
    finally:
        replica.derived.close()
        replica.db.engine.dispose()


def test_scratch_forgets_the_least_recently_used_form_beyond_its_size(tmp_path: Path) -> None:
    from registry.services.derived import SCRATCH_PREFIX, DerivedFile

    ended = subprocess.Popen(["true"])  # a process that ran and ended: its pid is free
    ended.wait()
    stale = Path(tempfile.gettempdir()) / f"{SCRATCH_PREFIX}{ended.pid}-killed"
    stale.mkdir()
    scratch = Scratch(max_bytes=10)
    assert not stale.exists()  # the folder of a process killed before it could remove it
    first = [DerivedFile(1, "lora", "a", scratch.blobs.put(b"12345678"), 8)]
    second = [DerivedFile(1, "vera", "a", scratch.blobs.put(b"abcdefgh"), 8)]
    scratch.record(first)
    assert scratch.listed(1, "lora") == first and scratch.holds(first[0].sha256)
    scratch.record(second)  # 16 bytes > 10: the older form goes, with its file; the new one stays however large
    assert scratch.listed(1, "lora") == [] and not scratch.blobs.exists(first[0].sha256)
    assert scratch.by_digest(1, second[0].sha256) == second[0] and scratch.blobs.exists(second[0].sha256)
    folder = scratch.folder
    del scratch
    assert not Path(folder).exists()  # the folder goes with the process's use of it


def test_the_scratch_size_is_a_setting(tmp_path: Path) -> None:
    """VERA_READ_ONLY_SCRATCH_BYTES (4 GiB unless set): a replica keeping 1 KB of its own builds holds one form."""
    data = tmp_path / "data"
    primary = open_registry(Settings(data_dir=data))
    primary.publish(str(make_adapter(tmp_path / "a", seed=1)), owner="local", name="m", base_model="org/tiny-llama",
                    published_by="local")
    primary.db.engine.dispose()
    assert Settings().read_only_scratch_bytes == 4 * 2**30
    with pytest.raises(ValueError, match="'lots' is not a size: give bytes"):
        Settings(read_only_scratch_bytes="lots")
    replica = open_registry(Settings(data_dir=data, read_only=True, read_only_scratch_bytes="1KB"))
    try:
        lora, whole = FileForm(lora=LoraExport()), FileForm(with_projection=True)
        _, first = replica.derived.manifest("local/m:1", lora)
        replica.derived.manifest("local/m:1", whole)
        version = first[0].version_id
        scratch = replica.derived.scratch()
        assert scratch.max_bytes == 1000 and sum(f.size for f in first) > 1000
        assert scratch.listed(version, lora.key) == [] and scratch.listed(version, whole.key) != []
    finally:
        replica.derived.close()
        replica.db.engine.dispose()


# ---- commands ----------------------------------------------------------------------------------------------------


def _vera(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_vera(args, env={**os.environ, **env})


@pytest.mark.parametrize("command", [["worker"], ["gc"], ["fsck", "--repair"], ["token", "create", "--owner", "ann",
                                     "--scope", "read"], ["token", "revoke", "1"], ["db", "upgrade"]])
def test_commands_that_write_refuse_a_read_only_machine(command: list[str], tmp_path: Path) -> None:
    run = _vera(*command, VERA_READ_ONLY="true", VERA_DATA_DIR=str(tmp_path))
    assert run.returncode == 1, run.stdout + run.stderr
    said = " ".join(run.stderr.split())  # one message (the console wraps it at its width)
    assert said.startswith("error: VERA_READ_ONLY is set") and said.count("error:") == 1, run.stderr
    assert f"`vera {command[0]}" in said
    assert not (tmp_path / "registry.db").exists()  # refused before anything was opened


def test_vera_up_read_only_runs_no_worker_and_refuses_changes(tmp_path: Path) -> None:
    from registry.services.derived import SCRATCH_PREFIX

    data = tmp_path / "data"
    primary = open_registry(Settings(data_dir=data))  # the embedded registry, filled in normal mode
    primary.publish(str(make_adapter(tmp_path / "a", seed=1)), owner="local", name="m", base_model="org/tiny-llama",
                    published_by="local")
    primary.db.engine.dispose()
    port, log = free_port(), tmp_path / "up.log"
    scratch_before = set(Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*"))
    with running_vera(["up", "--read-only", "--no-ui", "--port", str(port)], port, log_path=log,
                      VERA_DATA_DIR=str(data), VERA_LOG_FORMAT="text") as url:
        assert httpx.get(f"{url}/ready").json()["read_only"] is True
        answer = httpx.post(f"{url}/api/v1/jobs", data={"target": "local/x", "spec": "{}"})
        assert answer.status_code == 503 and answer.json()["type"] == "/problems/read_only"
        assert "Ask its operator" in answer.json()["detail"]  # no VERA_PRIMARY_URL here
        lora = httpx.get(f"{url}/api/v1/adapters/local/m/versions/1/files/adapter_model.safetensors",
                         params={"format": "lora"})
        assert lora.status_code == 200  # built into the process's own folder
        assert set(Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*")) - scratch_before
    text_log = log.read_text()
    assert "read-only: no job worker runs here" in text_log and "READ-ONLY" in text_log
    assert not set(Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*")) - scratch_before  # gone with it
    fsck = _vera("fsck", VERA_READ_ONLY="true", VERA_DATA_DIR=str(data))  # a check only reads: it runs
    assert fsck.returncode == 0 and "missing: 0" in fsck.stdout, fsck.stdout + fsck.stderr


def test_vera_cluster_read_only_starts_replicas_and_no_worker(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    Database(url).upgrade()
    FsspecBlobStore(str(tmp_path / "blobs"))  # made by the primary: a read-only registry creates no folder
    port, log = free_port(), tmp_path / "cluster.log"
    with running_vera(["cluster", "--read-only", "--replicas", "1", "--workers", "2", "--no-ui", "--port", str(port)],
                      port, also=(f"http://127.0.0.1:{port}/ready",), log_path=log, VERA_DATABASE_URL=url,
                      VERA_STORAGE_URL=str(tmp_path / "blobs"), VERA_REQUIRE_TOKENS="false") as base:
        assert httpx.get(f"{base}/ready").json()["read_only"] is True
        deadline = time.monotonic() + 60
        while "ready:" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
    said = " ".join(log.read_text().split())
    assert "no job worker starts (--workers 2 ignored" in said and "worker-" not in said, said[-2000:]


def test_settings_name_a_bad_primary_url() -> None:
    assert Settings(read_only=True, primary_url="https://vera.example.org/").primary_url == "https://vera.example.org"
    for bad in ("vera.example.org", "https://", "https://vera.example.org/\nX-Injected: 1", "ftp://x"):
        with pytest.raises(ValueError, match="VERA_PRIMARY_URL"):
            Settings(primary_url=bad)
    assert Settings().read_only is False


def test_a_replica_on_object_storage_signs_only_what_the_store_holds(tmp_path: Path) -> None:
    """With presigned downloads, a form the primary stored is redirected to the object store; one the replica built
    itself is streamed by the replica (the store does not hold it), and nothing is written to the bucket."""
    pytest.importorskip("boto3")
    from tests.registry.servers import running_s3, s3_objects

    url = f"sqlite:///{tmp_path / 'r.db'}"
    with running_s3("vera-ro") as s3:
        env = {**s3.env, "VERA_STORAGE_URL": "s3://vera-ro/registry", "VERA_PRESIGNED_DOWNLOADS_S": "60"}
        with running_server(url, tmp_path / "unused", **env) as primary, \
                RegistryClient(primary, cache=False, inline=0) as client:
            client.publish(make_adapter(tmp_path / "a", seed=5), "s3/m", base_model="org/tiny-llama")
            stored = client.files("s3/m").files[1]
        objects = s3_objects(s3.env, "vera-ro")
        with running_server(url, tmp_path / "unused", **env, VERA_READ_ONLY="true") as replica, \
                RegistryClient(replica, cache=False, inline=0) as client:
            redirect = httpx.get(replica + stored.url)
            assert redirect.status_code == 307 and httpx.get(redirect.headers["location"]).status_code == 200
            built = client.files("s3/m", as_lora=True).files[1]
            streamed = httpx.get(replica + built.url)
            assert streamed.status_code == 200 and hashlib.sha256(streamed.content).hexdigest() == built.sha256
            client.fetch("s3/m", tmp_path / "lora", as_lora=True)
        assert s3_objects(s3.env, "vera-ro") == objects

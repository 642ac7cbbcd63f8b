"""Hostile callers (issue 14): bounded work per request, jobs that cannot reach the worker's disk, bodies refused
from their headers, and one validation layer for text fields. Through a real server where the HTTP edge matters,
on SQLite and PostgreSQL where the database does."""

from __future__ import annotations

import json
import os
import re
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from safetensors.torch import save_file
from sqlalchemy import event, update
from starlette.testclient import TestClient

from registry.api import ApiOptions, create_app
from registry.domain.errors import Busy, Conflict, InvalidInput, Unauthorized
from registry.domain.schemas import UPLOAD_PREFIX, Ref, check_name, check_new_name
from registry.services import tokens
from registry.services.jobs import Jobs
from registry.services.registry import Registry
from registry.services.tokens import MAX_LIVE_TOKENS, authenticate, create_token, list_tokens, revoke_token
from registry.services.validation import ProjectionBudget
from registry.store import models as m
from registry.store.blobs import FsspecBlobStore
from registry.store.database import Database
from registry.store.models import AccessToken
from tests.registry.adapters import LLAMA, make_adapter
from tests.registry.servers import in_thread, registry_in_thread, running_server, trickle
from vera_core import PORTABLE_GENERATOR, ProjectionSpec, VeraConfig
from vera_core.checkpoint import META_GENERATOR, META_IN_FEATURES, META_SHAPE

MEMORY_CAP_KB = 1_500_000  # the server's peak resident memory may not pass ~1.5 GB


def hostile_adapter(folder: Path, *, shape: str, in_features: str | None = None, r: int = 4, layer: str = "q",
                    targets: str | None = None) -> Path:
    """A few hundred bytes: one layer's vectors, and metadata that declares whatever projection it likes;
    ``targets``: a target_modules regex written into the config as it is."""
    folder.mkdir(parents=True)
    config = VeraConfig(r=r, target_modules=[layer], save_projection=False, projection_generator=PORTABLE_GENERATOR)
    written = config.to_peft_dict() | ({"target_modules": targets} if targets is not None else {})
    folder.joinpath("adapter_config.json").write_text(json.dumps(written))
    metadata = {"format": "pt", META_GENERATOR: PORTABLE_GENERATOR, META_SHAPE: shape}
    if in_features is not None:
        metadata[META_IN_FEATURES] = in_features
    save_file({f"base_model.model.{layer}.vera_lambda_b": torch.ones(16),
               f"base_model.model.{layer}.vera_lambda_d": torch.ones(r)},
              str(folder / "adapter_model.safetensors"), metadata=metadata)
    return folder


def server_peak_rss_kb(url: str) -> int:
    """VmHWM of the `vera serve` process listening on ``url``'s port."""
    port = url.rsplit(":", 1)[1]
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = proc.joinpath("cmdline").read_bytes().split(b"\0")
            status = proc.joinpath("status").read_text()
        except OSError:
            continue
        if b"serve" in cmdline and port.encode() in cmdline:
            return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))
    raise AssertionError(f"no vera serve process on port {port}")


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A token-mode registry with a small upload limit and a projection ceiling of 1 Mi numbers."""
    root = tmp_path_factory.mktemp("guarded")
    url = f"sqlite:///{root / 'r.db'}"
    # a process of its own: the tests read its peak memory
    with running_server(url, root / "blobs", VERA_REQUIRE_TOKENS="true", VERA_MAX_UPLOAD_BYTES="65536",
                        VERA_MAX_PROJECTION_ELEMENTS=str(2**20)) as base:
        db = Database(url)
        token = create_token(db, owner="eve", scopes=["read", "publish"])[1]
        db.engine.dispose()
        yield {"url": base, "token": token, "root": root}


def publish(guarded: dict[str, Any], folder: Path, name: str = "x") -> httpx.Response:
    files = {part: (f, (folder / f).read_bytes()) for part, f in (("adapter_config", "adapter_config.json"),
                                                                   ("adapter_model", "adapter_model.safetensors"))}
    return httpx.post(f"{guarded['url']}/api/v1/adapters/eve/{name}/versions", files=files,
                      data={"base_model": "tiny"}, headers={"Authorization": f"Bearer {guarded['token']}"}, timeout=60)


#: What "at once" means where the work refused would take minutes or hours: far below that, far above what a slow,
#: busy machine needs for a refusal.
BOUNDED_S = 60


def test_a_few_bytes_cannot_buy_a_huge_projection(guarded: dict[str, Any], tmp_path: Path) -> None:
    started = time.perf_counter()
    huge = publish(guarded, hostile_adapter(tmp_path / "huge", shape="4,50000000,16"))
    assert huge.status_code == 422 and "VERA_MAX_PROJECTION_ELEMENTS" in huge.json()["detail"], huge.text
    # refused before anything is drawn: 3.2 billion numbers would take minutes and 12.8 GB (a bound, not a timing:
    # 5 s failed at 5.06 s on a machine running at 2.3x its usual pace with three test workers, session 35)
    assert time.perf_counter() - started < BOUNDED_S
    assert server_peak_rss_kb(guarded["url"]) < MEMORY_CAP_KB


def test_a_config_regex_cannot_hold_the_server(guarded: dict[str, Any], tmp_path: Path) -> None:
    """Attack round of session 13: target_modules "(a+)+b" against a layer named with 40 a's costs Python's
    backtracking engine 2^40 steps, holding the whole API (a 29-letter name froze /health for 10 s). Config regexes
    are matched by RE2 (vera_core.patterns): the publish is refused at once, as any unmatched layer is, and a
    pattern RE2 cannot match in linear time, or one nested past what a parser takes, is a 422, never a 500."""
    started = time.perf_counter()
    slow = publish(guarded, hostile_adapter(tmp_path / "redos", shape="4,16,16", layer="a" * 40, targets="(a+)+b"),
                   "redos")
    assert slow.status_code == 422 and "target_modules" in slow.json()["detail"], slow.text
    assert time.perf_counter() - started < BOUNDED_S  # bounded work: 2^40 steps would be hours
    for name, targets, message in (("look", "(?=q)q", "needs a backtracking regular expression engine"),
                                   ("nest", "(" * 5000 + "q" + ")" * 5000, "regular expression"),
                                   ("long", "q|" * 600 + "q", "the limit is 1,000")):
        answer = publish(guarded, hostile_adapter(tmp_path / name, shape="4,16,16", targets=targets), name)
        assert answer.status_code == 422 and message in answer.json()["detail"], (name, answer.text[:300])
    assert httpx.get(f"{guarded['url']}/health", timeout=5).status_code == 200


@pytest.mark.parametrize(("shape", "in_features", "message"), [
    ("8,64,16", None, "records a projection of r=8.* adapter_config.json has r=4"),  # rank disagrees with the config
    ("4,64,999", None, "largest adapted layer has 16 outputs"),
    ("4,64", None, "is not 'r,max_in,max_out'"),
    ("4,64,16", '{"q": "wide"}', "must give a positive input size for each adapted layer"),
    ("4,64,16", '{"q": 32}', "widest layer reads 32 inputs but the projection has max_in=64"),
    ("4,64,16", "not json", "is not JSON"),
], ids=["rank", "max-out", "shape-text", "in-features-type", "in-features-width", "in-features-json"])
def test_recorded_shapes_must_agree_with_the_config_and_vectors(
    guarded: dict[str, Any], tmp_path: Path, shape: str, in_features: str | None, message: str
) -> None:
    response = publish(guarded, hostile_adapter(tmp_path / "a", shape=shape, in_features=in_features))
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert re.search(message, detail), detail
    assert "/tmp" not in detail and str(tmp_path) not in detail  # never a server path


def test_a_tensor_named_twice_in_the_header_is_refused(guarded: dict[str, Any], tmp_path: Path) -> None:
    """A safetensors header giving a tensor's name twice was read as its last entry (by safetensors and by the
    registry's own header reader alike) and stored with both (an outsider's finding, session 54): a 422 naming the
    key, as a JSON body giving a key twice is; vera_core's reader refuses the file too."""
    import struct

    from vera_core import load_adapter
    from vera_core.errors import AdapterFormatError

    folder = make_adapter(tmp_path / "a")
    weights = folder / "adapter_model.safetensors"
    data = weights.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = data[8:8 + length].decode()
    key = next(k for k in json.loads(header) if k != "__metadata__")
    doubled = "{" + json.dumps(key) + ': {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, ' + header[1:]
    weights.write_bytes(struct.pack("<Q", len(doubled)) + doubled.encode() + data[8 + length:])
    response = publish(guarded, folder, name="doubled")
    assert response.status_code == 422, response.text
    assert f"its header gives the key {key!r} more than once in an object" in response.json()["detail"], response.text
    with pytest.raises(AdapterFormatError, match="gives the key .* more than once"):
        load_adapter(LLAMA.make(), folder)


def test_messages_never_carry_server_paths(guarded: dict[str, Any], tmp_path: Path) -> None:
    folder = make_adapter(tmp_path / "a")
    (folder / "adapter_model.safetensors").write_bytes(b"not safetensors")
    response = publish(guarded, folder)
    assert response.status_code == 422 and "adapter_model.safetensors is not a valid safetensors" in response.text
    assert "/tmp" not in response.text


def raw_request(url: str, head: str, body: bytes = b"") -> tuple[int, dict[str, Any], float]:
    """Send ``head`` (request line and headers) and ``body``, read the answer: (status, problem, seconds)."""
    host, port = url.removeprefix("http://").split(":")
    started = time.perf_counter()
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(head.encode() + b"\r\n" + body)
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < 20:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
    header, _, payload = data.partition(b"\r\n\r\n")
    return int(header.split()[1]), json.loads(payload.split(b"\r\n0\r\n")[0] or b"{}"), time.perf_counter() - started


def test_bodies_are_refused_from_their_headers(guarded: dict[str, Any]) -> None:
    url, token = guarded["url"], guarded["token"]
    path = "/api/v1/adapters/eve/x/versions"
    # a gigabyte announced, a few bytes sent: the answer comes from the headers, nothing waits for the rest
    no_token = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\nContent-Type: multipart/form-data\r\n"
    status, body, seconds = raw_request(url, no_token, b"--")
    assert (status, body["type"]) == (401, "/problems/unauthorized") and seconds < 5
    forged = no_token + "Authorization: Bearer vera_forged\r\n"
    assert raw_request(url, forged, b"--")[0] == 401
    too_big = no_token + f"Authorization: Bearer {token}\r\n"
    status, body, seconds = raw_request(url, too_big, b"--")
    assert (status, body["type"]) == (413, "/problems/content_too_large") and seconds < 5
    # no Content-Length: the streamed body is counted and cut off at the limit
    chunked = f"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nAuthorization: Bearer {token}\r\n" \
              "Content-Type: multipart/form-data; boundary=b\r\n"
    part = b'--b\r\nContent-Disposition: form-data; name="adapter_model"; filename="a"\r\n\r\n'
    chunks = [part] + [b"x" * 65536] * 24  # 1.5 MB: over the limit of 2 x 64 KiB + 1 MiB
    stream = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks)
    assert raw_request(url, chunked, stream)[0] == 413
    small_route = f"POST /api/v1/compare HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\nAuthorization: " \
                  f"Bearer {token}\r\nContent-Type: application/json\r\n"
    assert raw_request(url, small_route, b"{")[0] == 413


def test_a_form_is_read_after_who_may_send_it_and_only_with_the_fields_its_route_takes(guarded: dict[str, Any],
                                                                                         tmp_path: Path) -> None:
    """An outsider's findings (session 51): a publish or a job's form was read whole before its caller was refused
    (up to 1,000 parts of up to 1 MiB each held in memory: 200 MiB a request, answered 403 at the end), and a field
    the route does not take was ignored (``visiblity=private`` published a public adapter)."""
    url, token = guarded["url"], guarded["token"]
    db = Database(f"sqlite:///{guarded['root'] / 'r.db'}")
    reader = create_token(db, owner="rita", scopes=["read"])[1]
    db.engine.dispose()
    # refused from the path and the token, before the body: a few bytes of an announced 100 KB are sent, no more
    for path, who, status in (("/api/v1/adapters/alice/x/versions", token, 403), ("/api/v1/jobs", reader, 403),
                              ("/api/v1/adapters/eve/x/versions", reader, 403)):
        head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\nAuthorization: Bearer {who}\r\n"
                "Content-Type: multipart/form-data; boundary=b\r\n")
        answered, problem, seconds = raw_request(url, head, b"--b\r\n")  # (it waited for the rest: a timeout)
        assert answered == status and seconds < BOUNDED_S, (path, problem)
    folder = make_adapter(tmp_path / "a")
    files = {part: (f, (folder / f).read_bytes()) for part, f in (("adapter_config", "adapter_config.json"),
                                                                   ("adapter_model", "adapter_model.safetensors"))}
    bearer = {"Authorization": f"Bearer {token}"}
    # no more parts than the route takes: the third file, or a field past the count, ends the reading
    extra = httpx.post(f"{url}/api/v1/adapters/eve/x/versions", headers=bearer, data={"base_model": "tiny"},
                       files=[*files.items(), *((f"f{i}", (f"x{i}", b"x" * 1000)) for i in range(200))])
    assert extra.status_code == 422, extra.text
    assert extra.json()["detail"].startswith("Too many files. Maximum number of files is 2. POST "
                                             "/api/v1/adapters/{owner}/{name}/versions takes the form fields ")
    assert "and the files adapter_config, adapter_model, each once" in extra.json()["detail"]
    fields = httpx.post(f"{url}/api/v1/jobs", headers=bearer,
                        data={"target": "eve/j", "spec": "{}", **{f"f{i}": "x" for i in range(200)}})
    assert fields.status_code == 422 and "Too many fields. Maximum number of fields is 8." in fields.json()["detail"]
    # a misspelt field is refused, naming it and what the route takes; nothing is published or queued
    typo = httpx.post(f"{url}/api/v1/adapters/eve/typo/versions", headers=bearer, files=files,
                      data={"base_model": "tiny", "visiblity": "private"})
    assert typo.status_code == 422 and typo.json()["detail"].startswith(
        "POST /api/v1/adapters/{owner}/{name}/versions does not take the form field 'visiblity'; it takes the form "
        "fields base_model, base_revision, code_revision, copied_from, ")
    assert ", visibility and the files" in typo.json()["detail"] and "Leave it out or correct its name" in typo.text
    assert httpx.get(f"{url}/api/v1/adapters/eve/typo", headers=bearer).status_code == 404
    job = httpx.post(f"{url}/api/v1/jobs", headers=bearer,
                     data={"target": "eve/j", "spec": '{"demo": true}', "priorty": "5", "bogus": "1"})
    assert job.status_code == 422 and "does not take the form fields 'bogus', 'priorty'" in job.json()["detail"]
    assert httpx.get(f"{url}/api/v1/jobs", headers=bearer).json() == []
    # and what the route takes, each once, is published as before
    assert httpx.post(f"{url}/api/v1/adapters/eve/typo/versions", headers=bearer, files=files,
                      data={"base_model": "tiny", "visibility": "private"}).status_code == 201


def test_a_form_cut_short_is_refused_saying_so(guarded: dict[str, Any], tmp_path: Path) -> None:
    """A multipart body that ends without its closing boundary lost its last part unsaid (python-multipart drops it),
    and the refusal named a field the caller had sent: "adapter_model: Field required". A whole body is taken however
    it is cut into chunks, its boundary quoted or not, with an epilogue after the boundary or not."""
    url, bearer = guarded["url"], {"Authorization": f"Bearer {guarded['token']}"}
    folder = make_adapter(tmp_path / "a")
    request = httpx.Request("POST", "/", data={"base_model": "tiny"}, files={
        part: (f, (folder / f).read_bytes()) for part, f in (("adapter_config", "adapter_config.json"),
                                                             ("adapter_model", "adapter_model.safetensors"))})
    body, content_type = request.read(), request.headers["content-type"]
    boundary = content_type.split("boundary=")[1]
    closing = body.rindex(f"--{boundary}--".encode())
    for cut in (body[:closing], body[:closing - 100], body[:len(body) // 3], b""):
        answer = httpx.post(f"{url}/api/v1/adapters/eve/cut/versions", content=cut, timeout=30,
                            headers={**bearer, "Content-Type": content_type})
        assert answer.status_code == 422, answer.text
        assert answer.json()["detail"].startswith(
            f"The multipart body ended without its closing boundary ('--{boundary}--'): it was cut short, so its last "
            "part is not there (or it was empty). Send the whole form: POST /api/v1/adapters/{owner}/{name}/versions "
            "takes the form fields base_model, "), answer.text
    # a part's text may hold "--BOUNDARY--" (not after a line break): it is no closing boundary (helper-152's finding)
    said = (f'--{boundary}\r\nContent-Disposition: form-data; name="description"\r\n\r\nsee --{boundary}-- here\r\n'
            ).encode()
    quoted = httpx.post(f"{url}/api/v1/adapters/eve/cut/versions", content=said + body[:closing], timeout=30,
                        headers={**bearer, "Content-Type": content_type})
    assert quoted.status_code == 422 and "without its closing boundary" in quoted.json()["detail"], quoted.text
    for empty in ('boundary=""', "boundary="):  # which the parser took, a body cut short with it too
        answer = httpx.post(f"{url}/api/v1/adapters/eve/cut/versions", timeout=30, headers={
            **bearer, "Content-Type": f"multipart/form-data; {empty}"}, content=body.replace(
                f"--{boundary}".encode(), b"--")[:-8])
        assert answer.status_code == 422 and answer.json()["detail"] == (
            "The multipart Content-Type gives an empty boundary; a boundary has 1 to 70 characters (RFC 2046). Let "
            "the client library write the form and its header."), answer.text
    job = httpx.post(f"{url}/api/v1/jobs", timeout=30, content=(
        b'--j\r\nContent-Disposition: form-data; name="target"\r\n\r\neve/j\r\n--j\r\nContent-Disposition: '
        b'form-data; name="spec"\r\n\r\n{"demo": true}'), headers={**bearer, "Content-Type": "multipart/form-data; "
                                                                    "boundary=j"})
    assert job.status_code == 422 and "without its closing boundary ('--j--')" in job.json()["detail"], job.text
    assert httpx.get(f"{url}/api/v1/adapters/eve/cut", headers=bearer).status_code == 404
    assert httpx.get(f"{url}/api/v1/jobs", headers=bearer).json() == []

    def chunks(whole: bytes, size: int) -> Iterator[bytes]:  # the closing boundary straddles two of them
        yield from (whole[i:i + size] for i in range(0, len(whole), size))

    for name, in_quotes, whole, size in (("whole-1", False, body, 7), ("whole-2", True, body + b"an epilogue\r\n",
                                                                          1000), ("whole-3", False, said + body, 5)):
        kind = f'multipart/form-data; boundary="{boundary}"' if in_quotes else content_type
        taken = httpx.post(f"{url}/api/v1/adapters/eve/{name}/versions", content=chunks(whole, size), timeout=30,
                           headers={**bearer, "Content-Type": kind})
        assert taken.status_code == 201, taken.text


def test_a_request_gives_one_authorization_header(guarded: dict[str, Any]) -> None:
    """The gate's token check read the last of two, the routes the first (an outsider's finding, session 51)."""
    url, token = guarded["url"], guarded["token"]
    for method, path in (("GET", "/api/v1/adapters"), ("POST", "/api/v1/adapters/lookup"), ("GET", "/hf/api/models")):
        twice = httpx.request(method, f"{url}{path}", json={"refs": []} if method == "POST" else None,
                              headers=[("Authorization", f"Bearer {token}"), ("Authorization", "Bearer vera_other")])
        assert twice.status_code == 400 and twice.json()["type"] == "/problems/bad_request", twice.text
        assert twice.json()["detail"] == (
            "The request gives 2 Authorization headers; give one: 'Authorization: Bearer <token>'."), twice.text
    once = httpx.get(f"{url}/api/v1/adapters", headers={"Authorization": f"Bearer {token}"})
    assert once.status_code == 200
    # nor two Hub tokens, of which one was used unsaid (an outsider's finding, session 54)
    hub_twice = httpx.post(f"{url}/api/v1/hub/pull", json={"repo_id": "a/b", "target": "eve/pulled"},
                           headers=[("Authorization", f"Bearer {token}"), ("X-Hub-Token", "hf_one"),
                                    ("X-Hub-Token", "hf_two")])
    assert hub_twice.status_code == 400 and hub_twice.json()["type"] == "/problems/bad_request", hub_twice.text
    assert hub_twice.json()["detail"] == (
        "The request gives 2 X-Hub-Token headers; give one: 'X-Hub-Token: <a HuggingFace token>'."), hub_twice.text


def test_anonymous_callers_trigger_no_costly_work(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    with registry_in_thread(url, tmp_path / "blobs", VERA_REQUIRE_TOKENS="true", VERA_ANONYMOUS_READ="true") as base:
        assert httpx.get(f"{base}/api/v1/adapters").status_code == 200  # reading is open
        for path, body in (("/api/v1/adapters/a/b/versions/1/verify", None), ("/api/v1/compare", {"refs": []})):
            response = httpx.post(f"{base}{path}", json=body)
            assert response.status_code == 401 and response.headers["content-type"] == "application/problem+json"


def test_every_error_is_a_problem_document(guarded: dict[str, Any]) -> None:
    not_allowed = httpx.put(f"{guarded['url']}/api/v1/adapters", headers={
        "Authorization": f"Bearer {guarded['token']}"})
    assert not_allowed.status_code == 405 and not_allowed.json()["status"] == 405
    assert not_allowed.headers["content-type"] == "application/problem+json" and "GET" in not_allowed.headers["allow"]
    nowhere = httpx.get(f"{guarded['url']}/nowhere")
    assert nowhere.status_code == 404 and nowhere.json()["type"] == "/problems/not_found"


def test_generation_is_bounded_in_size_and_in_number_at_once() -> None:
    budget = ProjectionBudget(max_elements=1000, concurrent=1, wait_s=0.05)
    small = ProjectionSpec(PORTABLE_GENERATOR, 0, 2, 100, 100)
    with pytest.raises(InvalidInput, match="holds 40,000 numbers .* at most 1,000"):
        budget.check(ProjectionSpec(PORTABLE_GENERATOR, 0, 200, 100, 100))
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with budget.generating(small):
            held.set()
            release.wait(5)

    worker = threading.Thread(target=hold)
    worker.start()
    held.wait(5)
    with pytest.raises(Busy, match="retry in a few seconds"), budget.generating(small):
        pass
    release.set()
    worker.join()
    with budget.generating(small):  # free again
        pass


@pytest.mark.parametrize("value", ["prod\n", "Prod", "a/b", "..x", "x" * 65, "\x00"])
def test_names_are_checked_whole(value: str) -> None:
    with pytest.raises(InvalidInput, match="is not a valid name"):
        check_name(value, "Alias")
    # refused, saying what is wrong: white space or capitals alone are named as such, with the reference meant
    with pytest.raises(InvalidInput, match="not an adapter reference|not a valid name|holds white space|capital let"):
        Ref.parse(f"alice/{value}")


@pytest.mark.parametrize("value", ["alice.", "alice-", "a--b", "model.git"])
def test_a_new_name_is_one_the_hub_takes(value: str) -> None:
    with pytest.raises(InvalidInput, match="which a Hugging Face Hub name may not"):
        check_new_name(value, "Adapter name")
    for fine in ("alice_", "a-b", "a.b", "x1"):
        assert check_new_name(fine, "Adapter name") == fine


def test_new_owners_and_adapters_take_names_the_hub_takes_and_old_ones_keep_working(
        registry: Registry, tmp_path: Path) -> None:
    """An outsider's finding (session 51): `alice.` and `alice-` could be made beside `alice` (an organisation, a
    user's first token, an adapter), names huggingface_hub refuses as a repo id, so PEFT could not load them through
    /hf. Refused for new names wherever one is made, nothing written; names made before keep working."""
    folder = make_adapter(tmp_path / "a")
    before = len(registry.audit())
    for make in (lambda: registry.publish(folder, owner="ann", name="model-", base_model="tiny"),
                 lambda: registry.access.create_organization("alice.", creator="ann"),
                 lambda: create_token(registry.db, owner="bob--x", scopes=["read"]),
                 lambda: Jobs(registry).submit({"demo": True}, owner="ann", target="ann/run.git")):
        with pytest.raises(InvalidInput, match="which a Hugging Face Hub name may not"):
            make()
    assert len(registry.audit()) == before and registry.list_versions().items == []
    assert "Did you mean 'model'?" in str(pytest.raises(InvalidInput, registry.publish, folder, owner="ann",
                                                        name="model-", base_model="tiny").value)
    registry.publish(folder, owner="ann", name="model", base_model="tiny")
    with pytest.raises(InvalidInput, match="'model--2' holds '--'"):
        registry.moves.move("ann/model", "ann/model--2", actor="ann")
    # a name an earlier release made (as its rows are) takes new versions, tokens, moves to a good name
    with registry.db.session() as s:
        s.execute(update(m.Adapter).where(m.Adapter.name == "model").values(name="legacy-"))
        s.add(AccessToken(token_hash="0" * 64, owner="old-", name="", scopes=["read"]))
    assert registry.publish(folder, owner="ann", name="legacy-", base_model="tiny").ref == "ann/legacy-:2"
    assert create_token(registry.db, owner="old-", scopes=["read"])[1]
    assert registry.moves.move("ann/legacy-", "ann/renamed", actor="ann").new.name == "renamed"
    # an owner is made by its first adapter as much as by an organisation or a first token: a publish, a copy, a
    # move and a job's target under a new owner take the same rules (a docs audit's finding, session 52:
    # `vera publish --name alice./x` made `alice.`); an owner that holds the name already keeps working
    events = len(registry.audit())
    for make in (lambda: registry.publish(folder, owner="eve.", name="x", base_model="tiny"),
                 lambda: registry.copy_version(Ref.parse("ann/renamed:2"), owner="bob-", name="copy", actor="bob-"),
                 lambda: registry.moves.move("ann/renamed", "a--b/renamed", actor="ann"),
                 lambda: Jobs(registry).submit({"demo": True}, owner="frank--x", target="frank--x/run")):
        with pytest.raises(InvalidInput, match="A new owner's name '.*' (ends with|holds) .* Hugging Face Hub"):
            make()
    assert len(registry.audit()) == events and {v.owner for v in registry.list_versions().items} == {"ann"}
    assert registry.publish(folder, owner="old-", name="kept", base_model="tiny").ref == "old-/kept:1"  # a user's


def test_control_characters_are_refused_on_every_database(registry: Registry, tmp_path: Path) -> None:
    source = make_adapter(tmp_path / "a")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"description": "bad\x00"}, "description contains the control character"),
        ({"base_model": "tiny\nllama"}, "base_model contains the control character"),
        ({"base_revision": "v\x1b1"}, "base_revision contains the control character"),
        ({"metrics": {"note": "nul\x00"}}, "metrics contains a NUL character"),
        ({"metrics": {"curve": list(range(300_000))}}, "metrics is .* bytes as JSON; the limit is"),
        # keys and texts a terminal would run (`vera show`: an outsider's, session 38)
        ({"metrics": {"\x1b[2Jx\nFAKE": 1}}, "metrics's key .* contains the control character '.x1b'"),
        ({"metrics": {"labels": ["ok", "p\u202es"]}}, r"metrics\.labels\[1\]'s text 'p.u202es' contains '.u202e'"),
        ({"tags": [f"t{i}" for i in range(65)]}, "at most 64 tags"),
    ]
    for changes, message in cases:
        kwargs: dict[str, Any] = {"owner": "ann", "name": "x", "base_model": "tiny", **changes}
        with pytest.raises(InvalidInput, match=message):
            registry.publish(source, **kwargs)
    with pytest.raises(InvalidInput, match="q contains the control character"):
        registry.list_versions(text="a\x00b")
    assert registry.list_versions().items == []


@pytest.mark.parametrize(("renamed", "targets", "said"), [
    ("model.layers.0.self_attn.\x1b]0;pwned\x07\x1b[31mq_proj", ".*_proj",
     r"Tensor name '.*\\x1b\]0;pwned.*' is not a module path: expected letters, digits"),
    ("model.layers.0.self_attn\n\x1b[2J\x1b[Hfake.q_proj", None, r"Tensor name '.*\\n\\x1b\[2J.*' is not a module"),
    ("model.layers.0.self_attn.q\u202eproj", ".*proj", r"Tensor name '.*\\u202eproj.*' is not a module path"),
    (None, ["q_proj", "v_proj\x1b[2J"], r"adapter_config.json's module name 'v_proj\\x1b\[2J' contains the "
                                         r"control character"),
    (None, {"layers_pattern": "layers\u202e", "layers_to_transform": [0]},
     r"adapter_config.json's module name 'layers\\u202e' contains '\\u202e'"),
], ids=["osc", "newline", "bidi", "target", "layers-pattern"])
def test_layer_names_a_terminal_would_run_are_refused_at_publish(registry: Registry, tmp_path: Path,
                                                                 renamed: str | None, targets: Any, said: str) -> None:
    """Module paths are shown by `vera compare`, `vera show` and written into LoRA exports' READMEs: an escape
    sequence or newline in a tensor name cleared the screen of whoever compared the version (an outsider's finding,
    session 39). Refused, naming the name as ASCII; nothing stored."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    source = make_adapter(tmp_path / "a")
    weights, config = source / "adapter_model.safetensors", source / "adapter_config.json"
    if renamed is not None:
        tensors = load_file(weights)
        for key in [k for k in tensors if ".layers.0.self_attn.q_proj." in k]:
            tensors[key.replace("model.layers.0.self_attn.q_proj", renamed)] = tensors.pop(key)
        with safe_open(weights, "pt") as f:
            metadata = f.metadata()
        sizes = json.loads(metadata[META_IN_FEATURES])  # the layer sizes it records name the layer too
        sizes[renamed] = sizes.pop("model.layers.0.self_attn.q_proj")
        save_file(tensors, weights, {**metadata, META_IN_FEATURES: json.dumps(sizes)})
    if targets is not None:
        changes = targets if isinstance(targets, dict) else {"target_modules": targets}
        config.write_text(json.dumps({**json.loads(config.read_text()), **changes}))
    with pytest.raises(InvalidInput, match=said):
        registry.publish(source, owner="ann", name="esc", base_model="tiny")
    assert registry.list_versions().items == []


def test_an_adapter_of_more_layers_than_any_model_has_is_refused(registry: Registry, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Each adapted layer costs calls in every comparison, export and load whatever its size; an adapter may adapt
    at most MAX_ADAPTED_LAYERS (16,384; every linear layer of a 405B model is 882). Here the bound is lowered to
    fewer than the tiny model's layers."""
    from registry.services import validation

    source = make_adapter(tmp_path / "a")
    monkeypatch.setattr(validation, "MAX_ADAPTED_LAYERS", 3)
    with pytest.raises(InvalidInput, match=r"The adapter adapts \d+ layers; the registry takes at most 3 .*Check its "
                                           "target_modules"):
        registry.publish(source, owner="ann", name="many", base_model="tiny")
    assert registry.list_versions().items == []


#: (method, path and query, the part the refusal names): control characters where no name or value holds one.
CONTROLLED = [
    ("GET", "/api/v1/adapters/eve/x%01y", "path segment 'x\\x01y' holds the control character U+0001"),
    ("GET", "/api/v1/orgs/ac%7Fme", "path segment 'ac\\x7fme' holds the control character U+007F"),
    ("GET", "/api/v1/adapters/eve/x/versions/pr%C2%85od/files", "holds the control character U+0085"),
    ("POST", "/api/v1/adapters/eve/x%0A/versions", "path segment 'x\\n' holds"),  # before 401 and 413
    ("GET", "/api/v1/adapters?owner=ev%09e", "query parameter owner ('ev\\te') holds the control character U+0009; "
                                             "owner takes a name or value without control characters"),
    ("GET", "/api/v1/adapters?sort=-metrics.a%C2%9Fb", "query parameter sort"),
    ("GET", "/api/v1/adapters?q=a%0Ab", "q takes one line of text without control characters"),
    ("GET", "/api/v1/adapters?filter=r%20%3C%203%0D", "filter takes text that may span lines (tabs and newlines)"),
    ("GET", "/api/v1/events?action=pub%1Blish", "query parameter action"),
    ("GET", "/api/v1/jobs?owner=eve&status=que%08ued", "query parameter status"),
]


@pytest.mark.parametrize(("method", "target", "said"), CONTROLLED, ids=[t for _, t, _ in CONTROLLED])
def test_control_characters_in_a_path_or_query_are_refused_before_anything(guarded: dict[str, Any], method: str,
                                                                           target: str, said: str) -> None:
    """As a NUL byte: 422 saying which part holds which character and what it takes, before the token is checked
    (none is sent here) or a body read; under /hf the Hub's 404 (below)."""
    answer = httpx.request(method, f"{guarded['url']}{target}", content=b"x" * 100 if method == "POST" else None)
    assert answer.status_code == 422 and answer.json()["type"] == "/problems/invalid_input", answer.text
    assert said in answer.json()["detail"], answer.json()["detail"]
    assert answer.json()["instance"].isprintable()


def test_free_text_may_hold_what_stored_text_may(guarded: dict[str, Any]) -> None:
    """A filter spans lines (tabs and newlines); the services check the rest as they check stored text: search text and
    a base model's name are one line of plain text, which holds no C1 character (\x85 is NEL, a line break)."""
    headers = {"Authorization": f"Bearer {guarded['token']}"}
    for query in ("filter=r%20%3E%201%0Aand%09r%20%3C%2010", "q=caf%C3%A9"):
        answer = httpx.get(f"{guarded['url']}/api/v1/adapters?{query}", headers=headers)
        assert answer.status_code == 200, (query, answer.text)
    for query, said in (("q=a%09b", "q takes one line of text"), ("base_model=a%7F", "base_model takes one line"),
                        ("q=caf%C2%85", "q contains the control character '\\x85'"),
                        ("base_model=tiny%C2%85", "base_model contains the control character '\\x85'")):
        answer = httpx.get(f"{guarded['url']}/api/v1/adapters?{query}", headers=headers)
        assert answer.status_code == 422 and said in answer.json()["detail"], (query, answer.text)
    hub = httpx.get(f"{guarded['url']}/hf/eve/x%01/resolve/main/README.md", headers=headers)
    assert hub.status_code == 404 and hub.headers["x-error-code"] == "RepoNotFound", hub.headers
    assert hub.headers["x-error-message"].isprintable() and "U+0001" in hub.headers["x-error-message"]


def test_a_refused_control_character_runs_no_query(registry: Registry) -> None:
    """In the app over each database: the refusal comes before the token's lookup and any route's query."""
    token = create_token(registry.db, owner="eve", scopes=["read", "publish"])[1]
    client = TestClient(create_app(registry, ApiOptions(require_tokens=True)),
                        headers={"Authorization": f"Bearer {token}"})
    statements: list[str] = []
    event.listen(registry.db.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    for method, target, said in CONTROLLED:
        answer = client.request(method, target)
        assert answer.status_code == 422 and said in answer.json()["detail"], (target, answer.text)
    assert statements == []
    assert client.get("/api/v1/adapters/eve/xy").status_code == 404 and statements  # a name: looked up


def test_a_job_spec_names_no_place_on_the_worker(registry: Registry, tmp_path: Path) -> None:
    jobs = Jobs(registry, base_models=["minilm", "org/allowed"])
    with pytest.raises(InvalidInput, match="training.output_dir cannot be set in a job"):
        jobs.submit({"demo": True, "training": {"output_dir": str(tmp_path)}}, owner="ann", target="ann/x")
    existing, missing = tmp_path, tmp_path / "missing"
    messages = []
    for base in (str(existing), str(missing), "../../etc"):
        with pytest.raises(InvalidInput) as refused:
            jobs.submit({"demo": True, "base_model": base}, owner="ann", target="ann/x")
        messages.append(str(refused.value).replace(base, "BASE"))
    assert len(set(messages)) == 1 and "VERA_JOB_BASE_MODELS" in messages[0]  # nothing learnt about the disk
    with pytest.raises(InvalidInput, match="NUL character"):
        jobs.submit({"demo": True, "text_column": "t\x00"}, owner="ann", target="ann/x")
    assert jobs.list_jobs() == []


def test_fsck_finds_and_gc_removes_what_a_killed_publish_left(registry: Registry, tmp_path: Path) -> None:
    old = time.time() - 2 * 3600
    partial = Path(registry.blobs.url) / "tmp" / ("ab" * 16)  # a put() killed before its rename
    partial.write_bytes(b"half a blob")
    os.utime(partial, (old, old))
    fresh = Path(registry.blobs.url) / "tmp" / ("cd" * 16)  # a put() in progress: left alone
    fresh.write_bytes(b"being written")
    upload = Path(tempfile.mkdtemp(prefix=UPLOAD_PREFIX))  # a request folder of a killed server
    (upload / "adapter_model.safetensors").write_bytes(b"x")
    os.utime(upload, (old, old))
    report = registry.fsck()
    assert report["partial_blobs"] == ["ab" * 16] and upload.name in report["stale_uploads"]
    assert registry.gc()["leftovers_removed"] >= 2
    assert not partial.exists() and not upload.exists() and fresh.exists()
    assert registry.fsck()["partial_blobs"] == []


def test_costly_routes_are_rate_limited_per_caller(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    with registry_in_thread(url, tmp_path / "blobs", VERA_REQUIRE_TOKENS="true",
                            VERA_COSTLY_REQUESTS_PER_MINUTE="3") as base:
        db = Database(url)
        alice, bob, carol = (create_token(db, owner=o, scopes=["read", "publish"])[1]
                             for o in ("alice", "bob", "carol"))
        db.engine.dispose()
        files = {part: (f, (make_adapter(tmp_path / "a") / f).read_bytes()) for part, f in (
            ("adapter_config", "adapter_config.json"), ("adapter_model", "adapter_model.safetensors"))}
        assert httpx.post(f"{base}/api/v1/adapters/alice/m/versions", files=files, data={"base_model": "tiny"},
                          headers={"Authorization": f"Bearer {alice}"}).status_code == 201
        verify = f"{base}/api/v1/adapters/alice/m/versions/1/verify"
        answers = [httpx.post(verify, headers={"Authorization": f"Bearer {alice}"}, timeout=60) for _ in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert answers[3].headers["content-type"] == "application/problem+json" and int(
            answers[3].headers["retry-after"]) >= 1 and "VERA_COSTLY_REQUESTS_PER_MINUTE" in answers[3].text
        # another caller has its own budget, and cheap reads are not counted
        assert httpx.post(verify, headers={"Authorization": f"Bearer {bob}"}, timeout=60).status_code == 200
        # a token alice mints herself shares her budget (session 13's attack minted 200 to dodge the limit)
        minted = httpx.post(f"{base}/api/v1/tokens", json={"scopes": ["read"]},
                            headers={"Authorization": f"Bearer {alice}"}, timeout=30)
        assert minted.status_code == 201, minted.text
        assert httpx.post(verify, headers={"Authorization": f"Bearer {minted.json()['secret']}"},
                          timeout=60).status_code == 429
        assert httpx.get(f"{base}/api/v1/adapters/alice/m/versions/1",
                         headers={"Authorization": f"Bearer {alice}"}).status_code == 200
        # the Hub protocol's model info and tree build forms (a LoRA export, A and B) as downloads do: a build counts
        # against the caller's budget, a read of what is built does not (they built forms past a spent budget: an
        # outsider's finding, session 45); bob has spent one of his three (the verify above)
        assert httpx.post(f"{base}/api/v1/adapters/alice/m/versions", files=files, data={"base_model": "tiny"},
                          headers={"Authorization": f"Bearer {alice}"}).status_code == 201
        hub = [httpx.get(f"{base}/hf/api/models/alice/m/{path}", headers={"Authorization": f"Bearer {bob}"},
                         timeout=60).status_code for path in (
            "revision/1+lora", "tree/1+lora", "tree/1+lora", "revision/1+lora", "revision/1+projection",
            "revision/1+projection", "revision/2+lora")]
        assert hub == [200, 200, 200, 200, 200, 200, 429]  # two builds spent his budget; the third is refused
        # a file's GET through /hf counts once, building its form or not (a build counted twice: a re-check's finding)
        files = [httpx.get(f"{base}/hf/alice/m/resolve/{revision}/adapter_config.json", timeout=60,
                           headers={"Authorization": f"Bearer {carol}"}).status_code
                 for revision in ("2+projection", "1+seed-only", "2+seed-only", "2")]
        assert files == [307, 307, 307, 429]


def test_a_user_holds_a_bounded_number_of_live_tokens(registry: Registry) -> None:
    ids = [create_token(registry.db, owner="many", scopes=["read"])[0] for _ in range(MAX_LIVE_TOKENS)]
    with pytest.raises(Conflict, match=f"many holds {MAX_LIVE_TOKENS} live tokens.*revoke unused ones"):
        create_token(registry.db, owner="many", scopes=["read"])
    revoke_token(registry.db, ids[0])  # a revoked token frees its place; another user is not counted
    create_token(registry.db, owner="many", scopes=["read"])
    create_token(registry.db, owner="other", scopes=["read"])


def test_short_lived_tokens_count_against_a_daily_limit(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    """Second attack round: tokens expiring at once were never live, so 300 were created past the live cap."""
    monkeypatch.setattr(tokens, "MAX_TOKENS_PER_DAY", 5)
    for _ in range(5):
        create_token(registry.db, owner="brief", scopes=["read"], expires_in=timedelta(seconds=0.001))
    with pytest.raises(Conflict, match="created 5 tokens in the last 24 hours"):
        create_token(registry.db, owner="brief", scopes=["read"], expires_in=timedelta(seconds=0.001))


def test_tokens_expire(registry: Registry) -> None:
    with pytest.raises(InvalidInput, match="must live a positive time"):
        create_token(registry.db, owner="ann", scopes=["read"], expires_in=timedelta(0))
    token_id, secret = create_token(registry.db, owner="ann", scopes=["read"], expires_in=timedelta(days=1))
    assert authenticate(registry.db, secret).owner == "ann"
    with registry.db.session() as s:  # a day later
        row = s.get(AccessToken, token_id)
        assert row is not None and row.expires_at is not None
        row.expires_at -= timedelta(days=1, seconds=1)
    with pytest.raises(Unauthorized, match="The token expired at .* ask for a new one"):
        authenticate(registry.db, secret)
    listed = {t.id: t for t in list_tokens(registry.db)}
    assert listed[token_id].expires_at is not None and not listed[token_id].revoked


def test_no_write_lands_on_storage_that_is_not_mounted(registry: Registry, tmp_path: Path) -> None:
    """A replica whose blob disk was not mounted took publishes into the empty mount point beneath, where no other
    replica looked (an operator's walk, session 14). Every write is refused while the storage holds no blob and
    the database names some, and nothing is written there; once mounted, writes go on."""
    import shutil

    from registry.domain.errors import StorageUnavailable
    from registry.store.blobs import FsspecBlobStore

    registry.publish(make_adapter(tmp_path / "a"), owner="ann", name="a", base_model="tiny-llama")
    mount_point = tmp_path / "mount-point"
    replica = Registry(registry.db, FsspecBlobStore(str(mount_point)))
    with pytest.raises(StorageUnavailable, match="holds no blob, but the registry's database names some: it is not "
                                                 "mounted"):
        replica.publish(make_adapter(tmp_path / "b", seed=1), owner="ann", name="b", base_model="tiny-llama")
    assert [p for p in mount_point.rglob("*") if p.is_file()] == []  # not a byte beneath the mount point
    assert [v.name for v in registry.list_versions(owner="ann").items] == ["a"]  # and no row
    shutil.copytree(registry.blobs.root, mount_point, dirs_exist_ok=True)  # mounted
    assert replica.publish(make_adapter(tmp_path / "b", seed=1), owner="ann", name="b",
                           base_model="tiny-llama").version == 1


def test_ready_says_when_storage_is_empty_under_a_database_that_names_blobs_or_hangs(
        registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """/ready said ok over a blob folder that was not mounted (every download then a 404), and a hung object store
    kept /ready from answering at all (an operator's walk, session 14)."""
    from registry.services import status as status_module
    from registry.services.status import Status
    from registry.store.blobs import FsspecBlobStore

    registry.publish(make_adapter(tmp_path / "a"), owner="ann", name="a", base_model="tiny-llama")
    assert Status(registry.db, registry.blobs).readiness() == {"database": "ok", "storage": "ok"}
    unmounted = Status(registry.db, FsspecBlobStore(str(tmp_path / "not-mounted")))
    (tmp_path / "not-mounted" / "sha256" / "43" / "20").mkdir(parents=True)  # an empty leftover folder is no blob
    assert unmounted.readiness()["storage"].startswith("error: StorageUnavailable (the storage holds no blob, but "
                                                       "the database names some: is it mounted")
    monkeypatch.setattr(status_module, "READY_CHECK_TIMEOUT_S", 0.5)
    release = threading.Event()
    hung = FsspecBlobStore(str(tmp_path / "blobs"))
    calls: list[float] = []

    def hanging() -> None:
        calls.append(time.monotonic())
        release.wait(30)

    monkeypatch.setattr(hung, "check", hanging)
    slow = Status(registry.db, hung)
    started = time.monotonic()
    for _ in range(3):  # asked again while it hangs: reported, and not started again
        assert slow.readiness()["storage"] == "error: no answer within 0.5 s; the server's log says more"
    assert time.monotonic() - started < 10 and len(calls) == 1
    release.set()
    time.sleep(0.2)
    assert slow.readiness()["storage"] == "ok"


def test_numbers_and_names_that_made_500s_are_clear_refusals(guarded: dict[str, Any], tmp_path: Path) -> None:
    """An outsider's findings (session 31): each of these was a 500 (an OverflowError, ValueError, IDNAError,
    RuntimeError or a dataclass error escaping), some to anonymous callers. Each is now a 4xx saying what was
    expected, and changes nothing."""
    url, auth = guarded["url"], {"Authorization": f"Bearer {guarded['token']}"}
    source = make_adapter(tmp_path / "a")
    files = {part: (f, (source / f).read_bytes()) for part, f in (("adapter_config", "adapter_config.json"),
                                                                   ("adapter_model", "adapter_model.safetensors"))}

    def post(path: str, json_text: str | None = None, **kwargs: Any) -> httpx.Response:
        if json_text is not None:
            kwargs.update(content=json_text, headers={**auth, "Content-Type": "application/json"})
        return httpx.post(f"{url}/api/v1{path}", **{"headers": auth, "timeout": 60, **kwargs})

    huge = "1" + "0" * 400  # an integer beyond a float's range
    listed = httpx.get(f"{url}/api/v1/adapters", params={"filter": f"metrics.acc > {huge}"}, headers=auth, timeout=60)
    assert listed.status_code == 422 and "a number within a float's range" in listed.json()["detail"], listed.text
    # a publish whose metrics hold one: stored, left out of the searchable metrics (as infinities are)
    made = post("/adapters/eve/numbers/versions", files=files,
                data={"base_model": "tiny", "metrics": f'{{"acc": 0.5, "big": {huge}}}'})
    assert made.status_code == 201, made.text
    found = httpx.get(f"{url}/api/v1/adapters", params={"filter": "metrics.acc = 0.5"}, headers=auth, timeout=60)
    assert [v["name"] for v in found.json()["items"]] == ["numbers"], found.text
    digits = "9" * 5000  # more digits than Python converts
    refused = post("/adapters/eve/digits/versions", files=files,
                   data={"base_model": "tiny", "metrics": f'{{"acc": {digits}}}'})
    assert refused.status_code == 422 and "an integer of over 4,300 digits" in refused.json()["detail"], refused.text
    assert httpx.get(f"{url}/api/v1/adapters/eve/digits", headers=auth, timeout=60).status_code == 404
    scored = post("/adapters/eve/numbers/versions/1/evaluations", json={"name": "task", "metrics": {"acc": 10**400}})
    assert scored.status_code == 422 and "only finite numbers within a float's range" in scored.text, scored.text
    long_int = post("/adapters/eve/numbers/versions/1/evaluations", f'{{"name": "t", "metrics": {{"a": {digits}}}}}')
    # FastAPI's own JSON reading, which says only "There was an error parsing the body": the problem says why
    assert long_int.status_code == 400 and "The JSON body holds an integer of over 4,300 digits" in long_int.text
    nested = post("/adapters/eve/numbers/versions/1/evaluations", '{"name": "t", "metrics": ' + "[" * 5000)
    assert nested.status_code == 400 and "The JSON body nests too deeply" in nested.text, nested.text
    # 300 deep: read, but deeper than replies can be written (pydantic stops at 255): it was stored, then every
    # listing that showed it answered 500, anonymous ones and the webhook dispatcher too (an outsider's re-check)
    deep = '{"a": ' * 300 + "1" + "}" * 300
    details = post("/adapters/eve/numbers/versions/1/evaluations", '{"name": "deep", "metrics": {"acc": 1}, '
                   f'"details": {deep}}}')
    assert details.status_code == 422 and "nests lists and objects more than 64 levels deep" in details.text
    deep_metrics = post("/adapters/eve/deep/versions", files=files, data={"base_model": "tiny", "metrics": deep})
    assert deep_metrics.status_code == 422 and "more than 64 levels deep" in deep_metrics.text, deep_metrics.text
    assert httpx.get(f"{url}/api/v1/adapters/eve/deep", headers=auth, timeout=60).status_code == 404
    listed_all = httpx.get(f"{url}/api/v1/adapters", headers=auth, timeout=60)
    evaluated = httpx.get(f"{url}/api/v1/adapters/eve/numbers/versions/1/evaluations", headers=auth, timeout=60)
    assert listed_all.status_code == evaluated.status_code == 200 and "deep" not in evaluated.text
    for selector in ("²", "١"):  # digits to str.isdigit(), and int('١') is 1: not version numbers
        answer = httpx.get(f"{url}/api/v1/adapters/eve/numbers/versions/{selector}", headers=auth, timeout=60)
        assert answer.status_code in (404, 422) and answer.headers["content-type"] == "application/problem+json"
    hook = post("/webhooks", json={"owner": "eve", "url": "http://xn--/x"})
    assert hook.status_code == 422 and "is not a URL" in hook.json()["detail"], hook.text
    llama = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4, "vocab_size": 100}
    for config in ({"model_type": "bert", "hidden_size": -5, "num_hidden_layers": 1},
                   {"model_type": "bert", "hidden_size": 1e400, "num_hidden_layers": 1},
                   # helper-84's: ZeroDivisionError, AttributeError, AssertionError from transformers' own checks
                   {**llama, "num_attention_heads": 0}, {**llama, "num_key_value_heads": 0},
                   {**llama, "torch_dtype": "float128"}, {**llama, "model_type": "whisper"}):
        base = post("/base-models", json.dumps({"name": "odd-base", "config": config}))
        assert base.status_code == 422 and "config" in base.json()["detail"], base.text
    def with_config(name: str, config_text: str) -> httpx.Response:
        """A publish of the same vectors under ``config_text`` as adapter_config.json."""
        folder = tmp_path / name
        folder.mkdir()
        (folder / "adapter_config.json").write_text(config_text)
        (folder / "adapter_model.safetensors").write_bytes((source / "adapter_model.safetensors").read_bytes())
        return publish(guarded, folder, name)

    assert with_config("nested", "[" * 12000 + "]" * 12000).status_code == 422
    assert with_config("bigint", f'{{"r": {digits}}}').status_code == 422
    config = json.loads((source / "adapter_config.json").read_text())  # Infinity, stored, was served back as JSON
    refused = with_config("infinite", json.dumps({**config, "d_initial": float("inf")}))  # no strict parser reads
    assert refused.status_code == 422 and "d_initial must be a finite number" in refused.text, refused.text
    names = {v["name"] for v in httpx.get(f"{url}/api/v1/adapters", headers=auth, timeout=60).json()["items"]}
    assert not names & {"digits", "nested", "bigint", "infinite"}


JSON = "Content-Type: application/json\r\n"


def _quick_gate(app: Any) -> Any:
    """``app`` with its RequestGate's body bounds 1 s instead of 60 (set before the app first starts)."""
    [gate] = [m for m in app.user_middleware if m.cls.__name__ == "RequestGate"]
    gate.kwargs["body_timeout_s"] = 1.0
    return app


def test_a_caller_that_hangs_up_mid_body_is_no_server_error(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A JSON body, a form and a publish's upload cut off by their caller were each a 500 with a traceback in the
    log and the 5xx count, for a token holder and for an anonymous lookup alike (an outsider's finding, session 54):
    each is one line and a 499 (the caller reads no answer), and nothing is stored."""
    import logging

    url = f"sqlite:///{tmp_path / 'r.db'}"
    with registry_in_thread(url, tmp_path / "blobs", VERA_REQUIRE_TOKENS="true", VERA_ANONYMOUS_READ="true",
                            VERA_METRICS_TOKEN="metrics-0123456789abcdef") as base:
        db = Database(url)
        token = create_token(db, owner="eve", scopes=["read", "publish"])[1]
        bearer = f"Authorization: Bearer {token}\r\n"
        form = "Content-Type: multipart/form-data; boundary=b\r\n"
        part = b'--b\r\nContent-Disposition: form-data; name="adapter_model"; filename="a.safetensors"\r\n\r\n'
        host, port = base.removeprefix("http://").split(":")
        with caplog.at_level(logging.INFO):
            for path, headers, start in (
                    ("/api/v1/tokens", f"{bearer}{JSON}", b'{"scopes": ["read"], '),
                    ("/api/v1/adapters/lookup", JSON, b'{"refs": ['),  # anonymous
                    ("/api/v1/adapters/eve/cut/versions", f"{bearer}{form}", part + b"x" * 300_000),
                    ("/api/v1/jobs", f"{bearer}{form}", part.replace(b"adapter_model", b"dataset") + b"text\n")):
                with socket.create_connection((host, int(port)), timeout=10) as sock:
                    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: 1000000\r\n\r\n"
                                 .encode() + start)
                    time.sleep(0.3)  # the route is reading the body
            deadline = time.monotonic() + 20
            while (scraped := httpx.get(f"{base}/metrics", headers={
                    "Authorization": "Bearer metrics-0123456789abcdef"}).text).count('status="499"} 1.0') < 4 \
                    and time.monotonic() < deadline:
                time.sleep(0.2)
        assert 'status="500"' not in scraped and scraped.count('status="499"} 1.0') == 4, scraped
        said = [r for r in caplog.records if "closed the connection before its body was whole" in r.getMessage()]
        assert len(said) == 4 and not any(r.levelno >= logging.ERROR for r in caplog.records), caplog.text
        assert httpx.get(f"{base}/api/v1/adapters/eve/cut", headers={"Authorization": f"Bearer {token}"}
                         ).status_code == 404
        db.engine.dispose()
    assert not [p for p in (tmp_path / "blobs").rglob("*") if p.is_file()]  # no part of the upload kept


def test_form_text_that_is_not_utf8_is_refused_not_read_as_latin1(tmp_path: Path) -> None:
    """A publish's base_model sent as the bytes \\xff\\xfe made a base model named "ÿþ" for every publisher, and a
    description holding a lone surrogate's UTF-8 bytes was stored as other text (Starlette reads a part that is not
    UTF-8 as Latin-1: an outsider's finding, session 54). Each is a 422 saying so, nothing stored; UTF-8 text outside
    ASCII is taken as it is."""
    source = make_adapter(tmp_path / "a")
    url = f"sqlite:///{tmp_path / 'r.db'}"

    def publish(base: str, name: str, **fields: bytes) -> httpx.Response:
        parts = b"".join(b'--b\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n' % (k.encode(), v)
                         for k, v in fields.items())
        for part, file in (("adapter_config", "adapter_config.json"), ("adapter_model", "adapter_model.safetensors")):
            parts += (b'--b\r\nContent-Disposition: form-data; name="%s"; filename="%s"\r\n\r\n'
                      % (part.encode(), file.encode())) + (source / file).read_bytes() + b"\r\n"
        return httpx.post(f"{base}/api/v1/adapters/local/{name}/versions", content=parts + b"--b--\r\n",
                          headers={"Content-Type": "multipart/form-data; boundary=b"}, timeout=60)

    with registry_in_thread(url, tmp_path / "blobs") as base:
        for fields, byte in (({"base_model": b"\xff\xfe"}, "\\xff"),
                             ({"base_model": b"tiny", "description": b"ok \xed\xa0\x80"}, "\\xed"),
                             ({"base_model": b"tiny", "metrics": b'{"acc": "v\xff"}'}, "\\xff")):
            refused = publish(base, "x", **fields)
            assert refused.status_code == 422 and refused.json()["type"] == "/problems/invalid_input", refused.text
            said = refused.json()["detail"]
            assert said.startswith(f"A form part holds text that is not valid utf-8 (byte b'{byte}'"), said
            assert refused.json()["detail"].endswith("; send text as UTF-8."), refused.text
        assert httpx.get(f"{base}/api/v1/adapters").json()["items"] == []
        assert [b["name"] for b in httpx.get(f"{base}/api/v1/base-models").json()] == []
        taken = publish(base, "y", base_model="café-lm".encode(), description="naïve — ✓".encode())
        assert taken.status_code == 201, taken.text
        assert (taken.json()["base_model"], taken.json()["description"]) == ("café-lm", "naïve — ✓")
    assert not list((tmp_path / "blobs").rglob("vera-upload-*"))


def test_a_body_sent_without_a_token_must_be_whole_in_time(tmp_path: Path) -> None:
    """An anonymous lookup (the one POST a caller without a token may send, with VERA_ANONYMOUS_READ) trickled a
    byte every 2.5 s was answered after 155 s (an outsider's finding, session 36): a body without a token must be
    whole within the stall bound (60 s; 1 s here), while a token holder's is bounded by its stalls only."""
    db = Database(f"sqlite:///{tmp_path / 'r.db'}")
    db.upgrade()
    registry = Registry(db, FsspecBlobStore(str(tmp_path / "blobs")))
    _, token = create_token(db, owner="ann", scopes=["read"])
    app = _quick_gate(create_app(registry, ApiOptions(require_tokens=True, anonymous_read=True)))
    body = json.dumps({"refs": ["ann/nothing:1"]}).encode()
    with in_thread(app) as url:
        answer, took = trickle(url, "/api/v1/adapters/lookup", body, every_s=0.2, headers=JSON)
        assert answer.startswith(b"HTTP/1.1 408") and b"was not whole within 1 s" in answer, answer
        assert took < 3 < len(body) * 0.2  # cut off long before the trickle would end
        signed, _ = trickle(url, "/api/v1/adapters/lookup", body, every_s=0.05,
                            headers=f"{JSON}Authorization: Bearer {token}\r\n")
    assert signed.startswith(b"HTTP/1.1 200"), signed
    # where tokens are not required, a header proves nothing: any Authorization header left the deadline off
    with in_thread(_quick_gate(create_app(registry, ApiOptions(require_tokens=False)))) as url:
        answer, _ = trickle(url, "/api/v1/adapters/lookup", body, every_s=0.2,
                            headers=f"{JSON}Authorization: Bearer anything\r\n")
    assert answer.startswith(b"HTTP/1.1 408") and b"was not whole within 1 s" in answer, answer
    db.engine.dispose()

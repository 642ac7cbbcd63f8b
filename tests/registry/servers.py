"""Real registry servers for tests: `vera serve` in a subprocess on a free loopback port, or an app served by uvicorn
in a thread of the test process (in_thread)."""

from __future__ import annotations

import atexit
import functools
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
from sqlalchemy import make_url

from registry.client import shared_ssl_context
from registry.store.database import Database
from tests.commands import VERA, VERA_COMMAND  # noqa: F401 - VERA re-exported: tests import both from here


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def in_thread(app: Any, what: str = "the app", **options: Any) -> Iterator[str]:
    """Serve ``app`` (ASGI) with uvicorn in a thread of this process on a free loopback port (or ``options``' port,
    with uvicorn's other ``options``) for the duration of the block (so that a test can reach into its services);
    yields its URL."""
    import uvicorn

    # log_config None: uvicorn's own would give its loggers handlers on this test's stderr, which pytest closes after
    # it ("--- Logging error ---" in later tests); its records go to pytest's capture instead
    config = {"host": "127.0.0.1", "log_level": "warning", "log_config": None, "ws": "none", **options}
    port = config.setdefault("port", free_port())
    server = uvicorn.Server(uvicorn.Config(app, **config))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive free ports (`vera cluster --replicas N` takes ``--port`` and the N-1 after
    it), chosen below the kernel's ephemeral range, so that no port the kernel hands another test (free_port, a
    client's own end of a connection) can take one of them meanwhile."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(200):
        first = random.randrange(10_000, low - count)
        sockets = [socket.socket() for _ in range(count)]
        try:
            for offset, sock in enumerate(sockets):
                sock.bind(("127.0.0.1", first + offset))
            return first
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError(f"no {count} consecutive free ports below {low}")


@contextmanager
def running_server(database_url: str, storage: Path, *, host: str = "127.0.0.1", log_path: Path | None = None,
                   **env: str) -> Iterator[str]:
    """Start `vera serve` against an upgraded database; yield its URL; stop it afterwards. On PostgreSQL or object
    storage (a shared registry, where the API requires tokens unless told otherwise) in local mode on loopback
    unless ``env`` says. Its output goes to ``log_path`` if given."""
    environment = _server_environment(database_url, storage, host, env)
    port = free_port()
    with running_vera(["serve", "--host", host, "--port", str(port)], port, log_path=log_path, **environment) as url:
        yield url


@contextmanager
def registry_in_thread(database_url: str, storage: Path, **env: str) -> Iterator[str]:
    """What running_server serves (on loopback; ``env`` as there), from a thread of this process: the app `vera
    serve` builds (registry.bootstrap: build_api, its token decision, uvicorn's options) from the settings ``env``
    gives over this process's environment. For the tests of what the API and the client do, which need no process of
    their own: a `vera serve` costs 3-5 s of CPU (its imports, torch at a first publish), ~100 in the suite (session
    52's profile), where this process has them loaded. Its logs go to this process's logging (pytest's), and it
    sees what a test changes in this process; a test of the command, its logs, signals or environment runs
    running_server."""
    from unittest import mock

    from registry.bootstrap import build_api, server_options, tokens_decided
    from registry.settings import Settings

    with mock.patch.dict(os.environ, _server_environment(database_url, storage, "127.0.0.1", env)):
        settings = tokens_decided(Settings(), "127.0.0.1")
    app, registry, _ = build_api(settings)
    try:
        with in_thread(app, "the registry", **server_options("127.0.0.1", free_port(), settings)) as url:
            yield url
    finally:
        registry.db.close()


def _server_environment(database_url: str, storage: Path, host: str, env: dict[str, str]) -> dict[str, str]:
    """The VERA_* variables of a test's server on ``host`` over ``database_url`` (upgraded to head here) and
    ``storage`` (a folder, unless ``env`` names another VERA_STORAGE_URL), with ``env``: in local mode on loopback
    over a shared backend too (where the API requires tokens) unless ``env`` says."""
    from registry.settings import Settings

    shared = Settings(database_url=database_url, storage_url=env.get("VERA_STORAGE_URL", str(storage))).shared_backend
    if shared and host == "127.0.0.1" and "VERA_REQUIRE_TOKENS" not in env:
        env = {**env, "VERA_REQUIRE_TOKENS": "false"}
    at_head(database_url)
    return {"VERA_DATABASE_URL": database_url, "VERA_STORAGE_URL": str(storage), **env}


def at_head(database_url: str) -> None:
    """Upgrade the database at ``database_url`` to head: a SQLite file not there yet is made as a copy of this
    process's template (head_sqlite), the others upgraded in place."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).exists():
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)  # as the registry makes its folder
        shutil.copyfile(head_sqlite(), url.database)
    else:
        upgraded(database_url)


def upgraded(database_url: str) -> None:
    """Run the migrations on the database at ``database_url``; its connections closed afterwards (a template must
    have none when it is copied)."""
    db = Database(database_url)
    try:
        db.upgrade()
    finally:
        db.engine.dispose()


@functools.cache
def head_sqlite() -> Path:
    """A SQLite registry database upgraded to head, made once per test process (in a folder removed when it exits):
    the thirty-odd migrations take 0.2-0.3 s of CPU, and ~800 tests and servers start on a new database. The
    migrations still run, here, and each migration's own test runs them from an empty database."""
    folder = Path(tempfile.mkdtemp(prefix="vera-head-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = folder / "head.db"
    upgraded(f"sqlite:///{path}")
    assert not Path(f"{path}-wal").exists(), "the template's last connection left its WAL: a copy would not be whole"
    return path


def issued_tokens(database_url: str, *grants: tuple[str, list[str]]) -> list[str]:
    """A token per (owner, scopes), issued in the registry's database as `vera token create` does (the operator's
    way, for a server that requires tokens); the connection is closed afterwards."""
    from registry.services.tokens import create_token

    db = Database(database_url)
    try:
        return [create_token(db, owner=owner, scopes=scopes)[1] for owner, scopes in grants]
    finally:
        db.engine.dispose()


def team_tokens(database_url: str, members: Iterable[str], admins: Iterable[str] = ()) -> dict[str, str]:
    """{name: token}: read and publish scopes for each of ``members``, the admin scope for each of ``admins``
    (issued_tokens)."""
    grants = [(user, ["read", "publish"]) for user in members] + [(user, ["admin"]) for user in admins]
    return dict(zip([user for user, _ in grants], issued_tokens(database_url, *grants), strict=True))


@contextmanager
def running_vera(args: list[str], port: int, *, health: str = "/health", also: tuple[str, ...] = (),
                 log_path: Path | None = None, file_modes_bind: bool = False, **env: str) -> Iterator[str]:
    """Run `vera ARGS` (a server on ``port``) until ``health`` (and every URL in ``also``) answers; yield its URL;
    stop it afterwards. Its output goes to a file (a pipe nobody reads could fill and block it): ``log_path``, or a
    temporary one. ``file_modes_bind``: a test running as root runs it without root's power to override file
    modes (a read-only folder is then read-only to it, as to any user)."""
    with open(log_path, "w+") if log_path is not None else tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen([*VERA_COMMAND, *args], env={**os.environ, **env}, stdout=log,
                                   stderr=subprocess.STDOUT, text=True,
                                   preexec_fn=_without_file_override if file_modes_bind and os.geteuid() == 0
                                   else None)
        url = f"http://127.0.0.1:{port}"
        try:
            for target in (f"{url}{health}", *also):
                wait_for(target, process, log)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def _without_file_override() -> None:
    """In a child of root, before it execs: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from its bounding set, so
    that the program it runs (root still) is refused what file modes refuse."""
    import ctypes

    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def wait_for(url: str, process: subprocess.Popen[str], log: IO[str], seconds: float = 120) -> None:
    """Poll ``url`` until it answers 200; fail with the process's output if it exits or time runs out."""
    deadline = time.monotonic() + seconds
    # one client for every poll: an httpx.get each 0.2 s made a client each time, which loads the certificate store
    # (~20 ms of CPU): 4.6 % of the suite's CPU went there (session 52, py-spy over the whole suite)
    with httpx.Client(timeout=1, verify=shared_ssl_context()) as http:
        while True:
            try:
                if http.get(url).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise RuntimeError(f"{url} did not answer ({process.args}): {log.read()[-2000:]}")
            time.sleep(0.2)


MOTO = Path(sys.executable).parent / "moto_server"


@dataclass
class S3Server:
    """moto's S3 server (S3's HTTP API, spoken to the real botocore and s3fs: the stand-in for S3 or MinIO, which
    cannot be reached offline): ``env`` points botocore and s3fs at it; ``stop()`` takes it away."""

    env: dict[str, str]
    process: subprocess.Popen[str]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)



def s3_objects(env: dict[str, str], bucket: str) -> list[str]:
    """The keys in ``bucket`` of the S3 server ``env`` points at."""
    return [o["Key"] for o in s3_client(env).list_objects_v2(Bucket=bucket).get("Contents", [])]


def s3_client(env: dict[str, str]) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id="testing",
                        aws_secret_access_key="testing", region_name="us-east-1")


@contextmanager
def running_s3(*buckets: str) -> Iterator[S3Server]:
    """A moto S3 server with ``buckets`` made; stopped afterwards (if the test did not stop it)."""
    port = free_port()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen([str(MOTO), "-p", str(port)], stdout=log, stderr=subprocess.STDOUT, text=True)
        server = S3Server(env, process)
        try:
            wait_for(f"http://127.0.0.1:{port}/moto-api/", process, log, seconds=60)
            for bucket in buckets:
                s3_client(env).create_bucket(Bucket=bucket)
            yield server
        finally:
            if process.poll() is None:
                server.stop()


def trickle(url: str, path: str, body: bytes, every_s: float, headers: str = "") -> tuple[bytes, float]:
    """``body`` POSTed to ``path`` a byte every ``every_s`` (its length declared): the whole answer (its head and the
    body its Content-Length declares, which may come in a later packet than the head), and the seconds until its
    first bytes came."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\n{headers}"
                     f"Content-Length: {len(body)}\r\n\r\n".encode())
        started, answer = time.monotonic(), b""
        sock.settimeout(every_s)
        for i in range(len(body) + 1):
            if i < len(body):
                try:
                    sock.sendall(body[i:i + 1])
                except OSError:
                    break
            try:
                answer += sock.recv(4096)
            except TimeoutError:
                continue
            if answer:
                break
        sock.settimeout(10)
        if not answer:
            answer = sock.recv(4096)
        took = time.monotonic() - started
        return _whole_answer(sock, answer), took


def _whole_answer(sock: socket.socket, answer: bytes) -> bytes:
    """``answer`` read on from ``sock`` until its head has ended and its body is as long as its Content-Length says
    (or the server closed the connection)."""
    while True:
        head, ended, body = answer.partition(b"\r\n\r\n")
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        if ended and len(body) >= (int(length.group(1)) if length else 0):
            return answer
        more = sock.recv(4096)
        if not more:
            return answer
        answer += more


def client_calls(monkeypatch: pytest.MonkeyPatch, method: str) -> list[tuple[Any, ...]]:
    """The arguments of every call of ``RegistryClient.<method>`` from now on, in this process (a page, a model
    server, their reads ahead alike)."""
    from registry.client import RegistryClient

    calls: list[tuple[Any, ...]] = []
    original = getattr(RegistryClient, method)

    @functools.wraps(original)
    def recorded(self: RegistryClient, *args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(RegistryClient, method, recorded)
    return calls

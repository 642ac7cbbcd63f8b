"""The deployment's topology as local processes (`vera cluster`): two API replicas, two job workers and the dashboard
on PostgreSQL and an S3-compatible object store (moto's server, which speaks S3's HTTP API to the real s3fs and
botocore clients: the stand-in for S3 or MinIO, which cannot be reached offline)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from registry.client import RegistryClient
from registry.store.database import Database
from tests.registry.adapters import TRIAL_DEMO, make_adapter
from tests.registry.servers import free_port, free_ports, issued_tokens, running_s3, s3_objects

BUCKET = "vera-topology"


@pytest.fixture
def s3() -> Iterator[dict[str, str]]:
    """A moto S3 server and a bucket; the AWS_* variables that point botocore and s3fs at it."""
    pytest.importorskip("boto3")
    with running_s3(BUCKET) as server:
        yield server.env


def objects(env: dict[str, str]) -> list[str]:
    return s3_objects(env, BUCKET)


def start_cluster(args: list[str], env: dict[str, str], log: IO[str]) -> subprocess.Popen[str]:
    # as an operator starts it: without the thread count the test run gives its own processes (tests/conftest.py)
    environment = {k: v for k, v in os.environ.items() if k not in {"OMP_NUM_THREADS", "MKL_NUM_THREADS"}}
    return subprocess.Popen([str(Path(sys.executable).parent / "vera"), "cluster", *args], env={**environment, **env},
                            stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def wait_ready(process: subprocess.Popen[str], log: IO[str], seconds: float = 240) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        log.seek(0)
        text = log.read()
        if "ready:" in text and all(f"api-{i}" in text.split("ready:")[1] for i in range(1)):
            return text
        assert process.poll() is None, f"vera cluster exited with {process.returncode}:\n{text}"
        time.sleep(0.5)
    raise AssertionError("vera cluster did not become ready")


def pids(text: str) -> dict[str, int]:
    return {role: int(pid) for role, pid in re.findall(r"^\s+(\S+)\s+pid (\d+)", text, flags=re.M)}


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_replicas_workers_and_dashboard_share_postgresql_and_s3(database_url: str, s3: dict[str, str],
                                                                 tmp_path: Path) -> None:
    port, ui_port = free_ports(2), free_port()
    env = {**s3, "VERA_DATABASE_URL": database_url, "VERA_STORAGE_URL": f"s3://{BUCKET}/blobs",
           "VERA_DATA_DIR": str(tmp_path / "data")}
    db = Database(database_url)  # (cluster would create the schema; the operator's token needs it first)
    db.upgrade()
    db.engine.dispose()
    token = issued_tokens(database_url, ("ops", ["read", "publish"]))[0]
    with tempfile.TemporaryFile("w+") as log:
        cluster = start_cluster(["--replicas", "2", "--workers", "2", "--port", str(port), "--ui-port",
                                 str(ui_port)], env, log)
        try:
            text = wait_ready(cluster, log)
            roles = pids(text)
            assert set(roles) == {"api-0", "api-1", "worker-0", "worker-1", "dashboard"}, text
            # two workers share the cores: each one's torch takes its share (none was set for the cluster)
            threads = str(max(1, len(os.sched_getaffinity(0)) // 2))
            for worker in ("worker-0", "worker-1"):
                environ = Path(f"/proc/{roles[worker]}/environ").read_bytes().split(b"\0")
                assert f"OMP_NUM_THREADS={threads}".encode() in environ
            assert f"workers: {threads} torch thread(s) each" in text
            first, second = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}"
            for url in (first, second):
                ready = httpx.get(f"{url}/ready", timeout=30)
                assert ready.status_code == 200, ready.text  # each replica reaches PostgreSQL and the bucket
            source = make_adapter(tmp_path / "adapter")
            # a shared database and object store: tokens required, though the replicas listen on loopback only
            anonymous = httpx.post(f"{first}/api/v1/adapters/ops/anonymous/versions", timeout=30)
            assert anonymous.status_code == 401, anonymous.text
            with RegistryClient(first, token, cache=False) as one, RegistryClient(second, token, cache=False) as two:
                published = one.publish(source, "ops/shared", base_model="tiny-llama")
                assert f"blobs/sha256/{published.vectors_sha256[:2]}/{published.vectors_sha256[2:4]}/" \
                       f"{published.vectors_sha256}" in objects(s3)  # the bytes went to the object store
                fetched = two.fetch("ops/shared:1", tmp_path / "fetched")  # written by one replica, read by the other
                assert (fetched / "adapter_model.safetensors").stat().st_size > 0
                # a short run: what is tested here is that a worker of the topology claims, trains and publishes
                # (the demo's accuracy is test_jobs' and test_recipes' to prove)
                job = two.submit_job("ops/trained", {**TRIAL_DEMO, "r": 16, "training": {"max_steps": 10}})
                deadline = time.monotonic() + 600
                while (state := one.job(job.id)).status not in ("succeeded", "failed", "cancelled"):
                    assert time.monotonic() < deadline, f"job still {state.status}"
                    time.sleep(2)
                assert state.status == "succeeded", state.error
                assert one.get("ops/trained").ref == "ops/trained:1"  # a worker published it
            assert httpx.get(f"http://127.0.0.1:{ui_port}", timeout=30).status_code == 200
            os.kill(roles["api-1"], signal.SIGKILL)  # a replica dies: the supervisor stops the rest
            assert cluster.wait(timeout=120) == 1
            log.seek(0)
            assert "api-1 exited" in log.read()
            assert all(gone(pid) for pid in roles.values())
        finally:
            if cluster.poll() is None:
                os.killpg(cluster.pid, signal.SIGKILL)


def test_sigterm_stops_the_whole_topology(tmp_path: Path) -> None:
    port = free_ports(2)
    env = {"VERA_DATABASE_URL": f"sqlite:///{tmp_path / 'r.db'}", "VERA_STORAGE_URL": str(tmp_path / "blobs"),
           "VERA_DATA_DIR": str(tmp_path / "data")}
    with tempfile.TemporaryFile("w+") as log:
        cluster = start_cluster(["--replicas", "2", "--workers", "1", "--port", str(port), "--no-ui"], env, log)
        try:
            roles = pids(wait_ready(cluster, log))
            assert set(roles) == {"api-0", "api-1", "worker-0"}
            cluster.send_signal(signal.SIGTERM)
            assert cluster.wait(timeout=120) == 0
            assert all(gone(pid) for pid in roles.values())
        finally:
            if cluster.poll() is None:
                os.killpg(cluster.pid, signal.SIGKILL)


def test_a_process_that_cannot_start_stops_the_others(tmp_path: Path) -> None:
    """A replica whose port is taken exits at once: the cluster says which, stops the rest and exits 1."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {"VERA_DATABASE_URL": f"sqlite:///{tmp_path / 'r.db'}", "VERA_STORAGE_URL": str(tmp_path / "blobs")}
        with tempfile.TemporaryFile("w+") as log:
            cluster = start_cluster(["--replicas", "1", "--workers", "1", "--port", str(port), "--no-ui"], env, log)
            try:
                assert cluster.wait(timeout=120) == 1
                log.seek(0)
                assert "api-0 exited with code" in log.read()
            finally:
                if cluster.poll() is None:
                    os.killpg(cluster.pid, signal.SIGKILL)


def test_cluster_refuses_bad_counts() -> None:
    from tests.commands import wide_vera as vera

    result: Any = vera("cluster", "--replicas", "0")
    assert result.returncode == 2 and "replicas" in result.stderr


def test_workers_share_the_cores_unless_the_operator_chose() -> None:
    from registry.cpu_share import cores, share_cores

    env = {"PATH": "/usr/bin"}
    share = str(max(1, cores() // 2))
    assert share_cores(env, 2) == {"PATH": "/usr/bin", "OMP_NUM_THREADS": share, "MKL_NUM_THREADS": share}
    assert share_cores(env, 4 * cores())["OMP_NUM_THREADS"] == "1"  # never none
    assert share_cores(env, 1) is env  # one worker: torch's own default, every core
    chosen = {**env, "OMP_NUM_THREADS": "3"}
    assert share_cores(chosen, 2) is chosen
    assert share_cores({**env, "MKL_NUM_THREADS": "4"}, 2)["MKL_NUM_THREADS"] == "4"  # the operator's MKL kept

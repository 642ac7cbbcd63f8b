"""`vera worker --status-port`: GET /health (200 ok or draining, 503 once neither a poll nor a heartbeat happened for
stuck_after_s; a database outage is said, not "stuck") and GET /metrics (jobs ended by outcome, the job running and
its step), from the state a worker keeps as it runs; through a real status server, and a real `vera worker`
process that trains a demo job."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from registry import worker as worker_module
from registry.services.jobs import Jobs
from registry.services.registry import Registry
from registry.worker import Worker
from registry.worker_status import WorkerStatus, serve_status
from tests.registry.adapters import TRIAL_DEMO
from tests.registry.servers import VERA


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def metric(text: str, name: str) -> float:
    """The value of one sample (name with its labels, as exposed) in a Prometheus text exposition."""
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert found, f"{name} not in\n{text}"
    return float(found.group(1))


def test_health_says_ok_draining_or_stuck_and_metrics_count_what_ended() -> None:
    clock = Clock()
    status = WorkerStatus(name="w1", device="cpu", stuck_after_s=60, clock=clock)
    server = serve_status(status, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        health = httpx.get(f"{base}/health", timeout=10)
        assert health.status_code == 200 and health.json()["status"] == "ok" and health.json()["job"] is None
        status.started(7)
        status.step(12)
        clock.now += 59  # a heartbeat is due: not stuck yet
        assert httpx.get(f"{base}/health", timeout=10).json() | {"seconds_since_tick": 0} == {
            "status": "ok", "worker": "w1", "device": "cpu", "job": 7, "step": 12, "seconds_since_tick": 0,
            "stuck_after_s": 60, "database": "ok",
            "jobs_ended": {"succeeded": 0, "failed": 0, "cancelled": 0, "released": 0, "lost": 0, "timed_out": 0}}
        clock.now += 2
        stuck = httpx.get(f"{base}/health", timeout=10)
        assert stuck.status_code == 503 and stuck.json()["status"] == "stuck"  # a supervisor restarts it
        scraped = httpx.get(f"{base}/metrics", timeout=10).text
        assert metric(scraped, "vera_worker_busy") == 1 and metric(scraped, "vera_worker_job") == 7
        assert metric(scraped, "vera_worker_job_step") == 12 and metric(scraped, "vera_worker_seconds_since_tick") == 61
        status.ended("succeeded")
        status.tick(database=False)  # waiting out an outage: alive, and saying why nothing runs
        health = httpx.get(f"{base}/health", timeout=10)
        assert health.status_code == 200 and health.json()["database"] == "unreachable"
        status.draining()
        assert httpx.get(f"{base}/health", timeout=10).json()["status"] == "draining"
        scraped = httpx.get(f"{base}/metrics", timeout=10).text
        assert metric(scraped, 'vera_worker_jobs_total{outcome="succeeded"}') == 1
        assert metric(scraped, 'vera_worker_info{device="cpu",worker="w1"}') == 1
        assert metric(scraped, "vera_worker_busy") == 0 and metric(scraped, "vera_worker_database_up") == 0
        assert metric(scraped, "vera_worker_draining") == 1
        assert httpx.get(f"{base}/jobs", timeout=10).status_code == 404
        assert httpx.post(f"{base}/health", timeout=10).status_code == 405
        assert httpx.head(f"{base}/health", timeout=10).content == b""
    finally:
        server.shutdown()
        server.server_close()


def test_the_worker_records_how_each_job_ended(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    jobs = Jobs(registry)
    failing = jobs.submit({**TRIAL_DEMO, "training": {"max_steps": 1}}, owner="ann", target="ann/x").id
    worker = Worker(jobs, name="w", log=lambda line: None)

    def fake_run(spec: Any, out: Path, **kwargs: Any) -> dict[str, Any]:
        assert worker.status.snapshot()["job"] == failing  # running, as /health says meanwhile
        raise RuntimeError("stop here")

    monkeypatch.setattr(worker_module, "run", fake_run)
    assert worker.run_once() and jobs.get(failing).status == "failed"
    cancelled = jobs.submit({**TRIAL_DEMO, "training": {"max_steps": 1}}, owner="ann", target="ann/y").id
    jobs.cancel(cancelled, actor="ann")  # claimed by nobody: never runs
    assert not worker.run_once()
    now = worker.status.snapshot()
    assert now["job"] is None and now["jobs_ended"]["failed"] == 1 and sum(now["jobs_ended"].values()) == 1
    assert now["stuck_after_s"] == 60  # the default intervals: the floor
    worker.drain()
    assert worker.status.snapshot()["status"] == "draining"


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the status server reads no database
def test_a_worker_process_serves_its_status_while_it_trains(registry: Registry, database_url: str,
                                                            tmp_path: Path) -> None:
    env = {**os.environ, "VERA_DATABASE_URL": database_url, "VERA_STORAGE_URL": str(tmp_path / "blobs"),
           "VERA_DATA_DIR": str(tmp_path / "data")}
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        process = subprocess.Popen([str(VERA), "worker", "--poll", "0.2", "--heartbeat", "0.2", "--status-port", "0"],
                                   stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (found := re.search(r"status on (http://127\.0\.0\.1:\d+)/health", log.read_text())):
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        base = found.group(1)
        assert httpx.get(f"{base}/health", timeout=10).json()["status"] == "ok"
        jobs = Jobs(registry)
        job = jobs.submit({**TRIAL_DEMO, "training": {"max_steps": 2}}, owner="ann", target="ann/status").id
        while jobs.get(job).status != "succeeded":
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        while metric(scraped := httpx.get(f"{base}/metrics", timeout=10).text,
                     'vera_worker_jobs_total{outcome="succeeded"}') != 1:
            assert time.monotonic() < deadline, scraped  # recorded just after the job's row says so
            time.sleep(0.1)
        assert metric(scraped, "vera_worker_busy") == 0
        process.send_signal(signal.SIGTERM)  # drains: no job, so it stops at once
        assert process.wait(timeout=60) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

"""The database going away for a few seconds under a serving registry (an operator's walk, session 14): the API
answered 500 (and /metrics too), the client gave up at once, and `vera worker` died, taking `vera cluster` down.
Here PostgreSQL itself refuses the registry's database (ALLOW_CONNECTIONS false, its sessions terminated), then
takes it back."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg
import pytest

from registry.client import RegistryClient
from registry.services.jobs import Jobs
from registry.services.registry import Registry
from registry.store.blobs import FsspecBlobStore
from registry.store.database import Database
from registry.worker import Worker
from tests.registry.adapters import TRIAL_DEMO, make_adapter
from tests.registry.conftest import PG_ADMIN
from tests.registry.servers import registry_in_thread, team_tokens


@contextmanager
def outage(database_url: str) -> Iterator[None]:
    """The registry's database refuses every connection, and its open ones are cut, until the block ends."""
    name = database_url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        try:
            yield
        finally:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_an_outage_is_a_503_that_clients_wait_out(database_url: str, tmp_path: Path) -> None:
    with registry_in_thread(database_url, tmp_path / "blobs") as url, RegistryClient(url, "", cache=False) as client:
        client.publish(make_adapter(tmp_path / "a"), "ann/steady", base_model="tiny-llama")
        with outage(database_url):
            scraped = httpx.get(f"{url}/metrics", timeout=30)  # the request counters answer; the totals say why not
            assert scraped.status_code == 200 and "vera_totals_up 0.0" in scraped.text
            assert "vera_http_requests_total" in scraped.text and "vera_versions " not in scraped.text
            answer = httpx.get(f"{url}/api/v1/adapters/ann/steady/versions/1", timeout=30)
            assert answer.status_code == 503 and answer.headers["retry-after"] == "2", answer.text
            assert "database is unavailable for the moment; nothing was changed" in answer.json()["detail"]
            assert "127.0.0.1" not in answer.text and "5432" not in answer.text  # its address stays in the log
            got: list[object] = []
            reader = threading.Thread(target=lambda: got.append(client.get("ann/steady:1").version))
            reader.start()
            time.sleep(1)  # the client is waiting out its first 503
        reader.join(timeout=60)
        assert got == [1]  # the idempotent read succeeded once the database was back
        assert client.get("ann/steady:1").version == 1
        assert "vera_totals_up 1.0" in httpx.get(f"{url}/metrics", timeout=30).text


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_an_outage_is_a_503_for_callers_with_tokens_too(database_url: str, tmp_path: Path) -> None:
    """The token is looked up before any route (RequestGate): during an outage every request with a token, reads and
    writes, was a 500 with a traceback in the log (an operator's walk, session 43)."""
    with registry_in_thread(database_url, tmp_path / "blobs", VERA_REQUIRE_TOKENS="true") as url:
        secret = team_tokens(database_url, ["ann"])["ann"]
        with RegistryClient(url, secret, cache=False) as ann:
            ann.publish(make_adapter(tmp_path / "a"), "ann/steady", base_model="tiny-llama")
        headers = {"Authorization": f"Bearer {secret}"}
        with outage(database_url):
            for method, path in (("GET", "/api/v1/adapters/ann/steady/versions/1"),
                                 ("PUT", "/api/v1/adapters/ann/steady/aliases/prod"),
                                 ("DELETE", "/api/v1/adapters/ann/steady/aliases/prod")):
                answer = httpx.request(method, url + path, headers=headers, timeout=30,
                                       json={"version": 1} if method == "PUT" else None)
                assert answer.status_code == 503 and answer.headers["retry-after"] == "2", (method, answer.text)
                assert answer.json()["type"] == "/problems/database_unavailable", answer.text
                assert "127.0.0.1" not in answer.text
        assert httpx.put(f"{url}/api/v1/adapters/ann/steady/aliases/prod", json={"version": 1}, headers=headers,
                         timeout=30).status_code == 200  # and back to work once it is back


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_worker_waits_out_an_outage_and_claims_jobs_after_it(database_url: str, tmp_path: Path) -> None:
    db = Database(database_url)
    db.upgrade()
    jobs = Jobs(Registry(db, FsspecBlobStore(str(tmp_path / "blobs"))))
    records: list[logging.LogRecord] = []
    logger = logging.getLogger("vera.worker")  # its own logger, not a log= callable: the outage comes at warning
    handler = _Collect(records)
    logger.addHandler(handler)
    level, logger.level = logger.level, logging.INFO
    worker = Worker(jobs, name="steady", poll_s=0.1)
    runner = threading.Thread(target=worker.run_forever)
    try:
        with outage(database_url):
            runner.start()
            deadline = time.monotonic() + 60
            while not any("the database is unavailable" in r.getMessage() for r in records):
                assert runner.is_alive() and time.monotonic() < deadline, _lines(records)
                time.sleep(0.1)
        job = jobs.submit({**TRIAL_DEMO, "r": 16, "training": {"max_steps": 2}}, owner="ann", target="ann/after")
        deadline = time.monotonic() + 300
        while jobs.get(job.id).status in ("queued", "running"):
            assert runner.is_alive() and time.monotonic() < deadline, _lines(records)
            time.sleep(0.5)
        assert jobs.get(job.id).status == "succeeded", _lines(records)
        outage_line = next(r for r in records if "unavailable" in r.getMessage())
        assert "trying again in" in outage_line.getMessage() and outage_line.levelno == logging.WARNING
        assert all(r.levelno == logging.INFO for r in records if "unavailable" not in r.getMessage())
    finally:
        logger.removeHandler(handler)
        logger.level = level
        worker.draining.set()
        runner.join(timeout=120)
        db.engine.dispose()


class _Collect(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__()
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)



def _lines(records: list[logging.LogRecord]) -> list[str]:
    return [r.getMessage() for r in records]

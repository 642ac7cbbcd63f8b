"""Logs of the real processes: `vera serve` and `vera worker` write one JSON line per event (stderr is not a
terminal here), each request's id on its access line and on the job it queued, and no token, Hub token or bearer
credential ever appears in any line."""

from __future__ import annotations

import json
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from registry import logs
from registry.client import RegistryClient
from registry.services.tokens import create_token
from registry.store.database import Database
from tests.registry.adapters import TRIAL_DEMO, make_adapter
from tests.registry.servers import VERA, free_port, running_vera


def json_lines(path: Path) -> list[dict[str, object]]:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    parsed = [json.loads(line) for line in lines]  # every line is JSON: a parse error fails the test
    assert all({"time", "level", "logger", "message"} <= entry.keys() for entry in parsed)
    return parsed


def test_server_and_worker_log_json_lines_with_request_ids_and_no_secrets(tmp_path: Path) -> None:
    url, port, server_log = f"sqlite:///{tmp_path / 'r.db'}", free_port(), tmp_path / "server.log"
    env = {"VERA_DATABASE_URL": url, "VERA_STORAGE_URL": str(tmp_path / "blobs"), "VERA_REQUIRE_TOKENS": "true"}
    hub_secret, wrong = "hf_" + "s3cr3t" * 5, "vera_" + "w" * 30
    with running_vera(["serve", "--port", str(port), "--log-level", "info"], port, log_path=server_log,
                      **env) as base:
        db = Database(url)
        token = create_token(db, owner="ann", scopes=["read", "publish"])[1]
        db.engine.dispose()
        with RegistryClient(base, token, cache=False) as client:
            client.publish(make_adapter(tmp_path / "a"), "ann/logged", base_model="tiny")
            job = client.submit_job("ann/job", {**TRIAL_DEMO, "r": 16, "training": {"max_steps": 2}})
        asked = httpx.get(f"{base}/api/v1/adapters/ann/logged/versions/1", headers={
            "Authorization": f"Bearer {token}", "X-Request-ID": "trace-42"})
        assert asked.headers["x-request-id"] == "trace-42"
        assert httpx.get(f"{base}/api/v1/adapters", headers={"Authorization": f"Bearer {wrong}"}).status_code == 401
        pasted = httpx.get(f"{base}/api/v1/adapters/{token}/y/versions/1", headers={"Authorization": f"Bearer {token}"})
        assert pasted.status_code in (404, 422)  # a token pasted into a path: redacted in every field of the log
        httpx.post(f"{base}/api/v1/adapters/ann/logged/versions/1/hub/push", json={"repo_id": "ann/x"},
                   headers={"Authorization": f"Bearer {token}", "X-Hub-Token": hub_secret})
        logs.REQUEST_ID.set("from-the-model-server")  # a client inside another request's work passes its id on
        with RegistryClient(base, token, cache=False) as client:
            client.get("ann/logged")
        logs.REQUEST_ID.set(None)
        worker = subprocess.run([str(VERA), "worker", "--once", "--log-level", "debug"], capture_output=True,
                                text=True, timeout=600, env={**os.environ, **env, "VERA_LOG_FORMAT": "json"})
        assert worker.returncode == 0, worker.stderr[-2000:]
    server = json_lines(server_log)
    access = [e for e in server if e["logger"] == "vera.access"]
    [traced] = [e for e in access if e.get("request_id") == "trace-42"]
    assert traced["method"] == "GET" and traced["path"] == "/api/v1/adapters/ann/logged/versions/1"
    assert traced["status"] == 200 and isinstance(traced["duration_ms"], float) and traced["client"] == "127.0.0.1"
    assert traced["user"] == "ann" and isinstance(traced["token_id"], int)  # who called (an operator's walk)
    assert any(e["path"] == "/api/v1/adapters/[redacted]/y/versions/1" for e in access)
    assert any(e["status"] == 401 for e in access) and any(e["status"] == 201 for e in access)
    assert any(e.get("request_id") == "from-the-model-server" for e in access)
    [submitted] = [e for e in access if e["path"] == "/api/v1/jobs" and e["method"] == "POST"]
    (tmp_path / "worker.log").write_text(worker.stderr)
    worker_lines = json_lines(tmp_path / "worker.log")
    ran = [e for e in worker_lines if e.get("job_id") == job.id]
    assert ran and all(e["request_id"] == submitted["request_id"] for e in ran)  # the id of the submit request
    assert any("published ann/job:1" in str(e["message"]) for e in ran)
    everything = server_log.read_text() + worker.stderr
    for secret in (token, hub_secret, wrong):
        assert secret not in everything


@pytest.fixture
def configured_logging() -> Iterator[None]:
    """registry.logs.configure in this process, undone afterwards (its handler holds this test's stderr)."""
    names = ("vera", "uvicorn", "uvicorn.error", "uvicorn.access")
    saved = {n: (logging.getLogger(n).handlers, logging.getLogger(n).propagate, logging.getLogger(n).level,
                 logging.getLogger(n).disabled) for n in names}
    yield
    for name, (handlers, propagate, level, disabled) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers, logger.propagate, logger.disabled = handlers, propagate, disabled
        logger.setLevel(level)


def test_secrets_are_redacted_whoever_logs_them(capsys: pytest.CaptureFixture[str], configured_logging: None
                                                ) -> None:
    import huggingface_hub.utils

    logs.configure("info", "json")
    assert huggingface_hub.utils.are_progress_bars_disabled()  # JSON lines only: no progress bars on stderr
    logging.getLogger("vera.test").warning("got Authorization: Bearer abc.def-123 and vera_%s and %s",
                                           "x" * 20, "hf_" + "y" * 20)
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["message"] == "got Authorization: [redacted] and [redacted] and [redacted]"
    with pytest.raises(ValueError, match="log level must be one of"):
        logs.configure("loud")
    assert logs.new_request_id("ok-id_1.2") == "ok-id_1.2" and logs.new_request_id("bad id\n") != "bad id\n"


@pytest.mark.parametrize(("variable", "value", "said"), [
    ("VERA_READ_THREADS", "0", "VERA_READ_THREADS='0': Input should be greater than or equal to 1."),
    ("VERA_JOB_LEASE_S", "soon", "VERA_JOB_LEASE_S='soon': Input should be a valid number"),
    ("VERA_DEFAULT_VISIBILITY", "secret", "VERA_DEFAULT_VISIBILITY='secret': Input should be 'public' or 'private'"),
    # values an operator's walk (session 14) found accepted, each then failing every request its own way
    ("VERA_COSTLY_REQUESTS_PER_MINUTE", "0", "VERA_COSTLY_REQUESTS_PER_MINUTE='0': Input should be greater than or "
                                             "equal to 1"),  # every download a 500 (a division by zero)
    ("VERA_MAX_UPLOAD_BYTES", "-5", "VERA_MAX_UPLOAD_BYTES='-5': Input should be greater than or equal to 1"),
    ("VERA_CONCURRENT_GENERATIONS", "0", "VERA_CONCURRENT_GENERATIONS='0': Input should be greater than or equal"),
    ("VERA_JOB_LEASE_S", "0", "VERA_JOB_LEASE_S='0': Input should be greater than 0"),
    ("VERA_JOB_MAX_ATTEMPTS", "0", "VERA_JOB_MAX_ATTEMPTS='0': Input should be greater than or equal to 1"),
    ("VERA_FORWARDED_ALLOW_IPS", "10.0.0.5, proxy.internal", "VERA_FORWARDED_ALLOW_IPS='10.0.0.5, proxy.internal': "
                                                             "'proxy.internal' is not an address or a network"),
    ("VERA_OWNER_QUOTAS", "acme=5", "VERA_OWNER_QUOTAS is not JSON: give a JSON object, e.g. VERA_OWNER_QUOTAS="),
    ("VERA_OWNER_QUOTAS", '{"acme": -1}', "VERA_OWNER_QUOTAS: the entry 'acme' (-1): -1 is out of range: give 0 to"),
    ("VERA_OWNER_QUOTA_BYTES", "50 parsecs", "VERA_OWNER_QUOTA_BYTES='50 parsecs': '50 parsecs' is not a size: give "
                                             "bytes (50000000000) or a number with a unit (50GB = 50*10^9 bytes"),
    ("VERA_JOB_BASE_MODELS", "minilm", "VERA_JOB_BASE_MODELS is not JSON: give a JSON list, e.g. "
                                      "VERA_JOB_BASE_MODELS='[\"minilm\", \"org/model\"]'"),  # a traceback before
])
def test_a_refused_setting_names_its_variable_and_value_not_the_field(variable: str, value: str, said: str) -> None:
    done = subprocess.run([str(VERA), "worker", "--once"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, variable: value})
    message = " ".join(done.stderr.split())
    assert done.returncode == 1 and said in message and "Fix it" in message, message
    assert "pydantic" not in message and "validation error for Settings" not in message


def test_a_misspelt_variable_is_named_with_the_setting_it_was_meant_to_be(tmp_path: Path) -> None:
    """A misspelt VERA_DATABASE_URL is no setting: the command ran on the embedded default database, silently (then
    `vera gc` emptied the shared storage: an operator's walk, session 14). Said once, though `vera db status` of an
    existing database loads the settings twice (it was said twice: a docs audit, session 55)."""
    db = Database(f"sqlite:///{tmp_path / 'registry.db'}")
    db.upgrade()
    db.engine.dispose()
    done = subprocess.run([str(VERA), "db", "status"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "VERA_DATABSE_URL": "postgresql+psycopg://db/vera", "VERA_TOKENN": "x",
                               "VERA_DATA_DIR": str(tmp_path)})
    said = " ".join(done.stderr.split())
    assert "note: VERA_DATABSE_URL (did you mean VERA_DATABASE_URL?) is set but is no vera setting: it is ignored" \
        in said
    assert "note: VERA_TOKENN (did you mean VERA_TOKEN?)" in said
    assert said.count("VERA_DATABSE_URL (did you mean") == 1 and "up to date" in done.stdout, done.stdout


def test_every_variable_the_code_reads_is_known_to_the_unknown_variable_note() -> None:
    """A VERA_* variable that some part of vera reads (os.environ, typer's envvar=, the set-up scripts) is a Settings
    field or in OTHER_VARIABLES: `vera auth exchange`'s VERA_ID_TOKEN was noted as "no vera setting: it is ignored
    (did you mean VERA_TOKEN?)" (a reader of deployment.md's GitLab recipe, session 26)."""
    import re

    from registry.settings import OTHER_VARIABLES, Settings

    root = Path(__file__).resolve().parents[2]
    known = {f"VERA_{name.upper()}" for name in Settings.model_fields} | OTHER_VARIABLES
    read = re.compile(r"""(?:environ(?:\.get)?\(\s*|environ\[|getenv\(\s*|envvar=\(?|setdefault\(\s*)"""
                      r"""["'](VERA_[A-Z0-9_]+)|\$\{?(VERA_[A-Z0-9_]+)""")
    found: dict[str, str] = {}
    files = [*(root / ".ci").iterdir(), *(p for part in ("registry", "vera_core", "web_ui", "bench")
                                          for p in (root / part).rglob("*") if p.suffix in {".py", ".sh"})]
    for path in files:
        for match in read.finditer(path.read_text()):
            found.setdefault(match.group(1) or match.group(2), str(path.relative_to(root)))
    assert {"VERA_ID_TOKEN", "VERA_REGISTRY_URL", "VERA_SETUP_STRICT", "VERA_TORCH_INDEX"} <= set(found)  # it reads
    assert {name: path for name, path in found.items() if name not in known} == {}


def test_a_refused_secret_setting_is_named_without_its_value() -> None:
    from pydantic import ValidationError

    from registry.settings import Settings, settings_problem

    with pytest.raises(ValidationError) as refused:
        Settings(hub_token=12345)
    said = settings_problem(refused.value)
    assert said.startswith("VERA_HUB_TOKEN: Input should be a valid string") and "12345" not in said
    with pytest.raises(ValidationError) as short:
        Settings(metrics_token="guessable")
    said = settings_problem(short.value)
    assert said.startswith("VERA_METRICS_TOKEN is shorter than 16 characters") and "guessable" not in said


def test_a_bad_log_level_is_a_usage_error_naming_the_choices() -> None:
    done = subprocess.run([str(VERA), "worker", "--once", "--log-level", "loud"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1 and "use debug, info, warning or error" in done.stderr


def test_the_proxies_whose_forwarded_headers_count_are_a_setting(tmp_path: Path) -> None:
    """Behind a load balancer on another host every caller was the balancer (in the log and in the anonymous
    rate-limit budget), and nothing could say otherwise (an operator's walk, session 14): VERA_FORWARDED_ALLOW_IPS
    names the proxies to believe (default: loopback)."""
    seen = {}
    for trusted in ("127.0.0.1", "10.9.9.9"):
        port, log = free_port(), tmp_path / f"{trusted}.log"
        with running_vera(["serve", "--port", str(port)], port, log_path=log, VERA_FORWARDED_ALLOW_IPS=trusted,
                          VERA_DATABASE_URL=f"sqlite:///{tmp_path / 'r.db'}", VERA_STORAGE_URL=str(tmp_path / "b"),
                          VERA_LOG_FORMAT="json") as base:
            httpx.get(f"{base}/api/v1/adapters", headers={"X-Forwarded-For": "203.0.113.9"}, timeout=30)
        [line] = [e for e in json_lines(log) if e.get("path") == "/api/v1/adapters"]
        seen[trusted] = line["client"]
    assert seen == {"127.0.0.1": "203.0.113.9", "10.9.9.9": "127.0.0.1"}

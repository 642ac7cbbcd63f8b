"""The mistakes a newcomer made walking the README (session 13), each answered with one clear line that says what
was expected and how to go on, and nothing changed: `vera` (tests.commands) against a real server."""

from __future__ import annotations

import hashlib
import http.server
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from registry.cli.run import registry_url_lines, team_host
from registry.client import RegistryClient
from registry.domain.errors import NotFound
from tests.commands import vera as run_vera
from tests.registry.adapters import make_adapter
from tests.registry.servers import free_port, registry_in_thread, running_server, running_vera


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("mistakes")
    with registry_in_thread(f"sqlite:///{root / 'r.db'}", root / "blobs") as base:
        yield {"url": base, "source": make_adapter(root / "adapter"), "root": root}


def vera(*args: str, url: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "COLUMNS": "200", "VERA_REGISTRY_URL": url, "VERA_NO_CACHE": "1", **env}
    environment.pop("VERA_TOKEN", None)
    return run_vera(args, env=environment, cwd=cwd)


def refused(result: subprocess.CompletedProcess[str], *words: str) -> str:
    """The command failed with one line on stderr holding ``words``, and no traceback."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and result.stderr.startswith("error: "), result.stderr
    flat = " ".join(result.stderr.split())  # a long line may wrap at the terminal's width
    for word in words:
        assert word in flat, (word, result.stderr)
    return result.stderr


def test_publish_to_a_version_is_refused_not_numbered_otherwise(server: dict[str, Any]) -> None:
    """`--name you/polarity:7` was published as :4 without a word."""
    for name, words in (("ann/pinned:7", ("names a version", "ann/pinned (the registry numbers")),
                        ("ann/pinned@prod", ("names a version",)), ("pinned", ("expected owner/name",))):
        refused(vera("publish", str(server["source"]), "--name", name, "--base-model", "tiny-llama",
                     url=server["url"]), *words)
    with RegistryClient(server["url"], cache=False) as client:
        assert client.list_versions(owner="ann").items == []


def test_text_that_looks_like_markup_is_printed_as_it_is(server: dict[str, Any]) -> None:
    """`vera show 'a/b[/x]'` raised rich's MarkupError (a traceback, not the error): what the CLI prints holds what
    callers typed, and a description written '[bold]x[/bold]' was shown without its brackets."""
    refused(vera("show", "a/b[/x]", url=server["url"]), "'a/b[/x]' is not an adapter reference")
    published = vera("publish", str(server["source"]), "--name", "bea/markup", "--base-model", "tiny-llama",
                     "--description", "[bold]x[/bold] and [/oops]", url=server["url"])
    assert published.returncode == 0, published.stderr
    shown = vera("show", "bea/markup:1", url=server["url"])
    assert shown.returncode == 0 and "[bold]x[/bold] and [/oops]" in shown.stdout, shown.stdout + shown.stderr


def test_publish_notes_a_base_model_other_than_the_adapters_own(server: dict[str, Any], tmp_path: Path) -> None:
    folder = make_adapter(tmp_path / "named")
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "org/minilm"}))
    result = vera("publish", str(folder), "--name", "ann/based", "--base-model", "roberta-base", url=server["url"])
    assert result.returncode == 0, result.stderr
    assert "names base model 'org/minilm'" in result.stderr and "published for 'roberta-base'" in result.stderr
    same = vera("publish", str(folder), "--name", "ann/based", "--base-model", "org/minilm", url=server["url"])
    assert same.returncode == 0 and "names base model" not in same.stderr


def test_publish_without_base_model_takes_the_one_the_adapters_config_names(server: dict[str, Any],
                                                                            tmp_path: Path) -> None:
    folder = make_adapter(tmp_path / "named")
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "tiny-llama"}))
    data = tmp_path / "train.csv"
    data.write_text("text,label\ngood,1\n")
    result = vera("publish", str(folder), "--name", "ann/implied", "--dataset", str(data), url=server["url"])
    assert result.returncode == 0, result.stderr
    assert "base model: tiny-llama (from adapter_config.json)" in result.stderr
    assert "did not record --dataset" not in result.stderr  # today's registry keeps it (test_older_server: not)
    with RegistryClient(server["url"], cache=False) as client:
        info = client.get("ann/implied:1")
        assert info.base_model == "tiny-llama"
        assert info.lineage == {"dataset_sha256": hashlib.sha256(data.read_bytes()).hexdigest(),
                                "dataset_bytes": data.stat().st_size}  # hashed by the CLI; the data stays here
    # the base to give is guessed from the path: every model was told "e.g. --base-model minilm" (a PEFT user's walk,
    # session 47): a HuggingFace cache folder's Hub id, a base of this registry by the folder's name, else a Hub id's
    # shape and the bases this registry knows
    cached = "/root/.cache/huggingface/hub/models--FacebookAI--roberta-base/snapshots/e2da8e2f811d1448a5b465c236feacd8"
    hub_id = "e.g. --base-model ORG/NAME (the base model's Hub id, as FacebookAI/roberta-base), or one of the bases " \
             "this registry knows: "
    for named, words in ((str(tmp_path), ("a folder path", "--base-model is needed", hub_id, "tiny-llama")),
                         (None, ("no base model", hub_id)),
                         ("/models/llama", ("'/models/llama', a folder path", hub_id)), ("./base", ("a folder path",)),
                         ("org/sub/model", ("a folder path",)),  # paths of the machine that trained it
                         (cached, ("e.g. --base-model FacebookAI/roberta-base (the Hub id of the cache folder it "
                                   "names)",)),
                         ("/data/models/tiny-llama/", ("e.g. --base-model tiny-llama (a base this registry knows, by "
                                                       "the folder's name)",))):
        (folder / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": named}))
        refused(vera("publish", str(folder), "--name", "ann/implied", url=server["url"]), *words)
    # a registry name that a folder here has too: said so, with the option that says it is the name (it was "a
    # folder path", told to pass the same string: a docs audit's finding, session 52)
    (tmp_path / "tiny-llama").mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "tiny-llama"}))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        refused(vera("publish", str(folder), "--name", "ann/implied", url=server["url"]),
                "names 'tiny-llama', which is also a folder here", "If 'tiny-llama' is the base's Hub id or its name "
                "in this registry, say so: --base-model tiny-llama.")
    refused(vera("publish", str(tmp_path), "--name", "ann/implied", url=server["url"]),
            "has no adapter_config.json: publish a PEFT-format adapter folder")
    # a path that is not there is said to be so, not to lack a file (session 51's walk), as with --base-model
    refused(vera("publish", str(tmp_path / "typo"), "--name", "ann/implied", url=server["url"]),
            f"{tmp_path / 'typo'} does not exist; expected a PEFT adapter folder")
    with RegistryClient(server["url"], cache=False) as client:
        assert [v.version for v in client.list_versions(owner="ann", name="implied").items] == [1]


def test_publish_notes_the_metrics_json_it_leaves_out(server: dict[str, Any], tmp_path: Path) -> None:
    """A new user's walk: the CI example published without --metrics, and every accuracy read "—"."""
    folder = make_adapter(tmp_path / "trained")
    (folder / "metrics.json").write_text(json.dumps({"test": {"accuracy": 0.8}}))
    left = vera("publish", str(folder), "--name", "ann/trained", "--base-model", "tiny-llama", url=server["url"])
    assert left.returncode == 0, left.stderr
    assert (f"{folder / 'metrics.json'} was not published: without --metrics {folder / 'metrics.json'}, "
            "ann/trained:1 has no loss curve or accuracy, nor the parameters it was trained with") in \
        " ".join(left.stderr.split())
    given = vera("publish", str(folder), "--name", "ann/trained", "--base-model", "tiny-llama", "--metrics",
                 str(folder / "metrics.json"), url=server["url"])
    assert given.returncode == 0 and "was not published" not in given.stderr, given.stderr
    # a publish refused says why alone (the note came first, ahead of a refusal it had nothing to do with)
    refused = vera("publish", str(folder), "--name", "Bad Name!", "--base-model", "tiny-llama", url=server["url"])
    assert refused.returncode == 1 and "metrics.json" not in refused.stderr, refused.stderr


def test_publish_takes_the_folders_readme_as_the_model_card_with_card_and_notes_one_left_out(
        server: dict[str, Any], tmp_path: Path) -> None:
    """A PEFT user's walk (session 47): a README.md written as the model card was left out unsaid; `vera card` was
    the only way. `--card` sets it with the publish (checked before anything is uploaded), and a README.md someone
    wrote is noted when left out; PEFT's template and vera's own cards are not."""
    folder = make_adapter(tmp_path / "carded")
    readme = folder / "README.md"
    readme.write_text("# Polarity\n\nTrained on product reviews.\n")
    left = vera("publish", str(folder), "--name", "ann/carded", "--base-model", "tiny-llama", url=server["url"])
    assert left.returncode == 0 and f"note: {readme} was not published: `--card {readme}` sets it as ann/carded's " \
        f"model card, or `vera card ann/carded --file {readme}`." in " ".join(left.stderr.split()), left.stderr
    given = vera("publish", str(folder), "--name", "ann/carded", "--base-model", "tiny-llama", "--card", str(readme),
                 url=server["url"])
    assert given.returncode == 0 and f"ann/carded: model card set from {readme} (" in given.stdout, given.stderr
    assert "was not published" not in given.stderr
    with RegistryClient(server["url"], cache=False) as client:
        assert client.adapter("ann/carded").card == "# Polarity\n\nTrained on product reviews.\n"
        versions = len(client.list_versions(owner="ann", name="carded").items)
    for written in ("## Model Details\n\n[More Information Needed]\n",  # PEFT's template
                    "---\ntags:\n- vera\n- vera-registry\n---\n# VeRA adapter\n"):  # vera's own
        readme.write_text(written)
        quiet = vera("publish", str(folder), "--name", "ann/carded", "--base-model", "tiny-llama", url=server["url"])
        assert quiet.returncode == 0 and "README.md" not in quiet.stderr, quiet.stderr
    readme.write_text("x" * (64 * 1024 + 1))
    refused(vera("publish", str(folder), "--name", "ann/carded", "--base-model", "tiny-llama", "--card", str(readme),
                 url=server["url"]), f"--card {readme}: card must be text of at most 65,536 characters.",
            "Nothing was uploaded.")
    refused(vera("publish", str(folder), "--name", "ann/carded", "--base-model", "tiny-llama", "--card",
                 str(tmp_path / "nope.md"), url=server["url"]), "--card", "not a readable UTF-8 text file")
    with RegistryClient(server["url"], cache=False) as client:
        assert len(client.list_versions(owner="ann", name="carded").items) == versions + 2  # the two quiet ones


def test_a_job_takes_the_dataset_columns_and_names_the_users_file(server: dict[str, Any], tmp_path: Path) -> None:
    """`vera job submit` said "pass --text-column", an option it did not have, naming the server's scratch file."""
    data = tmp_path / "sentences.csv"
    data.write_text("sentence,label\n" + "".join(f"word{i} is fine,{i % 2}\n" for i in range(40)))
    stderr = refused(vera("job", "submit", "--name", "ann/columns", "--data", str(data), url=server["url"]),
                     "sentences.csv has columns ['label', 'sentence'] but not ['text']")
    assert "/tmp" not in stderr.replace(str(tmp_path), "")
    queued = vera("job", "submit", "--name", "ann/columns", "--data", str(data), "--text-column", "sentence",
                  "--schedule", "cosine", "--eval-every", "5", "--save-projection", url=server["url"])
    assert queued.returncode == 0, queued.stderr
    with RegistryClient(server["url"], cache=False) as client:
        [job] = [j for j in client.jobs(owner="ann") if j.target_name == "ann/columns"]
        client.cancel_job(job.id)
    assert job.spec["text_column"] == "sentence" and job.spec["save_projection"] is True
    # a time limit of 0 is a usage error naming the option (it was the API's 422 naming body.time_limit_s: a docs
    # audit, session 53), nothing queued
    zero = vera("job", "submit", "--name", "ann/none", "--demo", "--time-limit", "0", url=server["url"])
    assert zero.returncode == 2 and "'--time-limit': give a number of seconds above 0" in zero.stderr, zero.stderr
    with RegistryClient(server["url"], cache=False) as client:
        assert not [j for j in client.jobs(owner="ann") if j.target_name == "ann/none"]
    assert job.spec["training"]["schedule"] == "cosine" and job.spec["training"]["eval_every"] == 5
    # `vera job show` reads as rows (it printed the raw JSON object); --json gives the API's object
    shown = vera("job", "show", str(job.id), url=server["url"])
    assert shown.returncode == 0, shown.stderr
    rows = {label: value.strip() for label, value in (line.split(None, 1) for line in shown.stdout.splitlines()
                                                         if line.strip())}
    assert rows["publishes"] == "ann/columns" and rows["job"] == f"{job.id}: cancelled", rows
    for words in ("base_model=minilm", '"text_column": "sentence"',
                  '"schedule": "cosine"', "priority 0, 0 GPU(s)"):
        assert words in shown.stdout, (words, shown.stdout)
    # `vera job logs --follow` exited 0 whatever became of the job: a script could not stop on a failed one
    followed = vera("job", "logs", str(job.id), "--follow", url=server["url"])
    assert followed.returncode == 3 and f"job {job.id}: cancelled" in followed.stdout, followed
    read = vera("job", "logs", str(job.id), url=server["url"])  # without --follow, reading the log is what it does
    assert read.returncode == 0 and f"job {job.id}: cancelled" in read.stdout, read
    assert json.loads(vera("job", "show", str(job.id), "--json", url=server["url"]).stdout)["id"] == job.id


def test_job_logs_lines_stay_whole_when_piped_and_steps_can_be_left_out(server: dict[str, Any]) -> None:
    """A new user's walk (session 26): `vera job logs --follow | tee` cut its log lines at 80 columns, mid-word, and
    the demo's 189 step lines buried its evaluations and "published"."""
    from registry.services.jobs import Jobs
    from registry.services.registry import Registry
    from registry.store.blobs import FsspecBlobStore
    from registry.store.database import Database

    db = Database(f"sqlite:///{server['root'] / 'r.db'}")
    try:
        jobs = Jobs(Registry(db, FsspecBlobStore(str(server["root"] / "blobs"))))
        job = jobs.submit({"demo": True}, owner="ann", target="ann/piped")
        assert jobs.claim("w1") is not None
        message = "job: stored the checkpoint at step 50 in the registry (484589 bytes): " + "words " * 20
        jobs.heartbeat(job.id, "w1", events=[("step", {"step": 1, "loss": 0.9}), ("log", {"message": message}),
                                              ("evaluate", {"step": 1, "eval_loss": 0.5})])
    finally:
        db.engine.dispose()
    every = vera("job", "logs", str(job.id), url=server["url"], COLUMNS="80")
    assert every.returncode == 0, every.stderr
    assert message.strip() in every.stdout and "step=1, loss=0.9" in every.stdout  # one line, however wide
    quiet = vera("job", "logs", str(job.id), "--no-steps", url=server["url"], COLUMNS="80")
    assert "loss=0.9" not in quiet.stdout and "eval_loss=0.5" in quiet.stdout and message.strip() in quiet.stdout


class _Other(http.server.BaseHTTPRequestHandler):
    """Not the registry: a page of HTML at every path (the dashboard's port), or a bare 404 (a model server's); to
    a POST, a plain-text 405 (as the dashboard's server answers one)."""

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = b"Method Not Allowed"
        self.send_response(405)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        html = self.server.server_port == _Other.html_port  # type: ignore[attr-defined]
        body = b"<!doctype html><html>a dashboard</html>" if html else _Other.not_found
        self.send_response(200 if html else 404)
        self.send_header("Content-Type", "text/html" if html else "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass

    html_port = 0
    not_found = b'{"detail":"Not Found"}'


@pytest.mark.parametrize("kind", ["html", "bare-404", "model-server-404"])
def test_a_url_that_is_not_the_registrys_api_is_said_so(kind: str) -> None:
    """With VERA_REGISTRY_URL on the dashboard's port, `vera ls` printed a JSONDecodeError traceback. A model
    server's 404 is problem details, as the registry's are (the same handlers), but says only "Not Found" where the
    registry names what is missing: it printed "error: Not Found" (a newcomer's walk, session 33)."""
    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Other)
    _Other.html_port = other.server_port if kind == "html" else -1
    _Other.not_found = (b'{"type": "/problems/not_found", "title": "Not Found", "status": 404, "detail": "Not Found", '
                        b'"instance": "/api/v1/versions"}' if kind == "model-server-404" else b'{"detail":"Not Found"}')
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{other.server_port}"
        for args in (["ls"], ["job", "ls"], ["show", "ann/x"], ["auth", "exchange", "--id-token", "a.b.c"]):
            # (a CI job's exchange at the dashboard's address said only "HTTP 405 Method Not Allowed")
            refused(vera(*args, url=url), url, "does not look like the registry's API", "VERA_REGISTRY_URL")
    finally:
        other.shutdown()
        other.server_close()


def test_an_answer_that_is_not_json_is_one_line_not_a_traceback() -> None:
    """A server that answers 200 with something else than JSON (a re-check's finding, session 46: `vera cp
    --to-registry` at such a server printed a JSONDecodeError traceback)."""
    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Plain)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{other.server_port}"
        refused(vera("ls", url=url), "An answer could not be read as JSON", "names a vera registry")
    finally:
        other.shutdown()
        other.server_close()


class _Plain(_Other):
    """A server that answers every GET 200 with "ok" as JSON's content type, which it is not."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")


def test_a_registry_url_without_a_scheme_says_which_one(server: dict[str, Any]) -> None:
    bare = server["url"].removeprefix("http://")
    refused(vera("ls", url=bare), f"'{bare}' does not start with http://", f"did you mean {server['url']}?")


def test_fetch_into_a_file_or_an_unwritable_place_is_one_line(server: dict[str, Any], tmp_path: Path) -> None:
    with RegistryClient(server["url"], cache=False) as client:
        client.publish(server["source"], "ann/fetched", base_model="tiny-llama")
    first = vera("fetch", "ann/fetched", "--out", "got", url=server["url"], cwd=tmp_path)
    again = vera("fetch", "ann/fetched", "--out", "got", url=server["url"], cwd=tmp_path)
    assert first.returncode == again.returncode == 0 and "replaced" not in first.stdout
    assert "its files replaced the adapter that was there" in again.stdout  # said, not silent (newcomer walk)
    shutil.rmtree(tmp_path / "got")
    (tmp_path / "README.md").write_text("mine")
    refused(vera("fetch", "ann/fetched", "--out", "README.md", url=server["url"], cwd=tmp_path),
            "README.md is a file, not a folder")
    assert (tmp_path / "README.md").read_text() == "mine"
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        # root writes anywhere: a path under a file cannot be created by anyone
        target = tmp_path / "README.md" / "sub" if os.access(locked, os.W_OK) else locked / "sub"
        refused(vera("fetch", "ann/fetched", "--out", str(target), url=server["url"]), "Cannot write",
                str(target))
    finally:
        locked.chmod(0o700)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "locked"]  # nothing left beside them


def test_an_alias_on_a_bare_name_says_which_version_it_took(server: dict[str, Any]) -> None:
    with RegistryClient(server["url"], cache=False) as client:
        client.publish(server["source"], "ann/aliased", base_model="tiny-llama")
    out = vera("alias", "ann/aliased", "prod", url=server["url"])
    assert out.returncode == 0 and "ann/aliased@prod -> 1" in out.stdout and "the latest version" in out.stdout
    pinned = vera("alias", "ann/aliased:1", "prod", url=server["url"])
    assert pinned.returncode == 0 and "latest" not in pinned.stdout


@pytest.mark.parametrize("days", ["abc", "0", "400", "nan"])
def test_vera_ui_refuses_a_remembered_sign_in_length_it_cannot_use(days: str) -> None:
    result = vera("ui", "--port", str(free_port()), url="http://127.0.0.1:9", VERA_UI_REMEMBER_DAYS=days)
    refused(result, "VERA_UI_REMEMBER_DAYS must be")
    assert "dashboard on" not in result.stdout  # said before the dashboard failed to start


def test_vera_up_stops_before_starting_when_a_port_is_taken(tmp_path: Path) -> None:
    """The dashboard's port taken: `vera up` announced "dashboard on ..." and ran on without one."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy, free = taken.getsockname()[1], free_port()
        env = {"VERA_DATA_DIR": str(tmp_path / "data")}
        ui = refused(vera("up", "--port", str(free), "--ui-port", str(busy), url="http://x", **env),
                     f"Port {busy} on 127.0.0.1 is taken", "--ui-port", "--no-ui")
        api = refused(vera("up", "--port", str(busy), "--no-ui", url="http://x", **env), "--port")
    assert "dashboard on" not in ui and "--ui-port" not in api
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir())


def test_vera_serve_model_checks_its_port_before_loading_and_warns_of_a_registry_not_there(tmp_path: Path) -> None:
    """A newcomer's walk (session 33): on a taken port `vera serve-model` loaded the model, then died with uvicorn's
    log line (exit 3, "a check found a problem"); pointed at a registry that was not running, it started without a
    word and answered every request 503."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        refused(vera("serve-model", "--port", str(busy), url="http://127.0.0.1:9"),
                f"Port {busy} on 127.0.0.1 is taken", "pass --port with a free port")
    port, log = free_port(), tmp_path / "serve.log"
    with running_vera(["serve-model", "--port", str(port), "--registry", f"http://127.0.0.1:{free_port()}"], port,
                      log_path=log, VERA_LOG_FORMAT="text"):
        pass
    said = " ".join(log.read_text().split())
    assert "does not answer now" in said and "requests for adapters fail with 503 until it does" in said, said


def test_a_json_body_sent_as_a_form_is_told_its_content_type(server: dict[str, Any]) -> None:
    """`curl -d '{...}'` sends application/x-www-form-urlencoded: the 422 says to send JSON with its header."""
    answer = httpx.post(f"{server['url']}/api/v1/compare", content=b'{"refs": ["ann/x:1"]}',
                        headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=30)
    assert answer.status_code == 422
    assert "Content-Type: application/json" in answer.json()["detail"]
    assert "application/x-www-form-urlencoded" in answer.json()["detail"]
    # JSON cut short: where it stops being JSON, as the body's ("body.15: JSON decode error" read as a field's)
    cut = httpx.post(f"{server['url']}/api/v1/adapters/lookup", content=b'{"refs": ["ann/x:1"',
                     headers={"Content-Type": "application/json"}, timeout=30)
    assert cut.status_code == 422, cut.text
    assert cut.json()["detail"].startswith("body: not JSON at character 19 ("), cut.text
    assert cut.json()["detail"].endswith("); send a whole JSON document"), cut.text


def test_show_sums_up_a_loss_curve_instead_of_printing_it(server: dict[str, Any]) -> None:
    """`vera show` printed a 97-point train_loss in 55 of its 97 lines; --json keeps the whole curve."""
    curve = [[step, round(1 / step, 4)] for step in range(1, 98)]
    with RegistryClient(server["url"], cache=False) as client:
        ref = client.publish(server["source"], "ann/curved", base_model="tiny-llama",
                             metrics={"train_loss": curve, "accuracy": 0.891234567}).ref
    shown = vera("show", ref, url=server["url"])
    assert shown.returncode == 0, shown.stderr
    assert "metric train_loss  97 entries: [1, 1], ..., [97, 0.0103] (`--json` for all)" in shown.stdout
    assert "metric accuracy    0.891235" in shown.stdout and len(shown.stdout.splitlines()) < 30
    assert json.loads(vera("show", ref, "--json", url=server["url"]).stdout)["metrics"]["train_loss"] == curve


#: A trainer_state.json as HuggingFace Trainer writes it (transformers 4.5x: its keys, a run of 60 steps evaluating
#: every 20, then trainer.evaluate() at the end).
TRAINER_STATE = {
    "best_global_step": 40, "best_metric": 0.31, "best_model_checkpoint": "out/checkpoint-40", "epoch": 3.0,
    "eval_steps": 20, "global_step": 60, "is_hyper_param_search": False, "is_local_process_zero": True,
    "is_world_process_zero": True, "logging_steps": 10, "max_steps": 60, "num_input_tokens_seen": 0,
    "num_train_epochs": 3, "save_steps": 20, "total_flos": 1000.0, "train_batch_size": 8, "trial_name": None,
    "trial_params": None, "stateful_callbacks": {"TrainerControl": {"args": {"should_save": True}}},
    "log_history": [
        {"epoch": 0.5, "grad_norm": 1.2, "learning_rate": 0.004, "loss": 0.69, "step": 10},
        {"epoch": 1.0, "eval_accuracy": 0.6, "eval_loss": 0.65, "eval_runtime": 0.5, "eval_samples_per_second": 30.0,
         "eval_steps_per_second": 4.0, "step": 20},
        {"epoch": 1.0, "grad_norm": 1.0, "learning_rate": 0.003, "loss": 0.6, "step": 20},
        {"epoch": 2.0, "eval_accuracy": 0.9, "eval_loss": 0.31, "eval_runtime": 0.5, "step": 40},
        {"epoch": 3.0, "step": 60, "total_flos": 1000.0, "train_loss": 0.5, "train_runtime": 10.0},
        {"epoch": 3.0, "eval_accuracy": 0.85, "eval_loss": 0.35, "eval_runtime": 0.4, "step": 60}]}


def test_publish_reads_huggingface_trainers_trainer_state_as_curves(server: dict[str, Any], tmp_path: Path) -> None:
    """A PEFT user's walk (session 47): trainer_state.json as --metrics made its whole log_history one metric (and
    TrainerControl's flags others); now its loss curve and evaluations are what the dashboard draws."""
    state = tmp_path / "trainer_state.json"
    state.write_text(json.dumps(TRAINER_STATE))
    done = vera("publish", str(server["source"]), "--name", "ann/trainer", "--base-model", "tiny-llama", "--metrics",
                str(state), url=server["url"])
    assert done.returncode == 0, done.stderr
    assert f"--metrics {state}: read as HuggingFace Trainer's trainer_state.json: 2 loss points, 3 evaluations" in \
        " ".join(done.stderr.split())
    with RegistryClient(server["url"], cache=False) as client:
        info = client.get("ann/trainer")
    assert info.metrics == {
        "train_loss": [[10, 0.69], [20, 0.6]], "steps": 60, "eval_accuracy": 0.85, "eval_loss": 0.35,
        "eval": [{"step": 20, "eval_accuracy": 0.6, "eval_loss": 0.65}, {"step": 40, "eval_accuracy": 0.9,
                 "eval_loss": 0.31}, {"step": 60, "eval_accuracy": 0.85, "eval_loss": 0.35}]}
    assert info.params == {"batch_size": "8", "epochs": "3", "max_steps": "60"}


def test_publish_names_the_metrics_file_and_entry_that_holds_nan(server: dict[str, Any], tmp_path: Path) -> None:
    """HF Trainer writes NaN into its metrics files for a run that diverged: the registry's refusal named neither the
    file nor the key (a PEFT user's walk, session 47)."""
    nan = tmp_path / "eval_results.json"
    nan.write_text('{"epoch": 3.0, "eval_accuracy": 0.5, "eval_loss": NaN}')
    refused(vera("publish", str(server["source"]), "--name", "ann/nan", "--base-model", "tiny-llama", "--metrics",
                 str(nan), url=server["url"]),
            f"--metrics {nan}: eval_loss is NaN, which is not a number JSON has (a run that diverged writes it): "
            "drop that entry, or write it as null. Nothing was uploaded.")
    with RegistryClient(server["url"], cache=False) as client, pytest.raises(NotFound):
        client.adapter("ann/nan")


def test_publish_says_what_is_wrong_with_the_folder_and_notes_a_repeat(server: dict[str, Any],
                                                                       tmp_path: Path) -> None:
    refused(vera("publish", str(tmp_path / "nope"), "--name", "ann/nope", "--base-model", "tiny-llama",
                 url=server["url"]), "nope does not exist; expected a PEFT adapter folder")
    # PEFT's save_pretrained(safe_serialization=False): a PEFT folder, said to be none (a PEFT user's walk, session 47)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "adapter_config.json").write_text((server["source"] / "adapter_config.json").read_text())
    (pickled / "adapter_model.bin").write_bytes(b"\x80\x04N.")
    refused(vera("publish", str(pickled), "--name", "ann/pickled", "--base-model", "tiny-llama", url=server["url"]),
            "pickled has no adapter_model.safetensors. It has adapter_model.bin, a pickle, which is never loaded "
            "because unpickling runs arbitrary code; re-save it with PEFT's save_pretrained(safe_serialization=True)")
    first = vera("publish", str(server["source"]), "--name", "ann/again", "--base-model", "tiny-llama",
                 url=server["url"])
    again = vera("publish", str(server["source"]), "--name", "ann/again", "--base-model", "tiny-llama",
                 url=server["url"])
    assert first.returncode == again.returncode == 0 and "note:" not in first.stderr
    assert "ann/again:2 has the same vectors as ann/again:1 (published again)" in again.stderr


def test_fetch_says_how_much_it_wrote_and_why_more_than_is_stored(server: dict[str, Any], tmp_path: Path) -> None:
    """`vera ls` showed 120 KB stored, `vera fetch` wrote 3.3 MB without a word (newcomer walk)."""
    with RegistryClient(server["url"], cache=False) as client:
        info = client.publish(server["source"], "ann/sized", base_model="tiny-llama")
    default = vera("fetch", "ann/sized", "--out", str(tmp_path / "a"), url=server["url"])
    written = sum(p.stat().st_size for p in (tmp_path / "a").iterdir())
    assert default.returncode == 0 and f": {written:,} bytes; A and B included so that PEFT loads it" in default.stdout
    assert f"({info.stored_bytes:,} bytes stored: --seed-only for vera_core)" in default.stdout
    small = vera("fetch", "ann/sized", "--out", str(tmp_path / "b"), "--seed-only", url=server["url"])
    assert small.returncode == 0 and "A and B included" not in small.stdout
    assert "; seed-only: A and B are left out (vera_core regenerates them from the seed, PEFT refuses such a " \
        "folder; --with-projection includes them)" in " ".join(small.stdout.split())


def test_a_heartbeat_that_cannot_keep_the_lease_is_refused_before_the_worker_starts(server: dict[str, Any],
                                                                                    tmp_path: Path) -> None:
    """VERA_JOB_LEASE_S=4 with a heartbeat every 5 s: every running job would look dead between two heartbeats and
    be claimed by a second worker (trained twice). Refused at start; a lease over twice the heartbeat starts."""
    env = {"VERA_DATABASE_URL": f"sqlite:///{tmp_path / 'w.db'}", "VERA_STORAGE_URL": str(tmp_path / "blobs")}
    refused(vera("worker", "--once", url=server["url"], VERA_JOB_LEASE_S="4", **env),
            "A heartbeat every 5 s does not keep a job leased for 4 s", "under half the lease")
    assert vera("db", "upgrade", url=server["url"], **env).returncode == 0
    started = vera("worker", "--once", "--heartbeat", "1", url=server["url"], VERA_JOB_LEASE_S="4", **env)
    assert started.returncode == 0, started.stderr
    # `vera up`'s worker, whose heartbeat is not the user's to set: refused before anything starts or is said, with
    # the lease to give (it named a --heartbeat `vera up` does not have, after its start-up lines: a docs audit)
    up = vera("up", "--no-ui", "--port", str(free_port()), url=server["url"], VERA_JOB_LEASE_S="6",
              VERA_DATA_DIR=str(tmp_path / "up"))
    assert up.stdout == "" and "--heartbeat" not in up.stderr, up.stdout
    refused(up, "A heartbeat every 5 s does not keep a job leased for 6 s", "Give VERA_JOB_LEASE_S at least 10 s")


def test_vera_up_host_serves_a_team_on_this_machines_network_with_tokens(tmp_path: Path) -> None:
    """A team lead's walk (session 16): `vera up` bound only 127.0.0.1, so a team of several machines needed the
    whole deployment guide. --host 0.0.0.0 serves the API (and the dashboard) to the network, tokens required; and
    its worker's health had no address (--worker-status-port)."""
    port, data = free_port(), tmp_path / "data"
    admin = run_vera(["token", "create", "--owner", "lead", "--scope", "admin"],
                     env={**os.environ, "VERA_DATA_DIR": str(data)})
    assert admin.returncode == 0, admin.stderr
    secret = next(word for word in admin.stdout.split() if word.startswith("vera_"))
    # which registry holds it, and a warning when it was made just now: a shell without the server's VERA_DATA_DIR
    # made a token in a new, empty registry, which the server then called unknown (a newcomer's walk, session 38)
    held = f"the token is in sqlite:///{data / 'registry.db'}"
    assert f"warning: {held}, a registry database made just now: a server that runs on another" in \
        " ".join(admin.stderr.split()), admin.stderr
    again = run_vera(["token", "create", "--owner", "bob", "--scope", "read"],
                     env={**os.environ, "VERA_DATA_DIR": str(data)})
    assert again.returncode == 0 and " ".join(again.stderr.split()) == f"note: {held}.", again.stderr
    log, status = tmp_path / "up.log", free_port()
    with running_vera(["up", "--host", "0.0.0.0", "--no-ui", "--port", str(port), "--worker-status-port",
                       str(status)], port, log_path=log, VERA_DATA_DIR=str(data), VERA_LOG_FORMAT="text") as url:
        assert httpx.get(f"{url}/api/v1/whoami", timeout=60).status_code == 401  # not on loopback: tokens
        who = httpx.get(f"{url}/api/v1/whoami", headers={"Authorization": f"Bearer {secret}"}, timeout=60)
        assert who.status_code == 200 and who.json()["user"] == "lead"
        health = httpx.get(f"http://127.0.0.1:{status}/health", timeout=60)  # its worker's, as `vera worker`'s
        assert health.status_code == 200 and health.json()["status"] == "ok", health.text
    assert "tokens required" in log.read_text()
    # the line to paste, whole, on a line of its own (it broke at 80 columns: a newcomer's walk, session 33)
    assert f"\nfor `vera` in other shells: export VERA_REGISTRY_URL=http://127.0.0.1:{port}\n" in log.read_text()
    # and one for teammates, whom 127.0.0.1 does not reach (a team admin's walk, session 34), nor a name of only the
    # loopback (this VM's fully qualified name is 'localhost': a newcomer's walk, session 38)
    host = team_host()
    assert f"\nfor teammates: export VERA_REGISTRY_URL=http://{host or 'THIS-MACHINE'}:{port} (" in log.read_text()
    assert host is None or not _only_loopback(host)
    assert "tokens are off" not in log.read_text()
    # restarted on loopback it is local mode, which says what the team's tokens no longer guard (it said nothing:
    # a newcomer's walk, session 38)
    port, log = free_port(), tmp_path / "again.log"
    with running_vera(["up", "--no-ui", "--port", str(port)], port, log_path=log, VERA_DATA_DIR=str(data),
                      VERA_LOG_FORMAT="text") as url:
        assert httpx.get(f"{url}/api/v1/whoami", timeout=60).json()["user"] == "local"  # no token asked for
    said = " ".join(log.read_text().split())
    assert "LOCAL MODE" in said and "but this registry holds 2 live tokens: every user of this machine now reads " \
                                    "and changes all of it as the local user. Start it with " \
                                    "VERA_REQUIRE_TOKENS=true" in said, said


def _only_loopback(host: str) -> bool:
    return host == "localhost" or all(ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback
                                      for info in socket.getaddrinfo(host, None))


def test_the_teammates_address_is_never_the_loopbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever this machine's names resolve to, the address `vera up --host 0.0.0.0` gives teammates is one they can
    reach: a name of only the loopback is passed over for the address the machine's route leaves from."""
    for fqdn, hostname in (("localhost", "localhost"), ("localhost", socket.gethostname()),
                           (socket.getfqdn(), socket.gethostname())):
        monkeypatch.setattr(socket, "getfqdn", lambda fqdn=fqdn: fqdn)
        monkeypatch.setattr(socket, "gethostname", lambda hostname=hostname: hostname)
        host = team_host()
        assert host is None or not _only_loopback(host), (fqdn, hostname, host)
        if host is not None and host not in (fqdn, hostname):  # an address: the one the machine's route leaves from
            assert ipaddress.ip_address(host) and not ipaddress.ip_address(host).is_loopback
        # and the line for teammates calls it what it is (an address was "this machine's name": an audit, session 53)
        said = registry_url_lines("0.0.0.0", 8765)[-1]
        assert said.startswith(f"for teammates: export VERA_REGISTRY_URL=http://{host or 'THIS-MACHINE'}:8765 ("), said
        assert ("(this machine's address on the network its traffic leaves by)" in said) == (
            host is not None and host not in (fqdn, hostname)), said
        assert ("(this machine's name; its address" in said) == (host in (fqdn, hostname)), said


@pytest.mark.parametrize(("option", "value"), [("--task", "chat"), ("--generation-config", "vllm")])
def test_vera_serve_model_refuses_an_option_value_it_does_not_know(option: str, value: str) -> None:
    """Before it loads anything, one line naming the values it takes."""
    refused(vera("serve-model", option, value, url="http://127.0.0.1:9"), f"{option} must be", repr(value))


def test_publish_refuses_a_path_and_a_lora_and_notes_a_base_name_new_to_the_registry(
    server: dict[str, Any], tmp_path: Path,
) -> None:
    """A newcomer's walk (session 33): `--base-model ./models/minilm` and a typo (`minilm-l6`) each became a base
    model name for good (only an admin removes one), and servers of the real name refused those versions; a LoRA
    folder was uploaded whole before the registry refused it."""
    for path in ("./models/minilm", "/models/minilm", "~/minilm", "C:\\models\\minilm"):
        refused(vera("publish", str(server["source"]), "--name", "ann/pathed", "--base-model", path,
                     url=server["url"]), f"--base-model {path!r} is a folder path", "e.g. --base-model minilm")
    first = vera("publish", str(server["source"]), "--name", "ann/based2", "--base-model", "tiny-llama",
                 url=server["url"])
    assert first.returncode == 0, first.stderr
    typo = vera("publish", str(server["source"]), "--name", "ann/based2", "--base-model", "tiny-lama",
                url=server["url"])
    flat = " ".join(typo.stderr.split())
    assert typo.returncode == 0 and "note: base model 'tiny-lama' is new to this registry (it knew " in flat, flat
    assert "tiny-llama" in flat and "`vera base rm tiny-lama` then forgets the name" in flat
    # the commands it names are the CLI's (it named a `vera rm` there was none of, a newcomer's walk, session 38)
    assert "`vera delete ann/based2:2 --yes`" in flat
    assert vera("delete", "ann/based2:2", "--yes", url=server["url"]).returncode == 0
    again = vera("publish", str(server["source"]), "--name", "ann/based2", "--base-model", "tiny-lama",
                 url=server["url"])
    assert again.returncode == 0 and "is new to this registry" not in again.stderr
    lora = tmp_path / "lora"
    shutil.copytree(server["source"], lora)
    config = json.loads((lora / "adapter_config.json").read_text())
    (lora / "adapter_config.json").write_text(json.dumps({**config, "peft_type": "LORA"}))
    refused(vera("publish", str(lora), "--name", "ann/lora", "--base-model", "tiny-llama", url=server["url"]),
            "holds a PEFT LORA adapter (adapter_config.json's peft_type), not VeRA", "Nothing was uploaded.")
    with RegistryClient(server["url"], cache=False) as client:
        assert {v.name for v in client.list_versions(owner="ann").items} >= {"based2"}
        assert not {"pathed", "lora"} & {v.name for v in client.list_versions(owner="ann").items}


def test_publish_takes_a_path_named_base_the_registry_already_has(server: dict[str, Any]) -> None:
    """A base named by a folder path before the registry refused new ones keeps taking versions through `vera
    publish` too, as through the API (the review of session 33: only the API took them)."""
    import sqlite3

    first = vera("publish", str(server["source"]), "--name", "dan/old", "--base-model", "old-base", url=server["url"])
    assert first.returncode == 0, first.stderr
    with sqlite3.connect(server["root"] / "r.db") as db:  # as a registry from before the check recorded it
        db.execute("UPDATE base_models SET name = './models/old' WHERE name = 'old-base'")
    again = vera("publish", str(server["source"]), "--name", "dan/old", "--base-model", "./models/old",
                 url=server["url"])
    assert again.returncode == 0 and "dan/old:2" in again.stdout, again.stdout + again.stderr
    assert "new to this registry" not in again.stderr
    refused(vera("publish", str(server["source"]), "--name", "dan/old", "--base-model", "./models/other",
                 url=server["url"]), "--base-model './models/other' is a folder path")


def test_fetch_over_a_training_folder_is_refused_unless_forced(server: dict[str, Any], tmp_path: Path) -> None:
    """A newcomer's walk (session 33): `vera fetch REF --out runs/demo` over a `vera train` folder replaced the
    adapter and kept its metrics.json; publishing that folder with --metrics then recorded the old run's figures
    with the fetched vectors, without a word. Then a warning; still the run's unpublished adapter was lost (session
    51's walk): refused now, unless --force, before anything is downloaded. Over a fetched adapter: a refresh."""
    published = vera("publish", str(server["source"]), "--name", "cat/fetched", "--base-model", "tiny-llama",
                     url=server["url"])
    assert published.returncode == 0, published.stderr
    run = tmp_path / "run"
    shutil.copytree(server["source"], run)
    (run / "metrics.json").write_text('{"steps": 20}')
    (run / "adapter_model.safetensors").write_bytes(b"the run's own vectors")
    for held in ("metrics.json", "checkpoints"):
        if held == "checkpoints":
            (run / "metrics.json").rename(tmp_path / "metrics.json")
            (run / "checkpoints").mkdir()
        kept = vera("fetch", "cat/fetched:1", "--out", str(run), url=server["url"])
        assert kept.returncode == 1 and f"{run} holds the adapter of a training run ({held} beside it)" in " ".join(
            kept.stderr.split()) and "pass --force to replace it. Nothing was downloaded." in " ".join(
            kept.stderr.split()), kept.stderr
        assert (run / "adapter_model.safetensors").read_bytes() == b"the run's own vectors"
    (run / "checkpoints").rmdir()
    (tmp_path / "metrics.json").rename(run / "metrics.json")
    over = vera("fetch", "cat/fetched:1", "--out", str(run), "--force", url=server["url"])
    flat = " ".join(over.stderr.split())
    assert over.returncode == 0 and "its files replaced the adapter that was there" in over.stdout, over.stdout
    assert f"warning: {run} still holds metrics.json from before, which did not come with cat/fetched:1" in flat
    fresh = vera("fetch", "cat/fetched:1", "--out", str(tmp_path / "fresh"), url=server["url"])
    assert fresh.returncode == 0 and "warning" not in fresh.stderr, fresh.stderr
    again = vera("fetch", "cat/fetched:1", "--out", str(tmp_path / "fresh"), url=server["url"])  # a refresh
    assert again.returncode == 0 and "its files replaced the adapter that was there" in again.stdout, again.stderr


def test_vera_serve_says_where_other_shells_find_it(tmp_path: Path) -> None:
    """A PEFT user's walk (session 47): `vera serve --port 8790` said nothing of VERA_REGISTRY_URL (`vera up` does),
    and the next command in another shell went to the default port. Said as a log line: JSON logs stay JSON."""
    log = tmp_path / "serve.log"
    with running_server(f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "blobs", log_path=log) as url:
        assert httpx.get(f"{url}/health").status_code == 200
    said = [json.loads(line)["message"] for line in log.read_text().splitlines()]  # JSON lines, as every log line
    assert f"for `vera` in other shells: export VERA_REGISTRY_URL={url}" in said


def test_a_page_size_or_time_the_registry_would_refuse_is_a_usage_error_naming_the_option() -> None:
    """`vera ls --limit 0` and `vera events --since bogus` went to the registry, whose 422 named its own query
    parameters (`query.limit`, `query.since`) with exit 1 (a docs audit's finding, session 52): now Click's usage
    error (exit 2) naming the option, before any request (no registry listens at the URL given)."""
    nowhere = f"http://127.0.0.1:{free_port()}"
    for args, said in ((["ls", "--limit", "0"], "Invalid value for '--limit': Input should be greater than or equal "
                                                "to 1"),
                       (["ls", "--limit", "501"], "Invalid value for '--limit': Input should be less than or equal to "
                                                  "500"),
                       (["events", "--since", "bogus"], "Invalid value for '--since': 'bogus' is not an ISO 8601 "
                                                        "time; give e.g. 2026-12-01T09:00")):
        result = run_vera([*args, "--registry", nowhere])
        assert result.returncode == 2 and said in " ".join(result.stderr.split()), result.stderr
        assert "query." not in result.stderr
    # a time it reads goes on to the registry (here: none listens, said so)
    assert run_vera(["events", "--since", "2026-12-01T09:00+02:00", "--registry", nowhere]).returncode == 1

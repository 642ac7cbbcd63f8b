"""Today's client and `vera` against the registry server of an earlier release, as when a team's registry has not
been upgraded yet while its users' clients have (`pip install -U`): the everyday calls work, since the HTTP API
changes only compatibly, and what the older server cannot keep is said, not silently lost.

The older server is the real one: its code and its migrations are taken from this repository's history (``git
archive``) and run first on the path; it creates its own schema, as that release did."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load, load_file

from registry.client import RegistryClient
from registry.domain.errors import RegistryError
from registry.store.database import Database
from tests.registry.adapters import make_adapter
from tests.registry.servers import VERA_COMMAND, client_calls, free_port, running_vera
from tests.registry.test_cli_mistakes import vera

REPO = Path(__file__).resolve().parents[2]
#: The last commit before dataset lineage (publish's dataset_sha256 and dataset_bytes form fields, 5b70991).
OLDER = "9226ebd5683f9c4b22cc42c2f2e25a41c38280f6"


@pytest.fixture(scope="module")
def older(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("older")
    found = subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", f"{OLDER}^{{commit}}"], capture_output=True,
                           check=False)
    assert found.returncode == 0, (f"commit {OLDER} is not in {REPO}: the suite runs from a clone with its history "
                                   "(git clone, not a shallow one or an archive)")
    archive = subprocess.run(["git", "-C", str(REPO), "archive", OLDER, "registry", "vera_core", "migrations"],
                             capture_output=True, check=True).stdout
    code = root / "code"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(code, filter="data")
    # where an installed release keeps its migrations (registry.migrations), ahead of this checkout's own
    (code / "migrations").rename(code / "registry" / "migrations")
    url = f"sqlite:///{root / 'r.db'}"
    env = {"PYTHONPATH": str(code), "VERA_DATABASE_URL": url, "VERA_STORAGE_URL": str(root / "blobs")}
    upgraded = subprocess.run([*VERA_COMMAND, "db", "upgrade"], capture_output=True, text=True, check=False,
                              env={**os.environ, **env}, timeout=300)
    assert upgraded.returncode == 0, upgraded.stderr
    port = free_port()
    with running_vera(["serve", "--host", "127.0.0.1", "--port", str(port)], port, **env) as base:
        yield {"url": base, "root": root, "source": make_adapter(root / "adapter"), "code": code, "database": url}


def test_it_is_the_older_code_that_answers(older: dict[str, Any]) -> None:
    """The server under test runs the archived code (its publish form has no dataset fields), not today's, on the
    schema its own migrations made."""
    with RegistryClient(older["url"], cache=False) as client:
        form = client._request("GET", "/openapi.json").json()["components"]["schemas"]
    publish_forms = [schema for name, schema in form.items() if name.startswith("Body_publish")]
    assert publish_forms and all("dataset_sha256" not in s["properties"] for s in publish_forms)
    assert (older["code"] / "registry" / "api").is_dir()
    heads = [p.name for p in (older["code"] / "registry" / "migrations" / "versions").glob("0*.py")]
    db = Database(older["database"])
    assert db.current_revision() == max(heads).split("_")[0]
    db.engine.dispose()


def test_everyday_calls_of_todays_client_work_against_it(older: dict[str, Any], tmp_path: Path) -> None:
    with RegistryClient(older["url"], cache=False) as client:
        first = client.publish(older["source"], "alice/clf", base_model="tiny-llama", tags=["nightly"],
                               metrics={"test": {"accuracy": 0.9}})
        client.publish(older["source"], "alice/clf", base_model="tiny-llama")
        client.set_alias(first.ref, "prod")
        assert client.get("alice/clf@prod").version == 1
        assert [v.version for v in client.list_versions(owner="alice", name="clf").items] == [2, 1]
        # latest=true is new: the older server ignores it and lists both versions, which the client refuses as such
        with pytest.raises(RegistryError, match="lists every version where one an adapter was asked"):
            client.list_versions(owner="alice", latest=True)
        assert [v.ref for v in client.list_versions(filter="metrics.test.accuracy > 0.5").items] == ["alice/clf:1"]
        got = load(client.download(first.ref, "adapter_model.safetensors"))
        sent = load_file(older["source"] / "adapter_model.safetensors")
        assert sent.keys() <= got.keys() and all(torch.equal(got[k], sent[k]) for k in sent)  # + the projection
        client.yank("alice/clf:2")
        assert client.get("alice/clf").version == 1  # latest skips the yanked
    # a yank's reason is new (2026-12-06): the older server ignores it and yanks; the command says it was not kept
    reasoned = vera("yank", "alice/clf:2", "--reason", "leaked test split", url=older["url"])
    assert reasoned.returncode == 0 and "alice/clf:2 yanked" in reasoned.stdout, reasoned.stderr
    assert "the registry did not record the --reason on alice/clf:2 (it is older than yank reasons)" in " ".join(
        reasoned.stderr.split())


def test_publish_warns_of_what_the_older_server_did_not_keep(older: dict[str, Any], tmp_path: Path) -> None:
    """A dataset's hash and properties, fields the older server does not know (it ignores them)."""
    data = tmp_path / "train.jsonl"
    data.write_text('{"text": "good", "label": 1}\n')
    result = vera("publish", str(older["source"]), "--name", "alice/lineage", "--base-model", "tiny-llama",
                  "--dataset", str(data), "--property", "validation=passed", url=older["url"])
    assert result.returncode == 0, result.stderr  # published: the version is there, without them
    assert "published alice/lineage:1" in result.stdout
    said = " ".join(result.stderr.split())
    assert f"the registry did not record --dataset {data} in alice/lineage:1's lineage" in said
    assert "the registry did not record the --property values on alice/lineage:1 (it is older than properties)" in said
    with RegistryClient(older["url"], cache=False) as client:
        got = client.get("alice/lineage:1")
        assert "dataset_sha256" not in got.lineage and got.properties == {}


def test_job_labels_the_older_server_does_not_keep_are_said(older: dict[str, Any]) -> None:
    """`vera job submit --tag/--description/--property` are new form fields: the older server ignores them and queues
    the job; the command says its version will be published without them."""
    result = vera("job", "submit", "--name", "alice/old-job", "--demo", "--tag", "nightly", url=older["url"])
    assert result.returncode == 0, result.stderr
    assert "did not keep the --tag, --description or --property values of job" in " ".join(result.stderr.split())
    with RegistryClient(older["url"], cache=False) as client:
        [job] = [j for j in client.jobs() if j.target_name == "alice/old-job"]
        assert job.result_tags == [] and job.status == "queued"
        client.cancel_job(job.id)


def test_a_lookup_says_the_older_server_has_none_and_a_model_server_lists_without_it(
        older: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """POST /api/v1/adapters/lookup is new: against an older registry the client says so (not a bare 404), and
    `vera serve-model` lists its residents from what the registry said before, saying once why, and asking again
    only after LOOKUP_RETRY_S."""
    from registry.domain.errors import NotFound
    from registry.serving.server import LOOKUP_RETRY_S, ModelServer
    from tests.registry.test_serving import TEXTS, minilm_adapter

    with RegistryClient(older["url"], cache=False) as client:
        with pytest.raises(NotFound, match=r"has no lookup \(POST /api/v1/adapters/lookup, 2026-12\): it runs an "
                                           r"older release\. Upgrade it"):
            client.lookup(["alice/clf:1"])
        client.publish(minilm_adapter(tmp_path / "clf", seed=1), "alice/served", base_model="minilm")
    server = ModelServer("minilm", client_for=lambda token: RegistryClient(older["url"], cache=False),
                         resolve_ttl_s=0.0)
    try:
        assert server.classify("alice/served", TEXTS)["adapter"] == "alice/served:1"
        with caplog.at_level("WARNING", logger="vera.serving"):
            assert [e["ref"] for e in server.listing()] == ["alice/served:1"]
            assert [e["ref"] for e in server.listing()] == ["alice/served:1"]
        said = [r.getMessage() for r in caplog.records if "could not look up" in r.getMessage()]
        assert len(said) == 1 and f"for {LOOKUP_RETRY_S} s" in said[0], said
    finally:
        server.close()


def test_the_dashboards_jobs_table_reads_an_older_registry_a_version_at_a_time(
        older: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The Train page's jobs table reads the versions jobs published in one lookup; a registry without the lookup
    is asked a GET each instead, and a version deleted since is no metrics, not an error. The lookup is not tried
    again at each refresh (every 5 s) once the registry said it has none."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    with RegistryClient(older["url"], cache=False) as client:
        client.publish(older["source"], "alice/table", base_model="tiny-llama", metrics={"test": {"accuracy": 0.75}})
    at = AppTest.from_string(
        "import streamlit as st\n"
        "from registry.domain.schemas import JobInfo\n"
        "from web_ui import jobs\n"
        "done = [JobInfo.model_construct(result_ref=ref) for ref in ('alice/table:1', 'alice/table:9')]\n"
        "versions = jobs.published(done)\n"
        "st.write(repr([jobs.final_metrics(job, versions) for job in done]))\n", default_timeout=60)
    at.session_state["registry_url"], at.session_state["token"] = older["url"], ""
    lookups, gets = client_calls(monkeypatch, "lookup"), client_calls(monkeypatch, "get")
    for refresh in range(2):
        st.cache_data.clear()  # (the few-second read cache: each refresh asks the registry again)
        at.run()
        assert not at.exception, at.exception
        assert at.markdown[0].value == repr([{"test accuracy": 0.75, "eval loss": None},
                                             {"test accuracy": None, "eval loss": None}]), refresh
    # the lookup once (refused), then GETs, at each refresh, for NO_LOOKUP_S
    assert len(lookups) == 1 and len(gets) >= 4 and set(gets) == {("alice/table:1",), ("alice/table:9",)}, gets


def test_a_model_server_lists_to_callers_without_a_token_of_an_older_registry_with_anonymous_reads(
        older: dict[str, Any], tmp_path: Path) -> None:
    """An older registry answers anonymous GETs (VERA_ANONYMOUS_READ) but no POST without a token: the lookup's
    401 there means "no lookup", not "this caller reads nothing" (every such listing was empty: a reviewer's
    finding, session 36)."""
    from registry.serving.server import ModelServer
    from tests.registry.test_serving import TEXTS, minilm_adapter

    with RegistryClient(older["url"], cache=False) as client:
        client.publish(minilm_adapter(tmp_path / "clf", seed=2), "alice/open-clf", base_model="minilm")
    port = free_port()
    env = {"PYTHONPATH": str(older["code"]), "VERA_DATABASE_URL": older["database"],
           "VERA_STORAGE_URL": str(older["root"] / "blobs"), "VERA_REQUIRE_TOKENS": "true",
           "VERA_ANONYMOUS_READ": "true"}
    with running_vera(["serve", "--host", "127.0.0.1", "--port", str(port)], port, **env) as base:
        server = ModelServer("minilm", client_for=lambda token: RegistryClient(base, token or "", cache=False),
                             resolve_ttl_s=0.0)
        try:
            assert server.classify("alice/open-clf", TEXTS)["adapter"] == "alice/open-clf:1"
            assert [e["ref"] for e in server.listing()] == ["alice/open-clf:1"]
            assert [e["ref"] for e in server.listing()] == ["alice/open-clf:1"]  # and again, not refused for good
        finally:
            server.close()

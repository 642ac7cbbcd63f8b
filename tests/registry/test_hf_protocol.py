"""The registry as a HuggingFace Hub (/hf): the real clients (`huggingface_hub`, the `hf` CLI, PEFT, transformers)
pull adapters by name from a real `vera serve` with tokens required, with HF_ENDPOINT and HF_TOKEN set as a user
would."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub import errors as hub_errors

from registry.client import RegistryClient
from tests.registry.adapters import make_adapter
from tests.registry.servers import issued_tokens, registry_in_thread

ROOT = Path(__file__).resolve().parents[2]
REPO = "alice/demo"
FILES = ("README.md", "adapter_config.json", "adapter_model.safetensors")

pytestmark = pytest.mark.slow


@dataclass
class Served:
    url: str
    token: str
    client: RegistryClient
    tmp: Path

    @property
    def endpoint(self) -> str:
        return f"{self.url}/hf"

    def fetched(self, ref: str, **options: object) -> dict[str, bytes]:
        """What `vera fetch` gives for ``ref``: the bytes the Hub protocol must serve."""
        out = self.tmp / "fetched" / ref.replace("/", "_").replace(":", "_") / str(sorted(options.items()))
        self.client.fetch(ref, out, **options)  # type: ignore[arg-type]
        return {p.name: p.read_bytes() for p in out.iterdir()}

    def download(self, filename: str, revision: str, **kwargs: object) -> bytes:
        path = hf_hub_download(REPO, filename, revision=revision, endpoint=self.endpoint, token=self.token,
                               cache_dir=self.tmp / "hf-cache", **kwargs)  # type: ignore[arg-type]
        return Path(path).read_bytes()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """alice/demo with versions 1 and 2 (the portable generator, so a default download carries A and B), `prod`
    on version 1, tokens required."""
    tmp = tmp_path_factory.mktemp("hf")
    url = f"sqlite:///{tmp / 'r.db'}"
    with registry_in_thread(url, tmp / "blobs", VERA_REQUIRE_TOKENS="true") as base:
        [token] = issued_tokens(url, ("alice", ["read", "publish"]))
        with RegistryClient(base, token) as client:
            for seed in (1, 2):
                client.publish(make_adapter(tmp / f"a{seed}", seed=seed), REPO, base_model="org/tiny-llama")
            client.set_alias(f"{REPO}:1", "prod")
            yield Served(base, token, client, tmp)


def test_model_info_says_a_private_adapter_is_private(served: Served) -> None:
    """`private` was false for every adapter (an outsider's finding, session 45)."""
    served.client.publish(make_adapter(served.tmp / "hidden", seed=3), "alice/hidden", base_model="org/tiny-llama",
                          visibility="private")
    assert HfApi(endpoint=served.endpoint, token=served.token).model_info("alice/hidden").private is True


def test_model_info_snapshot_and_file_downloads_give_what_a_fetch_gives(served: Served) -> None:
    api = HfApi(endpoint=served.endpoint, token=served.token)
    info = api.model_info(REPO, revision="prod", files_metadata=True)
    assert info.id == REPO and info.sha is not None and len(info.sha) == 40 and info.private is False
    want = served.fetched(f"{REPO}:1")
    sizes = {s.rfilename: s.size for s in info.siblings or []}
    assert sorted(sizes) == list(FILES)
    assert sizes["adapter_config.json"] == len(want["adapter_config.json"])
    assert sizes["adapter_model.safetensors"] == len(want["adapter_model.safetensors"])
    assert sizes["README.md"] == len(served.download("README.md", "prod"))
    card = info.card_data
    assert card is not None and card["library_name"] == "peft" and card["base_model"] == "org/tiny-llama"
    assert card["vera_registry"]["version"] == f"{REPO}:1"
    assert api.model_info(REPO).sha == api.model_info(REPO, revision="2").sha != info.sha  # main = latest = 2

    folder = Path(snapshot_download(REPO, revision="prod", endpoint=served.endpoint, token=served.token,
                                    cache_dir=served.tmp / "hf-cache"))
    assert folder.name == info.sha and sorted(p.name for p in folder.iterdir()) == list(FILES)
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert (folder / name).read_bytes() == want[name], name
    assert "VeRA" in (folder / "README.md").read_text() and "peft" in (folder / "README.md").read_text()
    # a version number, v-number, the commit itself: the same files
    for revision in ("1", "v1", info.sha):
        assert served.download("adapter_model.safetensors", revision) == want["adapter_model.safetensors"]
    assert served.download("adapter_model.safetensors", "main") == served.fetched(f"{REPO}:2")[
        "adapter_model.safetensors"]


def test_forms_by_suffix_lora_seed_only_projection(served: Served) -> None:
    lora = served.fetched(f"{REPO}:1", as_lora=True)
    seed_only = served.fetched(f"{REPO}:1", seed_only=True)
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert served.download(name, "prod+lora") == lora[name]
        assert served.download(name, "1+seed-only") == seed_only[name]
        assert served.download(name, "v1+projection") == served.download(name, "prod")  # portable: default has A, B
    api = HfApi(endpoint=served.endpoint, token=served.token)
    shas = {api.model_info(REPO, revision=f"1{suffix}").sha for suffix in ("", "+lora", "+seed-only", "+projection")}
    assert len(shas) == 4  # each form its own commit: a client's cache never mixes their files
    card = api.model_info(REPO, revision="prod+lora").card_data
    assert card is not None and "lora" in card["tags"] and card["vera_registry"]["format"] == "lora"
    # /hf-lora: the LoRA form without a suffix, for clients that take a repo id and no revision (vLLM)
    folder = Path(snapshot_download(REPO, endpoint=f"{served.url}/hf-lora", token=served.token,
                                    cache_dir=served.tmp / "lora-cache"))
    assert folder.name == api.model_info(REPO, revision="main+lora").sha
    assert (folder / "adapter_model.safetensors").read_bytes() == served.fetched(
        f"{REPO}:2", as_lora=True)["adapter_model.safetensors"]


def test_a_moved_alias_gives_the_new_version_on_the_next_call_never_a_cached_file(served: Served) -> None:
    v1, v2 = served.fetched(f"{REPO}:1"), served.fetched(f"{REPO}:2")
    name = "adapter_model.safetensors"
    try:
        served.client.set_alias(f"{REPO}:1", "staging")
        assert served.download(name, "staging") == v1[name]
        served.client.set_alias(f"{REPO}:2", "staging")
        assert served.download(name, "staging") == v2[name]
        served.client.set_alias(f"{REPO}:1", "staging")
        assert served.download(name, "staging") == v1[name]
    finally:
        served.client.remove_alias(REPO, "staging")


def test_a_file_by_alias_redirects_to_its_commit(served: Served) -> None:
    """So that a client stores under a commit only that commit's file, even while the alias moves."""
    headers = {"Authorization": f"Bearer {served.token}"}
    head = httpx.head(f"{served.endpoint}/{REPO}/resolve/prod/adapter_config.json", headers=headers)
    commit = head.headers["x-repo-commit"]
    assert head.status_code == 307 and head.headers["location"] == f"../{commit}/adapter_config.json"
    final = httpx.get(f"{served.endpoint}/{REPO}/resolve/prod/adapter_config.json", headers=headers,
                      follow_redirects=True)
    assert final.status_code == 200 and final.content == served.fetched(f"{REPO}:1")["adapter_config.json"]
    assert "immutable" in final.headers["cache-control"] and final.headers["x-vera-version"] == f"{REPO}:1"
    assert final.headers["etag"].strip('"') == hashlib.sha256(final.content).hexdigest()


def test_yanked_and_deleted_versions(served: Served) -> None:
    with RegistryClient(served.url, served.token) as client:
        client.publish(make_adapter(served.tmp / "a3", seed=3), REPO, base_model="org/tiny-llama")
        api = HfApi(endpoint=served.endpoint, token=served.token)
        three = api.model_info(REPO, revision="3").sha
        assert api.model_info(REPO).sha == three
        client.yank(f"{REPO}:3")
        assert api.model_info(REPO).sha == api.model_info(REPO, revision="2").sha  # main skips a yanked version
        assert api.model_info(REPO, revision="3").sha == three  # by number it is still served, as the API does
        client.delete(f"{REPO}:3")
        for revision in ("3", three):
            with pytest.raises(hub_errors.RevisionNotFoundError):
                api.model_info(REPO, revision=revision)


def test_a_commit_keeps_its_readme_when_the_card_is_edited_or_the_parent_deleted(served: Served) -> None:
    """A commit's files are served as immutable, so README.md (the adapter's card, then the version's record) must
    not change under it: a card edit makes new commits and keeps the old ones' READMEs; an evaluation recorded on
    the version and a deleted parent change nothing."""
    repo, headers = "alice/carded", {"Authorization": f"Bearer {served.token}"}

    def readme(revision: str) -> bytes:
        answer = httpx.get(f"{served.endpoint}/{repo}/resolve/{revision}/README.md", headers=headers,
                           follow_redirects=True)
        assert answer.status_code == 200, answer.text
        assert answer.headers["etag"].strip('"') == hashlib.sha256(answer.content).hexdigest()
        return answer.content

    api = HfApi(endpoint=served.endpoint, token=served.token)
    with RegistryClient(served.url, served.token) as client:
        for seed in (11, 12):
            client.publish(make_adapter(served.tmp / f"carded{seed}", seed=seed), repo, base_model="org/tiny-llama",
                           parent=f"{repo}:1" if seed == 12 else None)
        first = api.model_info(repo, revision="1").sha
        assert first is not None and first[30:32] == "00"  # never edited: the ids served before revisions were kept
        before, child = readme(first), api.model_info(repo, revision="2").sha
        assert child is not None and f"parent: {repo}:1" in readme(child).decode()
        child_readme = readme(child)
        client.record_evaluation(f"{repo}:2", "hellaswag", {"acc": 0.41})  # numbers recorded after publish: the
        assert api.model_info(repo, revision="2").sha == child and readme(child) == child_readme  # commit's bytes stay
        assert client.get(f"{repo}:2").metrics["hellaswag"] == {"acc": 0.41}
        client.delete_evaluation(f"{repo}:2", "hellaswag")

        client.update_adapter(repo, card="# Carded\n\nFirst words.\n")
        edited = api.model_info(repo, revision="1").sha
        assert edited is not None and edited != first and edited[30:32] == "80" and int(edited[24:30], 16) == 1
        assert "First words." in readme(edited).decode() and readme(first) == before  # the old commit: old bytes
        client.update_adapter(repo, card="# Carded\n\nSecond words.\n")
        again = api.model_info(repo, revision="1").sha
        assert again is not None and len({first, edited, again}) == 3 and int(again[24:30], 16) == 2
        assert "Second words." in readme(again).decode() and "First words." in readme(edited).decode()
        assert readme(first) == before and api.model_info(repo).sha == api.model_info(repo, revision="2").sha
        assert api.model_info(repo, revision=edited).sha == edited  # a pinned commit resolves to itself
        assert "First words." in Path(hf_hub_download(repo, "README.md", revision=edited, endpoint=served.endpoint,
                                                      token=served.token, cache_dir=served.tmp / "card-cache")
                                      ).read_text()
        with pytest.raises(hub_errors.RevisionNotFoundError):  # a card revision this adapter never had
            api.model_info(repo, revision=f"{edited[:24]}{9:06x}{edited[30:]}")

        client.delete(f"{repo}:1")  # the parent goes: its child's README under the child's first commit stays
        assert readme(child) == child_readme
        for commit in (first, edited):
            with pytest.raises(hub_errors.RevisionNotFoundError):
                api.model_info(repo, revision=commit)


@pytest.mark.parametrize(("repo", "revision", "filename", "error"), [
    ("nobody/demo", "main", "adapter_config.json", hub_errors.RepositoryNotFoundError),
    ("alice/nothing", "main", "adapter_config.json", hub_errors.RepositoryNotFoundError),
    (REPO, "9", "adapter_config.json", hub_errors.RevisionNotFoundError),
    (REPO, "no-such-alias", "adapter_config.json", hub_errors.RevisionNotFoundError),
    (REPO, "main+bogus", "adapter_config.json", hub_errors.RevisionNotFoundError),
    (REPO, "a" * 40, "adapter_config.json", hub_errors.RevisionNotFoundError),
    (REPO, "r" * 500, "adapter_config.json", hub_errors.RevisionNotFoundError),
    (REPO, "main", "adapter_model.bin", hub_errors.RemoteEntryNotFoundError),
    (REPO, "main", "sub/README.md", hub_errors.RemoteEntryNotFoundError),
])
def test_what_does_not_exist_raises_the_clients_own_error(served: Served, repo: str, revision: str, filename: str,
                                                          error: type[Exception]) -> None:
    with pytest.raises(error):
        hf_hub_download(repo, filename, revision=revision, endpoint=served.endpoint, token=served.token,
                        cache_dir=served.tmp / "errors-cache")


def test_a_missing_revision_is_said_once(served: Served) -> None:
    """The 404 names the repo once ("a/b has no revision '9': a/b has no version 9" said it twice, until session
    44), in the body and in the header huggingface_hub shows."""
    headers = {"Authorization": f"Bearer {served.token}"}
    for revision, said in (("9", f"{REPO} has no version 9; its versions: 1, 2."),
                           ("v9", f"{REPO} has no version 9; its versions: 1, 2."),
                           ("nope", f"{REPO} has no alias 'nope'; its aliases: latest, prod.")):
        answer = httpx.get(f"{served.endpoint}/{REPO}/resolve/{revision}/README.md", headers=headers)
        assert answer.status_code == 404 and answer.json()["detail"].startswith(said), answer.json()
        assert answer.headers["x-error-message"].startswith(said) and answer.headers["x-error-code"] == \
            "RevisionNotFound"
    bad = httpx.get(f"{served.endpoint}/api/models/{REPO}/revision/main+bogus", headers=headers)
    assert bad.json()["detail"].startswith(f"{REPO} has no revision 'main+bogus': a revision is main, ")


def test_an_endpoint_without_hf_is_told_where_the_hub_protocol_is(served: Served) -> None:
    """A PEFT user's walk (session 47): HF_ENDPOINT set to the registry's root (no /hf) gave huggingface_hub a bare
    404, which it reported as "check your connection"."""
    with pytest.raises(hub_errors.RepositoryNotFoundError, match="the HuggingFace Hub protocol is served under /hf. "
                                                                 "Set HF_ENDPOINT to this registry's URL followed by "
                                                                 "/hf"):
        HfApi(endpoint=served.url, token=served.token).model_info(REPO)
    answer = httpx.get(f"{served.url}/{REPO}/resolve/main/adapter_config.json", headers={"Host": "evil.example"})
    assert answer.status_code == 404 and answer.headers["x-error-code"] == "RepoNotFound"
    assert "followed by /hf" in answer.json()["detail"] and "evil" not in answer.text  # the Host is not said back
    assert "HF_ENDPOINT" not in httpx.get(f"{served.url}/nowhere").json()["detail"]  # another path: a plain 404
    for path in (f"api/models/{REPO}/revision/main", f"api/models/{REPO}/tree/main"):  # snapshot_download's, and
        said = httpx.get(f"{served.url}/{path}")  # list_repo_files' (a re-check)
        assert said.status_code == 404 and "followed by /hf" in said.headers["x-error-message"], path


def test_hostile_paths_tokens_and_write_verbs(served: Served) -> None:
    headers = {"Authorization": f"Bearer {served.token}"}
    for path in ("/alice/demo/resolve/main/..%2F..%2Fr.db", "/alice/demo/resolve/main%2F..%2F..%2F1/README.md",
                 "/alice/%2E%2E/resolve/main/README.md", "/api/models/alice/demo/tree/main/..%2F..%2Fetc",
                 "/%2E%2E/%2E%2E/api/v1/tokens", "/alice/demo/resolve/main/README.md%00",
                 "/alice/" + "x" * 5000 + "/resolve/main/README.md", "/api/models/" + "o" * 3000 + "/demo",
                 "/api/models/%08/0", "/api/models/alice/%0D%0Aset-cookie:x=1/tree/main",
                 "/alice/demo%C2%85/resolve/main/README.md", "/api/models/alice/demo?blobs=%7F"):
        answer = httpx.get(served.endpoint + path, headers=headers)
        assert answer.status_code == 404, (path, answer.status_code)
        code = answer.headers.get("x-error-code")
        assert code in ("RepoNotFound", "EntryNotFound", "RevisionNotFound"), (path, answer.url)
        # the name in the message, control characters and all, is made a valid header (seen: a dropped connection)
        assert answer.headers["x-error-message"].isprintable() and "set-cookie" not in answer.headers, path
    with pytest.raises(hub_errors.RepositoryNotFoundError):  # no token, or a wrong one: as the Hub's private repo
        HfApi(endpoint=served.endpoint, token=False).model_info(REPO)
    with pytest.raises(hub_errors.RepositoryNotFoundError):
        hf_hub_download(REPO, "README.md", endpoint=served.endpoint, token="vera_wrong",
                        cache_dir=served.tmp / "c2")
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        answer = httpx.request(method, f"{served.endpoint}/api/models/{REPO}/commit/main", headers=headers,
                               content=b"x" * 1000)
        assert answer.status_code == 405 and answer.headers["allow"] == "GET, HEAD"
        assert "read-only" in answer.json()["detail"]
    with pytest.raises(hub_errors.HfHubHTTPError, match="read-only mirror"):
        HfApi(endpoint=served.endpoint, token=served.token).upload_file(path_or_fileobj=b"x", path_in_repo="x",
                                                                         repo_id=REPO)
    assert len(served.client.list_versions(owner="alice").items) >= 2  # nothing was written


def _hf_environment(served: Served, home: Path) -> dict[str, str]:
    return {**os.environ, "HF_ENDPOINT": served.endpoint, "HF_TOKEN": served.token, "HF_HOME": str(home),
            "HF_HUB_DISABLE_TELEMETRY": "1", "PYTHONPATH": str(ROOT)}


def test_the_hf_cli_downloads_by_name(served: Served) -> None:
    out = served.tmp / "cli-out"
    done = subprocess.run([str(Path(sys.executable).parent / "hf"), "download", REPO, "--revision", "prod",
                           "--local-dir", str(out)], env=_hf_environment(served, served.tmp / "cli-home"),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    want = served.fetched(f"{REPO}:1")
    assert (out / "adapter_model.safetensors").read_bytes() == want["adapter_model.safetensors"]
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == list(FILES)


PEFT_SCRIPT = """
import sys, torch
from peft import PeftModel
from tests.conftest import output_of
from tests.registry.adapters import LLAMA
from vera_core import load_adapter

want = output_of(load_adapter(LLAMA.make(), sys.argv[1]), LLAMA.inputs())
theirs = PeftModel.from_pretrained(LLAMA.make(), "alice/demo", revision="prod").eval()
torch.testing.assert_close(output_of(theirs, LLAMA.inputs()), want, rtol=1e-5, atol=1e-5)
lora = PeftModel.from_pretrained(LLAMA.make(), "alice/demo", revision="prod+lora").eval()
assert type(lora.peft_config["default"]).__name__ == "LoraConfig"
torch.testing.assert_close(output_of(lora, LLAMA.inputs()), want, rtol=1e-4, atol=1e-5)
# transformers' load_adapter injects without PEFT's tuner, which VeRA's shared A and B need (PEFT refuses): the LoRA
# form is what it loads; transformers 5 takes the revision in adapter_kwargs
model = LLAMA.make()
model.load_adapter("alice/demo", adapter_name="demo", adapter_kwargs={"revision": "prod+lora"})
model.set_adapter("demo")
torch.testing.assert_close(output_of(model, LLAMA.inputs()), want, rtol=1e-4, atol=1e-5)
print("same outputs")
"""


def test_peft_and_transformers_load_by_repo_id(served: Served) -> None:
    """PeftModel.from_pretrained(base, "alice/demo", revision="prod") with HF_ENDPOINT and HF_TOKEN, as a user
    writes it: VeRA gives vera_core's outputs; the LoRA form the same through PEFT and transformers."""
    served.client.fetch(f"{REPO}:1", served.tmp / "ours")
    done = subprocess.run([sys.executable, "-c", PEFT_SCRIPT, str(served.tmp / "ours")], cwd=ROOT,
                          env=_hf_environment(served, served.tmp / "peft-home"), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and "same outputs" in done.stdout, done.stderr[-3000:]

"""Hub sync through the real `huggingface_hub` client against the Hub stand-in (a real HTTP server), on SQLite and
PostgreSQL: push in PEFT's format with a model card, pull PEFT VeRA adapters, sync state, idempotence, failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from huggingface_hub.repocard import metadata_load
from peft import PeftModel
from sqlalchemy import func, select

from registry.client import RegistryClient
from registry.domain.errors import ContentTooLarge, Forbidden, HubError, InvalidInput
from registry.services.base_configs import HubBaseConfigs
from registry.services.hub import HubSync
from registry.services.hub_http import use_timeout
from registry.services.registry import Registry
from registry.services.tokens import create_token
from registry.store import models as m
from registry.store.blobs import FsspecBlobStore
from registry.store.database import Database
from tests.commands import wide_vera as vera
from tests.conftest import TINY_MODELS, output_of
from tests.registry.adapters import LLAMA, make_adapter, make_model
from tests.registry.hub_standin import HubStandIn, running_hub
from tests.registry.servers import free_port, registry_in_thread
from tests.vera_core.test_peft_interop import peft_model, train_a_little
from vera_core import PEFT_GENERATOR, load_adapter
from vera_core.config import SEED_ONLY_PEFT_TYPE

TOKEN = "hf_standin_alice_write"


@pytest.fixture(scope="module")
def hub_server() -> Iterator[HubStandIn]:
    use_timeout(5.0)
    with running_hub() as hub:
        yield hub


@pytest.fixture
def hub(hub_server: HubStandIn) -> HubStandIn:
    hub_server.repos.clear()
    hub_server.faults.clear()
    hub_server.requests.clear()
    hub_server.received_headers.clear()
    hub_server.tokens.clear()
    hub_server.tokens.update({TOKEN: "alice", "hf_bob": "bob"})
    hub_server.declared.clear()
    hub_server.listed.clear()
    hub_server.gzipped.clear()
    hub_server.trickle.clear()
    hub_server.trickled = 0
    hub_server.stall.clear()
    hub_server.cut_once.clear()
    hub_server.answered_sha, hub_server.xet, hub_server.redirect, hub_server.error_text = None, False, False, None
    return hub_server


@pytest.fixture
def sync(registry: Registry, hub: HubStandIn) -> HubSync:
    return HubSync(registry, endpoint=hub.url, token=TOKEN, timeout_s=5.0)


def published(registry: Registry, tmp_path: Path, seed: int = 0, **changes: object) -> str:
    source = make_adapter(tmp_path / f"adapter-{seed}", seed=seed, **changes)
    info = registry.publish(source, owner="alice", name="llama-demo", base_model="org/tiny-llama",
                            metrics={"accuracy": 0.91, "loss": 0.25})
    return info.ref


def snapshot(registry: Registry) -> dict[str, int]:
    """Row counts of every table and the number of blobs: 'unchanged' means equal snapshots."""
    with registry.db.session() as s:
        counts = {t.name: s.scalar(select(func.count()).select_from(t)) or 0 for t in m.Base.metadata.sorted_tables}
    counts["blob files"] = len(list(registry.blobs.digests()))
    return counts


def test_push_writes_peft_format_that_peft_loads_from_the_hub_by_repo_id(
    registry: Registry, sync: HubSync, hub: HubStandIn, tmp_path: Path
) -> None:
    ref = published(registry, tmp_path)
    result = sync.push(ref, "alice/llama-vera", actor="alice")
    assert result.changed and result.peft_loadable
    assert result.sync.commit_sha == hub.head("alice/llama-vera")
    assert set(hub.files("alice/llama-vera")) == {".gitattributes", "adapter_config.json",
                                                 "adapter_model.safetensors", "README.md"}
    want = output_of(make_model(seed=0), LLAMA.inputs())
    torch.testing.assert_close(peft_outputs_from_hub(hub, "alice/llama-vera", tmp_path), want, rtol=1e-5, atol=1e-5)


def test_push_as_lora_gives_a_repo_peft_loads_as_a_lora_with_equal_outputs(
    registry: Registry, sync: HubSync, hub: HubStandIn, tmp_path: Path
) -> None:
    ref = published(registry, tmp_path)
    result = sync.push(ref, "alice/llama-lora", actor="alice", as_lora=True)
    assert result.sync.format == "lora" and result.changed
    files = hub.files("alice/llama-lora")
    assert json.loads(files["adapter_config.json"])["peft_type"] == "LORA"
    (tmp_path / "README.md").write_bytes(files["README.md"])
    assert metadata_load(tmp_path / "README.md")["vera_registry"]["format"] == "lora"
    want = output_of(make_model(seed=0), LLAMA.inputs())
    torch.testing.assert_close(peft_outputs_from_hub(hub, "alice/llama-lora", tmp_path), want, rtol=1e-5, atol=1e-5)
    assert not sync.push(ref, "alice/llama-lora", actor="alice", as_lora=True).changed


def peft_outputs_from_hub(hub: HubStandIn, repo_id: str, tmp_path: Path) -> torch.Tensor:
    """PeftModel.from_pretrained(base, repo_id) in a fresh process that knows the Hub only by HF_ENDPOINT."""
    script = (
        "import sys, torch\nfrom peft import PeftModel\nfrom tests.conftest import TINY_MODELS\n"
        "llama = TINY_MODELS[2]\nmodel = PeftModel.from_pretrained(llama.make(), sys.argv[2]).eval()\n"
        "with torch.no_grad():\n    torch.save(model(**llama.inputs()).logits, sys.argv[1])\n"
    )
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "0",
           "HF_HUB_DISABLE_TELEMETRY": "1"}
    out = tmp_path / "peft-logits.pt"
    done = subprocess.run([sys.executable, "-c", script, str(out), repo_id], env=env, capture_output=True,
                          text=True, timeout=300, cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stderr[-3000:]
    return torch.load(out, weights_only=True)


def test_model_card_records_what_reproduces_and_verifies_the_adapter(
    registry: Registry, sync: HubSync, hub: HubStandIn, tmp_path: Path
) -> None:
    ref = published(registry, tmp_path)
    sync.push(ref, "alice/card", actor="alice")
    (tmp_path / "README.md").write_bytes(hub.files("alice/card")["README.md"])
    meta = metadata_load(tmp_path / "README.md")
    assert meta is not None
    info = registry.get(ref)
    assert meta["library_name"] == "peft" and meta["base_model"] == "org/tiny-llama" and "vera" in meta["tags"]
    record = meta["vera_registry"]
    assert record == {
        "version": "alice/llama-demo:1", "base_model": "org/tiny-llama", "base_revision": None, "r": 8,
        "projection_prng_key": info.seed, "projection_generator": info.generator,
        "projection_fingerprint": info.projection_fingerprint, "projections_included": True,
        "trainable_parameters": info.trainable_parameters, "adapter_parameters": info.adapter_parameters,
        "metrics": {"accuracy": 0.91, "loss": 0.25}, "lineage": {}, "format": "vera",
    }


def test_repushing_an_unchanged_version_makes_no_commit_and_no_new_state(
    registry: Registry, sync: HubSync, hub: HubStandIn, tmp_path: Path
) -> None:
    ref = published(registry, tmp_path)
    first = sync.push(ref, "alice/again", actor="alice")
    commits = len(hub.repos["alice/again"].history)
    second = sync.push(ref, "alice/again", actor="alice")
    assert not second.changed
    assert second.sync.commit_sha == first.sync.commit_sha
    assert len(hub.repos["alice/again"].history) == commits
    assert [s.commit_sha for s in sync.status(ref)] == [first.sync.commit_sha]
    # a new version into the same repo is a new commit, recorded on that version
    ref2 = registry.publish(make_adapter(tmp_path / "v2", seed=5), owner="alice", name="llama-demo",
                            base_model="org/tiny-llama").ref
    third = sync.push(ref2, "alice/again", actor="alice")
    assert third.changed and third.sync.commit_sha != first.sync.commit_sha
    assert [s.direction for s in sync.status(ref2)] == ["push"]


def test_seed_only_push_has_no_projections_and_warns_when_peft_cannot_regenerate_them(
    registry: Registry, sync: HubSync, hub: HubStandIn, tmp_path: Path
) -> None:
    ref = published(registry, tmp_path)  # portable generator
    result = sync.push(ref, "alice/seed-only", actor="alice", with_projection=False)
    assert not result.peft_loadable and "PEFT cannot load this copy" in result.notes[0]
    (tmp_path / "dl").mkdir()
    for name, data in hub.files("alice/seed-only").items():
        (tmp_path / "dl" / name).write_bytes(data)
    config = json.loads((tmp_path / "dl" / "adapter_config.json").read_text())
    assert config["save_projection"] is False and config["peft_type"] == SEED_ONLY_PEFT_TYPE
    assert "PEFT cannot load this copy" in (tmp_path / "dl" / "README.md").read_text()
    with pytest.raises(KeyError, match="vera export-peft"):  # rather than loading other projections silently
        PeftModel.from_pretrained(LLAMA.make(), tmp_path / "dl")
    assert metadata_load(tmp_path / "dl" / "README.md")["vera_registry"]["projections_included"] is False
    # vera_core regenerates them and gets the same outputs, and the registry pulls such a copy back
    torch.testing.assert_close(output_of(load_adapter(LLAMA.make(), tmp_path / "dl"), LLAMA.inputs()),
                               output_of(make_model(seed=0), LLAMA.inputs()))
    back = sync.pull("alice/seed-only", target="alice/back", actor="alice", base_model="org/tiny-llama")
    assert back.version.seed_reproducible
    # the pull says of the repo what the push said (it said true: an audit, session 53), the repeat pull too
    assert not back.peft_loadable and not sync.pull("alice/seed-only", target="alice/back", actor="alice").peft_loadable
    assert back.version.projection_fingerprint == registry.get(ref).projection_fingerprint


def peft_repo_files(tmp_path: Path, *, seed: int = 7) -> tuple[dict[str, bytes], torch.Tensor]:
    """A VeRA adapter written by PEFT itself (trained a little), and the outputs it gives."""
    tiny = TINY_MODELS[2]
    theirs = peft_model(tiny, seed=seed)
    train_a_little(theirs, tiny)
    theirs.save_pretrained(tmp_path / "peft-out")
    files = {p.name: p.read_bytes() for p in (tmp_path / "peft-out").iterdir() if p.is_file()}
    return files, output_of(theirs, tiny.inputs())


def test_pull_records_a_peft_adapter_as_a_version_with_its_repo_and_commit(
    registry: Registry, sync: HubSync, hub: HubStandIn, tmp_path: Path
) -> None:
    files, want = peft_repo_files(tmp_path)
    commit = hub.seed_repo("someone/peft-vera", files)
    result = sync.pull("someone/peft-vera", target="alice/pulled", actor="alice", base_model="org/tiny-llama")
    assert result.changed
    info = result.version
    assert info.ref == "alice/pulled:1" and info.generator == PEFT_GENERATOR and info.seed_reproducible
    assert info.lineage == {"hub_repo": "someone/peft-vera", "hub_commit": commit}
    assert [(s.direction, s.repo_id, s.commit_sha) for s in sync.status(info.ref)] == [
        ("pull", "someone/peft-vera", commit)]
    registry.fetch(info.ref, tmp_path / "fetched")
    got = output_of(load_adapter(TINY_MODELS[2].make(), tmp_path / "fetched"), TINY_MODELS[2].inputs())
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_pull_refuses_a_base_model_that_is_the_trainers_local_folder(
    registry: Registry, sync: HubSync, hub: HubStandIn, tmp_path: Path
) -> None:
    """PEFT writes the folder it loaded the base from into adapter_config.json; taken as the base model's name, the
    version was keyed by '/home/.../model', which no server of that base serves (a guide's walk). Refused, saying to
    pass --base-model, which is then used."""
    files, _ = peft_repo_files(tmp_path)
    config = json.loads(files["adapter_config.json"])
    for folder in ("/home/ann/models/tiny-llama", "./tiny-llama", "~/tiny", "C:\\models\\tiny"):
        hub.seed_repo("someone/local-base", {**files, "adapter_config.json": json.dumps(
            {**config, "base_model_name_or_path": folder}).encode()})
        before = snapshot(registry)
        with pytest.raises(InvalidInput, match="a folder on the machine that trained it .* pass the base model's name"):
            sync.pull("someone/local-base", target="alice/local-base", actor="alice")
        assert snapshot(registry) == before
    pulled = sync.pull("someone/local-base", target="alice/local-base", actor="alice", base_model="org/tiny-llama")
    assert pulled.version.base_model == "org/tiny-llama"


def test_pulling_an_unchanged_revision_or_unchanged_files_makes_no_new_version(
    registry: Registry, sync: HubSync, hub: HubStandIn, tmp_path: Path
) -> None:
    files, _ = peft_repo_files(tmp_path)
    hub.seed_repo("someone/stable", files)
    first = sync.pull("someone/stable", target="alice/stable", actor="alice", base_model="org/tiny-llama")
    again = sync.pull("someone/stable", target="alice/stable", actor="alice", base_model="org/tiny-llama")
    assert not again.changed and again.version.ref == first.version.ref
    # the README changed upstream, the adapter did not: the new commit is recorded against the same version
    readme_commit = hub.seed_repo("someone/stable", {**files, "README.md": b"---\nlicense: mit\n---\nhello\n"})
    third = sync.pull("someone/stable", target="alice/stable", actor="alice", base_model="org/tiny-llama")
    assert not third.changed and third.version.ref == "alice/stable:1"
    assert [s.commit_sha for s in sync.status("alice/stable:1")][0] == readme_commit
    assert registry.list_versions(owner="alice").items[0].version == 1
    # changed weights make version 2
    new_files, _ = peft_repo_files(tmp_path / "b", seed=8)
    hub.seed_repo("someone/stable", {**new_files, "README.md": b"---\nlicense: mit\n---\nnew\n"})
    assert sync.pull("someone/stable", target="alice/stable", actor="alice",
                     base_model="org/tiny-llama").version.ref == "alice/stable:2"


def test_pull_restores_metrics_from_a_registry_model_card(
    registry: Registry, sync: HubSync, hub: HubStandIn, tmp_path: Path
) -> None:
    ref = published(registry, tmp_path)
    sync.push(ref, "alice/roundtrip", actor="alice")
    result = sync.pull("alice/roundtrip", target="alice/copy", actor="alice")
    info = result.version
    assert info.base_model == "org/tiny-llama" and info.metrics == {"accuracy": 0.91, "loss": 0.25}
    assert result.peft_loadable  # A and B are in the repo
    assert info.projection_fingerprint == registry.get(ref).projection_fingerprint


def test_a_fine_tunes_nested_metrics_and_loss_curve_make_the_round_trip_and_read_as_a_table(
    registry: Registry, sync: HubSync, hub: HubStandIn, tmp_path: Path
) -> None:
    """What a fine-tune publishes (final_eval and test as objects, eval as a list of them, train_loss as a curve):
    a pull left out every entry that was not a plain number (an audit, session 53: `{ev1: {acc: 0.5}}` came back as
    `{}`), and the pushed card's table showed Python's repr of the objects and of the whole curve."""
    curve = [[step, round(1 / step, 4)] for step in range(1, 8)]
    metrics = {"final_eval": {"accuracy": 0.9, "loss": 0.31}, "test": {"mnli": {"accuracy": 0.875}},
               "eval": [{"step": 4, "eval_loss": 0.4}], "train_loss": curve, "task": "sequence-classification",
               "steps": 7, "labels": ["no", "yes"]}
    info = registry.publish(make_adapter(tmp_path / "a"), owner="alice", name="tuned", base_model="org/tiny-llama",
                            metrics=metrics)
    sync.push(info.ref, "alice/tuned", actor="alice")
    card = hub.files("alice/tuned")["README.md"].decode()
    table = card[card.index("| metric | value |"):]
    for row in ("| final_eval.accuracy | 0.9 |", "| final_eval.loss | 0.31 |", "| test.mnli.accuracy | 0.875 |",
                "| eval | [{step: 4, eval_loss: 0.4}] |", "| steps | 7 |", "| labels | [no, yes] |",
                "| train_loss | 7 entries: [1, 1], ..., [7, 0.1429] (all of them under vera_registry above) |"):
        assert row in table, (row, table)
    assert "{'" not in table and "[[" not in table, table
    assert sync.pull("alice/tuned", target="alice/copy", actor="alice").version.metrics == metrics
    # entries a publish would refuse are left out, the others kept: not a number JSON has, a date (YAML's), an
    # escape sequence in a key, a key that is no text
    odd = "\n    nan_one: .nan\n    when: 2024-01-02\n    weird:\n      \"a\\e[2Jb\": 1\n    7: 0.5"
    files = dict(hub.files("alice/tuned"))
    files["README.md"] = card.replace("  metrics:", "  metrics:" + odd, 1).encode()
    (tmp_path / "edited.md").write_bytes(files["README.md"])
    assert set(metadata_load(tmp_path / "edited.md")["vera_registry"]["metrics"]) == {*metrics, "nan_one", "when",
                                                                                      "weird", 7}
    hub.seed_repo("someone/odd", files)
    assert sync.pull("someone/odd", target="alice/odd", actor="alice").version.metrics == metrics


def test_a_push_carries_the_training_parameters_and_a_pull_restores_the_valid_ones(
    registry: Registry, sync: HubSync, hub: HubStandIn, tmp_path: Path
) -> None:
    """The card's vera_registry block holds what the version was trained with, and its body a table of them ('|'
    escaped); a pull keeps each parameter the registry takes and leaves out the others, as odd metrics are."""
    params = {"lr": "0.01", "target_modules": "q_proj|v_proj", "epochs": "3"}
    info = registry.publish(make_adapter(tmp_path / "a"), owner="alice", name="trained", base_model="org/tiny-llama",
                            params=params)
    sync.push(info.ref, "alice/trained", actor="alice")
    card = hub.files("alice/trained")["README.md"].decode()
    assert "| target_modules | q_proj\\|v_proj |" in card and "| trained with | value |" in card
    assert sync.pull("alice/trained", target="alice/copy", actor="alice").version.params == params
    # a card another tool edited: a bad key, a number, keys that are no text are left out; the good ones kept
    files = dict(hub.files("alice/trained"))
    odd = "\n    Bad Key: x\n    notes: 3\n    7: x\n    null: y"  # YAML's 7 and null are no text keys (a 500 once)
    files["README.md"] = card.replace("    lr: '0.01'", "    lr: '0.01'" + odd).encode()
    (tmp_path / "edited.md").write_bytes(files["README.md"])
    assert metadata_load(tmp_path / "edited.md")["vera_registry"]["params"]["Bad Key"] == "x"
    hub.seed_repo("someone/edited", files)
    pulled = sync.pull("someone/edited", target="alice/edited", actor="alice").version
    assert pulled.params == params  # (a number is not text, nor 7 or null a key: left out as the bad key is)
    untouched = published(registry, tmp_path, seed=5)  # a version without parameters: its card has no params key
    sync.push(untouched, "alice/plain", actor="alice")
    assert "params" not in hub.files("alice/plain")["README.md"].decode()


@pytest.mark.parametrize("files,match", [
    ({"adapter_config.json": json.dumps({"peft_type": "LORA", "r": 8}).encode(), "adapter_model.safetensors": b""},
     "PEFT LORA adapter, not VeRA"),
    ({"config.json": b"{}", "model.safetensors": b""}, "not a PEFT adapter repo"),
    ({"adapter_config.json": json.dumps({"peft_type": "VERA"}).encode(), "adapter_model.bin": b"\x80\x04"},
     "adapter_model.bin, a pickle, which the registry never loads"),
    ({"adapter_config.json": b"{not json", "adapter_model.safetensors": b""}, "is not JSON"),
], ids=["lora", "not-peft", "pickle-only", "bad-config"])
def test_pull_rejects_what_is_not_a_vera_adapter_and_changes_nothing(
    registry: Registry, sync: HubSync, hub: HubStandIn, files: dict[str, bytes], match: str
) -> None:
    hub.seed_repo("someone/other", files)
    before = snapshot(registry)
    with pytest.raises(InvalidInput, match=match):
        sync.pull("someone/other", target="alice/other", actor="alice", base_model="org/tiny-llama")
    assert snapshot(registry) == before


def test_pull_of_an_adapter_over_the_size_limit_is_refused_before_downloading(
    registry: Registry, hub: HubStandIn, tmp_path: Path
) -> None:
    files, _ = peft_repo_files(tmp_path)
    hub.seed_repo("someone/huge", files)
    small = HubSync(registry, endpoint=hub.url, token=TOKEN, max_bytes=1000)
    before = snapshot(registry)
    with pytest.raises(ContentTooLarge, match="over this registry's limit of 1,000"):
        small.pull("someone/huge", target="alice/huge", actor="alice", base_model="org/tiny-llama")
    assert snapshot(registry) == before
    assert not any("/resolve/" in path for _, path, _ in hub.requests)


@pytest.mark.parametrize("lying", ["adapter_model.safetensors", "README.md", "within the limit"])
def test_a_hub_that_sends_more_than_it_declared_is_cut_off_at_the_limit(
    registry: Registry, hub: HubStandIn, tmp_path: Path, lying: str
) -> None:
    """The size check reads the sizes the Hub declares; a Hub that declares a few bytes and streams more was read to
    the end (30 MB past a 2 MB limit: an outsider's finding, session 39). Each download now counts against the limit
    as it comes and stops past it, saying which file; one that stays within the limit but is not the size declared
    is refused too (huggingface_hub's own check, said in the registry's words); nothing is recorded."""
    files, _ = peft_repo_files(tmp_path)
    files["README.md"] = b"---\nlicense: mit\n---\n" + b"x" * 3_000_000
    hub.seed_repo("someone/liar", files)
    hub.declared.update({"someone/liar/adapter_model.safetensors": 600, "someone/liar/README.md": 100})
    if lying == "README.md":
        del hub.declared["someone/liar/adapter_model.safetensors"]
    limit = len(files["adapter_config.json"]) + 2000
    if lying != "adapter_model.safetensors":
        limit += len(files["adapter_model.safetensors"])
    small = HubSync(registry, endpoint=hub.url, token=TOKEN, max_bytes=limit)
    before = snapshot(registry)
    expected = (rf"pulling someone/liar@main: the Hub's 'adapter_model.safetensors' sent more than it said, past the "
                rf"limit of {limit:,} bytes \(VERA_MAX_UPLOAD_BYTES\) for what is downloaded; nothing was recorded"
                ) if lying != "README.md" else (r"the Hub's 'README.md' sent more than it said, past the limit of "
                                                r"1,048,576 bytes \(a card's\)")
    if lying == "within the limit":
        expected = (r"downloading someone/liar@main: the Hub sent adapter_model.safetensors with another size than it "
                    r"declared \(600 bytes\); nothing was recorded")
    with pytest.raises(ContentTooLarge if lying != "within the limit" else HubError, match=expected) as refused:
        small.pull("someone/liar", target="alice/liar", actor="alice", base_model="org/tiny-llama")
    assert "vera-hub-pull-" not in str(refused.value)
    assert snapshot(registry) == before


def test_a_file_whose_own_size_passes_the_limit_is_refused_before_its_bytes_are_read(
    registry: Registry, hub: HubStandIn, tmp_path: Path
) -> None:
    """Model info lists a small weights file; the file's own metadata (HEAD) says its real size, over the limit:
    refused there, naming the file, before its GET."""
    files, _ = peft_repo_files(tmp_path)
    hub.seed_repo("someone/listed", files)
    hub.listed["someone/listed/adapter_model.safetensors"] = 10
    limit = len(files["adapter_config.json"]) + 100
    small = HubSync(registry, endpoint=hub.url, token=TOKEN, max_bytes=limit)
    with pytest.raises(ContentTooLarge, match=rf"the Hub's 'adapter_model.safetensors' says it is "
                                              rf"{len(files['adapter_model.safetensors']):,} bytes, past the limit of "
                                              rf"{limit:,} bytes"):
        small.pull("someone/listed", target="alice/listed", actor="alice", base_model="org/tiny-llama")
    assert not [p for m, p, _ in hub.requests if m == "GET" and p.endswith("adapter_model.safetensors")]


def test_a_compressed_download_is_refused_since_the_limit_counts_what_is_written(
    registry: Registry, sync: HubSync, hub: HubStandIn, tmp_path: Path
) -> None:
    """The registry asks for bodies as stored; a Hub that gzips one anyway (a small body that inflates past the
    limit: a reviewer's finding, session 39) is refused, nothing recorded."""
    files, _ = peft_repo_files(tmp_path)
    hub.seed_repo("someone/zipped", files)
    hub.gzipped.add("someone/zipped/adapter_model.safetensors")
    before = snapshot(registry)
    with pytest.raises(HubError, match=r"the Hub sent 'adapter_model.safetensors' compressed \(gzip\), which was "
                                       r"not asked for"):
        sync.pull("someone/zipped", target="alice/zipped", actor="alice", base_model="org/tiny-llama")
    assert snapshot(registry) == before
    downloads = [h for h in hub.received_headers if "vera-registry" in h.get("user-agent", "")]
    assert downloads and all(h.get("accept-encoding") == "identity" for h in downloads)


def test_a_body_trickled_within_each_reads_timeout_is_cut_off_after_its_allowance(
    registry: Registry, hub: HubStandIn, tmp_path: Path
) -> None:
    """A Hub that sends a few bytes just inside each read's timeout held a pull for as long as the body was long (an
    outsider's finding, session 39): a body must now come within the Hub timeout plus a second per MiB of it; past
    that it is cut off, saying so, and nothing is recorded."""
    files, _ = peft_repo_files(tmp_path)
    hub.seed_repo("someone/slow", files)
    pieces = -(-len(files["adapter_model.safetensors"]) // 256)
    assert pieces >= 8, pieces  # long enough to outlast the allowance several times over
    hub.trickle["someone/slow/adapter_model.safetensors"] = 0.4  # each piece well within the 5 s read timeout
    patient = HubSync(registry, endpoint=hub.url, token=TOKEN, timeout_s=1.0)
    before = snapshot(registry)
    with pytest.raises(HubError, match=r"pulling someone/slow@main: the Hub sent 'adapter_model.safetensors' too "
                                       r"slowly \(still coming after 1 s: the request's timeout, VERA_HUB_TIMEOUT_S, "
                                       r"and a second for each MiB\); it was cut off and nothing was recorded"):
        patient.pull("someone/slow", target="alice/slow", actor="alice", base_model="org/tiny-llama")
    assert hub.trickled < pieces, (hub.trickled, pieces)
    assert snapshot(registry) == before
    hub.trickle.clear()  # the same pull, the body at once: pulled
    assert patient.pull("someone/slow", target="alice/slow", actor="alice", base_model="org/tiny-llama").changed


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the Hub client's, not the database's
def test_a_file_retried_after_each_stall_is_held_to_one_allowance(registry: Registry, hub: HubStandIn,
                                                                   tmp_path: Path) -> None:
    """huggingface_hub retries a download whose connection timed out, resuming it, as long as each attempt brought
    some bytes: a Hub sending a piece and then stalling past the read timeout, each time, started every attempt with
    an allowance of its own. A file's retries share the first one's: the retry after it is refused."""
    files, _ = peft_repo_files(tmp_path)
    hub.seed_repo("someone/stalls", files)
    hub.stall["someone/stalls/adapter_model.safetensors"] = 2.0
    patient = HubSync(registry, endpoint=hub.url, token=TOKEN, timeout_s=1.0)
    use_timeout(1.0)  # each read: the stall outlasts it
    try:
        with pytest.raises(HubError, match=r"the Hub sent 'adapter_model.safetensors' too slowly"):
            patient.pull("someone/stalls", target="alice/stalls", actor="alice", base_model="org/tiny-llama")
    finally:
        use_timeout(5.0)
    gets = [p for m, p, _ in hub.requests if m == "GET" and p.endswith("/adapter_model.safetensors")]
    assert len(gets) == 2, gets  # the first attempt and the retry refused on arrival, not one a piece


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_file_sent_whole_again_after_a_dropped_connection_counts_once(registry: Registry, hub: HubStandIn,
                                                                        tmp_path: Path) -> None:
    """The connection drops halfway through the weights; the client's retry asks for the rest and the Hub sends the
    whole file again (200), which the client writes over what it had: counted once, so an adapter of exactly the
    limit is still pulled (its first half counted twice refused it: session 39's left-over)."""
    files, _ = peft_repo_files(tmp_path)
    hub.seed_repo("someone/dropped", files)
    hub.cut_once.add("someone/dropped/adapter_model.safetensors")
    exact = HubSync(registry, endpoint=hub.url, token=TOKEN,
                    max_bytes=len(files["adapter_config.json"]) + len(files["adapter_model.safetensors"]))
    result = exact.pull("someone/dropped", target="alice/dropped", actor="alice", base_model="org/tiny-llama")
    assert result.changed and result.version.ref == "alice/dropped:1"
    gets = [p for m, p, _ in hub.requests if m == "GET" and p.endswith("/adapter_model.safetensors")]
    assert len(gets) == 2 and not hub.cut_once  # the dropped attempt and the whole file again


def test_files_stored_in_xet_and_sent_after_a_redirect_are_pulled_over_http_within_an_exact_limit(
    registry: Registry, hub: HubStandIn, tmp_path: Path
) -> None:
    """The Hub names Xet in a file's metadata (whose client downloads outside this registry's HTTP client, and so
    outside its bound) and sends bytes after a redirect: the registry downloads over HTTP, and a redirect's own body
    does not count against the limit (an adapter of exactly the limit is pulled)."""
    files, _ = peft_repo_files(tmp_path)
    hub.seed_repo("someone/xet", files)
    hub.xet, hub.redirect = True, True
    exact = HubSync(registry, endpoint=hub.url, token=TOKEN,
                    max_bytes=len(files["adapter_config.json"]) + len(files["adapter_model.safetensors"]))
    result = exact.pull("someone/xet", target="alice/xet", actor="alice", base_model="org/tiny-llama")
    assert result.changed and result.version.ref == "alice/xet:1"
    assert any(p.startswith("/cdn/someone/xet/") for m, p, _ in hub.requests if m == "GET")


def test_the_hubs_file_list_is_read_within_a_bound_and_its_error_text_is_shown_plainly(
    registry: Registry, sync: HubSync, hub: HubStandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pull reads the Hub's answer listing a repo's files up to MAX_MODEL_INFO_BYTES (400 MB was read whole: an
    outsider's re-check, session 39; lowered here); the text of a Hub's error reaches the API's answer with its
    control characters and bidi overrides escaped."""
    from registry.services import hub as hub_module

    files, _ = peft_repo_files(tmp_path)
    hub.seed_repo("someone/listing", files)
    monkeypatch.setattr(hub_module, "MAX_MODEL_INFO_BYTES", 200)
    with pytest.raises(ContentTooLarge, match=r"the Hub's 'model info' (says it is|sent more).* past the limit of 200 "
                                              r"bytes \(a repo's file list\)"):
        sync.pull("someone/listing", target="alice/listing", actor="alice", base_model="org/tiny-llama")
    monkeypatch.undo()
    hub.error_text = "boom \x1b]0;PWNED\x07 \u202eevil"
    hub.fail("GET", "/api/models/someone/listing", 500)
    with pytest.raises(HubError) as failed:
        sync.pull("someone/listing", target="alice/listing", actor="alice", base_model="org/tiny-llama")
    assert "boom \\x1b]0;PWNED\\x07 \\u202eevil" in str(failed.value), str(failed.value)


def test_a_pulled_card_is_counted_and_one_over_its_bound_is_not_downloaded(
    registry: Registry, sync: HubSync, hub: HubStandIn, tmp_path: Path
) -> None:
    """A repo's README.md was downloaded and parsed whatever its size (30 MB); it is read up to 1 MiB, and a larger
    one is left on the Hub, with a note: the adapter is still pulled."""
    files, _ = peft_repo_files(tmp_path)
    files["README.md"] = b"---\nvera_registry:\n  metrics:\n    accuracy: 0.5\n---\n" + b"x" * (2**20 + 1)
    hub.seed_repo("someone/long-card", files)
    result = sync.pull("someone/long-card", target="alice/long-card", actor="alice", base_model="org/tiny-llama")
    assert result.changed and result.version.metrics == {}
    assert result.notes == [f"someone/long-card@main's README.md ({len(files['README.md']):,} bytes) is over the "
                            "1,048,576 bytes read of a card: it was not downloaded, and metrics it may list were not "
                            "recorded."]
    assert not any(path.endswith("/README.md") for method, path, _ in hub.requests if method == "GET")


@pytest.mark.parametrize("sha", ["f" * 200, "1234567\x1b]0;pwned\x07\x1b[2J" + "0" * 24, "a" * 39 + "\n", "A" * 40])
def test_a_commit_id_the_hub_answers_is_forty_hex_digits_or_nothing_is_recorded(
    registry: Registry, sync: HubSync, hub: HubStandIn, tmp_path: Path, sha: str
) -> None:
    """The Hub's commit id is stored and printed (`vera hub status`, lineage): one of 200 characters was a 500 on
    PostgreSQL, escape sequences reached readers' terminals. Pull and push refuse any other form."""
    files, _ = peft_repo_files(tmp_path)
    hub.seed_repo("someone/odd", files)
    ref = published(registry, tmp_path)
    hub.answered_sha = sha
    before = snapshot(registry)
    for attempt in (lambda: sync.pull("someone/odd", target="alice/odd", actor="alice", base_model="org/tiny-llama"),
                    lambda: sync.push(ref, "alice/odd-push", actor="alice")):
        with pytest.raises(HubError, match=r"the Hub answered commit id '.*'(\.\.\.)?, not one of 40 hexadecimal "
                                           r"digits .*"
                                           r"nothing was recorded") as refused:
            attempt()
        assert "\x1b" not in str(refused.value) and "\n" not in str(refused.value)
    assert snapshot(registry) == before


def test_pull_of_a_corrupt_vera_adapter_is_refused_without_a_partial_version(
    registry: Registry, sync: HubSync, hub: HubStandIn, tmp_path: Path
) -> None:
    files, _ = peft_repo_files(tmp_path)
    hub.seed_repo("someone/broken", {**files, "adapter_model.safetensors": files["adapter_model.safetensors"][:-40]})
    before = snapshot(registry)
    with pytest.raises(InvalidInput) as refused:
        sync.pull("someone/broken", target="alice/broken", actor="alice", base_model="org/tiny-llama")
    assert snapshot(registry) == before
    # named as the repo's file, never by the server's scratch folder (an outsider's finding, session 39)
    assert "someone/broken@main's adapter_model.safetensors" in str(refused.value)
    assert "vera-hub-pull-" not in str(refused.value)


@pytest.mark.parametrize("fault,match", [
    (("POST", "/api/repos/create", 401, {}), "refused the token \\(401"),
    (("POST", "/commit/", 409, {}), "conflict \\(409\\)"),
    (("POST", "/api/repos/create", 429, {"Retry-After": "30"}), "rate-limiting .* retry after 30 s"),
    (("POST", "/commit/", 500, {}), "answered 500"),
], ids=["401", "409", "429", "500"])
def test_push_failures_say_what_happened_and_record_nothing(
    registry: Registry, sync: HubSync, hub: HubStandIn, tmp_path: Path,
    fault: tuple[str, str, int, dict[str, str]], match: str
) -> None:
    ref = published(registry, tmp_path)
    method, path, status, headers = fault
    hub.fail(method, path, status, **headers)
    before = snapshot(registry)
    with pytest.raises(HubError, match=match):
        sync.push(ref, "alice/fails", actor="alice")
    assert snapshot(registry) == before
    assert sync.status(ref) == []


def test_push_with_a_token_the_hub_does_not_know_or_for_another_namespace_is_refused(
    registry: Registry, sync: HubSync, hub: HubStandIn, tmp_path: Path
) -> None:
    ref = published(registry, tmp_path)
    with pytest.raises(HubError, match="401"):
        sync.push(ref, "alice/x", actor="alice", token="hf_wrong")
    with pytest.raises(HubError, match="403"):
        sync.push(ref, "alice/x", actor="alice", token="hf_bob")
    assert "alice/x" not in hub.repos and sync.status(ref) == []
    sync.push(ref, "alice/x", actor="alice")  # exists now: refusals on an existing repo are as clear
    for token, status in (("hf_bob", "403"), ("hf_wrong", "401")):
        with pytest.raises(HubError, match=status):
            sync.push(ref, "alice/x", actor="alice", token=token, with_projection=False)
    assert len(sync.status(ref)) == 1


def test_pull_of_a_missing_repo_or_revision_and_an_unreachable_hub(
    registry: Registry, sync: HubSync, hub: HubStandIn, tmp_path: Path
) -> None:
    before = snapshot(registry)
    with pytest.raises(HubError, match="has no repo someone/missing"):
        sync.pull("someone/missing", target="alice/x", actor="alice")
    files, _ = peft_repo_files(tmp_path)
    hub.seed_repo("someone/there", files)
    with pytest.raises(HubError, match="no such revision"):
        sync.pull("someone/there", target="alice/x", actor="alice", revision="v9")
    offline = HubSync(registry, endpoint=f"http://127.0.0.1:{free_port()}", token=TOKEN)
    with pytest.raises(HubError, match=r"cannot reach the Hub .* The registry's operator checks the network and its "
                                        r"VERA_HUB_ENDPOINT\.$"):  # (not the caller: the setting is the server's)
        offline.pull("someone/there", target="alice/x", actor="alice")
    assert snapshot(registry) == before


def test_a_hub_that_stops_answering_half_way_times_out_and_records_nothing(
    registry: Registry, sync: HubSync, hub: HubStandIn, tmp_path: Path
) -> None:
    ref = published(registry, tmp_path)
    hub.hang("POST", "/commit/", seconds=6.0)  # past the 5 s timeout, after the repo exists and preupload ran
    before = snapshot(registry)
    with pytest.raises(HubError, match="did not answer within 5 s.*push again"):
        sync.push(ref, "alice/slow", actor="alice")
    assert snapshot(registry) == before
    # once the Hub answers again, the push goes through
    assert sync.push(ref, "alice/slow", actor="alice").sync.commit_sha == hub.head("alice/slow")


def test_bad_repo_ids_are_refused_before_any_request(registry: Registry, sync: HubSync, hub: HubStandIn,
                                                    tmp_path: Path) -> None:
    ref = published(registry, tmp_path)
    for bad in ("no-namespace", "a/b/c", "bad name/x", "x/" + "y" * 200):
        with pytest.raises(InvalidInput, match="not a Hub repo id"):
            sync.push(ref, bad, actor="alice")
    assert hub.requests == []


def test_the_hub_token_is_sent_to_the_hub_and_stored_nowhere(
    registry: Registry, sync: HubSync, hub: HubStandIn, tmp_path: Path
) -> None:
    ref = published(registry, tmp_path)
    sync.push(ref, "alice/secret", actor="alice")
    assert all(auth == f"Bearer {TOKEN}" for _, path, auth in hub.requests if "/api/" in path)
    assert_not_stored(registry.db, TOKEN)


def assert_not_stored(db: Database, secret: str) -> None:
    with db.session() as s:
        for table in m.Base.metadata.sorted_tables:
            for row in s.execute(select(table)):
                assert secret not in repr(tuple(row)), table.name


def test_hub_push_pull_and_status_through_the_api_and_the_cli(hub: HubStandIn, tmp_path: Path) -> None:
    """`vera hub ...` -> real registry server (tokens required) -> huggingface_hub -> the stand-in."""
    url = f"sqlite:///{tmp_path / 'r.db'}"
    with registry_in_thread(url, tmp_path / "blobs", VERA_REQUIRE_TOKENS="true", VERA_HUB_ENDPOINT=hub.url) as base:
        db = Database(url)
        token = create_token(db, owner="alice", scopes=["read", "publish"])[1]
        reader = create_token(db, owner="bob", scopes=["read"])[1]
        db.engine.dispose()
        with RegistryClient(base, token) as client:
            client.publish(make_adapter(tmp_path / "a", seed=2), "alice/demo", base_model="org/tiny-llama")
        common = ("--registry", base, "--token", token)
        pushed = vera("hub", "push", "alice/demo@latest", "alice/demo-vera", "--hub-token", TOKEN, *common)
        assert pushed.returncode == 0, pushed.stderr
        assert f"pushed alice/demo:1 -> alice/demo-vera@{hub.head('alice/demo-vera')[:12]}" in pushed.stdout
        again = vera("hub", "push", "alice/demo:1", "alice/demo-vera", "--hub-token", TOKEN, *common)
        assert "unchanged, no new commit" in again.stdout
        status = vera("hub", "status", "alice/demo:1", *common)
        assert "push" in status.stdout and "alice/demo-vera" in status.stdout
        assert hub.head("alice/demo-vera")[:12] in status.stdout
        # the Hub token went to the Hub on every call, and nowhere else
        assert {auth for _, path, auth in hub.requests if path.startswith("/api/")} == {f"Bearer {TOKEN}"}
        refused = vera("hub", "push", "alice/demo:1", "alice/other", "--hub-token", "hf_wrong", *common)
        assert refused.returncode == 1 and "refused the token (401" in refused.stderr
        assert "hf_wrong" not in refused.stderr + refused.stdout
        assert "may or may not have applied" not in refused.stderr  # a refusal applied nothing (a docs audit)
        pulled = vera("hub", "pull", "alice/demo-vera", "--as", "alice/copy", "--hub-token", TOKEN, *common)
        assert pulled.returncode == 0, pulled.stderr
        assert "pulled as alice/copy:1" in pulled.stdout
        repeat = vera("hub", "pull", "alice/demo-vera", "--as", "alice/copy", "--hub-token", TOKEN, *common)
        assert "unchanged, already alice/copy:1" in repeat.stdout
        not_vera = vera("hub", "pull", "alice/nothing", "--as", "alice/x", "--hub-token", TOKEN, *common)
        assert not_vera.returncode == 1 and "has no repo alice/nothing" in not_vera.stderr
        with RegistryClient(base, token) as client:
            syncs = client.hub_status("alice/copy:1")
            assert syncs[0].direction == "pull" and syncs[0].repo_id == "alice/demo-vera"
            assert client.get("alice/copy:1").lineage["hub_repo"] == "alice/demo-vera"
        with RegistryClient(base, reader) as client, pytest.raises(Forbidden, match="'publish' is needed"):
            client.hub_push("alice/demo:1", "alice/demo-vera", hub_token=TOKEN)
    assert_not_stored(db, TOKEN)
    db.engine.dispose()


# ---- base model shapes read from the Hub (seed-only adapters PEFT wrote) -------------------------------------------

def peft_seed_only(tmp_path: Path, seed: int) -> tuple[Path, torch.Tensor]:
    """A seed-only adapter PEFT wrote (no projections, no projection shape), and the outputs it gives."""
    theirs = peft_model(LLAMA, seed=seed, save_projection=False)
    train_a_little(theirs, LLAMA)
    theirs.save_pretrained(tmp_path / f"peft-{seed}")
    return tmp_path / f"peft-{seed}", output_of(theirs, LLAMA.inputs())


def base_config_json() -> bytes:
    return LLAMA.make().config.to_json_string().encode()


def config_requests(hub: HubStandIn) -> list[tuple[str, str, str]]:
    return [r for r in hub.requests if r[1].endswith("/config.json")]


def test_seed_only_peft_adapters_publish_with_the_base_config_read_once_from_the_hub(
    database_url: str, hub: HubStandIn, tmp_path: Path
) -> None:
    db = Database(database_url)
    db.upgrade()
    registry = Registry(db, FsspecBlobStore(str(tmp_path / "blobs")),
                        base_configs=HubBaseConfigs(hub.url, timeout_s=5.0))
    hub.seed_repo("org/tiny-llama", {"config.json": base_config_json(), "README.md": b"# base"})
    source, want = peft_seed_only(tmp_path, seed=11)
    info = registry.publish(source, owner="eve", name="seed-only", base_model="org/tiny-llama",
                            published_by="eve")
    assert info.seed_reproducible and info.generator == PEFT_GENERATOR
    assert registry.verify(info.ref).status == "passed"
    registry.fetch(info.ref, tmp_path / "fetched")
    torch.testing.assert_close(output_of(load_adapter(LLAMA.make(), tmp_path / "fetched"), LLAMA.inputs()), want,
                               rtol=1e-5, atol=1e-5)
    # only config.json was asked for, anonymously (the server's Hub token never reads a publisher's base)
    assert config_requests(hub) and all(auth == "" for _, _, auth in config_requests(hub))
    assert {path for _, path, _ in hub.requests} == {"/org/tiny-llama/resolve/main/config.json"}
    [base] = [b for b in registry.list_base_models() if b.name == "org/tiny-llama"]
    assert base.shapes_source == "declared" and base.layers == 14
    [event] = [e for e in registry.audit() if e.action == "base-register"]
    assert event.actor == "eve" and event.detail["source"] == f"{hub.url}/org/tiny-llama"
    # declared from then on: the next seed-only adapter of that base does not ask the Hub again
    asked = len(config_requests(hub))
    second, _ = peft_seed_only(tmp_path, seed=12)
    registry.publish(second, owner="eve", name="seed-only", base_model="org/tiny-llama")
    assert len(config_requests(hub)) == asked
    db.engine.dispose()


def test_a_seed_only_peft_adapter_of_the_demo_base_publishes_with_its_bundled_config(registry: Registry,
                                                                                     tmp_path: Path) -> None:
    """`minilm` is a name only vera resolves: the registry asked the Hub for its config.json and refused the guide's
    seed-only PEFT adapter (a newcomer's walk, session 38). Its package's config.json, on this machine, declares it;
    this registry reads no Hub (no base_configs)."""
    from peft import VeraConfig as PeftVeraConfig
    from peft import get_peft_model
    from transformers import AutoModelForSequenceClassification

    from registry.services.base_configs import BUNDLED_SOURCE
    from vera_core.recipes import resolve_base

    base = AutoModelForSequenceClassification.from_pretrained(resolve_base("minilm"), num_labels=2)
    get_peft_model(base, PeftVeraConfig(r=8, target_modules=["query", "value"], save_projection=False)
                   ).save_pretrained(tmp_path / "peft")
    info = registry.publish(tmp_path / "peft", owner="eve", name="demo-peft", base_model="minilm", published_by="eve")
    assert info.seed_reproducible and registry.verify(info.ref).status == "passed"
    [event] = [e for e in registry.audit() if e.action == "base-register"]
    assert event.detail["source"] == BUNDLED_SOURCE
    [declared] = [b for b in registry.list_base_models() if b.name == "minilm"]
    assert declared.shapes_source == "declared"


@pytest.mark.parametrize(("base", "seeded", "reason"), [
    ("org/missing", None, "no public Hub repo org/missing"),
    ("org/private-base", "private", "no public Hub repo org/private-base"),
    ("org/no-config", {"README.md": b"# no config"}, "org/no-config@main has no config.json"),
    ("org/not-json", {"config.json": b"{not json"}, "org/not-json@main's config.json is not JSON"),
    # json's RecursionError passed the ValueError this caught: a 500 for a publish naming a hostile Hub repo
    ("org/nested", {"config.json": b"[" * 5000 + b"]" * 5000}, "org/nested@main's config.json nests too deeply"),
    ("org/odd", {"config.json": b'{"model_type": "no-such-architecture"}'}, "Not a transformers config"),
    ("not a repo", None, "'not a repo' is not a Hub repo id"),  # (a path, ../../etc/passwd, is refused before)
    # a Hub that declares a small config.json and streams 3 MB: cut off at the bound (session 39)
    ("org/liar", {"config.json": b'{"a": "' + b"x" * 3_000_000 + b'"}'},
     "org/liar@main's config.json is larger than 1048576 bytes"),
    ("org/zipped", {"config.json": base_config_json()}, "org/zipped@main's config.json came compressed, and was not "
                                                        "read"),
])
def test_a_base_config_the_hub_cannot_give_keeps_the_refusal_and_says_why(
    registry: Registry, hub: HubStandIn, tmp_path: Path, base: str, seeded: object, reason: str
) -> None:
    if seeded == "private":
        hub.seed_repo(base, {"config.json": base_config_json()}, private=True)
    elif isinstance(seeded, dict):
        hub.seed_repo(base, seeded)
    if base == "org/liar":
        hub.declared["org/liar/config.json"] = 100
    hub.gzipped.add("org/zipped/config.json")
    publisher = Registry(registry.db, registry.blobs, base_configs=HubBaseConfigs(hub.url, timeout_s=60.0))
    source, _ = peft_seed_only(tmp_path, seed=3)
    before = snapshot(registry)
    with pytest.raises(InvalidInput) as refused:
        publisher.publish(source, owner="eve", name="p", base_model=base)
    message = str(refused.value)
    assert "stores neither its projections nor their shape" in message and "vera base register" in message
    assert f"looked for the config.json of base model {base!r} on {hub.url}: " in message and reason in message
    assert snapshot(registry) == before


def test_an_unreachable_hub_is_a_refusal_within_the_timeout_and_is_remembered(registry: Registry,
                                                                              tmp_path: Path) -> None:
    configs = HubBaseConfigs(f"http://127.0.0.1:{free_port()}", timeout_s=2.0)
    publisher = Registry(registry.db, registry.blobs, base_configs=configs)
    source, _ = peft_seed_only(tmp_path, seed=4)
    for attempt in range(2):
        with pytest.raises(InvalidInput, match="the Hub did not answer") as refused:
            publisher.publish(source, owner="eve", name="p", base_model="org/tiny-llama")
        assert ("remembered from a lookup" in str(refused.value)) == (attempt == 1)


def test_a_slow_hub_is_a_refusal_within_the_timeout(registry: Registry, hub: HubStandIn, tmp_path: Path) -> None:
    """Within the base-config reader's timeout, also where another part of the process (a Hub sync in the same
    process: `vera up`, a test's server) gave the Hub's client a longer one (it had been ignored then)."""
    from registry.services.hub_http import use_timeout

    hub.seed_repo("org/slow-base", {"config.json": base_config_json()})
    hub.hang("HEAD", "config.json", 30)
    use_timeout(60.0)
    publisher = Registry(registry.db, registry.blobs, base_configs=HubBaseConfigs(hub.url, timeout_s=1.0))
    source, _ = peft_seed_only(tmp_path, seed=8)
    before = snapshot(registry)
    started = time.monotonic()
    with pytest.raises(InvalidInput, match="the Hub did not answer"):
        publisher.publish(source, owner="eve", name="p", base_model="org/slow-base")
    assert time.monotonic() - started < 15  # the 1 s timeout, not the 30 s the Hub would take
    assert snapshot(registry) == before
    # each piece of the body within the timeout, the whole past its allowance (1 s and a second per MiB): cut off
    config = base_config_json()
    assert len(config) > 2 * 256, len(config)
    hub.seed_repo("org/trickling-base", {"config.json": config})
    hub.trickle["org/trickling-base/config.json"] = 0.8
    with pytest.raises(InvalidInput, match="org/trickling-base@main's config.json came too slowly, and was not read"):
        publisher.publish(source, owner="eve", name="p", base_model="org/trickling-base")
    assert hub.trickled < -(-len(config) // 256)
    assert snapshot(registry) == before


def test_the_hub_lookup_is_a_setting_and_hub_pull_uses_it(hub: HubStandIn, tmp_path: Path) -> None:
    """`vera hub pull` of a seed-only repo PEFT wrote, through a real server: with the lookup on (the default) the
    base's config comes from the same Hub; with VERA_HUB_BASE_CONFIGS=false the refusal stays, naming the fix."""
    source, want = peft_seed_only(tmp_path, seed=6)
    hub.seed_repo("someone/seed-only", {p.name: p.read_bytes() for p in source.iterdir() if p.is_file()})
    hub.seed_repo("org/tiny-llama", {"config.json": base_config_json()})
    for enabled in ("false", "true"):
        url = f"sqlite:///{tmp_path / enabled / 'r.db'}"
        with registry_in_thread(url, tmp_path / enabled / "blobs", VERA_HUB_ENDPOINT=hub.url,
                                VERA_HUB_BASE_CONFIGS=enabled) as base:
            pulled = vera("hub", "pull", "someone/seed-only", "--as", "alice/pulled", "--base-model",
                          "org/tiny-llama", "--registry", base)
            fetched = vera("fetch", "alice/pulled:1", "--out", str(tmp_path / enabled / "out"), "--registry", base)
        if enabled == "false":
            assert pulled.returncode == 1 and "vera base register NAME --config config.json" in pulled.stderr
            assert "looked for" not in pulled.stderr
            continue
        assert pulled.returncode == 0 and "pulled as alice/pulled:1" in pulled.stdout, pulled.stderr
        assert fetched.returncode == 0, fetched.stderr
        ours = load_adapter(LLAMA.make(), tmp_path / enabled / "out")
        torch.testing.assert_close(output_of(ours, LLAMA.inputs()), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("repo_id", "revision", "match"), [
    ("../../etc/passwd", "main", r"^'\.\./\.\./etc/passwd' is not a Hub repo id \(Repo id must be in the form "
                                 r"'repo_name' or 'namespace/repo_name': '\.\./\.\./etc/passwd'\.\); expected "
                                 r"namespace/name, e\.g\. my-org/my-adapter\.$"),
    ("someone/other", "main\n", r"^revision contains the control character '\\n'; remove it\.$"),
], ids=["repo-id", "revision"])
def test_pull_and_push_refuse_what_is_no_repo_or_revision_in_the_apis_words(
    registry: Registry, sync: HubSync, hub: HubStandIn, repo_id: str, revision: str, match: str
) -> None:
    """An outsider's findings (session 33): a revision with a newline was taken (and echoed back in the Hub's
    error); a bad repo id's message told an API caller to use huggingface_hub's `repo_type` argument."""
    before = snapshot(registry)
    with pytest.raises(InvalidInput, match=match):
        sync.pull(repo_id, target="alice/other", actor="alice", revision=revision, base_model="org/tiny-llama")
    with pytest.raises(InvalidInput, match=match):
        sync.push("alice/anything:1", repo_id, actor="alice", revision=revision)
    assert snapshot(registry) == before and hub.requests == []


@pytest.mark.parametrize(("base", "base_revision", "match"), [
    ("org/tiny\nllama", None, r"^base_model contains the control character '\\n'; remove it\.$"),
    ("org/tiny-llama", "v1\r", r"^base_revision contains the control character '\\r'; remove it\.$"),
])
def test_pull_refuses_a_bad_base_before_asking_the_hub(
    registry: Registry, sync: HubSync, hub: HubStandIn, base: str, base_revision: str | None, match: str
) -> None:
    """Refused only after downloading the adapter (a re-check's finding, session 33): now before any Hub request."""
    before = snapshot(registry)
    with pytest.raises(InvalidInput, match=match):
        sync.pull("someone/other", target="alice/other", actor="alice", base_model=base, base_revision=base_revision)
    assert snapshot(registry) == before and hub.requests == []

"""Copying a version into another adapter (MLflow's copy_model_version): through the services on SQLite and
PostgreSQL (what the copy has, what it shares, what it refuses and leaves unchanged), and through a real server, the
client and `vera cp` (who may copy what, the answers a caller gets)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from sqlalchemy import func, select

from registry.client import RegistryClient
from registry.domain.errors import Conflict, InvalidInput, NotFound, QuotaExceeded
from registry.domain.schemas import AdapterUpdate, EvaluationRecord, VersionInfo
from registry.services.events import Events
from registry.services.quotas import Quotas
from registry.services.registry import Registry
from registry.services.tokens import LOCAL_USER, Principal, create_token
from registry.store import models as m
from registry.store.blobs import FsspecBlobStore
from registry.store.database import Database
from tests.commands import vera as run_vera
from tests.registry.adapters import make_adapter
from tests.registry.servers import registry_in_thread
from tests.registry.test_webhooks import make_tokens

#: what a copy keeps of the version it copies, field by field (VersionInfo)
SAME = ("base_model", "base_revision", "r", "seed", "generator", "projection_fingerprint", "seed_reproducible",
        "target_modules", "trainable_parameters", "adapter_parameters", "stored_bytes", "vectors_sha256", "metrics",
        "tags", "description", "verification_status", "verified_at", "properties", "params")


def _counts(registry: Registry) -> dict[str, int]:
    with registry.db.session() as s:
        return {table.name: s.scalar(select(func.count()).select_from(table)) or 0
                for table in m.Base.metadata.sorted_tables}


@pytest.fixture
def staged(registry: Registry, tmp_path: Path) -> Registry:
    """ann/base:1 (public), ann/staging:1 fine-tuned from it with every kind of metadata, verified and evaluated."""
    registry.publish(make_adapter(tmp_path / "base", seed=1), owner="ann", name="base", base_model="tiny-llama")
    registry.publish(make_adapter(tmp_path / "a"), owner="ann", name="staging", base_model="tiny-llama",
                     metrics={"eval_loss": 0.25}, tags=["nightly"], description="candidate",
                     properties={"ticket": "ML-42"}, params={"lr": "0.01"},
                     lineage={"parent": "ann/base:1", "code_revision": "abc123", "dataset_sha256": "d" * 64,
                              "dataset_bytes": 10})
    registry.verify("ann/staging:1")
    registry.evaluations.record("ann/staging:1", EvaluationRecord(name="hellaswag", metrics={"acc": 0.41},
                                                                  details={"harness": "0.4"}), actor="ann")
    return registry


def test_a_copy_is_the_next_version_there_with_everything_the_source_has(staged: Registry, tmp_path: Path) -> None:
    source = staged.get("ann/staging:1")
    blobs = len(list((tmp_path / "blobs").rglob("*")))
    copy = staged.copy_version(source.pinned, owner="acme", name="prod", actor="bob")
    assert (copy.ref, copy.published_by, copy.aliases) == ("acme/prod:1", "bob", ["latest"])
    assert {k: getattr(copy, k) for k in SAME} == {k: getattr(source, k) for k in SAME}
    assert copy.metrics == {"eval_loss": 0.25, "hellaswag": {"acc": 0.41}} and copy.verification_status == "passed"
    assert copy.lineage == {**source.lineage, "copied_from": "ann/staging:1"}
    assert copy.lineage["parent"] == "ann/base:1" and copy.lineage["code_revision"] == "abc123"
    assert [e.name for e in staged.evaluations.evaluations("acme/prod:1")] == ["hellaswag"]
    assert len(list((tmp_path / "blobs").rglob("*"))) == blobs  # the same bytes: nothing stored again
    assert staged.files("acme/prod:1")[1] == staged.files("ann/staging:1")[1]
    # searchable like its source
    assert staged.list_versions(filter_text="metrics.hellaswag.acc > 0.4", with_total=True).total == 2
    event = staged.audit("acme/prod")[0]
    assert (event.action, event.actor, event.detail["copied_from"]) == ("publish", "bob", "ann/staging:1")
    again = staged.copy_version(source.pinned, owner="acme", name="prod", actor="bob", description="promoted")
    assert (again.version, again.description, staged.get("acme/prod").version) == (2, "promoted", 2)
    home = staged.copy_version("ann/staging:1", owner="ann", name="staging", actor="ann")  # into its own adapter
    assert home.ref == "ann/staging:2" and home.lineage["copied_from"] == "ann/staging:1"


def test_copies_say_what_became_of_their_source(staged: Registry) -> None:
    staged.copy_version("ann/staging:1", owner="acme", name="prod", actor="ann")
    staged.update_adapter("ann/staging", AdapterUpdate(visibility="private"), actor="ann")
    assert staged.get("acme/prod:1").lineage["copied_from_private"] is True  # a public copy of a private source
    assert "copied_from" not in staged.get("acme/prod:1").lineage
    # and the audit log, where the copy's publish event named its source when it was public: told to whoever may
    # read that source now, null to the others (it stayed in every reader's log: an outsider's finding, session 51)
    events = Events(staged.db)
    told = {who: [e.detail["copied_from"] for e in events.page(viewer, adapter="acme/prod").events]
            for who, viewer in (("dan", Principal(owner="dan", scopes=frozenset({"read"}))),
                                ("ann", Principal(owner="ann", scopes=frozenset({"read"}))), ("admin", LOCAL_USER))}
    assert told == {"dan": [None], "ann": ["ann/staging:1"], "admin": ["ann/staging:1"]}
    staged.copy_version("ann/staging:1", owner="acme", name="prod", actor="ann")  # its event names no private source
    assert staged.audit("acme/prod")[0].detail["copied_from"] is None
    staged.delete("ann/staging:1", actor="ann")
    lineage = staged.get("acme/prod:1").lineage
    assert "copied_from" not in lineage and "copied_from_deleted" not in lineage  # its name stays untold
    assert staged.files("acme/prod:1")[1]  # the bytes stay: the copy holds them
    staged.copy_version("acme/prod:1", owner="acme", name="prod", actor="ann")
    staged.delete("acme/prod:1", actor="ann")
    assert staged.get("acme/prod:3").lineage["copied_from_deleted"] == "acme/prod:1"  # its own adapter's: told


def test_what_a_copy_refuses_changes_nothing(staged: Registry, tmp_path: Path) -> None:
    staged.yank("ann/staging:1", actor="ann")
    before = _counts(staged)
    with pytest.raises(Conflict, match=r"ann/staging:1 is yanked: .* \(`vera yank ann/staging:1 --undo`\)"):
        staged.copy_version("ann/staging:1", owner="acme", name="prod", actor="ann")
    assert _counts(staged) == before
    staged.yank("ann/staging:1", actor="ann", yanked=False)
    before = _counts(staged)
    for source, owner, name, error, message in [
        ("ann/staging:9", "acme", "prod", NotFound, "ann/staging"),
        ("ann/staging@nope", "acme", "prod", NotFound, "nope"),
        ("ann/staging:1", "Acme", "prod", InvalidInput, "Owner 'Acme' is not a valid name"),
        ("ann/staging:1", "acme", "a/b", InvalidInput, "Adapter name"),
        ("ann/staging:1", "ann", "base", Conflict, None),  # visibility asked otherwise than the adapter's
    ]:
        with pytest.raises(error, match=message):
            staged.copy_version(source, owner=owner, name=name, actor="ann",
                                visibility="private" if error is Conflict else None)
    with pytest.raises(InvalidInput, match="visibility"):
        staged.copy_version("ann/staging:1", owner="acme", name="prod", actor="ann", visibility="secret")
    assert _counts(staged) == before


def test_a_copy_counts_against_its_owners_quota(database_url: str, tmp_path: Path) -> None:
    db = Database(database_url)
    db.upgrade()
    source = make_adapter(tmp_path / "a")
    registry = Registry(db, FsspecBlobStore(str(tmp_path / "blobs")), quotas=Quotas(per_owner={"small": 100}))
    try:
        registry.publish(source, owner="ann", name="x", base_model="tiny-llama")
        before = _counts(registry)
        with pytest.raises(QuotaExceeded, match=r"small stores 0 B of its 100 B quota; copying ann/x:1 to small/y"):
            registry.copy_version("ann/x:1", owner="small", name="y", actor="small")
        assert _counts(registry) == before
    finally:
        db.engine.dispose()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """alice publishes alice/pub (public) and alice/priv (private); mallory publishes mallory/x."""
    root = tmp_path_factory.mktemp("copies")
    url = f"sqlite:///{root / 'r.db'}"
    with registry_in_thread(url, root / "blobs", VERA_REQUIRE_TOKENS="true", VERA_ANONYMOUS_READ="true") as base:
        tokens = make_tokens(url)
        source = make_adapter(root / "adapter")
        with RegistryClient(base, tokens["alice"], cache=False) as alice, \
                RegistryClient(base, tokens["mallory"], cache=False) as mallory:
            alice.publish(source, "alice/pub", base_model="tiny-llama", metrics={"acc": 0.9})
            alice.publish(source, "alice/priv", base_model="tiny-llama", visibility="private")
            mallory.publish(source, "mallory/x", base_model="tiny-llama")
        yield {"url": base, "tokens": tokens}


def _post(server: dict[str, Any], who: str | None, path: str, body: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {server['tokens'][who]}"} if who else {}
    return httpx.post(f"{server['url']}/api/v1/adapters/{path}/copy", json=body, headers=headers, timeout=60)


def test_a_copy_through_the_api_needs_read_on_the_source_and_publish_on_the_destination(
        server: dict[str, Any]) -> None:
    with RegistryClient(server["url"], server["tokens"]["mallory"], cache=False) as mallory:
        copy = mallory.copy_version("alice/pub@latest", "mallory/promoted", visibility="private")
        assert (copy.ref, copy.metrics, copy.visibility, copy.lineage["copied_from"]) == (
            "mallory/promoted:1", {"acc": 0.9}, "private", "alice/pub:1")
        with pytest.raises(NotFound):  # a private adapter mallory may not read: as if missing
            mallory.copy_version("alice/priv:1", "mallory/stolen")
        assert mallory.lineage("mallory/promoted:1").copied_from == "alice/pub:1"
        assert mallory.lineage("alice/pub:1").copies == ["mallory/promoted:1"]
    with RegistryClient(server["url"], server["tokens"]["alice"], cache=False) as alice, \
            RegistryClient(server["url"], "", cache=False) as anonymous:
        assert alice.lineage("alice/pub:1").copies == []  # mallory's copy is private to mallory
        shared = alice.copy_version("alice/priv:1", "alice/shared", visibility="public")
        assert shared.lineage["copied_from_private"] is True  # every reader of the copy reads this block
        assert alice.lineage(shared.ref).copied_from == "alice/priv:1"  # the graph names it to whoever may read it
        assert anonymous.lineage(shared.ref).copied_from is None
        assert anonymous.get(shared.ref).lineage == {"copied_from_private": True}
    for who, path, body, status, said in [
        ("mallory", "alice/pub/versions/1", {"to": "alice/mine"}, 403, "cannot write under alice/"),
        ("reader", "alice/pub/versions/1", {"to": "alice/read"}, 403, "publish"),  # a read-only token
        (None, "alice/pub/versions/1", {"to": "alice/anon"}, 401, "token"),
        ("alice", "alice/pub/versions/1", {"to": "not a ref"}, 422, "owner/name"),
        ("alice", "alice/pub/versions/1", {"to": "alice/x", "tags": ["a"]}, 422, "tags"),  # an unknown field
        ("alice", "alice/pub/versions/1", {"to": "alice/x", "visibility": "secret"}, 422, "visibility"),
        ("alice", "alice/pub/versions/7", {"to": "alice/x"}, 404, "alice/pub"),
    ]:
        answer = _post(server, who, path, body)
        assert answer.status_code == status and said in answer.text, (who, body, answer.text)
    with RegistryClient(server["url"], server["tokens"]["alice"], cache=False) as alice:
        made = {"pub", "priv", "shared"}
        assert [v.ref for v in alice.list_versions(owner="alice").items if v.name not in made] == []


def test_vera_cp_copies_and_points_an_alias(server: dict[str, Any]) -> None:
    env = {**os.environ, "COLUMNS": "200", "VERA_REGISTRY_URL": server["url"], "VERA_TOKEN": server["tokens"]["alice"]}

    def vera(*args: str) -> subprocess.CompletedProcess[str]:
        return run_vera(args, env=env)

    done = vera("cp", "alice/pub", "alice/prod", "--alias", "live", "--description", "promoted")
    assert done.returncode == 0, done.stderr
    assert "copied alice/pub:1 to alice/prod:1 (alice/prod@live -> 1)" in done.stdout
    shown = json.loads(vera("show", "alice/prod@live", "--json").stdout)
    assert (shown["description"], shown["lineage"]["copied_from"]) == ("promoted", "alice/pub:1")
    assert "copied from alice/pub:1" in vera("show", "alice/prod:1").stdout
    as_json = json.loads(vera("cp", "alice/prod@live", "alice/prod", "--json").stdout)
    assert as_json["ref"] == "alice/prod:2" and as_json["lineage"]["copied_from"] == "alice/prod:1"
    refused = vera("cp", "alice/pub:1", "alice/other", "--alias", "Not An Alias")
    assert refused.returncode == 1 and "alias 'Not An Alias' is not a valid name" in refused.stderr
    for alias, said in (("latest", "'latest' always points"), ("v2", "reads as version 2")):  # asked first
        refused = vera("cp", "alice/pub:1", "alice/other", "--alias", alias)
        assert refused.returncode == 1 and said in refused.stderr and "Nothing was copied." in refused.stderr
    assert json.loads(vera("ls", "alice/other", "--json").stdout)["items"] == []  # nothing was copied


def test_vera_cp_to_an_alias_an_organisation_protects_copies_nothing_for_a_member_who_may_not_move_it(
        server: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    """An operator's walk (session 48): a writer of an organisation copied with --alias prod, protected there; the
    copy was made, then its alias refused, and only the refusal was said (exit 1: a script read "nothing happened").
    It is asked before the copy now; a refusal after it (a role changed meanwhile) says the copy is there."""
    with RegistryClient(server["url"], server["tokens"]["alice"], cache=False) as alice:
        alice.create_organization("copiers")
        alice.set_member("copiers", "mallory", "write")
        alice.protect_alias("copiers", "prod")
        env = {**os.environ, "COLUMNS": "200", "VERA_REGISTRY_URL": server["url"]}
        as_mallory = {**env, "VERA_TOKEN": server["tokens"]["mallory"]}
        refused = run_vera(["cp", "alice/pub:1", "copiers/pub", "--alias", "prod"], env=as_mallory)
        flat = " ".join(refused.stderr.split())
        assert refused.returncode == 1 and "The alias 'prod' is protected in copiers: only its admins point it at " \
            "a version. Copy without --alias and ask one of them to move it (`vera org show copiers` lists them). " \
            "Nothing was copied." in flat, refused.stderr
        with pytest.raises(NotFound):
            alice.adapter("copiers/pub")  # nothing copied
        done = run_vera(["cp", "alice/pub:1", "copiers/pub", "--alias", "prod"],
                        env={**env, "VERA_TOKEN": server["tokens"]["alice"]})  # its admin
        assert done.returncode == 0 and "(copiers/pub@prod -> 1)" in done.stdout, done.stderr
        copy = alice.get("copiers/pub:1")
        # a delete its protected alias refuses is refused before its question (it was asked, confirmed, then
        # refused: an operator's walk, session 48), in the registry's words
        for asked, doing in ((["copiers/pub:1"], "delete the version it names (copiers/pub:1)"),
                             (["copiers/pub", "--all"], "delete the adapter, and with it the version it names")):
            kept = run_vera(["delete", *asked], env=as_mallory)
            flat = " ".join(kept.stderr.split())
            assert kept.returncode == 1 and f"The alias 'prod' is protected in copiers: only its admins {doing}. " \
                "Ask one of them (`vera org show copiers` lists them)" in flat and "[y/N]" not in kept.stdout, flat
        assert "prod" in alice.get("copiers/pub:1").aliases  # nothing deleted
    from registry.cli.catalog import _aliased
    from registry.domain.errors import Forbidden

    def refuse() -> VersionInfo:
        raise Forbidden("The alias 'prod' is protected in copiers.")

    capsys.readouterr()
    with pytest.raises(typer.Exit) as exited:
        _aliased(copy, "alice/pub:1", "prod", refuse)
    said = capsys.readouterr()
    assert exited.value.exit_code == 1 and "copied alice/pub:1 to copiers/pub:1" in said.out
    assert "error: The alias 'prod' is protected in copiers. The copy copiers/pub:1 stays, without @prod: point the " \
        "alias at it later (`vera alias copiers/pub:1 prod`) or delete it (`vera delete copiers/pub:1`)." in \
        " ".join(said.err.split()), said.err


def test_a_version_is_promoted_into_another_registry_with_what_it_says_of_itself(tmp_path: Path) -> None:
    prod_db = f"sqlite:///{tmp_path / 'prod.db'}"
    with registry_in_thread(f"sqlite:///{tmp_path / 'staging.db'}", tmp_path / "staging") as staging_url, \
            registry_in_thread(prod_db, tmp_path / "prod", VERA_REQUIRE_TOKENS="true") as prod_url:
        db = Database(prod_db)
        prod_token = create_token(db, owner="team", scopes=["read", "publish"])[1]
        db.engine.dispose()
        _promote(tmp_path, staging_url, prod_url, prod_token)


def _promote(tmp_path: Path, staging_url: str, prod_url: str, prod_token: str) -> None:
    with RegistryClient(staging_url, "", cache=False) as staging, \
            RegistryClient(prod_url, prod_token, cache=False) as prod:
        source = staging.publish(make_adapter(tmp_path / "a"), "alice/polarity", base_model="tiny-llama",
                                 metrics={"acc": 0.9}, tags=["nightly"], description="candidate",
                                 properties={"validation": "passed"}, params={"lr": "0.01"},
                                 code_revision="abc123", dataset_sha256="e" * 64, dataset_bytes=42)
        staging.record_evaluation(source.ref, "hellaswag", {"acc": 0.41})
        copy = staging.copy_to("alice/polarity@latest", prod, "team/polarity", visibility="private")
        assert (copy.ref, copy.visibility, copy.description, copy.tags) == (
            "team/polarity:1", "private", "candidate", ["nightly"])
        assert (copy.metrics, copy.properties, copy.params) == (
            {"acc": 0.9, "hellaswag": {"acc": 0.41}}, {"validation": "passed"}, {"lr": "0.01"})
        assert copy.lineage == {"copied_from": f"{staging_url}/alice/polarity:1", "code_revision": "abc123",
                                "dataset_sha256": "e" * 64, "dataset_bytes": 42}
        assert (copy.vectors_sha256, copy.seed, copy.r) == (source.vectors_sha256, source.seed, source.r)
        assert prod.lineage(copy.ref).copied_from == f"{staging_url}/alice/polarity:1"
        assert staging.download(source.ref, "adapter_model.safetensors") == prod.download(
            copy.ref, "adapter_model.safetensors")
        staging.yank(source.ref)
        with pytest.raises(Conflict, match="alice/polarity:1 is yanked"):
            staging.copy_to(source.ref, prod, "team/polarity")
        assert prod.get("team/polarity").version == 1  # nothing published
        staging.yank(source.ref, yanked=False)
        # this registry's token (VERA_TOKEN, --token) is never sent to the other (a re-check's finding, session 46)
        env = {**os.environ, "COLUMNS": "200", "VERA_REGISTRY_URL": staging_url, "VERA_TOKEN": prod_token}
        env.pop("VERA_TO_TOKEN", None)

        def cp(*more: str) -> subprocess.CompletedProcess[str]:
            return run_vera(["cp", source.ref, "team/polarity", "--to-registry", prod_url, *more], env=env)

        refused = cp("--alias", "prod")
        assert refused.returncode == 1 and prod.get("team/polarity").version == 1
        assert f"No token that {prod_url} accepts: give one of that registry's with --to-token" in refused.stderr
        done = cp("--alias", "prod", "--to-token", prod_token)
        assert done.returncode == 0, done.stderr
        assert f"copied {staging_url}/alice/polarity:1 to team/polarity:2 (team/polarity@prod -> 2)" in done.stdout
        for stated in ("alice/polarity:1", "ftp://x/alice/polarity:1", f"{staging_url}/alice/polarity",
                       "https://user@host/a/b:1", "https://host/a/b:1?x=1", "https://host/a/b:0",
                       "https://host/a/b:1\x00", "https://" + "h" * 200 + "/a/b:1"):
            answer = httpx.post(f"{prod_url}/api/v1/adapters/team/polarity/versions", timeout=60,
                                headers={"Authorization": f"Bearer {prod_token}"},
                                data={"base_model": "tiny-llama", "copied_from": stated},
                                files={"adapter_config": (tmp_path / "a" / "adapter_config.json").read_bytes(),
                                       "adapter_model": (tmp_path / "a" / "adapter_model.safetensors").read_bytes()})
            assert answer.status_code == 422 and "copied_from" in answer.text, (stated, answer.text)
        assert prod.get("team/polarity").version == 2

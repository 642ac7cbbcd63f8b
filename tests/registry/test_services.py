from __future__ import annotations

import json
import pickle
import re
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from sqlalchemy import event, func, select

from registry.domain.errors import Conflict, IntegrityError, InvalidInput, NotFound
from registry.services.registry import Registry
from registry.store import models as m
from tests.conftest import TINY_MODELS, output_of
from tests.registry.adapters import LLAMA, make_adapter, make_model, peft_logits, vera_logits
from vera_core import PEFT_GENERATOR, PORTABLE_GENERATOR, load_adapter, read_adapter, save_adapter
from vera_core.keys import LAMBDA_B, LAMBDA_D, PEFT_PREFIX


def counts(registry: Registry) -> dict[str, int]:
    with registry.db.session() as s:
        tables = {"adapters": m.Adapter, "versions": m.AdapterVersion, "blobs": m.Blob, "projections": m.Projection,
                  "base_models": m.BaseModelShapes}
        out = {k: s.scalar(select(func.count()).select_from(t)) or 0 for k, t in tables.items()}
    out["files"] = len(list(registry.blobs.digests()))
    return out


def test_publish_fetch_round_trip(registry: Registry, tmp_path: Path) -> None:
    source = make_adapter(tmp_path / "src", seed=1)
    info = registry.publish(source, owner="alice", name="llama-sent", base_model="tiny-llama",
                            metrics={"accuracy": 0.9}, tags=["demo", "sentiment"], description="first")
    assert (info.ref, info.version, info.aliases) == ("alice/llama-sent:1", 1, ["latest"])
    assert info.seed_reproducible and info.r == 8 and info.tags == ["demo", "sentiment"]
    assert info.adapter_parameters == 14 * 8 + 2 * (32 + 16 + 16 + 32 + 48 + 48 + 32) == info.trainable_parameters
    assert info.stored_bytes < 8000 and info.metrics == {"accuracy": 0.9}
    assert counts(registry) == {"adapters": 1, "versions": 1, "blobs": 1, "projections": 1, "base_models": 1,
                                "files": 1}  # the seed regenerates the projection: it is not stored
    out = registry.fetch("alice/llama-sent", tmp_path / "seed-only", seed_only=True)
    again = registry.fetch("alice/llama-sent:1", tmp_path / "again", seed_only=True)
    for f in ("adapter_config.json", "adapter_model.safetensors", "README.md"):
        assert (out / f).read_bytes() == (again / f).read_bytes()  # byte-for-byte stable
    inputs = LLAMA.inputs()
    want = output_of(load_adapter(LLAMA.make(), source), inputs)
    torch.testing.assert_close(output_of(load_adapter(LLAMA.make(), out), inputs), want, rtol=0, atol=0)
    full = registry.fetch("alice/llama-sent@latest", tmp_path / "full", with_projection=True)
    assert read_adapter(full).has_projection and not read_adapter(out).has_projection
    torch.testing.assert_close(output_of(load_adapter(LLAMA.make(), full), inputs), want, rtol=0, atol=0)


@pytest.mark.parametrize("generator", [PORTABLE_GENERATOR, PEFT_GENERATOR])
def test_default_files_are_what_peft_loads_correctly(registry: Registry, tmp_path: Path, generator: str) -> None:
    model = make_model(seed=4, projection_generator=generator)
    info = registry.publish(save_adapter(model, tmp_path / "src"), owner="ana", name="g", base_model="tiny-llama")
    vectors_before = registry.blobs.get(info.vectors_sha256)
    want = vera_logits(model)
    default = registry.fetch(info.ref, tmp_path / "default")
    # seed-only only where PEFT's own generator regenerates A and B; otherwise they are materialised
    assert read_adapter(default).has_projection == (generator == PORTABLE_GENERATOR)
    torch.testing.assert_close(peft_logits(default), want, rtol=0, atol=5e-7)
    seed_only = registry.fetch(info.ref, tmp_path / "seed-only", seed_only=True)
    assert not read_adapter(seed_only).has_projection
    torch.testing.assert_close(output_of(load_adapter(LLAMA.make(), seed_only), LLAMA.inputs()), want,
                               rtol=0, atol=5e-7)
    if generator == PORTABLE_GENERATOR:  # PEFT cannot regenerate these projections: it refuses, naming the fix
        with pytest.raises(KeyError, match="PEFT cannot load this adapter.*vera export-peft"):
            peft_logits(seed_only)
    else:
        torch.testing.assert_close(peft_logits(seed_only), want, rtol=0, atol=5e-7)
    with pytest.raises(InvalidInput, match="either the projections .* or a seed-only copy"):
        registry.files(info.ref, with_projection=True, seed_only=True)
    assert registry.blobs.get(info.vectors_sha256) == vectors_before  # what is stored never changes


def test_alias_events_say_which_version_it_named_before(registry: Registry, tmp_path: Path) -> None:
    """A rollback needs the version an alias named before a move: the event said only its row id (a guide's walk)."""
    source = make_adapter(tmp_path / "a", seed=1)
    for _ in range(2):
        registry.publish(source, owner="alice", name="x", base_model="tiny-llama")
    registry.set_alias("alice/x:1", "prod", actor="alice")
    registry.set_alias("alice/x:2", "prod", actor="alice")
    registry.remove_alias("alice/x", "prod", actor="alice")
    with registry.db.session() as s:
        details = [e.detail for e in s.scalars(select(m.AuditEvent).where(m.AuditEvent.target == "alice/x@prod")
                                               .order_by(m.AuditEvent.id))]
    assert [{k: d[k] for k in ("version", "previous_version") if k in d} for d in details] == [
        {"version": 1, "previous_version": None}, {"version": 2, "previous_version": 1}, {"version": 2}]
    assert details[1]["previous_version_id"] is not None  # kept for readers of the older field


def test_a_new_alias_that_reads_as_a_version_number_is_refused(registry: Registry, tmp_path: Path) -> None:
    """Aliases `v1` and `5` were taken: `from_pretrained(revision="v1")` then gave version 1 and `vera fetch x@v1` the
    alias's version, with no warning (an outsider's finding, session 45). One set before still moves."""
    source = make_adapter(tmp_path / "a", seed=1)
    for _ in range(2):
        registry.publish(source, owner="alice", name="x", base_model="tiny-llama")
    for alias, number, api in (("v1", 1, " gives"), ("5", 5, " and the API's .../versions/5 give"),
                               ("v000000007", 7, " gives")):
        with pytest.raises(InvalidInput, match=rf"^The alias '{alias}' reads as version {number}: the Hub protocol's "
                                               rf"revision {alias} \(from_pretrained's revision=\){re.escape(api)} "
                                               rf"that version, while a reference @{alias} would give the alias"):
            registry.set_alias("alice/x:2", alias, actor="alice")
    # nor the Hub protocol's main (the newest version) or a commit id (a re-check's findings)
    with pytest.raises(InvalidInput, match=r"^The alias 'main' is the Hub protocol's name of the newest version"):
        registry.set_alias("alice/x:1", "main", actor="alice")
    with pytest.raises(InvalidInput, match="reads as a commit id to the Hub protocol"):
        registry.set_alias("alice/x:1", "ab" * 20, actor="alice")
    before = registry.audit()
    with registry.db.session() as s:  # as an older release let it be set
        version = s.scalar(select(m.AdapterVersion).where(m.AdapterVersion.version == 1))
        assert version is not None
        s.add(m.Alias(adapter_id=version.adapter_id, name="v2", version_id=version.id))
    assert registry.set_alias("alice/x:2", "v2", actor="alice").version == 2
    assert registry.get("alice/x@v2").version == 2 and len(registry.audit()) == len(before) + 1
    for fine in ("v1-rc", "release-5", "1234567890", "vv1"):  # a letter, or more digits than any version has
        registry.set_alias("alice/x:1", fine, actor="alice")


def test_versions_aliases_and_dedupe(registry: Registry, tmp_path: Path) -> None:
    source = make_adapter(tmp_path / "a", seed=1)
    registry.publish(source, owner="alice", name="x", base_model="tiny-llama")
    second = registry.publish(source, owner="alice", name="x", base_model="tiny-llama")
    assert second.version == 2 and second.aliases == ["latest"]
    assert counts(registry)["blobs"] == 1  # same vectors, one blob
    registry.set_alias("alice/x:1", "prod", actor="alice")
    assert registry.get("alice/x@prod").version == 1
    registry.set_alias("alice/x:2", "prod", actor="alice")
    assert registry.get("alice/x@prod").version == 2 and registry.get("alice/x:1").aliases == []
    with pytest.raises(InvalidInput, match="'latest' always points at the newest"):
        registry.set_alias("alice/x:1", "latest", actor="alice")
    registry.yank("alice/x:2", actor="alice")
    assert registry.get("alice/x").version == 1  # latest skips the yanked version
    assert [v.version for v in registry.list_versions(owner="alice").items] == [1]
    assert [v.version for v in registry.list_versions(owner="alice", include_yanked=True).items] == [2, 1]
    assert registry.get("alice/x:2").yanked  # still fetchable by number
    registry.delete("alice/x:1", actor="alice")
    with pytest.raises(NotFound, match="no alias 'latest'"):
        registry.get("alice/x")
    registry.delete("alice/x:2", actor="alice")
    with pytest.raises(NotFound, match="No adapter alice/x"):
        registry.get("alice/x:2")
    assert registry.gc() == {"blobs_removed": 1, "files_removed": 0, "recent_files_kept": 1, "leftovers_removed": 0}
    assert registry.gc(grace_s=0) == {"blobs_removed": 0, "files_removed": 1, "recent_files_kept": 0,
                                      "leftovers_removed": 0}
    assert counts(registry)["files"] == 0 and counts(registry)["projections"] == 0
    actions = [e.action for e in registry.audit("alice/x")]
    assert actions == ["delete", "delete", "yank", "alias", "alias", "publish", "publish"]


def test_projections_the_seed_does_not_regenerate_are_stored_once(registry: Registry, tmp_path: Path) -> None:
    model = make_model(seed=2, save_projection=True)
    with torch.no_grad():
        model.projection.vera_A.mul_(-1)
    from vera_core import save_adapter

    source = save_adapter(model, tmp_path / "odd")
    info = registry.publish(source, owner="bob", name="odd", base_model="tiny-llama")
    registry.publish(source, owner="bob", name="odd2", base_model="tiny-llama")
    assert not info.seed_reproducible
    assert counts(registry)["projections"] == 1 and counts(registry)["blobs"] == 2
    with pytest.raises(Conflict, match="not seed-reproducible"):
        registry.fetch("bob/odd", tmp_path / "no", seed_only=True)
    assert not (tmp_path / "no").exists()
    for folder in (registry.fetch("bob/odd", tmp_path / "default"),
                   registry.fetch("bob/odd", tmp_path / "full", with_projection=True)):
        torch.testing.assert_close(read_adapter(folder).tensors["base_model.vera_A"], model.projection.vera_A)
    assert registry.verify("bob/odd").status == "passed"


def test_verify_detects_corruption_and_corrupt_blobs_are_never_served(registry: Registry, tmp_path: Path) -> None:
    info = registry.publish(make_adapter(tmp_path / "a"), owner="carol", name="v", base_model="tiny-llama")
    report = registry.verify("carol/v")
    assert report.status == "passed" and report.checks["projection"]["ok"] and report.checks["shapes"]["ok"]
    assert registry.get("carol/v").verification_status == "passed"
    digest = info.vectors_sha256
    path = Path(registry.blobs.url) / "sha256" / digest[:2] / digest[2:4] / digest
    path.write_bytes(path.read_bytes()[:-7])  # truncated
    report = registry.verify("carol/v")
    assert report.status == "failed" and not report.checks["vectors_blob"]["ok"]
    with pytest.raises(IntegrityError, match="corrupted"):
        registry.fetch("carol/v", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert blob_report(registry.fsck()) == {"missing": [], "corrupted": [info.vectors_sha256], "orphans": []}
    stray = registry.blobs.put(b"stray bytes")
    said: list[str] = []
    registry.fsck(repair=True, said=said.append)  # a young orphan may be a publish in progress: kept, as gc keeps it
    assert blob_report(registry.fsck()) == {"missing": [info.vectors_sha256], "corrupted": [], "orphans": [stray]}
    assert said[0] == "deleted 0 orphan files, kept 1 younger than 3600 s (a publish in progress may own them)"
    assert said[1] == f"deleted the corrupted file {info.vectors_sha256}"  # each thing it did, said (an operator's
    assert said[2].startswith("marked carol/v:1 failed: a file of it is missing or was corrupted. Copy the file back")
    assert len(said) == 3  # walk, session 43: nothing was said)
    said.clear()
    registry.fsck(repair=True, grace_s=0, said=said.append)
    assert blob_report(registry.fsck()) == {"missing": [info.vectors_sha256], "corrupted": [], "orphans": []}
    assert said[0] == "deleted 1 orphan file" and said[1].startswith("marked carol/v:1 failed")
    assert registry.get("carol/v").verification_status == "failed"


def blob_report(report: dict[str, list[str]]) -> dict[str, list[str]]:
    return {k: v for k, v in report.items() if k in ("missing", "corrupted", "orphans")}


def _pickle_only(d: Path) -> None:
    (d / "adapter_model.safetensors").unlink()
    (d / "adapter_model.bin").write_bytes(pickle.dumps({"x": 1}))


def _nan(d: Path) -> None:
    t = load_file(str(d / "adapter_model.safetensors"))
    key = next(k for k in t if k.endswith("vera_lambda_b"))
    t[key][0] = float("nan")
    save_file(t, str(d / "adapter_model.safetensors"))


def _narrow_targets(d: Path) -> None:
    config = json.loads((d / "adapter_config.json").read_text())
    (d / "adapter_config.json").write_text(json.dumps({**config, "target_modules": ["q_proj"]}))


def _lora(d: Path) -> None:
    config = json.loads((d / "adapter_config.json").read_text())
    (d / "adapter_config.json").write_text(json.dumps({**config, "peft_type": "LORA"}))


@pytest.mark.parametrize(
    ("mutate", "kwargs", "message"),
    [
        (None, {"owner": "../etc"}, "Owner '../etc' is not a valid name"),
        (None, {"name": "Has Space"}, "not a valid name"),
        (None, {"owner": "a\x00b"}, "not a valid name"),
        (None, {"tags": ["ok", "x" * 65]}, "Tag"),
        (None, {"base_model": ""}, "base_model is empty; name the base model"),
        (None, {"metrics": {"acc": float("nan")}}, "finite numbers"),
        (_pickle_only, {}, "a pickle, which is never loaded"),
        (_nan, {}, "NaN or infinite"),
        (_lora, {}, "expected 'VERA'"),
        (_narrow_targets, {}, "does not match them"),
    ],
    ids=["traversal", "space", "control", "tag", "base", "metrics", "pickle", "nan", "lora", "targets"],
)
def test_bad_input_is_refused_and_changes_nothing(
    registry: Registry, tmp_path: Path, mutate: object, kwargs: dict[str, object], message: str
) -> None:
    source = make_adapter(tmp_path / "a")
    if mutate is not None:
        mutate(source)  # type: ignore[operator]
    before = counts(registry)
    args: dict[str, object] = {"owner": "dave", "name": "a", "base_model": "tiny-llama", **kwargs}
    with pytest.raises(InvalidInput, match=message):
        registry.publish(source, **args)  # type: ignore[arg-type]
    assert counts(registry) == before


def test_adapters_are_checked_against_the_base_models_shapes(registry: Registry, tmp_path: Path) -> None:
    from transformers import LlamaConfig

    config_dir = tmp_path / "cfg"
    LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2).save_pretrained(config_dir)
    base = registry.register_base_model_from_config(name="tiny-llama", config_path=str(config_dir))
    assert base.shapes_source == "declared" and base.layers == 14
    registry.publish(make_adapter(tmp_path / "ok"), owner="erin", name="ok", base_model="tiny-llama")
    other = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2)
    registry.register_base_model_from_config(name="wider", config_path=str(_save(other, tmp_path / "w")))
    before = counts(registry)
    with pytest.raises(InvalidInput, match=r"does not fit base model wider.*gate_proj: 48 outputs, the base has 64"):
        registry.publish(make_adapter(tmp_path / "bad"), owner="erin", name="bad", base_model="wider")
    assert counts(registry) == before
    with pytest.raises(Conflict, match="already registered with other layer shapes"):
        registry.register_base_model_from_config(name="tiny-llama", config_path=str(tmp_path / "w"))


def _save(config: object, path: Path) -> Path:
    config.save_pretrained(path)  # type: ignore[attr-defined]
    return path


def test_a_publish_that_fails_half_way_leaves_nothing(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("database went away")

    monkeypatch.setattr("registry.services.publishing.move_latest", explode)  # fails inside the transaction
    with pytest.raises(RuntimeError, match="database went away"):
        registry.publish(make_adapter(tmp_path / "a"), owner="fay", name="a", base_model="tiny-llama")
    assert counts(registry) == {"adapters": 0, "versions": 0, "blobs": 0, "projections": 0, "base_models": 0,
                                "files": 0}


def test_concurrent_publishes_get_unique_versions(registry: Registry, tmp_path: Path) -> None:
    sources = [make_adapter(tmp_path / f"s{i}", seed=i) for i in range(6)]
    errors: list[BaseException] = []

    def publish(source: Path) -> None:
        try:
            registry.publish(source, owner="gus", name="race", base_model="tiny-llama")
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=publish, args=(s,)) for s in sources]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    page = registry.list_versions(owner="gus")
    assert sorted(v.version for v in page.items) == [1, 2, 3, 4, 5, 6]
    assert len({v.vectors_sha256 for v in page.items}) == 6  # no lost writes
    assert registry.get("gus/race").version == 6


def test_a_delete_of_the_last_version_never_takes_a_version_published_meanwhile(registry: Registry,
                                                                               tmp_path: Path) -> None:
    """A delete of an adapter's last version racing a publish of its next: the delete counted no version left while
    the publish was not committed, then deleted the adapter and with it the version just published (PostgreSQL, 8
    rounds in 25 of an outsider's, session 26). Changes to an adapter's versions now lock its row first, as a publish
    does: whichever comes second sees the other's commit."""
    first, second = make_adapter(tmp_path / "a", seed=1), make_adapter(tmp_path / "b", seed=2)
    for round_ in range(12):
        name = f"race{round_}"
        registry.publish(first, owner="gus", name=name, base_model="tiny-llama")
        registry.yank(f"gus/{name}:1", actor="gus")  # no `latest` row for the two to meet on
        results = together(lambda n=name: registry.publish(second, owner="gus", name=n, base_model="tiny-llama").ref,
                           lambda n=name: registry.delete(f"gus/{n}:1", actor="gus"))
        assert results == [f"gus/{name}:2", None]
        assert registry.get(f"gus/{name}:2").ref == f"gus/{name}:2"  # published, and still there
        with pytest.raises(NotFound):
            registry.get(f"gus/{name}:1")


def test_aliases_yanks_and_edits_racing_a_delete_answer_not_found_never_an_error(registry: Registry,
                                                                                 tmp_path: Path) -> None:
    """An alias set, a yank or an edit of a version being deleted was a 500 (a foreign key or a stale row; an
    outsider's races, session 26): each now comes before the delete or after it, and then finds no version."""
    from registry.domain.schemas import VersionUpdate

    source = make_adapter(tmp_path / "a", seed=1)
    for round_ in range(8):
        name = f"gus/edited{round_}"
        registry.publish(source, owner="gus", name=name.split("/")[1], base_model="tiny-llama")
        results = together(lambda n=name: registry.set_alias(f"{n}:1", "prod", actor="gus"),
                           lambda n=name: registry.yank(f"{n}:1", actor="gus"),
                           lambda n=name: registry.update_version(f"{n}:1", VersionUpdate(description="x"),
                                                                  actor="gus"),
                           lambda n=name: registry.delete(f"{n}:1", actor="gus"))
        assert results[3] is None
        assert all(not isinstance(r, BaseException) or isinstance(r, NotFound) for r in results), results


def together(*calls: Callable[[], object]) -> list[object]:
    """Each call's result (or the exception it raised), the calls run at once, each in a thread."""
    results: list[object] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            results[i] = calls[i]()
        except BaseException as exc:  # noqa: BLE001 - returned, and so asserted by the caller
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_list_filters_and_cursor_pagination(registry: Registry, tmp_path: Path) -> None:
    a = make_adapter(tmp_path / "a", seed=1)
    b = make_adapter(tmp_path / "b", seed=2, r=4, projection_prng_key=9)
    c = make_adapter(tmp_path / "c", seed=3, projection_generator=PEFT_GENERATOR)
    for i in range(7):
        registry.publish(a, owner="hal", name=f"n{i}", base_model="tiny-llama", tags=["even"] if i % 2 == 0 else [])
    registry.publish(b, owner="ivy", name="rank4", base_model="tiny-llama", description="A Sentiment model")
    registry.publish(c, owner="ivy", name="peftgen", base_model="other-base")
    seen, cursor = [], None
    while True:
        page = registry.list_versions(limit=4, cursor=cursor)
        seen += [v.ref for v in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 9
    assert [v.name for v in registry.list_versions(r=4).items] == ["rank4"]
    assert [v.name for v in registry.list_versions(seed=9).items] == ["rank4"]
    assert [v.name for v in registry.list_versions(generator=PEFT_GENERATOR).items] == ["peftgen"]
    assert [v.name for v in registry.list_versions(base_model="other-base").items] == ["peftgen"]
    assert len(registry.list_versions(tag="even").items) == 4
    assert [v.name for v in registry.list_versions(text="sentiment").items] == ["rank4"]
    with pytest.raises(InvalidInput, match="cursor 'bogus' is not one this registry issued"):
        registry.list_versions(cursor="bogus")
    # sorted pages: every version once, in order (ties by age), with the total count
    for sort in ("trainable_parameters", "-trainable_parameters", "r", "-created", "created"):
        ordered, cursor = [], None
        while True:
            page = registry.list_versions(limit=2, cursor=cursor, sort=sort, with_total=True)
            assert page.total == 9
            ordered += page.items
            if (cursor := page.next_cursor) is None:
                break
        assert len({v.ref for v in ordered}) == 9
        key = sort.lstrip("-").replace("created", "created_at")
        values = [(getattr(v, key), v.created_at) for v in ordered]
        assert values == sorted(values, reverse=sort.startswith("-")), sort
    assert registry.list_versions(sort="-trainable_parameters").items[-1].name == "rank4"
    first = registry.list_versions(limit=2, sort="r").next_cursor
    with pytest.raises(InvalidInput, match="not one this registry issued for sort='-r'"):
        registry.list_versions(cursor=first, sort="-r")
    with pytest.raises(InvalidInput, match="sort 'metrics' is not one of created, trainable_parameters"):
        registry.list_versions(sort="metrics")


def test_compare(registry: Registry, tmp_path: Path) -> None:
    registry.publish(make_adapter(tmp_path / "a", seed=1), owner="jo", name="a", base_model="tiny-llama",
                     metrics={"acc": 0.8})
    registry.publish(make_adapter(tmp_path / "b", seed=2), owner="jo", name="b", base_model="tiny-llama")
    result = registry.compare(["jo/a", "jo/b", "jo/a:1"])
    assert result.refs == ["jo/a:1", "jo/b:1", "jo/a:1"] and len(result.layers) == 14
    layer = result.layers[0]
    assert layer.delta_cosine[0][0] == pytest.approx(1.0, abs=1e-5)
    assert layer.delta_cosine[0][2] == pytest.approx(1.0, abs=1e-5)
    assert abs(layer.delta_cosine[0][1] or 0) < 0.99
    assert layer.d_norms[0] == layer.d_norms[2] != layer.d_norms[1]


def test_compare_with_a_version_on_another_base_model_keeps_the_others_cosines(registry: Registry,
                                                                               tmp_path: Path) -> None:
    """A version on another base model shares no layer with the first: no layer is every version's, yet the
    first's layers are still compared with the versions that adapt them (``with_first``), and its row is None."""
    refs = [registry.publish(make_adapter(tmp_path / f"l{seed}", seed=seed), owner="jo", name=f"l{seed}",
                             base_model="tiny-llama").ref for seed in (1, 2)]
    other = registry.publish(make_adapter(tmp_path / "roberta", seed=3, tiny=TINY_MODELS[0]), owner="jo",
                             name="roberta", base_model="tiny-roberta").ref
    pair = registry.compare(refs)
    result = registry.compare([*refs, other])
    assert result.layers == [] and result.with_first is not None and len(result.with_first) == 14
    assert pair.with_first is not None and [w.module for w in pair.with_first] == [x.module for x in pair.layers]
    for mine, theirs in zip(result.with_first, pair.layers, strict=True):
        assert mine.module == theirs.module and mine.cosine[2] is None  # RoBERTa adapts no Llama layer
        assert mine.cosine[:2] == pytest.approx(theirs.delta_cosine[0], abs=1e-9)
    assert registry.compare([other, *refs]).with_first == []  # the first shares a layer with none
    # the first named twice beside it: its layers with itself, as before (a reviewer's, session 38)
    twice = registry.compare([refs[0], refs[0], other])
    assert twice.with_first is not None and len(twice.with_first) == 14
    assert all(w.cosine[:2] == pytest.approx([1.0, 1.0]) and w.cosine[2] is None for w in twice.with_first)


@pytest.mark.parametrize(("generator", "r"), [(PORTABLE_GENERATOR, 8), (PEFT_GENERATOR, 8), (PORTABLE_GENERATOR, 96)])
def test_compare_cosines_are_those_of_the_loaded_models_deltas(registry: Registry, tmp_path: Path,
                                                               generator: str, r: int) -> None:
    """Llama's down_proj reads 48 inputs, the other layers 32: each delta uses its own slice of A and B. At r=8 the
    inner products are r x r products of the factors; at r=96, above the layers' sizes, the deltas formed whole are
    cheaper (an outsider's r=16384 comparison took hours the factored way, session 38): both give the same cosines."""
    from registry.services.analysis import _plan

    refs = [registry.publish(make_adapter(tmp_path / f"a{seed}", seed=seed, projection_generator=generator, r=r),
                             owner="jo", name=f"c{seed}", base_model="tiny-llama").ref for seed in (1, 2)]
    path = "model.layers.0.self_attn.q_proj"  # (32, 32): formed whole above r=32, where that costs less
    shaped = {f"{PEFT_PREFIX}{path}{LAMBDA_B}": torch.zeros(32), f"{PEFT_PREFIX}{path}{LAMBDA_D}": torch.zeros(r)}
    assert _plan(path, [(shaped, {path: 32})] * 2, [0, 1], None).formed == (r > 32)
    loaded = [dict(load_adapter(LLAMA.make(), registry.fetch(ref, tmp_path / ref.replace("/", "-"))
                                ).named_vera_layers()) for ref in refs]
    result = registry.compare(refs)
    assert {layer.module for layer in result.layers} == set(loaded[0]) and len(result.layers) == 14
    for layer in result.layers:
        x, y = (model[layer.module].get_delta_weight().flatten() for model in loaded)
        want = float(torch.nn.functional.cosine_similarity(x, y, dim=0))
        assert layer.delta_cosine[0][1] == pytest.approx(want, abs=1e-5), layer.module
        assert layer.delta_cosine[0][0] == pytest.approx(1.0, abs=1e-5)
        assert layer.d_norms[0] == pytest.approx(float(loaded[0][layer.module].vera_lambda_d.norm()))


def test_a_comparison_over_the_work_budget_is_refused_before_any_delta_is_formed(
        database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """POST /api/v1/compare of one r=16384 version named twice took a server to 7.5 GB and would have run for hours
    (an outsider's, session 38). Its cost is estimated from the shapes and refused over VERA_MAX_COMPARE_WORK; a
    version named twice is compared once, so it costs what one version costs."""
    from registry.services.analysis import MAX_LAYER_BYTES, _plan
    from registry.services.validation import ProjectionBudget
    from registry.store.blobs import FsspecBlobStore
    from registry.store.database import Database

    db = Database(database_url)
    db.upgrade()
    open_one = Registry(db, FsspecBlobStore(str(tmp_path / "blobs")))
    refs = [open_one.publish(make_adapter(tmp_path / f"w{seed}", seed=seed), owner="jo", name=f"w{seed}",
                             base_model="tiny-llama").ref for seed in (1, 2)]

    def refused(budget: int, compared: list[str]) -> float:
        tight = Registry(db, FsspecBlobStore(str(tmp_path / "blobs")), budget=ProjectionBudget(max_compare_work=budget))
        with pytest.raises(InvalidInput, match=r"^This comparison \((\d) distinct versions?\) takes about ") as said:
            tight.compare(compared)
        assert "VERA_MAX_COMPARE_WORK" in str(said.value) and "`vera fetch REF --out DIR`" in str(said.value)
        return float(str(said.value).split("takes about ")[1].split(" ")[0])

    # the memory a layer's arithmetic holds is bounded too: the way that fits is taken, and neither is refused
    def shaped(r: int, out: int = 384, width: int = 384) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
        vectors = {f"{PEFT_PREFIX}q{LAMBDA_B}": torch.zeros(out), f"{PEFT_PREFIX}q{LAMBDA_D}": torch.zeros(r)}
        return vectors, {"q": width}

    assert (_plan("q", [shaped(8)] * 2, [0, 1], None).formed, _plan("q", [shaped(50_000)] * 2, [0, 1], None).formed,
            _plan("q", [shaped(90_000)] * 2, [0, 1], None).work) == (False, True, -1)
    # each version costed with its own shape: a small one named first hid a large one (a reviewer's, session 38)
    assert _plan("q", [shaped(4, 8, 8), shaped(4096, 16384, 16384)], [0, 1], None).work == -1
    assert _plan("q", [shaped(4096, 16384, 16384), shaped(4, 8, 8)], [0, 1], None).work == -1
    assert 8 * 2 * 768 * 50_000 > MAX_LAYER_BYTES >= 8 * (2 * 384 * 384 + 768 * 50_000)  # (why: the factors)
    # A and B are drawn only once the comparison is accepted, and once for the versions that share them (an
    # outsider's re-check: every version's projection was generated first, and kept, even for a refused one)
    import vera_core

    drawn: list[object] = []
    real = vera_core.generate
    monkeypatch.setattr(vera_core, "generate", lambda spec: drawn.append(spec) or real(spec))
    pair, twice = refused(1, refs), refused(1, [refs[0], refs[0], refs[0].replace(":1", "@latest")])
    assert 0 < twice < pair and drawn == []  # one version's norms, not three versions' pairs; nothing generated
    assert Registry(db, FsspecBlobStore(str(tmp_path / "blobs")),
                    budget=ProjectionBudget(max_compare_work=int(pair) * 2)).compare(refs).layers
    assert len(drawn) == 1  # the two versions' one seed: generated once
    db.engine.dispose()


def test_a_comparison_holding_too_many_projections_is_refused_before_any_is_drawn(
        registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Eight versions on projections of their own held eight of A and B at once, up to 256 MiB each (session 38's
    left-over): what a comparison would hold is summed from the projections' shapes and refused over
    MAX_COMPARE_PROJECTION_BYTES before any is generated; versions sharing one projection hold it once."""
    import vera_core
    from registry.services import validation

    shared = [registry.publish(make_adapter(tmp_path / f"s{seed}", seed=seed), owner="jo", name=f"s{seed}",
                               base_model="tiny-llama").ref for seed in (1, 2)]
    other = registry.publish(make_adapter(tmp_path / "o", seed=3, projection_prng_key=7), owner="jo", name="o",
                             base_model="tiny-llama").ref
    with registry.db.session() as s:
        [nbytes] = {4 * row.r * (row.max_in + row.max_out) for row in s.scalars(select(m.Projection))}
    monkeypatch.setattr(validation, "MAX_COMPARE_PROJECTION_BYTES", nbytes)  # room for one projection
    drawn: list[object] = []
    real = vera_core.generate
    monkeypatch.setattr(vera_core, "generate", lambda spec: drawn.append(spec) or real(spec))
    with pytest.raises(InvalidInput, match=rf"^This comparison would hold 2 distinct projections at once "
                                           rf"\({(2 * nbytes) >> 20:,} MiB of A and B\); this registry holds at "
                                           rf"most 0 MiB for one\. Compare fewer versions on projections of their "
                                           rf"own at once"):
        registry.compare([shared[0], other])
    assert drawn == []  # refused before A and B were generated
    assert registry.compare(shared).layers and len(drawn) == 1  # one shared projection: within the bound


def test_peft_written_seed_only_adapters_need_their_projection(registry: Registry, tmp_path: Path) -> None:
    from peft import VeraConfig as PeftVeraConfig
    from peft import get_peft_model

    peft_model = get_peft_model(LLAMA.make(), PeftVeraConfig(r=8, target_modules=LLAMA.targets,
                                                             save_projection=False))
    peft_model.save_pretrained(tmp_path / "peft")
    with pytest.raises(InvalidInput, match="stores neither its projections nor their shape"):
        registry.publish(tmp_path / "peft", owner="kim", name="p", base_model="tiny-llama")
    with_projection = get_peft_model(LLAMA.make(), PeftVeraConfig(r=8, target_modules=LLAMA.targets))
    with_projection.save_pretrained(tmp_path / "peft2")
    info = registry.publish(tmp_path / "peft2", owner="kim", name="p", base_model="tiny-llama")
    assert info.seed_reproducible and info.generator == PEFT_GENERATOR
    assert counts(registry)["blobs"] == 1  # stored projections equal the seed's: not kept


def test_lora_export_of_a_peft_written_adapter_uses_the_declared_base_shapes(
    registry: Registry, tmp_path: Path, database_url: str
) -> None:
    """PEFT records no layer input sizes; once `vera base register` declares the base, the LoRA export works and
    PEFT loads it with the VeRA adapter's outputs."""
    from peft import PeftModel

    from tests.commands import wide_vera as vera
    from tests.vera_core.test_peft_interop import peft_model, train_a_little

    theirs = peft_model(LLAMA)
    train_a_little(theirs, LLAMA)
    theirs.save_pretrained(tmp_path / "peft")
    info = registry.publish(tmp_path / "peft", owner="eve", name="from-peft", base_model="llama-peft")
    with pytest.raises(Conflict, match="vera base register llama-peft --config config.json"):
        registry.files(info.ref, as_lora=True)
    LLAMA.make().config.save_pretrained(tmp_path / "base")
    done = vera("base", "register", "llama-peft", "--config", str(tmp_path / "base" / "config.json"),
                "--database-url", database_url, "--storage-url", str(tmp_path / "blobs"))
    assert done.returncode == 0 and "registered llama-peft@default" in done.stdout, done.stderr
    registry.fetch(info.ref, tmp_path / "lora", as_lora=True)
    lora = PeftModel.from_pretrained(LLAMA.make(), tmp_path / "lora").eval()
    torch.testing.assert_close(output_of(lora, LLAMA.inputs()), output_of(theirs, LLAMA.inputs()),
                               rtol=1e-5, atol=1e-5)


def test_a_peft_adapter_with_its_projection_on_minilm_declares_the_base_and_exports_as_lora(
        registry: Registry, tmp_path: Path) -> None:
    """A PEFT user's walk (session 47): an adapter PEFT saved with its projection (its default) on the demo's minilm
    was a 409 as LoRA, until `vera base register`, or until a seed-only one had been published first (which declares
    minilm from its package here). Now the first publish of either kind declares it."""
    from peft import PeftModel, get_peft_model
    from peft import VeraConfig as PeftVeraConfig
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from registry.services.base_configs import bundled_config

    config = bundled_config("minilm", "")
    assert config is not None  # the demo's package: a test dependency
    # (without its Hub name: PEFT's save_pretrained would ask the Hub for that repo's config)
    base = AutoConfig.for_model(config["model_type"], **{k: v for k, v in config.items()
                                                         if k not in ("model_type", "_name_or_path")})

    def fresh() -> torch.nn.Module:  # the same random base weights each time (its config only: no download)
        torch.manual_seed(0)
        return AutoModelForSequenceClassification.from_config(base)

    model = get_peft_model(fresh(), PeftVeraConfig(r=8, target_modules=["query", "value"], init_weights=False,
                                                   task_type="SEQ_CLS")).eval()
    model.save_pretrained(tmp_path / "peft")
    with pytest.raises(InvalidInput, match="parent eve/nothing:1"):  # a publish refused declares nothing
        registry.publish(tmp_path / "peft", owner="eve", name="mini", base_model="minilm",
                         lineage={"parent": "eve/nothing:1"})
    assert registry.list_base_models() == []
    info = registry.publish(tmp_path / "peft", owner="eve", name="mini", base_model="minilm")
    assert [(b.name, b.shapes_source) for b in registry.list_base_models()] == [("minilm", "declared")]
    registry.fetch(info.ref, tmp_path / "lora", as_lora=True)
    lora = PeftModel.from_pretrained(fresh(), tmp_path / "lora").eval()
    inputs = {"input_ids": torch.tensor([[101, 2023, 2003, 2204, 102]]), "attention_mask": torch.ones(1, 5, dtype=int)}
    torch.testing.assert_close(lora(**inputs).logits, model(**inputs).logits, rtol=1e-5, atol=1e-5)


def test_peft_seed_only_adapter_publishes_once_its_base_shapes_are_declared(registry: Registry, tmp_path: Path
                                                                              ) -> None:
    """PEFT's save_projection=False records no projection size; the declared base gives it, as PEFT computes it."""
    from tests.vera_core.test_peft_interop import peft_model, train_a_little

    theirs = peft_model(LLAMA, seed=11, save_projection=False)
    train_a_little(theirs, LLAMA)
    theirs.save_pretrained(tmp_path / "peft")
    with pytest.raises(InvalidInput, match="declare its base model's layer shapes first: `vera base register"):
        registry.publish(tmp_path / "peft", owner="eve", name="seed-only", base_model="llama-so")
    registry.register_base_model(name="llama-so", model=LLAMA.make())
    info = registry.publish(tmp_path / "peft", owner="eve", name="seed-only", base_model="llama-so")
    assert info.seed_reproducible and info.generator == PEFT_GENERATOR
    assert registry.verify(info.ref).status == "passed"
    registry.fetch(info.ref, tmp_path / "fetched")
    ours = load_adapter(LLAMA.make(), tmp_path / "fetched")
    torch.testing.assert_close(output_of(ours, LLAMA.inputs()), output_of(theirs, LLAMA.inputs()),
                               rtol=1e-5, atol=1e-5)


def test_base_register_upgrades_an_implied_base_or_says_why_not(registry: Registry, database_url: str,
                                                                tmp_path: Path) -> None:
    """An earlier publish implied the base; `vera base register` declares it, and what the refusals promised then
    works: a PEFT-written seed-only adapter publishes, and one saved with projections exports as LoRA."""
    from tests.commands import wide_vera as vera
    from tests.vera_core.test_peft_interop import peft_model, train_a_little

    registry.publish(make_adapter(tmp_path / "ours"), owner="ida", name="first", base_model="llama-b")
    registry.publish(make_adapter(tmp_path / "rev"), owner="ida", name="pinned", base_model="llama-b",
                     base_revision="v2")
    theirs = peft_model(LLAMA, seed=5, save_projection=False)
    train_a_little(theirs, LLAMA)
    theirs.save_pretrained(tmp_path / "peft")
    with pytest.raises(InvalidInput, match="vera base register"):
        registry.publish(tmp_path / "peft", owner="ida", name="seed-only", base_model="llama-b")
    LLAMA.make().config.save_pretrained(tmp_path / "base")
    args = ("--config", str(tmp_path / "base" / "config.json"), "--database-url", database_url,
            "--storage-url", str(tmp_path / "blobs"))
    done = vera("base", "register", "llama-b", *args)
    assert done.returncode == 0, done.stderr
    assert "registered llama-b@default: 14 layers, declared (upgraded from the shapes its published" in done.stdout
    assert "llama-b@v2 (another revision) stays implied; declare it with --revision v2" in done.stdout
    sources = {(b.name, b.revision): b.shapes_source for b in registry.list_base_models()}
    assert sources == {("llama-b", ""): "declared", ("llama-b", "v2"): "implied"}
    info = registry.publish(tmp_path / "peft", owner="ida", name="seed-only", base_model="llama-b")
    torch.testing.assert_close(peft_logits(registry.fetch(info.ref, tmp_path / "fetched")),
                               output_of(theirs, LLAMA.inputs()), rtol=0, atol=5e-7)
    other = LLAMA.make().config
    other.intermediate_size = 64  # shapes that contradict what the published adapters imply
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(Conflict, match=r"Published adapters imply layer '.*' with 48 outputs, which these shapes give "
                                       r"64\. Register these under another revision"):
        registry.register_base_model_from_config(name="llama-b", revision="v2",
                                                 config_path=str(tmp_path / "other" / "config.json"))
    assert {(b.name, b.revision): b.shapes_source for b in registry.list_base_models()} == sources


def test_refusals_state_a_bases_shapes_only_where_anyone_may_see_them(registry: Registry, tmp_path: Path) -> None:
    """A publish that did not fit a base used only by private adapters said the base's sizes ("q: 16 outputs, the
    base has 24"), and a declaration that contradicted them named the layer and its size: a private model's layers
    told to anyone with a publish token (an outsider's finding, session 54). Said once a public adapter uses the
    base, as GET /api/v1/base-models shows them then."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.conftest import TinyModel

    wide = TinyModel("llama-wide", lambda: LlamaForCausalLM(LlamaConfig(
        vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=40)), LLAMA.targets, "CAUSAL_LM")
    registry.publish(make_adapter(tmp_path / "secret"), owner="alice", name="secret", base_model="acme-secret",
                     visibility="private")
    probe = make_adapter(tmp_path / "probe", tiny=wide)
    before = counts(registry)
    with pytest.raises(InvalidInput) as refused:
        registry.publish(probe, owner="mallory", name="probe", base_model="acme-secret")
    said = str(refused.value)
    assert "does not fit base model acme-secret@default: " in said and "48" not in said, said
    assert "gate_proj: 64 outputs, not the number its other adapters give it" in said, said
    config = wide.make().config.to_dict()
    with pytest.raises(Conflict) as contradicted:
        registry.register_base_model_from_config_dict(name="acme-secret", config=config,
                                                      actor="mallory")
    assert str(contradicted.value) == (
        "Adapters published for base model acme-secret@default imply other layer shapes than these; register these "
        "under another revision (or check the config)."), contradicted.value
    assert counts(registry) == before
    registry.publish(make_adapter(tmp_path / "open"), owner="alice", name="open", base_model="acme-secret")
    with pytest.raises(InvalidInput, match=r"gate_proj: 64 outputs, the base has 48"):
        registry.publish(probe, owner="mallory", name="probe", base_model="acme-secret")
    with pytest.raises(Conflict, match=r"imply layer '.*' with 48 outputs, which these shapes give 64"):
        registry.register_base_model_from_config_dict(name="acme-secret", config=config, actor="mallory")


def test_base_shapes_from_a_config_sent_by_a_caller_are_audited(registry: Registry) -> None:
    info = registry.register_base_model_from_config_dict(name="llama-sent", config=LLAMA.make().config.to_dict(),
                                                         actor="ann")
    assert (info.shapes_source, info.layers) == ("declared", 14)
    assert [(e.actor, e.action) for e in registry.audit("llama-sent@")] == [("ann", "base-register")]


def test_lookup_answers_many_references_at_once_in_their_order(registry: Registry, tmp_path: Path) -> None:
    """POST /api/v1/adapters/lookup's service, on SQLite and PostgreSQL (row-value IN): numbers, aliases and an
    adapter's latest in one call, each answered in the order sent; a missing one and one the caller may not read
    alike None; a yanked version by number (as GET answers it) but not as latest; duplicates answered each time."""
    from registry.services.tokens import Principal

    source = make_adapter(tmp_path / "a")
    for _ in range(3):
        registry.publish(source, owner="alice", name="x", base_model="tiny-llama")
    registry.publish(source, owner="alice", name="hidden", base_model="tiny-llama", visibility="private")
    registry.set_alias("alice/x:2", "prod", actor="alice")
    registry.yank("alice/x:3", actor="alice")
    registry.delete("alice/x:1", actor="alice")
    asked = ["alice/x@prod", "alice/x", "alice/x:3", "alice/x:1", "alice/x:9", "alice/x@staging", "nobody/x:1",
             "alice/hidden:1", "alice/hidden", "alice/x:2", "alice/x@prod"]
    answers = registry.lookup(asked)  # no viewer: everything (an admin, the local user)
    assert [a.requested for a in answers] == asked
    assert [a.version.ref if a.version else None for a in answers] == [
        "alice/x:2", "alice/x:2", "alice/x:3", None, None, None, None, "alice/hidden:1", "alice/hidden:1",
        "alice/x:2", "alice/x:2"]
    whole = registry.get("alice/x:2")
    assert answers[0].version == whole  # the same VersionInfo a GET gives: aliases, downloads, lineage...
    assert answers[2].version is not None and answers[2].version.yanked
    bob = Principal(owner="bob", scopes=frozenset({"read"}))
    to_bob = registry.lookup(["alice/hidden:1", "alice/hidden", "alice/x:2"], viewer=bob)
    assert [a.version.ref if a.version else None for a in to_bob] == [None, None, "alice/x:2"]
    with pytest.raises(InvalidInput, match=r"refs\[1\]: 'alice x' is not an adapter reference"):
        registry.lookup(["alice/x:2", "alice x"])
    with pytest.raises(InvalidInput, match="refs must list 1 to 500 references, got 501; split"):
        registry.lookup([f"alice/x:{n}" for n in range(1, 502)])
    statements: list[str] = []

    def seen(*args: object) -> None:
        statements.append(str(args[2]))

    event.listen(registry.db.engine, "before_cursor_execute", seen)
    try:
        many = registry.lookup([f"alice/x:{n}" for n in range(1, 499)] + ["alice/x", "alice/x@prod"])  # the most
    finally:
        event.remove(registry.db.engine, "before_cursor_execute", seen)
    assert [a.version.ref for a in many if a.version] == ["alice/x:2", "alice/x:3", "alice/x:2", "alice/x:2"]
    assert len(statements) < 15, statements  # a few per kind of reference and of what a version shows, not 500


def test_lookup_says_where_a_moved_adapter_is_now_to_whoever_may_read_it_there(registry: Registry,
                                                                           tmp_path: Path) -> None:
    """A name an adapter had before `vera mv` answers None with ``moved_to``, its name now, as a GET's 404 carries
    X-Vera-Moved-To: to a viewer that may read it there only (a private adapter's new name is nobody else's), and
    never beside a version found or for a name nothing left."""
    from registry.services.tokens import Principal

    source = make_adapter(tmp_path / "a")
    for name, visibility in (("open", "public"), ("secret", "private")):
        registry.publish(source, owner="alice", name=name, base_model="tiny-llama", visibility=visibility)
        registry.set_alias(f"alice/{name}:1", "prod", actor="alice")
        registry.move(f"alice/{name}", f"alice/{name}-now", actor="alice")
    asked = ["alice/open:1", "alice/open@prod", "alice/open", "alice/open:2", "alice/secret:1", "alice/open-now:1",
             "alice/never:1"]

    def answered(viewer: Principal | None) -> list[tuple[str | None, str | None]]:
        return [(a.version.ref if a.version else None, a.moved_to) for a in registry.lookup(asked, viewer=viewer)]

    owner = [(None, "alice/open-now")] * 4 + [(None, "alice/secret-now"), ("alice/open-now:1", None), (None, None)]
    assert answered(None) == owner  # (no viewer: the registry's admins, the local user)
    assert answered(Principal(owner="alice", scopes=frozenset({"read"}))) == owner
    assert answered(Principal(owner="bob", scopes=frozenset({"read"}))) == owner[:4] + [(None, None)] + owner[5:]

"""Derived files made once (registry.services.derived): each download form of a version is built once, stored as
content-addressed blobs and listed in version_files, then served from storage by every registry process (a new
process builds nothing); the stored bytes are those a fresh build gives; storage lost or damaged is rebuilt; gc and
fsck know derived blobs."""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load
from sqlalchemy import func, select

from registry.domain.errors import Conflict, InvalidInput, NotFound
from registry.domain.schemas import Ref
from registry.services.derived import MAX_FORMS_PER_VERSION, FileForm, _form_of
from registry.services.file_cache import FileCache
from registry.services.registry import Registry
from registry.store import models as m
from registry.store.blobs import BlobReader, FsspecBlobStore, chunks
from tests.registry.adapters import make_adapter
from vera_core import lora as vera_lora
from vera_core.config import PEFT_GENERATOR, PORTABLE_GENERATOR
from vera_core.keys import PROJECTION_KEYS
from vera_core.lora import LoraExport

FORMS = [FileForm(), FileForm(with_projection=True), FileForm(seed_only=True), FileForm(lora=LoraExport()),
         FileForm(lora=LoraExport(max_rank=2, dtype="bfloat16")), FileForm(lora=LoraExport(max_rank=4, for_vllm=True))]


def another_process(registry: Registry, tmp_path: Path) -> Registry:
    """A second registry process (another replica, or this one restarted) over the same database and storage."""
    return Registry(registry.db, FsspecBlobStore(str(tmp_path / "blobs")), file_cache=FileCache(0))


def read(registry: Registry, digest: str) -> bytes:
    return b"".join(registry.blobs.reader(digest))


@pytest.fixture(params=[PEFT_GENERATOR, PORTABLE_GENERATOR])
def ref(registry: Registry, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    adapter = make_adapter(tmp_path / "a", seed=1, projection_generator=request.param)
    return registry.publish(adapter, owner="kim", name="c", base_model="tiny").ref


def counting_builds(r: Registry) -> Callable[[], int]:
    """How many times ``r`` built a form: calls of Versions.built (in memory) and streamed builds."""
    calls = {"n": 0}
    built, streamed = r.versions.built, r.versions.write_streamed

    def counted_built(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        return built(*args, **kwargs)

    def counted_streamed(*args: Any, **kwargs: Any) -> Any:
        paths = streamed(*args, **kwargs)
        calls["n"] += paths is not None
        return paths

    r.versions.built, r.versions.write_streamed = counted_built, counted_streamed  # type: ignore[method-assign]
    return lambda: calls["n"]


def test_each_form_is_built_once_stored_and_the_same_bytes_as_a_fresh_build(registry: Registry, ref: str,
                                                                            tmp_path: Path) -> None:
    other = another_process(registry, tmp_path)
    counters = {id(r): counting_builds(r) for r in (registry, other)}

    def builds(r: Registry) -> int:
        return counters[id(r)]()

    for form in FORMS:
        before = builds(registry)
        info, files = registry.derived.manifest(ref, form)
        assert builds(registry) == before + 1, form  # built here, once
        assert registry.derived.manifest(ref, form) == (info, files) and builds(registry) == before + 1
        _, fresh = other.files(ref, with_projection=form.with_projection, seed_only=form.seed_only,
                               as_lora=form.lora is not None, lora=form.lora)
        assert {f.filename: read(registry, f.sha256) for f in files} == fresh, form  # byte-identical
        assert all(f.size == len(fresh[f.filename]) and f.sha256 == hashlib.sha256(fresh[f.filename]).hexdigest()
                   for f in files)
        other_builds = builds(other)
        assert other.derived.manifest(ref, form) == (info, files)  # another process: listed, not built
        assert builds(other) == other_builds, form
    with registry.db.session() as s:
        forms = set(s.scalars(select(m.VersionFile.form)))
        kinds = set(s.scalars(select(m.Blob.kind).join(m.VersionFile, m.VersionFile.sha256 == m.Blob.sha256)))
    assert forms == {f.key for f in FORMS} and kinds <= {"derived", "vectors"}


def test_form_names_are_short_and_name_their_form_back() -> None:
    keys = [f.key for f in FORMS]
    assert keys == ["vera", "vera+projection", "vera+seed-only", "lora", "lora:r<=2,bfloat16", "lora:r<=4,vllm<=512"]
    assert all(_form_of(f.key) == f for f in FORMS)
    # the name of exports for vLLM stored before 2026-12-05 (the rank snapped down): read back, never served again
    assert _form_of("lora:r<=4,vllm") == FORMS[-1] and FORMS[-1].key != "lora:r<=4,vllm"
    assert len(FileForm(lora=LoraExport(max_rank=10**9, dtype="float16", for_vllm=True)).key) <= 64


def test_a_file_by_hash_belongs_to_its_version(registry: Registry, ref: str, tmp_path: Path) -> None:
    _, files = registry.derived.manifest(ref, FileForm())
    assert registry.derived.by_digest(Ref.parse(ref), files[1].sha256) == files[1]
    other = registry.publish(make_adapter(tmp_path / "b", seed=2), owner="kim", name="d", base_model="tiny").ref
    with pytest.raises(NotFound, match="kim/d:1 has no file with SHA-256"):
        registry.derived.by_digest(Ref.parse(other), files[1].sha256)
    with pytest.raises(NotFound, match="has no version 9"):
        registry.derived.by_digest(Ref.parse("kim/c:9"), files[1].sha256)
    with pytest.raises(NotFound, match=r"has no README.md; it has adapter_config.json, adapter_model.safetensors"):
        registry.derived.file(ref, FileForm(lora=LoraExport()), "README.md")


def test_a_form_not_built_yet_is_not_built_when_asked_not_to(registry: Registry, ref: str) -> None:
    """The API's read threads ask with build=False and build elsewhere (routes/files.py); nothing is built then."""
    from registry.services.derived import NotBuilt

    builds = counting_builds(registry)
    with pytest.raises(NotBuilt, match=r"kim/c:1 has no vera\+projection files yet"):
        registry.derived.manifest(ref, FileForm(with_projection=True), build=False)
    with pytest.raises(NotBuilt):
        registry.derived.listing(ref, FileForm(with_projection=True), build=False)
    assert builds() == 0
    info, files = registry.derived.manifest(ref, FileForm(with_projection=True))
    assert registry.derived.manifest(ref, FileForm(with_projection=True), build=False) == (info, files)
    assert builds() == 1


def test_inline_base64_is_kept_in_the_file_cache_by_hash(registry: Registry, ref: str) -> None:
    """A file list's inline text is read from storage once, then from the file cache (the same hash, the same
    text, even once the stored file is gone)."""
    import base64

    _, files = registry.derived.manifest(ref, FileForm())
    config, pinned = files[0], Ref.parse(ref)
    text = registry.derived.base64(pinned, config)
    assert base64.b64decode(text) == read(registry, config.sha256)
    assert registry.versions.cache.get(("base64", config.sha256)) is not None
    registry.blobs.delete(config.sha256)
    assert registry.derived.base64(pinned, config) == text  # not read again


def test_a_lost_or_damaged_stored_file_is_built_again(registry: Registry, ref: str, tmp_path: Path) -> None:
    info, files = registry.derived.manifest(ref, FileForm())
    weights, pinned = files[1], Ref.parse(ref)
    expected = read(registry, weights.sha256)
    registry.blobs.delete(weights.sha256)  # lost
    source = registry.derived.source(pinned, weights)
    assert isinstance(source, str) and Path(source).read_bytes() == expected
    Path(source).write_bytes(expected[:-1] + b"\0")  # damaged in place
    source = registry.derived.source(pinned, weights)
    assert isinstance(source, str) and Path(source).read_bytes() == expected
    streamed = registry.derived.source(pinned, weights, local=False)
    assert isinstance(streamed, BlobReader) and b"".join(streamed) == expected
    assert registry.derived.manifest(ref, FileForm()) == (info, files)


def test_gc_keeps_derived_files_while_a_version_lists_them(registry: Registry, ref: str, tmp_path: Path) -> None:
    twin = registry.publish(make_adapter(tmp_path / "b", seed=1), owner="kim", name="twin", base_model="tiny").ref
    _, files = registry.derived.manifest(ref, FileForm(lora=LoraExport()))
    _, twin_files = registry.derived.manifest(twin, FileForm(lora=LoraExport()))
    shared = {f.sha256 for f in files} & {f.sha256 for f in twin_files}
    assert shared  # the same vectors give the same LoRA: stored once, listed by both versions
    registry.gc(grace_s=0)
    assert all(registry.blobs.exists(f.sha256) for f in files)
    registry.delete(ref, actor="kim")
    registry.gc(grace_s=0)
    assert all(registry.blobs.exists(d) for d in shared)  # the twin still lists them
    registry.delete(twin, actor="kim")
    registry.gc(grace_s=0)
    assert not any(registry.blobs.exists(f.sha256) for f in files + twin_files)
    with registry.db.session() as s:
        assert s.scalar(select(func.count()).select_from(m.VersionFile)) == 0
        assert s.scalar(select(func.count()).select_from(m.Blob).where(m.Blob.kind == "derived")) == 0


def test_fsck_repair_forgets_a_damaged_derived_file_without_failing_its_version(registry: Registry, ref: str) -> None:
    info, files = registry.derived.manifest(ref, FileForm())
    path = registry.blobs.verified_local_path(files[1].sha256)
    assert path is not None
    Path(path).write_bytes(b"damaged")
    report = registry.fsck(repair=True)
    assert files[1].sha256 in report["corrupted"]
    assert registry.get(ref).verification_status != "failed"  # its own blobs are whole
    assert registry.fsck() == {key: [] for key in report}  # nothing dangles
    assert registry.derived.manifest(ref, FileForm()) == (info, files)  # built again, the same bytes
    assert read(registry, files[1].sha256)


def test_the_hub_protocol_serves_the_same_stored_files(registry: Registry, ref: str, tmp_path: Path) -> None:
    """/hf revisions read the stored derived files (built once, whatever the protocol), with the Hub's blob ids."""
    from registry.services.hub_view import HubView

    rev = HubView(registry).revision("kim", "c", "main+lora")
    _, files = registry.derived.manifest(ref, FileForm(lora=LoraExport()))
    assert {n: rev.sha256(n) for n in rev.names if n != "README.md"} == {f.filename: f.sha256 for f in files}
    other = another_process(registry, tmp_path)
    before = other.versions.cache.hits + other.versions.cache.misses
    again = HubView(other).revision("kim", "c", rev.commit)  # another process: nothing built
    assert other.versions.cache.hits + other.versions.cache.misses == before
    for name in again.names:
        source = again.source(name)
        data = source if isinstance(source, bytes) else b"".join(chunks(source))
        git = hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()  # git's blob id
        assert again.size(name) == len(data) and again.blob_id(name) == git
        assert again.sha256(name) == hashlib.sha256(data).hexdigest() == rev.sha256(name)


def test_a_projection_form_is_written_in_blocks_with_the_bytes_of_a_whole_build(registry: Registry, ref: str,
                                                                                tmp_path: Path) -> None:
    """Forms that materialise projections the seed regenerates are written piece by piece (A and B generated in
    row blocks, vera_core.projection.projection_blocks) and give the bytes of the in-memory build; the other VeRA
    forms are built in memory."""
    generator = registry.get(ref).generator
    (tmp_path / "w").mkdir()
    streamed = registry.versions.write_streamed(ref, tmp_path / "w", with_projection=True, seed_only=False)
    assert streamed is not None
    _, whole = registry.files(ref, with_projection=True)
    assert {name: path.read_bytes() for name, path in streamed.items()} == whole
    (tmp_path / "s").mkdir()
    assert registry.versions.write_streamed(ref, tmp_path / "s", with_projection=False, seed_only=True) is None
    default = registry.versions.write_streamed(ref, tmp_path / "s", with_projection=False, seed_only=False)
    assert (default is not None) == (generator == PORTABLE_GENERATOR)  # what PEFT loads: A and B unless it makes them


@pytest.mark.parametrize("export", [LoraExport(), LoraExport(max_rank=2, dtype="bfloat16"),
                                    LoraExport(max_rank=4, for_vllm=True)], ids=["exact", "r<=2-bf16", "vllm"])
def test_a_lora_export_is_written_layer_by_layer_with_the_bytes_of_a_whole_build(
        registry: Registry, ref: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, export: LoraExport) -> None:
    """A LoRA export is written one layer at a time in row blocks (a rank-capped one through a spool file, since
    its header names the largest error): the bytes of the in-memory build, and no spool left behind."""
    monkeypatch.setattr(vera_lora, "BLOCK_BYTES", 64)  # a few numbers per block: every factor in several blocks
    (tmp_path / "w").mkdir()
    paths = registry.versions.write_streamed(ref, tmp_path / "w", with_projection=False, seed_only=False, lora=export)
    assert paths is not None
    _, whole = registry.files(ref, as_lora=True, lora=export)
    assert {name: path.read_bytes() for name, path in paths.items()} == whole
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == sorted(whole)


@pytest.mark.parametrize("storage", ["folder", "memory"])
def test_projections_stored_rather_than_regenerated_are_copied_in_row_blocks(
        registry: Registry, tmp_path: Path, storage: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A version whose A and B its seed does not give keeps them in a blob; its forms with A and B are written by
    copying them from that blob in row blocks of a few bytes here (a local store's own file, else a hash-checked
    temporary copy that goes afterwards), with the bytes of the in-memory build."""
    import torch
    from safetensors.torch import load_file

    from registry.services import versions
    from tests.registry.adapters import make_model
    from vera_core import save_adapter

    model = make_model(seed=2, save_projection=True)
    with torch.no_grad():
        model.projection.vera_A.mul_(-1)  # no longer what the seed gives
    if storage == "memory":
        registry = Registry(registry.db, FsspecBlobStore(f"memory://derived-{tmp_path.name}"))
    info = registry.publish(save_adapter(model, tmp_path / "odd"), owner="bob", name="odd", base_model="tiny-llama")
    assert not info.seed_reproducible
    monkeypatch.setattr(versions, "STORED_BLOCK_BYTES", 64)  # 64-byte blocks: many per matrix
    for with_projection in (False, True):
        folder = tmp_path / f"w-{with_projection}"
        folder.mkdir()
        streamed = registry.versions.write_streamed(info.ref, folder, with_projection=with_projection,
                                                    seed_only=False)
        assert streamed is not None
        _, whole = registry.files(info.ref, with_projection=with_projection)
        assert {name: path.read_bytes() for name, path in streamed.items()} == whole
        assert sorted(p.name for p in folder.iterdir()) == sorted(whole)  # no temporary copy left behind
        written = load_file(streamed["adapter_model.safetensors"])
        torch.testing.assert_close(written["base_model.vera_A"], model.projection.vera_A, rtol=0, atol=0)
    # seed-only: not streamed, and refused where it is built (its seed does not give its A and B)
    assert registry.versions.write_streamed(info.ref, tmp_path, with_projection=False, seed_only=True) is None
    with pytest.raises(Conflict, match="not seed-reproducible"):
        registry.files(info.ref, seed_only=True)


def test_a_lora_export_over_the_limit_is_refused_before_it_is_built(registry: Registry, ref: str) -> None:
    """Session 13's attack: a 333 KB adapter exported to 513 MB stored from one request (1.4 TB at the default
    limits). The export's size is known from the layers before any factor is computed, to the byte."""
    _, files = registry.derived.manifest(ref, FileForm(lora=LoraExport()))  # float32, under the default limit
    weights = next(f for f in files if f.filename == "adapter_model.safetensors")
    factors = sum(t.nbytes for k, t in load(read(registry, weights.sha256)).items() if ".lora_" in k)
    half = FileForm(lora=LoraExport(dtype="bfloat16"))  # the same factors in 2 bytes each
    before = sorted(registry.blobs.digests())
    registry.budget.max_export_bytes = factors // 2 - 1
    with pytest.raises(InvalidInput, match=rf"would write {factors // 2:,} bytes of factors.*VERA_MAX_EXPORT_BYTES"):
        registry.derived.manifest(ref, half)
    with pytest.raises(InvalidInput, match="VERA_MAX_EXPORT_BYTES"):  # the in-memory path (Hub push, CLI) too
        registry.versions.built(ref, as_lora=True, lora=half.lora)
    assert sorted(registry.blobs.digests()) == before  # nothing stored
    with registry.db.session() as s:
        assert not s.scalar(select(func.count()).select_from(m.VersionFile).where(m.VersionFile.form == half.key))
    registry.budget.max_export_bytes = factors // 2  # exactly its size: built
    assert registry.derived.manifest(ref, half)[1]


def test_a_lora_export_costlier_than_the_work_limit_is_refused_before_it_is_computed(registry: Registry, ref: str,
                                                                                      tmp_path: Path) -> None:
    """A 50 KB adapter's rank-capped export (a QR and an SVD per layer) took minutes, thousands of tiny layers
    seconds, and the bytes limit let both through (an outsider's finding, session 39). The work is estimated from
    the layers' shapes (vera_core.lora.lora_export_work) and refused over VERA_MAX_EXPORT_WORK before any factor
    is computed, on every path that builds one: stored forms, in memory, streamed."""
    from vera_core import read_adapter
    from vera_core.lora import lora_export_work

    capped = LoraExport(max_rank=2)
    local = read_adapter(registry.fetch(ref, tmp_path / "local", with_projection=True))
    a, b = (local.tensors.pop(k) for k in PROJECTION_KEYS)
    _, work, held = lora_export_work(local, a, b, capped)
    assert work > lora_export_work(local, a, b, LoraExport()).work and held > 0  # the factoring is counted
    before = sorted(registry.blobs.digests())
    registry.budget.max_export_work = work - 1
    refusal = rf"takes about {re.escape(f'{work:.2g}')} multiply-adds' worth .*VERA_MAX_EXPORT_WORK.*export-lora DIR"
    with pytest.raises(InvalidInput, match=refusal):
        registry.derived.manifest(ref, FileForm(lora=capped))
    with pytest.raises(InvalidInput, match=refusal):
        registry.versions.built(ref, as_lora=True, lora=capped)
    with pytest.raises(InvalidInput, match=refusal):
        registry.versions.write_streamed(ref, tmp_path / "streamed", with_projection=True, seed_only=False,
                                         lora=capped)
    assert sorted(registry.blobs.digests()) == before  # nothing stored
    registry.budget.max_export_work = work  # exactly its cost: built
    assert registry.derived.manifest(ref, FileForm(lora=capped))[1]


def test_an_export_that_would_hold_too_much_at_once_is_refused_before_it_is_computed(
        registry: Registry, ref: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A max_rank factors each layer in float64 (16 layers of 2^23 recorded inputs at r=8 held 2.4 GB: an outsider's
    re-check, session 39): a layer whose factoring would hold more than MAX_LAYER_BYTES is refused; and an export
    built whole in memory (a Hub push as LoRA) takes at most MAX_IN_MEMORY_EXPORT_BYTES, while downloads, written as
    they are built, take up to VERA_MAX_EXPORT_BYTES. Both bounds lowered here to the tiny adapter's size."""
    from registry.services import validation

    monkeypatch.setattr(validation, "MAX_LAYER_BYTES", 1000)
    with pytest.raises(InvalidInput, match=r"would hold \d+ MiB while it factors one layer for max_rank; this "
                                           r"registry holds at most 0 MiB"):
        registry.derived.manifest(ref, FileForm(lora=LoraExport(max_rank=2)))
    assert registry.derived.manifest(ref, FileForm(lora=LoraExport()))[1]  # the exact export factors nothing
    monkeypatch.setattr(validation, "MAX_IN_MEMORY_EXPORT_BYTES", 1000)
    with pytest.raises(InvalidInput, match=r"built in memory \(a Hub push as LoRA\), at most 1,000.*vera fetch REF "
                                           r"--as lora --out DIR"):
        registry.versions.built(ref, as_lora=True, lora=LoraExport(dtype="float16"))
    assert registry.derived.manifest(ref, FileForm(lora=LoraExport(dtype="float16")))[1]  # streamed: taken


def test_a_version_keeps_a_bounded_number_of_stored_forms(registry: Registry, ref: str) -> None:
    """Each distinct rank cap is a form built and stored; past MAX_FORMS_PER_VERSION the least recently built are
    forgotten (built again if asked for), so many rank-capped exports of one adapter cannot fill the store."""
    forms = [FileForm(lora=LoraExport(max_rank=k)) for k in range(1, 8)] + FORMS[:3] + [FileForm(lora=LoraExport())]
    stored = set(registry.blobs.digests())
    for form in forms:
        registry.derived.manifest(ref, form)
    with registry.db.session() as s:
        kept = set(s.scalars(select(m.VersionFile.form).distinct()))
        listed = set(s.scalars(select(m.VersionFile.sha256)))
        known = set(s.scalars(select(m.Blob.sha256)))
    assert len(kept) == MAX_FORMS_PER_VERSION and forms[-1].key in kept and forms[0].key not in kept
    # the forgotten forms' blobs went with them (second attack round: 136 files stayed until `vera gc`)
    assert set(registry.blobs.digests()) == known == stored | listed
    info, files = registry.derived.manifest(ref, forms[0])  # forgotten: built again, the same bytes
    assert info.ref == registry.get(ref).ref and files and forms[0].key in {f.form for f in files}


def test_all_versions_together_keep_at_most_derived_max_bytes_of_built_forms(registry: Registry, tmp_path: Path
                                                                             ) -> None:
    """An outsider's finding (session 33): an anonymous reader had 137x a public adapter's size built and stored (LoRA
    exports in three dtypes, A and B), counted against no quota, up to 8 forms of every version. All versions'
    forms together now keep at most VERA_DERIVED_MAX_BYTES, the least recently built forgotten first (its blobs at
    once), the one just built always kept, whatever its size."""
    from registry.services.derived import NotBuilt

    refs = [registry.publish(make_adapter(tmp_path / f"a{i}", seed=i), owner="kim", name=f"v{i}",
                             base_model="tiny").ref for i in range(3)]
    form = FileForm(with_projection=True)
    first = sum(f.size for f in registry.derived.manifest(refs[0], form)[1])
    capped = Registry(registry.db, registry.blobs, derived_bytes=int(first * 1.5))  # room for one form
    with registry.db.session() as s:
        assert s.scalar(select(func.count(func.distinct(m.VersionFile.version_id)))) == 1
    capped.derived.manifest(refs[1], form)
    capped.derived.manifest(refs[2], form)
    with registry.db.session() as s:
        held = set(s.execute(select(m.VersionFile.version_id, m.VersionFile.form).distinct()).all())
        listed = set(s.scalars(select(m.VersionFile.sha256)))
        derived = set(s.scalars(select(m.Blob.sha256).where(m.Blob.kind == "derived")))
    assert len(held) == 1 and capped.derived.manifest(refs[2], form, build=False)[1]  # the newest, alone
    for older in refs[:2]:
        with pytest.raises(NotBuilt):
            capped.derived.manifest(older, form, build=False)
    assert derived == listed  # the forgotten forms' blobs went with them
    tiny = Registry(registry.db, registry.blobs, derived_bytes=1)  # smaller than any form: the new one stays
    assert tiny.derived.manifest(refs[0], form)[1]


def test_equal_files_of_different_versions_built_at_once_are_recorded_once(registry: Registry,
                                                                           tmp_path: Path) -> None:
    """Versions whose derived files share bytes (a seed-only adapter_config.json is the same for every adapter of one
    configuration), built at the same moment by concurrent first downloads: each succeeds, and the blob is recorded
    once (the model server's first requests for two adapters at once found one a 500 on the blob's key)."""
    refs = [registry.publish(make_adapter(tmp_path / f"v{i}", seed=i), owner="kim", name=f"c{i}",
                             base_model="tiny").ref for i in range(6)]
    start, errors = threading.Barrier(len(refs)), []

    def first_download(ref: str) -> None:
        start.wait()
        try:
            registry.derived.manifest(ref, FileForm(seed_only=True))
        except Exception as exc:  # noqa: BLE001 - the test reports every failure
            errors.append(exc)

    threads = [threading.Thread(target=first_download, args=(ref,)) for ref in refs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    configs = {f.sha256 for ref in refs for f in registry.derived.manifest(ref, FileForm(seed_only=True))[1]
               if f.filename == "adapter_config.json"}
    assert len(configs) == 1
    with registry.db.session() as s:
        assert s.scalar(select(func.count()).select_from(m.Blob).where(m.Blob.sha256.in_(configs))) == 1

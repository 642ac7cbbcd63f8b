"""Built download files are made once per version and option, then served from memory: the same bytes as a fresh
build, never shared mutably, bounded in bytes, and keyed so that a deleted and re-published version is rebuilt."""

from __future__ import annotations

from pathlib import Path

from registry.services.file_cache import BuiltFiles, FileCache
from registry.services.registry import Registry
from registry.store.blobs import FsspecBlobStore
from tests.registry.adapters import make_adapter
from vera_core.lora import LoraExport


def test_a_second_download_is_served_from_the_cache_with_the_same_bytes(registry: Registry, tmp_path: Path) -> None:
    ref = registry.publish(make_adapter(tmp_path / "a", seed=1), owner="kim", name="c", base_model="tiny").ref
    uncached = Registry(registry.db, FsspecBlobStore(str(tmp_path / "blobs")), file_cache=FileCache(0))
    cache = registry.versions.cache
    for options in ({}, {"seed_only": True}, {"as_lora": True},
                    {"as_lora": True, "lora": LoraExport(max_rank=2, dtype="bfloat16")}):
        misses = cache.misses
        _, first = registry.files(ref, **options)  # type: ignore[arg-type]
        assert cache.misses == misses + 1, options
        hits = cache.hits
        info, second = registry.files(ref, **options)  # type: ignore[arg-type]
        assert cache.hits == hits + 1 and second == first, options
        assert uncached.files(ref, **options)[1] == first, options  # byte-identical to a fresh build
        second["README.md"] = b"changed by a caller"  # callers get their own dict
        assert registry.files(ref, **options)[1] == first
    assert uncached.versions.cache.held == 0 and cache.held > 0
    # the portable generator's default download materialises A and B: with_projection is the same build, a hit
    hits = cache.hits
    assert registry.files(ref, with_projection=True)[1] == registry.files(ref)[1] and cache.hits == hits + 2
    assert registry.built(ref)[1].sha256 == BuiltFiles.of(registry.files(ref)[1]).sha256


def test_a_deleted_version_published_again_is_built_again(registry: Registry, tmp_path: Path) -> None:
    ref = registry.publish(make_adapter(tmp_path / "a", seed=1), owner="kim", name="c", base_model="tiny").ref
    before = registry.files(ref)[1]
    registry.delete(ref, actor="kim")
    again = registry.publish(make_adapter(tmp_path / "b", seed=2), owner="kim", name="c", base_model="tiny").ref
    assert again == "kim/c:2"  # a new number (SQLite may still hand out the same row id) ...
    assert registry.files(again)[1]["adapter_model.safetensors"] != before["adapter_model.safetensors"]  # new bytes


def test_the_cache_is_bounded_in_bytes_least_recently_used_out_first() -> None:
    cache = FileCache(max_bytes=1000)
    entries = {key: BuiltFiles.of({"f": bytes([key]) * 200}) for key in range(6)}
    for key in range(4):
        cache.put(key, entries[key])
    assert cache.get(0) is entries[0]  # 0 is now the most recently used
    cache.put(4, entries[4])
    cache.put(5, entries[5])  # 1200 bytes: the least recently used (1) goes
    assert cache.get(1) is None and cache.get(0) is entries[0] and cache.get(5) is entries[5]
    assert cache.held <= 1000
    cache.put(9, BuiltFiles.of({"f": b"x" * 300}))  # over a quarter of the cache: never kept
    assert cache.get(9) is None

"""The files versions were built into, kept in memory: a version's bytes never change, so what a download builds
(regenerated projections, a LoRA export, the safetensors and README bytes) is built once per version and option and
served from here until it is evicted. Least recently used first out, bounded by the bytes it holds."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

#: By default the cache holds this much (VERA_FILE_CACHE_BYTES); 0 turns it off.
DEFAULT_FILE_CACHE_BYTES = 256 * 2**20


@dataclass(frozen=True)
class BuiltFiles:
    """A version's files as one download option builds them, with each file's SHA-256 (its ETag)."""

    files: dict[str, bytes]
    sha256: dict[str, str]

    @classmethod
    def of(cls, files: dict[str, bytes]) -> BuiltFiles:
        return cls(files, {name: hashlib.sha256(data).hexdigest() for name, data in files.items()})

    @property
    def size(self) -> int:
        return sum(len(data) for data in self.files.values())


class FileCache:
    """``BuiltFiles`` by key, at most ``max_bytes`` in all; an entry over a quarter of that is never kept."""

    def __init__(self, max_bytes: int = DEFAULT_FILE_CACHE_BYTES) -> None:
        self.max_bytes, self.held = max_bytes, 0
        self.hits = self.misses = 0
        self._entries: OrderedDict[Hashable, BuiltFiles] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> BuiltFiles | None:
        with self._lock:
            built = self._entries.get(key)
            if built is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return built

    def put(self, key: Hashable, built: BuiltFiles) -> None:
        if built.size > self.max_bytes // 4:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            self.held -= old.size if old is not None else 0
            self._entries[key] = built
            self.held += built.size
            while self.held > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self.held -= evicted.size

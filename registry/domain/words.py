"""Numbers in words, as the CLI, the API's messages and the dashboard say them."""

from __future__ import annotations


def plural(n: int, word: str) -> str:
    """'1 version', '3 versions' (words whose plural adds an s)."""
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def size_text(n: int) -> str:
    """Bytes for people in decimal units: 950 bytes, 360.0 KB, 1.2 GB (`vera usage`, the quota messages)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"

"""Numbers in words, as the CLI, the API's messages and the dashboard (web_ui.formats) all say them."""

from __future__ import annotations

UNITS = ("B", "KB", "MB", "GB", "TB")


def counted(n: int, thing: str) -> str:
    """(1, 'event') -> '1 event'; (1200, 'event') -> '1,200 events'."""
    return f"{n:,} {thing}" + ("" if n == 1 else "s")


def size(n: int) -> str:
    """120008 -> '120.0 KB' (1 KB = 1,000 B, with a space); under 1 KB in bytes ('512 B')."""
    value = float(n)
    for unit in UNITS:
        if abs(value) < 1000 or unit == UNITS[-1]:
            return f"{n:,} B" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable: the last unit returns")

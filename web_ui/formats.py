"""How the dashboard writes numbers: counts with thousands separators, sizes in B/KB/MB/GB (1 KB = 1,000 B, as
Streamlit's table columns count, so a size reads the same on every page)."""

from __future__ import annotations

UNITS = ("B", "KB", "MB", "GB", "TB")


def count(n: int) -> str:
    """27522 -> '27,522'."""
    return f"{n:,}"


def size(n: int) -> str:
    """120008 -> '120.0 KB'; under 1 KB in bytes ('512 B')."""
    value = float(n)
    for unit in UNITS:
        if abs(value) < 1000 or unit == UNITS[-1]:
            return f"{n:,} B" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable: the last unit returns")

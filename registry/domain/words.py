"""Numbers in words, as the CLI, the API's messages and the dashboard (web_ui.formats) all say them, and sizes read
back from words ("50GB")."""

from __future__ import annotations

from pydantic import ByteSize, TypeAdapter, ValidationError

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


_BYTE_SIZE: TypeAdapter[ByteSize] = TypeAdapter(ByteSize)


def parse_size(value: object, *, most: int) -> int:
    """Bytes from an int or from words: '50GB' (50*10^9), '50GiB' (50*2^30), '1.5 TB', '512' (pydantic's ByteSize);
    ValueError, saying what is expected, for anything else or a size outside 0..``most``."""
    try:
        n = value if type(value) is int else int(_BYTE_SIZE.validate_python(
            value.strip() if isinstance(value, str) else value))
    except ValidationError:
        raise ValueError(f"{value!r} is not a size: give bytes (50000000000) or a number with a unit (50GB = "
                         "50*10^9 bytes, 50GiB = 50*2^30, 1.5TB)") from None
    if not 0 <= n <= most:
        raise ValueError(f"{value!r} is out of range: give 0 to {most:,} bytes")
    return n

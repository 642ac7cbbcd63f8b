"""How the dashboard writes numbers: counts with thousands separators, sizes in B/KB/MB/GB (1 KB = 1,000 B, with a
space: '6.1 KB' in the header, the checklists and the tables alike), metrics to the precision that tells them apart,
and a missing value as an em dash."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import streamlit as st

from registry.domain.words import counted as counted  # the CLI's and the messages' too
from registry.domain.words import size as size

#: A missing value (no accuracy yet, a job not started), in text and in every table's empty cells (web_ui.tables).
MISSING = "\N{EM DASH}"


def moment_column(format: str = "YYYY-MM-DD HH:mm", *, header: str | None = None, **options: Any) -> Any:
    """A table column of moments (a publish, a job's submission, an event), written in UTC and saying so, as the CLI
    does: the registry keeps UTC, and a time without its zone read as the viewer's own (a dashboard user's walk).
    ``format``: momentJS's, without the zone; with ``header`` (the column's name), the zone is said there, as
    "when (UTC)", where the cells have no room for it."""
    if header is not None:
        return st.column_config.DatetimeColumn(f"{header} (UTC)", format=format, timezone="UTC", **options)
    return st.column_config.DatetimeColumn(format=f"{format} [UTC]", timezone="UTC", **options)


def count(n: int) -> str:
    """27522 -> '27,522'."""
    return f"{n:,}"


def matching(n: int, what: str = "version") -> str:
    """1 -> '1 version matches'; 3 -> '3 versions match' (``what``: 'adapter', '3 adapters match')."""
    return f"{counted(n, what)} {'matches' if n == 1 else 'match'}"


def number_or_none(value: object) -> float | None:
    """``value`` as a float when it is a number (not a bool), else None."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def metric_at(metrics: dict[str, Any], group: str, name: str, *flat: str) -> float | None:
    """A version's ``metrics[group][name]`` (what `vera train` and fine-tune jobs record: ``test.accuracy``), else
    the first of the ``flat`` keys that is a number (HuggingFace Trainer's ``eval_results.json`` and
    ``all_results.json`` name them ``eval_accuracy``, ``test_accuracy``, ``eval_loss``: a PEFT user's metrics.json
    showed '—' on the Adapter page while its Metrics tab listed them, a browser walk of session 46); None when it
    records none."""
    nested = metrics.get(group)
    if isinstance(nested, dict):
        return number_or_none(nested.get(name))
    return next((value for key in flat if (value := number_or_none(metrics.get(key))) is not None), None)


def number(value: object) -> str:
    """A metric as people read it: integers with separators, floats to four significant digits (0.8123, 12.35,
    1,235), tiny ones in scientific notation, booleans as yes/no, None as MISSING ('—')."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if not isinstance(value, float):
        return str(value)
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    if abs(value) < 1e-4:
        return f"{value:.3e}"
    places = max(0, 3 - math.floor(math.log10(abs(value))))
    return f"{value:,.{places}f}"


#: Metrics drawn as charts or tables of their own, not rows of the metric table.
SERIES = frozenset({"train_loss", "eval", "labels"})


def metric_rows(metrics: dict[str, Any], prefix: str = "") -> list[dict[str, str]]:
    """One row per scalar metric, nested names joined with dots (``test.accuracy``); curves and lists left out."""
    rows: list[dict[str, str]] = []
    for key, value in metrics.items():
        if (not prefix and key in SERIES) or isinstance(value, list):
            continue
        if isinstance(value, dict):
            rows += metric_rows(value, f"{prefix}{key}.")
        else:
            rows.append({"metric": prefix + key, "value": number(value)})
    return rows


#: What a cell of the dashboard's tables (Streamlit's grid, 14 px Source Sans) takes: at most this many px per
#: character (wide letters and digits; most text is narrower) and this many px of padding.
CHAR_PX, CELL_PAD_PX = 7, 17


def cell_chars(width: int) -> int:
    """How many characters a column ``width`` px wide shows whole."""
    return max(1, (width - CELL_PAD_PX) // CHAR_PX)


def cell_width(text: str) -> int:
    """The px a column needs to show ``text`` whole."""
    return CELL_PAD_PX + CHAR_PX * len(text)


def text_width(texts: Iterable[str], least: int, most: int) -> int:
    """The px a text column needs to show the longest of ``texts`` whole, at least ``least`` and at most ``most``
    (longer ones are then cut with '…' by ``fit``)."""
    return max(least, min(most, max((cell_width(t) for t in texts), default=least)))


def fit(text: str, width: int) -> str:
    """``text`` as a column ``width`` px wide shows it: whole, or cut with '…' (never clipped mid-letter)."""
    room = cell_chars(width)
    return text if len(text) <= room else text[:room - 1] + "…"


def fit_list(items: list[str], width: int) -> str:
    """``items`` joined with ', ' as far as they fit a column ``width`` px wide, then '+N' for the rest."""
    room = cell_chars(width)
    for shown in range(len(items), 0, -1):
        rest = f" +{len(items) - shown}" if shown < len(items) else ""
        if len(text := ", ".join(items[:shown]) + rest) <= room:
            return text
    rest = f" +{len(items) - 1}" if len(items) > 1 else ""
    return fit(items[0], width - CHAR_PX * len(rest)) + rest if items else ""


#: Short names of the projection generators, for narrow table cells (the full names are on the Adapter page).
SHORT_GENERATORS = {"philox4x32-10-kaiming-uniform-v1": "philox", "torch-kaiming-uniform": "torch"}


def projection(generator: str, seed: int) -> str:
    """'philox #42': the generator's short name and the seed."""
    return f"{SHORT_GENERATORS.get(generator, generator.split('-')[0])} #{seed}"


#: A verification status in a narrow cell.
VERIFIED = {"passed": "✓ passed", "failed": "✗ failed", "unverified": "not yet"}


def metric_format(values: Iterable[float | None]) -> str:
    """A metric column's printf format: one number of decimals for every row, the one that writes the largest
    value to four significant digits as the Adapter page does (0.8460 beside 0.8355, not 0.846; 12.35 beside
    9.20), so the column's digits line up and a number reads the same on every page."""
    largest = max((abs(v) for v in values if v is not None and math.isfinite(v) and v != 0), default=1.0)
    return f"%.{max(0, 3 - math.floor(math.log10(largest)))}f"


def metric_column(values: Iterable[float | None], **settings: Any) -> Any:
    """A table column of a metric (accuracy, loss, a sorted-by metric), written with ``metric_format``."""
    return st.column_config.NumberColumn(format=metric_format(values), **settings)


def listed(items: list[str]) -> str:
    """['a'] -> 'a'; ['a', 'b'] -> 'a and b'; ['a', 'b', 'c'] -> 'a, b and c'."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def ordered_aliases(aliases: list[str]) -> list[str]:
    """A version's aliases as every page shows them: ``prod`` first (what is deployed), ``latest`` (which every
    adapter's newest version has) last, the others by name between them (the header, Browse and the versions table
    each had their own order: session 29's walk)."""
    return sorted(aliases, key=lambda alias: (alias != "prod", alias == "latest", alias))

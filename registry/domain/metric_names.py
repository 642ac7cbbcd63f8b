"""Metric names in a listing that came back empty, for `vera ls` and the dashboard's Browse alike: which metrics a
filter or a metric sort names (``metrics.test.acc > 0.9``), which of them no version records (a misspelt one matched
nothing, and both said only that nothing matched: newcomers' walks), and which metrics the newest versions do record,
to name instead. Asked only when a listing came back empty."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from registry.domain.errors import InvalidInput
from registry.domain.schemas import Page

#: A ``metrics.<key>`` field of a filter (registry.services.filters' field token: dotted parts, a part may be quoted
#: in backticks), and a quoted text literal (skipped: ``q = 'metrics.x'`` names no metric).
_FIELD = re.compile(r"(?<![\w.])metrics\.((?:[\w\-:/]+|`[^`]+`)(?:\.(?:[\w\-:/]+|`[^`]+`))*)", re.IGNORECASE)
_QUOTED = re.compile(r"'(?:[^']|'')*'")
#: How many versions, newest first, are read to name the metrics there are; how many names are said.
SAMPLED, NAMES_SAID = 100, 12

#: RegistryClient.list_versions as the caller asks it (the dashboard through its session's cache, the CLI directly).
ListVersions = Callable[..., Page]


def named(filter_text: str | None, sorted_by: str | None) -> list[str]:
    """The metric keys (as written after ``metrics.``) that a filter's clauses and a metric sort name, in order,
    each once."""
    keys = [match[1] for match in _FIELD.finditer(_QUOTED.sub("''", filter_text or ""))]
    return list(dict.fromkeys([*keys, *([sorted_by] if sorted_by else [])]))


def missing(list_versions: ListVersions, keys: list[str]) -> list[str]:
    """Those of ``keys`` that no version the caller may see records (``metrics.<key> is not null`` matches none);
    a key the registry cannot take in a filter is left out (the listing's own refusal says why)."""
    absent = []
    for key in keys:
        try:
            page = list_versions(filter=f"metrics.{key} is not null", limit=1)
        except InvalidInput:
            continue
        if not page.items:
            absent.append(key)
    return absent


def flat_metrics(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested metrics as dotted keys, sorted: ``{"test": {"accuracy": 0.9}}`` -> ``[("test.accuracy", 0.9)]``."""
    items: list[tuple[str, Any]] = []
    for key, value in sorted(data.items()):
        if isinstance(value, dict):
            items += flat_metrics(value, f"{prefix}{key}.")
        else:
            items.append((f"{prefix}{key}", value))
    return items


def metric_text(value: Any, *, whole: str = "`--json` for all") -> str:
    """A metric's value in a line: a number to 6 significant digits; a series (a loss curve: [[step, loss], ...]
    or values) as its length, first and last entries, and ``whole``, where it is whole."""
    if isinstance(value, list) and len(value) > 4:
        return f"{len(value):,} entries: {_short(value[0])}, ..., {_short(value[-1])} ({whole})"
    return _short(value)


def _short(value: Any) -> str:
    """Numbers to 6 significant digits inside lists and objects too (a run's evaluations, [{step, eval_loss,
    eval_accuracy}], were Python's repr: 'step': 189.0, 0.3091912467323152; a new user's walk)."""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return "[" + ", ".join(_short(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {_short(item)}" for key, item in value.items()) + "}"
    return str(value)


def numeric_keys(metrics: dict[str, Any]) -> Iterator[str]:
    """The dotted names of the numbers in ``metrics`` (curves, lists, text and booleans left out), as the registry's
    filters and sorts name them."""
    return (key for key, value in flat_metrics(metrics)
            if isinstance(value, int | float) and not isinstance(value, bool))


def recorded(list_versions: ListVersions) -> list[str]:
    """The numeric metrics the newest SAMPLED versions record, by dotted name (``test.accuracy``), sorted."""
    page = list_versions(limit=SAMPLED)
    return sorted({key for version in page.items for key in numeric_keys(version.metrics)})


def message(list_versions: ListVersions, absent: list[str], *, code: Callable[[str], str] = str,
            where: str = "`vera show REF` lists a version's") -> str:
    """Says that no version has the metrics ``absent`` (their names as written, backticks dropped), and which
    metrics the newest versions record, each name written by ``code`` (the dashboard's as Markdown code: Markdown
    would read their underscores); ``where`` says where a version's metrics are seen."""
    names = " or ".join(code(key.replace("`", "")) for key in absent)
    there = recorded(list_versions)
    more = f" and {len(there) - NAMES_SAID} more" if len(there) > NAMES_SAID else ""
    listed = ", ".join(code(key) for key in there[:NAMES_SAID]) + more
    return (f"No version has a metric named {names}. "
            + (f"Metrics the newest versions record: {listed}." if there else "No version here records metrics.")
            + f" A metric is named by its path in a version's metrics ({code('test.accuracy')}, "
              f"{code('final_eval.loss')}): {where}.")

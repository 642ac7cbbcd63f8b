"""Metric names on Browse: which metrics a filter or a metric sort names (``metrics.test.acc > 0.9``), which of them no
version records (a misspelt one matched nothing, and the page said only "No adapter matches": a newcomer's walk), and
which metrics the newest versions do record, to name instead. Asked only when a listing came back empty."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from registry.client import RegistryClient
from registry.domain.errors import InvalidInput
from web_ui import session, views

#: A ``metrics.<key>`` field of a filter (registry.services.filters' field token: dotted parts, a part may be quoted
#: in backticks), and a quoted text literal (skipped: ``q = 'metrics.x'`` names no metric).
_FIELD = re.compile(r"(?<![\w.])metrics\.((?:[\w\-:/]+|`[^`]+`)(?:\.(?:[\w\-:/]+|`[^`]+`))*)", re.IGNORECASE)
_QUOTED = re.compile(r"'(?:[^']|'')*'")
#: How many versions, newest first, are read to name the metrics there are; how many names are said.
SAMPLED, NAMES_SAID = 100, 12


def named(filter_text: str | None, sorted_by: str | None) -> list[str]:
    """The metric keys (as written after ``metrics.``) that a filter's clauses and a metric sort name, in order,
    each once."""
    keys = [match[1] for match in _FIELD.finditer(_QUOTED.sub("''", filter_text or ""))]
    return list(dict.fromkeys([*keys, *([sorted_by] if sorted_by else [])]))


def missing(keys: list[str]) -> list[str]:
    """Those of ``keys`` that no version the caller may see records (``metrics.<key> is not null`` matches none);
    a key the registry cannot take in a filter is left out (the listing's own refusal says why)."""
    absent = []
    for key in keys:
        try:
            page = session.read(RegistryClient.list_versions, filter=f"metrics.{key} is not null", limit=1)
        except InvalidInput:
            continue
        if not page.items:
            absent.append(key)
    return absent


def recorded() -> list[str]:
    """The numeric metrics the newest SAMPLED versions record, by dotted name (``test.accuracy``), sorted."""
    page = session.read(RegistryClient.list_versions, limit=SAMPLED)
    return sorted({key for version in page.items for key in numeric_keys(version.metrics)})


def numeric_keys(metrics: dict[str, Any]) -> Iterator[str]:
    """The dotted names of the numbers in ``metrics`` (nested objects joined by dots, views.flat; curves, lists, text
    and booleans left out), as the registry's filters and sorts name them."""
    return (key for key, value in views.flat(metrics).items()
            if isinstance(value, int | float) and not isinstance(value, bool))


def message(absent: list[str]) -> str:
    """Says that no version has the metrics ``absent`` (their names as written, backticks dropped), and which
    metrics the newest versions record (names as code: Markdown would read their underscores)."""
    names = " or ".join(f"`{key.replace('`', '')}`" for key in absent)
    there = recorded()
    more = f" and {len(there) - NAMES_SAID} more" if len(there) > NAMES_SAID else ""
    listed = ", ".join(f"`{key}`" for key in there[:NAMES_SAID]) + more
    return (f"No version has a metric named {names}. "
            + (f"Metrics the newest versions record: {listed}." if there else "No version here records metrics.")
            + " A metric is named by its path in a version's metrics (`test.accuracy`, `final_eval.loss`): the "
              "Adapter page's Metrics tab shows a version's.")

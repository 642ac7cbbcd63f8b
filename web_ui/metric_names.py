"""Metric names on Browse (registry.domain.metric_names, which `vera ls` says too): which metrics a filter or a metric
sort names, which of them no version records, and which the newest versions do record, read through this session's
cache and written as Markdown code."""

from __future__ import annotations

from typing import Any

from registry.client import RegistryClient
from registry.domain import metric_names
from registry.domain.metric_names import named
from registry.domain.schemas import Page
from web_ui import session

__all__ = ["missing", "message", "named"]


def _list_versions(**kwargs: Any) -> Page:
    return session.read(RegistryClient.list_versions, **kwargs)


def missing(keys: list[str]) -> list[str]:
    """Those of ``keys`` that no version the caller may see records."""
    return metric_names.missing(_list_versions, keys)


def message(absent: list[str]) -> str:
    """Says that no version has the metrics ``absent`` and which metrics the newest versions record."""
    return metric_names.message(_list_versions, absent, code=lambda key: f"`{key}`",
                                where="the Adapter page's Metrics tab shows a version's")

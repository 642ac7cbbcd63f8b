"""Browse: every adapter version, filtered, sorted and paged by the registry (MLflow-style filters and metric sorts
run on the server, over every page)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from registry.client import RegistryClient
from registry.domain.errors import InvalidInput
from registry.domain.schemas import Page, VersionInfo
from vera_core.config import KNOWN_GENERATORS
from web_ui import getting_started, navigation, session

SORT_LABELS = {"-created": "newest", "created": "oldest", "-trainable_parameters": "most trainable parameters",
               "trainable_parameters": "fewest trainable parameters", "-stored_bytes": "largest stored",
               "stored_bytes": "smallest stored", "-r": "highest rank", "r": "lowest rank",
               "verification_status": "verification status", "-metrics.test.accuracy": "highest test accuracy",
               "-metrics.final_eval.accuracy": "highest eval accuracy", "metrics.final_eval.loss": "lowest eval loss"}
FILTER_HELP = ("MLflow-style clauses joined by `and`, run by the registry over every version: "
               "`metrics.test.accuracy > 0.9 and r <= 256`, `base_model = 'minilm'`, `tag in ('prod', 'demo')`, "
               "`created > '2026-11-01'`. Strings in single quotes.")
METRIC_SORT_HELP = ("A metric's dotted name, e.g. `test.accuracy` (highest first) or `+final_eval.loss` (lowest "
                    "first). The registry sorts every page by it; versions without that metric are left out.")


def key_metrics(info: VersionInfo) -> dict[str, float | None]:
    """The numbers people compare: test and eval accuracy (or any flat 'accuracy'), final eval loss."""
    metrics: dict[str, Any] = info.metrics
    test, final = metrics.get("test") or {}, metrics.get("final_eval") or {}
    accuracy = test.get("accuracy") if isinstance(test, dict) else None
    if accuracy is None:
        accuracy = final.get("accuracy") if isinstance(final, dict) else metrics.get("accuracy")
    loss = final.get("loss") if isinstance(final, dict) else metrics.get("loss")
    return {"accuracy": accuracy if isinstance(accuracy, int | float) else None,
            "eval loss": loss if isinstance(loss, int | float) else None}


def metric_value(info: VersionInfo, dotted: str) -> float | None:
    """The version's metric ``dotted`` (``test.accuracy``: nested objects joined by dots), None when it has none."""
    value: Any = info.metrics
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def sorted_metric(sort: str) -> str | None:
    """The metric a sort orders by (``-metrics.test.accuracy`` -> ``test.accuracy``), None for a column sort."""
    return sort.lstrip("-").removeprefix("metrics.") if sort.lstrip("-").startswith("metrics.") else None


LOCK = "\N{LOCK}"


def table(items: list[VersionInfo], metric: str | None = None) -> pd.DataFrame:
    """One row per version, the columns that fit 1,400 px beside the sidebar (seed and generator as one
    'projection'; eval loss and exact bytes are on the Adapter and Compare pages). A lock marks a private adapter;
    sorted by a metric, that metric's column takes the place of accuracy."""
    def score(v: VersionInfo) -> dict[str, float | None]:
        return {metric: metric_value(v, metric)} if metric else {"accuracy": key_metrics(v)["accuracy"]}

    return pd.DataFrame([{
        "version": navigation.version_link(v.ref), LOCK: LOCK if v.visibility == "private" else "",
        "base model": v.base_model, "r": v.r, "projection": f"{v.generator.split('-')[0]} #{v.seed}",
        "params": v.trainable_parameters, "stored": v.stored_bytes, **score(v), "downloads": v.downloads,
        "verified": v.verification_status, "aliases": ", ".join(v.aliases), "tags": ", ".join(v.tags),
        "created": v.created_at,
    } for v in items])


COLUMNS = {
    "version": st.column_config.LinkColumn(display_text=r"adapter\?ref=(.*)", help="Open the version",
                                           pinned=True, width=150),
    LOCK: st.column_config.TextColumn(width=26, help="private: seen only by its owner, the owning organisation's "
                                                    "members and admins; no lock: public"),
    "base model": st.column_config.TextColumn(width=75),
    "r": st.column_config.NumberColumn(width=40),
    "projection": st.column_config.TextColumn(width=85, help="generator #seed: versions with the same projection "
                                                              "share A and B"),
    "params": st.column_config.NumberColumn(
        format="localized", width=65, help="trainable parameters: d and b plus any trained task head; `vera ls` "
                                           "shows d and b only"),
    "trainable params (with head)": st.column_config.NumberColumn(
        format="localized", help="d and b plus any trained task head; `vera ls` shows d and b only"),
    "stored": st.column_config.NumberColumn(format="bytes", width=65),
    "stored bytes": st.column_config.NumberColumn(format="bytes"),
    "accuracy": st.column_config.NumberColumn(format="%.3f", width=65, help="test accuracy (else eval accuracy)"),
    "eval loss": st.column_config.NumberColumn(format="%.4f"),
    "downloads": st.column_config.NumberColumn(format="localized", width=70,
                                               help="downloads of its weights (counted in batches: may lag ~10 s)"),
    "verified": st.column_config.TextColumn(width=62, help="verification status (Verify on the Adapter page)"),
    "aliases": st.column_config.TextColumn(width=55),
    "tags": st.column_config.TextColumn(width=60),
    "created": st.column_config.DatetimeColumn(format="YYYY-MM-DD", width=82, help="published on"),
}


#: The popover holding the filter form (its open state is in st.session_state under this key).
FILTERS = "browse_filters"


def applying() -> None:
    """Apply's callback, before the rerun: back to the first page, and the popover closes to show the result."""
    st.session_state["browse_cursors"] = [None]
    st.session_state[FILTERS] = False


#: Rows per page the form offers (a select box: the same lazily loaded widget code as the form's other choices).
PAGE_SIZES = [25, 50, 100, 250, 500]


def filters() -> dict[str, Any]:
    """The filter form: list_versions' arguments (None where unset) and the page size."""
    bases = [b.name for b in session.read(RegistryClient.base_models)]
    with st.form("filters"):
        c1, c2, c3, c4 = st.columns(4)
        owner = c1.text_input("Owner")
        base = c2.selectbox("Base model", ["any", *bases])
        rank = c3.text_input("Rank", help="empty: any")
        seed = c4.text_input("Seed")
        c5, c6, c7, c8 = st.columns(4)
        generator = c5.selectbox("Generator", ["any", *KNOWN_GENERATORS])
        tag = c6.text_input("Tag")
        text = c7.text_input("Search", help="owner, name or description")
        sort = c8.selectbox("Sort", list(SORT_LABELS), format_func=SORT_LABELS.__getitem__)
        c9, c10, c11 = st.columns([4.5, 2, 1.5])
        clauses = c9.text_input("Filter", placeholder="metrics.test.accuracy > 0.9 and r <= 256", help=FILTER_HELP)
        metric = c10.text_input("Sort by metric", placeholder="test.accuracy", help=METRIC_SORT_HELP)
        size = c11.selectbox("Rows per page", PAGE_SIZES, index=PAGE_SIZES.index(50))
        st.form_submit_button("Apply", on_click=applying)
    for label, typed in (("Rank", rank), ("Seed", seed)):
        if typed and not typed.isdigit():
            st.warning(f"{label} {typed!r} is not a whole number; it is ignored.")
    return {"owner": owner or None, "base_model": None if base == "any" else base,
            "r": int(rank) if rank.isdigit() and int(rank) > 0 else None,
            "seed": int(seed) if seed.isdigit() else None, "generator": None if generator == "any" else generator,
            "tag": tag or None, "q": text or None, "sort": metric_sort(metric) or sort, "limit": size,
            "filter": clauses.strip() or None}


def metric_sort(text: str) -> str | None:
    """The registry's sort for what was typed in Sort by metric: highest first unless it starts with '+'
    (``test.accuracy`` -> ``-metrics.test.accuracy``; ``+loss`` -> ``metrics.loss``); None when empty."""
    text = text.strip()
    if not text:
        return None
    lowest, key = text.startswith("+"), text.lstrip("+-").removeprefix("metrics.")
    return ("" if lowest else "-") + f"metrics.{key}"


def listing(chosen: dict[str, Any], cursor: str | None) -> Page | None:
    """The page of versions the registry answers for the form's choices; None (and a message saying what the
    registry found wrong) when it refuses them, e.g. a filter that does not parse."""
    try:
        return session.read(RegistryClient.list_versions, cursor=cursor, with_total=True, **chosen)
    except InvalidInput as exc:
        what = "filter or metric sort" if chosen["filter"] else "sort"
        st.error(f"The registry refused this {what}: {exc}\n\nFix it in the form above; the syntax is in the "
                 "Filter box's help (?).", icon=":material/filter_alt_off:")
        return None


#: The form's choices that narrow the listing down (a metric sort does too: versions without the metric are left out).
NARROWING = ("owner", "base_model", "r", "seed", "generator", "tag", "q", "filter")


def empty_registry(chosen: dict[str, Any], cursor: str | None, result: Page) -> bool:
    """Whether the registry holds no version at all: the first page of an unnarrowed listing is empty (the page
    learns it from its own listing, not from a request of its own)."""
    unnarrowed = all(chosen[k] is None for k in NARROWING) and sorted_metric(chosen["sort"]) is None
    return unnarrowed and cursor is None and not result.items


#: How the caption names each narrowing choice that is set.
APPLIED = {"owner": "owner {}", "base_model": "base model {}", "r": "rank {}", "seed": "seed {}",
           "generator": "generator {}", "tag": "tag {}", "q": "search '{}'", "filter": "filter `{}`"}


def applied(chosen: dict[str, Any]) -> str:
    """What the form narrows and sorts by, for the caption (the form itself sits closed in its popover): '' for
    the defaults."""
    parts = [APPLIED[k].format(chosen[k]) for k in APPLIED if chosen[k] is not None]
    metric = sorted_metric(chosen["sort"])
    order = (f"sorted by {metric} over every page" if metric
             else None if chosen["sort"] == "-created" else f"{SORT_LABELS[chosen['sort']]} first")
    return "; ".join(filter(None, [", ".join(parts), order]))


def page() -> None:
    st.title("Adapters")
    form = st.empty()
    with form.container(), st.popover("Filter and sort", icon=":material/filter_list:", key=FILTERS,
                                           on_change="rerun"):
        # In a popover, the form is drawn only when opened: a first visit paints the table without building
        # eleven inputs (bench/RESULTS.md, 2026-11-30: a new visitor's Browse, 0.5 s of 2.3).
        chosen = filters()
    cursors: list[str | None] = st.session_state.setdefault("browse_cursors", [None])
    result = listing(chosen, cursors[-1])
    if result is None:
        return
    if empty_registry(chosen, cursors[-1], result):
        form.empty()  # nothing to filter yet: how to publish a first adapter instead
        getting_started.panel()
        return
    first = (len(cursors) - 1) * chosen["limit"]
    metric = sorted_metric(chosen["sort"])
    how = applied(chosen)
    st.caption(f"{result.total:,} versions match" + (f" ({how})" if how else "") + f"; showing "
               f"{first + 1 if result.items else 0:,}-{first + len(result.items):,}. Click a name to open it, tick "
               "rows to open or compare them; clicking a column sorts this page only (Filter and sort sorts them "
               "all).")
    if not result.items:
        st.info("No adapter matches these filters" + (f" with the metric {metric}." if metric else "."))
        return
    columns = COLUMNS | ({metric: st.column_config.NumberColumn(format="%.4g", width=65)} if metric else {})
    selection = st.dataframe(table(result.items, metric), hide_index=True, width="stretch", on_select="rerun",
                             selection_mode="multi-row", column_config=columns, key="browse_table")
    with st.container(horizontal=True):
        if st.button("Previous page", disabled=len(cursors) == 1):
            cursors.pop()
            st.rerun()
        if st.button("Next page", disabled=result.next_cursor is None):
            cursors.append(result.next_cursor)
            st.rerun()
    actions([result.items[i].ref for i in selection.selection.rows] if selection is not None else [])


def actions(ticked: list[str]) -> None:
    """What the ticked rows can do: open one, compare two to four."""
    with st.container(horizontal=True, vertical_alignment="center"):
        if st.button("Open version", disabled=len(ticked) != 1, icon=":material/open_in_new:"):
            navigation.open_version(ticked[0])
        if st.button(f"Compare selected ({len(ticked)})", disabled=not 2 <= len(ticked) <= 4,
                     icon=":material/compare_arrows:", type="primary" if 2 <= len(ticked) <= 4 else "secondary"):
            navigation.open_compare(ticked)
        st.caption("Tick one row to open it, or two to four to compare them."
                   if len(ticked) <= 4 else f"{len(ticked)} rows ticked: Compare takes at most four.")
